//! Background jobs over the whole store: segment jobs and their runner.

pub mod runner;
pub mod segment;
