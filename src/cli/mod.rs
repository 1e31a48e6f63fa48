//! The `segmentd` command line: `serve` runs the service; other subcommands are tools around it.

pub mod generate;
pub mod ingest;
pub mod pql;
pub mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// segmentd: a self-hosted audience segmentation service speaking Adobe Experience Platform's
/// Segmentation Service REST API.
#[derive(Debug, Parser)]
#[command(name = "segmentd", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the HTTP service.
    Serve(serve::ServeArgs),
    /// Checks, evaluates and converts PQL expressions.
    #[command(subcommand)]
    Pql(pql::PqlCommand),
    /// Writes a deterministic demo dataset folder (XDM profiles and events).
    Generate(generate::GenerateArgs),
    /// Loads a generated folder into a data directory (the service must not be running on it).
    Ingest(ingest::IngestArgs),
}

/// Parses the process arguments and runs the chosen subcommand.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => report(serve::run(args)),
        Command::Pql(command) => pql::run(command),
        Command::Generate(args) => report(generate::run(args)),
        Command::Ingest(args) => report(ingest::run(args)),
    }
}

/// Prints an error chain to stderr and maps the outcome to an exit code.
fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
