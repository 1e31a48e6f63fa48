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
    disable_transparent_huge_pages();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => report(serve::run(args)),
        Command::Pql(command) => pql::run(command),
        Command::Generate(args) => report(generate::run(args)),
        Command::Ingest(args) => report(ingest::run(args)),
    }
}

/// Turns transparent huge pages off for this process (Linux), before anything is allocated.
///
/// Why: mimalloc asks for huge pages on the memory it maps (`madvise(MADV_HUGEPAGE)`), so the
/// kernel zeroes 2 MiB at a page's first touch, and again after mimalloc returns part of one and
/// takes it back. A bulk load allocates and frees gigabytes in small values (rows, record texts,
/// the identity index's growing tables): perf over the records of 1M generated profiles put 20% of
/// all samples in the kernel zeroing huge pages. With them off, those records' `sys` time fell
/// by a third and a 1M load's CPU by about 5%, at the same peak memory (README, session 14).
/// Failing (an old kernel) only leaves huge pages on, so the result is ignored.
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_THP_DISABLE takes one integer flag and no pointers; it only sets a flag
        // of this process.
        let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
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
