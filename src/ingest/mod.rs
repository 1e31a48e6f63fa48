//! Ingestion helpers used by the batch and streaming handlers and by the demo
//! tooling: reading and validating input files, preparing a batch's rows on every core, Arrow/JSON conversion, loading a
//! generated folder, and the synthetic data generator.

pub mod arrow_json;
pub mod batch;
pub mod folder;
pub mod generate;
pub mod pipeline;
pub mod stream;
pub mod validate;
