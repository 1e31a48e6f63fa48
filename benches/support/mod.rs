//! What the benches share: the issue's predicates, the profile count they run on, a generated
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

/// The four predicates of the sample issue, by label: an attribute conjunction, a
/// case-insensitive string test, an event count in a 30-day window and a two-step chain (also the
/// previews of `scripts/bench.py`).
pub const ISSUE_PREDICATES: [(&str, &str); 4] = [
    (
        "attribute",
        r#"person.gender = "male" and homeAddress.countryCode = "US""#,
    ),
    (
        "string_case_insensitive",
        r#"person.name.lastName.startsWith("mi", false)"#,
    ),
    (
        "event_count_30_days",
        "xEvent[timestamp occurs < 30 days before now].count() > 0",
    ),
    (
        "two_step_chain",
        r#"chain(xEvent, timestamp, [C: WHAT(eventType = "commerce.productListAdds"), D: WHAT(eventType = "commerce.purchases")])"#,
    ),
];

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
        first_index: 0,
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
