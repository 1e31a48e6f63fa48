//! Deterministic synthetic XDM data for demos, tests and benchmarks, following
//! `ingest-api.md` §12 (fields) and §13 (distributions).
//!
//! # Output layout
//!
//! ```text
//! DIR/manifest.json                       datasets, kinds, formats, files, row counts
//! DIR/crm_profiles/part-00000.jsonl       one record per known person (CRMID primary)
//! DIR/loyalty_profiles/part-00000.parquet ~10 % of known people again, conflicting loyalty data
//! DIR/web_events/part-00000.jsonl         every person's web events (ECID primary)
//! ```
//!
//! Load the profile datasets before the event dataset or after it: the graph
//! ends up the same. Every person is exactly one merged profile, so after a
//! full load the store holds `manifest.profiles` profiles.
//!
//! # People and identities
//!
//! Half the people are known: a CRM record with CRMID (primary), Email, Phone
//! (80 %) and all their ECIDs (1–5, geometric), as in Adobe's CRM sample. The
//! other half are anonymous, one ECID and events only. Logged-in hits (30 % of
//! known sessions) also carry the CRMID. Ids derive from the person's index,
//! so no two people share an identity.
//!
//! # Determinism
//!
//! People are generated in shards of [`SHARD_SIZE`], each with its own RNG
//! seeded from (seed, shard), and each shard writes its own files, so the same
//! seed gives the same bytes whatever the thread count. Time is relative to a
//! fixed `now` (default 2024-06-15T12:00:00Z, as `pql.md` §7), never the clock.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow::datatypes::{DataType, Field, Fields, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Exp, Geometric, LogNormal, Poisson, Zipf};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::arrow_json;
use crate::store::profiles::RecordKind;

/// People per shard: the unit of parallelism and of output files.
pub const SHARD_SIZE: u64 = 20_000;

/// The default reference instant, `2024-06-15T12:00:00Z`, in epoch ms.
pub const DEFAULT_NOW_MS: i64 = 1_718_452_800_000;

/// Events span this many days before `now` (18 months).
const HISTORY_DAYS: i64 = 548;
const DAY_MS: i64 = 86_400_000;

/// Share of people who are known (have a CRM record).
const KNOWN_SHARE: f64 = 0.5;
/// Share of known people who also get a `loyalty_profiles` record.
const LOYALTY_SPLIT_SHARE: f64 = 0.10;
/// Share of people with a deliberately huge history (tests the 5,000 cut).
const HEAVY_SHARE: f64 = 0.000_02;

/// Settings of one generator run.
#[derive(Debug, Clone)]
pub struct GenerateConfig {
    /// Number of people, which is the number of merged profiles after loading.
    pub profiles: u64,
    /// Seeds every distribution.
    pub seed: u64,
    /// The reference "now" in epoch ms; every timestamp is before it.
    pub now_ms: i64,
    /// Worker threads; the output does not depend on it.
    pub threads: usize,
    /// The index of the first person. Ids derive from the index, so folders generated for
    /// disjoint index ranges load as disjoint people (a large store built part by part). Known
    /// people's ids (CRMID, email, loyalty id) come from the index alone, anonymous visitors'
    /// ECIDs from the seeded stream too: the same range and seed load as the same people.
    pub first_index: u64,
}

/// Files and row counts of one generated dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetFiles {
    /// The dataset name, also its folder name.
    pub name: String,
    /// Profile records or experience events.
    pub kind: RecordKind,
    /// `jsonl` or `parquet`.
    pub format: String,
    /// File paths relative to the output folder, in load order.
    pub files: Vec<String>,
    /// Rows over all files.
    pub rows: u64,
}

/// `manifest.json`: what a loader needs to know about a generated folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The seed used.
    pub seed: u64,
    /// The reference instant, RFC 3339.
    pub now: String,
    /// People generated: the merged-profile count after a full load.
    pub profiles: u64,
    /// People with a CRM record.
    pub known_profiles: u64,
    /// Events over all datasets.
    pub events: u64,
    /// The datasets, profile datasets first.
    pub datasets: Vec<DatasetFiles>,
}

/// The manifest file name inside the output folder.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Errors of the generator.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// Writing an output file failed.
    #[error("cannot write generated data: {0}")]
    Io(#[from] std::io::Error),
    /// Writing Parquet failed.
    #[error("cannot write parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Building an Arrow batch failed.
    #[error("cannot build arrow batch: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Writing the manifest failed.
    #[error("cannot write manifest: {0}")]
    Json(#[from] serde_json::Error),
}

/// What one shard produced.
#[derive(Debug, Default, Clone, Copy)]
struct ShardCounts {
    known: u64,
    loyalty: u64,
    events: u64,
}

const CRM: &str = "crm_profiles";
const LOYALTY: &str = "loyalty_profiles";
const WEB_EVENTS: &str = "web_events";

/// Generates the dataset folder `out` and returns its manifest (also written
/// to `out/manifest.json`). `on_shard` is called after each finished shard,
/// e.g. to advance a progress bar.
pub fn generate(
    config: &GenerateConfig,
    out: &Path,
    on_shard: &(dyn Fn() + Sync),
) -> Result<Manifest, GenerateError> {
    for dataset in [CRM, LOYALTY, WEB_EVENTS] {
        std::fs::create_dir_all(out.join(dataset))?;
    }
    let shards = config.profiles.div_ceil(SHARD_SIZE) as usize;
    let next_shard = AtomicUsize::new(0);
    let tables = Tables::new();
    let results: Vec<Result<Vec<(usize, ShardCounts)>, GenerateError>> =
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..config.threads.clamp(1, shards.max(1)))
                .map(|_| {
                    scope.spawn(|| {
                        let mut done = Vec::new();
                        loop {
                            let shard = next_shard.fetch_add(1, Ordering::Relaxed);
                            if shard >= shards {
                                return Ok(done);
                            }
                            done.push((shard, generate_shard(config, &tables, shard as u64, out)?));
                            on_shard();
                        }
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("generator worker panicked"))
                .collect()
        });
    let mut counts = vec![ShardCounts::default(); shards];
    for result in results {
        for (shard, shard_counts) in result? {
            counts[shard] = shard_counts;
        }
    }
    let files = |dataset: &str, extension: &str| -> Vec<String> {
        (0..shards)
            .map(|shard| format!("{dataset}/{}", shard_file(shard as u64, extension)))
            .collect()
    };
    let known: u64 = counts.iter().map(|c| c.known).sum();
    let loyalty: u64 = counts.iter().map(|c| c.loyalty).sum();
    let events: u64 = counts.iter().map(|c| c.events).sum();
    let manifest = Manifest {
        seed: config.seed,
        now: format_timestamp(config.now_ms),
        profiles: config.profiles,
        known_profiles: known,
        events,
        datasets: vec![
            DatasetFiles {
                name: CRM.into(),
                kind: RecordKind::Profile,
                format: "jsonl".into(),
                files: files(CRM, "jsonl"),
                rows: known,
            },
            DatasetFiles {
                name: LOYALTY.into(),
                kind: RecordKind::Profile,
                format: "parquet".into(),
                files: files(LOYALTY, "parquet"),
                rows: loyalty,
            },
            DatasetFiles {
                name: WEB_EVENTS.into(),
                kind: RecordKind::Event,
                format: "jsonl".into(),
                files: files(WEB_EVENTS, "jsonl"),
                rows: events,
            },
        ],
    };
    let mut file = BufWriter::new(File::create(out.join(MANIFEST_FILE))?);
    serde_json::to_writer_pretty(&mut file, &manifest)?;
    file.write_all(b"\n")?;
    file.flush()?;
    Ok(manifest)
}

fn shard_file(shard: u64, extension: &str) -> String {
    format!("part-{shard:05}.{extension}")
}

/// Reads `manifest.json` of a generated folder.
pub fn read_manifest(dir: &Path) -> Result<Manifest, GenerateError> {
    let file = std::io::BufReader::new(File::open(dir.join(MANIFEST_FILE))?);
    Ok(serde_json::from_reader(file)?)
}

/// Generates one shard's people and writes its three files.
fn generate_shard(
    config: &GenerateConfig,
    tables: &Tables,
    shard: u64,
    out: &Path,
) -> Result<ShardCounts, GenerateError> {
    let mut rng =
        Xoshiro256PlusPlus::seed_from_u64(splitmix(config.seed ^ splitmix(shard.wrapping_add(1))));
    let first = config.first_index + shard * SHARD_SIZE;
    let last = (first + SHARD_SIZE).min(config.first_index + config.profiles);
    let path = |dataset: &str, extension: &str| -> PathBuf {
        out.join(dataset).join(shard_file(shard, extension))
    };
    let mut crm = BufWriter::with_capacity(1 << 20, File::create(path(CRM, "jsonl"))?);
    let mut web = BufWriter::with_capacity(1 << 20, File::create(path(WEB_EVENTS, "jsonl"))?);
    let mut loyalty_rows = Vec::new();
    let mut counts = ShardCounts::default();
    let mut line = Vec::with_capacity(4096);
    for index in first..last {
        let person = Person::draw(&mut rng, tables, index, config.now_ms);
        if person.known {
            counts.known += 1;
            line.clear();
            person.write_crm_record(&mut line);
            crm.write_all(&line)?;
            if rng.random_bool(LOYALTY_SPLIT_SHARE) {
                loyalty_rows.push(person.loyalty_record(&mut rng, tables, config.now_ms));
                counts.loyalty += 1;
            }
        }
        counts.events +=
            person.write_events(&mut rng, tables, config.now_ms, &mut line, &mut web)?;
    }
    crm.flush()?;
    web.flush()?;
    write_parquet(&path(LOYALTY, "parquet"), &loyalty_rows)?;
    Ok(counts)
}

/// Writes the loyalty records as one zstd-compressed Parquet file (an empty
/// file with the schema when the shard has none).
fn write_parquet(path: &Path, rows: &[Value]) -> Result<(), GenerateError> {
    let schema = loyalty_schema();
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .build();
    let mut writer = ArrowWriter::try_new(File::create(path)?, schema.clone(), Some(properties))?;
    if !rows.is_empty() {
        writer.write(&arrow_json::rows_to_batch(schema, rows)?)?;
    }
    writer.close()?;
    Ok(())
}

fn loyalty_schema() -> Arc<Schema> {
    let utf8 = |name: &str| Field::new(name, DataType::Utf8, true);
    let strings = DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)));
    Arc::new(Schema::new(vec![
        utf8("_id"),
        Field::new("identityMap", arrow_json::identity_map_type(), true),
        Field::new(
            "loyalty",
            DataType::Struct(Fields::from(vec![
                utf8("program"),
                utf8("tier"),
                utf8("status"),
                Field::new("points", DataType::Float64, true),
                Field::new("lifetimePurchases", DataType::Float64, true),
                utf8("joinDate"),
                Field::new("loyaltyID", strings, true),
            ])),
            true,
        ),
        Field::new(
            "homeAddress",
            DataType::Struct(Fields::from(vec![utf8("city")])),
            true,
        ),
        Field::new(
            "person",
            DataType::Struct(Fields::from(vec![utf8("maritalStatus")])),
            true,
        ),
        Field::new(
            "extSourceSystemAudit",
            DataType::Struct(Fields::from(vec![utf8("lastUpdatedDate")])),
            true,
        ),
    ]))
}

/// SplitMix64: spreads seeds so neighbouring shards get unrelated streams.
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A state or province: ISO 3166-2 suffix, name, population weight, cities.
struct Region {
    code: &'static str,
    weight: f64,
    cities: &'static [&'static str],
}

/// A country: ISO code, name, weight, currency, language, regions.
struct Country {
    code: &'static str,
    name: &'static str,
    weight: f64,
    currency: &'static str,
    language: &'static str,
    regions: &'static [Region],
}

const COUNTRIES: &[Country] = &[
    Country {
        code: "US",
        name: "United States",
        weight: 70.0,
        currency: "USD",
        language: "en-US",
        regions: &[
            Region {
                code: "CA",
                weight: 39.0,
                cities: &["Los Angeles", "San Francisco", "San Diego", "San Jose"],
            },
            Region {
                code: "TX",
                weight: 30.0,
                cities: &["Houston", "Dallas", "Austin", "San Antonio"],
            },
            Region {
                code: "FL",
                weight: 22.0,
                cities: &["Miami", "Orlando", "Tampa"],
            },
            Region {
                code: "NY",
                weight: 20.0,
                cities: &["New York", "Buffalo", "Rochester"],
            },
            Region {
                code: "PA",
                weight: 13.0,
                cities: &["Philadelphia", "Pittsburgh"],
            },
            Region {
                code: "IL",
                weight: 12.5,
                cities: &["Chicago", "Springfield"],
            },
            Region {
                code: "OH",
                weight: 11.8,
                cities: &["Columbus", "Cleveland", "Cincinnati"],
            },
            Region {
                code: "GA",
                weight: 11.0,
                cities: &["Atlanta", "Savannah"],
            },
            Region {
                code: "NC",
                weight: 10.7,
                cities: &["Charlotte", "Raleigh"],
            },
            Region {
                code: "MI",
                weight: 10.0,
                cities: &["Detroit", "Grand Rapids"],
            },
            Region {
                code: "WA",
                weight: 7.8,
                cities: &["Seattle", "Spokane"],
            },
            Region {
                code: "MA",
                weight: 7.0,
                cities: &["Boston", "Cambridge", "Worcester"],
            },
            Region {
                code: "MN",
                weight: 5.7,
                cities: &["Minneapolis", "Saint Paul"],
            },
            Region {
                code: "UT",
                weight: 3.4,
                cities: &["Salt Lake City", "Lehi"],
            },
            Region {
                code: "IA",
                weight: 3.2,
                cities: &["Des Moines", "Cedar Rapids"],
            },
        ],
    },
    Country {
        code: "CA",
        name: "Canada",
        weight: 10.0,
        currency: "CAD",
        language: "en-CA",
        regions: &[
            Region {
                code: "ON",
                weight: 15.0,
                cities: &["Toronto", "Ottawa"],
            },
            Region {
                code: "QC",
                weight: 8.8,
                cities: &["Montreal", "Quebec City"],
            },
            Region {
                code: "BC",
                weight: 5.5,
                cities: &["Vancouver", "Victoria"],
            },
            Region {
                code: "AB",
                weight: 4.6,
                cities: &["Calgary", "Edmonton"],
            },
        ],
    },
    Country {
        code: "GB",
        name: "United Kingdom",
        weight: 8.0,
        currency: "GBP",
        language: "en-GB",
        regions: &[
            Region {
                code: "ENG",
                weight: 56.0,
                cities: &["London", "Manchester", "Birmingham"],
            },
            Region {
                code: "SCT",
                weight: 5.4,
                cities: &["Edinburgh", "Glasgow"],
            },
        ],
    },
    Country {
        code: "MX",
        name: "Mexico",
        weight: 6.0,
        currency: "MXN",
        language: "es-MX",
        regions: &[
            Region {
                code: "CMX",
                weight: 9.2,
                cities: &["Mexico City"],
            },
            Region {
                code: "JAL",
                weight: 8.3,
                cities: &["Guadalajara", "Zapopan"],
            },
            Region {
                code: "NLE",
                weight: 5.8,
                cities: &["Monterrey"],
            },
        ],
    },
    Country {
        code: "DE",
        name: "Germany",
        weight: 6.0,
        currency: "EUR",
        language: "de-DE",
        regions: &[
            Region {
                code: "BY",
                weight: 13.1,
                cities: &["Munich", "Nuremberg"],
            },
            Region {
                code: "BE",
                weight: 3.7,
                cities: &["Berlin"],
            },
            Region {
                code: "HH",
                weight: 1.9,
                cities: &["Hamburg"],
            },
        ],
    },
];

const FEMALE_NAMES: &[&str] = &[
    "Mary",
    "Olivia",
    "Emma",
    "Sophia",
    "Ava",
    "Isabella",
    "Jennifer",
    "Charlotte",
    "Amelia",
    "Linda",
    "Sarah",
    "Mia",
    "Elizabeth",
    "Harper",
    "Evelyn",
    "Jessica",
    "Karen",
    "Susan",
    "Chloe",
    "Lucia",
];
const MALE_NAMES: &[&str] = &[
    "James", "Liam", "Noah", "Michael", "Oliver", "Robert", "John", "Elijah", "David", "William",
    "Lucas", "Mason", "Daniel", "Ethan", "Joseph", "Thomas", "Jacob", "Logan", "Mateo", "Lukas",
];
const LAST_NAMES: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Taylor",
    "Thomas",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Clark",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Tremblay",
    "Roy",
    "Schmidt",
    "Schneider",
    "Fischer",
    "Evans",
    "Patel",
    "Nguyen",
    "Kim",
    "Murphy",
];
/// Email domains, most common first (Zipf-weighted).
const EMAIL_DOMAINS: &[&str] = &[
    "gmail.com",
    "yahoo.com",
    "hotmail.com",
    "outlook.com",
    "icloud.com",
    "aol.com",
    "comcast.net",
    "msn.com",
    "live.com",
    "protonmail.com",
    "me.com",
    "att.net",
    "gmx.de",
    "web.de",
    "yahoo.co.uk",
    "shaw.ca",
    "acme-corp.com",
    "globex.com",
    "initech.com",
    "umbrella-group.com",
];
const PAGES: &[(&str, &str)] = &[
    ("home", ""),
    ("women", "women"),
    ("men", "men"),
    ("gear", "gear"),
    ("sale", "sale"),
    ("search", "search"),
    ("account", "customer/account"),
];
const CATEGORIES: &[&str] = &[
    "Tee",
    "Hoodie",
    "Jacket",
    "Leggings",
    "Shorts",
    "Backpack",
    "Yoga Mat",
    "Water Bottle",
    "Running Shoe",
    "Cap",
];
const ADJECTIVES: &[&str] = &[
    "Aero", "Breathe", "Summit", "Trail", "Core", "Pulse", "Stellar", "Nimbus", "Ridge", "Echo",
];
/// Catalogue size; popularity is Zipf over it.
const SKUS: u64 = 400;

/// Precomputed distributions shared by all shards.
struct Tables {
    first_names: Zipf<f64>,
    last_names: Zipf<f64>,
    domains: Zipf<f64>,
    skus: Zipf<f64>,
    events_per_person: LogNormal<f64>,
    age: LogNormal<f64>,
    points: LogNormal<f64>,
    extra_ecids: Geometric,
    session_length: Geometric,
    gap_seconds: Exp<f64>,
    extra_items: Poisson<f64>,
}

impl Tables {
    fn new() -> Self {
        let zipf = |n: usize, s: f64| Zipf::new(n as f64, s).expect("valid zipf");
        Self {
            first_names: zipf(FEMALE_NAMES.len(), 0.7),
            last_names: zipf(LAST_NAMES.len(), 0.7),
            domains: zipf(EMAIL_DOMAINS.len(), 1.2),
            skus: zipf(SKUS as usize, 1.1),
            // Median 4, mean ≈ 9.3 events; heavy right tail (§13).
            events_per_person: LogNormal::new(4f64.ln(), 1.3).expect("valid lognormal"),
            // 18 + a right-skewed part with median 17: mode in the thirties.
            age: LogNormal::new(17f64.ln(), 0.55).expect("valid lognormal"),
            points: LogNormal::new(800f64.ln(), 1.0).expect("valid lognormal"),
            extra_ecids: Geometric::new(0.55).expect("valid geometric"),
            session_length: Geometric::new(0.3).expect("valid geometric"),
            gap_seconds: Exp::new(1.0 / 45.0).expect("valid exp"),
            extra_items: Poisson::new(1.5).expect("valid poisson"),
        }
    }
}

fn zipf_index(rng: &mut Xoshiro256PlusPlus, zipf: &Zipf<f64>, len: usize) -> usize {
    (zipf.sample(rng) as usize).clamp(1, len) - 1
}

fn weighted<'a, T>(
    rng: &mut Xoshiro256PlusPlus,
    items: &'a [T],
    weight: impl Fn(&T) -> f64,
) -> &'a T {
    let total: f64 = items.iter().map(&weight).sum();
    let mut target = rng.random::<f64>() * total;
    for item in items {
        target -= weight(item);
        if target < 0.0 {
            return item;
        }
    }
    items.last().expect("non-empty table")
}

/// One generated person, with what both their record and their events need.
struct Person {
    index: u64,
    known: bool,
    first_name: &'static str,
    last_name: &'static str,
    gender: Option<&'static str>,
    marital: Option<&'static str>,
    birth_days: i64,
    country: &'static Country,
    region: &'static Region,
    city: &'static str,
    postal_code: u32,
    domain: &'static str,
    phone: bool,
    loyalty_tier: Option<usize>,
    loyalty_points: f64,
    join_ms: i64,
    ecids: Vec<String>,
    events: u64,
    mobile_share: f64,
}

const TIERS: &[&str] = &["bronze", "silver", "gold", "platinum"];
const TIER_WEIGHTS: &[f64] = &[60.0, 25.0, 12.0, 3.0];

impl Person {
    fn draw(rng: &mut Xoshiro256PlusPlus, tables: &Tables, index: u64, now_ms: i64) -> Self {
        let known = rng.random_bool(KNOWN_SHARE);
        let gender_draw = rng.random::<f64>();
        let gender = match gender_draw {
            x if x < 0.44 => Some("female"),
            x if x < 0.88 => Some("male"),
            x if x < 0.90 => Some("not_specified"),
            x if x < 0.91 => Some("non_specific"),
            _ => None,
        };
        let first_names = if gender == Some("male") || (gender.is_none() && rng.random_bool(0.5)) {
            MALE_NAMES
        } else {
            FEMALE_NAMES
        };
        let first_name = first_names[zipf_index(rng, &tables.first_names, first_names.len())];
        let last_name = LAST_NAMES[zipf_index(rng, &tables.last_names, LAST_NAMES.len())];
        let age_years = (18.0 + tables.age.sample(rng)).min(90.0);
        let birth_days = (now_ms / DAY_MS) - (age_years * 365.25) as i64;
        let country = weighted(rng, COUNTRIES, |c| c.weight);
        let region = weighted(rng, country.regions, |r| r.weight);
        let city = region.cities[rng.random_range(0..region.cities.len())];
        let marital = if rng.random_bool(0.7) {
            Some(
                weighted(
                    rng,
                    &[
                        ("married", 45.0),
                        ("single", 35.0),
                        ("divorced", 10.0),
                        ("widowed", 5.0),
                        ("not_specified", 5.0),
                    ],
                    |m| m.1,
                )
                .0,
            )
        } else {
            None
        };
        let loyalty_tier = rng.random_bool(0.4).then(|| {
            let draw = rng.random::<f64>() * 100.0;
            let mut cumulative = 0.0;
            TIER_WEIGHTS
                .iter()
                .position(|w| {
                    cumulative += w;
                    draw < cumulative
                })
                .unwrap_or(0)
        });
        let ecid_count = if known {
            (1 + tables.extra_ecids.sample(rng)).min(5)
        } else {
            1
        };
        let ecids = (0..ecid_count)
            .map(|_| {
                format!(
                    "{:019}{:019}",
                    rng.random_range(0..10_000_000_000_000_000_000u64),
                    rng.random_range(0..10_000_000_000_000_000_000u64)
                )
            })
            .collect();
        let events = if rng.random_bool(HEAVY_SHARE) {
            rng.random_range(5_000..6_500)
        } else {
            (tables.events_per_person.sample(rng).round() as u64).max(1)
        };
        Self {
            index,
            known,
            first_name,
            last_name,
            gender,
            marital,
            birth_days,
            country,
            region,
            city,
            postal_code: rng.random_range(10_000..99_999),
            domain: EMAIL_DOMAINS[zipf_index(rng, &tables.domains, EMAIL_DOMAINS.len())],
            phone: rng.random_bool(0.8),
            loyalty_tier,
            loyalty_points: tables.points.sample(rng).round(),
            // Joined 18–48 months ago, so before the first event.
            join_ms: now_ms - HISTORY_DAYS * DAY_MS - rng.random_range(0..900) * DAY_MS,
            ecids,
            events,
            mobile_share: rng.random::<f64>(),
        }
    }

    fn crm_id(&self) -> String {
        format!("c-{:09}", self.index)
    }

    fn email(&self) -> String {
        format!(
            "{}.{}{}@{}",
            self.first_name.to_ascii_lowercase(),
            self.last_name.to_ascii_lowercase(),
            self.index,
            self.domain
        )
    }

    /// Writes the `crm_profiles` record as one JSON line. All strings come from
    /// the ASCII tables above or from digits, so none needs escaping.
    fn write_crm_record(&self, out: &mut Vec<u8>) {
        let crm_id = self.crm_id();
        let email = self.email();
        let _ = write!(
            out,
            r#"{{"_id":"crm-{}","identityMap":{{"CRMID":[{{"id":"{crm_id}","authenticatedState":"authenticated","primary":true}}],"Email":[{{"id":"{email}"}}]"#,
            self.index
        );
        if self.phone {
            let _ = write!(
                out,
                r#","Phone":[{{"id":"+1555{:07}"}}]"#,
                self.index % 10_000_000
            );
        }
        out.extend_from_slice(br#","ECID":["#);
        for (n, ecid) in self.ecids.iter().enumerate() {
            let _ = write!(
                out,
                r#"{}{{"id":"{ecid}","authenticatedState":"ambiguous"}}"#,
                if n > 0 { "," } else { "" }
            );
        }
        let (year, month, day) = civil_from_days(self.birth_days);
        let _ = write!(
            out,
            r#"]}},"person":{{"name":{{"firstName":"{first}","lastName":"{last}","fullName":"{first} {last}"}},"birthDate":"{year:04}-{month:02}-{day:02}","birthYear":{year},"birthDayAndMonth":"{month:02}-{day:02}""#,
            first = self.first_name,
            last = self.last_name,
        );
        if let Some(gender) = self.gender {
            let _ = write!(out, r#","gender":"{gender}""#);
        }
        if let Some(marital) = self.marital {
            let _ = write!(out, r#","maritalStatus":"{marital}""#);
        }
        let (country, region) = (self.country, self.region);
        let _ = write!(
            out,
            r#"}},"homeAddress":{{"countryCode":"{cc}","country":"{name}","stateProvince":"{cc}-{state}","state":"{state}","city":"{city}","postalCode":"{postal:05}","street1":"{number} Main Street"}},"personalEmail":{{"address":"{email}"}}"#,
            cc = country.code,
            name = country.name,
            state = region.code,
            city = self.city,
            postal = self.postal_code,
            number = self.postal_code % 900 + 1,
        );
        if self.phone {
            let _ = write!(
                out,
                r#","mobilePhone":{{"number":"+1555{:07}"}}"#,
                self.index % 10_000_000
            );
        }
        if let Some(tier) = self.loyalty_tier {
            let _ = write!(
                out,
                r#","loyalty":{{"program":"Luma Rewards","tier":"{}","status":"Active","points":{},"joinDate":"{}","loyaltyID":["L-{:09}"]}}"#,
                TIERS[tier],
                self.loyalty_points,
                format_timestamp(self.join_ms),
                self.index,
            );
        }
        let _ = writeln!(out, r#","preferredLanguage":"{}"}}"#, country.language);
    }

    /// Builds the `loyalty_profiles` record: same person (CRMID), a LOYALTYID,
    /// and loyalty data that conflicts with the CRM record on purpose; half of
    /// them carry a `lastUpdatedDate` that contradicts ingest order (§13).
    fn loyalty_record(&self, rng: &mut Xoshiro256PlusPlus, tables: &Tables, now_ms: i64) -> Value {
        let tier = match self.loyalty_tier {
            Some(tier) => (tier + 1).min(TIERS.len() - 1),
            None => 0,
        };
        let mut record = json!({
            "_id": format!("loy-{}", self.index),
            "identityMap": {
                "CRMID": [{"id": self.crm_id(), "authenticatedState": "authenticated", "primary": true}],
                "LOYALTYID": [{"id": format!("L-{:09}", self.index)}],
            },
            "loyalty": {
                "program": "Luma Rewards",
                "tier": TIERS[tier],
                "status": "Active",
                "points": tables.points.sample(rng).round(),
                "lifetimePurchases": (tables.points.sample(rng) * 0.5).round(),
                "joinDate": format_timestamp(self.join_ms),
                "loyaltyID": [format!("L-{:09}", self.index)],
            },
        });
        if rng.random_bool(0.3) {
            let other = self.region.cities[rng.random_range(0..self.region.cities.len())];
            record["homeAddress"] = json!({"city": other});
        }
        if rng.random_bool(0.3) {
            record["person"] = json!({"maritalStatus": if self.marital == Some("married") { "divorced" } else { "married" }});
        }
        if rng.random_bool(0.5) {
            let updated = now_ms - rng.random_range(1..HISTORY_DAYS) * DAY_MS;
            record["extSourceSystemAudit"] = json!({"lastUpdatedDate": format_timestamp(updated)});
        }
        record
    }

    /// Writes the person's events as JSON lines, in sessions, and returns how many.
    fn write_events(
        &self,
        rng: &mut Xoshiro256PlusPlus,
        tables: &Tables,
        now_ms: i64,
        line: &mut Vec<u8>,
        out: &mut impl Write,
    ) -> Result<u64, std::io::Error> {
        let mut written = 0u64;
        let mut session = 0u64;
        let crm_id = self.known.then(|| self.crm_id());
        while written < self.events {
            let length = (1 + tables.session_length.sample(rng)).min(self.events - written);
            let ecid = &self.ecids[session as usize % self.ecids.len()];
            let authenticated = crm_id.as_deref().filter(|_| rng.random_bool(0.3));
            let mobile = rng.random_bool(self.mobile_share);
            let mut ts = session_start(rng, now_ms);
            // About 12 % of sessions add to cart; 30 % of those buy (≈70 % abandonment, §13).
            let adds = length >= 2 && rng.random_bool(0.12);
            let purchase = adds && length >= 4 && rng.random_bool(0.3);
            let last_add_slot = if purchase { length - 2 } else { length };
            let cart = adds.then(|| rng.random_range(1..last_add_slot));
            let mut items: Vec<u64> = Vec::new();
            for slot in 0..length {
                let kind = if purchase && slot == length - 2 {
                    EventKind::Checkout
                } else if purchase && slot == length - 1 {
                    EventKind::Purchase
                } else if cart == Some(slot) {
                    EventKind::ProductListAdd
                } else if slot == 0 {
                    EventKind::PageView
                } else if rng.random_bool(0.35) {
                    EventKind::ProductView
                } else {
                    EventKind::PageView
                };
                let abandoned = cart.is_some()
                    && !purchase
                    && slot == length - 1
                    && kind == EventKind::PageView;
                match kind {
                    EventKind::ProductView | EventKind::ProductListAdd => {
                        items.clear();
                        items.push(zipf_index(rng, &tables.skus, SKUS as usize) as u64);
                    }
                    EventKind::Purchase => {
                        let extra = (tables.extra_items.sample(rng) as u64).min(9);
                        items.extend(
                            (0..extra).map(|_| zipf_index(rng, &tables.skus, SKUS as usize) as u64),
                        );
                        items.sort_unstable();
                        items.dedup();
                        if items.is_empty() {
                            items.push(zipf_index(rng, &tables.skus, SKUS as usize) as u64);
                        }
                    }
                    _ => {}
                }
                line.clear();
                let event = EventLine {
                    id: written,
                    person: self,
                    ts,
                    kind,
                    ecid,
                    authenticated,
                    mobile,
                    page: PAGES[rng.random_range(0..PAGES.len())],
                    items: &items,
                    cart_id: cart.map(|_| format!("cart-{}-{session}", self.index)),
                    abandoned,
                };
                event.write(line);
                out.write_all(line)?;
                written += 1;
                ts = (ts + 1_000 + (tables.gap_seconds.sample(rng) * 1_000.0) as i64)
                    .min(now_ms - 1);
            }
            session += 1;
        }
        Ok(written)
    }
}

/// Picks a session start in the history window, favouring evenings (UTC).
fn session_start(rng: &mut Xoshiro256PlusPlus, now_ms: i64) -> i64 {
    const HOUR_WEIGHTS: [f64; 24] = [
        2., 1., 1., 1., 1., 1., 2., 3., 4., 5., 5., 5., 6., 6., 5., 5., 5., 6., 7., 9., 10., 9.,
        6., 4.,
    ];
    let day_start = (now_ms / DAY_MS - rng.random_range(1..=HISTORY_DAYS)) * DAY_MS;
    let mut target = rng.random::<f64>() * HOUR_WEIGHTS.iter().sum::<f64>();
    let mut hour = 23;
    for (candidate, weight) in HOUR_WEIGHTS.iter().enumerate() {
        target -= weight;
        if target < 0.0 {
            hour = candidate as i64;
            break;
        }
    }
    day_start + hour * 3_600_000 + rng.random_range(0..3_600_000)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventKind {
    PageView,
    ProductView,
    ProductListAdd,
    Checkout,
    Purchase,
}

/// Everything one event line needs.
struct EventLine<'a> {
    id: u64,
    person: &'a Person,
    ts: i64,
    kind: EventKind,
    ecid: &'a str,
    authenticated: Option<&'a str>,
    mobile: bool,
    page: (&'static str, &'static str),
    items: &'a [u64],
    cart_id: Option<String>,
    abandoned: bool,
}

impl EventLine<'_> {
    fn write(&self, out: &mut Vec<u8>) {
        let person = self.person;
        let event_type = match self.kind {
            EventKind::PageView => "web.webpagedetails.pageViews",
            EventKind::ProductView => "commerce.productViews",
            EventKind::ProductListAdd => "commerce.productListAdds",
            EventKind::Checkout => "commerce.checkouts",
            EventKind::Purchase => "commerce.purchases",
        };
        let _ = write!(
            out,
            r#"{{"_id":"e-{}-{}","timestamp":"{}","eventType":"{event_type}","identityMap":{{"ECID":[{{"id":"{}","authenticatedState":"ambiguous","primary":true}}]"#,
            person.index,
            self.id,
            format_timestamp(self.ts),
            self.ecid,
        );
        if let Some(crm_id) = self.authenticated {
            let _ = write!(
                out,
                r#","CRMID":[{{"id":"{crm_id}","authenticatedState":"authenticated"}}]"#
            );
        }
        let (name, path) = match self.kind {
            EventKind::PageView => self.page,
            EventKind::ProductView | EventKind::ProductListAdd => ("product", "product"),
            EventKind::Checkout | EventKind::Purchase => ("checkout", "checkout"),
        };
        let _ = write!(
            out,
            r#"}},"web":{{"webPageDetails":{{"name":"{name}","URL":"https://luma.example.com/{path}","siteSection":"{section}","isHomePage":{home},"pageViews":{{"value":1}}}}}}"#,
            section = if name == "home" { "home" } else { name },
            home = name == "home",
        );
        let currency = person.country.currency;
        match self.kind {
            EventKind::PageView if self.abandoned => {
                out.extend_from_slice(br#","commerce":{"cartAbandons":{"value":1}}"#)
            }
            EventKind::PageView => {}
            EventKind::ProductView => {
                out.extend_from_slice(br#","commerce":{"productViews":{"value":1}}"#)
            }
            EventKind::ProductListAdd => {
                let _ = write!(
                    out,
                    r#","commerce":{{"productListAdds":{{"value":1}},"cart":{{"cartID":"{}"}}}}"#,
                    self.cart_id.as_deref().unwrap_or_default()
                );
            }
            EventKind::Checkout => {
                let _ = write!(
                    out,
                    r#","commerce":{{"checkouts":{{"value":1}},"cart":{{"cartID":"{}"}}}}"#,
                    self.cart_id.as_deref().unwrap_or_default()
                );
            }
            EventKind::Purchase => {
                let total: f64 = self.items.iter().map(|&sku| sku_price(sku)).sum::<f64>() * 1.08;
                let _ = write!(
                    out,
                    r#","commerce":{{"purchases":{{"value":1}},"cart":{{"cartID":"{cart}"}},"order":{{"purchaseID":"o-{}-{}","priceTotal":{:.2},"currencyCode":"{currency}"}}}}"#,
                    person.index,
                    self.id,
                    total,
                    cart = self.cart_id.as_deref().unwrap_or_default(),
                );
            }
        }
        if self.kind != EventKind::PageView {
            out.extend_from_slice(br#","productListItems":["#);
            for (n, &sku) in self.items.iter().enumerate() {
                let _ = write!(
                    out,
                    r#"{}{{"SKU":"SKU-{sku:05}","name":"{} {}","quantity":1,"priceTotal":{:.2},"currencyCode":"{currency}"}}"#,
                    if n > 0 { "," } else { "" },
                    ADJECTIVES[(sku / 10) as usize % ADJECTIVES.len()],
                    CATEGORIES[sku as usize % CATEGORIES.len()],
                    sku_price(sku),
                );
            }
            out.push(b']');
        }
        let (device, browser) = if self.mobile {
            ("mobile", "Safari")
        } else {
            ("desktop", "Chrome")
        };
        let _ = writeln!(
            out,
            r#","environment":{{"type":"browser","browserDetails":{{"name":"{browser}"}}}},"device":{{"type":"{device}"}},"placeContext":{{"geo":{{"countryCode":"{}"}}}},"channel":{{"_type":"https://ns.adobe.com/xdm/channel-types/web"}}}}"#,
            person.country.code,
        );
    }
}

/// A SKU's unit price: fixed per SKU, log-uniform between about $20 and $100.
fn sku_price(sku: u64) -> f64 {
    let spread = (splitmix(sku) % 1_000) as f64 / 1_000.0;
    ((3.0 + 1.6 * spread).exp() * 100.0).round() / 100.0
}

/// Formats epoch ms as `YYYY-MM-DDTHH:MM:SS.mmmZ` without a date library,
/// because it runs for every event.
pub fn format_timestamp(ms: i64) -> String {
    let (secs, millis) = (ms.div_euclid(1_000), ms.rem_euclid(1_000));
    let (days, second_of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        second_of_day / 3_600,
        second_of_day % 3_600 / 60,
        second_of_day % 60
    )
}

/// Converts days since 1970-01-01 to (year, month, day) in the proleptic
/// Gregorian calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(profiles: u64, threads: usize) -> GenerateConfig {
        GenerateConfig {
            profiles,
            seed: 7,
            now_ms: DEFAULT_NOW_MS,
            threads,
            first_index: 0,
        }
    }

    fn folder_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut files = Vec::new();
        for dataset in std::fs::read_dir(dir).unwrap() {
            let dataset = dataset.unwrap().path();
            let mut paths: Vec<PathBuf> = if dataset.is_dir() {
                std::fs::read_dir(&dataset)
                    .unwrap()
                    .map(|f| f.unwrap().path())
                    .collect()
            } else {
                vec![dataset.clone()]
            };
            paths.sort();
            for path in paths {
                files.push((
                    path.strip_prefix(dir).unwrap().display().to_string(),
                    std::fs::read(&path).unwrap(),
                ));
            }
        }
        files.sort();
        files
    }

    #[test]
    fn same_seed_gives_same_bytes_whatever_the_thread_count() {
        let (a, b, c) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let profiles = SHARD_SIZE + 500;
        generate(&config(profiles, 1), a.path(), &|| {}).unwrap();
        generate(&config(profiles, 2), b.path(), &|| {}).unwrap();
        assert_eq!(folder_bytes(a.path()), folder_bytes(b.path()));
        generate(
            &GenerateConfig {
                seed: 8,
                ..config(profiles, 2)
            },
            c.path(),
            &|| {},
        )
        .unwrap();
        assert_ne!(folder_bytes(a.path()), folder_bytes(c.path()));
    }

    #[test]
    fn distributions_are_plausible() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = generate(&config(SHARD_SIZE, 2), dir.path(), &|| {}).unwrap();
        let known_share = manifest.known_profiles as f64 / manifest.profiles as f64;
        assert!((0.45..0.55).contains(&known_share), "{known_share}");
        let mean_events = manifest.events as f64 / manifest.profiles as f64;
        assert!(
            (7.0..13.0).contains(&mean_events),
            "mean events per profile {mean_events}"
        );
        let loyalty = manifest.datasets[1].rows as f64 / manifest.known_profiles as f64;
        assert!((0.07..0.13).contains(&loyalty), "{loyalty}");
        let events =
            std::fs::read_to_string(dir.path().join("web_events/part-00000.jsonl")).unwrap();
        let count = |needle: &str| events.matches(needle).count() as f64;
        let (views, adds, purchases) = (
            count("pageViews\",\"identityMap"),
            count("\"commerce.productListAdds\""),
            count("\"commerce.purchases\""),
        );
        assert!(
            views > 5.0 * adds && adds > purchases && purchases > 0.0,
            "{views} {adds} {purchases}"
        );
        assert!(count("\"countryCode\":\"US\"") > 0.6 * manifest.events as f64);
    }

    #[test]
    fn timestamps_format_like_rfc3339() {
        assert_eq!(format_timestamp(DEFAULT_NOW_MS), "2024-06-15T12:00:00.000Z");
        assert_eq!(
            format_timestamp(951_782_400_123),
            "2000-02-29T00:00:00.123Z"
        );
        assert_eq!(format_timestamp(-1), "1969-12-31T23:59:59.999Z");
    }
}
