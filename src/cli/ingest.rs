//! `segmentd ingest DIR`: loads a generated folder into a data directory through the batch path the
//! API uses, with a progress bar and a summary. The service must not be running on that directory
//! (the stores take an exclusive lock).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use crate::clock::{Clock, SystemClock};
use crate::ingest::batch::Ingestor;
use crate::ingest::folder::ingest_folder;
use crate::store::metadata::MetadataStore;
use crate::store::profiles::ProfileStore;
use crate::tenant::Tenant;

/// Arguments of `segmentd ingest`.
#[derive(Debug, Clone, clap::Args)]
pub struct IngestArgs {
    /// A folder written by `segmentd generate`.
    pub dir: PathBuf,
    /// The data directory to load into.
    #[arg(long, default_value = "./data")]
    pub data_dir: PathBuf,
    /// The IMS organization that owns the data.
    #[arg(long, default_value = "demo@AdobeOrg")]
    pub org: String,
    /// The sandbox.
    #[arg(long, default_value = "prod")]
    pub sandbox: String,
}

/// Loads `dir` into `data_dir` for a tenant, showing progress and writing a summary to `report`.
pub fn load(
    dir: &Path,
    data_dir: &Path,
    tenant: &Tenant,
    show_progress: bool,
    report: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let metadata = MetadataStore::open(data_dir).context("opening the metadata store")?;
    let profiles = Arc::new(
        ProfileStore::open(data_dir)
            .context("opening the profile store (is the service running on it?)")?,
    );
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let ingestor = Ingestor::new(metadata.clone(), profiles.clone(), data_dir, clock.clone());
    let manifest = crate::ingest::generate::read_manifest(dir)
        .with_context(|| format!("reading {}", dir.display()))?;
    let progress = if show_progress {
        ProgressBar::new(manifest.datasets.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} datasets {elapsed} {msg}")
            .context("progress template")?,
    );
    let started = std::time::Instant::now();
    progress.set_message(
        manifest
            .datasets
            .first()
            .map(|dataset| dataset.name.clone())
            .unwrap_or_default(),
    );
    let mut lines = Vec::new();
    // Each dataset's time (creating its batch, staging and applying it) is shown: the kinds of
    // rows cost very differently per byte (records link identities and merge; Parquet rows are
    // decoded apart), which the total alone hides.
    let mut dataset_started = started;
    ingest_folder(
        &metadata,
        &ingestor,
        tenant,
        dir,
        clock.now().timestamp_millis(),
        &mut |dataset, batch| {
            progress.inc(1);
            let now = std::time::Instant::now();
            lines.push(format!(
                "  {:<18} {:>9} rows  {:>9} stored  {:>6} rejected  in {:>5.1} s  batch {} {:?}",
                dataset.name,
                dataset.rows,
                batch.metrics.output_record_count,
                batch.metrics.failed_record_count,
                (now - dataset_started).as_secs_f64(),
                batch.id,
                batch.status
            ));
            dataset_started = now;
        },
    )?;
    progress.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let count = profiles.profile_count(tenant)?;
    // The rate is of the folder's people, not of the store's: onto a store that already held
    // profiles, the store's count over this load's time would overstate it.
    writeln!(
        report,
        "ingested {} into {} for {}/{}: {} generated profiles, {} events in {seconds:.1} s ({:.0} profiles/s); {count} merged profiles in the store",
        dir.display(),
        data_dir.display(),
        tenant.org_id,
        tenant.sandbox,
        manifest.profiles,
        manifest.events,
        manifest.profiles as f64 / seconds
    )?;
    for line in lines {
        writeln!(report, "{line}")?;
    }
    Ok(())
}

/// Runs `segmentd ingest`.
pub fn run(args: IngestArgs) -> anyhow::Result<()> {
    load(
        &args.dir,
        &args.data_dir,
        &Tenant::new(args.org, args.sandbox),
        true,
        &mut std::io::stdout(),
    )
}
