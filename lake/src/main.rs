//! The `lake` binary: parses the command line and hands over to [`lake::cli`].

use clap::Parser;

fn main() -> std::process::ExitCode {
    lake::cli::main(lake::cli::Cli::parse())
}
