//! What the store and segment-job benches share: the profile count they run on, a generated
//! demo folder, and loading it through the API's batch path.

// Each bench binary compiles this module and uses a part of it.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use segmentd::clock::SystemClock;
use segmentd::ingest::batch::Ingestor;
use segmentd::ingest::folder::ingest_folder;
use segmentd::ingest::generate::{DEFAULT_NOW_MS, GenerateConfig, Manifest, generate};
use segmentd::store::metadata::MetadataStore;
use segmentd::store::profiles::ProfileStore;
use segmentd::tenant::Tenant;

/// The tenant every bench loads into.
pub fn tenant() -> Tenant {
    Tenant::new("BENCH@AdobeOrg", "prod")
}

/// `SEGMENTD_BENCH_PROFILES`, else `default`.
pub fn profiles(default: u64) -> u64 {
    std::env::var("SEGMENTD_BENCH_PROFILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The generator's settings for `profiles` profiles with a fixed seed, on two threads.
pub fn generate_config(profiles: u64) -> GenerateConfig {
    GenerateConfig {
        profiles,
        seed: 1,
        now_ms: DEFAULT_NOW_MS,
        threads: 2,
    }
}

/// Generates the demo folder of `profiles` profiles into a new temporary directory.
pub fn generated(profiles: u64) -> (tempfile::TempDir, Manifest) {
    let data = tempfile::tempdir().expect("tempdir");
    let manifest = generate(&generate_config(profiles), data.path(), &|| {}).expect("generate");
    (data, manifest)
}

/// Loads a generated folder into the data directory `state` through the batch path the API
/// uses (Catalog datasets and batches, validation, one transaction per batch).
pub fn load_through_batches(state: &Path, data: &Path) -> (MetadataStore, Arc<ProfileStore>) {
    let metadata = MetadataStore::open(state).expect("metadata");
    let store = Arc::new(ProfileStore::open(state).expect("open"));
    let ingestor = Ingestor::new(
        metadata.clone(),
        store.clone(),
        state,
        Arc::new(SystemClock),
    );
    ingest_folder(&metadata, &ingestor, &tenant(), data, 0, &mut |_, _| {}).expect("load");
    (metadata, store)
}
