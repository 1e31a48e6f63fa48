//! The daily profile sample behind estimates and previews.
//!
//! Every profile gets a keyed 64-bit rank; the sample is the profiles with the smallest ranks,
//! stored and scanned in rank order, so that every prefix of the scan is a simple random sample
//! without replacement of the whole store (estimation.md §0, §6). [`rank`] owns the rank function
//! and the sample-size tiers of api.md §3.5.

pub mod columns;
pub mod rank;
pub mod service;
pub mod store;
