//! segmentd: a self-hosted audience segmentation service that speaks the REST API of Adobe Experience
//! Platform's Segmentation Service.
//!
//! # Layout
//!
//! - [`api`]: the HTTP layer (routes at Adobe's gateway paths, authentication, the error envelope).
//! - [`catalog`]: datasets, the containers of ingested and exported data.
//! - [`store`]: durable state (SQLite metadata).
//! - [`config`], [`telemetry`], [`startup`], [`cli`]: configuration, logging, wiring, command line.
//! - [`clock`], [`tenant`]: injected time and the (organization, sandbox) scope of every resource.

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
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tenant;
