//! The columnar representation of a sample: every scalar leaf of the profiles' attributes and of
//! their events is one column, strings are dictionary-encoded (or packed end to end when nearly
//! every value is distinct), events are rows of their own table addressed by per-profile offsets,
//! and a compiled query binds each of its [`FieldPath`] ids to a column once, so evaluating a
//! profile reads array slots instead of walking JSON (`estimation.md`'s measurements: columnar
//! beats row structs beats maps by one to two orders of magnitude).
//!
//! # How values are kept
//!
//! * A JSON object is flattened into its leaves: `person.name.firstName` is one column.
//! * A leaf is a boolean, an integer (`i64`), a double, a string, or an instant: a string written
//!   exactly as `YYYY-MM-DDTHH:MM:SS.mmmZ` (how XDM date-times are serialised) is kept as its epoch
//!   milliseconds and read back as [`Val::Time`]. A column holds one kind; a column that meets a
//!   second kind becomes a "mixed" column of tagged cells (slower, same answers).
//! * Arrays (and empty objects) are not flattened: the whole array is one cell holding its compact
//!   JSON text, dictionary-encoded (a person's events mostly repeat the same `identityMap`), and
//!   parsed when a query reads through it. Paths that cross an array (`identityMap.ECID.id`,
//!   `productListItems.SKU`) are resolved by walking the parsed array with the usual projection
//!   rules.
//! * Missing values cost a bit: sparse columns keep a presence bitmap with a rank directory.
//!
//! # Per-row fallback
//!
//! A path that names an object (`person.name` when it has sub-fields), the whole profile or an
//! event as a value, or a path whose shape differs between rows (an object in some, an array in
//! others) is answered by rebuilding the row's JSON from its columns once per row and walking it:
//! slower, never different.
//!
//! # Differences from evaluating the JSON directly \[I\]
//!
//! Reading a date-time column gives [`Val::Time`] where the JSON view gives the string. Equality,
//! ordering and time functions agree for every canonical string; string functions see the same
//! text (the evaluator renders instants in the canonical form). A comparison with a constant that
//! names the same instant in another notation (`"2024-01-01T00:00:00+00:00"`) is equal here and
//! unequal on the JSON. Null JSON values are dropped, as the JSON view treats them as missing.

use ahash::{AHashMap as HashMap, AHashSet as HashSet};
use std::cell::OnceCell;

use serde_json::{Map, Value};

pub(crate) mod encoding;
mod kernels;

pub use encoding::DecodeError;
pub use kernels::PreparedQuery;

use crate::pql::view::walk_json;
use crate::pql::{CompiledQuery, FieldPath, ProfileView, Val, time};
use crate::store::profiles::packed::PackedDeserializer;

/// Joins path segments into a column key; NUL does not occur in XDM field names.
const SEPARATOR: char = '\0';

fn key_of<S: AsRef<str>>(segments: &[S]) -> String {
    let mut key = String::new();
    for (index, segment) in segments.iter().enumerate() {
        if index > 0 {
            key.push(SEPARATOR);
        }
        key.push_str(segment.as_ref());
    }
    key
}

/// Why a table could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ColumnError {
    /// One column's strings passed the 4 GiB a column addresses.
    #[error("column `{0}` holds more than 4 GiB of strings")]
    TooLarge(String),
}

/// Strings packed end to end, addressed by index.
#[derive(Debug, Default)]
struct Strings {
    ends: Vec<u32>,
    bytes: String,
}

impl Strings {
    fn push(&mut self, value: &str) -> Option<u32> {
        let index = u32::try_from(self.ends.len()).ok()?;
        self.bytes.push_str(value);
        self.ends.push(u32::try_from(self.bytes.len()).ok()?);
        Some(index)
    }

    fn get(&self, index: usize) -> &str {
        let start = match index {
            0 => 0,
            _ => self.ends[index - 1] as usize,
        };
        &self.bytes[start..self.ends[index] as usize]
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn heap_bytes(&self) -> usize {
        self.ends.capacity() * 4 + self.bytes.capacity()
    }

    fn shrink(&mut self) {
        self.ends.shrink_to_fit();
        self.bytes.shrink_to_fit();
    }
}

/// Dictionary codes in the narrowest width that holds the dictionary.
#[derive(Debug)]
enum Codes {
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
}

impl Codes {
    fn narrow(codes: Vec<u32>, dictionary_len: usize) -> Codes {
        // Every code is below the dictionary's length, so the casts below cannot truncate.
        if dictionary_len <= 1 << 8 {
            Codes::U8(codes.into_iter().map(|code| code as u8).collect())
        } else if dictionary_len <= 1 << 16 {
            Codes::U16(codes.into_iter().map(|code| code as u16).collect())
        } else {
            let mut codes = codes;
            codes.shrink_to_fit();
            Codes::U32(codes)
        }
    }

    fn len(&self) -> usize {
        match self {
            Codes::U8(codes) => codes.len(),
            Codes::U16(codes) => codes.len(),
            Codes::U32(codes) => codes.len(),
        }
    }

    fn select(&self, slots: &[usize], dictionary_len: usize) -> Codes {
        let codes = slots.iter().map(|slot| self.get(*slot) as u32).collect();
        Codes::narrow(codes, dictionary_len)
    }

    fn get(&self, slot: usize) -> usize {
        match self {
            Codes::U8(codes) => codes[slot] as usize,
            Codes::U16(codes) => codes[slot] as usize,
            Codes::U32(codes) => codes[slot] as usize,
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Codes::U8(codes) => codes.capacity(),
            Codes::U16(codes) => codes.capacity() * 2,
            Codes::U32(codes) => codes.capacity() * 4,
        }
    }
}

/// One value of a mixed column (or on its way between tables).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Cell<'a> {
    Bool(bool),
    Int(i64),
    Double(f64),
    Time(i64),
    Str(&'a str),
    /// An array or empty object, as compact JSON text.
    Json(&'a str),
}

/// An owned [`Cell`], for mixed columns.
#[derive(Debug, Clone)]
enum OwnedCell {
    Bool(bool),
    Int(i64),
    Double(f64),
    Time(i64),
    Str(Box<str>),
    Json(Box<str>),
}

impl OwnedCell {
    fn of(cell: &Cell<'_>) -> OwnedCell {
        match *cell {
            Cell::Bool(value) => OwnedCell::Bool(value),
            Cell::Int(value) => OwnedCell::Int(value),
            Cell::Double(value) => OwnedCell::Double(value),
            Cell::Time(value) => OwnedCell::Time(value),
            Cell::Str(value) => OwnedCell::Str(value.into()),
            Cell::Json(value) => OwnedCell::Json(value.into()),
        }
    }

    fn cell(&self) -> Cell<'_> {
        match self {
            OwnedCell::Bool(value) => Cell::Bool(*value),
            OwnedCell::Int(value) => Cell::Int(*value),
            OwnedCell::Double(value) => Cell::Double(*value),
            OwnedCell::Time(value) => Cell::Time(*value),
            OwnedCell::Str(value) => Cell::Str(value),
            OwnedCell::Json(value) => Cell::Json(value),
        }
    }
}

/// The instant of a string written exactly in the canonical `YYYY-MM-DDTHH:MM:SS.mmmZ` form, the
/// strings that [`time::format_instant_millis`] renders back unchanged. Checked by shape (digits
/// and separators where the form has them) plus the parser's range checks, without rendering: this
/// runs for every string the sample stores.
fn canonical_instant(value: &str) -> Option<i64> {
    const SEPARATORS: [(usize, u8); 7] = [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (23, b'Z'),
    ];
    let bytes = value.as_bytes();
    if bytes.len() != 24 {
        return None;
    }
    let shaped = bytes.iter().enumerate().all(|(index, byte)| {
        match SEPARATORS.iter().find(|(at, _)| *at == index) {
            Some((_, separator)) => byte == separator,
            None => byte.is_ascii_digit(),
        }
    });
    // A leap second (":60") parses but renders as the next minute.
    (shaped && &bytes[17..19] != b"60").then(|| time::parse_instant(value))?
}

/// Which rows have a value, and where it sits among the present ones.
#[derive(Debug)]
enum Presence {
    All,
    /// A bitmap with, per 64-row word, the number of present rows before it.
    Sparse {
        words: Vec<u64>,
        before: Vec<u32>,
    },
}

impl Presence {
    /// Presence from a bitmap of `rows` rows.
    fn from_words(mut words: Vec<u64>, rows: usize) -> Presence {
        let present: usize = words.iter().map(|word| word.count_ones() as usize).sum();
        if present == rows {
            return Presence::All;
        }
        words.shrink_to_fit();
        let mut before = Vec::with_capacity(words.len());
        let mut count = 0u32;
        for word in &words {
            before.push(count);
            count += word.count_ones();
        }
        Presence::Sparse { words, before }
    }

    fn slot(&self, row: usize) -> Option<usize> {
        match self {
            Presence::All => Some(row),
            Presence::Sparse { words, before } => {
                let word = *words.get(row / 64)?;
                let bit = 1u64 << (row % 64);
                (word & bit != 0)
                    .then(|| before[row / 64] as usize + (word & (bit - 1)).count_ones() as usize)
            }
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Presence::All => 0,
            Presence::Sparse { words, before } => words.capacity() * 8 + before.capacity() * 4,
        }
    }
}

/// The values of one column, one per present row.
#[derive(Debug)]
enum Values {
    Bool(Vec<bool>),
    Int(Vec<i64>),
    Double(Vec<f64>),
    Time(Vec<i64>),
    Dictionary { codes: Codes, dictionary: Strings },
    Plain(Strings),
    Json { codes: Codes, dictionary: Strings },
    Mixed(Vec<OwnedCell>),
}

impl Values {
    fn len(&self) -> usize {
        match self {
            Values::Bool(values) => values.len(),
            Values::Int(values) | Values::Time(values) => values.len(),
            Values::Double(values) => values.len(),
            Values::Dictionary { codes, .. } | Values::Json { codes, .. } => codes.len(),
            Values::Plain(strings) => strings.len(),
            Values::Mixed(cells) => cells.len(),
        }
    }

    /// The values at `slots`, in that order.
    fn select(self, slots: &[usize]) -> Values {
        fn gather<T: Copy>(values: &[T], slots: &[usize]) -> Vec<T> {
            slots.iter().map(|slot| values[*slot]).collect()
        }
        match self {
            Values::Bool(values) => Values::Bool(gather(&values, slots)),
            Values::Int(values) => Values::Int(gather(&values, slots)),
            Values::Double(values) => Values::Double(gather(&values, slots)),
            Values::Time(values) => Values::Time(gather(&values, slots)),
            Values::Dictionary { codes, dictionary } => Values::Dictionary {
                codes: codes.select(slots, dictionary.len()),
                dictionary,
            },
            Values::Json { codes, dictionary } => Values::Json {
                codes: codes.select(slots, dictionary.len()),
                dictionary,
            },
            Values::Plain(strings) => {
                let mut selected = Strings::default();
                for slot in slots {
                    // The selection is never larger than the source, which fitted.
                    selected.push(strings.get(*slot));
                }
                selected.shrink();
                Values::Plain(selected)
            }
            Values::Mixed(cells) => {
                Values::Mixed(slots.iter().map(|slot| cells[*slot].clone()).collect())
            }
        }
    }

    fn cell(&self, slot: usize) -> Cell<'_> {
        match self {
            Values::Bool(values) => Cell::Bool(values[slot]),
            Values::Int(values) => Cell::Int(values[slot]),
            Values::Double(values) => Cell::Double(values[slot]),
            Values::Time(values) => Cell::Time(values[slot]),
            Values::Dictionary { codes, dictionary } => Cell::Str(dictionary.get(codes.get(slot))),
            Values::Plain(strings) => Cell::Str(strings.get(slot)),
            Values::Json { codes, dictionary } => Cell::Json(dictionary.get(codes.get(slot))),
            Values::Mixed(cells) => cells[slot].cell(),
        }
    }

    /// Whether cells may be JSON text (read through the parse cache).
    fn may_hold_json(&self) -> bool {
        matches!(self, Values::Json { .. } | Values::Mixed(_))
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Values::Bool(values) => values.capacity(),
            Values::Int(values) | Values::Time(values) => values.capacity() * 8,
            Values::Double(values) => values.capacity() * 8,
            Values::Dictionary { codes, dictionary } | Values::Json { codes, dictionary } => {
                codes.heap_bytes() + dictionary.heap_bytes()
            }
            Values::Plain(strings) => strings.heap_bytes(),
            Values::Mixed(cells) => {
                cells.capacity() * std::mem::size_of::<OwnedCell>()
                    + cells
                        .iter()
                        .map(|cell| match cell {
                            OwnedCell::Str(text) | OwnedCell::Json(text) => text.len(),
                            _ => 0,
                        })
                        .sum::<usize>()
            }
        }
    }
}

/// One column: its path, presence and values.
#[derive(Debug)]
struct Column {
    segments: Box<[Box<str>]>,
    presence: Presence,
    values: Values,
}

impl Column {
    fn cell(&self, row: usize) -> Option<Cell<'_>> {
        self.presence.slot(row).map(|slot| self.values.cell(slot))
    }
}

/// Where a query path is found in a table.
#[derive(Debug, Clone, Copy)]
enum Binding {
    /// No row has anything there.
    Absent,
    /// A column of scalars.
    Scalar(usize),
    /// A column whose cells may be JSON arrays: parse the cell (cached per row in `slot`), then
    /// walk the path's segments from `rest` on.
    Json {
        column: usize,
        slot: usize,
        rest: usize,
    },
    /// The path's shape is not one column: rebuild the row's JSON and walk it.
    Materialize,
}

/// A table of flattened JSON objects, one row each.
#[derive(Debug)]
pub struct Table {
    rows: usize,
    columns: Vec<Column>,
    by_key: HashMap<Box<str>, usize>,
    /// Keys of every object that has sub-fields in some row.
    object_keys: HashSet<Box<str>>,
    /// For `inSegment`: columns `segmentMembership.<namespace>.<segmentId>.status`, by segment id.
    membership_status: HashMap<Box<str>, Vec<usize>>,
}

impl Table {
    /// Indexes `columns` by key, object prefix and membership status, dropping empty columns.
    fn from_columns(rows: usize, columns: Vec<Column>) -> Table {
        let columns: Vec<Column> = columns
            .into_iter()
            .filter(|column| column.values.len() > 0)
            .collect();
        let mut object_keys = HashSet::new();
        let mut membership_status: HashMap<Box<str>, Vec<usize>> = HashMap::new();
        let mut by_key = HashMap::new();
        for (index, column) in columns.iter().enumerate() {
            let segments = &column.segments;
            for length in 1..segments.len() {
                object_keys.insert(key_of(&segments[..length]).into_boxed_str());
            }
            if let [first, _namespace, segment_id, last] = &**segments
                && &**first == "segmentMembership"
                && &**last == "status"
            {
                membership_status
                    .entry(segment_id.clone())
                    .or_default()
                    .push(index);
            }
            by_key.insert(key_of(segments).into_boxed_str(), index);
        }
        Table {
            rows,
            columns,
            by_key,
            object_keys,
            membership_status,
        }
    }

    /// The table of rows `rows` (in that order), column by column; dictionaries are kept.
    fn select(self, rows: &[usize]) -> Table {
        let columns = self
            .columns
            .into_iter()
            .map(|column| {
                let mut words = vec![0u64; rows.len().div_ceil(64)];
                let mut slots = Vec::new();
                for (new_row, row) in rows.iter().enumerate() {
                    if let Some(slot) = column.presence.slot(*row) {
                        words[new_row / 64] |= 1 << (new_row % 64);
                        slots.push(slot);
                    }
                }
                Column {
                    segments: column.segments,
                    presence: Presence::from_words(words, rows.len()),
                    values: column.values.select(&slots),
                }
            })
            .collect();
        Table::from_columns(rows.len(), columns)
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn column_count(&self) -> usize {
        self.columns.len()
    }

    /// Bytes held on the heap by the columns (what a sample costs in memory, bar the index maps).
    pub fn heap_bytes(&self) -> usize {
        self.columns
            .iter()
            .map(|column| column.presence.heap_bytes() + column.values.heap_bytes())
            .sum()
    }

    fn bind(&self, path: &FieldPath, json_slots: &mut usize) -> Binding {
        let segments = path.segments();
        let key = key_of(segments);
        let exact = self.by_key.get(key.as_str()).copied();
        let is_object = self.object_keys.contains(key.as_str());
        let json_prefix = (1..segments.len()).rev().find_map(|length| {
            let column = *self.by_key.get(key_of(&segments[..length]).as_str())?;
            self.columns[column]
                .values
                .may_hold_json()
                .then_some((column, length))
        });
        let mut slot = || {
            *json_slots += 1;
            *json_slots - 1
        };
        match (exact, is_object, json_prefix) {
            (None, false, None) => Binding::Absent,
            (Some(column), false, None) if !self.columns[column].values.may_hold_json() => {
                Binding::Scalar(column)
            }
            (Some(column), false, None) => Binding::Json {
                column,
                slot: slot(),
                rest: segments.len(),
            },
            (None, false, Some((column, rest))) => Binding::Json {
                column,
                slot: slot(),
                rest,
            },
            _ => Binding::Materialize,
        }
    }

    fn cell(&self, column: usize, row: usize) -> Option<Cell<'_>> {
        self.columns[column].cell(row)
    }

    /// Rebuilds row `row` as a JSON object.
    pub fn materialize(&self, row: usize) -> Value {
        let mut root = Map::new();
        for column in &self.columns {
            let Some(cell) = column.cell(row) else {
                continue;
            };
            let (last, parents) = column
                .segments
                .split_last()
                .expect("a column has at least one segment");
            // A scalar in the way (a path that is a leaf in some rows and an object in others
            // is never both in one row): keep the scalar.
            if let Some(object) = object_at(&mut root, parents) {
                object.insert(last.to_string(), cell_json(&cell));
            }
        }
        Value::Object(root)
    }

    fn in_segment(&self, row: usize, segment_id: &str) -> bool {
        self.membership_status
            .get(segment_id)
            .is_some_and(|columns| {
                columns.iter().any(|column| {
                    matches!(
                        self.cell(*column, row),
                        Some(Cell::Str("realized" | "existing"))
                    )
                })
            })
    }
}

/// The object at `parents` under `root`, created as needed; `None` when a non-object is in the way.
fn object_at<'m>(
    mut object: &'m mut Map<String, Value>,
    parents: &[Box<str>],
) -> Option<&'m mut Map<String, Value>> {
    for parent in parents {
        object = object
            .entry(parent.to_string())
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()?;
    }
    Some(object)
}

fn cell_json(cell: &Cell<'_>) -> Value {
    match *cell {
        Cell::Bool(value) => Value::Bool(value),
        Cell::Int(value) => Value::from(value),
        Cell::Double(value) => Value::from(value),
        Cell::Time(value) => Value::String(time::format_instant_millis(value)),
        Cell::Str(value) => Value::String(value.to_owned()),
        // The text was written by serde_json from a parsed value, so it parses.
        Cell::Json(text) => serde_json::from_str(text).unwrap_or(Value::Null),
    }
}

fn scalar_val<'a>(cell: Cell<'a>) -> Val<'a> {
    match cell {
        Cell::Bool(value) => Val::Bool(value),
        Cell::Int(value) => Val::Int(value),
        Cell::Double(value) => Val::Double(value),
        Cell::Time(value) => Val::Time(value),
        Cell::Str(value) => Val::Str(value),
        Cell::Json(_) => Val::Null,
    }
}

/// Strings being collected: deduplicated while repeats are common, packed once they are not.
#[derive(Debug, Default)]
struct StringsBuilder {
    codes: Vec<u32>,
    dictionary: Strings,
    index: HashMap<Box<str>, u32>,
    /// Set once nearly every value turned out distinct: values are packed, no codes.
    plain: bool,
}

/// Values seen before a column decides to stop deduplicating.
const DEDUP_TRIAL: usize = 4096;

impl StringsBuilder {
    /// Removes the last value (a dictionary entry it added stays, unused).
    fn pop(&mut self) {
        match self.plain {
            true => {
                self.dictionary.ends.pop();
                let end = self.dictionary.ends.last().map_or(0, |end| *end as usize);
                self.dictionary.bytes.truncate(end);
            }
            false => drop(self.codes.pop()),
        }
    }

    fn push(&mut self, value: &str, may_pack: bool) -> Option<()> {
        if self.plain {
            self.dictionary.push(value)?;
            return Some(());
        }
        let code = match self.index.get(value) {
            Some(code) => *code,
            None => {
                let code = self.dictionary.push(value)?;
                self.index.insert(value.into(), code);
                code
            }
        };
        self.codes.push(code);
        if may_pack
            && self.codes.len() == DEDUP_TRIAL
            && self.dictionary.len() * 4 > DEDUP_TRIAL * 3
        {
            // Mostly distinct (ids, URLs with query strings): a dictionary would only add codes.
            let mut packed = Strings::default();
            for code in &self.codes {
                packed.push(self.dictionary.get(*code as usize))?;
            }
            *self = StringsBuilder {
                dictionary: packed,
                plain: true,
                ..StringsBuilder::default()
            };
        }
        Some(())
    }

    fn get(&self, slot: usize) -> &str {
        match self.plain {
            true => self.dictionary.get(slot),
            false => self.dictionary.get(self.codes[slot] as usize),
        }
    }

    fn len(&self) -> usize {
        match self.plain {
            true => self.dictionary.len(),
            false => self.codes.len(),
        }
    }

    fn finish(mut self, json: bool) -> Values {
        self.dictionary.shrink();
        match (self.plain, json) {
            (true, _) => Values::Plain(self.dictionary),
            (false, false) => Values::Dictionary {
                codes: Codes::narrow(self.codes, self.dictionary.len()),
                dictionary: self.dictionary,
            },
            (false, true) => Values::Json {
                codes: Codes::narrow(self.codes, self.dictionary.len()),
                dictionary: self.dictionary,
            },
        }
    }
}

#[derive(Debug)]
enum ValuesBuilder {
    Empty,
    Bool(Vec<bool>),
    Int(Vec<i64>),
    Double(Vec<f64>),
    Time(Vec<i64>),
    Str(StringsBuilder),
    Json(StringsBuilder),
    Mixed(Vec<OwnedCell>),
}

impl ValuesBuilder {
    /// Removes the last value.
    fn pop(&mut self) {
        match self {
            ValuesBuilder::Empty => {}
            ValuesBuilder::Bool(values) => drop(values.pop()),
            ValuesBuilder::Int(values) | ValuesBuilder::Time(values) => drop(values.pop()),
            ValuesBuilder::Double(values) => drop(values.pop()),
            ValuesBuilder::Str(strings) | ValuesBuilder::Json(strings) => strings.pop(),
            ValuesBuilder::Mixed(cells) => drop(cells.pop()),
        }
    }

    fn len(&self) -> usize {
        match self {
            ValuesBuilder::Empty => 0,
            ValuesBuilder::Bool(values) => values.len(),
            ValuesBuilder::Int(values) | ValuesBuilder::Time(values) => values.len(),
            ValuesBuilder::Double(values) => values.len(),
            ValuesBuilder::Str(strings) | ValuesBuilder::Json(strings) => strings.len(),
            ValuesBuilder::Mixed(cells) => cells.len(),
        }
    }

    fn cell(&self, slot: usize) -> Cell<'_> {
        match self {
            ValuesBuilder::Empty => unreachable!("an empty column has no slots"),
            ValuesBuilder::Bool(values) => Cell::Bool(values[slot]),
            ValuesBuilder::Int(values) => Cell::Int(values[slot]),
            ValuesBuilder::Double(values) => Cell::Double(values[slot]),
            ValuesBuilder::Time(values) => Cell::Time(values[slot]),
            ValuesBuilder::Str(strings) => Cell::Str(strings.get(slot)),
            ValuesBuilder::Json(strings) => Cell::Json(strings.get(slot)),
            ValuesBuilder::Mixed(cells) => cells[slot].cell(),
        }
    }

    /// Appends `cell`, widening the column when it is of another kind: a non-canonical string
    /// turns an instant column into a string column (instants render back to their exact text);
    /// any other mix makes the column mixed.
    fn push(&mut self, cell: Cell<'_>) -> Option<()> {
        match (&mut *self, cell) {
            (ValuesBuilder::Empty, _) => {
                *self = match cell {
                    Cell::Bool(_) => ValuesBuilder::Bool(Vec::new()),
                    Cell::Int(_) => ValuesBuilder::Int(Vec::new()),
                    Cell::Double(_) => ValuesBuilder::Double(Vec::new()),
                    Cell::Time(_) => ValuesBuilder::Time(Vec::new()),
                    Cell::Str(_) => ValuesBuilder::Str(StringsBuilder::default()),
                    Cell::Json(_) => ValuesBuilder::Json(StringsBuilder::default()),
                };
                self.push(cell)
            }
            (ValuesBuilder::Bool(values), Cell::Bool(value)) => {
                values.push(value);
                Some(())
            }
            (ValuesBuilder::Int(values), Cell::Int(value)) => {
                values.push(value);
                Some(())
            }
            (ValuesBuilder::Double(values), Cell::Double(value)) => {
                values.push(value);
                Some(())
            }
            (ValuesBuilder::Time(values), Cell::Time(value)) => {
                values.push(value);
                Some(())
            }
            (ValuesBuilder::Str(strings), Cell::Str(value)) => strings.push(value, true),
            (ValuesBuilder::Str(strings), Cell::Time(value)) => {
                strings.push(&time::format_instant_millis(value), true)
            }
            (ValuesBuilder::Json(strings), Cell::Json(value)) => strings.push(value, false),
            (ValuesBuilder::Time(values), Cell::Str(value)) => {
                let mut strings = StringsBuilder::default();
                for instant in values.iter() {
                    strings.push(&time::format_instant_millis(*instant), true)?;
                }
                strings.push(value, true)?;
                *self = ValuesBuilder::Str(strings);
                Some(())
            }
            (ValuesBuilder::Mixed(cells), cell) => {
                cells.push(OwnedCell::of(&cell));
                Some(())
            }
            (_, cell) => {
                let mut cells: Vec<OwnedCell> = (0..self.len())
                    .map(|slot| OwnedCell::of(&self.cell(slot)))
                    .collect();
                cells.push(OwnedCell::of(&cell));
                *self = ValuesBuilder::Mixed(cells);
                Some(())
            }
        }
    }

    fn finish(self) -> Values {
        match self {
            ValuesBuilder::Empty => Values::Mixed(Vec::new()),
            ValuesBuilder::Bool(mut values) => {
                values.shrink_to_fit();
                Values::Bool(values)
            }
            ValuesBuilder::Int(mut values) => {
                values.shrink_to_fit();
                Values::Int(values)
            }
            ValuesBuilder::Double(mut values) => {
                values.shrink_to_fit();
                Values::Double(values)
            }
            ValuesBuilder::Time(mut values) => {
                values.shrink_to_fit();
                Values::Time(values)
            }
            ValuesBuilder::Str(strings) => strings.finish(false),
            ValuesBuilder::Json(strings) => strings.finish(true),
            ValuesBuilder::Mixed(mut cells) => {
                cells.shrink_to_fit();
                Values::Mixed(cells)
            }
        }
    }
}

#[derive(Debug)]
struct ColumnBuilder {
    key: Box<str>,
    words: Vec<u64>,
    values: ValuesBuilder,
}

/// Collects rows into a [`Table`].
#[derive(Debug, Default)]
pub struct TableBuilder {
    rows: usize,
    columns: Vec<ColumnBuilder>,
    by_key: HashMap<Box<str>, usize>,
    /// A column error met while flattening text, reported once parsing stops.
    failure: Option<ColumnError>,
}

impl TableBuilder {
    /// Number of rows pushed so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Appends a JSON object as a row (anything else becomes an empty row), flattened by the
    /// same visitor as [`TableBuilder::push_packed_row`].
    pub fn push_row(&mut self, row: &Value) -> Result<(), ColumnError> {
        if row.is_object() {
            let mut key = String::new();
            // A `&Value` deserializes infallibly; only a column error can stop the visitor.
            let flattened = serde::de::DeserializeSeed::deserialize(
                Flatten {
                    builder: self,
                    key: &mut key,
                    top: true,
                },
                row,
            );
            if let Some(error) = self.failure.take() {
                return Err(error);
            }
            if flattened.is_err() {
                self.clear_row();
            }
        }
        self.rows += 1;
        Ok(())
    }

    /// Appends a row given as packed JSON (the store's event bodies), flattening it while it is
    /// read (no intermediate `serde_json::Value` except for arrays). Returns `false`, appending nothing, when the bytes are not a
    /// packed JSON object.
    pub fn push_packed_row(&mut self, bytes: &[u8]) -> Result<bool, ColumnError> {
        let mut key = String::new();
        let mut deserializer = PackedDeserializer::new(bytes);
        let parsed = serde::de::DeserializeSeed::deserialize(
            Flatten {
                builder: self,
                key: &mut key,
                top: true,
            },
            &mut deserializer,
        );
        if let Some(error) = self.failure.take() {
            return Err(error);
        }
        let ok = parsed.is_ok() && deserializer.end().is_ok();
        match ok {
            true => self.rows += 1,
            // Drop whatever a malformed row pushed before the parser gave up.
            false => self.clear_row(),
        }
        Ok(ok)
    }

    /// Removes the values pushed for the current (unfinished) row.
    fn clear_row(&mut self) {
        let (word, bit) = (self.rows / 64, self.rows % 64);
        for column in &mut self.columns {
            if column
                .words
                .get(word)
                .is_some_and(|bits| bits & (1 << bit) != 0)
            {
                column.words[word] &= !(1 << bit);
                column.values.pop();
            }
        }
    }

    fn push_cell(&mut self, key: &str, cell: Cell<'_>) -> Result<(), ColumnError> {
        let index = self.column_index(key);
        self.push_cell_at(index, self.rows, cell)
    }

    /// The index of the column of `key`, created empty if new.
    fn column_index(&mut self, key: &str) -> usize {
        match self.by_key.get(key) {
            Some(index) => *index,
            None => {
                self.columns.push(ColumnBuilder {
                    key: key.into(),
                    words: Vec::new(),
                    values: ValuesBuilder::Empty,
                });
                self.by_key.insert(key.into(), self.columns.len() - 1);
                self.columns.len() - 1
            }
        }
    }

    /// Sets column `index` of row `row` (rows of one column arrive in increasing order).
    fn push_cell_at(
        &mut self,
        index: usize,
        row: usize,
        cell: Cell<'_>,
    ) -> Result<(), ColumnError> {
        let column = &mut self.columns[index];
        let (word, bit) = (row / 64, row % 64);
        if column.words.len() <= word {
            column.words.resize(word + 1, 0);
        }
        if column.words[word] & (1 << bit) != 0 {
            // The same key twice in one row (a field named like a flattened path): first wins.
            return Ok(());
        }
        column.words[word] |= 1 << bit;
        column
            .values
            .push(cell)
            .ok_or_else(|| ColumnError::TooLarge(column.key.replace(SEPARATOR, ".")))
    }

    /// Appends rows `rows` (in increasing order) of `table`, column by column, copying cells as
    /// they are (no JSON is rebuilt or parsed).
    fn push_table_rows(&mut self, table: &Table, rows: &[usize]) -> Result<(), ColumnError> {
        let base = self.rows;
        for column in &table.columns {
            let index = self.column_index(&key_of(&column.segments));
            for (offset, row) in rows.iter().enumerate() {
                if let Some(cell) = column.cell(*row) {
                    self.push_cell_at(index, base + offset, cell)?;
                }
            }
        }
        self.rows += rows.len();
        Ok(())
    }

    /// Finishes the table.
    pub fn finish(self) -> Table {
        let rows = self.rows;
        let columns = self
            .columns
            .into_iter()
            .map(|builder| Column {
                segments: builder.key.split(SEPARATOR).map(Box::from).collect(),
                presence: Presence::from_words(builder.words, rows),
                values: builder.values.finish(),
            })
            .collect();
        Table::from_columns(rows, columns)
    }
}

/// Streams one JSON value into a [`TableBuilder`] at `key` (a row's top-level object when `top`).
struct Flatten<'b> {
    builder: &'b mut TableBuilder,
    key: &'b mut String,
    top: bool,
}

impl Flatten<'_> {
    fn push<E: serde::de::Error>(self, cell: Cell<'_>) -> Result<(), E> {
        if self.top {
            return Err(E::custom("a row must be a JSON object"));
        }
        if let Err(error) = self.builder.push_cell(self.key, cell) {
            self.builder.failure = Some(error);
            return Err(E::custom("column error"));
        }
        Ok(())
    }

    fn push_str<E: serde::de::Error>(self, text: &str) -> Result<(), E> {
        match canonical_instant(text) {
            Some(instant) => self.push(Cell::Time(instant)),
            None => self.push(Cell::Str(text)),
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Flatten<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

/// A field name, borrowed from the text unless it has escapes.
struct FieldName<'de>(std::borrow::Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for FieldName<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl<'de> serde::de::Visitor<'de> for NameVisitor {
            type Value = FieldName<'de>;
            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, name: &'de str) -> Result<Self::Value, E> {
                Ok(FieldName(std::borrow::Cow::Borrowed(name)))
            }
            fn visit_str<E>(self, name: &str) -> Result<Self::Value, E> {
                Ok(FieldName(std::borrow::Cow::Owned(name.to_owned())))
            }
        }
        deserializer.deserialize_str(NameVisitor)
    }
}

impl<'de> serde::de::Visitor<'de> for Flatten<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<(), E> {
        self.push(Cell::Bool(value))
    }

    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<(), E> {
        self.push(Cell::Int(value))
    }

    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<(), E> {
        // As `serde_json::Number::as_i64`: integers beyond i64 are doubles.
        match i64::try_from(value) {
            Ok(int) => self.push(Cell::Int(int)),
            Err(_) => self.push(Cell::Double(value as f64)),
        }
    }

    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<(), E> {
        self.push(Cell::Double(value))
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, text: &'de str) -> Result<(), E> {
        self.push_str(text)
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<(), E> {
        self.push_str(text)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        if self.top {
            return Err(E::custom("a row must be a JSON object"));
        }
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, sequence: A) -> Result<(), A::Error> {
        let array: Value = serde::Deserialize::deserialize(
            serde::de::value::SeqAccessDeserializer::new(sequence),
        )?;
        self.push(Cell::Json(&array.to_string()))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Flatten { builder, key, top } = self;
        let mut empty = true;
        while let Some(FieldName(name)) = map.next_key::<FieldName<'de>>()? {
            empty = false;
            let length = key.len();
            if !top {
                key.push(SEPARATOR);
            }
            key.push_str(&name);
            map.next_value_seed(Flatten {
                builder: &mut *builder,
                key: &mut *key,
                top: false,
            })?;
            key.truncate(length);
        }
        match empty && !top {
            true => Flatten { builder, key, top }.push(Cell::Json("{}")),
            false => Ok(()),
        }
    }
}

/// Profiles with their events, columnar: one table of attributes, one of events, and each
/// profile's event range.
#[derive(Debug)]
pub struct ProfileTables {
    attributes: Table,
    events: Table,
    /// `event_ends[i]` is one past profile `i`'s last event row.
    event_ends: Vec<usize>,
}

/// Collects profiles into [`ProfileTables`].
#[derive(Debug, Default)]
pub struct ProfileTablesBuilder {
    attributes: TableBuilder,
    events: TableBuilder,
    event_ends: Vec<usize>,
}

impl ProfileTablesBuilder {
    /// Number of profiles pushed so far.
    pub fn len(&self) -> usize {
        self.event_ends.len()
    }

    /// Whether no profile was pushed yet.
    pub fn is_empty(&self) -> bool {
        self.event_ends.is_empty()
    }

    /// Appends a profile and its events given packed (oldest first); an event that is not a
    /// packed JSON object is skipped.
    pub fn push_with_packed_events<'e>(
        &mut self,
        attributes: &Value,
        events: impl IntoIterator<Item = &'e [u8]>,
    ) -> Result<(), ColumnError> {
        self.attributes.push_row(attributes)?;
        for event in events {
            self.events.push_packed_row(event)?;
        }
        self.event_ends.push(self.events.rows());
        Ok(())
    }

    /// Appends a profile and its events (oldest first).
    pub fn push<'e>(
        &mut self,
        attributes: &Value,
        events: impl IntoIterator<Item = &'e Value>,
    ) -> Result<(), ColumnError> {
        self.attributes.push_row(attributes)?;
        for event in events {
            self.events.push_row(event)?;
        }
        self.event_ends.push(self.events.rows());
        Ok(())
    }

    /// Appends profiles `rows` (in increasing order) of `tables` with their events, copying
    /// their cells column by column: the same tables as pushing their JSON, without rebuilding it.
    pub fn push_rows_of(
        &mut self,
        tables: &ProfileTables,
        rows: &[usize],
    ) -> Result<(), ColumnError> {
        self.attributes.push_table_rows(&tables.attributes, rows)?;
        let base = self.events.rows();
        let mut event_rows = Vec::new();
        for row in rows {
            event_rows.extend(tables.event_range(*row));
            self.event_ends.push(base + event_rows.len());
        }
        self.events.push_table_rows(&tables.events, &event_rows)
    }

    /// Finishes the tables.
    pub fn finish(mut self) -> ProfileTables {
        self.event_ends.shrink_to_fit();
        ProfileTables {
            attributes: self.attributes.finish(),
            events: self.events.finish(),
            event_ends: self.event_ends,
        }
    }
}

impl ProfileTables {
    /// The tables of profiles `rows` (in that order) with their events.
    pub fn select(self, rows: &[usize]) -> ProfileTables {
        let mut event_rows = Vec::new();
        let mut event_ends = Vec::with_capacity(rows.len());
        for row in rows {
            event_rows.extend(self.event_range(*row));
            event_ends.push(event_rows.len());
        }
        ProfileTables {
            attributes: self.attributes.select(rows),
            events: self.events.select(&event_rows),
            event_ends,
        }
    }

    /// Number of profiles.
    pub fn len(&self) -> usize {
        self.event_ends.len()
    }

    /// Whether there are no profiles.
    pub fn is_empty(&self) -> bool {
        self.event_ends.is_empty()
    }

    /// The attribute table.
    pub fn attributes(&self) -> &Table {
        &self.attributes
    }

    /// The event table.
    pub fn events(&self) -> &Table {
        &self.events
    }

    /// Bytes held on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.attributes.heap_bytes() + self.events.heap_bytes() + self.event_ends.capacity() * 8
    }

    /// Rebuilds the events of profile `row` as JSON (oldest first).
    pub fn materialize_events(&self, row: usize) -> Vec<Value> {
        self.event_range(row)
            .map(|event| self.events.materialize(event))
            .collect()
    }

    fn event_range(&self, row: usize) -> std::ops::Range<usize> {
        let start = match row {
            0 => 0,
            _ => self.event_ends[row - 1],
        };
        start..self.event_ends[row]
    }

    /// Binds every path of `query` to the columns of both tables.
    pub fn bind(&self, query: &CompiledQuery) -> BoundQuery {
        let mut json_slots = 0;
        let attributes = query
            .field_paths()
            .iter()
            .map(|path| self.attributes.bind(path, &mut json_slots))
            .collect();
        let attribute_slots = json_slots;
        json_slots = 0;
        let events = query
            .field_paths()
            .iter()
            .map(|path| self.events.bind(path, &mut json_slots))
            .collect();
        BoundQuery {
            attributes,
            events,
            attribute_slots,
            event_slots: json_slots,
        }
    }

    /// A [`ProfileView`] of profile `row` for a query bound by [`ProfileTables::bind`].
    pub fn row<'s>(&'s self, bound: &'s BoundQuery, row: usize) -> ProfileRow<'s> {
        ProfileRow {
            tables: self,
            bound,
            row,
            events: self.event_range(row),
            attribute_json: OnceCell::new(),
            event_json: OnceCell::new(),
            materialized: OnceCell::new(),
            materialized_events: OnceCell::new(),
        }
    }
}

/// A query's paths resolved against [`ProfileTables`], indexed by [`FieldPath::id`].
#[derive(Debug)]
pub struct BoundQuery {
    attributes: Vec<Binding>,
    events: Vec<Binding>,
    attribute_slots: usize,
    event_slots: usize,
}

/// One profile of [`ProfileTables`] as a [`ProfileView`]. Parsed JSON cells and rebuilt rows are
/// cached for the life of the view (one evaluation).
pub struct ProfileRow<'s> {
    tables: &'s ProfileTables,
    bound: &'s BoundQuery,
    row: usize,
    events: std::ops::Range<usize>,
    attribute_json: OnceCell<Box<[OnceCell<Value>]>>,
    event_json: OnceCell<Box<[OnceCell<Value>]>>,
    materialized: OnceCell<Value>,
    materialized_events: OnceCell<Box<[OnceCell<Value>]>>,
}

fn cells(count: usize) -> Box<[OnceCell<Value>]> {
    (0..count).map(|_| OnceCell::new()).collect()
}

impl<'s> ProfileRow<'s> {
    fn read<'v>(
        &'v self,
        table: &'s Table,
        binding: Binding,
        row: usize,
        path: &FieldPath,
        json: impl FnOnce() -> &'v OnceCell<Value>,
        materialized: impl FnOnce() -> &'v Value,
    ) -> Val<'v> {
        match binding {
            Binding::Absent => Val::Null,
            Binding::Scalar(column) => table.cell(column, row).map_or(Val::Null, scalar_val),
            Binding::Json { column, rest, .. } => match table.cell(column, row) {
                None => Val::Null,
                Some(Cell::Json(text)) => {
                    let value =
                        json().get_or_init(|| serde_json::from_str(text).unwrap_or(Value::Null));
                    walk_json(value, &path.segments()[rest..])
                }
                Some(cell) if rest == path.segments().len() => scalar_val(cell),
                Some(_) => Val::Null,
            },
            Binding::Materialize => walk_json(materialized(), path.segments()),
        }
    }

    fn materialized_event(&self, index: usize) -> &Value {
        self.materialized_events
            .get_or_init(|| cells(self.events.len()))[index]
            .get_or_init(|| self.tables.events.materialize(self.events.start + index))
    }
}

impl ProfileView for ProfileRow<'_> {
    fn attribute(&self, path: &FieldPath) -> Val<'_> {
        let binding = self.bound.attributes[path.id() as usize];
        let slot = match binding {
            Binding::Json { slot, .. } => slot,
            _ => 0,
        };
        self.read(
            &self.tables.attributes,
            binding,
            self.row,
            path,
            || {
                &self
                    .attribute_json
                    .get_or_init(|| cells(self.bound.attribute_slots))[slot]
            },
            || {
                self.materialized
                    .get_or_init(|| self.tables.attributes.materialize(self.row))
            },
        )
    }

    fn event_count(&self) -> usize {
        self.events.len()
    }

    fn event_attribute(&self, index: usize, path: &FieldPath) -> Val<'_> {
        if index >= self.events.len() {
            return Val::Null;
        }
        let binding = self.bound.events[path.id() as usize];
        let slot = match binding {
            Binding::Json { slot, .. } => slot,
            _ => 0,
        };
        let slots = self.bound.event_slots;
        self.read(
            &self.tables.events,
            binding,
            self.events.start + index,
            path,
            || {
                &self
                    .event_json
                    .get_or_init(|| cells(slots * self.events.len()))[index * slots + slot]
            },
            || self.materialized_event(index),
        )
    }

    fn profile_value(&self) -> Val<'_> {
        Val::from_json(
            self.materialized
                .get_or_init(|| self.tables.attributes.materialize(self.row)),
        )
    }

    fn event_value(&self, index: usize) -> Val<'_> {
        match index < self.events.len() {
            true => Val::from_json(self.materialized_event(index)),
            false => Val::Null,
        }
    }

    fn in_segment(&self, segment_id: &str) -> bool {
        self.tables.attributes.in_segment(self.row, segment_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pql::test_vectors::{self, vectors};
    use crate::pql::{self, JsonProfile, PqlFormat};
    use crate::store::profiles::packed::to_packed;
    use serde_json::json;

    /// Rewrites every date-time string as `YYYY-MM-DDTHH:MM:SS.mmmZ`, the form kept as instants.
    fn with_canonical_times(value: &Value) -> Value {
        match value {
            Value::String(text) if text.len() > 10 => match time::parse_instant(text) {
                Some(instant) => Value::String(time::format_instant_millis(instant)),
                None => value.clone(),
            },
            Value::Array(items) => Value::Array(items.iter().map(with_canonical_times).collect()),
            Value::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(key, inner)| (key.clone(), with_canonical_times(inner)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// Encodes tables and decodes them back, checking that every truncation of the encoding and
    /// a byte changed anywhere in it are errors or other tables, never a panic.
    fn encoded_and_decoded(tables: &ProfileTables) -> ProfileTables {
        let mut bytes = Vec::new();
        tables.encode(&mut bytes);
        for cut in (0..bytes.len())
            .step_by(61)
            .chain(bytes.len().saturating_sub(40)..bytes.len())
        {
            assert!(
                ProfileTables::decode(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        for at in (0..bytes.len()).step_by(53) {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x5a;
            let _ = ProfileTables::decode(&damaged);
        }
        let (decoded, read) = ProfileTables::decode(&bytes).unwrap();
        assert_eq!(read, bytes.len());
        decoded
    }

    /// Evaluates every PQL vector on the columnar view and on the JSON view of the same fixture,
    /// with all fixtures in one table (so columns are sparse and mixed across rows, as in a real
    /// sample); returns the differences and how many event columns hold instants. The tables are
    /// evaluated after `transform` (a round trip through bytes, a copy, or nothing).
    fn vector_differences(
        fixtures: &Map<String, Value>,
        transform: fn(ProfileTables) -> ProfileTables,
    ) -> (Vec<String>, usize) {
        let vectors = vectors();
        let now = test_vectors::now(&vectors);
        let mut builder = ProfileTablesBuilder::default();
        let mut row_of = HashMap::new();
        for (name, fixture) in fixtures {
            // A row without the fixture's fields before each one keeps the columns sparse.
            builder
                .push(&json!({"other": name}), &[json!({"x": 1})])
                .unwrap();
            row_of.insert(name.clone(), builder.len());
            builder
                .push(&fixture["profile"], fixture["events"].as_array().unwrap())
                .unwrap();
        }
        let tables = transform(builder.finish());
        let instant_columns = tables
            .events
            .columns
            .iter()
            .filter(|column| matches!(column.values, Values::Time(_)))
            .count();
        let mut differences = Vec::new();
        for (source, name, query) in test_vectors::compiled(&vectors) {
            let bound = tables.bind(&query);
            let row = tables.row(&bound, row_of[name]);
            let got = query.evaluate(&row, now).map_err(|error| error.to_string());
            let fixture = &fixtures[name];
            let json_view =
                JsonProfile::new(&fixture["profile"], fixture["events"].as_array().unwrap());
            let want = query
                .evaluate(&json_view, now)
                .map_err(|error| error.to_string());
            if got != want || query.matches(&row, now) != query.matches(&json_view, now) {
                differences.push(format!("{source}: columns {got:?}, json {want:?}"));
            }
            // Column-at-a-time evaluation over the whole table agrees with row-by-row.
            let now_ms = now.timestamp_millis();
            let by_rows: Vec<u32> = (0..tables.len())
                .filter(|row| query.matches_at(&tables.row(&bound, *row), now_ms))
                .map(|row| row as u32)
                .collect();
            let prepared = tables.prepare(&query, now_ms);
            if tables.matching(&prepared, 0..tables.len()) != by_rows {
                differences.push(format!("{source}: column-at-a-time differs"));
            }
        }
        (differences, instant_columns)
    }

    #[test]
    fn every_pql_vector_evaluates_the_same_on_the_columns() {
        let vectors = vectors();
        let fixtures = vectors["fixtures"].as_object().unwrap();
        let (differences, _) = vector_differences(fixtures, |tables| tables);
        assert!(differences.is_empty(), "{}", differences.join("\n"));
        // Again with every date-time in the canonical form, held as instants by the columns.
        let canonical = with_canonical_times(&vectors["fixtures"]);
        let (differences, instant_columns) =
            vector_differences(canonical.as_object().unwrap(), |tables| tables);
        assert!(differences.is_empty(), "{}", differences.join("\n"));
        assert!(instant_columns > 0);
    }

    /// Rows copied cell by cell into another builder (how samples are cut out of the columnar
    /// snapshot), in two batches so columns appear part-way, answer every vector as the JSON does.
    #[test]
    fn copied_rows_answer_every_pql_vector_like_the_json() {
        fn copied(tables: ProfileTables) -> ProfileTables {
            let mut builder = ProfileTablesBuilder::default();
            let half = tables.len() / 2;
            let (first, second): (Vec<usize>, Vec<usize>) =
                ((0..half).collect(), (half..tables.len()).collect());
            builder.push_rows_of(&tables, &first).unwrap();
            builder.push_rows_of(&tables, &second).unwrap();
            builder.finish()
        }
        let vectors = vectors();
        let fixtures = vectors["fixtures"].as_object().unwrap();
        let (differences, _) = vector_differences(fixtures, copied);
        assert!(differences.is_empty(), "{}", differences.join("\n"));
        let canonical = with_canonical_times(&vectors["fixtures"]);
        let (differences, instant_columns) =
            vector_differences(canonical.as_object().unwrap(), copied);
        assert!(differences.is_empty(), "{}", differences.join("\n"));
        assert!(instant_columns > 0);
    }

    /// A sparse column's bitmap ends at its last present row; the encoding keeps it so.
    #[test]
    fn encoded_tables_keep_sparse_columns_that_end_early() {
        let mut builder = ProfileTablesBuilder::default();
        for row in 0..200 {
            let attributes = match row {
                3 => json!({"rare": "here", "n": row}),
                _ => json!({"n": row}),
            };
            builder.push(&attributes, &[json!({"row": row})]).unwrap();
        }
        let tables = builder.finish();
        let decoded = encoded_and_decoded(&tables);
        for row in 0..200 {
            assert_eq!(
                decoded.attributes.materialize(row),
                tables.attributes.materialize(row)
            );
            assert_eq!(
                decoded.materialize_events(row),
                tables.materialize_events(row)
            );
        }
        assert_eq!(decoded.attributes.materialize(3)["rare"], "here");
    }

    /// Tables written to bytes and read back (the columnar snapshots of segment jobs) answer every
    /// vector as the JSON does, with instants, dictionaries, sparse and mixed columns.
    #[test]
    fn encoded_tables_answer_every_pql_vector_like_the_json() {
        let vectors = vectors();
        let fixtures = vectors["fixtures"].as_object().unwrap();
        let (differences, _) = vector_differences(fixtures, |tables| encoded_and_decoded(&tables));
        assert!(differences.is_empty(), "{}", differences.join("\n"));
        let canonical = with_canonical_times(&vectors["fixtures"]);
        let (differences, instant_columns) =
            vector_differences(canonical.as_object().unwrap(), |tables| {
                encoded_and_decoded(&tables)
            });
        assert!(differences.is_empty(), "{}", differences.join("\n"));
        assert!(instant_columns > 0);
    }

    #[test]
    fn columns_take_the_narrowest_kind_and_widen_when_rows_disagree() {
        let mut builder = TableBuilder::default();
        for index in 0..300 {
            builder
                .push_row(&json!({
                    "n": index, "country": (["US", "CA"][index % 2]),
                    "at": "2024-01-02T03:04:05.678Z",
                    "mixed": if index == 7 { json!("seven") } else { json!(index) },
                    "late": if index == 250 { json!("2024-01-01T00:00:00.000Z") } else { json!(null) },
                    "when": if index == 299 { json!("yesterday") } else { json!("2024-01-01T00:00:00.000Z") },
                    "tags": ["a", "b"],
                }))
                .unwrap();
        }
        let table = builder.finish();
        let column = |name: &str| &table.columns[table.by_key[name]];
        assert!(matches!(column("n").values, Values::Int(_)));
        assert!(matches!(
            column("country").values,
            Values::Dictionary {
                codes: Codes::U8(_),
                ..
            }
        ));
        assert!(matches!(column("at").values, Values::Time(_)));
        assert!(matches!(column("mixed").values, Values::Mixed(_)));
        assert!(matches!(column("late").presence, Presence::Sparse { .. }));
        assert_eq!(
            column("late").cell(250),
            Some(Cell::Time(1_704_067_200_000))
        );
        assert_eq!(column("late").cell(249), None);
        // One non-canonical string turns an instant column back into exact strings.
        assert_eq!(
            column("when").cell(0),
            Some(Cell::Str("2024-01-01T00:00:00.000Z"))
        );
        assert_eq!(column("when").cell(299), Some(Cell::Str("yesterday")));
        assert!(matches!(column("tags").values, Values::Json { .. }));
        assert_eq!(table.materialize(7)["mixed"], json!("seven"));
        assert_eq!(table.materialize(3)["tags"], json!(["a", "b"]));
    }

    #[test]
    fn mostly_distinct_strings_are_packed_and_selections_keep_every_value() {
        let build = || {
            let mut builder = ProfileTablesBuilder::default();
            for index in 0..5000 {
                let events: Vec<Value> = (0..index % 3)
                    .map(|event| json!({"_id": format!("e{index}-{event}"), "eventType": "view"}))
                    .collect();
                let rare = (index % 1000 == 0).then_some(index);
                builder
                    .push(&json!({"email": format!("user{index}@example.com"), "n": index, "rare": rare}), &events)
                    .unwrap();
            }
            builder.finish()
        };
        let tables = build();
        let email = &tables.attributes.columns[tables.attributes.by_key["email"]];
        assert!(matches!(email.values, Values::Plain(_)));
        // Every other profile, newest first; the rare column survives only where selected.
        let rows: Vec<usize> = (0..5000).rev().step_by(2).collect();
        let selected = build().select(&rows);
        assert_eq!(selected.len(), 2500);
        for (new_row, row) in rows.iter().enumerate() {
            assert_eq!(
                selected.attributes.materialize(new_row),
                tables.attributes.materialize(*row)
            );
            assert_eq!(
                selected.event_range(new_row).len(),
                tables.event_range(*row).len()
            );
            for (a, b) in selected.event_range(new_row).zip(tables.event_range(*row)) {
                assert_eq!(selected.events.materialize(a), tables.events.materialize(b));
            }
        }
        let none = build().select(&[1, 3]);
        assert!(!none.attributes.by_key.contains_key("rare"));
    }

    #[test]
    fn rows_flattened_from_packed_bytes_equal_rows_flattened_from_values() {
        let rows = [
            json!({"_id": "e1", "timestamp": "2024-06-14T10:00:00.000Z", "eventType": "commerce.purchases",
                   "identityMap": {"ECID": [{"id": "1", "primary": true}]}, "empty": {}, "nothing": null,
                   "commerce": {"order": {"priceTotal": 12.5, "units": 3, "huge": 18446744073709551615u64}},
                   "escaped\"key": "tab\tand \u{e9}", "nested": {"deeper": {"leaf": false}},
                   "productListItems": [{"SKU": "a", "quantity": 2}, {"SKU": "b"}]}),
            json!({"_id": "e2", "timestamp": "not a time", "eventType": 7}),
            json!({}),
        ];
        let (mut from_values, mut from_text) = (TableBuilder::default(), TableBuilder::default());
        for row in &rows {
            from_values.push_row(row).unwrap();
            assert!(from_text.push_packed_row(&to_packed(row)).unwrap());
        }
        let object = to_packed(&json!({"a": 1, "b": "text"}));
        let mut trailing = object.clone();
        trailing.push(0);
        for malformed in [
            to_packed(&json!([1, 2])),
            to_packed(&json!("text")),
            to_packed(&json!(null)),
            object[..object.len() - 1].to_vec(),
            trailing,
        ] {
            assert!(
                !from_text.push_packed_row(&malformed).unwrap(),
                "{malformed:?}"
            );
        }
        let (from_values, from_text) = (from_values.finish(), from_text.finish());
        assert_eq!(from_text.rows(), rows.len());
        for row in 0..rows.len() {
            assert_eq!(from_text.materialize(row), from_values.materialize(row));
        }
        assert_eq!(
            from_text.materialize(0)["productListItems"][0]["SKU"],
            json!("a")
        );
        assert_eq!(from_text.materialize(0)["empty"], json!({}));
    }

    #[test]
    fn column_at_a_time_evaluation_matches_row_by_row() {
        let mut builder = ProfileTablesBuilder::default();
        let countries = ["US", "CA", "us", "MX"];
        for index in 0..3000usize {
            let mut profile = json!({
                "person": {"gender": (["male", "female"][index % 2]), "lastName": (["Mills", "Smith", "MIX", "Doe"][index % 4])},
                "homeAddress": {"countryCode": (countries[index % 4])},
                "loyalty": {"member": (index % 3 == 0), "points": index},
            });
            if index % 5 == 0 {
                profile["homeAddress"] = json!(null);
            }
            // A mixed column: strings and numbers (evaluated per row).
            profile["loyalty"]["level"] = match index % 11 {
                0 => json!(3),
                _ => json!(["gold", "silver"][index % 2]),
            };
            // Oldest first, with ties (the same minute) and events without a timestamp.
            let types = ["view", "add", "purchase"];
            let events: Vec<Value> = (0..index % 7)
                .map(|event| {
                    let minute = (index * 7 + event * 3) % 5 + event;
                    match (index + event) % 9 {
                        0 => json!({"eventType": (types[(index + event) % 3])}),
                        _ => json!({"eventType": (types[(index * 5 + event) % 3]),
                                    "timestamp": (format!("2024-06-01T00:{minute:02}:00.000Z"))}),
                    }
                })
                .collect();
            builder.push(&profile, &events).unwrap();
        }
        let tables = builder.finish();
        let now_ms = 1_718_452_800_000;
        for source in [
            r#"person.gender = "male" and homeAddress.countryCode = "US""#,
            r#"person.lastName.startsWith("mi", false)"#,
            r#"person.lastName.startsWith("Mi") or loyalty.member"#,
            r#"not (homeAddress.countryCode in ["US", "CA"]) and loyalty.points > 100"#,
            r#"homeAddress.countryCode.isNull() or homeAddress.countryCode != "MX""#,
            r#"loyalty.member = false and xEvent[eventType = "purchase"].count() > 0"#,
            r#"nobody.here = "x" or person.gender.equals("MALE", false)"#,
            r#"homeAddress.countryCode like "U%" and not loyalty.member"#,
            r#"loyalty.level = "gold" or loyalty.level > 2"#,
            r#"chain(xEvent, timestamp, [A: WHAT(eventType = "view"), B: WHAT(eventType = "purchase")])"#,
            r#"chain(xEvent, timestamp, [A: WHAT(eventType = "add") COUNT(2), B: WHAT(eventType.startsWith("PUR", false))])"#,
            r#"chain(xEvent, timestamp, [A: WHAT(eventType = "view") COUNT(2)]) and not loyalty.member"#,
            r#"chain(xEvent, timestamp, [A: WHAT(eventType = "add"), B: WHAT(eventType = "view"), C: WHAT(eventType = "add")])"#,
        ] {
            let query = pql::compile(&pql::parse(source, PqlFormat::Text).unwrap()).unwrap();
            let bound = tables.bind(&query);
            let by_rows: Vec<u32> = (0..tables.len())
                .filter(|row| query.matches_at(&tables.row(&bound, *row), now_ms))
                .map(|row| row as u32)
                .collect();
            let prepared = tables.prepare(&query, now_ms);
            assert!(
                !by_rows.is_empty() && by_rows.len() < tables.len(),
                "{source}"
            );
            assert_eq!(
                prepared.tabulated_leaves() > 0,
                !source.starts_with("loyalty.level"),
                "{source}"
            );
            assert_eq!(
                tables.matching(&prepared, 0..tables.len()),
                by_rows,
                "{source}"
            );
            let offset: Vec<u32> = by_rows
                .iter()
                .copied()
                .filter(|row| (100..700).contains(row))
                .collect();
            assert_eq!(tables.matching(&prepared, 100..700), offset, "{source}");
        }
    }

    #[test]
    fn canonical_instants_are_exactly_the_strings_that_render_back_unchanged() {
        let slow = |value: &str| {
            let instant = time::parse_instant(value)?;
            (time::format_instant_millis(instant) == value).then_some(instant)
        };
        let mut cases = vec![
            "2024-06-15T12:00:00.000Z",
            "0000-01-01T00:00:00.000Z",
            "9999-12-31T23:59:59.999Z",
            "2024-02-29T10:00:00.123Z",
            "2023-02-29T10:00:00.123Z",
            "2024-06-15T12:00:60.000Z",
            "2024-06-15t12:00:00.000Z",
            "2024-06-15 12:00:00.000Z",
            "2024-06-15T12:00:00.000z",
            "2024-06-15T24:00:00.000Z",
            "2024-13-15T12:00:00.000Z",
            "2024-06-31T12:00:00.000Z",
            "2024-06-15T12:00:00.0000",
            "2024-06-15T12:00:00+0000",
            "+024-06-15T12:00:00.000Z",
            "2024-06-15T12:00:00Z",
            "2024-06-15",
            "",
            "2024-06-15T12:60:00.000Z",
        ];
        let generated: Vec<String> = (0..2000i64)
            .map(|step| time::format_instant_millis(step * 7_919_999_937 - 40_000_000_000_000))
            .collect();
        cases.extend(generated.iter().map(String::as_str));
        for case in cases {
            assert_eq!(canonical_instant(case), slow(case), "{case}");
        }
    }
}
