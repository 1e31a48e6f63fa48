//! Streaming Parquet writer for export jobs: turns merged-profile JSON rows (already projected with
//! [`crate::profile::projection::project`]) into standard Parquet files, and reads them back.
//!
//! # Schema inference
//!
//! Rows are schemaless JSON, so the writer infers an Arrow schema. It buffers
//! [`ExportOptions::batch_rows`] rows, folds every row of that chunk into one accumulated shape, and
//! converts the chunk with [`crate::ingest::arrow_json::rows_to_batch`]. The first chunk fixes the
//! schema of the first file. Every later chunk is folded into the same shape: when that leaves the
//! Arrow schema unchanged the chunk is appended to the open file; when it widens it (a new field,
//! an integer field that now holds fractions) the open file is closed and a new file is started
//! with the widened schema, so no value is ever dropped or coerced. A batch may therefore hold
//! several files (Data Access already lists a batch as several files, `api.md` §10), each with a
//! widening of the schema of the one before. A value whose kind contradicts what was seen before
//! (a string where numbers were) is an error, [`ExportError::TypeConflict`], not a silent null;
//! XDM data is validated at ingestion, so this means a bug upstream.
//!
//! Every column is nullable. A field appears once some row holds data in it: null, `[]` and `{}`
//! carry no type, so a field that only ever holds them is left out and reads back as absent. Rows
//! with no data at all are kept as all-null rows once any row gives the file a column; an export
//! in which no row ever does fails with [`ExportError::NoColumns`], as Parquet cannot store rows
//! without columns.
//!
//! # Nesting
//!
//! JSON objects become Parquet structs (`person.name.firstName` is `person { name { firstName } }`)
//! and arrays become lists (item field `item`). XDM *map* fields, whose keys are data rather than
//! field names, cannot be told from structs by looking at the JSON; a [`SchemaHint`] names them. The
//! default hint, [`SchemaHint::xdm_profile`], follows how Platform stores the profile union schema:
//!
//! - `identityMap`: map<namespace, list<struct{id, authenticatedState, primary}>>, the value type
//!   of [`crate::ingest::arrow_json::identity_map_type`];
//! - `segmentMembership`: map<namespace, map<segment id, struct{status, lastQualificationTime,
//!   validUntil, ...}>> with the two instants as UTC microsecond timestamps (`api.md` §9).
//!
//! A hint fixes types, not presence: a hinted field still appears only when rows hold it, and the
//! members of a hinted struct that the hint does not name are inferred. Maps use the Parquet
//! spec's `key_value { key, value }` layout.
//!
//! # Files and publication
//!
//! File `n` of stem `part` is `part-0000n.parquet` in the target directory. Until
//! [`ExportWriter::finish`] every file lives under a hidden temporary name (`.part-00000.parquet.tmp`)
//! and is renamed to its final name only then; a writer dropped without `finish` (an error, a
//! cancelled job, a panic) deletes its temporaries, so readers never see a partial export. Memory
//! is bounded by one chunk of JSON rows plus one row group being encoded, whatever the audience
//! size: row groups close at [`ExportOptions::row_group_rows`] rows or
//! [`ExportOptions::row_group_bytes`] encoded bytes, whichever comes first.
//!
//! After a chunk fails to encode, the writer refuses further calls ([`ExportError::Failed`]);
//! dropping it removes its temporaries. Writing is synchronous CPU and file work: call it from
//! `spawn_blocking` or a job thread.

use std::collections::HashMap;
use std::fs::{self, File};
use std::mem;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use serde_json::Value;

use crate::ingest::arrow_json::{batch_to_rows, identity_map_type, rows_to_batch};

/// Rows buffered as JSON before they are converted and encoded (the unit of schema checks). Small
/// chunks stay in cache between the inference and conversion passes: 1,024 rows wrote 1.6 times
/// faster than 8,192.
pub const DEFAULT_BATCH_ROWS: usize = 1_024;
/// Most rows in one row group: large enough for efficient scans, small enough to stream.
pub const DEFAULT_ROW_GROUP_ROWS: usize = 131_072;
/// Most estimated encoded bytes in one row group; bounds memory when rows are wide.
pub const DEFAULT_ROW_GROUP_BYTES: usize = 64 * 1024 * 1024;

/// Failures of writing or reading export files.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The target directory does not exist or is not a directory.
    #[error("export directory {0} is not a directory")]
    NotADirectory(PathBuf),
    /// A row is not a JSON object.
    #[error("row {row} is not a json object")]
    NotAnObject {
        /// Zero-based index of the row in the export.
        row: u64,
    },
    /// A value contradicts the type the schema hint or earlier rows gave its field.
    #[error("row {row}, field {path}: expected {expected}, found {found}")]
    TypeConflict {
        /// Zero-based index of the row in the export.
        row: u64,
        /// Dotted path of the field; `[]` stands for list items and `{}` for map values.
        path: String,
        /// The type established for the field.
        expected: String,
        /// What the row holds instead.
        found: String,
    },
    /// A schema hint uses an Arrow type the JSON conversion cannot write.
    #[error("schema hint field {path} has unsupported type {data_type}")]
    UnsupportedHint {
        /// Dotted path of the hinted field.
        path: String,
        /// The rejected Arrow type.
        data_type: String,
    },
    /// No row held data in any field, and Parquet cannot store rows without columns.
    #[error("none of the {rows} rows holds data in any field")]
    NoColumns {
        /// Rows written.
        rows: u64,
    },
    /// An earlier call failed, so the files may be inconsistent; drop the writer.
    #[error("export writer failed earlier and cannot continue")]
    Failed,
    /// Creating, renaming or removing a file failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Encoding or decoding Parquet failed.
    #[error(transparent)]
    Parquet(#[from] ParquetError),
    /// Converting between JSON rows and Arrow failed.
    #[error(transparent)]
    Arrow(#[from] ArrowError),
}

/// Settings of an [`ExportWriter`].
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Page compression; zstd level 1 by default (snappy is the faster, larger alternative).
    pub compression: Compression,
    /// Rows buffered as JSON before conversion; also how many rows decide a file's first schema.
    pub batch_rows: usize,
    /// Most rows per row group.
    pub row_group_rows: usize,
    /// Most estimated encoded bytes per row group.
    pub row_group_bytes: usize,
    /// Types of fields that inference cannot tell from the JSON alone.
    pub hint: SchemaHint,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            compression: Compression::ZSTD(ZstdLevel::default()),
            batch_rows: DEFAULT_BATCH_ROWS,
            row_group_rows: DEFAULT_ROW_GROUP_ROWS,
            row_group_bytes: DEFAULT_ROW_GROUP_BYTES,
            hint: SchemaHint::xdm_profile(),
        }
    }
}

/// Known types of some fields, given as a partial Arrow schema: a `Map` marks an object whose keys
/// are data, a `Timestamp` a string holding an RFC 3339 instant, a `Struct` lists constraints on
/// some of its members, and `Boolean`, `Int64`, `Float64`, `Utf8` and `List` pin a type (`Float64`
/// keeps a field that starts with whole numbers from widening later).
#[derive(Debug, Clone, Default)]
pub struct SchemaHint {
    fields: HashMap<String, Hint>,
}

impl SchemaHint {
    /// Builds a hint from a partial schema; fails on types the JSON conversion cannot write.
    pub fn from_schema(schema: &Schema) -> Result<Self, ExportError> {
        Ok(Self {
            fields: hint_fields(schema.fields(), "")?,
        })
    }

    /// Returns the hint for exported XDM profiles: `identityMap` and `segmentMembership` as maps,
    /// membership instants as timestamps (see the module documentation).
    pub fn xdm_profile() -> Self {
        let schema = Schema::new(vec![
            Field::new("identityMap", identity_map_type(), true),
            Field::new("segmentMembership", segment_membership_type(), true),
        ]);
        Self::from_schema(&schema).expect("the profile hint uses supported types only")
    }
}

/// Returns the Arrow type of an XDM `segmentMembership`: namespace → segment id → membership, with
/// `lastQualificationTime` and `validUntil` as UTC microsecond timestamps (`api.md` §9).
pub fn segment_membership_type() -> DataType {
    let instant = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let membership = DataType::Struct(Fields::from(vec![
        Field::new("status", DataType::Utf8, true),
        Field::new("lastQualificationTime", instant.clone(), true),
        Field::new("validUntil", instant, true),
    ]));
    map_type(map_type(membership))
}

/// Returns `map<string, value>` in the Parquet spec's `key_value { key, value }` layout.
fn map_type(value: DataType) -> DataType {
    let entries = Fields::from(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("value", value, true),
    ]);
    DataType::Map(
        Arc::new(Field::new("key_value", DataType::Struct(entries), false)),
        false,
    )
}

/// One published Parquet file.
#[derive(Debug, Clone)]
pub struct WrittenFile {
    /// Final path of the file.
    pub path: PathBuf,
    /// Rows in the file.
    pub rows: u64,
    /// Size of the file in bytes.
    pub bytes: u64,
    /// Row groups in the file.
    pub row_groups: usize,
    /// Arrow schema of the file.
    pub schema: SchemaRef,
}

/// A file being written under its temporary name.
struct OpenFile {
    writer: ArrowWriter<File>,
    schema: SchemaRef,
    temporary: PathBuf,
    path: PathBuf,
    rows: u64,
}

impl OpenFile {
    fn write(&mut self, batch: &RecordBatch) -> Result<(), ExportError> {
        self.writer.write(batch)?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }
}

/// A closed file waiting for [`ExportWriter::finish`] to publish it.
struct ClosedFile {
    temporary: PathBuf,
    file: WrittenFile,
}

/// Writes JSON rows to one or more Parquet files of a directory, published atomically by
/// [`ExportWriter::finish`] (see the module documentation).
pub struct ExportWriter {
    dir: PathBuf,
    file_stem: String,
    options: ExportOptions,
    /// Everything learnt from the rows so far; only ever widens.
    shape: Shape,
    buffer: Vec<Value>,
    rows_seen: u64,
    /// Leading rows without data, held back until some row gives the file a column.
    rows_without_columns: u64,
    current: Option<OpenFile>,
    closed: Vec<ClosedFile>,
    failed: bool,
}

impl ExportWriter {
    /// Prepares a writer of `dir/{file_stem}-NNNNN.parquet`; files are created once rows arrive.
    /// Existing files of the same names are replaced on [`ExportWriter::finish`].
    pub fn create(
        dir: &Path,
        file_stem: &str,
        options: ExportOptions,
    ) -> Result<Self, ExportError> {
        if !dir.is_dir() {
            return Err(ExportError::NotADirectory(dir.to_owned()));
        }
        Ok(Self {
            dir: dir.to_owned(),
            file_stem: file_stem.to_owned(),
            buffer: Vec::with_capacity(options.batch_rows.max(1)),
            options,
            shape: Shape::Struct(StructShape::default()),
            rows_seen: 0,
            rows_without_columns: 0,
            current: None,
            closed: Vec::new(),
            failed: false,
        })
    }

    /// Appends one row, a JSON object; encodes the buffered chunk once it is full.
    pub fn write_row(&mut self, row: Value) -> Result<(), ExportError> {
        if self.failed {
            return Err(ExportError::Failed);
        }
        if !row.is_object() {
            return Err(ExportError::NotAnObject {
                row: self.rows_seen,
            });
        }
        self.rows_seen += 1;
        self.buffer.push(row);
        if self.buffer.len() >= self.options.batch_rows {
            self.guard(Self::flush_buffer)?;
        }
        Ok(())
    }

    /// Appends rows in order; see [`ExportWriter::write_row`].
    pub fn write_rows(&mut self, rows: impl IntoIterator<Item = Value>) -> Result<(), ExportError> {
        rows.into_iter().try_for_each(|row| self.write_row(row))
    }

    /// Encodes the remaining rows, closes the files and renames them to their final names. An
    /// export without rows publishes no file. If a rename fails, the files already published are
    /// removed again, so the export is either wholly visible or not at all.
    pub fn finish(mut self) -> Result<Vec<WrittenFile>, ExportError> {
        if self.failed {
            return Err(ExportError::Failed);
        }
        self.guard(Self::flush_buffer)?;
        if self.rows_without_columns > 0 {
            return Err(ExportError::NoColumns {
                rows: self.rows_without_columns,
            });
        }
        self.guard(Self::close_current)?;
        let closed = mem::take(&mut self.closed);
        let mut published: Vec<WrittenFile> = Vec::with_capacity(closed.len());
        for (index, pending) in closed.iter().enumerate() {
            if let Err(error) = fs::rename(&pending.temporary, &pending.file.path) {
                for file in &published {
                    let _ = fs::remove_file(&file.path);
                }
                for later in &closed[index..] {
                    let _ = fs::remove_file(&later.temporary);
                }
                return Err(error.into());
            }
            published.push(pending.file.clone());
        }
        Ok(published)
    }

    /// Runs a step that may leave files half-written, and refuses further work after a failure.
    fn guard(
        &mut self,
        step: impl FnOnce(&mut Self) -> Result<(), ExportError>,
    ) -> Result<(), ExportError> {
        let result = step(self);
        self.failed = result.is_err();
        result
    }

    /// Folds the buffered rows into the shape, starts a new file if the schema widened, and writes
    /// the rows as one record batch.
    fn flush_buffer(&mut self) -> Result<(), ExportError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        // Fold into a copy so that a conflict leaves the established shape untouched.
        let mut shape = self.shape.clone();
        let first_row = self.rows_seen - self.buffer.len() as u64;
        for (offset, row) in self.buffer.iter().enumerate() {
            absorb(&mut shape, &self.options.hint.fields, row)
                .map_err(|conflict| conflict.into_error(first_row + offset as u64))?;
        }
        let schema = Arc::new(shape.to_schema());
        self.shape = shape;
        if schema.fields().is_empty() {
            // Parquet cannot store rows without columns (a zero-column file reads back empty), so
            // they wait for the first column; the schema only widens, so no file is open yet.
            self.rows_without_columns += self.buffer.len() as u64;
            self.buffer.clear();
            return Ok(());
        }
        if self
            .current
            .as_ref()
            .is_some_and(|open| open.schema != schema)
        {
            self.close_current()?;
        }
        if self.current.is_none() {
            self.current = Some(self.open_file(schema.clone())?);
        }
        let open = self.current.as_mut().expect("a file was opened above");
        while self.rows_without_columns > 0 {
            let count = self
                .rows_without_columns
                .min(self.options.batch_rows.max(1) as u64);
            let empty_rows = vec![Value::Object(serde_json::Map::new()); count as usize];
            open.write(&rows_to_batch(schema.clone(), &empty_rows)?)?;
            self.rows_without_columns -= count;
        }
        open.write(&rows_to_batch(schema, &self.buffer)?)?;
        self.buffer.clear();
        Ok(())
    }

    /// Creates the next file under its temporary name.
    fn open_file(&self, schema: SchemaRef) -> Result<OpenFile, ExportError> {
        let name = format!("{}-{:05}.parquet", self.file_stem, self.closed.len());
        let temporary = self.dir.join(format!(".{name}.tmp"));
        let properties = WriterProperties::builder()
            .set_compression(self.options.compression)
            .set_max_row_group_row_count(Some(self.options.row_group_rows.max(1)))
            .set_max_row_group_bytes(Some(self.options.row_group_bytes.max(1)))
            .set_created_by(concat!("segmentd ", env!("CARGO_PKG_VERSION")).to_owned())
            .build();
        let file = File::create(&temporary)?;
        // Not yet tracked by the writer, so Drop would not remove it: clean up here.
        let writer =
            ArrowWriter::try_new(file, schema.clone(), Some(properties)).inspect_err(|_| {
                let _ = fs::remove_file(&temporary);
            })?;
        Ok(OpenFile {
            writer,
            schema,
            temporary,
            path: self.dir.join(name),
            rows: 0,
        })
    }

    /// Closes the open file, if any, and queues it for publication.
    fn close_current(&mut self) -> Result<(), ExportError> {
        let Some(open) = self.current.take() else {
            return Ok(());
        };
        // Queued before closing so that Drop removes the temporary even if closing fails.
        self.closed.push(ClosedFile {
            temporary: open.temporary,
            file: WrittenFile {
                path: open.path,
                rows: open.rows,
                bytes: 0,
                row_groups: 0,
                schema: open.schema,
            },
        });
        let mut writer = open.writer;
        writer.flush()?;
        let row_groups = writer.flushed_row_groups().len();
        // Writes the footer; syncing before the rename in `finish` means a crash can never leave
        // a published name on a truncated file.
        let file = writer.into_inner()?;
        file.sync_all()?;
        let pending = self.closed.last_mut().expect("pushed above");
        pending.file.row_groups = row_groups;
        pending.file.bytes = file.metadata()?.len();
        Ok(())
    }
}

impl Drop for ExportWriter {
    /// Removes the temporaries of an export that was not finished.
    fn drop(&mut self) {
        if let Some(open) = self.current.take() {
            drop(open.writer);
            let _ = fs::remove_file(&open.temporary);
        }
        for pending in self.closed.drain(..) {
            let _ = fs::remove_file(&pending.temporary);
        }
    }
}

/// Reads every row of a Parquet file as a JSON object, nulls left out; for tests and checks.
pub fn read_rows(path: &Path) -> Result<Vec<Value>, ExportError> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path)?)?.build()?;
    let mut rows = Vec::new();
    for batch in reader {
        rows.extend(batch_to_rows(&batch?)?);
    }
    Ok(rows)
}

/// A constraint from a [`SchemaHint`] on one field.
#[derive(Debug, Clone, PartialEq)]
enum Hint {
    Bool,
    Int,
    Float,
    Str,
    Timestamp(TimeUnit, Option<Arc<str>>),
    List(Box<Hint>),
    Map(Box<Hint>),
    Struct(HashMap<String, Hint>),
}

fn hint_fields(fields: &Fields, parent: &str) -> Result<HashMap<String, Hint>, ExportError> {
    fields
        .iter()
        .map(|field| {
            let path = if parent.is_empty() {
                field.name().clone()
            } else {
                format!("{parent}.{}", field.name())
            };
            Ok((field.name().clone(), hint_of(field.data_type(), &path)?))
        })
        .collect()
}

fn hint_of(data_type: &DataType, path: &str) -> Result<Hint, ExportError> {
    Ok(match data_type {
        DataType::Boolean => Hint::Bool,
        DataType::Int64 => Hint::Int,
        DataType::Float64 => Hint::Float,
        DataType::Utf8 => Hint::Str,
        DataType::Timestamp(unit, zone) => Hint::Timestamp(*unit, zone.clone()),
        DataType::List(item) => Hint::List(Box::new(hint_of(item.data_type(), path)?)),
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(members) if members.len() == 2 => {
                Hint::Map(Box::new(hint_of(members[1].data_type(), path)?))
            }
            _ => return Err(unsupported_hint(data_type, path)),
        },
        DataType::Struct(members) => Hint::Struct(hint_fields(members, path)?),
        other => return Err(unsupported_hint(other, path)),
    })
}

fn unsupported_hint(data_type: &DataType, path: &str) -> ExportError {
    ExportError::UnsupportedHint {
        path: path.to_owned(),
        data_type: data_type.to_string(),
    }
}

/// What the rows seen so far say about a value; it only widens as rows are folded in.
#[derive(Debug, Clone, PartialEq)]
enum Shape {
    /// Nothing but nulls: no type yet, so no column.
    Null,
    Bool,
    Int,
    Float,
    Str,
    Timestamp(TimeUnit, Option<Arc<str>>),
    List(Box<Shape>),
    Map(Box<Shape>),
    Struct(StructShape),
}

/// Members of a struct in the order they were first seen.
#[derive(Debug, Clone, PartialEq, Default)]
struct StructShape {
    members: Vec<Member>,
    /// Positions by name, consulted only for wide structs (see [`StructShape::member`]).
    index: HashMap<String, usize>,
}

/// One member of a struct, with its hint looked up once when the member is first seen.
#[derive(Debug, Clone, PartialEq)]
struct Member {
    name: String,
    shape: Shape,
    hint: Option<Hint>,
}

/// Up to this many members, a linear scan beats hashing the name (most XDM objects are small).
const LINEAR_SCAN_MEMBERS: usize = 16;

impl StructShape {
    /// Returns the position of member `name`, adding it if new. Rows usually list their keys in
    /// the same order, so the member after the previous match (`expected`) is tried first.
    fn position(
        &mut self,
        name: &str,
        hints: Option<&HashMap<String, Hint>>,
        expected: usize,
    ) -> usize {
        if self
            .members
            .get(expected)
            .is_some_and(|member| member.name == name)
        {
            return expected;
        }
        let found = if self.members.len() <= LINEAR_SCAN_MEMBERS {
            self.members.iter().position(|member| member.name == name)
        } else {
            self.index.get(name).copied()
        };
        found.unwrap_or_else(|| {
            self.index.insert(name.to_owned(), self.members.len());
            self.members.push(Member {
                name: name.to_owned(),
                shape: Shape::Null,
                hint: hints.and_then(|hints| hints.get(name)).cloned(),
            });
            self.members.len() - 1
        })
    }

    fn to_fields(&self) -> Vec<Field> {
        self.members
            .iter()
            .filter_map(|member| Some(Field::new(&member.name, member.shape.to_arrow()?, true)))
            .collect()
    }
}

impl Shape {
    /// Returns the Arrow schema of a row shape (a struct).
    fn to_schema(&self) -> Schema {
        match self {
            Shape::Struct(members) => Schema::new(members.to_fields()),
            other => unreachable!("rows are objects, their shape is a struct, not {other:?}"),
        }
    }

    /// Returns the Arrow type, or `None` when no row held data here.
    fn to_arrow(&self) -> Option<DataType> {
        Some(match self {
            Shape::Null => return None,
            Shape::Bool => DataType::Boolean,
            Shape::Int => DataType::Int64,
            Shape::Float => DataType::Float64,
            Shape::Str => DataType::Utf8,
            Shape::Timestamp(unit, zone) => DataType::Timestamp(*unit, zone.clone()),
            Shape::List(item) => {
                DataType::List(Arc::new(Field::new("item", item.to_arrow()?, true)))
            }
            Shape::Map(value) => map_type(value.to_arrow()?),
            Shape::Struct(members) => {
                let fields = members.to_fields();
                if fields.is_empty() {
                    return None;
                }
                DataType::Struct(Fields::from(fields))
            }
        })
    }

    fn describe(&self) -> &'static str {
        match self {
            Shape::Null => "nothing",
            Shape::Bool => "boolean",
            Shape::Int => "integer",
            Shape::Float => "number",
            Shape::Str => "string",
            Shape::Timestamp(..) => "rfc 3339 timestamp",
            Shape::List(_) => "array",
            Shape::Map(_) => "map object",
            Shape::Struct(_) => "object",
        }
    }
}

/// A type conflict on its way up from the offending value; the path is collected innermost first.
struct Conflict {
    reversed_path: Vec<String>,
    expected: &'static str,
    found: &'static str,
}

impl Conflict {
    fn new(expected: &'static str, found: &Value) -> Self {
        Self {
            reversed_path: Vec::new(),
            expected,
            found: describe_value(found),
        }
    }

    fn within(mut self, segment: &str) -> Self {
        self.reversed_path.push(segment.to_owned());
        self
    }

    fn into_error(self, row: u64) -> ExportError {
        let path = self
            .reversed_path
            .iter()
            .rev()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(".");
        ExportError::TypeConflict {
            row,
            path,
            expected: self.expected.to_owned(),
            found: self.found.to_owned(),
        }
    }
}

fn describe_value(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(number) if number.is_i64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn describe_hint(hint: &Hint) -> &'static str {
    match hint {
        Hint::Bool => "boolean",
        Hint::Int => "integer",
        Hint::Float => "number",
        Hint::Str => "string",
        Hint::Timestamp(..) => "rfc 3339 timestamp",
        Hint::List(_) => "array",
        Hint::Map(_) => "map object",
        Hint::Struct(_) => "object",
    }
}

/// Folds a row object into the row shape, under the top-level hint.
fn absorb(shape: &mut Shape, hints: &HashMap<String, Hint>, row: &Value) -> Result<(), Conflict> {
    let (Shape::Struct(members), Value::Object(object)) = (shape, row) else {
        unreachable!("write_row only accepts objects");
    };
    absorb_members(members, Some(hints), object)
}

fn absorb_members(
    members: &mut StructShape,
    hints: Option<&HashMap<String, Hint>>,
    object: &serde_json::Map<String, Value>,
) -> Result<(), Conflict> {
    let mut expected = 0;
    for (name, value) in object {
        // Nulls say nothing, and adding a member for them would only cost lookups.
        if value.is_null() {
            continue;
        }
        let position = members.position(name, hints, expected);
        expected = position + 1;
        let member = &mut members.members[position];
        absorb_value(&mut member.shape, member.hint.as_ref(), value)
            .map_err(|conflict| conflict.within(name))?;
    }
    Ok(())
}

/// Widens `shape` so that it also describes `value`, within the limits of `hint`.
fn absorb_value(shape: &mut Shape, hint: Option<&Hint>, value: &Value) -> Result<(), Conflict> {
    let observed = match (hint, value) {
        (_, Value::Null) => return Ok(()),
        (None | Some(Hint::Bool), Value::Bool(_)) => Shape::Bool,
        (None | Some(Hint::Int), Value::Number(number)) if number.is_i64() => Shape::Int,
        (None | Some(Hint::Float), Value::Number(_)) => Shape::Float,
        (None | Some(Hint::Str), Value::String(_)) => Shape::Str,
        (Some(Hint::Timestamp(unit, zone)), Value::String(text)) => {
            if chrono::DateTime::parse_from_rfc3339(text).is_err() {
                return Err(Conflict::new("rfc 3339 timestamp", value));
            }
            Shape::Timestamp(*unit, zone.clone())
        }
        (None | Some(Hint::List(_)), Value::Array(items)) => {
            let item_hint = match hint {
                Some(Hint::List(item)) => Some(item.as_ref()),
                _ => None,
            };
            if *shape == Shape::Null {
                *shape = Shape::List(Box::new(Shape::Null));
            }
            let Shape::List(item_shape) = shape else {
                return Err(Conflict::new(shape.describe(), value));
            };
            for item in items {
                absorb_value(item_shape, item_hint, item).map_err(|c| c.within("[]"))?;
            }
            return Ok(());
        }
        (Some(Hint::Map(value_hint)), Value::Object(entries)) => {
            if *shape == Shape::Null {
                *shape = Shape::Map(Box::new(Shape::Null));
            }
            let Shape::Map(value_shape) = shape else {
                return Err(Conflict::new(shape.describe(), value));
            };
            for entry in entries.values() {
                absorb_value(value_shape, Some(value_hint), entry).map_err(|c| c.within("{}"))?;
            }
            return Ok(());
        }
        (None | Some(Hint::Struct(_)), Value::Object(object)) => {
            if *shape == Shape::Null {
                *shape = Shape::Struct(StructShape::default());
            }
            let Shape::Struct(members) = shape else {
                return Err(Conflict::new(shape.describe(), value));
            };
            let member_hints = match hint {
                Some(Hint::Struct(members)) => Some(members),
                _ => None,
            };
            return absorb_members(members, member_hints, object);
        }
        (Some(hint), _) => return Err(Conflict::new(describe_hint(hint), value)),
    };
    match (&*shape, &observed) {
        (Shape::Null, _) => *shape = observed,
        (Shape::Int, Shape::Float) => *shape = Shape::Float,
        (Shape::Float, Shape::Int) => {}
        (established, _) if *established == observed => {}
        (established, _) => return Err(Conflict::new(established.describe(), value)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn small(batch_rows: usize, row_group_rows: usize) -> ExportOptions {
        ExportOptions {
            batch_rows,
            row_group_rows,
            ..ExportOptions::default()
        }
    }

    fn map_value(data_type: &DataType) -> &DataType {
        let DataType::Map(entries, _) = data_type else {
            panic!("{data_type} is not a map");
        };
        let DataType::Struct(members) = entries.data_type() else {
            panic!("map entries are not a struct");
        };
        members[1].data_type()
    }

    fn visible_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    fn profile(index: u64) -> Value {
        let mut row = json!({
            "_id": format!("p-{index}"),
            "identityMap": {
                "CRMID": [{"id": format!("c-{index}"), "primary": true, "authenticatedState": "authenticated"}],
                "ECID": [{"id": format!("e-{index}-a")}, {"id": format!("e-{index}-b")}]
            },
            "person": {"name": {"firstName": format!("F{index}"), "lastName": "L"}},
            "loyalty": {"points": index * 10, "member": index.is_multiple_of(2)},
            "segmentMembership": {"ups": {
                "seg-1": {"status": "realized", "lastQualificationTime": "2024-06-15T12:00:00.125Z", "version": "3"}
            }},
            "tags": ["a", "b"]
        });
        if index.is_multiple_of(3) {
            // Missing and null fields in some rows must not break the columns of others.
            row["person"]["name"]
                .as_object_mut()
                .unwrap()
                .remove("lastName");
            row["tags"] = Value::Null;
        }
        row
    }

    /// What a profile reads back as: nulls left out, instants in UTC with milliseconds.
    fn expected(index: u64) -> Value {
        let mut row = profile(index);
        row.as_object_mut()
            .unwrap()
            .retain(|_, value| !value.is_null());
        row
    }

    #[test]
    fn nested_rows_round_trip_as_structs_lists_maps_and_timestamps() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer =
            ExportWriter::create(dir.path(), "part", ExportOptions::default()).unwrap();
        writer.write_rows((0..10).map(profile)).unwrap();
        writer
            .write_row(
                json!({"_id": "other", "segmentMembership": {"Email": {"a@b.c": {
                "status": "exited", "lastQualificationTime": "2017-09-26T17:52:25+02:00"}}}}),
            )
            .unwrap();
        let files = writer.finish().unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].rows, 11);
        assert_eq!(files[0].path, dir.path().join("part-00000.parquet"));

        let schema = &files[0].schema;
        assert!(schema.fields().iter().all(|field| field.is_nullable()));
        let DataType::Map(entries, _) = schema.field_with_name("identityMap").unwrap().data_type()
        else {
            panic!("identityMap is not a map");
        };
        assert_eq!(entries.name(), "key_value");
        let DataType::Struct(person) = schema.field_with_name("person").unwrap().data_type() else {
            panic!("person is not a struct");
        };
        assert!(matches!(person[0].data_type(), DataType::Struct(_)));
        let membership = schema
            .field_with_name("segmentMembership")
            .unwrap()
            .data_type();
        let DataType::Struct(fields) = map_value(map_value(membership)) else {
            panic!("a membership is not a struct");
        };
        assert_eq!(
            fields.find("lastQualificationTime").unwrap().1.data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        assert_eq!(
            schema.field_with_name("loyalty").unwrap().data_type(),
            &DataType::Struct(Fields::from(vec![
                Field::new("points", DataType::Int64, true),
                Field::new("member", DataType::Boolean, true),
            ]))
        );

        let mut rows: Vec<Value> = (0..10).map(expected).collect();
        rows.push(
            json!({"_id": "other", "segmentMembership": {"Email": {"a@b.c": {
            "status": "exited", "lastQualificationTime": "2017-09-26T15:52:25.000Z"}}}}),
        );
        assert_eq!(read_rows(&files[0].path).unwrap(), rows);
    }

    #[test]
    fn many_chunks_make_several_row_groups_in_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = ExportWriter::create(dir.path(), "part", small(100, 250)).unwrap();
        writer.write_rows((0..1_000).map(profile)).unwrap();
        let files = writer.finish().unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!((files[0].rows, files[0].row_groups), (1_000, 4));
        assert_eq!(files[0].bytes, fs::metadata(&files[0].path).unwrap().len());
        let rows = read_rows(&files[0].path).unwrap();
        assert_eq!(rows.len(), 1_000);
        assert_eq!(rows[999], expected(999));
        assert_eq!(rows[3], expected(3));
    }

    #[test]
    fn a_new_field_or_wider_number_starts_a_new_file_and_compatible_rows_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = ExportWriter::create(dir.path(), "part", small(2, 1_000)).unwrap();
        writer
            .write_rows([json!({"a": 1}), json!({"a": 2})])
            .unwrap();
        // Nothing new (a null and an empty list carry no type): same file.
        writer
            .write_rows([json!({"a": 3, "b": null}), json!({"c": []})])
            .unwrap();
        // A fractional number widens `a` to Float64.
        writer
            .write_rows([json!({"a": 4.5}), json!({"a": 5})])
            .unwrap();
        // A new nested field.
        writer
            .write_rows([json!({"a": 6, "n": {"x": "y"}})])
            .unwrap();
        let files = writer.finish().unwrap();
        let summary: Vec<(u64, Vec<String>)> = files
            .iter()
            .map(|file| {
                let types = file
                    .schema
                    .fields()
                    .iter()
                    .map(|f| format!("{}:{}", f.name(), f.data_type()));
                (file.rows, types.collect())
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (4, vec!["a:Int64".to_owned()]),
                (2, vec!["a:Float64".to_owned()]),
                (
                    1,
                    vec!["a:Float64".to_owned(), "n:Struct(\"x\": Utf8)".to_owned()]
                ),
            ]
        );
        assert_eq!(
            read_rows(&files[1].path).unwrap(),
            vec![json!({"a": 4.5}), json!({"a": 5.0})]
        );
        assert_eq!(
            visible_files(dir.path()),
            [
                "part-00000.parquet",
                "part-00001.parquet",
                "part-00002.parquet"
            ]
        );
    }

    #[test]
    fn conflicting_kinds_and_bad_timestamps_are_errors_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = ExportWriter::create(dir.path(), "part", small(10, 10)).unwrap();
        writer
            .write_rows([json!({"p": {"age": 3}}), json!({"p": {"age": "old"}})])
            .unwrap();
        let error = writer.finish().unwrap_err().to_string();
        assert_eq!(error, "row 1, field p.age: expected integer, found string");

        let mut writer = ExportWriter::create(dir.path(), "part", small(1, 10)).unwrap();
        let row = json!({"segmentMembership": {"ups": {"s": {"lastQualificationTime": "soon"}}}});
        let error = writer.write_row(row).unwrap_err().to_string();
        assert_eq!(
            error,
            "row 0, field segmentMembership.{}.{}.lastQualificationTime: expected rfc 3339 timestamp, found string"
        );
        assert!(matches!(
            writer.write_row(json!({})),
            Err(ExportError::Failed)
        ));
        assert!(matches!(
            ExportWriter::create(dir.path(), "part", small(1, 1))
                .unwrap()
                .write_row(json!([1])),
            Err(ExportError::NotAnObject { row: 0 })
        ));
        drop(writer);
        assert!(visible_files(dir.path()).is_empty());
    }

    #[test]
    fn files_appear_only_on_finish_and_drop_removes_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = ExportWriter::create(dir.path(), "part", small(10, 10)).unwrap();
        writer.write_rows((0..25).map(|i| json!({"i": i}))).unwrap();
        writer.write_row(json!({"i": 0.5})).unwrap();
        writer.write_rows((0..10).map(|i| json!({"i": i}))).unwrap();
        // Two files exist, both under hidden temporary names.
        assert_eq!(
            visible_files(dir.path()),
            [".part-00000.parquet.tmp", ".part-00001.parquet.tmp"]
        );
        drop(writer);
        assert!(visible_files(dir.path()).is_empty());

        let mut writer = ExportWriter::create(dir.path(), "part", small(10, 10)).unwrap();
        writer.write_rows((0..25).map(|i| json!({"i": i}))).unwrap();
        assert!(!dir.path().join("part-00000.parquet").exists());
        let files = writer.finish().unwrap();
        assert_eq!(files.iter().map(|f| f.rows).sum::<u64>(), 25);
        assert_eq!(visible_files(dir.path()), ["part-00000.parquet"]);
    }

    #[test]
    fn leading_rows_without_data_wait_for_the_first_column() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = ExportWriter::create(dir.path(), "part", small(2, 10)).unwrap();
        writer
            .write_rows([json!({}), json!({"a": null}), json!({"b": []})])
            .unwrap();
        writer.write_rows([json!({"c": true}), json!({})]).unwrap();
        let files = writer.finish().unwrap();
        assert_eq!(
            read_rows(&files[0].path).unwrap(),
            [
                json!({}),
                json!({}),
                json!({}),
                json!({"c": true}),
                json!({})
            ]
        );

        let mut writer = ExportWriter::create(dir.path(), "none", small(2, 10)).unwrap();
        writer.write_rows([json!({}), json!({"a": {}})]).unwrap();
        assert!(matches!(
            writer.finish(),
            Err(ExportError::NoColumns { rows: 2 })
        ));
        assert_eq!(visible_files(dir.path()), ["part-00000.parquet"]);
    }

    #[test]
    fn an_export_without_rows_publishes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let writer = ExportWriter::create(dir.path(), "part", ExportOptions::default()).unwrap();
        assert!(writer.finish().unwrap().is_empty());
        assert!(visible_files(dir.path()).is_empty());
        assert!(matches!(
            ExportWriter::create(
                &dir.path().join("missing"),
                "part",
                ExportOptions::default()
            ),
            Err(ExportError::NotADirectory(_))
        ));
    }

    #[test]
    fn hints_pin_types_and_reject_unsupported_ones() {
        let hint = SchemaHint::from_schema(&Schema::new(vec![Field::new(
            "loyalty",
            DataType::Struct(Fields::from(vec![Field::new(
                "points",
                DataType::Float64,
                true,
            )])),
            true,
        )]))
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let options = ExportOptions {
            hint,
            ..small(1, 10)
        };
        let mut writer = ExportWriter::create(dir.path(), "part", options).unwrap();
        // Whole numbers first, then a fraction: the hint keeps it one Float64 file.
        writer
            .write_rows([
                json!({"loyalty": {"points": 1}}),
                json!({"loyalty": {"points": 1.5}}),
            ])
            .unwrap();
        let files = writer.finish().unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(
            read_rows(&files[0].path).unwrap(),
            vec![
                json!({"loyalty": {"points": 1.0}}),
                json!({"loyalty": {"points": 1.5}})
            ]
        );

        let unsupported = Schema::new(vec![Field::new("n", DataType::Int32, true)]);
        assert_eq!(
            SchemaHint::from_schema(&unsupported)
                .unwrap_err()
                .to_string(),
            "schema hint field n has unsupported type Int32"
        );
    }
}
