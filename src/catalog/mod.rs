//! Catalog objects (`ingest-api.md` §3): datasets, the containers of ingested and exported data, and
//! batches, the units in which data enters a dataset.

pub mod batches;
pub mod datasets;
pub mod files;
