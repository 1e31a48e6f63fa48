//! Event chunks and person headers of large writes, kept in append-only segment files beside
//! the B-tree.
//!
//! # Why
//!
//! A bulk load writes gigabytes of sealed event chunks (2.9 GB for 1M generated profiles). Put
//! in redb, every byte went through its page cache: copied into 4 KiB pages, evicted with one
//! `pwrite` per page once the write buffer filled, read back and checksummed at commit. On the
//! writing thread, the one serial stage of an ingest, that was most of the time (perf over a 1M
//! load: page copies, evictions, zeroed fresh pages and cache reads). A segment file takes a
//! flush's chunks in one sequential `write`; the B-tree keeps a 17-byte pointer per chunk, so it
//! stays small enough for the cache.
//!
//! Person headers of large writes go the same way, for the same reason: the records of a bulk
//! load are hundreds of megabytes of headers (800 bytes each for generated CRM records), which in
//! the B-tree spilled out of the cache, were read back and checksummed at commit, and made up
//! half of the writing thread's time over 500k records.
//!
//! Writes of fewer bytes (a streamed event, a small batch) keep their chunks in the B-tree:
//! a pointer would cost a file read per chunk for no gain.
//!
//! Appends of 256 KiB or more (a bulk load's flushes) are written directly to the device
//! (`O_DIRECT`) where the file system allows it, from a 4 KiB-aligned offset: copying them into
//! page-cache pages first cost the writing thread more than anything else it did over the
//! records of a bulk load ([`LogWriter::append_direct`]).
//!
//! # Durability
//!
//! A write appends its chunks to the active segment, fsyncs it, and then commits the redb
//! transaction that holds both the pointers and the segment's new end (in `profile_meta`). Bytes
//! past the committed end belong to a write that did not commit (a crash, an abandoned batch):
//! they are cut off when the write is abandoned or the store next opens, so a pointer never
//! names bytes that are not durable, and committed bytes never change, which is what lets read
//! snapshots keep reading them while later writes append.
//!
//! # Space
//!
//! A chunk that compaction rewrites, a header that a later write replaces, or the values of a
//! deleted person stay in their segment as dead bytes, as do the few bytes skipped to align a
//! direct append and those padding its last block. The store counts each segment's live bytes (in `profile_meta`, with the writes that
//! change them), and reclaims a full segment once half of it is dead: its live values are copied
//! to the active segment and re-pointed in one write, then the file is removed
//! ([`SegmentLog::retire`]). Read snapshots taken before keep reading the removed file through
//! the handle the log holds open for them.

use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

/// The folder of the segment files, inside the store's directory.
pub const SEGMENTS_DIR: &str = "event-segments";

/// A segment takes appends until it holds this many bytes; the next append starts a new one, so
/// files stay of a size that is easy to copy, and reclaiming space rewrites one at a time.
const SEGMENT_BYTES: u64 = 1 << 30;

/// A point in the segment log: the end of the bytes written to segment `segment`. Segment ids
/// start at 1; segment 0 with end 0 is the empty log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LogEnd {
    /// The id of the segment.
    pub segment: u32,
    /// The bytes written to it.
    pub end: u64,
}

/// Where a sealed value (an event chunk or a person header) lies in the segment log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentLocation {
    /// The id of its segment.
    pub segment: u32,
    /// Its first byte in the segment.
    pub offset: u64,
    /// Its length in bytes.
    pub len: u32,
}

/// The segment files of one store: appended to by one write at a time, read by any thread.
#[derive(Debug)]
pub(crate) struct SegmentLog {
    dir: PathBuf,
    writer: Mutex<LogWriter>,
    /// Segment files opened for reading, shared by every reader.
    readers: RwLock<HashMap<u32, Arc<File>>>,
}

/// The appending side of the log.
#[derive(Debug)]
struct LogWriter {
    /// [`SEGMENT_BYTES`], smaller in tests.
    segment_bytes: u64,
    /// The end recorded by the last committed write.
    committed: LogEnd,
    /// Where the next append goes.
    next: LogEnd,
    /// The file of `next.segment`, once opened.
    active: Option<File>,
    /// The same file opened for direct writes, once a large append needed it; `Some(None)` where
    /// the file system refuses them (appends then go through `active`).
    active_direct: Option<Option<File>>,
    /// [`DIRECT_MIN_BYTES`], smaller in tests.
    direct_min_bytes: usize,
    /// Where a piece of a direct append is copied to be aligned in memory, kept from append to
    /// append ([`DIRECT_PIECE_BYTES`] and room to align them).
    bounce: Vec<u8>,
}

impl LogWriter {
    /// Appends `bytes` to the active segment (at `path`, asked for only to open it) with direct
    /// writes (`O_DIRECT`), from the next multiple of [`DIRECT_ALIGN`] at or after the end;
    /// returns where they start, or `None` when the file system does not take direct writes
    /// (nothing written; the caller then writes through the page cache).
    ///
    /// Why: a bulk load appends gigabytes that are not read again soon. Through the page cache,
    /// each byte was copied into freshly allocated cache pages on the writing thread (perf over a
    /// 1M-profile load: `pwrite` copies were 11% of all CPU in the records phase) and written out
    /// later by the kernel; a direct write hands the pages to the device instead. The bytes
    /// skipped to align an append, and those padding its last block, are never pointed at.
    fn append_direct(
        &mut self,
        path: impl FnOnce() -> PathBuf,
        bytes: &[u8],
    ) -> io::Result<Option<u64>> {
        let file = match self
            .active_direct
            .get_or_insert_with(|| open_direct(&path()))
        {
            Some(file) => file,
            None => return Ok(None),
        };
        let offset = self.next.end.next_multiple_of(DIRECT_ALIGN as u64);
        self.bounce.resize(DIRECT_PIECE_BYTES + DIRECT_ALIGN, 0);
        let aligned = self.bounce.as_ptr().align_offset(DIRECT_ALIGN);
        let mut at = offset;
        for piece in bytes.chunks(DIRECT_PIECE_BYTES) {
            let padded = piece.len().next_multiple_of(DIRECT_ALIGN);
            let buffer = &mut self.bounce[aligned..aligned + padded];
            buffer[..piece.len()].copy_from_slice(piece);
            buffer[piece.len()..].fill(0);
            match file.write_all_at(buffer, at) {
                Ok(()) => {}
                // The file system took the open but not the write (an alignment it wants that
                // differs): nothing is pointed at yet, so the append goes the buffered way.
                Err(error) if error.raw_os_error() == Some(libc::EINVAL) && at == offset => {
                    self.active_direct = Some(None);
                    return Ok(None);
                }
                Err(error) => return Err(error),
            }
            at += padded as u64;
        }
        self.next.end = offset + bytes.len() as u64;
        Ok(Some(offset))
    }
}

impl SegmentLog {
    /// Opens the log of the store in `store_dir` whose last committed write ended at `committed`
    /// and whose earlier segments with live chunks are `live`, removing what writes that did not
    /// commit left behind and segments a reclaim had emptied but not yet removed.
    pub fn open(store_dir: &Path, committed: LogEnd, live: &BTreeSet<u32>) -> io::Result<Self> {
        let dir = store_dir.join(SEGMENTS_DIR);
        match std::fs::read_dir(&dir) {
            Ok(entries) => {
                for entry in entries {
                    let path = entry?.path();
                    let Some(segment) = segment_id(&path) else {
                        continue;
                    };
                    let emptied = segment < committed.segment && !live.contains(&segment);
                    if segment > committed.segment || emptied {
                        std::fs::remove_file(&path)?;
                    } else if segment == committed.segment {
                        cut(&path, committed.end)?;
                    }
                }
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        Ok(Self {
            dir,
            writer: Mutex::new(LogWriter {
                segment_bytes: SEGMENT_BYTES,
                committed,
                next: committed,
                active: None,
                active_direct: None,
                direct_min_bytes: DIRECT_MIN_BYTES,
                bounce: Vec::new(),
            }),
            readers: RwLock::new(HashMap::new()),
        })
    }

    /// Starts the appends of one write; hold it until the write commits or fails. Appends that
    /// are not [`LogWrite::committed`] are cut off when it drops.
    pub fn begin(&self) -> LogWrite<'_> {
        self.write_with(self.writer.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Starts the appends of one write as [`SegmentLog::begin`] does, or gives `None` at once
    /// when another write holds the log.
    pub fn try_begin(&self) -> Option<LogWrite<'_>> {
        let writer = match self.writer.try_lock() {
            Ok(writer) => writer,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        Some(self.write_with(writer))
    }

    fn write_with<'a>(&'a self, writer: MutexGuard<'a, LogWriter>) -> LogWrite<'a> {
        LogWrite {
            log: self,
            writer,
            committed: false,
        }
    }

    /// Reads a chunk written by a committed write (or by the write in progress).
    pub fn read(&self, location: SegmentLocation) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.read_into(location, &mut bytes)?;
        Ok(bytes)
    }

    /// Appends a chunk, read as [`SegmentLog::read`] does, to `out`.
    pub fn read_into(&self, location: SegmentLocation, out: &mut Vec<u8>) -> io::Result<()> {
        let file = self.reader(location.segment)?;
        let start = out.len();
        out.resize(start + location.len as usize, 0);
        file.read_exact_at(&mut out[start..], location.offset)
    }

    /// The length of a segment file.
    pub fn segment_len(&self, segment: u32) -> io::Result<u64> {
        Ok(self.reader(segment)?.metadata()?.len())
    }

    /// Removes a segment that a committed reclaim emptied. The log keeps a handle open on it, so
    /// read snapshots from before the reclaim, whose pointers still name it, read on.
    pub fn retire(&self, segment: u32) -> io::Result<()> {
        self.reader(segment)?;
        std::fs::remove_file(self.segment_path(segment))
    }

    /// Makes appends of `bytes` or more direct instead of those of [`DIRECT_MIN_BYTES`].
    #[cfg(test)]
    pub fn set_direct_min_bytes(&self, bytes: usize) {
        self.writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .direct_min_bytes = bytes;
    }

    /// Makes segments roll over past `bytes` instead of [`SEGMENT_BYTES`].
    #[cfg(test)]
    pub fn set_segment_bytes(&self, bytes: u64) {
        self.writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .segment_bytes = bytes;
    }

    fn reader(&self, segment: u32) -> io::Result<Arc<File>> {
        if let Some(file) = self
            .readers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&segment)
        {
            return Ok(file.clone());
        }
        let file = Arc::new(File::open(self.segment_path(segment))?);
        self.readers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(segment, file.clone());
        Ok(file)
    }

    fn segment_path(&self, segment: u32) -> PathBuf {
        self.dir.join(format!("{segment:08}.seg"))
    }
}

/// Cuts the file at `path` to `end` bytes if it is longer, durably.
fn cut(path: &Path, end: u64) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    if file.metadata()?.len() > end {
        file.set_len(end)?;
        file.sync_all()?;
    }
    Ok(())
}

/// Asks the kernel to start writing `len` bytes of `file` from `offset` to disk now, without
/// waiting for them.
///
/// Why: a bulk load appends gigabytes that would otherwise sit dirty in the page cache until the
/// batch's `fsync`, which then waits for all of them while the cores idle; written out as they
/// come, they overlap with the batch's work (1M-profile load 1.0–1.4 s faster). Durability still
/// rests on [`LogWrite::sync`]. A hint: failure is ignored, and other systems skip it.
fn start_writeback(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor stays open while `file` is borrowed; the call only reads its
        // arguments.
        unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                offset as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// Appends of at least this many bytes bypass the page cache ([`LogWriter::append_direct`]):
/// those of bulk loads, not a streamed write's or a compaction's.
const DIRECT_MIN_BYTES: usize = 256 * 1024;

/// The alignment of direct writes in the file and in memory, and the multiple of their length
/// (4 KiB: the largest logical block size of common devices).
const DIRECT_ALIGN: usize = 4096;

/// A direct append is written in pieces of this many bytes, each copied to an aligned buffer.
const DIRECT_PIECE_BYTES: usize = 1 << 20;

/// Opens `path` for direct writes, or `None` where the file system refuses them (and on systems
/// other than Linux, whose ways to skip the page cache differ).
fn open_direct(path: &Path) -> Option<File> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        None
    }
}

/// The id of a segment file from its name.
fn segment_id(path: &Path) -> Option<u32> {
    let name = path.file_name()?.to_str()?;
    name.strip_suffix(".seg")?.parse().ok()
}

/// The appends of one write ([`SegmentLog::begin`]).
pub(crate) struct LogWrite<'a> {
    log: &'a SegmentLog,
    writer: MutexGuard<'a, LogWriter>,
    committed: bool,
}

impl LogWrite<'_> {
    /// Appends `bytes` to the log and returns the segment and offset where they start.
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<(u32, u64)> {
        let writer = &mut *self.writer;
        let full =
            writer.next.end > 0 && writer.next.end + bytes.len() as u64 > writer.segment_bytes;
        if writer.next.segment == 0 || full {
            if let Some(previous) = writer.active.take() {
                previous.sync_data()?;
            }
            let segment = writer.next.segment + 1;
            std::fs::create_dir_all(&self.log.dir)?;
            // `truncate`: a file of this id can only be the leftover of a write that never
            // committed.
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(self.log.segment_path(segment))?;
            // The new file's name must be durable before a commit points into it.
            File::open(&self.log.dir)?.sync_all()?;
            writer.active = Some(file);
            writer.active_direct = None;
            writer.next = LogEnd { segment, end: 0 };
        }
        if writer.active.is_none() {
            let path = self.log.segment_path(writer.next.segment);
            writer.active = Some(OpenOptions::new().write(true).open(path)?);
        }
        if bytes.len() >= writer.direct_min_bytes {
            let segment = writer.next.segment;
            if let Some(offset) = writer.append_direct(|| self.log.segment_path(segment), bytes)? {
                return Ok((writer.next.segment, offset));
            }
        }
        let file = writer.active.as_ref().expect("the active segment is open");
        // At an explicit offset: bytes an abandoned write left past it are overwritten.
        file.write_all_at(bytes, writer.next.end)?;
        start_writeback(file, writer.next.end, bytes.len() as u64);
        let at = (writer.next.segment, writer.next.end);
        writer.next.end += bytes.len() as u64;
        Ok(at)
    }

    /// The log, to read chunks from (those of this write too).
    pub fn log(&self) -> &SegmentLog {
        self.log
    }

    /// Whether this write appended anything.
    pub fn appended(&self) -> bool {
        self.writer.next != self.writer.committed
    }

    /// Makes the appended bytes durable and returns the end to record with the write's commit.
    pub fn sync(&mut self) -> io::Result<LogEnd> {
        if let Some(file) = &self.writer.active {
            file.sync_data()?;
        }
        Ok(self.writer.next)
    }

    /// Records that the write committed: its appends stay.
    pub fn committed(mut self) {
        self.writer.committed = self.writer.next;
        self.committed = true;
    }
}

impl Drop for LogWrite<'_> {
    /// Cuts off the appends of a write that did not commit. Failing to is harmless, so it is
    /// only logged: later appends overwrite from the committed end, and the store cuts the
    /// rest off when it opens.
    fn drop(&mut self) {
        if self.committed || !self.appended() {
            return;
        }
        let committed = self.writer.committed;
        let mut readers = self
            .log
            .readers
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        readers.retain(|&segment, _| segment <= committed.segment);
        for segment in committed.segment + 1..=self.writer.next.segment {
            if let Err(error) = std::fs::remove_file(self.log.segment_path(segment)) {
                tracing::warn!(segment, %error, "cannot remove an abandoned event segment");
            }
        }
        if committed.segment > 0
            && let Err(error) = cut(&self.log.segment_path(committed.segment), committed.end)
        {
            tracing::warn!(segment = committed.segment, %error, "cannot cut an abandoned append off");
        }
        self.writer.active = None;
        self.writer.active_direct = None;
        self.writer.next = committed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(log: &SegmentLog, segment: u32, offset: u64, len: u32) -> Vec<u8> {
        log.read(SegmentLocation {
            segment,
            offset,
            len,
        })
        .unwrap()
    }

    fn files(dir: &Path) -> Vec<(String, u64)> {
        let mut files: Vec<_> = std::fs::read_dir(dir.join(SEGMENTS_DIR))
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                let name = entry.file_name().to_string_lossy().into_owned();
                (name, entry.metadata().unwrap().len())
            })
            .collect();
        files.sort();
        files
    }

    #[test]
    fn committed_appends_stay_and_abandoned_ones_are_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let log = SegmentLog::open(dir.path(), LogEnd::default(), &BTreeSet::new()).unwrap();
        let mut write = log.begin();
        assert_eq!(write.append(b"hello").unwrap(), (1, 0));
        assert_eq!(write.append(b" world").unwrap(), (1, 5));
        let end = write.sync().unwrap();
        assert_eq!(
            end,
            LogEnd {
                segment: 1,
                end: 11
            }
        );
        write.committed();

        let mut write = log.begin();
        assert_eq!(write.append(b"lost").unwrap(), (1, 11));
        drop(write);
        assert_eq!(files(dir.path()), vec![("00000001.seg".to_owned(), 11)]);

        let mut write = log.begin();
        assert_eq!(write.append(b"!").unwrap(), (1, 11));
        write.sync().unwrap();
        write.committed();
        assert_eq!(read(&log, 1, 0, 5), b"hello");
        assert_eq!(read(&log, 1, 5, 7), b" world!");
    }

    /// Large appends are written directly (where the file system takes it) from an aligned
    /// offset, small ones through the page cache right after them; every value reads back as
    /// written, after an abandoned direct append is cut off and after reopening.
    #[test]
    fn direct_appends_read_back_among_buffered_ones() {
        let dir = tempfile::tempdir().unwrap();
        let log = SegmentLog::open(dir.path(), LogEnd::default(), &BTreeSet::new()).unwrap();
        log.set_direct_min_bytes(5_000);
        let lengths = [3, 5_000, 7, 2 * DIRECT_PIECE_BYTES + 123, 4_096, 10_000, 1];
        let values: Vec<Vec<u8>> = lengths
            .iter()
            .enumerate()
            .map(|(value, &len)| (0..len).map(|at| (at * 31 + value * 7) as u8).collect())
            .collect();
        let mut write = log.begin();
        let located: Vec<(u32, u64)> = values.iter().map(|v| write.append(v).unwrap()).collect();
        let committed = write.sync().unwrap();
        write.committed();
        let direct = open_direct(&log.segment_path(1)).is_some();
        for (value, &(_, offset)) in values.iter().zip(&located) {
            if direct && value.len() >= 5_000 {
                assert_eq!(offset % DIRECT_ALIGN as u64, 0, "{} bytes", value.len());
            }
        }
        let check = |log: &SegmentLog| {
            for (value, &(segment, offset)) in values.iter().zip(&located) {
                assert_eq!(&read(log, segment, offset, value.len() as u32), value);
            }
        };
        check(&log);

        let mut write = log.begin();
        write.append(&[9; 20_000]).unwrap();
        drop(write);
        assert_eq!(
            files(dir.path()),
            vec![("00000001.seg".to_owned(), committed.end)]
        );
        check(&log);

        let reopened = SegmentLog::open(dir.path(), committed, &BTreeSet::new()).unwrap();
        reopened.set_direct_min_bytes(5_000);
        check(&reopened);
        let mut write = reopened.begin();
        let small = write.append(b"after").unwrap();
        let large = write.append(&[5; 6_000]).unwrap();
        write.sync().unwrap();
        write.committed();
        check(&reopened);
        assert_eq!(read(&reopened, small.0, small.1, 5), b"after");
        assert_eq!(read(&reopened, large.0, large.1, 6_000), vec![5; 6_000]);
    }

    #[test]
    fn opening_cuts_off_what_an_uncommitted_write_left() {
        let dir = tempfile::tempdir().unwrap();
        let log = SegmentLog::open(dir.path(), LogEnd::default(), &BTreeSet::new()).unwrap();
        let mut write = log.begin();
        write.append(b"kept").unwrap();
        let committed = write.sync().unwrap();
        write.committed();
        // A crash mid-write: appended, never committed, never cut off.
        let mut write = log.begin();
        write.append(b"half-written").unwrap();
        std::mem::forget(write);
        std::fs::write(dir.path().join(SEGMENTS_DIR).join("00000002.seg"), b"x").unwrap();

        let reopened = SegmentLog::open(dir.path(), committed, &BTreeSet::new()).unwrap();
        assert_eq!(files(dir.path()), vec![("00000001.seg".to_owned(), 4)]);
        let mut write = reopened.begin();
        assert_eq!(write.append(b"next").unwrap(), (1, 4));
        write.committed();
        assert_eq!(read(&reopened, 1, 0, 8), b"keptnext");
    }

    #[test]
    fn a_full_segment_rolls_over_to_the_next_and_an_abandoned_one_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let log = SegmentLog::open(dir.path(), LogEnd::default(), &BTreeSet::new()).unwrap();
        let mut write = log.begin();
        write.append(b"first").unwrap();
        write.committed();
        log.set_segment_bytes(8);
        let mut write = log.begin();
        assert_eq!(write.append(b"second").unwrap(), (2, 0));
        drop(write);
        assert!(!dir.path().join(SEGMENTS_DIR).join("00000002.seg").exists());
        let mut write = log.begin();
        assert_eq!(write.append(b"third").unwrap(), (2, 0));
        write.committed();
        assert_eq!(read(&log, 2, 0, 5), b"third");
    }

    #[test]
    fn a_retired_segment_stays_readable_and_an_emptied_one_goes_at_opening() {
        let dir = tempfile::tempdir().unwrap();
        let log = SegmentLog::open(dir.path(), LogEnd::default(), &BTreeSet::new()).unwrap();
        log.set_segment_bytes(4);
        for bytes in [b"one", b"two"] {
            let mut write = log.begin();
            write.append(bytes).unwrap();
            write.sync().unwrap();
            write.committed();
        }
        log.retire(1).unwrap();
        assert_eq!(files(dir.path()), vec![("00000002.seg".to_owned(), 3)]);
        assert_eq!(read(&log, 1, 0, 3), b"one");
        // A reclaim that committed but died before removing its segment.
        std::fs::write(dir.path().join(SEGMENTS_DIR).join("00000001.seg"), b"one").unwrap();
        let committed = LogEnd { segment: 2, end: 3 };
        SegmentLog::open(dir.path(), committed, &BTreeSet::new()).unwrap();
        assert_eq!(files(dir.path()), vec![("00000002.seg".to_owned(), 3)]);
        std::fs::write(dir.path().join(SEGMENTS_DIR).join("00000001.seg"), b"one").unwrap();
        SegmentLog::open(dir.path(), committed, &BTreeSet::from([1])).unwrap();
        assert_eq!(
            files(dir.path()).len(),
            2,
            "a segment with live chunks stays"
        );
    }
}
