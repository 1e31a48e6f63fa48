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
use super::identity::{self, Identity};
use super::{RecordKind, packed, parse_timestamp};

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
        match kind {
            RecordKind::Profile => {
                let effective_ts = row
                    .get("extSourceSystemAudit")
                    .and_then(|audit| audit.get("lastUpdatedDate"))
                    .map(|value| {
                        parse_timestamp(value).ok_or_else(|| {
                            "extSourceSystemAudit.lastUpdatedDate is not a date-time".to_owned()
                        })
                    })
                    .transpose()?;
                let body = serde_json::to_string(row).map_err(|error| error.to_string())?;
                Ok(Self::with_identities(
                    &identities,
                    PreparedContent::Record { effective_ts, body },
                ))
            }
            RecordKind::Event => {
                let id = match row.get("_id") {
                    Some(Value::String(id)) if !id.is_empty() => id.as_str(),
                    _ => return Err("event has no string _id".to_owned()),
                };
                let timestamp_ms = row
                    .get("timestamp")
                    .and_then(parse_timestamp)
                    .ok_or_else(|| "event has no valid timestamp".to_owned())?;
                Ok(Self::event(
                    dataset_id,
                    &identities,
                    id,
                    timestamp_ms,
                    0,
                    |out| packed::pack(row, out),
                ))
            }
        }
    }

    /// Prepares an event whose body is already packed (`crate::store::profiles::packed`), with
    /// its identities (as [`identity::row_identities`] gives them), `_id` and timestamp.
    pub fn packed_event(
        dataset_id: &str,
        identities: &[Identity],
        id: &str,
        timestamp_ms: i64,
        packed_body: &[u8],
    ) -> Self {
        Self::event(
            dataset_id,
            identities,
            id,
            timestamp_ms,
            packed_body.len(),
            |out| out.extend_from_slice(packed_body),
        )
    }

    /// `body_bytes` is the body's size when known (else 0), so the encoding is allocated once
    /// rather than grown, and copied, as it is written.
    fn event(
        dataset_id: &str,
        identities: &[Identity],
        id: &str,
        timestamp_ms: i64,
        body_bytes: usize,
        write_body: impl FnOnce(&mut Vec<u8>),
    ) -> Self {
        let mut row = Self::with_identities(
            identities,
            PreparedContent::Event {
                encoded: Vec::new(),
            },
        );
        let primary = &row.identity_keys[row.primary];
        // The fields' lengths (4-byte prefixes), the timestamp and the body's length prefix.
        let fields_bytes = 3 * 4 + dataset_id.len() + primary.len() + id.len() + 8 + 4;
        let mut encoder = Encoder {
            bytes: Vec::with_capacity(fields_bytes + body_bytes),
        };
        codec::push_event_with(
            &mut encoder,
            timestamp_ms,
            dataset_id,
            primary,
            id,
            write_body,
        );
        row.content = PreparedContent::Event {
            encoded: encoder.bytes,
        };
        row
    }

    fn with_identities(identities: &[Identity], content: PreparedContent) -> Self {
        Self {
            identity_keys: identities.iter().map(Identity::key).collect(),
            primary: identities
                .iter()
                .position(|identity| identity.primary)
                .expect("one identity is primary"),
            content,
        }
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
