//! Processing of completed batches (`ingest-api.md` §4.4, §4.7–4.8) and of streamed records (§5).
//!
//! A completed batch is processed in one pass over its staged files, read and prepared on every core
//! ([`crate::ingest::pipeline`]): valid rows stream in file order into **one**
//! durable profile-store transaction while invalid rows are counted and reported, and an unreadable
//! file abandons the transaction. So a batch is either wholly in the store or not at all, and a crash
//! before the batch's status is written only leaves it in `staging`, from where start-up processes it
//! again. Replaying is harmless: records replace the
//! fragment of the same (dataset, primary identity) and events are deduplicated by `_id`.
//!
//! Only datasets whose `unifiedProfile` tag is enabled feed the profile store (§3.2: "data ingested
//! while the dataset is disabled never reaches Profile"); other batches are validated and counted but
//! not stored, since segmentd keeps no data lake.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::catalog::batches::{
    self, Batch, BatchError, BatchMetrics, BatchStatus, FileFormat, InputFormat, Transition,
};
use crate::catalog::datasets::{Dataset, EVENT_SCHEMA, PROFILE_SCHEMA};
use crate::catalog::files::{BatchFiles, StagedFile};
use crate::clock::Clock;
use crate::ingest::pipeline::{BatchSource, PipelineItem, prepare_files};
use crate::ingest::validate::{self, IngestError};
use crate::store::metadata::{MetadataStore, StoreError};
use crate::store::profiles::{PreparedRow, ProfileStore, ProfileStoreError, RecordKind};
use crate::tenant::Tenant;

/// Row errors listed one by one on a batch; beyond this they are only counted in the summary entry.
const MAX_LISTED_ROW_ERRORS: usize = 1_000;

/// Code of a per-row error (Adobe's "row has corrupted data" class).
const ROW_ERROR_CODE: &str = "INGEST-1401-400";
/// Code of the summary entry of a batch with row errors.
const SUMMARY_CODE: &str = "INGEST-1212-400";
/// Code of a batch that failed as a whole.
const BATCH_FAILED_CODE: &str = "INGEST-1211-400";

/// Why a batch could not be processed (as opposed to being processed and found bad).
#[derive(Debug, thiserror::Error)]
pub enum IngestJobError {
    /// The metadata store failed.
    #[error(transparent)]
    Metadata(#[from] StoreError),
    /// The profile store failed.
    #[error(transparent)]
    Profiles(#[from] ProfileStoreError),
    /// Staged files could not be listed.
    #[error("cannot list staged files: {0}")]
    Files(#[from] std::io::Error),
}

/// Returns which kind of rows a dataset holds, from its schema.
///
/// segmentd has no schema registry, so a custom schema id (`https://ns.adobe.com/{TENANT}/schemas/...`)
/// cannot be resolved to its class. The rule: the two standard class ids mean what they say; any other
/// id is an ExperienceEvent schema when it contains `experienceevent` (case-insensitive), else a
/// profile record schema.
pub fn record_kind(dataset: &Dataset) -> RecordKind {
    let id = dataset.schema_ref.id.to_ascii_lowercase();
    if id == EVENT_SCHEMA || (id != PROFILE_SCHEMA && id.contains("experienceevent")) {
        RecordKind::Event
    } else {
        RecordKind::Profile
    }
}

/// Maps a batch's declared input format to the reader's.
fn reader_format(format: &InputFormat) -> validate::InputFormat {
    match (format.format, format.is_multi_line_json) {
        (FileFormat::Parquet, _) => validate::InputFormat::Parquet,
        (FileFormat::Json, true) => validate::InputFormat::JsonArray,
        (FileFormat::Json, false) => validate::InputFormat::JsonLines,
    }
}

/// What processing found: counters, errors, and whether the batch failed as a whole.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// Counters for the batch resource.
    pub metrics: BatchMetrics,
    /// Error entries for the batch resource.
    pub errors: Vec<BatchError>,
    /// True when nothing of the batch was applied.
    pub failed: bool,
}

/// Validates and applies the staged files of a batch; see the module documentation.
pub fn process_files(
    store: &ProfileStore,
    tenant: &Tenant,
    dataset_id: &str,
    dataset: &Dataset,
    format: &InputFormat,
    files: &[StagedFile],
) -> Result<BatchOutcome, ProfileStoreError> {
    let kind = record_kind(dataset);
    let format = reader_format(format);
    let mut outcome = BatchOutcome::default();
    outcome.metrics.input_file_count = files.len() as u64;
    outcome.metrics.input_byte_size = files.iter().map(|file| file.size).sum();
    if files.is_empty() {
        outcome.failed = true;
        outcome.errors.push(batch_failure(
            "the batch has no files: upload at least one before COMPLETE",
        ));
        return Ok(outcome);
    }

    // One pass: files are read and rows prepared on every core while valid rows stream into one
    // store transaction and row errors are recorded; an unreadable file abandons the transaction,
    // so the batch is stored whole or not at all.
    let paths: Vec<PathBuf> = files.iter().map(|file| file.path.clone()).collect();
    let source = BatchSource {
        files: &paths,
        format,
        kind,
        dataset_id,
    };
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let file_error = prepare_files(&source, workers, |items| {
        let mut rows = BatchRows {
            items,
            files,
            outcome: &mut outcome,
            file_error: None,
        };
        if dataset.tag_enabled("unifiedProfile") {
            match store.apply_prepared(tenant, dataset_id, &mut rows) {
                Err(ProfileStoreError::Aborted(_)) => {}
                other => {
                    other?;
                }
            }
        } else {
            // Not profile-enabled: validated and counted, not stored (see the module documentation).
            rows.by_ref().for_each(drop);
        }
        Ok::<_, ProfileStoreError>(rows.file_error)
    })?;
    if let Some((file, error)) = file_error {
        return Ok(failed_file(outcome, file, &error));
    }
    let row_errors = outcome.metrics.failed_record_count;
    if row_errors > 0 {
        outcome.errors.insert(
            0,
            BatchError {
                code: SUMMARY_CODE.into(),
                description: format!(
                    "Encountered {row_errors} errors in the data. Successfully ingested {} rows.",
                    outcome.metrics.output_record_count
                ),
                file: None,
                rows: Vec::new(),
                record_count: Some(row_errors),
            },
        );
    }
    if outcome.metrics.output_record_count == 0 {
        outcome.failed = true;
        outcome
            .errors
            .push(batch_failure("no row of the batch is valid"));
    }
    Ok(outcome)
}

/// The valid rows of a batch's files, in order, counting and recording invalid ones on the way.
///
/// Yields `Ok(row)` for each valid row and one final `Err` when a file cannot be opened or read, which
/// makes [`ProfileStore::apply_prepared`] abandon the batch.
struct BatchRows<'items, 'files, 'out> {
    items: &'items mut dyn Iterator<Item = PipelineItem>,
    files: &'files [StagedFile],
    outcome: &'out mut BatchOutcome,
    file_error: Option<(&'files StagedFile, IngestError)>,
}

impl Iterator for BatchRows<'_, '_, '_> {
    type Item = Result<PreparedRow, ProfileStoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.items.next()? {
                PipelineItem::Row {
                    prepared: Ok(row), ..
                } => {
                    self.outcome.metrics.input_record_count += 1;
                    self.outcome.metrics.output_record_count += 1;
                    return Some(Ok(row));
                }
                PipelineItem::Row {
                    file,
                    row,
                    prepared: Err(reason),
                } => {
                    self.outcome.metrics.input_record_count += 1;
                    self.outcome.metrics.failed_record_count += 1;
                    if self.outcome.errors.len() < MAX_LISTED_ROW_ERRORS {
                        self.outcome.errors.push(BatchError {
                            code: ROW_ERROR_CODE.into(),
                            description: reason,
                            file: Some(self.files[file].name.clone()),
                            rows: vec![row as u64],
                            record_count: Some(1),
                        });
                    }
                }
                PipelineItem::FileError { file, error } => {
                    let message = error.to_string();
                    self.file_error = Some((&self.files[file], error));
                    return Some(Err(ProfileStoreError::Aborted(message)));
                }
            }
        }
    }
}

fn batch_failure(description: impl Into<String>) -> BatchError {
    BatchError {
        code: BATCH_FAILED_CODE.into(),
        description: description.into(),
        file: None,
        rows: Vec::new(),
        record_count: None,
    }
}

fn failed_file(mut outcome: BatchOutcome, file: &StagedFile, error: &IngestError) -> BatchOutcome {
    outcome.failed = true;
    outcome.metrics.output_record_count = 0;
    outcome.errors.push(BatchError {
        code: BATCH_FAILED_CODE.into(),
        description: format!("file {} cannot be read: {error}", file.name),
        file: Some(file.name.clone()),
        rows: Vec::new(),
        record_count: None,
    });
    outcome
}

/// Runs batches and streamed records into the profile store; a cheap-to-clone handle.
#[derive(Clone)]
pub struct Ingestor {
    metadata: MetadataStore,
    profiles: Arc<ProfileStore>,
    files: BatchFiles,
    clock: Arc<dyn Clock>,
}

impl Ingestor {
    /// Creates the ingestor over the stores.
    pub fn new(
        metadata: MetadataStore,
        profiles: Arc<ProfileStore>,
        data_dir: &Path,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            metadata,
            profiles,
            files: BatchFiles::new(data_dir),
            clock,
        }
    }

    /// Returns the staging area of uploaded files.
    pub fn files(&self) -> &BatchFiles {
        &self.files
    }

    /// Returns the profile store.
    pub fn profiles(&self) -> &Arc<ProfileStore> {
        &self.profiles
    }

    /// Processes a batch that is in `staging`, then records `success` or `failed` and deletes its
    /// staged files. Runs on the blocking pool.
    pub async fn process(&self, tenant: Tenant, batch_id: String) -> Result<Batch, IngestJobError> {
        let ingestor = self.clone();
        tokio::task::spawn_blocking(move || ingestor.process_blocking(&tenant, &batch_id))
            .await
            .map_err(|error| StoreError::Task(error.to_string()))?
    }

    /// Processes a batch in `staging` on the current thread (see [`Ingestor::process`]).
    pub fn process_blocking(
        &self,
        tenant: &Tenant,
        batch_id: &str,
    ) -> Result<Batch, IngestJobError> {
        let (batch, dataset) = self.metadata.call_blocking(|connection| {
            let batch = batches::get_batch_blocking(connection, tenant, batch_id)?
                .ok_or_else(|| StoreError::Task(format!("batch {batch_id} vanished")))?;
            let dataset = crate::catalog::datasets::get_dataset_blocking(
                connection,
                tenant,
                batch.dataset_id(),
            )?;
            Ok((batch, dataset))
        })?;
        let outcome = match dataset {
            Some(dataset) => {
                let files = self.files.list(batch_id)?;
                process_files(
                    &self.profiles,
                    tenant,
                    batch.dataset_id(),
                    &dataset,
                    &batch.input_format,
                    &files,
                )?
            }
            None => BatchOutcome {
                failed: true,
                errors: vec![batch_failure(format!(
                    "dataset {} no longer exists",
                    batch.dataset_id()
                ))],
                ..BatchOutcome::default()
            },
        };
        let now_ms = self.clock.now().timestamp_millis();
        let finished = self.metadata.call_blocking(|connection| {
            batches::transition_blocking(
                connection,
                tenant,
                batch_id,
                |status| status == BatchStatus::Staging,
                |batch| {
                    batch.status = if outcome.failed {
                        BatchStatus::Failed
                    } else {
                        BatchStatus::Success
                    };
                    batch.metrics = outcome.metrics;
                    batch.errors = outcome.errors;
                    batch.completed = Some(now_ms);
                    batch.updated = now_ms;
                },
            )
        })?;
        // Files are only needed until the outcome is recorded; a failure to delete them wastes space
        // but loses nothing, so it is logged rather than failing the batch.
        if let Err(error) = self.files.remove(batch_id) {
            tracing::warn!(batch_id, %error, "cannot delete staged files");
        }
        match finished {
            Transition::Done(batch) | Transition::WrongState(batch) => Ok(batch),
            Transition::NotFound => {
                Err(StoreError::Task(format!("batch {batch_id} vanished")).into())
            }
        }
    }

    /// Processes every batch a previous process left in `staging` (start-up recovery).
    pub async fn recover(&self) -> Result<usize, IngestJobError> {
        let pending = self
            .metadata
            .call(|connection| batches::staging_batches_blocking(connection))
            .await?;
        for (tenant, batch_id) in &pending {
            tracing::info!(batch_id, "resuming batch left in staging");
            self.process(tenant.clone(), batch_id.clone()).await?;
        }
        Ok(pending.len())
    }
}
