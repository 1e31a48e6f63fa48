//! Rows turned into what the store writes, before the write transaction sees them.
//!
//! Everything the store needs from a row that does not depend on the stored data (its identity
//! keys, which one is primary, an event's `_id`, timestamp and packed body, a record's body and
//! effective timestamp) is worked out by [`PreparedRow::new`]. That work is most of the cost of
//! ingesting a row, and it needs no transaction, so batch ingestion runs it on every core while
//! the one writer thread only links identities and appends bytes
//! ([`crate::store::profiles::ProfileStore::apply_prepared`]).

use serde_json::Value;

use super::codec::{self, Encoder};
use super::{RecordKind, identity, parse_timestamp};

/// A row ready to be written: see the module documentation.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedRow {
    /// Graph keys of the row's identities, in document order, without duplicates.
    pub(super) identity_keys: Vec<String>,
    /// Index of the primary identity in `identity_keys`.
    pub(super) primary: usize,
    /// What the row adds to its person.
    pub(super) content: PreparedContent,
}

/// What a prepared row adds to its person.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum PreparedContent {
    /// A record fragment.
    Record {
        /// `extSourceSystemAudit.lastUpdatedDate`; `None` means the ingest time, which the writer
        /// fills in (§9.4).
        effective_ts: Option<i64>,
        /// The record as serialised JSON.
        body: String,
    },
    /// One event in the chunk encoding (without the chunk's version byte), so the writer appends
    /// it to a chunk as it is.
    Event {
        /// The encoded event.
        encoded: Vec<u8>,
    },
}

impl PreparedRow {
    /// Prepares a row of a dataset of `kind`; returns a lowercase reason when the row lacks what
    /// the store needs (a usable `identityMap`; for events a string `_id` and a valid `timestamp`;
    /// for records a valid `extSourceSystemAudit.lastUpdatedDate` when present).
    pub fn new(kind: RecordKind, dataset_id: &str, row: &Value) -> Result<Self, String> {
        let identities = identity::row_identities(row)?;
        let primary = identities
            .iter()
            .position(|identity| identity.primary)
            .expect("one identity is primary");
        let identity_keys: Vec<String> = identities.iter().map(identity::Identity::key).collect();
        let content = match kind {
            RecordKind::Profile => PreparedContent::Record {
                effective_ts: row
                    .get("extSourceSystemAudit")
                    .and_then(|audit| audit.get("lastUpdatedDate"))
                    .map(|value| {
                        parse_timestamp(value).ok_or_else(|| {
                            "extSourceSystemAudit.lastUpdatedDate is not a date-time".to_owned()
                        })
                    })
                    .transpose()?,
                body: serde_json::to_string(row).map_err(|error| error.to_string())?,
            },
            RecordKind::Event => {
                let id = match row.get("_id") {
                    Some(Value::String(id)) if !id.is_empty() => id.as_str(),
                    _ => return Err("event has no string _id".to_owned()),
                };
                let timestamp_ms = row
                    .get("timestamp")
                    .and_then(parse_timestamp)
                    .ok_or_else(|| "event has no valid timestamp".to_owned())?;
                let mut encoder = Encoder::default();
                codec::push_event_value(
                    &mut encoder,
                    timestamp_ms,
                    dataset_id,
                    &identity_keys[primary],
                    id,
                    row,
                );
                PreparedContent::Event {
                    encoded: encoder.bytes,
                }
            }
        };
        Ok(Self {
            identity_keys,
            primary,
            content,
        })
    }

    /// Returns the bytes this row adds to a batch's memory until it is written.
    pub(super) fn pending_bytes(&self) -> usize {
        match &self.content {
            PreparedContent::Record { body, .. } => {
                body.len() + self.identity_keys[self.primary].len()
            }
            PreparedContent::Event { encoded } => encoded.len(),
        }
    }
}
