//! The `cutover` binary: parse the command line, run it, print the error chain on failure.
//! Usage errors exit 2 (clap's own `error:` format), every other failure 1.

#![forbid(unsafe_code)]

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
