//! Export jobs: writing audience members to Parquet files.

pub mod jobs;
pub mod parquet;
pub mod runner;
