use clap::Parser;

// jemalloc hands memory freed after a burst of clients back to the system
// (its background thread purges pages unused for a second); glibc malloc
// keeps it in per-thread arenas.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8; 60] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

fn main() {
    let cli = berth::cli::Cli::parse();
    if let Err(err) = berth::cli::run(cli) {
        let code = err
            .downcast_ref::<berth::cli::ExitError>()
            .map_or(1, |e| e.code);
        eprintln!("berth: {err:#}");
        std::process::exit(code);
    }
}
