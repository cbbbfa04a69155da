use clap::Parser;

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
