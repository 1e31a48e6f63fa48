//! Loads a folder written by [`super::generate`] into the profile store: the
//! demo and benchmark path, and the reference for how handlers feed files to
//! the store (validate while streaming, apply in bounded chunks).

use std::path::Path;

use super::generate::{GenerateError, read_manifest};
use super::validate::{IngestError, ReadError, RowError, RowReader};
use crate::store::profiles::{ProfileStore, ProfileStoreError};
use crate::tenant::Tenant;

/// Rows per store transaction when loading, bounding memory per call.
pub const LOAD_CHUNK_ROWS: usize = 20_000;

/// Row errors kept per dataset in a [`LoadReport`]; the rest are only counted.
const KEPT_ROW_ERRORS: usize = 100;

/// The outcome of loading one dataset.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DatasetLoad {
    /// The dataset name from the manifest.
    pub name: String,
    /// Rows stored.
    pub rows: u64,
    /// Rows rejected by validation.
    pub failed_rows: u64,
    /// The first rejected rows, with the file they came from.
    pub errors: Vec<(String, RowError)>,
}

/// The outcome of [`load_folder`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LoadReport {
    /// One entry per dataset, in manifest order.
    pub datasets: Vec<DatasetLoad>,
}

/// Errors that stop a load.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The manifest is missing or unreadable.
    #[error(transparent)]
    Manifest(#[from] GenerateError),
    /// A data file is unreadable.
    #[error("{file}: {source}")]
    File {
        /// The file, relative to the folder.
        file: String,
        /// What went wrong.
        source: IngestError,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] ProfileStoreError),
}

/// Loads every dataset of a generated folder into `store` for `tenant`, in
/// chunks of `chunk_rows` rows, each chunk one durable transaction, and
/// calls `on_rows` with the number of rows after each chunk.
pub fn load_folder(
    store: &ProfileStore,
    tenant: &Tenant,
    dir: &Path,
    chunk_rows: usize,
    on_rows: &mut dyn FnMut(u64),
) -> Result<LoadReport, LoadError> {
    let manifest = read_manifest(dir)?;
    let mut report = LoadReport::default();
    for dataset in &manifest.datasets {
        let mut load = DatasetLoad {
            name: dataset.name.clone(),
            ..DatasetLoad::default()
        };
        for file in &dataset.files {
            let file_error = |source| LoadError::File {
                file: file.clone(),
                source,
            };
            let mut chunk = Vec::with_capacity(chunk_rows.min(LOAD_CHUNK_ROWS));
            let reader = RowReader::open(&dir.join(file), dataset.kind).map_err(file_error)?;
            for item in reader {
                match item {
                    Ok(row) => chunk.push(row),
                    Err(ReadError::Row(error)) => {
                        load.failed_rows += 1;
                        if load.errors.len() < KEPT_ROW_ERRORS {
                            load.errors.push((file.clone(), error));
                        }
                    }
                    Err(ReadError::File(source)) => return Err(file_error(source)),
                }
                if chunk.len() >= chunk_rows {
                    let rows = std::mem::take(&mut chunk);
                    load.rows += store
                        .apply_batch(tenant, &dataset.name, dataset.kind, rows)?
                        .rows as u64;
                    on_rows(chunk_rows as u64);
                }
            }
            if !chunk.is_empty() {
                let count = chunk.len() as u64;
                load.rows += store
                    .apply_batch(tenant, &dataset.name, dataset.kind, chunk)?
                    .rows as u64;
                on_rows(count);
            }
        }
        report.datasets.push(load);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::generate::{DEFAULT_NOW_MS, GenerateConfig, generate};
    use crate::store::profiles::MergePolicy;

    #[test]
    fn a_generated_folder_loads_with_exact_counts() {
        let data = tempfile::tempdir().unwrap();
        let config = GenerateConfig {
            profiles: 3_000,
            seed: 42,
            now_ms: DEFAULT_NOW_MS,
            threads: 2,
        };
        let manifest = generate(&config, data.path(), &|| {}).unwrap();
        let db = tempfile::tempdir().unwrap();
        let store = ProfileStore::open(db.path()).unwrap();
        let tenant = Tenant::new("ORG@AdobeOrg", "prod");
        let report = load_folder(&store, &tenant, data.path(), 1_000, &mut |_| {}).unwrap();

        for (dataset, load) in manifest.datasets.iter().zip(&report.datasets) {
            assert_eq!(load.failed_rows, 0, "{:?}", load.errors);
            assert_eq!(load.rows, dataset.rows, "{}", dataset.name);
        }
        let counts = store.dataset_row_counts(&tenant).unwrap();
        for dataset in &manifest.datasets {
            assert_eq!(
                counts.get(&dataset.name).copied().unwrap_or(0),
                dataset.rows,
                "{}",
                dataset.name
            );
        }
        assert_eq!(store.profile_count(&tenant).unwrap(), manifest.profiles);

        let (mut profiles, mut events, mut with_loyalty_conflict) = (0u64, 0u64, 0u64);
        store
            .scan(&tenant, &MergePolicy::default(), |profile| {
                profiles += 1;
                events += profile.total_events as u64;
                if profile
                    .identities
                    .iter()
                    .any(|i| i.namespace == "loyaltyid")
                {
                    with_loyalty_conflict += 1;
                    assert!(
                        profile
                            .identities
                            .iter()
                            .any(|i| i.namespace == "crmid" && i.primary)
                    );
                }
            })
            .unwrap();
        assert_eq!(profiles, manifest.profiles);
        assert_eq!(events, manifest.events);
        assert_eq!(with_loyalty_conflict, manifest.datasets[1].rows);
    }
}
