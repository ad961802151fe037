use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cutover::cli::Cli::parse();
    match cutover::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("{}", cutover::report::error_chain(&err));
            ExitCode::FAILURE
        }
    }
}
