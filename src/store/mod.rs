//! Durable state. `metadata` holds resources (datasets, batches, definitions, jobs, schedules) in SQLite.

pub mod metadata;
