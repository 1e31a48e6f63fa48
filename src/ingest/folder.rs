//! Loads a folder written by [`crate::ingest::generate`] the way an API client would: one Catalog
//! dataset per manifest dataset (profile-enabled, with the XDM class of its kind), one batch per
//! dataset with every file staged, then the same processing as `POST /batches/{id}?action=COMPLETE`
//! ([`Ingestor::process_blocking`]). `segmentd ingest` and `serve --demo` use it.

use std::path::Path;

use crate::catalog::batches::{self, Batch, BatchStatus, FileFormat, InputFormat, NewBatch};
use crate::catalog::datasets::{self, EVENT_SCHEMA, NewDataset, PROFILE_SCHEMA, SchemaRef};
use crate::ingest::batch::{IngestJobError, Ingestor};
use crate::ingest::generate::{DatasetFiles, GenerateError, read_manifest};
use crate::store::metadata::{MetadataStore, StoreError};
use crate::store::profiles::RecordKind;
use crate::tenant::Tenant;

/// Why a folder could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    /// The manifest is missing or unreadable.
    #[error(transparent)]
    Manifest(#[from] GenerateError),
    /// The metadata store failed.
    #[error(transparent)]
    Metadata(#[from] StoreError),
    /// A file could not be staged.
    #[error("cannot stage {file}: {source}")]
    Stage {
        /// The file, relative to the folder.
        file: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Processing a batch failed.
    #[error(transparent)]
    Process(#[from] IngestJobError),
}

/// Loads every dataset of `dir` for `tenant`; calls `on_batch` after each batch with its outcome.
pub fn ingest_folder(
    metadata: &MetadataStore,
    ingestor: &Ingestor,
    tenant: &Tenant,
    dir: &Path,
    now_ms: i64,
    on_batch: &mut dyn FnMut(&DatasetFiles, &Batch),
) -> Result<Vec<Batch>, FolderError> {
    let manifest = read_manifest(dir)?;
    let mut outcomes = Vec::with_capacity(manifest.datasets.len());
    for dataset in &manifest.datasets {
        let schema = match dataset.kind {
            RecordKind::Profile => PROFILE_SCHEMA,
            RecordKind::Event => EVENT_SCHEMA,
        };
        let request = NewDataset {
            name: Some(dataset.name.clone()),
            description: Some(format!("loaded from {}", dir.display())),
            schema_ref: SchemaRef {
                id: schema.into(),
                content_type: None,
            },
            tags: [
                ("unifiedProfile".to_owned(), vec!["enabled:true".to_owned()]),
                (
                    "unifiedIdentity".to_owned(),
                    vec!["enabled:true".to_owned()],
                ),
            ]
            .into_iter()
            .collect(),
            enable_error_diagnostics: None,
            file_description: None,
        };
        let format = if dataset.format == "parquet" {
            FileFormat::Parquet
        } else {
            FileFormat::Json
        };
        let batch = metadata.call_blocking(|connection| {
            let (dataset_id, _) =
                datasets::create_dataset_blocking(connection, tenant, request, now_ms)?;
            let new = NewBatch {
                dataset_id,
                input_format: InputFormat {
                    format,
                    is_multi_line_json: false,
                },
                external_id: None,
                tags: Default::default(),
                created_client: "segmentd-cli".into(),
            };
            batches::create_batch_blocking(connection, tenant, new, now_ms)
        })?;
        for file in &dataset.files {
            stage(ingestor, &batch.id, dir, file)?;
        }
        metadata.call_blocking(|connection| {
            batches::transition_blocking(
                connection,
                tenant,
                &batch.id,
                |status| status == BatchStatus::Loading,
                |batch| {
                    batch.status = BatchStatus::Staging;
                    batch.started = Some(now_ms);
                },
            )
        })?;
        let outcome = ingestor.process_blocking(tenant, &batch.id)?;
        on_batch(dataset, &outcome);
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// Puts a file in a batch's staging area: a hard link when the folder is on the same file system,
/// else a copy.
fn stage(ingestor: &Ingestor, batch_id: &str, dir: &Path, file: &str) -> Result<(), FolderError> {
    let failed = |source| FolderError::Stage {
        file: file.to_owned(),
        source,
    };
    let target = ingestor
        .files()
        .final_path(batch_id, file)
        .map_err(|error| failed(std::io::Error::other(error.to_string())))?;
    std::fs::create_dir_all(target.parent().expect("staged files live in a directory"))
        .map_err(failed)?;
    let source = dir.join(file);
    if std::fs::hard_link(&source, &target).is_err() {
        std::fs::copy(&source, &target).map_err(failed)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::ingest::generate::{DEFAULT_NOW_MS, GenerateConfig, generate};
    use crate::store::profiles::{MergePolicy, ProfileStore};
    use std::sync::Arc;

    /// Stores in a temporary folder, with the ingestor over them.
    fn stores() -> (
        tempfile::TempDir,
        MetadataStore,
        Arc<ProfileStore>,
        Ingestor,
    ) {
        let state = tempfile::tempdir().unwrap();
        let metadata = MetadataStore::open(state.path()).unwrap();
        let profiles = Arc::new(ProfileStore::open(state.path()).unwrap());
        let ingestor = Ingestor::new(
            metadata.clone(),
            profiles.clone(),
            state.path(),
            Arc::new(SystemClock),
        );
        (state, metadata, profiles, ingestor)
    }

    fn load(
        metadata: &MetadataStore,
        ingestor: &Ingestor,
        tenant: &Tenant,
        dir: &Path,
    ) -> Vec<Batch> {
        ingest_folder(metadata, ingestor, tenant, dir, 0, &mut |_, _| {}).unwrap()
    }

    #[test]
    fn a_generated_folder_loads_with_exact_counts() {
        let data = tempfile::tempdir().unwrap();
        let config = GenerateConfig {
            profiles: 3_000,
            seed: 42,
            now_ms: DEFAULT_NOW_MS,
            threads: 2,
            first_index: 0,
        };
        let manifest = generate(&config, data.path(), &|| {}).unwrap();
        let (_state, metadata, profiles, ingestor) = stores();
        let tenant = Tenant::new("ORG@AdobeOrg", "prod");
        let outcomes = load(&metadata, &ingestor, &tenant, data.path());

        for (dataset, batch) in manifest.datasets.iter().zip(&outcomes) {
            assert_eq!(batch.status, BatchStatus::Success, "{:?}", batch.errors);
            assert_eq!(
                batch.metrics.output_record_count, dataset.rows,
                "{}",
                dataset.name
            );
            assert_eq!(batch.metrics.failed_record_count, 0);
        }
        assert_eq!(profiles.profile_count(&tenant).unwrap(), manifest.profiles);
        let mut events = 0;
        profiles
            .scan(&tenant, &MergePolicy::default(), |profile| {
                events += profile.total_events as u64
            })
            .unwrap();
        assert_eq!(events, manifest.events);
    }

    /// A large store is built in parts: folders of disjoint index ranges load as disjoint people,
    /// and loading a range again with the same seed changes no count.
    #[test]
    fn parts_of_disjoint_index_ranges_load_as_disjoint_people() {
        let (_state, metadata, profiles, ingestor) = stores();
        let tenant = Tenant::new("ORG@AdobeOrg", "prod");
        for (first_index, seed, expected) in [(0, 7, 500), (500, 8, 1_000), (0, 7, 1_000)] {
            let data = tempfile::tempdir().unwrap();
            let config = GenerateConfig {
                profiles: 500,
                seed,
                now_ms: DEFAULT_NOW_MS,
                threads: 2,
                first_index,
            };
            generate(&config, data.path(), &|| {}).unwrap();
            load(&metadata, &ingestor, &tenant, data.path());
            assert_eq!(
                profiles.profile_count(&tenant).unwrap(),
                expected,
                "from {first_index}"
            );
        }
    }
}
