//! Schedules: the `/config/schedules` resource that triggers batch segmentation (api.md §6).
//!
//! - [`cron`]: Quartz cron expressions: parsing, the canonical text form, the next fire time in an
//!   IANA time zone and the "at most once every 24 hours" check.

pub mod cron;
pub mod runner;
pub mod schedules;
