//! Binary encoding of the values kept in the `profile_headers` and `profile_chunks` tables: the
//! person header (identities and record fragments) and event chunks.
//!
//! The format is a flat little-endian sequence of integers and length-prefixed
//! UTF-8 strings. Decoding borrows from the stored bytes, so a scan copies only
//! what it hands out. Each value starts with a format version byte so a later
//! layout can be told apart from this one.
//!
//! Event chunks of version 1 hold event bodies as JSON text; version 2 holds them
//! packed ([`super::packed`]). All are read; a chunk is rewritten in the current
//! form when compaction touches it.
//!
//! Stored values are compressed with LZ4: a header of version 1 or a chunk of
//! version 2 is stored *sealed*, as a version byte of its own (headers 2, chunks
//! 3), the plain length and the LZ4 block of the plain value's body. Measured on
//! the values of a 50k-profile generated store (361 MB): LZ4 gives 81 MB,
//! compressing at 1.1 GB/s and decompressing at 5 GB/s (1.4 us per profile);
//! zstd level 1 gives 65 MB but decompresses at 1.35 GB/s, which made a full
//! scan 50% slower. Unsealed values of earlier stores are read as they are.
//!
//! The sealed chunks of large writes are kept in segment files ([`super::segments`]); their
//! stored value is then a pointer to the chunk (version 4).

use super::ProfileStoreError;
use super::packed;
use super::segments::SegmentLocation;

/// The version byte of person headers.
const HEADER_VERSION: u8 = 1;
/// The version byte of event chunks with JSON-text bodies (read, no longer written).
const TEXT_CHUNK_VERSION: u8 = 1;
/// The version byte of event chunks with packed bodies.
const PACKED_CHUNK_VERSION: u8 = 2;
/// The version byte of a sealed (compressed) person header of [`HEADER_VERSION`].
const SEALED_HEADER_VERSION: u8 = 2;
/// The version byte of a sealed (compressed) event chunk of [`PACKED_CHUNK_VERSION`].
const SEALED_CHUNK_VERSION: u8 = 3;
/// The version byte of a pointer to a sealed value (an event chunk or a person header) kept in a
/// segment file ([`super::segments`]): the segment id (`u32`), the offset (`u64`) and the length
/// (`u32`).
const SEGMENT_POINTER_VERSION: u8 = 4;
/// The largest plain value a sealed one may claim, so a damaged length cannot ask for a huge
/// allocation (a person's values are far smaller: chunks are compacted past 16).
const MAX_PLAIN_BYTES: usize = 1 << 30;

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
    /// Events stored in chunks, duplicates included, as of the last write of the header: a hint
    /// (union by size, buffer sizes), since writes that only append events leave the header alone.
    pub event_count: u64,
    /// Number of event chunks as of the last write of the header, a hint like `event_count`:
    /// the chunks are found by key range (sequence numbers `1..=` the last one).
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

/// Compresses a plain value (its first byte is its version) into the sealed form `version`.
fn seal(plain: &[u8], version: u8) -> Vec<u8> {
    let mut sealed = Vec::new();
    seal_into(plain, version, &mut sealed);
    sealed
}

/// Appends the sealed form of `plain` to `out` and returns where it lies there.
///
/// Why append: a batch seals its persons' values into buffers it keeps from flush to flush, so
/// their pages are faulted in once, not once per value as fresh allocations were (and the
/// version byte is written first, not inserted in front of the frame by moving it).
fn seal_into(plain: &[u8], version: u8, out: &mut Vec<u8>) -> std::ops::Range<usize> {
    let start = out.len();
    let body = &plain[1..];
    out.push(version);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    let frame_at = out.len();
    out.resize(
        frame_at + lz4_flex::block::get_maximum_output_size(body.len()),
        0,
    );
    let written = lz4_flex::block::compress_into(body, &mut out[frame_at..])
        .expect("the output has room for the worst case");
    out.truncate(frame_at + written);
    start..out.len()
}

/// The plain value of a stored one: sealed values (first byte `sealed_version`) are
/// decompressed and given `plain_version` back; others are returned as stored.
fn unseal(
    stored: &[u8],
    sealed_version: u8,
    plain_version: u8,
) -> Result<std::borrow::Cow<'_, [u8]>, ProfileStoreError> {
    let corrupt = |what: &str| ProfileStoreError::Corrupt(format!("sealed value: {what}"));
    match stored.split_first() {
        Some((version, rest)) if *version == sealed_version => {
            let (length, frame) = rest
                .split_first_chunk::<4>()
                .ok_or_else(|| corrupt("truncated"))?;
            let length = u32::from_le_bytes(*length) as usize;
            if length > MAX_PLAIN_BYTES {
                return Err(corrupt("implausible length"));
            }
            let mut plain = vec![0; length + 1];
            plain[0] = plain_version;
            let written = lz4_flex::block::decompress_into(frame, &mut plain[1..])
                .map_err(|_| corrupt("not an LZ4 block of its length"))?;
            if written != length {
                return Err(corrupt("length differs"));
            }
            Ok(std::borrow::Cow::Owned(plain))
        }
        _ => Ok(std::borrow::Cow::Borrowed(stored)),
    }
}

/// Seals an event chunk built with [`new_chunk`] for storage.
pub(crate) fn seal_chunk(chunk: &[u8]) -> Vec<u8> {
    seal(chunk, SEALED_CHUNK_VERSION)
}

/// Appends the sealed chunk of `events` (each in the chunk encoding) to `out` and returns where it
/// lies there; the events are joined in `plain`, a buffer the caller reuses between chunks.
pub(crate) fn seal_events(
    events: &[Vec<u8>],
    plain: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> std::ops::Range<usize> {
    plain.clear();
    plain.push(PACKED_CHUNK_VERSION);
    for event in events {
        plain.extend_from_slice(event);
    }
    seal_into(plain, SEALED_CHUNK_VERSION, out)
}

/// The chunk [`decode_chunk`] reads from a stored chunk: sealed ones decompressed, earlier
/// unsealed ones as they are.
pub(crate) fn open_chunk(stored: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, ProfileStoreError> {
    unseal(stored, SEALED_CHUNK_VERSION, PACKED_CHUNK_VERSION)
}

/// The stored value of an event chunk or person header kept in a segment file at `location`.
pub(crate) fn encode_segment_location(location: SegmentLocation) -> [u8; 17] {
    let mut value = [0; 17];
    value[0] = SEGMENT_POINTER_VERSION;
    value[1..5].copy_from_slice(&location.segment.to_le_bytes());
    value[5..13].copy_from_slice(&location.offset.to_le_bytes());
    value[13..].copy_from_slice(&location.len.to_le_bytes());
    value
}

/// Where the stored event chunk or person header `stored` lies in a segment file, or `None` for
/// a value kept in the B-tree itself.
pub(crate) fn segment_location(
    stored: &[u8],
) -> Result<Option<SegmentLocation>, ProfileStoreError> {
    match stored.split_first() {
        Some((&SEGMENT_POINTER_VERSION, rest)) => {
            let rest: &[u8; 16] = rest.try_into().map_err(|_| {
                ProfileStoreError::Corrupt("segment chunk pointer of the wrong length".into())
            })?;
            let (segment, rest) = rest.split_at(4);
            let (offset, len) = rest.split_at(8);
            Ok(Some(SegmentLocation {
                segment: u32::from_le_bytes(segment.try_into().expect("4 bytes")),
                offset: u64::from_le_bytes(offset.try_into().expect("8 bytes")),
                len: u32::from_le_bytes(len.try_into().expect("4 bytes")),
            }))
        }
        _ => Ok(None),
    }
}

/// Encodes a person header, sealed.
pub(crate) fn encode_header(header: &PersonHeader) -> Vec<u8> {
    let mut sealed = Vec::new();
    encode_header_into(header, &mut Vec::new(), &mut sealed);
    sealed
}

/// Appends the sealed encoding of `header` to `out` (building it in `plain`) and returns where
/// it lies there.
pub(crate) fn encode_header_into(
    header: &PersonHeader,
    plain: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> std::ops::Range<usize> {
    plain.clear();
    let mut encoder = Encoder {
        bytes: std::mem::take(plain),
    };
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
    *plain = encoder.bytes;
    seal_into(plain, SEALED_HEADER_VERSION, out)
}

/// Decodes a person header written by [`encode_header`].
pub(crate) fn decode_header(stored: &[u8]) -> Result<PersonHeader, ProfileStoreError> {
    let plain = unseal(stored, SEALED_HEADER_VERSION, HEADER_VERSION)?;
    let mut decoder = Decoder { bytes: &plain };
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

/// Starts an event chunk; events are appended with [`push_event`] or [`push_event_with`].
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

/// Appends one event to a chunk, its packed body written by `write_body`.
pub(crate) fn push_event_with(
    chunk: &mut Encoder,
    timestamp_ms: i64,
    dataset_id: &str,
    primary: &str,
    id: &str,
    write_body: impl FnOnce(&mut Vec<u8>),
) {
    chunk.i64(timestamp_ms);
    chunk.str(dataset_id);
    chunk.str(primary);
    chunk.str(id);
    let length_at = chunk.bytes.len();
    chunk.u32(0);
    write_body(&mut chunk.bytes);
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
    fn chunk_locations_round_trip_and_inline_chunks_have_none() {
        let location = SegmentLocation {
            segment: 7,
            offset: (1 << 33) + 5,
            len: 123_456,
        };
        let stored = encode_segment_location(location);
        assert_eq!(segment_location(&stored).unwrap(), Some(location));
        assert!(segment_location(&stored[..16]).is_err());
        let inline = seal_chunk(&new_chunk().bytes);
        assert_eq!(segment_location(&inline).unwrap(), None);
    }

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
        let stored = encode_header(&header);
        assert_eq!(stored[0], SEALED_HEADER_VERSION);
        assert_eq!(decode_header(&stored).unwrap(), header);
        // Headers of earlier stores were stored unsealed.
        let plain = unseal(&stored, SEALED_HEADER_VERSION, HEADER_VERSION).unwrap();
        assert_eq!(plain[0], HEADER_VERSION);
        assert_eq!(decode_header(&plain).unwrap(), header);
    }

    /// Sealed chunks open to the chunk that was sealed; unsealed chunks of earlier stores open as
    /// they are; damage to a sealed value is an error, never a panic or another value.
    #[test]
    fn sealed_chunks_open_to_what_was_sealed_and_damage_is_an_error() {
        let body = serde_json::json!({"eventType": "commerce.purchases", "n": [1, 2, 3]});
        let mut chunk = new_chunk();
        for index in 0..20 {
            push_event_with(
                &mut chunk,
                index,
                "ev",
                "ecid\0e",
                &format!("e-{index}"),
                |out| packed::pack(&body, out),
            );
        }
        let sealed = seal_chunk(&chunk.bytes);
        assert_eq!(sealed[0], SEALED_CHUNK_VERSION);
        assert!(
            sealed.len() < chunk.bytes.len() / 3,
            "repetitive events compress"
        );
        assert_eq!(&*open_chunk(&sealed).unwrap(), chunk.bytes.as_slice());
        assert!(matches!(
            open_chunk(&chunk.bytes).unwrap(),
            std::borrow::Cow::Borrowed(_)
        ));
        for cut in 0..sealed.len() {
            assert!(
                open_chunk(&sealed[..cut]).is_err() || cut == 0,
                "cut at {cut}"
            );
        }
        for at in 1..sealed.len() {
            let mut damaged = sealed.clone();
            damaged[at] ^= 0x40;
            if let Ok(opened) = open_chunk(&damaged) {
                // A changed byte the frame does not detect must still decode or fail cleanly.
                let _ = decode_chunk(&opened, &mut Vec::new());
            }
        }
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
        push_event_with(&mut chunk, 8, "ev", "ecid\0e", "e-2", |out| {
            packed::pack(&body, out)
        });
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
