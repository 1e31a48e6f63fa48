//! Durable state. `metadata` holds resources (datasets, batches, definitions, jobs, schedules) in SQLite;
//! `profiles` holds profile fragments, experience events and the identity graph in redb.

pub mod membership;
pub mod metadata;
pub mod profiles;
