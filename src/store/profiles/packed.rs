//! Packed JSON: the binary form in which the store keeps event bodies.
//!
//! A JSON value becomes a tag byte followed by its payload: integers as zigzag or plain LEB128
//! varints, doubles as 8 little-endian bytes, strings as a varint length and UTF-8 bytes, arrays
//! and objects as the byte length of their contents (4 bytes, little-endian), their item count
//! (a varint) and their items (objects: each key as a string without a tag, then its value).
//!
//! Why not JSON text: segmentation reads a few fields of every event of every profile. Text has
//! to be lexed character by character, even to skip a field; packed values are read without
//! parsing numbers or unescaping strings, and a container that no query reads is skipped in one
//! step by its byte length. Packing is also cheaper than printing JSON at ingest (no escaping).
//! The size is about that of compact JSON text: what quotes, colons and commas no longer take,
//! container lengths and 8-byte doubles take back.
//!
//! [`PackedDeserializer`] is a serde deserializer over packed bytes, so the same visitors that
//! read JSON text (`serde_json::Value`, the sample's column flattening, `IgnoredAny`) read packed
//! values, borrowing strings from the stored bytes. Packing then deserializing gives back the
//! identical `serde_json::Value`, numbers included (`u64`, negative `i64` and `f64` are kept
//! apart as serde_json keeps them).

use serde::de::{self, DeserializeSeed, Visitor};
use serde_json::Value;

use super::identity::JsonView;

const NULL: u8 = 0;
const FALSE: u8 = 1;
const TRUE: u8 = 2;
/// A negative integer, zigzag varint.
const NEGATIVE: u8 = 3;
/// A non-negative integer, varint.
const POSITIVE: u8 = 4;
const DOUBLE: u8 = 5;
const STRING: u8 = 6;
const ARRAY: u8 = 7;
const OBJECT: u8 = 8;

/// Appends the packed form of `value` to `out`.
pub fn pack(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.push(NULL),
        Value::Bool(false) => out.push(FALSE),
        Value::Bool(true) => out.push(TRUE),
        Value::Number(number) => pack_number(number, out),
        Value::String(text) => {
            out.push(STRING);
            string(text, out);
        }
        Value::Array(items) => container(ARRAY, items.len(), out, |out| {
            for item in items {
                pack(item, out);
            }
        }),
        Value::Object(fields) => container(OBJECT, fields.len(), out, |out| {
            for (key, item) in fields {
                string(key, out);
                pack(item, out);
            }
        }),
    }
}

/// Returns the packed form of `value`.
pub fn to_packed(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    pack(value, &mut out);
    out
}

/// Reads a packed value back as a `serde_json::Value`.
pub fn to_value(bytes: &[u8]) -> Result<Value, PackedError> {
    let mut deserializer = PackedDeserializer::new(bytes);
    let value = serde::Deserialize::deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

/// Inlined for its one-byte case, the usual one.
#[inline]
fn varint(value: u64, out: &mut Vec<u8>) {
    // Most varints (string lengths, item counts) take one byte: pushed, where copying a slice of
    // a length known only at run time was a call to memcpy (perf: a tenth of the packing time).
    if value < 0x80 {
        out.push(value as u8);
    } else {
        long_varint(value, out);
    }
}

/// [`varint`] of a value that takes more than one byte.
#[inline(never)]
fn long_varint(value: u64, out: &mut Vec<u8>) {
    let mut bytes = [0u8; 10];
    let length = varint_into(value, &mut bytes);
    out.extend_from_slice(&bytes[..length]);
}

/// Writes the LEB128 varint of `value` at the start of `bytes`; returns its length.
fn varint_into(mut value: u64, bytes: &mut [u8; 10]) -> usize {
    let mut length = 0;
    while value >= 0x80 {
        bytes[length] = (value as u8) | 0x80;
        value >>= 7;
        length += 1;
    }
    bytes[length] = value as u8;
    length + 1
}

/// Decodes a zigzag varint's value (see [`pack`]).
fn unzigzag(zigzag: u64) -> i64 {
    ((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64)
}

fn pack_number(number: &serde_json::Number, out: &mut Vec<u8>) {
    if let Some(positive) = number.as_u64() {
        out.push(POSITIVE);
        varint(positive, out);
    } else if let Some(negative) = number.as_i64() {
        out.push(NEGATIVE);
        varint(((negative << 1) ^ (negative >> 63)) as u64, out);
    } else {
        out.push(DOUBLE);
        let double = number.as_f64().unwrap_or(f64::NAN);
        out.extend_from_slice(&double.to_le_bytes());
    }
}

fn string(text: &str, out: &mut Vec<u8>) {
    string_bytes(text.as_bytes(), out);
}

fn string_bytes(text: &[u8], out: &mut Vec<u8>) {
    varint(text.len() as u64, out);
    out.extend_from_slice(text);
}

/// [`string_bytes`] of `row[range]`. A string of up to 16 bytes with 16 bytes of the row from its
/// start is copied as those 16 bytes and cut back: a copy of a length known when compiling is a
/// few moves, where a copy of any other length was a call to `memcpy`, which branches on the
/// length (cachegrind put a quarter of the lexer's mispredicted branches there).
#[inline(always)]
fn row_string_bytes(row: &[u8], range: std::ops::Range<usize>, out: &mut Vec<u8>) {
    const WINDOW: usize = 16;
    let length = range.len();
    match row.get(range.start..range.start + WINDOW) {
        Some(window) if length <= WINDOW => {
            varint(length as u64, out);
            let end = out.len() + length;
            out.extend_from_slice(window);
            out.truncate(end);
        }
        _ => string_bytes(&row[range], out),
    }
}

fn container(tag: u8, count: usize, out: &mut Vec<u8>, items: impl FnOnce(&mut Vec<u8>)) {
    out.push(tag);
    let length_at = out.len();
    out.extend_from_slice(&[0; 4]);
    let start = out.len();
    varint(count as u64, out);
    items(out);
    // Containers over 4 GiB cannot occur: a stored row is far below that.
    let length = u32::try_from(out.len() - start).unwrap_or(u32::MAX);
    out[length_at..start].copy_from_slice(&length.to_le_bytes());
}

/// What [`transcode_text`] saw besides the value itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TranscodeFlags {
    /// A `null` occurs somewhere in the value.
    pub has_null: bool,
    /// An object repeats a key: `serde_json::Value` keeps one entry where the packed bytes hold
    /// both, so such a value must be packed from a `Value` to match it.
    pub has_duplicate_key: bool,
}

/// A `u64` with each of its eight bytes 1.
const ONES: u64 = 0x0101_0101_0101_0101;
/// A `u64` with the high bit of each of its eight bytes set.
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `word` below `n` (n <= 128), eight bytes at once. The lowest set
/// bit is exact; a bit above a byte that is below `n` may be set wrongly, which is enough to find
/// the first such byte or to tell whether any byte is.
#[inline]
fn bytes_below(word: u64, n: u64) -> u64 {
    word.wrapping_sub(ONES * n) & !word & HIGHS
}

/// The length of the run of string bytes at the start of `bytes` that need no attention: up to
/// the first quote, backslash or control character (or the end). Eight bytes at a time: the byte
/// loop was the lexer's slowest part. Used for rows with escapes or control bytes, whose quotes
/// [`index_quotes`] cannot vouch for.
fn plain_run(bytes: &[u8]) -> usize {
    let mut at = 0;
    while let Some(word) = bytes.get(at..at + 8) {
        let word = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        // The lowest set bit is exact, which is all that is read.
        let special = bytes_below(word ^ (ONES * u64::from(b'"')), 1)
            | bytes_below(word ^ (ONES * u64::from(b'\\')), 1)
            | bytes_below(word, 0x20);
        if special != 0 {
            return at + (special.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    let rest = &bytes[at..];
    at + rest
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .unwrap_or(rest.len())
}

/// Whether `byte` is JSON whitespace (a form feed, for one, is not).
#[inline]
fn is_json_whitespace(byte: u8) -> bool {
    matches!(byte, b' ' | b'\n' | b'\r' | b'\t')
}

/// Nesting deeper than this is not taken: the caller's slow way (serde_json, whose limit is 128)
/// reads it or words the error.
const TEXT_TRANSCODER_DEPTH: usize = 100;

/// Packs JSON text straight into `out`, without building a `serde_json::Value`: the bytes are
/// those [`pack`] gives for the parsed value, unless [`TranscodeFlags::has_duplicate_key`] is set.
/// `None` (and `out` left with partial bytes) when the lexer does not plainly take the text (bad
/// JSON, bytes that are not UTF-8, nesting past 100 levels, a number serde_json's parser
/// refuses): the caller then goes the slow way, which words what is wrong. A row is checked as
/// UTF-8 only when the pass that indexes its quotes sees a byte with its high bit set (most rows
/// are ASCII). `scratch` keeps its buffers from call to call, and the entries of a top-level
/// object ([`TranscodeScratch::top_fields`]).
///
/// Why: batch ingestion packs every row, and building the `Value` (an allocation per string,
/// array and object, hashed object keys) and freeing it cost more than parsing does; a lexer of
/// its own costs less than serde_json's visitor interface (the event phase: ~10% less CPU).
/// Noting the top-level entries as they are written spares a walk over the packed row, and reused
/// buffers spare allocations per row.
pub fn transcode_text(
    text: &[u8],
    out: &mut Vec<u8>,
    scratch: &mut TranscodeScratch,
) -> Option<TranscodeFlags> {
    let TranscodeScratch {
        keys,
        unescaped,
        top,
        quote_words,
    } = scratch;
    keys.clear();
    top.clear();
    // Whitespace around the value means nothing, and rows often end in a newline: the lexer
    // reads the value alone, so that [`index_quotes`] does not take the newline for a control
    // byte in a string.
    let start = text.iter().position(|&byte| !is_json_whitespace(byte))?;
    let end = text.iter().rposition(|&byte| !is_json_whitespace(byte))? + 1;
    let text = &text[start..end];
    let row = index_quotes(text, quote_words);
    if row.maybe_non_ascii {
        std::str::from_utf8(text).ok()?;
    }
    let mut transcoder = TextTranscoder {
        text,
        at: 0,
        out,
        flags: TranscodeFlags::default(),
        keys,
        unescaped,
        top,
        quotes: (!row.has_escape_or_control).then_some(quote_words.as_slice()),
    };
    transcoder.value(0)?;
    (transcoder.at == transcoder.text.len()).then_some(transcoder.flags)
}

/// What [`index_quotes`] saw in a row besides its quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RowBytes {
    /// A backslash or a byte below 0x20 occurs: the quote index does not tell where strings end
    /// (an escaped quote), nor that their bytes are allowed.
    has_escape_or_control: bool,
    /// A byte has its high bit set: the row must be checked as UTF-8.
    maybe_non_ascii: bool,
}

/// Sets in `quote_words` one bit per quote of `text` (bit `i % 64` of word `i / 64` for the byte
/// at `i`), and tells whether the row holds backslashes, control bytes or non-ASCII bytes.
///
/// Why: finding where each string ends byte by byte (eight bytes a step, [`plain_run`]) was the
/// lexer's costliest part, its loop exits mispredicted at every string end. Most rows are compact
/// JSON without escapes: for them this one pass over the row, 64 bytes a step, finds every
/// string's end, and the lexer then jumps from quote to quote (see [`next_quote`]); it need not
/// check a string's bytes either, since a row without control bytes has none in its strings, and
/// a row with non-ASCII bytes is checked as UTF-8 whole.
fn index_quotes(text: &[u8], quote_words: &mut Vec<u64>) -> RowBytes {
    #[cfg(target_arch = "x86_64")]
    let scan = |blocks: std::slice::ChunksExact<'_, u8>, tail: &[u8; 64], words: &mut Vec<u64>| {
        // SAFETY: SSE2, the one feature `index_blocks_sse2` enables, is part of x86-64: every
        // x86-64 processor has it.
        unsafe { index_blocks_sse2(blocks, tail, words) }
    };
    #[cfg(not(target_arch = "x86_64"))]
    let scan = index_blocks_portable;
    index_quotes_with(text, quote_words, scan)
}

/// [`index_quotes`] with the pass `scan` over the row's 64-byte blocks and its tail, padded to
/// a block with spaces (neither quotes nor special).
fn index_quotes_with(
    text: &[u8],
    quote_words: &mut Vec<u64>,
    scan: impl FnOnce(std::slice::ChunksExact<'_, u8>, &[u8; 64], &mut Vec<u64>) -> RowBytes,
) -> RowBytes {
    quote_words.clear();
    let blocks = text.chunks_exact(64);
    let mut tail = [b' '; 64];
    tail[..blocks.remainder().len()].copy_from_slice(blocks.remainder());
    scan(blocks, &tail, quote_words)
}

/// [`index_quotes`]'s pass over the row's 64-byte blocks and its padded tail, with SSE2: 16 bytes
/// a compare. (A loop over bytes left for the compiler to vectorise was slower than the
/// eight-byte lexer it replaced: the compiler took two bytes a step.)
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
fn index_blocks_sse2(
    blocks: std::slice::ChunksExact<'_, u8>,
    tail: &[u8; 64],
    quote_words: &mut Vec<u64>,
) -> RowBytes {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8, _mm_setzero_si128,
    };
    let quote = _mm_set1_epi8(b'"' as i8);
    let backslash = _mm_set1_epi8(b'\\' as i8);
    let last_control = _mm_set1_epi8(0x1f);
    // Lanes set where a backslash or control byte was seen; every byte or'ed together.
    let mut special = _mm_setzero_si128();
    let mut high = _mm_setzero_si128();
    for block in blocks.chain([tail.as_slice()]) {
        let mut word = 0u64;
        for (lane_at, lane) in block.chunks_exact(16).enumerate() {
            // SAFETY: `lane` is 16 readable bytes, and an unaligned load asks no more.
            let bytes = unsafe { _mm_loadu_si128(lane.as_ptr().cast()) };
            let quotes = _mm_movemask_epi8(_mm_cmpeq_epi8(bytes, quote)) as u16;
            word |= u64::from(quotes) << (16 * lane_at);
            // A byte is a control byte when its unsigned minimum with 0x1f is itself.
            let control = _mm_cmpeq_epi8(_mm_min_epu8(bytes, last_control), bytes);
            special = _mm_or_si128(special, control);
            special = _mm_or_si128(special, _mm_cmpeq_epi8(bytes, backslash));
            high = _mm_or_si128(high, bytes);
        }
        quote_words.push(word);
    }
    RowBytes {
        has_escape_or_control: _mm_movemask_epi8(special) != 0,
        maybe_non_ascii: _mm_movemask_epi8(high) != 0,
    }
}

/// [`index_quotes`]'s pass elsewhere: eight bytes at a time in a `u64`. Compiled on x86-64 too
/// for the tests, which hold it to the SSE2 pass.
#[cfg(any(not(target_arch = "x86_64"), test))]
fn index_blocks_portable(
    blocks: std::slice::ChunksExact<'_, u8>,
    tail: &[u8; 64],
    quote_words: &mut Vec<u64>,
) -> RowBytes {
    let mut special = 0u64;
    let mut high = 0u64;
    for block in blocks.chain([tail.as_slice()]) {
        let mut quote_bits = 0u64;
        for (word_at, word) in block.chunks_exact(8).enumerate() {
            let word = u64::from_le_bytes(word.try_into().expect("eight bytes"));
            // Exactly the bytes equal to a quote: a byte of `apart` is 0 there, and adding 0x7f
            // to its low seven bits sets its high bit everywhere else.
            let apart = word ^ (ONES * u64::from(b'"'));
            let quotes = !(((apart & !HIGHS) + !HIGHS) | apart) & HIGHS;
            // Gathers the eight high bits into one byte, bit i from byte i.
            let packed = (quotes >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56;
            quote_bits |= packed << (8 * word_at);
            special |= bytes_below(word ^ (ONES * u64::from(b'\\')), 1) | bytes_below(word, 0x20);
            high |= word;
        }
        quote_words.push(quote_bits);
    }
    RowBytes {
        has_escape_or_control: special != 0,
        maybe_non_ascii: high & HIGHS != 0,
    }
}

/// The position of the first quote at or after `from` in the row whose quotes `quote_words`
/// holds ([`index_quotes`]); `None` when no quote follows.
fn next_quote(quote_words: &[u64], from: usize) -> Option<usize> {
    let mut word_at = from / 64;
    let mut word = quote_words.get(word_at)? & (!0u64 << (from % 64));
    while word == 0 {
        word_at += 1;
        word = *quote_words.get(word_at)?;
    }
    Some(word_at * 64 + word.trailing_zeros() as usize)
}

/// Buffers of [`transcode_text`], kept between calls.
#[derive(Debug, Default)]
pub struct TranscodeScratch {
    /// Byte ranges in `out` of the keys of the objects being transcoded, innermost last.
    keys: Vec<std::ops::Range<usize>>,
    /// Where a string with escapes is unescaped.
    unescaped: Vec<u8>,
    /// The entries of the top-level object: each key's bytes and its packed value, as byte
    /// ranges of `out`.
    top: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)>,
    /// The row's quotes, a bit per byte ([`index_quotes`]).
    quote_words: Vec<u64>,
}

impl TranscodeScratch {
    /// The entries of the top-level object of the last [`transcode_text`] that succeeded, as
    /// (key bytes, packed value) in `out`: what [`fields`] reads from it; none when the value
    /// was not an object.
    pub fn top_fields<'b>(&self, out: &'b [u8]) -> impl Iterator<Item = (&'b [u8], &'b [u8])> {
        self.top
            .iter()
            .map(|(key, value)| (&out[key.clone()], &out[value.clone()]))
    }
}

/// The lexer of [`transcode_text`]: JSON text straight to packed bytes, giving up (`None`) on
/// anything that is not plainly valid JSON in UTF-8.
struct TextTranscoder<'a> {
    text: &'a [u8],
    at: usize,
    out: &'a mut Vec<u8>,
    flags: TranscodeFlags,
    /// [`TranscodeScratch::keys`].
    keys: &'a mut Vec<std::ops::Range<usize>>,
    /// [`TranscodeScratch::unescaped`].
    unescaped: &'a mut Vec<u8>,
    /// [`TranscodeScratch::top`].
    top: &'a mut Vec<(std::ops::Range<usize>, std::ops::Range<usize>)>,
    /// The row's quotes when its strings hold no escapes or control bytes, and its non-ASCII
    /// bytes (if any) are checked already: strings then end at the next quote.
    quotes: Option<&'a [u64]>,
}

impl<'a> TextTranscoder<'a> {
    fn skip_whitespace(&mut self) {
        while self
            .text
            .get(self.at)
            .is_some_and(|&byte| is_json_whitespace(byte))
        {
            self.at += 1;
        }
    }

    /// Skips whitespace and then `byte` if it comes next; tells whether it did. The byte is
    /// looked for first: rows are mostly compact JSON, whose next byte is the one expected.
    fn eat(&mut self, byte: u8) -> bool {
        if self.text.get(self.at) != Some(&byte) {
            self.skip_whitespace();
            if self.text.get(self.at) != Some(&byte) {
                return false;
            }
        }
        self.at += 1;
        true
    }

    /// Reads what follows an item of a container closed by `close`: a comma (`false`: another
    /// item follows) or `close` (`true`); `None` for anything else. One look at the next byte,
    /// where trying `close` and then a comma looked twice (the lexer's hottest lines).
    fn after_item(&mut self, close: u8) -> Option<bool> {
        let next = *self.text.get(self.at)?;
        self.at += 1;
        match next {
            b',' => Some(false),
            _ if is_json_whitespace(next) => {
                self.skip_whitespace();
                self.after_item(close)
            }
            _ if next == close => Some(true),
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8], tag: u8) -> Option<()> {
        self.text[self.at..].starts_with(word).then_some(())?;
        self.at += word.len();
        self.out.push(tag);
        Some(())
    }

    /// Inlined into the containers' loops: a call per value (saving and restoring registers)
    /// was a tenth of the lexer's instructions; nesting recurses through [`Self::object`] and
    /// [`Self::array`].
    #[inline(always)]
    fn value(&mut self, depth: usize) -> Option<()> {
        let mut next = *self.text.get(self.at)?;
        // Looked at only when no value starts here: mostly compact JSON, whose values follow
        // their colon or comma at once.
        if is_json_whitespace(next) {
            self.skip_whitespace();
            next = *self.text.get(self.at)?;
        }
        match next {
            b'"' => {
                self.out.push(STRING);
                self.string().map(drop)
            }
            b'{' => self.object(depth + 1),
            b'[' => self.array(depth + 1),
            b't' => self.literal(b"true", TRUE),
            b'f' => self.literal(b"false", FALSE),
            b'n' => {
                self.flags.has_null = true;
                self.literal(b"null", NULL)
            }
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn array(&mut self, depth: usize) -> Option<()> {
        if depth > TEXT_TRANSCODER_DEPTH {
            return None;
        }
        self.at += 1;
        let length_at = open_container(self.out, ARRAY);
        let mut count = 0;
        if !self.eat(b']') {
            loop {
                self.value(depth)?;
                count += 1;
                if self.after_item(b']')? {
                    break;
                }
            }
        }
        close_container(self.out, length_at, count).ok()
    }

    fn object(&mut self, depth: usize) -> Option<()> {
        if depth > TEXT_TRANSCODER_DEPTH {
            return None;
        }
        self.at += 1;
        let length_at = open_container(self.out, OBJECT);
        let first_key = self.keys.len();
        let mut key_bits = 0;
        let mut count = 0;
        if !self.eat(b'}') {
            loop {
                // A key's quote is looked for first, as in `eat`.
                if self.text.get(self.at) != Some(&b'"') {
                    self.skip_whitespace();
                    (self.text.get(self.at) == Some(&b'"')).then_some(())?;
                }
                let key_at = self.out.len();
                let key_bytes = self.string()?;
                self.flags.has_duplicate_key |=
                    note_key(self.out, self.keys, first_key, &mut key_bits, key_at);
                self.eat(b':').then_some(())?;
                let value_at = self.out.len();
                self.value(depth)?;
                if depth == 1 {
                    self.top
                        .push((value_at - key_bytes..value_at, value_at..self.out.len()));
                }
                count += 1;
                if self.after_item(b'}')? {
                    break;
                }
            }
        }
        self.keys.truncate(first_key);
        close_container(self.out, length_at, count).ok()
    }

    /// Writes the string starting at the opening quote as a packed string (length and bytes);
    /// returns its length in bytes.
    #[inline(always)]
    fn string(&mut self) -> Option<usize> {
        let start = self.at + 1;
        if let Some(quotes) = self.quotes {
            let end = next_quote(quotes, start)?;
            row_string_bytes(self.text, start..end, self.out);
            self.at = end + 1;
            return Some(end - start);
        }
        self.unindexed_string(start)
    }

    /// [`Self::string`] in a row whose quotes are not indexed: its end found by [`plain_run`].
    #[inline(never)]
    fn unindexed_string(&mut self, start: usize) -> Option<usize> {
        let end = start + plain_run(&self.text[start.min(self.text.len())..]);
        match *self.text.get(end)? {
            b'"' => {}
            b'\\' => return self.escaped_string(start),
            // Control characters must be escaped in JSON strings.
            _ => return None,
        }
        string_bytes(&self.text[start..end], self.out);
        self.at = end + 1;
        Some(end - start)
    }

    /// [`TextTranscoder::string`] for a string with escapes, unescaped first.
    fn escaped_string(&mut self, start: usize) -> Option<usize> {
        let text = self.text;
        let unescaped = &mut *self.unescaped;
        unescaped.clear();
        let mut at = start;
        loop {
            match *text.get(at)? {
                b'"' => break,
                b'\\' => {
                    let escape = *text.get(at + 1)?;
                    at += 2;
                    let byte = match escape {
                        b'"' => b'"',
                        b'\\' => b'\\',
                        b'/' => b'/',
                        b'b' => 0x08,
                        b'f' => 0x0c,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'u' => {
                            let high = hex4(text, at)?;
                            at += 4;
                            let code = match high {
                                0xd800..=0xdbff => {
                                    // A leading surrogate must be followed by an escaped trailing one.
                                    (text.get(at..at + 2)? == b"\\u").then_some(())?;
                                    let low = hex4(text, at + 2)?;
                                    (0xdc00..=0xdfff).contains(&low).then_some(())?;
                                    at += 6;
                                    0x10000
                                        + ((u32::from(high) - 0xd800) << 10)
                                        + (u32::from(low) - 0xdc00)
                                }
                                0xdc00..=0xdfff => return None,
                                _ => u32::from(high),
                            };
                            let character = char::from_u32(code)?;
                            let mut utf8 = [0u8; 4];
                            unescaped
                                .extend_from_slice(character.encode_utf8(&mut utf8).as_bytes());
                            continue;
                        }
                        _ => return None,
                    };
                    unescaped.push(byte);
                }
                0..=0x1f => return None,
                byte => {
                    unescaped.push(byte);
                    at += 1;
                }
            }
        }
        // The row is UTF-8 (checked first), and escapes add whole characters without splitting a
        // raw one (a backslash is ASCII): the unescaped bytes are UTF-8 too.
        string_bytes(unescaped, self.out);
        self.at = at + 1;
        Some(unescaped.len())
    }

    /// Plain non-negative integers are read here; every other number by serde_json's own parser,
    /// so that what a number becomes (`u64`, negative `i64` or `f64`, rounding) is serde_json's.
    fn number(&mut self) -> Option<()> {
        let start = self.at;
        let mut end = start;
        while let Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') = self.text.get(end) {
            end += 1;
        }
        let token = &self.text[start..end];
        self.at = end;
        let plain = token.len() <= 19
            && token.iter().all(u8::is_ascii_digit)
            && (token[0] != b'0' || token.len() == 1);
        if plain {
            let value = token
                .iter()
                .fold(0u64, |value, digit| value * 10 + u64::from(digit - b'0'));
            self.out.push(POSITIVE);
            varint(value, self.out);
            return Some(());
        }
        // The token is ASCII: UTF-8.
        let number: serde_json::Number = std::str::from_utf8(token).ok()?.parse().ok()?;
        pack_number(&number, self.out);
        Some(())
    }
}

/// The value of the four hexadecimal digits at `at` in `text` (a `\u` escape).
fn hex4(text: &[u8], at: usize) -> Option<u16> {
    let digits = std::str::from_utf8(text.get(at..at + 4)?).ok()?;
    digits
        .bytes()
        .all(|b| b.is_ascii_hexdigit())
        .then(|| u16::from_str_radix(digits, 16).ok())?
}

/// Bytes kept for a container's item count while its items are transcoded: one, which holds any
/// count below 128; a larger count moves the items up to make room when the container ends.
/// (Keeping three bytes and closing up the unused two moved every container's items back when it
/// ended; the gain was below what 100k-profile ingest runs can tell apart.)
const COUNT_SLOT: usize = 1;

/// Notes the key just written to `out` from `start` among the keys of the object being
/// transcoded (`keys[first_key..]`, ranges in `out`); tells whether the object had it already.
/// `key_bits` holds one bit per key of the object, chosen by the key's length and last byte:
/// only a key whose bit is set already is compared with the others. Why: comparing every key
/// with all before it cost a `memcmp` call per pair of equally long keys, and keys differ.
fn note_key(
    out: &[u8],
    keys: &mut Vec<std::ops::Range<usize>>,
    first_key: usize,
    key_bits: &mut u64,
    start: usize,
) -> bool {
    let key = start..out.len();
    let last = out.last().copied().unwrap_or(0);
    let bit = 1u64 << ((key.len() as u64 * 7 + u64::from(last)) % 64);
    // Each key's bytes start with its length, so the byte after it (for a key under 128
    // bytes, its first) is compared before the whole keys, as in [`is_key`].
    let repeated = *key_bits & bit != 0
        && keys[first_key..].iter().any(|known| {
            known.len() == key.len()
                && out.get(known.start + 1) == out.get(key.start + 1)
                && out[known.clone()] == out[key.clone()]
        });
    *key_bits |= bit;
    keys.push(key);
    repeated
}

/// Writes a container's tag and room for its length and count; returns where its length goes.
fn open_container(out: &mut Vec<u8>, tag: u8) -> usize {
    out.push(tag);
    let length_at = out.len();
    out.extend_from_slice(&[0; 4 + COUNT_SLOT]);
    length_at
}

/// Writes the count and length of the container opened at `length_at`; fails past 4 GiB.
/// Inlined: the lexer calls it for every container, whose count mostly fills the slot.
#[inline]
fn close_container(
    out: &mut Vec<u8>,
    length_at: usize,
    count: usize,
) -> Result<(), std::num::TryFromIntError> {
    let count_at = length_at + 4;
    if COUNT_SLOT == 1 && count < 0x80 {
        // No copy of a slice of unknown length.
        out[count_at] = count as u8;
    } else {
        write_long_count(out, count_at, count);
    }
    let length = u32::try_from(out.len() - count_at)?;
    out[length_at..count_at].copy_from_slice(&length.to_le_bytes());
    Ok(())
}

/// Writes at `count_at` a count that may take more than its slot, moving the items up to make
/// room.
#[inline(never)]
fn write_long_count(out: &mut Vec<u8>, count_at: usize, count: usize) {
    let items_at = count_at + COUNT_SLOT;
    let mut count_bytes = [0u8; 10];
    let count_len = varint_into(count as u64, &mut count_bytes);
    if count_len > COUNT_SLOT {
        let items_end = out.len();
        let grow = count_len - COUNT_SLOT;
        out.resize(items_end + grow, 0);
        out.copy_within(items_at..items_end, items_at + grow);
    }
    out[count_at..count_at + count_len].copy_from_slice(&count_bytes[..count_len]);
}

/// Returns the packed value of `key` in the packed object `object`, or `None` when `object` is
/// not an object, lacks the key or is malformed.
pub fn field<'a>(object: &'a [u8], key: &str) -> Option<&'a [u8]> {
    fields(object)?.find_map(|(name, value)| is_key(name, key.as_bytes()).then_some(value))
}

/// Whether the key `name` is `key`. The first bytes are compared before the slices: names of
/// the same length mostly differ there, and comparing slices calls `memcmp` (a tenth of the
/// checks' time when keys were looked up in the rows of batch ingestion).
#[inline]
pub fn is_key(name: &[u8], key: &[u8]) -> bool {
    name.len() == key.len() && name.first() == key.first() && name == key
}

/// Returns the packed value at `path` (keys of nested objects) under the packed object `object`,
/// or `None` when one of them is missing; `object` itself for an empty path.
pub fn field_at<'a>(object: &'a [u8], path: &[&str]) -> Option<&'a [u8]> {
    path.iter().try_fold(object, |node, key| field(node, key))
}

/// Returns the entries of the packed object `object` as (key bytes, packed value), or `None` when
/// it is not an object; a malformed entry ends them. Keys are compared as bytes, not checked as
/// UTF-8: a lookup only needs equality.
pub fn fields(object: &[u8]) -> Option<impl Iterator<Item = (&[u8], &[u8])>> {
    let mut reader = Cursor { bytes: object };
    if reader.byte()? != OBJECT {
        return None;
    }
    let count = reader.container()?;
    Some((0..count).map_while(move |_| {
        let length = reader.length()?;
        let name = reader.take(length)?;
        let value_at = reader.bytes;
        reader.skip()?;
        Some((name, &value_at[..value_at.len() - reader.bytes.len()]))
    }))
}

/// The steps of reading packed bytes, `None` on anything malformed (no error to build): what
/// lookups ([`fields`], [`items`], [`node`]) use, and what [`PackedDeserializer`] words errors for.
///
/// Why: the checks of batch ingestion look up a few fields of every event; through the
/// deserializer's steps, which return serde errors, those lookups were ~20% of a worker's time
/// (`prepare_event_rows` 10–14% faster through these).
struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    #[inline]
    fn take(&mut self, length: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.bytes.split_at_checked(length)?;
        self.bytes = tail;
        Some(head)
    }

    #[inline]
    fn byte(&mut self) -> Option<u8> {
        let (&byte, tail) = self.bytes.split_first()?;
        self.bytes = tail;
        Some(byte)
    }

    /// A varint as [`PackedDeserializer`] reads it (at most ten bytes).
    #[inline]
    fn varint(&mut self) -> Option<u64> {
        let first = self.byte()?;
        if first < 0x80 {
            return Some(u64::from(first));
        }
        let mut value = u64::from(first & 0x7f);
        for shift in (7..64).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    #[inline]
    fn length(&mut self) -> Option<usize> {
        usize::try_from(self.varint()?).ok()
    }

    /// A string: its length, then its bytes, which must be UTF-8.
    #[inline]
    fn str(&mut self) -> Option<&'a str> {
        let length = self.length()?;
        std::str::from_utf8(self.take(length)?).ok()
    }

    #[inline]
    fn u32_length(&mut self) -> Option<usize> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize)
    }

    /// A container's byte length and item count, as [`PackedDeserializer`] reads them; returns
    /// the count.
    #[inline]
    fn container(&mut self) -> Option<usize> {
        let length = self.u32_length()?;
        if self.bytes.len() < length {
            return None;
        }
        self.length()
    }

    /// Skips one value; containers in one step by their byte length.
    #[inline]
    fn skip(&mut self) -> Option<()> {
        match self.byte()? {
            NULL | FALSE | TRUE => {}
            NEGATIVE | POSITIVE => {
                self.varint()?;
            }
            DOUBLE => {
                self.take(8)?;
            }
            STRING => {
                let length = self.length()?;
                self.take(length)?;
            }
            ARRAY | OBJECT => {
                let length = self.u32_length()?;
                self.take(length)?;
            }
            _ => return None,
        }
        Some(())
    }
}

/// A packed value seen without decoding it into a `serde_json::Value`: scalars are read, strings
/// borrowed, containers left packed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Node<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A negative integer.
    Negative(i64),
    /// A non-negative integer.
    Positive(u64),
    /// A number that is not an integer.
    Double(f64),
    /// A string.
    String(&'a str),
    /// An array, still packed (the whole value, tag included).
    Array(&'a [u8]),
    /// An object, still packed (the whole value, tag included).
    Object(&'a [u8]),
}

/// Reads the packed value at the start of `bytes` as a [`Node`], or `None` when it is malformed.
///
/// Why: checking the type of a field needs its tag and at most a string, not a `Value` built
/// (and freed) for every checked field of every ingested event.
pub fn node(bytes: &[u8]) -> Option<Node<'_>> {
    let mut reader = Cursor { bytes };
    Some(match reader.byte()? {
        NULL => Node::Null,
        FALSE => Node::Bool(false),
        TRUE => Node::Bool(true),
        NEGATIVE => Node::Negative(unzigzag(reader.varint()?)),
        POSITIVE => Node::Positive(reader.varint()?),
        DOUBLE => Node::Double(f64::from_le_bytes(reader.take(8)?.try_into().ok()?)),
        STRING => Node::String(reader.str()?),
        ARRAY => Node::Array(bytes),
        OBJECT => Node::Object(bytes),
        _ => return None,
    })
}

/// Returns the items of the packed array `array` (each a packed value), or `None` when it is not
/// an array; a malformed item ends them.
pub fn items(array: &[u8]) -> Option<impl Iterator<Item = &[u8]>> {
    let mut reader = Cursor { bytes: array };
    if reader.byte()? != ARRAY {
        return None;
    }
    let count = reader.container()?;
    Some((0..count).map_while(move |_| {
        let value_at = reader.bytes;
        reader.skip()?;
        Some(&value_at[..value_at.len() - reader.bytes.len()])
    }))
}

/// A packed value read through [`JsonView`], so identities are checked on packed bytes by the
/// code that checks parsed rows.
#[derive(Debug, Clone, Copy)]
pub struct Packed<'a>(pub &'a [u8]);

impl<'a> JsonView<'a> for Packed<'a> {
    fn entries(self) -> Option<Vec<(&'a str, Self)>> {
        // Keys not in UTF-8 (never written by `pack` or `transcode_text`) make it no object.
        fields(self.0)?
            .map(|(key, value)| Some((std::str::from_utf8(key).ok()?, Packed(value))))
            .collect()
    }

    fn items(self) -> Option<Vec<Self>> {
        Some(items(self.0)?.map(Packed).collect())
    }

    fn get(self, key: &str) -> Option<Self> {
        field(self.0, key).map(Packed)
    }

    fn as_str(self) -> Option<&'a str> {
        match node(self.0)? {
            Node::String(text) => Some(text),
            _ => None,
        }
    }

    fn as_bool(self) -> Option<bool> {
        match node(self.0)? {
            Node::Bool(flag) => Some(flag),
            _ => None,
        }
    }
}

/// Why packed bytes could not be read: they are truncated or corrupt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("packed value: {0}")]
pub struct PackedError(String);

impl de::Error for PackedError {
    fn custom<T: std::fmt::Display>(message: T) -> Self {
        PackedError(message.to_string())
    }
}

/// A serde deserializer reading one packed value (see the module documentation).
pub struct PackedDeserializer<'de> {
    cursor: Cursor<'de>,
}

/// The error of reading malformed packed bytes.
fn malformed(what: &str) -> PackedError {
    PackedError(format!("malformed packed value: {what}"))
}

impl<'de> PackedDeserializer<'de> {
    /// Reads the value at the start of `bytes`.
    pub fn new(bytes: &'de [u8]) -> Self {
        Self {
            cursor: Cursor { bytes },
        }
    }

    /// Fails unless every byte was read.
    pub fn end(&self) -> Result<(), PackedError> {
        match self.cursor.bytes.is_empty() {
            true => Ok(()),
            false => Err(PackedError("trailing bytes".into())),
        }
    }

    fn take(&mut self, length: usize) -> Result<&'de [u8], PackedError> {
        self.cursor
            .take(length)
            .ok_or_else(|| malformed("truncated"))
    }

    fn byte(&mut self) -> Result<u8, PackedError> {
        self.cursor.byte().ok_or_else(|| malformed("truncated"))
    }

    fn varint(&mut self) -> Result<u64, PackedError> {
        self.cursor
            .varint()
            .ok_or_else(|| malformed("truncated or overlong varint"))
    }

    fn str(&mut self) -> Result<&'de str, PackedError> {
        self.cursor
            .str()
            .ok_or_else(|| malformed("truncated string or invalid utf-8"))
    }

    /// Reads a container's byte length and item count; returns the count.
    fn container(&mut self) -> Result<usize, PackedError> {
        self.cursor
            .container()
            .ok_or_else(|| malformed("truncated container"))
    }

    /// Skips one value; containers in one step by their byte length.
    fn skip(&mut self) -> Result<(), PackedError> {
        self.cursor.skip().ok_or_else(|| malformed("value"))
    }
}

impl<'de> de::Deserializer<'de> for &mut PackedDeserializer<'de> {
    type Error = PackedError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PackedError> {
        match self.byte()? {
            NULL => visitor.visit_unit(),
            FALSE => visitor.visit_bool(false),
            TRUE => visitor.visit_bool(true),
            NEGATIVE => visitor.visit_i64(unzigzag(self.varint()?)),
            POSITIVE => visitor.visit_u64(self.varint()?),
            DOUBLE => {
                let bytes = self.take(8)?.try_into().expect("8 bytes");
                visitor.visit_f64(f64::from_le_bytes(bytes))
            }
            STRING => visitor.visit_borrowed_str(self.str()?),
            ARRAY => {
                let remaining = self.container()?;
                visitor.visit_seq(Items {
                    deserializer: self,
                    remaining,
                })
            }
            OBJECT => {
                let remaining = self.container()?;
                visitor.visit_map(Items {
                    deserializer: self,
                    remaining,
                })
            }
            tag => Err(malformed(&format!("unknown tag {tag}"))),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PackedError> {
        match self.cursor.bytes.first() {
            Some(&NULL) => {
                self.byte()?;
                visitor.visit_none()
            }
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PackedError> {
        self.skip()?;
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf unit
        unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier
    }
}

/// The items of an array, or the entries of an object, being read.
struct Items<'a, 'de> {
    deserializer: &'a mut PackedDeserializer<'de>,
    remaining: usize,
}

impl<'de> de::SeqAccess<'de> for Items<'_, 'de> {
    type Error = PackedError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, PackedError> {
        if self.remaining == 0 {
            return Ok(None);
        }
        self.remaining -= 1;
        seed.deserialize(&mut *self.deserializer).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.remaining)
    }
}

impl<'de> de::MapAccess<'de> for Items<'_, 'de> {
    type Error = PackedError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, PackedError> {
        if self.remaining == 0 {
            return Ok(None);
        }
        self.remaining -= 1;
        let key = self.deserializer.str()?;
        seed.deserialize(de::value::BorrowedStrDeserializer::new(key))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, PackedError> {
        seed.deserialize(&mut *self.deserializer)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn arbitrary_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((".{0,8}", inner), 0..6)
                    .prop_map(|fields| Value::Object(fields.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn packing_round_trips_every_json_value(value in arbitrary_json()) {
            let packed = to_packed(&value);
            prop_assert_eq!(to_value(&packed).unwrap(), value.clone());
            // Skipping reads exactly the value's bytes.
            let mut deserializer = PackedDeserializer::new(&packed);
            deserializer.skip().unwrap();
            prop_assert!(deserializer.end().is_ok());
            // Every strict prefix is reported as truncated, never read as something else.
            for cut in 0..packed.len() {
                prop_assert!(to_value(&packed[..cut]).is_err());
            }
        }
    }

    proptest! {
        #[test]
        fn transcoding_json_text_gives_the_bytes_of_packing_its_value(value in arbitrary_json()) {
            for text in [value.to_string(), serde_json::to_string_pretty(&value).unwrap()] {
                let mut out = Vec::new();
                let flags = transcode(text.as_bytes(), &mut out).unwrap();
                let reparsed: Value = serde_json::from_str(&text).unwrap();
                if !flags.has_duplicate_key {
                    prop_assert_eq!(&out, &to_packed(&reparsed));
                }
                prop_assert_eq!(flags.has_null, has_null(&reparsed));
            }
        }
    }

    /// `value` as JSON text with every string character outside printable ASCII, and every
    /// `/`, escaped as `\uXXXX` (surrogate pairs above the BMP) and every `e` as `\u0065`: the
    /// escapes serde_json never writes.
    fn escaped_json(value: &Value) -> String {
        fn escaped(text: &str) -> String {
            let mut out = String::from("\"");
            for character in text.chars() {
                match character {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '/' => out.push_str("\\/"),
                    ' '..='~' if character != 'e' => out.push(character),
                    _ => {
                        let mut units = [0u16; 2];
                        for unit in character.encode_utf16(&mut units) {
                            out.push_str(&format!("\\u{unit:04X}"));
                        }
                    }
                }
            }
            out.push('"');
            out
        }
        match value {
            Value::String(text) => escaped(text),
            Value::Array(items) => {
                let items: Vec<String> = items.iter().map(escaped_json).collect();
                format!("[{}]", items.join(","))
            }
            Value::Object(fields) => {
                let fields: Vec<String> = fields
                    .iter()
                    .map(|(key, item)| format!("{}: {}", escaped(key), escaped_json(item)))
                    .collect();
                format!("{{ {} }}", fields.join(" ,\n"))
            }
            other => other.to_string(),
        }
    }

    proptest! {
        #[test]
        fn the_text_transcoder_reads_escapes_as_serde_json_does(value in arbitrary_json()) {
            let text = escaped_json(&value);
            let mut out = Vec::new();
            let mut scratch = TranscodeScratch::default();
            let flags = transcode_text(text.as_bytes(), &mut out, &mut scratch);
            prop_assert!(flags.is_some(), "{}", text);
            let reparsed: Value = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(&reparsed, &value);
            // The top-level entries noted on the way are those a walk over the bytes finds.
            let walked: Vec<_> = fields(&out).map(Iterator::collect).unwrap_or_default();
            prop_assert_eq!(scratch.top_fields(&out).collect::<Vec<_>>(), walked);
            if !flags.unwrap().has_duplicate_key {
                prop_assert_eq!(out, to_packed(&value));
            }
        }

        /// On any text, the text transcoder gives up or gives what serde_json reads: it never
        /// takes text serde_json rejects.
        #[test]
        fn the_text_transcoder_agrees_with_serde_json_or_gives_up(
            text in "[\\[\\]{}\",: 0-9.eE+\\-\\\\/ubfnrtlsaD8C\u{e9}\u{1F600}\n\u{1}]{0,24}"
        ) {
            let mut fast = Vec::new();
            if let Some(flags) = transcode(text.as_bytes(), &mut fast) {
                let by_serde = serde_json::from_str::<Value>(&text);
                prop_assert!(by_serde.is_ok(), "{}", text);
                assert_packs_as(flags, &fast, &by_serde.unwrap());
            }
        }
    }

    #[test]
    fn the_text_transcoder_reads_what_serde_json_reads_and_gives_up_on_the_rest() {
        let agree = [
            r#"{"a": "\u00e9\ud83d\ude00\/\b\f\n\r\t\"\\", "b": [0, -0, 1.5e3, -7, 18446744073709551615, 18446744073709551616, 12345678901234567890, 1E2, -0.0]}"#,
            " [ true , false , null , { } , [ ] , \"\" ] ",
        ];
        for text in agree {
            let mut fast = Vec::new();
            let flags = transcode(text.as_bytes(), &mut fast).expect(text);
            assert!(!flags.has_duplicate_key, "{text}");
            assert_packs_as(flags, &fast, &serde_json::from_str(text).unwrap());
        }
        let deep = format!("{}{}", "[".repeat(101), "]".repeat(101));
        let give_up = [
            r#""\ud83d""#,
            r#""\ude00""#,
            r#""\ud83d\u0041""#,
            r#""\x""#,
            "\"a\u{1}\"",
            "01",
            "1.",
            "-",
            "1e400",
            "[1,]",
            "{\"a\" 1}",
            "tru",
            "{} {}",
            deep.as_str(),
        ];
        for text in give_up {
            let mut out = Vec::new();
            assert_eq!(
                transcode_text(text.as_bytes(), &mut out, &mut TranscodeScratch::default()),
                None,
                "{text}"
            );
        }
    }

    #[test]
    fn the_text_transcoder_takes_utf8_strings_and_gives_up_on_other_bytes() {
        // Non-ASCII text in strings and keys, in the first word, across word boundaries, after
        // escapes and in the bytes left after the last whole word.
        let agree = [
            "\"\u{e9}\"",
            "{\"cl\u{e9}\": \"a\u{1F600}bcdefgh\u{e9}ijklmnop\u{4e2d}\"}",
            "[\"abcdefg\u{e9}\", \"\\n\u{e9}\\t\u{1F600}\", \"abcdefghijklmno\u{e9}\"]",
        ];
        for text in agree {
            let mut out = Vec::new();
            let flags = transcode(text.as_bytes(), &mut out).expect(text);
            assert_packs_as(flags, &out, &serde_json::from_str(text).unwrap());
        }
        let give_up: [&[u8]; 9] = [
            b"\"\xff\"",
            b"\"abcdefg\xc3\"",
            b"\"abcdefgh\xc3\xa9\xa9\"",
            b"\"\xe2\x82\"",
            b"\"\xc0\xaf\"",
            b"\"\xed\xa0\x80\"",
            b"\"\\n\xc3\"",
            b"{\"\xc3\\u00a9\": 1}",
            b"[\xc3\xa9]",
        ];
        for text in give_up {
            assert!(serde_json::from_slice::<Value>(text).is_err());
            assert_eq!(transcode(text, &mut Vec::new()), None, "{text:?}");
        }
    }

    proptest! {
        /// On any bytes, UTF-8 or not, the text transcoder gives up or gives what serde_json
        /// reads.
        #[test]
        fn the_text_transcoder_agrees_with_serde_json_on_bytes(
            text in proptest::collection::vec(
                prop_oneof![
                    3 => proptest::sample::select(b"[]{}\",: 0a\\u".to_vec()),
                    1 => proptest::sample::select(
                        vec![0x80u8, 0xa9, 0xbf, 0xc3, 0xe2, 0xed, 0xf0, 0xff],
                    ),
                ],
                0..24,
            )
        ) {
            let mut fast = Vec::new();
            if let Some(flags) = transcode(&text, &mut fast) {
                let by_serde = serde_json::from_slice::<Value>(&text);
                prop_assert!(by_serde.is_ok(), "{:?}", text);
                assert_packs_as(flags, &fast, &by_serde.unwrap());
            }
        }

        /// The quote index has a bit for every quote and no other byte, in both scanners, and
        /// both tell backslashes, control bytes and high bytes alike: rows of any length, so
        /// that whole blocks, padded tails and the edge between them are all met.
        #[test]
        fn both_quote_scanners_find_every_quote_and_every_special_byte(
            text in proptest::collection::vec(
                prop_oneof![
                    4 => proptest::sample::select(b"\"a: {,".to_vec()),
                    1 => proptest::sample::select(vec![b'\\', 0x00, 0x09, 0x0a, 0x1f, 0x20, 0x7f, 0x80, 0xff]),
                ],
                0..300,
            )
        ) {
            let mut sse = Vec::new();
            let row = index_quotes(&text, &mut sse);
            let mut portable = Vec::new();
            prop_assert_eq!(index_quotes_with(&text, &mut portable, index_blocks_portable), row);
            prop_assert_eq!(&portable, &sse);
            prop_assert_eq!(sse.len(), text.len() / 64 + 1);
            for (at, byte) in text.iter().enumerate() {
                prop_assert_eq!(sse[at / 64] >> (at % 64) & 1 == 1, *byte == b'"', "byte {}", at);
            }
            prop_assert_eq!(sse.last().map(|last| last >> (text.len() % 64)), Some(0));
            prop_assert_eq!(
                row.has_escape_or_control,
                text.iter().any(|&byte| byte == b'\\' || byte < 0x20)
            );
            prop_assert_eq!(row.maybe_non_ascii, !text.is_ascii());
        }

        /// Long strings (across the 64-byte words of the quote index, and longer than the
        /// 16-byte copy window) in rows with and without escapes read as serde_json reads them.
        #[test]
        fn long_strings_transcode_as_serde_json_reads_them(
            mut strings in proptest::collection::vec("[a-z\u{e9}\u{1F600}]{0,150}", 1..6),
            padding in 0usize..70,
            escaped in any::<bool>(),
        ) {
            if escaped {
                strings[0].push('"');
            }
            let row = json!({"pad": "p".repeat(padding), "strings": strings});
            let text = row.to_string();
            let mut out = Vec::new();
            let flags = transcode(text.as_bytes(), &mut out);
            prop_assert!(flags.is_some(), "{}", text);
            assert_packs_as(flags.unwrap(), &out, &row);
        }
    }

    #[test]
    fn rows_around_their_json_whitespace_and_control_bytes_in_strings() {
        // Whitespace around the value is no part of it, in rows with and without escapes; a
        // control byte in a string fails the row either way, and a form feed is no whitespace.
        for text in ["\n {\"a\": \"b\"}\r\n", "\t[\"a\\n\"] ", " 1 "] {
            let mut out = Vec::new();
            let flags = transcode(text.as_bytes(), &mut out).expect(text);
            assert_packs_as(flags, &out, &serde_json::from_str(text).unwrap());
        }
        for text in [
            "{\"a\": \"b\tc\"}",
            "[\"\\n\", \"\u{1}\"]",
            "\u{c}{}",
            "  ",
            "",
        ] {
            assert!(serde_json::from_str::<Value>(text).is_err());
            assert_eq!(
                transcode(text.as_bytes(), &mut Vec::new()),
                None,
                "{text:?}"
            );
        }
    }

    /// [`transcode_text`] with fresh buffers.
    fn transcode(text: &[u8], out: &mut Vec<u8>) -> Option<TranscodeFlags> {
        transcode_text(text, out, &mut TranscodeScratch::default())
    }

    /// Checks that `packed`, transcoded with `flags`, is the packing of `value` (serde_json's
    /// reading of the same text), unless the text repeats a key (`Value` keeps one entry).
    fn assert_packs_as(flags: TranscodeFlags, packed: &[u8], value: &Value) {
        if !flags.has_duplicate_key {
            assert_eq!(packed, to_packed(value));
            assert_eq!(flags.has_null, has_null(value));
        }
    }

    fn has_null(value: &Value) -> bool {
        match value {
            Value::Null => true,
            Value::Array(items) => items.iter().any(has_null),
            Value::Object(fields) => fields.values().any(has_null),
            _ => false,
        }
    }

    #[test]
    fn transcoding_flags_repeated_keys_per_object_and_rejects_bad_json() {
        let mut out = Vec::new();
        let nested_same_keys = br#"{"a": {"a": 1, "b": [{"a": 2}]}, "b": 2}"#;
        assert_eq!(
            transcode(nested_same_keys, &mut out).unwrap(),
            TranscodeFlags::default()
        );
        out.clear();
        let repeated = br#"{"a": {"x": 1, "y\u0000": 2, "x": 3}}"#;
        assert!(transcode(repeated, &mut out).unwrap().has_duplicate_key);
        // Escaped keys are compared unescaped.
        out.clear();
        let escaped = br#"{"\u0061": 1, "a": 2}"#;
        assert!(transcode(escaped, &mut out).unwrap().has_duplicate_key);
        for bad in [&b"{"[..], b"[1,]", b"{} {}", b"nul"] {
            out.clear();
            assert!(transcode(bad, &mut out).is_none());
        }
        // Counts of 128 and more need more than the one byte kept for them: the items move up,
        // in containers nested inside others and holding others, and after them.
        let wide_object: serde_json::Map<String, Value> =
            (0..200).map(|n| (format!("k{n}"), json!([n]))).collect();
        let cases = [
            (0..300).collect::<Vec<_>>().into(),
            (0..20_000).collect::<Vec<_>>().into(),
            json!({"a": [vec![0; 127], vec![1; 128], {"b": (0..16_384).collect::<Vec<_>>()}], "z": 1}),
            json!([wide_object, "after"]),
        ];
        for long in cases {
            out.clear();
            transcode(long.to_string().as_bytes(), &mut out).unwrap();
            assert_eq!(out, to_packed(&long));
            assert_eq!(to_value(&out).unwrap(), long);
        }
    }

    #[test]
    fn fields_are_found_by_key_in_packed_objects() {
        let value = json!({"a": [1, {"b": 2}], "b": {"c": "x"}, "d": null});
        let packed = to_packed(&value);
        let b = field(&packed, "b").unwrap();
        assert_eq!(to_value(b).unwrap(), json!({"c": "x"}));
        assert_eq!(to_value(field(b, "c").unwrap()).unwrap(), json!("x"));
        assert_eq!(to_value(field(&packed, "d").unwrap()).unwrap(), Value::Null);
        assert_eq!(field(&packed, "c"), None);
        assert_eq!(field(field(&packed, "a").unwrap(), "b"), None);
        assert_eq!(field(&packed[..packed.len() - 1], "d"), None);
    }

    #[test]
    fn items_and_nodes_read_packed_values_as_they_were() {
        let value = json!([1, -2, 2.5, "x", true, null, [3], {"k": "v"}]);
        let packed = to_packed(&value);
        let packed_items: Vec<&[u8]> = items(&packed).unwrap().collect();
        let back: Vec<Value> = packed_items
            .iter()
            .map(|item| to_value(item).unwrap())
            .collect();
        assert_eq!(Value::Array(back), value);
        let nodes: Vec<Node> = packed_items
            .iter()
            .map(|item| node(item).unwrap())
            .collect();
        assert_eq!(
            nodes[..6],
            [
                Node::Positive(1),
                Node::Negative(-2),
                Node::Double(2.5),
                Node::String("x"),
                Node::Bool(true),
                Node::Null
            ]
        );
        assert!(matches!(nodes[6], Node::Array(_)));
        assert!(matches!(nodes[7], Node::Object(_)));
        assert!(items(&to_packed(&json!({"k": 1}))).is_none());
        assert_eq!(node(&[]), None);
        assert_eq!(node(&[99]), None);
    }

    #[test]
    fn numbers_keep_their_serde_json_kind_and_order_is_kept() {
        let value = json!({"z": 1, "a": -1, "m": 1.0, "big": u64::MAX, "min": i64::MIN,
                           "nested": {"list": [null, true, "x"], "empty": {}}});
        let back = to_value(&to_packed(&value)).unwrap();
        assert_eq!(back.to_string(), value.to_string());
        assert!(back["m"].is_f64() && back["z"].is_u64() && back["a"].is_i64());
    }

    #[test]
    fn a_packed_event_is_about_the_size_of_its_compact_json() {
        let event = json!({
            "_id": "0b5f7c1e-8a57-4e0a-9a51-3b1f0f0d2f11", "timestamp": "2024-05-01T10:00:00.000Z",
            "eventType": "commerce.purchases",
            "commerce": {"purchases": {"value": 1.0}, "order": {"priceTotal": 129.99}},
            "productListItems": [{"SKU": "SKU-1042", "quantity": 2, "priceTotal": 64.99}],
            "identityMap": {"ECID": [{"id": "12345678901234567890123456789012345678", "primary": true}]}
        });
        let (packed, text) = (to_packed(&event).len(), event.to_string().len());
        assert!(
            packed * 10 <= text * 11,
            "packed {packed} bytes, text {text}"
        );
    }

    #[test]
    fn corrupt_bytes_are_errors() {
        assert!(to_value(&[42]).is_err());
        assert!(to_value(&[STRING, 2, 0xff, 0xfe]).is_err());
        assert!(to_value(&[NULL, NULL]).is_err());
    }
}
