//! Batch ingestion on every core: files are read on one thread, their rows parsed, validated and
//! prepared for the store ([`PreparedRow`]) on worker threads, and handed back in file order to
//! the caller, which writes them in one store transaction.
//!
//! Why: parsing JSON, checking a row and packing an event is about two thirds of the cost of
//! ingesting it, and needs no transaction; the writer's own work (linking identities, appending
//! bytes, writing B-tree pages) cannot be split, so everything else is taken off its thread.
//!
//! Rows travel in chunks (the whole lines of 256 KiB of a JSON Lines file; up to 512 rows or
//! 256 KiB of text of other formats: see [`RawReader::read_chunk`]), numbered as they are read;
//! the caller's side puts finished chunks back in reading order, so rows reach the store
//! in file order (later records replace earlier ones of the same identity, as in a one-thread
//! pass) and row errors are reported in order. Both queues are bounded, so a fixed number of
//! chunks are in memory whatever the batch's size; when the caller stops early (an unreadable
//! file abandons the batch), the threads see the closed queues and stop.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use crate::ingest::validate::{IngestError, InputFormat, RawChunk, RawReader};
use crate::store::profiles::{PreparedRow, RecordKind};

/// Chunks read and waiting for a worker, per worker.
const QUEUED_PER_WORKER: usize = 2;

/// Prepared chunks waiting for the writer (each the events of 256 KiB of text: about 35 MB of
/// prepared generated events in all).
///
/// Why this many: while the writer flushes (seals and inserts tens of megabytes of persons),
/// it takes no rows; with room for only a few chunks the workers stopped too. Measured on 1M
/// generated profiles: 53.3 s with 4 queued, 49.5 s with 64 (974 MB peak), 48.7 s with 256
/// (1.07 GB peak) in session 7; once direct segment writes left the writer waiting on the device
/// during a flush, 192 against 64 won all of seven alternating runs (17.9–20.2 s against
/// 20.0–25.0 s, peak 456–485 MB against 445–479 MB) and 512 gained nothing more (20.4/22.6 s,
/// 516–542 MB).
const PREPARED_QUEUED: usize = 192;

/// One row of a batch, or the end of a readable batch.
#[derive(Debug)]
pub enum PipelineItem {
    /// A row of `files[file]`, with its 1-based number and the prepared row or why it was rejected.
    Row {
        /// Index of the file in the list given to [`prepare_files`].
        file: usize,
        /// The row's number in its file (see `crate::ingest::validate`).
        row: usize,
        /// The prepared row, or the lowercase reason it was rejected.
        prepared: Result<PreparedRow, String>,
    },
    /// `files[file]` cannot be opened or read from here on; this is the last item.
    FileError {
        /// Index of the file in the list given to [`prepare_files`].
        file: usize,
        /// Why.
        error: IngestError,
    },
}

/// What to read: the files in order, their format and the kind of rows of their dataset.
#[derive(Debug, Clone)]
pub struct BatchSource<'a> {
    /// The files, in batch order.
    pub files: &'a [PathBuf],
    /// Their format.
    pub format: InputFormat,
    /// The kind of rows of the dataset.
    pub kind: RecordKind,
    /// The dataset the rows go to (stored with every event).
    pub dataset_id: &'a str,
}

/// A chunk read from a file, numbered in reading order.
struct ReadChunk {
    seq: u64,
    file: usize,
    rows: RawChunk,
    /// Set on the last chunk read when a file could not be read further.
    error: Option<IngestError>,
    /// No chunk follows: the batch ended here (an empty chunk after the last file) or `error` is
    /// set.
    last: bool,
}

/// A chunk's rows prepared by a worker.
struct PreparedChunk {
    seq: u64,
    file: usize,
    rows: Vec<(usize, Result<PreparedRow, String>)>,
    error: Option<IngestError>,
    last: bool,
}

/// Reads, checks and prepares the rows of `source` on `workers` threads (at least one) and calls
/// `consume` with them in file order; returns what `consume` returns. `consume` may stop early:
/// the threads then stop too.
pub fn prepare_files<R>(
    source: &BatchSource<'_>,
    workers: usize,
    consume: impl FnOnce(&mut dyn Iterator<Item = PipelineItem>) -> R,
) -> R {
    let workers = workers.max(1);
    let (raw_sender, raw_receiver) = sync_channel::<ReadChunk>(workers * QUEUED_PER_WORKER);
    let raw_receiver = Arc::new(Mutex::new(raw_receiver));
    // Emptied chunks go back to the reader, which fills them again: a fresh 1 MiB buffer per
    // chunk had its pages faulted in (and zeroed by the kernel) every time.
    let (spare_sender, spare_receiver) =
        sync_channel::<RawChunk>(workers * (QUEUED_PER_WORKER + 1));
    let (prepared_sender, prepared_receiver) = sync_channel::<PreparedChunk>(PREPARED_QUEUED);
    std::thread::scope(|scope| {
        // Named, so profiles and stack dumps tell the stages apart.
        let thread = |name: &str| std::thread::Builder::new().name(name.to_owned());
        thread("ingest-read")
            .spawn_scoped(scope, move || {
                read_files(source, raw_sender, spare_receiver)
            })
            .expect("the reading thread starts");
        for _ in 0..workers {
            let raw_receiver = Arc::clone(&raw_receiver);
            let prepared_sender = prepared_sender.clone();
            let spare_sender = spare_sender.clone();
            thread("ingest-prepare")
                .spawn_scoped(scope, move || {
                    prepare_chunks(source, &raw_receiver, &prepared_sender, &spare_sender)
                })
                .expect("a preparing thread starts");
        }
        drop(spare_sender);
        // Only the threads hold the queues' other ends, so a side that stops closes them.
        drop(raw_receiver);
        drop(prepared_sender);
        let mut items = InOrder {
            receiver: prepared_receiver,
            waiting: BTreeMap::new(),
            next_seq: 0,
            current: None,
            finished: false,
        };
        let result = consume(&mut items);
        // Closing the queue stops the workers, whose exit closes the reader's queue.
        drop(items);
        result
    })
}

/// The reader thread: cuts the files into chunks until they end, one cannot be read, or nobody
/// takes chunks any more. Chunks are taken from `spares` (emptied by the workers) when there are.
fn read_files(source: &BatchSource<'_>, sender: SyncSender<ReadChunk>, spares: Receiver<RawChunk>) {
    let mut seq = 0;
    for (file, path) in source.files.iter().enumerate() {
        let mut reader = match RawReader::open(path, source.format) {
            Ok(reader) => reader,
            Err(error) => {
                let _ = sender.send(ReadChunk {
                    seq,
                    file,
                    rows: RawChunk::default(),
                    error: Some(error),
                    last: true,
                });
                return;
            }
        };
        loop {
            let mut rows = spares.try_recv().unwrap_or_default();
            let (more, error) = match reader.read_chunk(&mut rows) {
                Ok(more) => (more, None),
                Err(error) => (false, Some(error)),
            };
            let failed = error.is_some();
            // A file whose rows filled the previous chunk exactly ends with an empty read, which
            // is not sent: sequence numbers must have no gaps.
            if !rows.is_empty() || failed {
                let chunk = ReadChunk {
                    seq,
                    file,
                    rows,
                    error,
                    last: failed,
                };
                if sender.send(chunk).is_err() {
                    return;
                }
                seq += 1;
            }
            if failed {
                return;
            }
            if !more {
                break;
            }
        }
    }
    // The end of the batch is said, not inferred from closed queues: a thread that panicked
    // closes them too, and must not pass for a complete batch.
    let _ = sender.send(ReadChunk {
        seq,
        file: source.files.len().saturating_sub(1),
        rows: RawChunk::default(),
        error: None,
        last: true,
    });
}

/// A worker thread: prepares chunks until the reader is done or nobody takes results any more.
fn prepare_chunks(
    source: &BatchSource<'_>,
    receiver: &Mutex<Receiver<ReadChunk>>,
    sender: &SyncSender<PreparedChunk>,
    spares: &SyncSender<RawChunk>,
) {
    loop {
        // The lock is held only while waiting for a chunk, never while preparing one.
        let next = receiver
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .recv();
        let Ok(chunk) = next else {
            return;
        };
        let rows = chunk.rows.prepare(source.kind, source.dataset_id).collect();
        let mut emptied = chunk.rows;
        emptied.clear();
        // When the reader has spares enough (or is gone), the chunk is simply freed.
        let _ = spares.try_send(emptied);
        let prepared = PreparedChunk {
            seq: chunk.seq,
            file: chunk.file,
            rows,
            error: chunk.error,
            last: chunk.last,
        };
        if sender.send(prepared).is_err() {
            return;
        }
    }
}

/// The caller's side: prepared chunks put back in reading order, flattened to items.
struct InOrder {
    receiver: Receiver<PreparedChunk>,
    waiting: BTreeMap<u64, PreparedChunk>,
    next_seq: u64,
    current: Option<CurrentChunk>,
    finished: bool,
}

/// The chunk whose rows are being handed out.
struct CurrentChunk {
    file: usize,
    rows: std::vec::IntoIter<(usize, Result<PreparedRow, String>)>,
    error: Option<IngestError>,
    last: bool,
}

impl Iterator for InOrder {
    type Item = PipelineItem;

    fn next(&mut self) -> Option<PipelineItem> {
        loop {
            if let Some(current) = &mut self.current {
                if let Some((row, prepared)) = current.rows.next() {
                    return Some(PipelineItem::Row {
                        file: current.file,
                        row,
                        prepared,
                    });
                }
                let file = current.file;
                let error = current.error.take();
                self.finished = current.last;
                self.current = None;
                if let Some(error) = error {
                    return Some(PipelineItem::FileError { file, error });
                }
            }
            if self.finished {
                return None;
            }
            let chunk = loop {
                if let Some(chunk) = self.waiting.remove(&self.next_seq) {
                    break chunk;
                }
                let Ok(chunk) = self.receiver.recv() else {
                    // The queues closed before the last chunk: a reading or preparing thread
                    // panicked. Panicking here too (the scope would anyway) keeps the caller from
                    // taking the rows so far for the whole batch and committing them.
                    panic!("batch preparation stopped before the end of the batch");
                };
                self.waiting.insert(chunk.seq, chunk);
            };
            self.next_seq += 1;
            self.current = Some(CurrentChunk {
                file: chunk.file,
                rows: chunk.rows.into_iter(),
                error: chunk.error,
                last: chunk.last,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::validate::CHUNK_BYTES;
    use serde_json::json;

    const ECID: &str = "12345678901234567890123456789012345678";

    fn event(id: usize) -> String {
        json!({"_id": format!("e{id}"), "timestamp": "2024-06-01T00:00:00Z",
               "identityMap": {"ECID": [{"id": ECID}]}})
        .to_string()
    }

    /// Event files in JSON Lines, for the `web` dataset.
    fn events_in(files: &[PathBuf]) -> BatchSource<'_> {
        BatchSource {
            files,
            format: InputFormat::JsonLines,
            kind: RecordKind::Event,
            dataset_id: "web",
        }
    }

    /// Writes events `1..=count` as a JSON Lines file at `path`.
    fn write_events(path: &std::path::Path, count: usize) {
        let lines: Vec<String> = (1..=count).map(event).collect();
        std::fs::write(path, lines.join("\n")).unwrap();
    }

    /// Collects (file, row, ok) of every item and the file error's file, with `workers` threads.
    fn run(paths: &[PathBuf], workers: usize) -> (Vec<(usize, usize, bool)>, Option<usize>) {
        prepare_files(&events_in(paths), workers, |items| {
            let mut rows = Vec::new();
            let mut failed_file = None;
            for item in items {
                match item {
                    PipelineItem::Row {
                        file,
                        row,
                        prepared,
                    } => rows.push((file, row, prepared.is_ok())),
                    PipelineItem::FileError { file, .. } => failed_file = Some(file),
                }
            }
            (rows, failed_file)
        })
    }

    /// Many chunks over several files come back in file and row order, bad rows in place, with
    /// any number of workers.
    #[test]
    fn rows_come_back_in_file_order_with_their_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = Vec::new();
        let mut expected = Vec::new();
        // Each file spans several blocks; the second is two blocks exactly (padded with a last,
        // blank line), so its last read is empty.
        for (file, rows) in [(0, 5_000), (1, 3_000), (2, 5_000)] {
            let lines: Vec<String> = (1..=rows)
                .map(|row| {
                    if row % 97 == 0 {
                        "{broken".to_owned()
                    } else {
                        event(file * 10_000 + row)
                    }
                })
                .collect();
            expected.extend((1..=rows).map(|row| (file, row, row % 97 != 0)));
            let mut text = lines.join("\n");
            if file == 1 {
                text.push('\n');
                assert!(text.len() < 2 * CHUNK_BYTES);
                text.extend(std::iter::repeat_n(' ', 2 * CHUNK_BYTES - text.len()));
            } else {
                assert!(text.len() > 2 * CHUNK_BYTES);
            }
            let path = dir.path().join(format!("part-{file}.jsonl"));
            std::fs::write(&path, text).unwrap();
            paths.push(path);
        }
        for workers in [1, 2, 5] {
            let (rows, failed_file) = run(&paths, workers);
            assert_eq!(failed_file, None);
            assert_eq!(rows, expected, "{workers} workers");
        }
    }

    /// A missing file ends the items after every row of the files before it.
    #[test]
    fn an_unreadable_file_is_the_last_item() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("a.jsonl");
        write_events(&first, 1_500);
        let paths = [first, dir.path().join("missing.jsonl")];
        let (rows, failed_file) = run(&paths, 2);
        assert_eq!(rows.len(), 1_500);
        assert!(rows.iter().all(|&(file, _, ok)| file == 0 && ok));
        assert_eq!(failed_file, Some(1));
    }

    /// A consumer that stops early does not leave threads blocked (the call returns).
    #[test]
    fn a_consumer_may_stop_early() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        write_events(&path, 20_000);
        let source = events_in(std::slice::from_ref(&path));
        let taken = prepare_files(&source, 2, |items| items.take(10).count());
        assert_eq!(taken, 10);
    }
}
