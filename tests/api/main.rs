//! The one integration-test binary (one binary links once): starts the real server on `127.0.0.1:0`
//! with a temporary data directory and talks HTTP to it.

mod auth;
mod catalog;
mod durability;
mod errors;
mod exports;
mod helpers;
mod ingest;
mod operations;
mod pql_vectors;
mod previews;
mod process;
mod profiles;
mod schedules;
mod segment_jobs;
mod segments;
