//! segmentd: a self-hosted audience segmentation service that speaks the REST API of Adobe Experience
//! Platform's Segmentation Service.
//!
//! # Layout
//!
//! - [`api`]: the HTTP layer (routes at Adobe's gateway paths, authentication, the error envelope).
//! - [`catalog`]: datasets, the containers of ingested and exported data.
//! - [`store`]: durable state (SQLite metadata).
//! - [`snapshot`]: columnar copies of the profile store, per partition, that segment jobs read.
//! - [`config`], [`telemetry`], [`startup`], [`cli`]: configuration, logging, wiring, command line.
//! - [`clock`], [`tenant`]: injected time and the (organization, sandbox) scope of every resource.

/// Every binary linking the library (the service, tests, benches) allocates with mimalloc: ingest,
/// scans and segment jobs allocate and free millions of small JSON values and strings, often on
/// another thread than the one that allocated them, where glibc's arenas contend (measured: a
/// read-ahead ingest thread made a 50k-profile load 60% slower under glibc).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod api;
pub mod catalog;
pub mod cli;
pub mod clock;
pub mod config;
pub mod estimate;
pub mod export;
pub mod ingest;
pub mod jobs;
pub mod pql;
pub mod profile;
pub mod sample;
pub mod schedule;
pub mod segment;
pub mod snapshot;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tenant;
