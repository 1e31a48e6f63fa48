//! Segment definitions: PQL expressions with a schema and a merge policy, evaluated by preview and
//! segment jobs.

pub mod definitions;
