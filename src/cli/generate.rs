//! `segmentd generate`: writes a deterministic demo dataset folder (see
//! `crate::ingest::generate` for the layout and the distributions).

use std::path::PathBuf;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use crate::ingest::generate::{DEFAULT_NOW_MS, GenerateConfig, SHARD_SIZE, generate};

/// Arguments of `segmentd generate`.
#[derive(Debug, Clone, clap::Args)]
pub struct GenerateArgs {
    /// Number of people (merged profiles) to generate.
    #[arg(long, default_value_t = 100_000)]
    pub profiles: u64,
    /// Seed of every distribution; the same seed gives the same bytes.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Output folder; created if missing, existing files are overwritten.
    #[arg(long)]
    pub out: PathBuf,
    /// Reference "now" (RFC 3339) that all timestamps precede.
    #[arg(long, default_value = "2024-06-15T12:00:00Z")]
    pub now: String,
    /// Worker threads (default: available cores); does not change the output.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Index of the first person: ids derive from it, so parts generated with disjoint ranges
    /// (`--first-index 0`, `--first-index 1000000`, ...) load as disjoint people.
    #[arg(long, default_value_t = 0)]
    pub first_index: u64,
}

/// Runs the generator with a progress bar and prints the manifest summary.
pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let now_ms = chrono::DateTime::parse_from_rfc3339(&args.now)
        .with_context(|| format!("--now {:?} is not an RFC 3339 date-time", args.now))?
        .timestamp_millis();
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let config = GenerateConfig {
        profiles: args.profiles,
        seed: args.seed,
        now_ms,
        threads,
        first_index: args.first_index,
    };
    let progress = ProgressBar::new(args.profiles.div_ceil(SHARD_SIZE));
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} shards {elapsed}")
            .context("progress template")?,
    );
    let started = std::time::Instant::now();
    let manifest = generate(&config, &args.out, &|| progress.inc(1))
        .with_context(|| format!("generating into {}", args.out.display()))?;
    progress.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "generated {} profiles ({} known, {} events) in {seconds:.1} s ({:.0} profiles/s) into {}{}",
        manifest.profiles,
        manifest.known_profiles,
        manifest.events,
        manifest.profiles as f64 / seconds,
        args.out.display(),
        if now_ms == DEFAULT_NOW_MS {
            ""
        } else {
            " (custom --now)"
        },
    );
    for dataset in &manifest.datasets {
        println!(
            "  {:<18} {:>9} rows  {} files ({})",
            dataset.name,
            dataset.rows,
            dataset.files.len(),
            dataset.format
        );
    }
    Ok(())
}
