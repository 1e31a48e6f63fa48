//! Binary encoding of the values kept in the `profile_persons` table: the
//! person header (identities and record fragments) and event chunks.
//!
//! The format is a flat little-endian sequence of integers and length-prefixed
//! UTF-8 strings. Decoding borrows from the stored bytes, so a scan copies only
//! what it hands out. Each value starts with a format version byte so a later
//! layout can be told apart from this one.
//!
//! Event chunks of version 1 hold event bodies as JSON text; version 2, written
//! since, holds them packed ([`super::packed`]). Both are read; a chunk is
//! rewritten as version 2 when compaction touches it.

use super::ProfileStoreError;
use super::packed;

/// The version byte of person headers.
const HEADER_VERSION: u8 = 1;
/// The version byte of event chunks with JSON-text bodies (read, no longer written).
const TEXT_CHUNK_VERSION: u8 = 1;
/// The version byte of event chunks with packed bodies.
const PACKED_CHUNK_VERSION: u8 = 2;

/// One record fragment: the latest record of one primary identity in one dataset
/// (`ingest-api.md` §9.1–9.2).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Fragment {
    /// The dataset the record was ingested into.
    pub dataset_id: String,
    /// The graph key of the record's primary identity.
    pub primary: String,
    /// `extSourceSystemAudit.lastUpdatedDate`, else the ingest time, in epoch ms (§9.4).
    pub effective_ts: i64,
    /// The store-wide sequence number of the write that stored the record.
    pub batch_seq: u64,
    /// The record as ingested, serialised JSON.
    pub body: String,
}

/// The header of one person: every identity of its graph component and its
/// record fragments; events live in separate chunk values after it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct PersonHeader {
    /// Graph keys of all identities of the person, in the order they were linked.
    pub identities: Vec<String>,
    /// The record fragments of the person.
    pub fragments: Vec<Fragment>,
    /// Events stored in chunks, duplicates included.
    pub event_count: u64,
    /// Number of event chunks, stored at sequence numbers `1..=chunk_count`.
    pub chunk_count: u32,
}

impl PersonHeader {
    /// Returns the weight used for union by size, so merges move the smaller person.
    pub fn weight(&self) -> u64 {
        self.identities.len() as u64 + self.fragments.len() as u64 + self.event_count
    }
}

/// A stored event body.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum EventBody<'a> {
    /// JSON text (chunks of version 1).
    Text(&'a str),
    /// Packed JSON (chunks of version 2).
    Packed(&'a [u8]),
}

impl EventBody<'_> {
    /// The body packed: borrowed bytes copied, JSON text parsed and packed.
    pub fn to_packed(self) -> Result<Vec<u8>, ProfileStoreError> {
        match self {
            EventBody::Packed(bytes) => Ok(bytes.to_vec()),
            EventBody::Text(text) => Ok(packed::to_packed(&serde_json::from_str(text)?)),
        }
    }
}

/// One stored event, borrowed from an encoded chunk.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct EventRef<'a> {
    /// The event `timestamp` in epoch ms.
    pub timestamp_ms: i64,
    /// The dataset the event was ingested into.
    pub dataset_id: &'a str,
    /// The graph key of the event's primary identity.
    pub primary: &'a str,
    /// The event `_id`.
    pub id: &'a str,
    /// The event as ingested.
    pub body: EventBody<'a>,
}

/// Appends values to a growing byte buffer.
#[derive(Default)]
pub(crate) struct Encoder {
    /// The bytes written so far.
    pub bytes: Vec<u8>,
}

impl Encoder {
    fn u32(&mut self, value: u32) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    fn u64(&mut self, value: u64) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    fn i64(&mut self, value: i64) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    fn str(&mut self, value: &str) {
        self.bytes_field(value.as_bytes());
    }

    fn bytes_field(&mut self, value: &[u8]) {
        self.u32(value.len() as u32);
        self.bytes.extend_from_slice(value);
    }
}

/// Reads values back from an encoded buffer.
struct Decoder<'a> {
    bytes: &'a [u8],
}

impl<'a> Decoder<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], ProfileStoreError> {
        if self.bytes.len() < len {
            return Err(ProfileStoreError::Corrupt("truncated value".to_owned()));
        }
        let (head, tail) = self.bytes.split_at(len);
        self.bytes = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, ProfileStoreError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, ProfileStoreError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, ProfileStoreError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn i64(&mut self) -> Result<i64, ProfileStoreError> {
        Ok(i64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn bytes_field(&mut self) -> Result<&'a [u8], ProfileStoreError> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    fn str(&mut self) -> Result<&'a str, ProfileStoreError> {
        std::str::from_utf8(self.bytes_field()?)
            .map_err(|_| ProfileStoreError::Corrupt("invalid utf-8".to_owned()))
    }

    fn version(&mut self, known: &[u8]) -> Result<u8, ProfileStoreError> {
        match self.u8()? {
            version if known.contains(&version) => Ok(version),
            other => Err(ProfileStoreError::Corrupt(format!(
                "unknown value format version {other}"
            ))),
        }
    }
}

/// Encodes a person header.
pub(crate) fn encode_header(header: &PersonHeader) -> Vec<u8> {
    let mut encoder = Encoder::default();
    encoder.bytes.push(HEADER_VERSION);
    encoder.u64(header.event_count);
    encoder.u32(header.chunk_count);
    encoder.u32(header.identities.len() as u32);
    for identity in &header.identities {
        encoder.str(identity);
    }
    encoder.u32(header.fragments.len() as u32);
    for fragment in &header.fragments {
        encoder.str(&fragment.dataset_id);
        encoder.str(&fragment.primary);
        encoder.i64(fragment.effective_ts);
        encoder.u64(fragment.batch_seq);
        encoder.str(&fragment.body);
    }
    encoder.bytes
}

/// Decodes a person header written by [`encode_header`].
pub(crate) fn decode_header(bytes: &[u8]) -> Result<PersonHeader, ProfileStoreError> {
    let mut decoder = Decoder { bytes };
    decoder.version(&[HEADER_VERSION])?;
    let event_count = decoder.u64()?;
    let chunk_count = decoder.u32()?;
    let identity_count = decoder.u32()? as usize;
    let mut identities = Vec::with_capacity(identity_count);
    for _ in 0..identity_count {
        identities.push(decoder.str()?.to_owned());
    }
    let fragment_count = decoder.u32()? as usize;
    let mut fragments = Vec::with_capacity(fragment_count);
    for _ in 0..fragment_count {
        fragments.push(Fragment {
            dataset_id: decoder.str()?.to_owned(),
            primary: decoder.str()?.to_owned(),
            effective_ts: decoder.i64()?,
            batch_seq: decoder.u64()?,
            body: decoder.str()?.to_owned(),
        });
    }
    Ok(PersonHeader {
        identities,
        fragments,
        event_count,
        chunk_count,
    })
}

/// Starts an event chunk; events are appended with [`push_event`] or [`push_event_value`].
pub(crate) fn new_chunk() -> Encoder {
    let mut encoder = Encoder::default();
    encoder.bytes.push(PACKED_CHUNK_VERSION);
    encoder
}

/// Appends one stored event to a chunk started by [`new_chunk`]; a JSON-text body is packed.
pub(crate) fn push_event(
    chunk: &mut Encoder,
    event: &EventRef<'_>,
) -> Result<(), ProfileStoreError> {
    chunk.i64(event.timestamp_ms);
    chunk.str(event.dataset_id);
    chunk.str(event.primary);
    chunk.str(event.id);
    match event.body {
        EventBody::Packed(bytes) => chunk.bytes_field(bytes),
        EventBody::Text(_) => chunk.bytes_field(&event.body.to_packed()?),
    }
    Ok(())
}

/// Appends one event to a chunk, packing `body` straight into the chunk, so ingest does not
/// build an intermediate buffer per event.
pub(crate) fn push_event_value(
    chunk: &mut Encoder,
    timestamp_ms: i64,
    dataset_id: &str,
    primary: &str,
    id: &str,
    body: &serde_json::Value,
) {
    chunk.i64(timestamp_ms);
    chunk.str(dataset_id);
    chunk.str(primary);
    chunk.str(id);
    let length_at = chunk.bytes.len();
    chunk.u32(0);
    packed::pack(body, &mut chunk.bytes);
    let length = (chunk.bytes.len() - length_at - 4) as u32;
    chunk.bytes[length_at..length_at + 4].copy_from_slice(&length.to_le_bytes());
}

/// Decodes every event of a chunk, appending them to `out`.
pub(crate) fn decode_chunk<'a>(
    bytes: &'a [u8],
    out: &mut Vec<EventRef<'a>>,
) -> Result<(), ProfileStoreError> {
    let mut decoder = Decoder { bytes };
    let version = decoder.version(&[TEXT_CHUNK_VERSION, PACKED_CHUNK_VERSION])?;
    while !decoder.bytes.is_empty() {
        out.push(EventRef {
            timestamp_ms: decoder.i64()?,
            dataset_id: decoder.str()?,
            primary: decoder.str()?,
            id: decoder.str()?,
            body: match version {
                TEXT_CHUNK_VERSION => EventBody::Text(decoder.str()?),
                _ => EventBody::Packed(decoder.bytes_field()?),
            },
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let header = PersonHeader {
            identities: vec!["crmid\0c-1".into(), "email\0a@x.com".into()],
            fragments: vec![Fragment {
                dataset_id: "ds".into(),
                primary: "crmid\0c-1".into(),
                effective_ts: -5,
                batch_seq: 9,
                body: "{\"a\":1}".into(),
            }],
            event_count: 3,
            chunk_count: 2,
        };
        assert_eq!(decode_header(&encode_header(&header)).unwrap(), header);
    }

    #[test]
    fn chunk_round_trips_and_rejects_truncation() {
        let body = serde_json::json!({"a": "b", "n": [1, -2.5]});
        let packed = packed::to_packed(&body);
        let event = EventRef {
            timestamp_ms: 7,
            dataset_id: "ev",
            primary: "ecid\0e",
            id: "e-1",
            body: EventBody::Packed(&packed),
        };
        let mut chunk = new_chunk();
        push_event(&mut chunk, &event).unwrap();
        push_event_value(&mut chunk, 8, "ev", "ecid\0e", "e-2", &body);
        let mut events = Vec::new();
        decode_chunk(&chunk.bytes, &mut events).unwrap();
        let streamed = EventRef {
            timestamp_ms: 8,
            id: "e-2",
            ..event
        };
        assert_eq!(events, vec![event, streamed]);
        let truncated = &chunk.bytes[..chunk.bytes.len() - 1];
        assert!(decode_chunk(truncated, &mut Vec::new()).is_err());
    }

    /// Stores written before packed bodies keep working: their chunks are read as JSON text and
    /// packed when rewritten.
    #[test]
    fn text_chunks_of_version_one_are_read_and_repacked() {
        let mut legacy = vec![TEXT_CHUNK_VERSION];
        legacy.extend_from_slice(&5i64.to_le_bytes());
        for field in ["ev", "ecid\0e", "e-1", r#"{"eventType":"x","n":1}"#] {
            legacy.extend_from_slice(&(field.len() as u32).to_le_bytes());
            legacy.extend_from_slice(field.as_bytes());
        }
        let mut events = Vec::new();
        decode_chunk(&legacy, &mut events).unwrap();
        assert_eq!(
            events[0].body,
            EventBody::Text(r#"{"eventType":"x","n":1}"#)
        );
        let mut chunk = new_chunk();
        push_event(&mut chunk, &events[0]).unwrap();
        let mut repacked = Vec::new();
        decode_chunk(&chunk.bytes, &mut repacked).unwrap();
        let EventBody::Packed(bytes) = repacked[0].body else {
            panic!("rewritten chunks are packed");
        };
        assert_eq!(
            packed::to_value(bytes).unwrap(),
            serde_json::json!({"eventType": "x", "n": 1})
        );
    }
}
