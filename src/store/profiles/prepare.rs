//! Rows turned into what the store writes, before the write transaction sees them.
//!
//! Everything the store needs from a row that does not depend on the stored data (its identity
//! keys, which one is primary, an event's `_id`, timestamp and packed body, a record's body and
//! effective timestamp) is worked out by [`PreparedRow::new`]. That work is most of the cost of
//! ingesting a row, and it needs no transaction, so batch ingestion runs it on every core while
//! the one writer thread only links identities and appends bytes
//! ([`crate::store::profiles::ProfileStore::apply_prepared`]).

use std::sync::Arc;

use serde_json::Value;

use super::codec::{self, Encoder};
use super::identity::{self, Identity};
use super::{RecordKind, packed, parse_timestamp};

/// A row ready to be written: see the module documentation.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedRow {
    /// The row's identities.
    pub(super) identities: IdentityKeys,
    /// What the row adds to its person.
    pub(super) content: PreparedContent,
}

/// A row's identities as the store links them: their graph keys, in document order, without
/// duplicates, and which one is primary.
///
/// The keys are shared: the events of one person come together and name the same identities,
/// so batch ingestion gives them one copy ([`IdentityKeys::clone`] is a reference count), and the
/// writer tells them apart from the last row's by pointer before comparing the text.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityKeys {
    keys: Arc<[String]>,
    primary: usize,
}

impl IdentityKeys {
    /// The keys of `identities`, exactly one of which is primary (as
    /// [`identity::row_identities`] gives them).
    pub fn new(identities: &[Identity]) -> Self {
        Self {
            keys: identities.iter().map(Identity::key).collect(),
            primary: identities
                .iter()
                .position(|identity| identity.primary)
                .expect("one identity is primary"),
        }
    }

    /// The graph keys.
    pub(super) fn keys(&self) -> &[String] {
        &self.keys
    }

    /// The primary identity's graph key.
    pub(super) fn primary(&self) -> &str {
        &self.keys[self.primary]
    }

    /// Whether `other` has the same keys: the same shared copy, or equal ones.
    pub(super) fn same_keys(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.keys, &other.keys) || self.keys == other.keys
    }
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
                Ok(Self::record(
                    IdentityKeys::new(&identities),
                    effective_ts,
                    body,
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
                    IdentityKeys::new(&identities),
                    id,
                    timestamp_ms,
                    0,
                    |out| packed::pack(row, out),
                ))
            }
        }
    }

    /// Prepares a record with its identities (as [`identity::row_identities`] gives them), its
    /// `extSourceSystemAudit.lastUpdatedDate` in epoch milliseconds if it has one, and its JSON
    /// text as `serde_json::to_string` prints it.
    pub fn record(identities: IdentityKeys, effective_ts: Option<i64>, body: String) -> Self {
        Self::with_identities(identities, PreparedContent::Record { effective_ts, body })
    }

    /// Prepares an event whose body is already packed (`crate::store::profiles::packed`), with
    /// its identities (as [`identity::row_identities`] gives them), `_id` and timestamp.
    pub fn packed_event(
        dataset_id: &str,
        identities: IdentityKeys,
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
        identities: IdentityKeys,
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
        let primary = row.identities.primary();
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

    fn with_identities(identities: IdentityKeys, content: PreparedContent) -> Self {
        Self {
            identities,
            content,
        }
    }

    /// The row with a record's text printed as serde_json prints the value it reads as, for tests
    /// that compare rows whose record texts may be written differently.
    #[cfg(test)]
    pub(crate) fn with_record_text_reprinted(mut self) -> Self {
        if let PreparedContent::Record { body, .. } = &mut self.content {
            let value: Value = serde_json::from_str(body).expect("a record's text is JSON");
            *body = value.to_string();
        }
        self
    }

    /// Returns the bytes this row adds to a batch's memory until it is written.
    pub(super) fn pending_bytes(&self) -> usize {
        match &self.content {
            PreparedContent::Record { body, .. } => body.len() + self.identities.primary().len(),
            PreparedContent::Event { encoded } => encoded.len(),
        }
    }
}
