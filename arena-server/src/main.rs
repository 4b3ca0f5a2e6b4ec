//! The `arena` binary: parses the command line and hands it to `cli`.

use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    arena_server::cli::main(arena_server::cli::args::Cli::parse()).await
}
