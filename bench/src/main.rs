//! The `berth-bench` command: [`berth_bench::run`] with the process's
//! arguments.

use std::process::ExitCode;

fn main() -> ExitCode {
    match berth_bench::run(std::env::args().skip(1)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
