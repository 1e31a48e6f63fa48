//! A byte encoding of [`ProfileTables`], so columnar tables built once can be kept on disk and
//! read back without flattening the profiles again (the columnar snapshots of
//! [`crate::snapshot`]).
//!
//! The layout is the in-memory one written out column by column: little-endian integers,
//! length-prefixed arrays, dictionaries and their codes as they are. Reading copies each array
//! once and checks every length and every string's UTF-8, so a damaged input is an error, never
//! a panic or a wrong table. (Integrity against torn writes is the container's job: the snapshot
//! file carries a checksum.)

use super::{Codes, Column, OwnedCell, Presence, ProfileTables, Strings, Table, Values};

/// The version byte of encoded tables (2: dictionaries before their codes).
const FORMAT_VERSION: u8 = 2;

/// Why encoded tables could not be read.
#[derive(Debug, thiserror::Error)]
#[error("encoded columnar tables are corrupt: {0}")]
pub struct DecodeError(pub(crate) String);

impl ProfileTables {
    /// Appends the encoding of these tables to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut writer = Writer(out);
        writer.u8(FORMAT_VERSION);
        writer.u64(self.event_ends.len() as u64);
        for end in &self.event_ends {
            writer.u64(*end as u64);
        }
        writer.table(&self.attributes);
        writer.table(&self.events);
    }

    /// Reads tables written by [`ProfileTables::encode`] from the start of `bytes`, returning
    /// them with the number of bytes read.
    pub fn decode(bytes: &[u8]) -> Result<(ProfileTables, usize), DecodeError> {
        let mut reader = Reader::new(bytes);
        let version = reader.u8()?;
        if version != FORMAT_VERSION {
            return Err(DecodeError(format!("unknown format version {version}")));
        }
        let profiles = reader.len(8)?;
        let mut event_ends = Vec::with_capacity(profiles);
        for _ in 0..profiles {
            event_ends.push(reader.u64()? as usize);
        }
        let attributes = reader.table()?;
        let events = reader.table()?;
        let ordered = event_ends.windows(2).all(|pair| pair[0] <= pair[1]);
        if attributes.rows != profiles
            || !ordered
            || event_ends.last().is_some_and(|last| *last != events.rows)
            || (profiles == 0 && events.rows != 0)
        {
            return Err(DecodeError("row counts disagree".into()));
        }
        let tables = ProfileTables {
            attributes,
            events,
            event_ends,
        };
        Ok((tables, reader.at))
    }
}

/// Appends little-endian integers and length-prefixed strings to a buffer.
pub(crate) struct Writer<'a>(pub(crate) &'a mut Vec<u8>);

impl Writer<'_> {
    /// Appends a byte.
    pub(crate) fn u8(&mut self, value: u8) {
        self.0.push(value);
    }

    /// Appends a `u64`.
    pub(crate) fn u64(&mut self, value: u64) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    /// Appends a string with its length.
    pub(crate) fn str(&mut self, value: &str) {
        self.u64(value.len() as u64);
        self.0.extend_from_slice(value.as_bytes());
    }

    fn table(&mut self, table: &Table) {
        self.u64(table.rows as u64);
        self.u64(table.columns.len() as u64);
        for column in &table.columns {
            self.u64(column.segments.len() as u64);
            for segment in &column.segments {
                self.str(segment);
            }
            match &column.presence {
                Presence::All => self.u8(0),
                Presence::Sparse { words, .. } => {
                    self.u8(1);
                    self.array(words, |word| word.to_le_bytes());
                }
            }
            self.values(&column.values);
        }
    }

    fn array<T: Copy, const N: usize>(&mut self, values: &[T], bytes: impl Fn(T) -> [u8; N]) {
        self.u64(values.len() as u64);
        self.0.reserve(values.len() * N);
        for value in values {
            self.0.extend_from_slice(&bytes(*value));
        }
    }

    fn strings(&mut self, strings: &Strings) {
        self.array(&strings.ends, u32::to_le_bytes);
        self.str(&strings.bytes);
    }

    fn codes(&mut self, codes: &Codes) {
        match codes {
            Codes::U8(codes) => {
                self.u8(1);
                self.array(codes, |code| [code]);
            }
            Codes::U16(codes) => {
                self.u8(2);
                self.array(codes, u16::to_le_bytes);
            }
            Codes::U32(codes) => {
                self.u8(4);
                self.array(codes, u32::to_le_bytes);
            }
        }
    }

    fn values(&mut self, values: &Values) {
        match values {
            Values::Bool(values) => {
                self.u8(0);
                self.array(values, |value| [u8::from(value)]);
            }
            Values::Int(values) => {
                self.u8(1);
                self.array(values, i64::to_le_bytes);
            }
            Values::Double(values) => {
                self.u8(2);
                self.array(values, f64::to_le_bytes);
            }
            Values::Time(values) => {
                self.u8(3);
                self.array(values, i64::to_le_bytes);
            }
            Values::Dictionary { codes, dictionary } => {
                self.u8(4);
                self.strings(dictionary);
                self.codes(codes);
            }
            Values::Plain(strings) => {
                self.u8(5);
                self.strings(strings);
            }
            Values::Json { codes, dictionary } => {
                self.u8(6);
                self.strings(dictionary);
                self.codes(codes);
            }
            Values::Mixed(cells) => {
                self.u8(7);
                self.u64(cells.len() as u64);
                for cell in cells {
                    match cell {
                        OwnedCell::Bool(value) => {
                            self.u8(0);
                            self.u8(u8::from(*value));
                        }
                        OwnedCell::Int(value) => {
                            self.u8(1);
                            self.0.extend_from_slice(&value.to_le_bytes());
                        }
                        OwnedCell::Double(value) => {
                            self.u8(2);
                            self.0.extend_from_slice(&value.to_le_bytes());
                        }
                        OwnedCell::Time(value) => {
                            self.u8(3);
                            self.0.extend_from_slice(&value.to_le_bytes());
                        }
                        OwnedCell::Str(value) => {
                            self.u8(4);
                            self.str(value);
                        }
                        OwnedCell::Json(value) => {
                            self.u8(5);
                            self.str(value);
                        }
                    }
                }
            }
        }
    }
}

/// Reads what a [`Writer`] wrote, checking every length against the bytes left.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`.
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    /// Bytes read so far.
    pub(crate) fn position(&self) -> usize {
        self.at
    }

    /// Reads `len` raw bytes.
    pub(crate) fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .at
            .checked_add(len)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| DecodeError("truncated".into()))?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    /// Reads a byte.
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.fixed::<1>()?[0])
    }

    /// Reads a `u64`.
    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.fixed()?))
    }

    /// A count of items of `item_bytes` each, checked against the bytes left so a corrupt count
    /// cannot ask for a huge allocation.
    pub(crate) fn len(&mut self, item_bytes: usize) -> Result<usize, DecodeError> {
        let len = usize::try_from(self.u64()?).map_err(|_| DecodeError("length".into()))?;
        match len.checked_mul(item_bytes.max(1)) {
            Some(bytes) if bytes <= self.bytes.len() - self.at => Ok(len),
            _ => Err(DecodeError("length past the end".into())),
        }
    }

    /// Reads a string with its length.
    pub(crate) fn str(&mut self) -> Result<&'a str, DecodeError> {
        let len = self.len(1)?;
        std::str::from_utf8(self.take(len)?).map_err(|_| DecodeError("invalid UTF-8".into()))
    }

    fn array<T, const N: usize>(
        &mut self,
        value: impl Fn([u8; N]) -> T,
    ) -> Result<Vec<T>, DecodeError> {
        let len = self.len(N)?;
        let bytes = self.take(len * N)?;
        Ok(bytes
            .chunks_exact(N)
            .map(|chunk| value(chunk.try_into().expect("chunks of N bytes")))
            .collect())
    }

    fn strings(&mut self) -> Result<Strings, DecodeError> {
        let ends = self.array(u32::from_le_bytes)?;
        let bytes = self.str()?.to_owned();
        let mut start = 0;
        for end in &ends {
            let end = *end as usize;
            if end < start || end > bytes.len() || !bytes.is_char_boundary(end) {
                return Err(DecodeError("string bounds".into()));
            }
            start = end;
        }
        Ok(Strings { ends, bytes })
    }

    fn codes(&mut self, dictionary_len: usize) -> Result<Codes, DecodeError> {
        let codes = match self.u8()? {
            1 => Codes::U8(self.array(|[code]| code)?),
            2 => Codes::U16(self.array(u16::from_le_bytes)?),
            4 => Codes::U32(self.array(u32::from_le_bytes)?),
            width => return Err(DecodeError(format!("code width {width}"))),
        };
        if (0..codes.len()).any(|slot| codes.get(slot) >= dictionary_len) {
            return Err(DecodeError("code past its dictionary".into()));
        }
        Ok(codes)
    }

    /// A dictionary then its codes, each checked against the dictionary's length.
    fn coded(&mut self) -> Result<(Codes, Strings), DecodeError> {
        let dictionary = self.strings()?;
        let codes = self.codes(dictionary.len())?;
        Ok((codes, dictionary))
    }

    fn values(&mut self) -> Result<Values, DecodeError> {
        Ok(match self.u8()? {
            0 => Values::Bool(self.array(|[byte]: [u8; 1]| byte != 0)?),
            1 => Values::Int(self.array(i64::from_le_bytes)?),
            2 => Values::Double(self.array(f64::from_le_bytes)?),
            3 => Values::Time(self.array(i64::from_le_bytes)?),
            4 => {
                let (codes, dictionary) = self.coded()?;
                Values::Dictionary { codes, dictionary }
            }
            5 => Values::Plain(self.strings()?),
            6 => {
                let (codes, dictionary) = self.coded()?;
                Values::Json { codes, dictionary }
            }
            7 => {
                let count = self.len(2)?;
                let mut cells = Vec::with_capacity(count);
                for _ in 0..count {
                    cells.push(match self.u8()? {
                        0 => OwnedCell::Bool(self.u8()? != 0),
                        1 => OwnedCell::Int(i64::from_le_bytes(self.fixed()?)),
                        2 => OwnedCell::Double(f64::from_le_bytes(self.fixed()?)),
                        3 => OwnedCell::Time(i64::from_le_bytes(self.fixed()?)),
                        4 => OwnedCell::Str(self.str()?.into()),
                        5 => OwnedCell::Json(self.str()?.into()),
                        tag => return Err(DecodeError(format!("cell tag {tag}"))),
                    });
                }
                Values::Mixed(cells)
            }
            tag => return Err(DecodeError(format!("values tag {tag}"))),
        })
    }

    fn table(&mut self) -> Result<Table, DecodeError> {
        let rows = usize::try_from(self.u64()?).map_err(|_| DecodeError("rows".into()))?;
        let count = self.len(3)?;
        let mut columns = Vec::with_capacity(count);
        for _ in 0..count {
            let segment_count = self.len(8)?;
            let mut segments = Vec::with_capacity(segment_count);
            for _ in 0..segment_count {
                segments.push(Box::<str>::from(self.str()?));
            }
            if segments.is_empty() {
                return Err(DecodeError("column without a path".into()));
            }
            let presence = match self.u8()? {
                0 => Presence::All,
                1 => {
                    let words = self.array(u64::from_le_bytes)?;
                    // Builders stop the bitmap at the last present row.
                    if words.len() > rows.div_ceil(64) {
                        return Err(DecodeError("presence bitmap length".into()));
                    }
                    Presence::from_words(words, rows)
                }
                tag => return Err(DecodeError(format!("presence tag {tag}"))),
            };
            let values = self.values()?;
            let present = match &presence {
                Presence::All => rows,
                Presence::Sparse { words, .. } => {
                    words.iter().map(|word| word.count_ones() as usize).sum()
                }
            };
            if values.len() != present {
                return Err(DecodeError("values and presence disagree".into()));
            }
            columns.push(Column {
                segments: segments.into_boxed_slice(),
                presence,
                values,
            });
        }
        Ok(Table::from_columns(rows, columns))
    }
}
