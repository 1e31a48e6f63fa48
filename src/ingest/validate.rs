//! Reads ingestion files (JSON array, JSON Lines, Parquet) row by row and
//! validates each row (`ingest-api.md` §2.1–2.3, §4.7–4.9, §12).
//!
//! Files are streamed: at most one Parquet record batch or one JSON value is
//! held at a time. A bad row becomes a [`RowError`] with its 1-based number and
//! never stops the rows after it; only an unreadable file is fatal.
//!
//! Row numbers: JSON Lines count lines (blank lines are skipped but counted, so
//! the number is the line to fix), a JSON array counts elements, Parquet counts
//! rows across row groups.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use serde_json::Value;

use crate::store::profiles::identity::{identity_map_identities, row_identities};
use crate::store::profiles::{IdentityKeys, PreparedRow, RecordKind, packed, parse_timestamp_text};

/// Largest Individual Profile record accepted, in bytes of JSON (§4.9).
pub const MAX_RECORD_BYTES: usize = 100 * 1024;

/// Largest ExperienceEvent accepted, in bytes of JSON (§4.9).
pub const MAX_EVENT_BYTES: usize = 10 * 1024;

/// Rows per Parquet record batch read at once.
const PARQUET_BATCH_ROWS: usize = 1024;

/// The format of an input file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// One JSON array of rows.
    JsonArray,
    /// One JSON row per line (the platform's default JSON format, §4.7).
    JsonLines,
    /// Apache Parquet.
    Parquet,
}

impl InputFormat {
    /// Detects the format from the extension (`.parquet`, `.jsonl`/`.ndjson`,
    /// `.json`); a `.json` file is an array when its first non-blank byte is `[`.
    pub fn detect(path: &Path) -> Result<Self, IngestError> {
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        match extension.as_str() {
            "parquet" => Ok(Self::Parquet),
            "jsonl" | "ndjson" => Ok(Self::JsonLines),
            "json" => {
                let mut reader = BufReader::new(File::open(path)?);
                loop {
                    let buffer = reader.fill_buf()?;
                    let Some(&first) = buffer.iter().find(|b| !b.is_ascii_whitespace()) else {
                        if buffer.is_empty() {
                            return Ok(Self::JsonLines);
                        }
                        let len = buffer.len();
                        reader.consume(len);
                        continue;
                    };
                    return Ok(if first == b'[' {
                        Self::JsonArray
                    } else {
                        Self::JsonLines
                    });
                }
            }
            _ => Err(IngestError::Format(format!(
                "unsupported file type {:?}; use .json, .jsonl or .parquet",
                path.display().to_string()
            ))),
        }
    }
}

/// A row that failed parsing or validation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RowError {
    /// The 1-based row number (see the module documentation).
    pub row: usize,
    /// Why the row was rejected, lowercase.
    pub reason: String,
}

/// A file-level failure: the file cannot be read at all from this point on.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Reading the file failed.
    #[error("cannot read input file: {0}")]
    Io(#[from] std::io::Error),
    /// The Parquet file is unreadable.
    #[error("cannot read parquet file: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// An Arrow batch could not be converted to rows.
    #[error("cannot convert parquet data: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// The file is not in the expected format.
    #[error("invalid input file: {0}")]
    Format(String),
}

/// One item read from a file: a row or the reason it was rejected.
#[derive(Debug)]
pub enum ReadError {
    /// This row is bad; reading goes on.
    Row(RowError),
    /// The file is unreadable; this is the last item.
    File(IngestError),
}

/// Valid rows and row errors of a whole file, for small files and tests.
#[derive(Debug, Default)]
pub struct ValidatedRows {
    /// The rows that passed validation, in file order.
    pub rows: Vec<Value>,
    /// The rows that did not.
    pub errors: Vec<RowError>,
}

/// Checks one parsed row of `kind`; `json_bytes` is its size as JSON.
///
/// Checks: the row is an object without `null` anywhere (§2.1); it carries a
/// valid identity (§2.2–2.3); an event has a string `_id` and a `timestamp`;
/// the XDM fields of §12 have their types; the §4.9 size limits hold.
pub fn validate_row(kind: RecordKind, row: &Value, json_bytes: usize) -> Result<(), String> {
    let Value::Object(object) = row else {
        return Err("row is not a json object".to_owned());
    };
    let limit = match kind {
        RecordKind::Profile => MAX_RECORD_BYTES,
        RecordKind::Event => MAX_EVENT_BYTES,
    };
    if json_bytes > limit {
        return Err(format!(
            "row is {json_bytes} bytes, over the {limit}-byte limit"
        ));
    }
    if let Some(path) = find_null(row, &mut Vec::new()) {
        return Err(format!("{path} is null; leave the key out instead"));
    }
    row_identities(row)?;
    if kind == RecordKind::Event {
        match object.get("_id") {
            Some(Value::String(id)) if !id.is_empty() => {}
            Some(_) => return Err("_id must be a non-empty string".to_owned()),
            None => return Err("event has no _id".to_owned()),
        }
        if !object.contains_key("timestamp") {
            return Err("event has no timestamp".to_owned());
        }
    }
    for (path, expected) in TYPED_FIELDS {
        let Some(value) = path.iter().try_fold(row, |node, part| node.get(part)) else {
            continue;
        };
        if !expected.accepts(value.into()) {
            return Err(format!(
                "{} must be {}",
                path.join("."),
                expected.describe()
            ));
        }
    }
    Ok(())
}

/// The XDM types checked by [`validate_row`].
#[derive(Debug, Clone, Copy)]
enum Expect {
    String,
    Number,
    Integer,
    Boolean,
    Array,
    /// `YYYY-MM-DD`.
    Date,
    /// ISO 8601 date-time or epoch milliseconds (§4.7).
    DateTime,
    /// Two upper-case letters.
    CountryCode,
    /// Three upper-case letters.
    CurrencyCode,
}

impl Expect {
    fn accepts(self, shape: Shape<'_>) -> bool {
        match (self, shape) {
            (Self::String, Shape::String(_))
            | (Self::Number, Shape::Integer(_) | Shape::Double)
            | (Self::Integer, Shape::Integer(_))
            | (Self::Boolean, Shape::Boolean)
            | (Self::Array, Shape::Array) => true,
            (Self::Date, Shape::String(text)) => {
                // As `NaiveDate::parse_from_str(text, "%Y-%m-%d")`, with the format read once:
                // reading it per date was a twentieth of a worker's time over CRM records.
                let mut parsed = chrono::format::Parsed::new();
                chrono::format::parse(&mut parsed, text, DATE_FORMAT.iter()).is_ok()
                    && parsed.to_naive_date().is_ok()
            }
            (Self::DateTime, shape) => timestamp_ms(shape).is_some(),
            (Self::CountryCode, Shape::String(text)) => is_upper_code(text, 2),
            (Self::CurrencyCode, Shape::String(text)) => is_upper_code(text, 3),
            _ => false,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::String => "a string",
            Self::Number => "a number",
            Self::Integer => "an integer",
            Self::Boolean => "a boolean",
            Self::Array => "an array",
            Self::Date => "a date (YYYY-MM-DD)",
            Self::DateTime => "an ISO 8601 date-time or epoch milliseconds",
            Self::CountryCode => "a two-letter upper-case country code",
            Self::CurrencyCode => "a three-letter upper-case currency code",
        }
    }
}

/// The items of the format `%Y-%m-%d`, which [`Expect::Date`] values follow.
static DATE_FORMAT: std::sync::LazyLock<Vec<chrono::format::Item<'static>>> =
    std::sync::LazyLock::new(|| {
        chrono::format::StrftimeItems::new("%Y-%m-%d")
            .parse_to_owned()
            .expect("a valid format")
    });

/// Whether `text` is `letters` upper-case ASCII letters (a country or currency code).
fn is_upper_code(text: &str, letters: usize) -> bool {
    text.len() == letters && text.bytes().all(|b| b.is_ascii_uppercase())
}

/// What the checks of [`TYPED_FIELDS`] see of a field, taken from a parsed `Value` or straight
/// from packed bytes, so both ways of checking a row apply one set of rules.
#[derive(Debug, Clone, Copy)]
enum Shape<'a> {
    String(&'a str),
    /// An integer, with its value when it fits an `i64` (epoch milliseconds must).
    Integer(Option<i64>),
    /// A number that is not an integer.
    Double,
    Boolean,
    Array,
    /// An object or `null`.
    Other,
}

impl<'a> From<&'a Value> for Shape<'a> {
    fn from(value: &'a Value) -> Self {
        match value {
            Value::String(text) => Shape::String(text),
            Value::Number(number) if number.is_i64() || number.is_u64() => {
                Shape::Integer(number.as_i64())
            }
            Value::Number(_) => Shape::Double,
            Value::Bool(_) => Shape::Boolean,
            Value::Array(_) => Shape::Array,
            Value::Object(_) | Value::Null => Shape::Other,
        }
    }
}

impl<'a> From<packed::Node<'a>> for Shape<'a> {
    fn from(node: packed::Node<'a>) -> Self {
        match node {
            packed::Node::String(text) => Shape::String(text),
            packed::Node::Negative(value) => Shape::Integer(Some(value)),
            packed::Node::Positive(value) => Shape::Integer(i64::try_from(value).ok()),
            packed::Node::Double(_) => Shape::Double,
            packed::Node::Bool(_) => Shape::Boolean,
            packed::Node::Array(_) => Shape::Array,
            packed::Node::Object(_) | packed::Node::Null => Shape::Other,
        }
    }
}

/// The epoch milliseconds of an XDM date-time field, as the store reads them
/// ([`parse_timestamp`]): an ISO 8601 string or an integer.
fn timestamp_ms(shape: Shape<'_>) -> Option<i64> {
    match shape {
        Shape::String(text) => parse_timestamp_text(text),
        Shape::Integer(ms) => ms,
        _ => None,
    }
}

/// Standard XDM paths of `ingest-api.md` §12.2–12.3 and their types.
const TYPED_FIELDS: &[(&[&str], Expect)] = &[
    (&["timestamp"], Expect::DateTime),
    (&["eventType"], Expect::String),
    (&["person", "birthDate"], Expect::Date),
    (&["person", "birthYear"], Expect::Integer),
    (&["person", "gender"], Expect::String),
    (&["homeAddress", "countryCode"], Expect::CountryCode),
    (&["workAddress", "countryCode"], Expect::CountryCode),
    (&["personalEmail", "address"], Expect::String),
    (&["loyalty", "points"], Expect::Number),
    (&["loyalty", "lifetimePurchases"], Expect::Number),
    (&["loyalty", "joinDate"], Expect::DateTime),
    (&["loyalty", "loyaltyID"], Expect::Array),
    (
        &["extSourceSystemAudit", "lastUpdatedDate"],
        Expect::DateTime,
    ),
    (&["commerce", "order", "priceTotal"], Expect::Number),
    (&["commerce", "order", "currencyCode"], Expect::CurrencyCode),
    (&["productListItems"], Expect::Array),
    (&["web", "webPageDetails", "isHomePage"], Expect::Boolean),
    (&["placeContext", "geo", "countryCode"], Expect::CountryCode),
];

/// [`TYPED_FIELDS`] by the first name of their path, each with the rest of its path and the
/// expected type; without the timestamp, which [`prepare_text`] reads (with the same rule) on
/// its own. Indexed by the name's length, then looked through: every top-level entry of every
/// event is looked up here, and most entries' names have a length no typed name has, so one
/// index answers. (aHash over the name and a probe were half of `prepare_text`'s own time.)
struct TypedFieldsByName {
    by_length: Vec<Vec<TypedFieldsUnder>>,
}

/// The typed fields under one top-level name.
struct TypedFieldsUnder {
    name: &'static [u8],
    fields: Vec<(&'static [&'static str], Expect)>,
}

impl TypedFieldsByName {
    fn new() -> Self {
        let mut by_length: Vec<Vec<TypedFieldsUnder>> = Vec::new();
        for (path, expected) in TYPED_FIELDS {
            let [first, rest @ ..] = path else { continue };
            if *path == ["timestamp"] {
                continue;
            }
            let name = first.as_bytes();
            if by_length.len() <= name.len() {
                by_length.resize_with(name.len() + 1, Vec::new);
            }
            let same_length = &mut by_length[name.len()];
            let at = match same_length.iter().position(|under| under.name == name) {
                Some(at) => at,
                None => {
                    same_length.push(TypedFieldsUnder {
                        name,
                        fields: Vec::new(),
                    });
                    same_length.len() - 1
                }
            };
            same_length[at].fields.push((rest, *expected));
        }
        Self { by_length }
    }

    /// The typed fields under the top-level entry `name`: the rest of each path and its type.
    fn get(&self, name: &[u8]) -> Option<&[(&'static [&'static str], Expect)]> {
        self.by_length
            .get(name.len())?
            .iter()
            .find(|under| packed::is_key(under.name, name))
            .map(|under| under.fields.as_slice())
    }
}

static TYPED_FIELDS_BY_FIRST_NAME: std::sync::LazyLock<TypedFieldsByName> =
    std::sync::LazyLock::new(TypedFieldsByName::new);

/// Returns the dotted path of the first `null` inside `value`.
fn find_null(value: &Value, path: &mut Vec<String>) -> Option<String> {
    match value {
        Value::Null => Some(if path.is_empty() {
            "row".to_owned()
        } else {
            path.join(".")
        }),
        Value::Object(map) => map.iter().find_map(|(key, child)| {
            path.push(key.clone());
            let found = find_null(child, path);
            path.pop();
            found
        }),
        Value::Array(items) => items.iter().enumerate().find_map(|(index, child)| {
            path.push(index.to_string());
            let found = find_null(child, path);
            path.pop();
            found
        }),
        _ => None,
    }
}

/// A run of consecutive rows of one file as read, before parsing and validation: what one worker
/// of batch ingestion takes at a time (`crate::ingest::pipeline`). JSON rows share one text buffer,
/// so reading a chunk costs one allocation, not one per row.
#[derive(Debug, Default)]
pub struct RawChunk {
    text: Vec<u8>,
    rows: Vec<RawEntry>,
}

#[derive(Debug)]
enum RawEntry {
    /// A JSON row: its number and its bytes in the chunk's text.
    Text(usize, std::ops::Range<usize>),
    /// A row converted from Parquet: its number and value.
    Parsed(usize, Value),
}

impl RawChunk {
    /// Returns the number of rows in the chunk.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Tells whether the chunk holds no row.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Returns the bytes of JSON text held.
    pub fn text_bytes(&self) -> usize {
        self.text.len()
    }

    /// Empties the chunk, keeping its buffers.
    pub fn clear(&mut self) {
        self.text.clear();
        self.rows.clear();
    }

    /// Parses and validates every row for `kind`, in order: each row's number and the row, or why
    /// it was rejected.
    pub fn check(
        &self,
        kind: RecordKind,
    ) -> impl Iterator<Item = (usize, Result<Cow<'_, Value>, String>)> {
        self.rows
            .iter()
            .map(move |entry| self.check_entry(kind, entry))
    }

    /// Validates every row for `kind` and prepares it for the store, in order: each row's number
    /// and the prepared row, or why it was rejected. Rows given as JSON text take
    /// the way of `prepare_text` (no `serde_json::Value`) when they can.
    pub fn prepare<'a>(
        &'a self,
        kind: RecordKind,
        dataset_id: &'a str,
    ) -> impl Iterator<Item = (usize, Result<PreparedRow, String>)> + 'a {
        let mut buffers = PrepareBuffers::default();
        self.rows.iter().map(move |entry| {
            if let RawEntry::Text(row, range) = entry {
                let json = &self.text[range.clone()];
                if let Some(prepared) = prepare_text(kind, json, dataset_id, &mut buffers) {
                    return (*row, Ok(prepared));
                }
            }
            let (row, checked) = self.check_entry(kind, entry);
            let prepared = checked.and_then(|value| PreparedRow::new(kind, dataset_id, &value));
            (row, prepared)
        })
    }

    fn check_entry<'a>(
        &'a self,
        kind: RecordKind,
        entry: &'a RawEntry,
    ) -> (usize, Result<Cow<'a, Value>, String>) {
        match entry {
            RawEntry::Text(row, range) => {
                let bytes = &self.text[range.clone()];
                let checked = serde_json::from_slice::<Value>(bytes)
                    .map_err(|e| format!("malformed json: {e}"))
                    .and_then(|value| {
                        validate_row(kind, &value, bytes.len())?;
                        Ok(Cow::Owned(value))
                    });
                (*row, checked)
            }
            RawEntry::Parsed(row, value) => {
                let size = serde_json::to_vec(value).map_or(usize::MAX, |bytes| bytes.len());
                (
                    *row,
                    validate_row(kind, value, size).map(|()| Cow::Borrowed(value)),
                )
            }
        }
    }
}

/// Checks and prepares a row from its JSON text without building a `serde_json::Value`: the
/// text is packed as it is parsed ([`packed::transcode_text`]) and the checks of
/// [`validate_row`] and [`PreparedRow::new`] read the few fields they need from the packed bytes.
/// An event keeps the packed bytes as its body; a record keeps its own text (see below).
///
/// Returns `None` unless the row passes all of them; the caller then takes the slow way, which
/// words the reason (or accepts the rare valid row this way leaves to it: one that repeats a key).
/// So this way never accepts a row the slow way rejects, and its rows are the slow way's: byte for
/// byte, but for a record's text, which reads back as the same value (tested).
fn prepare_text(
    kind: RecordKind,
    json: &[u8],
    dataset_id: &str,
    buffers: &mut PrepareBuffers,
) -> Option<PreparedRow> {
    let PrepareBuffers {
        packed_body,
        transcode,
        last_identities,
    } = buffers;
    let limit = match kind {
        RecordKind::Profile => MAX_RECORD_BYTES,
        RecordKind::Event => MAX_EVENT_BYTES,
    };
    if json.len() > limit {
        return None;
    }
    packed_body.clear();
    // Text the lexer does not plainly take (including bytes that are not UTF-8) goes the slow
    // way, which words what is wrong.
    let flags = packed::transcode_text(json, packed_body, transcode)?;
    if flags.has_null || flags.has_duplicate_key {
        return None;
    }
    let body = packed_body.as_slice();
    // One pass over the row's top-level entries, noted as they were packed (every checked path
    // starts among them; a row that is not an object has none, so no identityMap): each is
    // matched once against what is read from it and the typed fields under it, rather than every
    // path looked for among the entries (most typed ones are absent from any one row).
    let mut identity_map = None;
    let mut timestamp = None;
    let mut id = None;
    let mut audit = None;
    for (name, value) in transcode.top_fields(body) {
        if packed::is_key(name, b"identityMap") {
            identity_map = Some(value);
        } else if packed::is_key(name, b"timestamp") {
            timestamp = Some(value);
        } else if packed::is_key(name, b"_id") {
            id = Some(value);
        } else if packed::is_key(name, b"extSourceSystemAudit") {
            audit = Some(value);
        }
        let Some(typed) = TYPED_FIELDS_BY_FIRST_NAME.get(name) else {
            continue;
        };
        for (rest, expected) in typed {
            if let Some(node) = packed::field_at(value, rest).and_then(packed::node)
                && !expected.accepts(node.into())
            {
                return None;
            }
        }
    }
    let identities = last_identities.keys_of(identity_map?)?;
    // The timestamp is checked apart (the map leaves it out): an event must have one and needs
    // its value.
    let timestamp = match timestamp.and_then(packed::node) {
        Some(node) => Some(timestamp_ms(node.into())?),
        None => None,
    };
    match kind {
        RecordKind::Event => {
            let id = match id.and_then(packed::node)? {
                packed::Node::String(id) if !id.is_empty() => id,
                _ => return None,
            };
            Some(PreparedRow::packed_event(
                dataset_id, identities, id, timestamp?, body,
            ))
        }
        RecordKind::Profile => {
            // Checked above as a typed field: present means a valid date-time.
            let effective_ts = audit
                .and_then(|audit| packed::field(audit, "lastUpdatedDate"))
                .and_then(packed::node)
                .and_then(|node| timestamp_ms(node.into()));
            // The text is kept as it came: the store only ever parses a record's body (to merge
            // it), and the lexer has found it to be JSON in UTF-8 that repeats no key, so it reads
            // back as the value the slow way prints. Printing it again from the packed bytes was
            // ~10% of the records' CPU. (The lexer checked the UTF-8 already; checking it again
            // here, fast over ASCII, is what a `str` costs without `unsafe`.)
            let text = std::str::from_utf8(json.trim_ascii()).ok()?;
            Some(PreparedRow::record(
                identities,
                effective_ts,
                text.to_owned(),
            ))
        }
    }
}

/// What [`prepare_text`] reuses from row to row.
#[derive(Default)]
struct PrepareBuffers {
    /// The packed row.
    packed_body: Vec<u8>,
    /// The lexer's buffers, and the top-level entries of the row.
    transcode: packed::TranscodeScratch,
    /// The identities of the last row.
    last_identities: LastIdentities,
}

/// The identities of the last row [`prepare_text`] read, with the packed `identityMap`
/// they came from: the next events of the same person (they come together) name the same ones
/// and share them, rather than reading them again and allocating their keys per event.
#[derive(Default)]
struct LastIdentities {
    identity_map: Vec<u8>,
    identities: Option<IdentityKeys>,
}

impl LastIdentities {
    /// The identities of the packed `identityMap`, or `None` when it has no usable ones.
    fn keys_of(&mut self, identity_map: &[u8]) -> Option<IdentityKeys> {
        if let Some(identities) = &self.identities
            && self.identity_map == identity_map
        {
            return Some(identities.clone());
        }
        let identities =
            IdentityKeys::new(&identity_map_identities(Some(packed::Packed(identity_map))).ok()?);
        self.identity_map.clear();
        self.identity_map.extend_from_slice(identity_map);
        self.identities = Some(identities.clone());
        Some(identities)
    }
}

/// Most rows of a chunk of JSON array elements or Parquet rows.
const CHUNK_ROWS: usize = 512;

/// Most bytes of JSON text in a chunk of JSON array elements (a chunk is cut after the row that
/// passes it), and the bytes of a JSON Lines file read at once.
pub(crate) const CHUNK_BYTES: usize = 256 * 1024;

/// Streams the rows of a file, unparsed, into [`RawChunk`]s.
pub struct RawReader {
    source: Source,
}

enum Source {
    JsonLines(LineBlocks),
    /// Formats read a row at a time.
    Rows(RowSource),
}

/// JSON Lines, read in blocks of [`CHUNK_BYTES`] straight into a chunk's text, which keeps the
/// block's whole lines; the partial line at its end is carried to the next chunk.
///
/// Why: reading line by line through a `BufReader` made a system call per 8 KiB and copied
/// every line once more (the reading thread was ~10% of a bulk load's CPU).
struct LineBlocks {
    file: File,
    /// Lines read so far.
    line: usize,
    /// The start of a line read past the last whole line.
    carry: Vec<u8>,
    /// The file has no more bytes.
    ended: bool,
}

enum RowSource {
    JsonArray {
        splitter: ArraySplitter<BufReader<File>>,
        element: usize,
    },
    Parquet {
        reader: ParquetRecordBatchReader,
        pending: VecDeque<Value>,
        row: usize,
    },
}

impl RawReader {
    /// Opens `path` in the given format.
    pub fn open(path: &Path, format: InputFormat) -> Result<Self, IngestError> {
        let file = File::open(path)?;
        let source = match format {
            InputFormat::JsonLines => Source::JsonLines(LineBlocks {
                file,
                line: 0,
                carry: Vec::new(),
                ended: false,
            }),
            InputFormat::JsonArray => Source::Rows(RowSource::JsonArray {
                splitter: ArraySplitter::new(BufReader::new(file)),
                element: 0,
            }),
            InputFormat::Parquet => Source::Rows(RowSource::Parquet {
                reader: ParquetRecordBatchReaderBuilder::try_new(file)?
                    .with_batch_size(PARQUET_BATCH_ROWS)
                    .build()?,
                pending: VecDeque::new(),
                row: 0,
            }),
        };
        Ok(Self { source })
    }

    /// Appends the next rows to `chunk`: the whole lines of the next block of a JSON Lines file,
    /// else rows until the chunk holds 512 of them or 256 KiB of text. Returns `false` when the
    /// file has ended (the chunk may still have gained rows). After an error the file is
    /// unreadable from there on; the rows appended before it stay in `chunk`.
    pub fn read_chunk(&mut self, chunk: &mut RawChunk) -> Result<bool, IngestError> {
        match &mut self.source {
            Source::JsonLines(lines) => lines.read_into(chunk),
            Source::Rows(rows) => {
                while chunk.len() < CHUNK_ROWS && chunk.text_bytes() < CHUNK_BYTES {
                    if !rows.read_row(chunk)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
        }
    }
}

impl RowSource {
    /// Appends the next JSON array element or Parquet row to `chunk`; returns `false` at the end
    /// of the file.
    fn read_row(&mut self, chunk: &mut RawChunk) -> Result<bool, IngestError> {
        match self {
            Self::JsonArray { splitter, element } => match splitter.next_element()? {
                None => Ok(false),
                Some(bytes) => {
                    *element += 1;
                    let start = chunk.text.len();
                    chunk.text.extend_from_slice(bytes);
                    chunk
                        .rows
                        .push(RawEntry::Text(*element, start..chunk.text.len()));
                    Ok(true)
                }
            },
            Self::Parquet {
                reader,
                pending,
                row,
            } => {
                if pending.is_empty() {
                    match reader.next() {
                        None => return Ok(false),
                        Some(batch) => pending.extend(super::arrow_json::batch_to_rows(&batch?)?),
                    }
                }
                let Some(value) = pending.pop_front() else {
                    return Ok(false);
                };
                *row += 1;
                chunk.rows.push(RawEntry::Parsed(*row, value));
                Ok(true)
            }
        }
    }
}

impl LineBlocks {
    /// Reads a block (more while no line ends in it) and appends its whole lines to `chunk`, with
    /// `carry` (the line begun by the last block) first; lines of whitespace are counted but not
    /// kept. Each row's text keeps its newline. Returns `false` once the file has ended.
    fn read_into(&mut self, chunk: &mut RawChunk) -> Result<bool, IngestError> {
        let start = chunk.text.len();
        chunk.text.append(&mut self.carry);
        let mut searched = start;
        let end = loop {
            if self.ended {
                break chunk.text.len();
            }
            chunk.text.reserve(CHUNK_BYTES);
            // `read_to_end` reads into the spare capacity without zeroing it first.
            let read = match (&mut self.file)
                .take(CHUNK_BYTES as u64)
                .read_to_end(&mut chunk.text)
            {
                Ok(read) => read,
                Err(error) => {
                    chunk.text.truncate(start);
                    return Err(error.into());
                }
            };
            // Fewer bytes than asked for: `read_to_end` stopped at the end of the file, and every
            // line left is whole.
            self.ended = read < CHUNK_BYTES;
            if self.ended {
                break chunk.text.len();
            }
            if let Some(last) = memchr::memrchr(b'\n', &chunk.text[searched..]) {
                break searched + last + 1;
            }
            searched = chunk.text.len();
        };
        self.carry.extend_from_slice(&chunk.text[end..]);
        chunk.text.truncate(end);
        let mut line_start = start;
        let line_ends =
            memchr::memchr_iter(b'\n', &chunk.text[start..end]).map(|at| start + at + 1);
        // The file's last line may lack its newline.
        let last_line = (self.ended && end > start && chunk.text[end - 1] != b'\n').then_some(end);
        for line_end in line_ends.chain(last_line) {
            self.line += 1;
            if !chunk.text[line_start..line_end]
                .iter()
                .all(u8::is_ascii_whitespace)
            {
                chunk
                    .rows
                    .push(RawEntry::Text(self.line, line_start..line_end));
            }
            line_start = line_end;
        }
        Ok(!self.ended)
    }
}

/// Streams the rows of a file, validated for `kind`, one at a time.
///
/// Yields `Ok(row)` for each valid row, `Err(ReadError::Row)` for each bad one,
/// and at most one final `Err(ReadError::File)` if the file becomes unreadable.
pub struct RowReader {
    kind: RecordKind,
    raw: RawReader,
    /// The checked rows of the last chunk read, not yet taken.
    checked: VecDeque<Result<Value, ReadError>>,
    /// The file may hold more rows.
    more: bool,
}

impl RowReader {
    /// Opens `path`, detecting its format from the name.
    pub fn open(path: &Path, kind: RecordKind) -> Result<Self, IngestError> {
        Ok(Self {
            kind,
            raw: RawReader::open(path, InputFormat::detect(path)?)?,
            checked: VecDeque::new(),
            more: true,
        })
    }
}

impl Iterator for RowReader {
    type Item = Result<Value, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.checked.is_empty() && self.more {
            let mut chunk = RawChunk::default();
            let read = self.raw.read_chunk(&mut chunk);
            self.checked
                .extend(chunk.check(self.kind).map(|(row, checked)| {
                    checked
                        .map(Cow::into_owned)
                        .map_err(|reason| ReadError::Row(RowError { row, reason }))
                }));
            match read {
                Ok(more) => self.more = more,
                Err(error) => {
                    self.more = false;
                    self.checked.push_back(Err(ReadError::File(error)));
                }
            }
        }
        self.checked.pop_front()
    }
}

/// Reads and validates a whole file into memory.
pub fn read_file(path: &Path, kind: RecordKind) -> Result<ValidatedRows, IngestError> {
    let mut out = ValidatedRows::default();
    for item in RowReader::open(path, kind)? {
        match item {
            Ok(row) => out.rows.push(row),
            Err(ReadError::Row(error)) => out.errors.push(error),
            Err(ReadError::File(error)) => return Err(error),
        }
    }
    Ok(out)
}

/// Splits a top-level JSON array into the bytes of its elements without
/// parsing them, so one malformed element is a row error and the next element
/// is still found (at the next top-level comma).
struct ArraySplitter<R> {
    reader: R,
    state: SplitState,
    element: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SplitState {
    BeforeArray,
    InArray,
    Done,
}

impl<R: BufRead> ArraySplitter<R> {
    fn new(reader: R) -> Self {
        Self {
            reader,
            state: SplitState::BeforeArray,
            element: Vec::new(),
        }
    }

    /// Returns the next element's bytes, `None` after the closing `]`.
    fn next_element(&mut self) -> Result<Option<&[u8]>, IngestError> {
        if self.state == SplitState::Done {
            return Ok(None);
        }
        if self.state == SplitState::BeforeArray {
            match self.next_non_blank()? {
                Some(b'[') => self.state = SplitState::InArray,
                _ => {
                    return Err(IngestError::Format(
                        "json file does not start with an array".to_owned(),
                    ));
                }
            }
        }
        self.element.clear();
        let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
        loop {
            let buffer = self.reader.fill_buf()?;
            if buffer.is_empty() {
                return Err(IngestError::Format("json array is not closed".to_owned()));
            }
            let mut end = None;
            for (index, &byte) in buffer.iter().enumerate() {
                if in_string {
                    match (escaped, byte) {
                        (true, _) => escaped = false,
                        (false, b'\\') => escaped = true,
                        (false, b'"') => in_string = false,
                        _ => {}
                    }
                    continue;
                }
                match byte {
                    b'"' => in_string = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' if depth > 0 => depth -= 1,
                    b',' if depth == 0 => {
                        end = Some((index, false));
                        break;
                    }
                    b']' => {
                        end = Some((index, true));
                        break;
                    }
                    _ => {}
                }
            }
            match end {
                Some((index, closed)) => {
                    self.element.extend_from_slice(&buffer[..index]);
                    self.reader.consume(index + 1);
                    if closed {
                        self.state = SplitState::Done;
                        if self.element.iter().all(u8::is_ascii_whitespace) {
                            return Ok(None);
                        }
                    }
                    return Ok(Some(&self.element));
                }
                None => {
                    let len = buffer.len();
                    self.element.extend_from_slice(buffer);
                    self.reader.consume(len);
                }
            }
        }
    }

    fn next_non_blank(&mut self) -> Result<Option<u8>, IngestError> {
        loop {
            let buffer = self.reader.fill_buf()?;
            if buffer.is_empty() {
                return Ok(None);
            }
            match buffer.iter().position(|b| !b.is_ascii_whitespace()) {
                Some(index) => {
                    let byte = buffer[index];
                    self.reader.consume(index + 1);
                    return Ok(Some(byte));
                }
                None => {
                    let len = buffer.len();
                    self.reader.consume(len);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::Write;

    const ECID: &str = "12345678901234567890123456789012345678";

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::File::create(&path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        path
    }

    #[test]
    fn json_lines_report_bad_rows_by_line_and_keep_going() {
        let dir = tempfile::tempdir().unwrap();
        let good = json!({"_id": "e1", "timestamp": "2024-06-01T00:00:00Z", "identityMap": {"ECID": [{"id": ECID}]}});
        let text = [
            good.to_string(),
            "{not json".to_owned(),
            String::new(),
            json!({"_id": "e2", "identityMap": {"ECID": [{"id": ECID}]}}).to_string(),
            json!({"timestamp": "2024-06-01T00:00:00Z", "identityMap": {"ECID": [{"id": ECID}]}}).to_string(),
            json!({"_id": "e3", "timestamp": "2024-06-01T00:00:00Z"}).to_string(),
            json!({"_id": "e4", "timestamp": "yesterday", "identityMap": {"ECID": [{"id": ECID}]}}).to_string(),
            json!({"_id": "e5", "timestamp": 1717200000000i64, "identityMap": {"ECID": [{"id": ECID}]}, "web": null}).to_string(),
            good.to_string(),
        ]
        .join("\n");
        let result =
            read_file(&write(dir.path(), "events.jsonl", &text), RecordKind::Event).unwrap();
        assert_eq!(result.rows.len(), 2);
        let rows: Vec<usize> = result.errors.iter().map(|e| e.row).collect();
        assert_eq!(rows, [2, 4, 5, 6, 7, 8]);
        let reasons: Vec<&str> = result.errors.iter().map(|e| e.reason.as_str()).collect();
        assert!(reasons[0].starts_with("malformed json"));
        assert_eq!(reasons[1], "event has no timestamp");
        assert_eq!(reasons[2], "event has no _id");
        assert!(reasons[3].contains("no identityMap"));
        assert!(reasons[4].starts_with("timestamp must be"));
        assert!(reasons[5].starts_with("web is null"));
    }

    /// JSON Lines read in blocks give every line that is not blank, with its number and its
    /// newline, whatever the block boundaries cut: lines across them, blank lines at them, a line
    /// longer than a block, CRLF endings and a last line without a newline.
    #[test]
    fn json_lines_come_whole_across_block_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::new();
        for line in 1..=12_000 {
            match line % 7 {
                0 => text.push_str("   \n"),
                3 => text.push_str(&format!("{{\"n\":{line}}}\r\n")),
                _ => text.push_str(&format!(
                    "{{\"n\":{line},\"pad\":\"{}\"}}\n",
                    "x".repeat(line % 200)
                )),
            }
            if line == 2_500 {
                text.push_str(&format!(
                    "{{\"long\":\"{}\"}}\n",
                    "y".repeat(3 * CHUNK_BYTES)
                ));
            }
        }
        text.push_str("{\"last\":true}");
        let expected: Vec<(usize, &str)> = text
            .split_inclusive('\n')
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(index, line)| (index + 1, line))
            .collect();
        let path = write(dir.path(), "rows.jsonl", &text);
        let mut reader = RawReader::open(&path, InputFormat::JsonLines).unwrap();
        let mut rows = Vec::new();
        let mut chunks = 0;
        loop {
            let mut chunk = RawChunk::default();
            let more = reader.read_chunk(&mut chunk).unwrap();
            chunks += 1;
            for entry in &chunk.rows {
                let RawEntry::Text(row, range) = entry else {
                    panic!("JSON Lines rows are text");
                };
                let line = std::str::from_utf8(&chunk.text[range.clone()]).unwrap();
                rows.push((*row, line.to_owned()));
            }
            if !more {
                break;
            }
        }
        assert!(chunks > 4, "{chunks} chunks");
        let rows: Vec<(usize, &str)> = rows
            .iter()
            .map(|(row, line)| (*row, line.as_str()))
            .collect();
        assert_eq!(rows, expected);
    }

    #[test]
    fn json_arrays_stream_elements_and_resync_after_a_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            r#" [ {{"identityMap": {{"CRMID": [{{"id": "c,1]"}}]}}, "person": {{"birthDate": "1990-02-03"}}}},
                 {{"identityMap": bad}},
                 {{"identityMap": {{"CRMID": [{{"id": "c-2"}}]}}, "homeAddress": {{"countryCode": "usa"}}}},
                 {{"identityMap": {{"ECID": [{{"id": "{ECID}"}}]}}, "loyalty": {{"points": "12"}}}} ] "#
        );
        let path = write(dir.path(), "profiles.json", &text);
        assert_eq!(InputFormat::detect(&path).unwrap(), InputFormat::JsonArray);
        let result = read_file(&path, RecordKind::Profile).unwrap();
        assert_eq!(result.rows.len(), 1);
        assert_eq!(result.rows[0]["identityMap"]["CRMID"][0]["id"], "c,1]");
        let errors: Vec<(usize, &str)> = result
            .errors
            .iter()
            .map(|e| (e.row, e.reason.as_str()))
            .collect();
        assert_eq!(errors[0].0, 2);
        assert_eq!(
            errors[1],
            (
                3,
                "homeAddress.countryCode must be a two-letter upper-case country code"
            )
        );
        assert_eq!(errors[2], (4, "loyalty.points must be a number"));
    }

    #[test]
    fn an_unclosed_array_is_a_file_error_after_its_complete_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "cut.json",
            r#"[{"identityMap": {"CRMID": [{"id": "c-1"}]}}, {"identityMap""#,
        );
        let items: Vec<_> = RowReader::open(&path, RecordKind::Profile)
            .unwrap()
            .collect();
        assert_eq!(items.len(), 2);
        assert!(items[0].is_ok());
        assert!(matches!(
            items[1],
            Err(ReadError::File(IngestError::Format(_)))
        ));
    }

    #[test]
    fn oversized_events_are_rejected() {
        let row = json!({"_id": "e", "timestamp": "2024-06-01T00:00:00Z", "identityMap": {"ECID": [{"id": ECID}]}});
        assert!(validate_row(RecordKind::Event, &row, 100).is_ok());
        assert!(
            validate_row(RecordKind::Event, &row, MAX_EVENT_BYTES + 1)
                .unwrap_err()
                .contains("limit")
        );
        assert!(validate_row(RecordKind::Profile, &row, MAX_EVENT_BYTES + 1).is_ok());
    }

    /// The slow way of preparing a row: parse, validate, prepare.
    fn prepare_slowly(kind: RecordKind, json: &str) -> Result<PreparedRow, String> {
        let value: Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
        validate_row(kind, &value, json.len())?;
        PreparedRow::new(kind, "web", &value)
    }

    /// The lines of the JSON Lines files of `kind` of a generated folder of 300 profiles.
    fn generated_lines(kind: RecordKind) -> Vec<String> {
        let data = tempfile::tempdir().unwrap();
        let config = crate::ingest::generate::GenerateConfig {
            profiles: 300,
            seed: 3,
            now_ms: crate::ingest::generate::DEFAULT_NOW_MS,
            threads: 1,
            first_index: 0,
        };
        let manifest = crate::ingest::generate::generate(&config, data.path(), &|| {}).unwrap();
        let mut lines = Vec::new();
        for dataset in manifest.datasets.iter().filter(|d| d.kind == kind) {
            for file in dataset.files.iter().filter(|f| f.ends_with(".jsonl")) {
                let text = std::fs::read_to_string(data.path().join(file)).unwrap();
                lines.extend(text.lines().map(str::to_owned));
            }
        }
        lines
    }

    /// Rows of `kind` prepared straight from their text are those prepared from their parsed
    /// value, whenever the fast way takes them; returns how many it took.
    fn assert_fast_way_agrees(kind: RecordKind, rows: &[String]) -> usize {
        // Shared by every row, as by the rows of a chunk: consecutive rows of a person reuse
        // their identities, and no row may take another's (nor its top-level entries).
        let mut buffers = PrepareBuffers::default();
        let mut fast_ways = 0;
        for json in rows {
            if let Some(fast) = prepare_text(kind, json.as_bytes(), "web", &mut buffers) {
                fast_ways += 1;
                assert_eq!(
                    Ok(fast.with_record_text_reprinted()),
                    prepare_slowly(kind, json).map(PreparedRow::with_record_text_reprinted),
                    "{json}"
                );
            }
        }
        fast_ways
    }

    /// Every row of `kind` of a generated folder (more than `at_least`) takes the fast way, and
    /// gives what the slow way gives.
    fn assert_generated_rows_take_the_fast_way(kind: RecordKind, at_least: usize) {
        let generated = generated_lines(kind);
        assert!(generated.len() > at_least, "{} rows", generated.len());
        assert_eq!(
            assert_fast_way_agrees(kind, &generated),
            generated.len(),
            "every generated row takes the fast way"
        );
    }

    /// `row` as JSON text, with the value at `pointer` replaced by `value`.
    fn replaced(row: &Value, pointer: &str, value: Value) -> String {
        let mut row = row.clone();
        *row.pointer_mut(pointer).unwrap() = value;
        row.to_string()
    }

    /// Records prepared straight from their text are those prepared from their parsed value (body
    /// texts that read as the same value), and the fast way accepts no record the slow way rejects:
    /// on every generated record and on records that break each check or are written unlike
    /// serde_json would print them.
    #[test]
    fn records_prepared_from_text_are_those_of_the_checked_way() {
        assert_generated_rows_take_the_fast_way(RecordKind::Profile, 100);

        let ok = json!({"identityMap": {"CRMID": [{"id": "c-1", "primary": true}], "Email": [{"id": "a@b.c"}]},
                        "person": {"name": {"firstName": "Ren\u{e9}e \"R\""}, "birthDate": "1990-02-03"},
                        "loyalty": {"points": 1.5e3, "tier": "gold", "loyaltyID": ["x", "y"]},
                        "extSourceSystemAudit": {"lastUpdatedDate": "2024-06-01T00:00:00Z"},
                        "custom": {"n": [0, -7, 18446744073709551615u64, 0.1, -2.5e-8]}});
        let broken = |pointer: &str, value: Value| replaced(&ok, pointer, value);
        let cases = [
            ok.to_string(),
            serde_json::to_string_pretty(&ok).unwrap(),
            // Escapes, number spellings and spaces serde_json does not print.
            r#"{ "identityMap" : {"CRMID": [{"id": "c-\u0032", "primary": true}]}, "a": "\/\u00e9", "b": [1E2, 1.50, -0.0, 12345678901234567890123] }"#.to_owned(),
            broken("/extSourceSystemAudit/lastUpdatedDate", json!("yesterday")),
            broken("/extSourceSystemAudit/lastUpdatedDate", json!(1717200000000i64)),
            broken("/extSourceSystemAudit/lastUpdatedDate", json!(-5)),
            broken("/person/birthDate", json!("03/02/1990")),
            broken("/loyalty/points", json!("many")),
            broken("/loyalty/loyaltyID", json!("x")),
            broken("/identityMap", json!({})),
            broken("/identityMap", json!({"CRMID": [{"id": "c-1", "primary": true}, {"id": "c-2", "primary": true}]})),
            broken("/person/name", Value::Null),
            broken("/custom", json!("x".repeat(MAX_RECORD_BYTES))),
            r#"{"identityMap": {"CRMID": [{"id": "c-1"}]}, "a": 1, "a": 2}"#.to_owned(),
            r#"{"identityMap": {"CRMID": [{"id": "c-1"}]}, "timestamp": "soon"}"#.to_owned(),
            r#"{"identityMap": {"CRMID": [{"id": "c-1"}]}, "timestamp": "2024-06-01T00:00:00Z"}"#.to_owned(),
            "[1, 2]".to_owned(),
            "{\"identityMap\": ".to_owned(),
        ];
        // The valid rows other than the one with a repeated key took the fast way.
        assert_eq!(assert_fast_way_agrees(RecordKind::Profile, &cases), 6);
    }

    /// Events prepared straight from their text are those prepared from their parsed value, and
    /// the fast way accepts no row the slow way rejects: on every generated event and on rows that
    /// break each check.
    #[test]
    fn events_prepared_from_text_are_those_of_the_checked_way() {
        assert_generated_rows_take_the_fast_way(RecordKind::Event, 1_000);

        let ok = json!({"_id": "e1", "timestamp": "2024-06-01T00:00:00Z", "eventType": "x",
                        "identityMap": {"ECID": [{"id": ECID, "primary": true}]},
                        "web": {"webPageDetails": {"isHomePage": true, "name": "caf\u{e9} \"x\""}},
                        "commerce": {"order": {"priceTotal": 1.5, "currencyCode": "USD"}},
                        "productListItems": [{"SKU": "a", "quantity": 2}]});
        let broken = |pointer: &str, value: Value| replaced(&ok, pointer, value);
        let cases = [
            ok.to_string(),
            serde_json::to_string_pretty(&ok).unwrap(),
            broken("/timestamp", json!("yesterday")),
            broken("/timestamp", json!(1717200000000i64)),
            broken("/timestamp", json!(-5)),
            broken("/timestamp", json!(u64::MAX)),
            broken("/timestamp", json!(1.7e12)),
            broken("/_id", json!("")),
            broken("/_id", json!(7)),
            broken("/eventType", json!(3)),
            broken("/identityMap", json!({"ECID": [{"id": "short"}]})),
            broken("/identityMap", json!({"ECID": [{"id": ECID}], "Email": [{"id": "a@b.c", "primary": true}]})),
            broken("/identityMap", json!([])),
            broken("/identityMap", json!({"ECID": [{"id": ECID, "primary": "yes"}]})),
            broken("/identityMap", json!({"ECID": [ECID]})),
            broken("/identityMap", json!({"ECID": {"id": ECID}})),
            broken("/identityMap", json!({"ecid": [{"id": ECID}, {"id": ECID}], "Email": [{"id": "a@b.c"}]})),
            broken("/identityMap", json!({"Email": [{"id": "a@b.c"}], "ECID": [{"id": ECID, "primary": true}]})),
            broken("/web/webPageDetails/isHomePage", json!("yes")),
            broken("/web/webPageDetails", Value::Null),
            broken("/commerce/order/currencyCode", json!("usd")),
            broken("/commerce/order/priceTotal", json!("1.5")),
            broken("/commerce/order/priceTotal", json!(3)),
            broken("/productListItems", json!({"SKU": "a"})),
            broken("/web", json!("x".repeat(MAX_EVENT_BYTES))),
            r#"{"_id": "a", "_id": "b", "timestamp": "2024-06-01T00:00:00Z", "identityMap": {"ECID": [{"id": "12345678901234567890123456789012345678"}]}}"#.to_owned(),
            "[1, 2]".to_owned(),
            "{\"_id\": ".to_owned(),
        ];
        // The valid rows other than the one with a repeated key took the fast way.
        assert_eq!(assert_fast_way_agrees(RecordKind::Event, &cases), 8);
        // The valid row with its "é" broken into bytes that are not UTF-8.
        let mut not_utf8 = ok.to_string().into_bytes();
        let accent = not_utf8.iter().position(|&b| b == 0xc3).unwrap();
        not_utf8[accent] = 0xff;
        assert_eq!(
            prepare_text(
                RecordKind::Event,
                &not_utf8,
                "web",
                &mut PrepareBuffers::default()
            ),
            None
        );
    }
}
