use segmentd::ingest::batch::Ingestor;
use segmentd::ingest::folder::ingest_folder;
use segmentd::ingest::generate::{DEFAULT_NOW_MS, GenerateConfig, generate};
use segmentd::sample::rank::RankKey;
use segmentd::store::metadata::MetadataStore;
use segmentd::store::profiles::{MergePolicy, ProfileStore};
use segmentd::tenant::Tenant;
use std::time::Instant;

fn main() {
    let n: u64 = std::env::args().nth(1).unwrap().parse().unwrap();
    let dir = std::path::PathBuf::from(format!("/tmp/prof-{n}"));
    let tenant = Tenant::new("o", "prod");
    let state = dir.join("state");
    if !state.exists() {
        std::fs::create_dir_all(&state).unwrap();
        let data = dir.join("data");
        generate(
            &GenerateConfig {
                profiles: n,
                seed: 7,
                now_ms: DEFAULT_NOW_MS,
                threads: 2,
            },
            &data,
            &|| {},
        )
        .unwrap();
        let metadata = MetadataStore::open(&state).unwrap();
        let store = std::sync::Arc::new(ProfileStore::open(&state).unwrap());
        let ingestor = Ingestor::new(
            metadata.clone(),
            store.clone(),
            &state,
            std::sync::Arc::new(segmentd::clock::SystemClock),
        );
        ingest_folder(&metadata, &ingestor, &tenant, &data, 0, &mut |_, _| {}).unwrap();
    }
    let store = ProfileStore::open(&state).unwrap();
    let mode = std::env::args().nth(2).unwrap_or_default();
    let t = Instant::now();
    match mode.as_str() {
        "scan" => {
            let mut e = 0;
            store
                .scan(&tenant, &MergePolicy::default(), |p| e += p.events.len())
                .unwrap();
            eprintln!("events {e}");
        }
        "parse" => {
            let mut e = 0;
            store
                .scan(&tenant, &MergePolicy::default(), |p| {
                    for ev in &p.events {
                        let v: serde_json::Value = serde_json::from_str(&ev.json).unwrap();
                        e += v.as_object().unwrap().len();
                    }
                })
                .unwrap();
            eprintln!("fields {e}");
        }
        _ => {
            let s = segmentd::sample::store::build_sample(
                &store,
                &tenant,
                "p",
                &MergePolicy::default(),
                &RankKey::new(1, 2),
                chrono::Utc::now(),
            )
            .unwrap();
            eprintln!(
                "sample {} bytes {} attr cols {} event cols {}",
                s.len(),
                s.heap_bytes(),
                s.tables.attributes().column_count(),
                s.tables.events().column_count()
            );
        }
    }
    eprintln!("{mode}: {:?}", t.elapsed());
}
