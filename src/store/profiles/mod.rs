//! The durable profile store: record fragments, experience events and the
//! identity graph of every tenant, and the merged-profile view read by
//! segmentation and `/access/entities`.
//!
//! # API
//!
//! All calls are synchronous (run them on `spawn_blocking`); [`ProfileStore`] is
//! `Send + Sync` and meant to be shared through an `Arc`.
//!
//! - [`ProfileStore::open`]`(dir)` opens or creates `dir/profiles.redb`.
//! - [`ProfileStore::apply_batch`]`(tenant, dataset_id, kind, rows)` stores rows
//!   (already checked by `crate::ingest::validate`) in one durable transaction:
//!   all rows or none. [`ProfileStore::apply_one`] does the same for one
//!   streamed row. [`ProfileStore::apply_prepared`] takes rows already turned
//!   into [`PreparedRow`]s, which batch ingestion prepares on every core.
//! - [`ProfileStore::profile_count`], [`ProfileStore::dataset_row_counts`].
//! - [`ProfileStore::scan`]`(tenant, policy, f)` calls `f` with every merged
//!   profile and its newest 5,000 events, in one sequential pass.
//! - [`ProfileStore::lookup`]`(tenant, namespace, id, policy)` merges the profile
//!   of one identity.
//! - [`ProfileStore::delete_person`]`(tenant, namespace, id)` removes a whole
//!   profile: fragments, events and graph identities.
//! - [`ProfileStore::partitions`]`(tenant)` opens a read snapshot cut into
//!   partitions of [`PARTITION_PERSONS`] person ids, each with the sequence
//!   number of the last write that touched it, so derived copies of the store
//!   (the columnar snapshots segment jobs read) know which parts are current.
//!
//! # Engine
//!
//! redb, as `shared/spec/crates.md` recommends for profiles: copy-on-write
//! B-trees with ACID transactions, each commit fsync'd before it returns
//! (`Durability::Immediate`, the default), so a returned call survives kill -9;
//! the file is memory-mapped, so a range scan is the fastest of the measured
//! engines (36 ms for 100 MB); pure Rust, no second C build. Its weak point,
//! the rate of tiny durable commits (2.7k–4.1k/s), is why a batch is one
//! transaction and why rows are grouped per person before they are written.
//!
//! # Layout
//!
//! Tenants get a dense `u32` id; every key starts with it, so one tenant's data
//! is one contiguous key range. Integers in keys are big-endian so byte order is
//! numeric order.
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `profile_tenants` | `org \n sandbox` | tenant id `u32` |
//! | `profile_headers` | tenant · person `u64` | person header (identities, record fragments), or a pointer to it in a segment file |
//! | `profile_chunks` | tenant · person `u64` · seq `u32` (from 1) | event chunks, or pointers to chunks in segment files |
//! | `profile_meta` | tenant · tag [· dataset, partition or segment] | counters: next person id, person count, rows per dataset, batch sequence, last write per partition, the segment log's end, live bytes per segment |
//!
//! The event chunks and headers of large flushes (bulk loads) live in append-only segment files in
//! [`SEGMENTS_DIR`] beside the database (`store/profiles/segments.rs`), and the identity graph's
//! index in memory with its log in one of [`IDENTITY_INDEX_FILES`] (`store/profiles/identity_index.rs`).
//!
//! A person is a connected component of the identity graph. Headers and event chunks are
//! kept in person order in two tables, so a full pass is two range reads side by side with no
//! random lookups. They are apart because they change apart: a bulk load of events inserts a
//! small chunk pointer per person, which in one table landed in the leaf pages of the headers
//! and copied every one of them (copy-on-write): the 1.1 GB of headers of 500k records were
//! written again, and the file doubled, to append the events of 1M profiles.
//!
//! Event chunks are appended (one per
//! write that touches the person) and compacted into one when there are more
//! than [`MAX_CHUNKS`], so a streamed event never rewrites a long history. A write that only
//! appends events to a known person finds its last chunk by key range and leaves the header
//! alone (its event and chunk counts are hints), so it reads and rewrites no header.
//!
//! # Identity graph
//!
//! The identity index maps each identity straight to its person, so a lookup is one
//! hash probe, with no union-find chains to follow. When a row links identities
//! of two or more persons, the lighter persons (fewer identities, fragments and
//! events) are folded into the heaviest: their identities are re-pointed, their
//! fragments join its header and their event chunks are re-keyed under it.
//! This is union by size with eager path compression, so an identity moves
//! O(log n) times over the store's life and the person count stays exact.
//!
//! # Merge
//!
//! See [`merge`]: fragments rank by `extSourceSystemAudit.lastUpdatedDate`,
//! else ingest time (timestamp ordered, §9.4), or by dataset order (§9.5);
//! leaves overlay, arrays are whole leaves, identities are unioned; events are
//! deduplicated by (dataset, `_id`) and only the newest 5,000 are returned.

mod codec;
pub mod identity;
mod identity_index;
pub mod merge;
pub mod packed;
mod prepare;
mod segments;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition, TableHandle};
use serde_json::Value;

use crate::clock::{Clock, SystemClock};
use crate::tenant::Tenant;
use codec::{Fragment, PersonHeader};
pub use identity::Identity;
pub use identity_index::INDEX_FILES as IDENTITY_INDEX_FILES;
use identity_index::{IdentityHash, IdentityIndex, IndexWrite, LogPosition};
pub use merge::{
    AttributeMerge, IdentityGraph, MergePolicy, MergedProfile, NamespaceSets, ProfileEvent,
};
use prepare::PreparedContent;
pub use prepare::{IdentityKeys, PreparedRow};
pub use segments::SEGMENTS_DIR;
use segments::{LogEnd, LogWrite, SegmentLocation, SegmentLog};

/// The file name of the store inside its directory.
pub const DB_FILE: &str = "profiles.redb";

/// A person's event chunks are compacted into one past this many, bounding the
/// number of values a scan reads per person.
pub const MAX_CHUNKS: u32 = 16;

/// redb's page cache (read cache and write buffer), 3/8 of redb's default.
///
/// The cache bounds the store's memory: loading 1M generated profiles peaked at
/// 1.84 GB resident with the default 1 GiB and at 1.09 GB with 512 MiB, 15%
/// slower (172 s against 198 s). Since the identity graph left redb (it lives in memory,
/// [`identity_index`], ~45 bytes an identity), the cache holds headers and chunk pointers only,
/// and 384 MiB keeps the whole of a 5M-profile load in one batch under 2 GB (1.80 GB peak,
/// against 2.03 GB with 512 MiB); at 1M it costs ~3% (32.9 s against 31.8 s, mean of two
/// alternating runs) and saves 170 MB.
const CACHE_BYTES: usize = 384 << 20;

/// Bytes of new record fragments and events of one batch above which the
/// persons they touch are written out and dropped from memory, so a batch's
/// memory stays bounded however many rows and persons it has.
const FLUSH_BYTES: usize = 64 << 20;

/// A flush whose new event chunks and headers seal to at least this many bytes appends them to
/// the segment files ([`segments`]); smaller ones (streamed rows, small batches) keep them in the
/// B-tree, where reading them needs no file read of its own.
const SEGMENT_MIN_BYTES: usize = 1 << 20;

/// Person ids per partition of [`ProfileStore::partitions`]: 8,192 persons hold about 7 MB of
/// columnar tables, small enough for one per core in memory and large enough that per-partition
/// overheads (a file, a checksum, binding a query) vanish next to its rows.
pub const PARTITION_PERSONS: u64 = 8192;

const TENANTS: TableDefinition<&str, u32> = TableDefinition::new("profile_tenants");
/// Where stores written before the identity index kept the graph (tenant · `namespace \0 id` →
/// person id); moved into the index when such a store is opened.
const LEGACY_IDS: TableDefinition<&[u8], u64> = TableDefinition::new("profile_ids");
const HEADERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("profile_headers");
const CHUNKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("profile_chunks");
/// Headers (seq 0) and chunks in one table, as stores written before the split keep them.
const LEGACY_PERSONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("profile_persons");
const META: TableDefinition<&[u8], u64> = TableDefinition::new("profile_meta");

/// Meta tags after the tenant prefix. Tenant id 0 holds store-wide counters.
const TAG_NEXT_TENANT: u8 = 1;
const TAG_BATCH_SEQ: u8 = 2;
const TAG_NEXT_PERSON: u8 = 3;
const TAG_PERSON_COUNT: u8 = 4;
const TAG_DATASET_ROWS: u8 = 5;
const TAG_PARTITION_VERSION: u8 = 6;
/// The id of the segment file the last committed write appended to (tenant 0).
const TAG_SEGMENT_ID: u8 = 7;
/// The end of the bytes written to it by committed writes (tenant 0).
const TAG_SEGMENT_END: u8 = 8;
/// Per segment file: the bytes of its chunks that some person's value still points at (tenant 0).
const TAG_SEGMENT_LIVE: u8 = 9;
/// The end of the identity index's log written by committed writes (tenant 0).
const TAG_IDENTITY_LOG_END: u8 = 10;
/// Which of [`IDENTITY_INDEX_FILES`] holds the identity index's log (tenant 0).
const TAG_IDENTITY_LOG_FILE: u8 = 11;

/// The identity log is rewritten at opening when at least this many of its entries, and more
/// than half, are superseded: a rewrite writes every live entry, so a small waste is left be.
const IDENTITY_LOG_REWRITE_MIN_ENTRIES: u64 = 1 << 20;
const GLOBAL: u32 = 0;

/// A reclaim copies live chunks to the active segment in appends of about this many bytes.
const RECLAIM_APPEND_BYTES: usize = 8 << 20;

/// What kind of rows a dataset holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum RecordKind {
    /// XDM Individual Profile records: each becomes a fragment.
    Profile,
    /// XDM ExperienceEvents: appended to the profile's timeline.
    Event,
}

/// Errors of the profile store.
#[derive(Debug, thiserror::Error)]
pub enum ProfileStoreError {
    /// The embedded database failed (I/O, corruption detected by redb, …).
    #[error("profile database error: {0}")]
    Storage(#[from] redb::Error),
    /// A stored value could not be decoded.
    #[error("profile store value is corrupt: {0}")]
    Corrupt(String),
    /// A segment file of event chunks could not be read or written.
    #[error("event segment file error: {0}")]
    Segment(#[from] std::io::Error),
    /// The identity index's log could not be read or written.
    #[error("identity index log error: {0}")]
    IdentityLog(std::io::Error),
    /// A stored or given JSON document could not be (de)serialised.
    #[error("profile json error: {0}")]
    Json(#[from] serde_json::Error),
    /// A row failed the store's own checks; nothing of its batch was stored.
    #[error("row {row} rejected: {reason}")]
    InvalidRow {
        /// The 1-based row number within the batch.
        row: usize,
        /// Why the row was rejected.
        reason: String,
    },
    /// The row source of [`ProfileStore::apply_prepared`] failed; nothing of the batch was stored.
    #[error("batch abandoned: {0}")]
    Aborted(String),
    /// The profile's graph holds more than 50 identities, so it is excluded
    /// from lookups (§9.3; the API answers 422).
    #[error("identity graph of the profile has {0} identities, more than 50")]
    GraphTooLarge(usize),
}

crate::store::redb_errors_into!(ProfileStoreError);

/// What one [`ProfileStore::apply_batch`] call stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ApplyReport {
    /// Rows stored.
    pub rows: usize,
    /// Persons created because none of a row's identities was known.
    pub persons_created: u64,
    /// Persons folded into another because a row linked them.
    pub persons_merged: u64,
    /// The store-wide sequence number given to this write.
    pub batch_seq: u64,
}

/// What one [`ProfileStore::reclaim_segments`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReclaimReport {
    /// Segment files removed.
    pub segments_removed: usize,
    /// Their bytes on disk.
    pub bytes_removed: u64,
    /// Bytes of live chunks copied from them to the active segment.
    pub bytes_moved: u64,
}

/// Counts of one [`ProfileStore::scan`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ScanStats {
    /// Merged profiles handed to the callback.
    pub profiles: u64,
    /// Persons skipped because their graph exceeds 50 identities (§9.3).
    pub skipped_large_graphs: u64,
}

/// The durable, tenant-scoped profile store. See the module documentation.
pub struct ProfileStore {
    db: Database,
    /// The event chunks of large writes ([`segments`]).
    segments: Arc<SegmentLog>,
    /// The identity graph: identity → person ([`identity_index`]).
    identities: IdentityIndex,
    /// Gives the system ingest timestamp of record fragments (§9.4).
    clock: Arc<dyn Clock>,
    /// [`FLUSH_BYTES`], smaller in tests so that the flush path runs.
    flush_bytes: usize,
    /// [`PARTITION_PERSONS`], smaller in tests so that small stores have several partitions.
    partition_persons: u64,
    /// [`SEGMENT_MIN_BYTES`], other in tests so that either way of keeping chunks runs.
    segment_min_bytes: usize,
    /// Tenants whose persons changed since [`ProfileStore::take_quiet_tenants`] last gave them,
    /// with when they last changed; every tenant of the store when it was opened.
    changed_tenants: std::sync::Mutex<HashMap<Tenant, std::time::Instant>>,
}

impl std::fmt::Debug for ProfileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProfileStore").finish_non_exhaustive()
    }
}

impl ProfileStore {
    /// Opens the store in `dir` (created if needed), repairing it if the last
    /// process died mid-write.
    pub fn open(dir: &Path) -> Result<Self, ProfileStoreError> {
        Self::open_rewriting_identity_log_past(dir, IDENTITY_LOG_REWRITE_MIN_ENTRIES)
    }

    /// Opens the store as [`ProfileStore::open`] does, rewriting the identity log when at least
    /// `rewrite_min_entries` of its entries are superseded (and more than half).
    fn open_rewriting_identity_log_past(
        dir: &Path,
        rewrite_min_entries: u64,
    ) -> Result<Self, ProfileStoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| ProfileStoreError::Storage(redb::StorageError::Io(e).into()))?;
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(dir.join(DB_FILE))?;
        let txn = db.begin_write()?;
        txn.open_table(TENANTS)?;
        txn.open_table(HEADERS)?;
        txn.open_table(CHUNKS)?;
        move_legacy_persons(&txn)?;
        let identity_log = {
            let meta = txn.open_table(META)?;
            LogPosition {
                file: counter(&meta, &meta_key(GLOBAL, TAG_IDENTITY_LOG_FILE, ""))? as usize,
                end: counter(&meta, &meta_key(GLOBAL, TAG_IDENTITY_LOG_END, ""))?,
            }
        };
        let identities =
            IdentityIndex::open(dir, identity_log).map_err(ProfileStoreError::IdentityLog)?;
        let mut index_write = identities.begin();
        move_legacy_identities(&txn, &mut index_write)?;
        index_write
            .rewrite_if_sparse(rewrite_min_entries)
            .map_err(ProfileStoreError::IdentityLog)?;
        Tables::open(&txn)?.record_identity_end(&mut index_write)?;
        index_write.commit(|| txn.commit())?;
        // Every tenant counts as changed at opening: another process (`segmentd ingest`) or the
        // writes before a crash may have left derived copies stale.
        let mut changed = HashMap::new();
        let opened_at = std::time::Instant::now();
        let read = db.begin_read()?;
        let meta = read.open_table(META)?;
        let log_end = LogEnd {
            segment: counter(&meta, &meta_key(GLOBAL, TAG_SEGMENT_ID, ""))? as u32,
            end: counter(&meta, &meta_key(GLOBAL, TAG_SEGMENT_END, ""))?,
        };
        let live = segments_live(&meta)?.into_keys().collect();
        let segments = Arc::new(SegmentLog::open(dir, log_end, &live)?);
        for entry in read.open_table(TENANTS)?.iter()? {
            let (name, _) = entry?;
            if let Some((org, sandbox)) = name.value().split_once('\n') {
                changed.insert(Tenant::new(org, sandbox), opened_at);
            }
        }
        drop(meta);
        drop(read);
        Ok(Self {
            db,
            segments,
            identities,
            clock: Arc::new(SystemClock),
            flush_bytes: FLUSH_BYTES,
            partition_persons: PARTITION_PERSONS,
            segment_min_bytes: SEGMENT_MIN_BYTES,
            changed_tenants: std::sync::Mutex::new(changed),
        })
    }

    /// Replaces the clock that stamps record fragments with their ingest time,
    /// so tests (and replays) can order writes deterministically.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Flushes batches after `bytes` of new rows instead of [`FLUSH_BYTES`].
    #[cfg(test)]
    fn with_flush_bytes(mut self, bytes: usize) -> Self {
        self.flush_bytes = bytes;
        self
    }

    /// Keeps the new event chunks of flushes of at least `bytes` in segment files instead of
    /// those of at least [`SEGMENT_MIN_BYTES`] (0: all of them).
    #[cfg(test)]
    fn with_segment_min_bytes(mut self, bytes: usize) -> Self {
        self.segment_min_bytes = bytes;
        self
    }

    /// Writes segment appends of `bytes` or more directly, past the page cache, instead of those
    /// of 256 KiB or more.
    #[cfg(test)]
    fn with_direct_min_bytes(self, bytes: usize) -> Self {
        self.segments.set_direct_min_bytes(bytes);
        self
    }

    /// Rolls segment files over past `bytes` instead of 1 GiB.
    #[cfg(test)]
    fn with_segment_bytes(self, bytes: u64) -> Self {
        self.segments.set_segment_bytes(bytes);
        self
    }

    /// Cuts partitions of `persons` person ids instead of [`PARTITION_PERSONS`]; a store must be
    /// opened with the same value every time.
    #[cfg(test)]
    pub(crate) fn with_partition_persons(mut self, persons: u64) -> Self {
        self.partition_persons = persons;
        self
    }

    /// Stores a batch of validated rows of one dataset in one durable
    /// transaction: when it returns `Ok` every row is on disk, when it returns
    /// an error none is.
    ///
    /// Records replace the fragment of the same (dataset, primary identity)
    /// (§9.2); events are appended. Every identity of a row is linked into the
    /// graph, merging persons as needed. A row without a usable `identityMap`,
    /// or an event without `_id` or `timestamp`, fails the whole batch with
    /// [`ProfileStoreError::InvalidRow`].
    pub fn apply_batch(
        &self,
        tenant: &Tenant,
        dataset_id: &str,
        kind: RecordKind,
        rows: impl IntoIterator<Item = Value>,
    ) -> Result<ApplyReport, ProfileStoreError> {
        let prepared = rows.into_iter().enumerate().map(|(index, row)| {
            PreparedRow::new(kind, dataset_id, &row).map_err(|reason| {
                ProfileStoreError::InvalidRow {
                    row: index + 1,
                    reason,
                }
            })
        });
        self.apply_prepared(tenant, dataset_id, prepared)
    }

    /// Stores rows prepared by [`PreparedRow::new`] (on any thread) for `dataset_id` in one
    /// durable transaction, like [`ProfileStore::apply_batch`]. The row source may fail part-way
    /// (a file that becomes unreadable, a row the caller rejects): the first `Err` abandons the
    /// transaction, so nothing of the batch is stored, and is returned as it is. This lets a
    /// caller validate, prepare and store in one pass over its files.
    pub fn apply_prepared(
        &self,
        tenant: &Tenant,
        dataset_id: &str,
        rows: impl IntoIterator<Item = Result<PreparedRow, ProfileStoreError>>,
    ) -> Result<ApplyReport, ProfileStoreError> {
        // Taken before the transaction, as by every write, and held until it commits or fails:
        // appends that do not commit are cut off when `log_write` drops.
        let mut log_write = self.segments.begin();
        let mut index_write = self.identities.begin();
        let txn = self.db.begin_write()?;
        let report = {
            let mut tables = Tables::open(&txn)?;
            let tenant_id = tables.tenant_id(tenant)?;
            let batch_seq = tables.bump(&meta_key(GLOBAL, TAG_BATCH_SEQ, ""), 1)?;
            let mut writer = BatchWriter::new(
                &mut tables,
                &mut log_write,
                &mut index_write,
                tenant_id,
                batch_seq,
                self.flush_bytes,
            )?;
            writer.partition_persons = self.partition_persons;
            writer.segment_min_bytes = self.segment_min_bytes;
            let ingest_ms = self.clock.now().timestamp_millis();
            let mut rows_stored = 0;
            for row in rows {
                writer.add(dataset_id, row?, ingest_ms)?;
                rows_stored += 1;
            }
            writer.finish()?;
            let (persons_created, persons_merged) = (writer.created, writer.merged);
            if rows_stored > 0 {
                tables.bump(
                    &meta_key(tenant_id, TAG_DATASET_ROWS, dataset_id),
                    rows_stored as i64,
                )?;
            }
            ApplyReport {
                rows: rows_stored,
                persons_created,
                persons_merged,
                batch_seq: batch_seq as u64,
            }
        };
        index_write.commit(|| txn.commit())?;
        log_write.committed();
        if report.rows > 0 {
            self.note_change(tenant);
        }
        Ok(report)
    }

    fn note_change(&self, tenant: &Tenant) {
        let mut changed = self
            .changed_tenants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        changed.insert(tenant.clone(), std::time::Instant::now());
    }

    /// Returns, and forgets, the tenants whose persons changed in this process but not during the
    /// last `quiet`: their derived copies (columnar snapshots) are worth refreshing now, while a
    /// tenant still being written to is left for later.
    pub fn take_quiet_tenants(&self, quiet: std::time::Duration) -> Vec<Tenant> {
        let mut changed = self
            .changed_tenants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let quiet_ones: Vec<Tenant> = changed
            .iter()
            .filter(|(_, at)| at.elapsed() >= quiet)
            .map(|(tenant, _)| tenant.clone())
            .collect();
        for tenant in &quiet_ones {
            changed.remove(tenant);
        }
        quiet_ones
    }

    /// Stores one streamed row durably; the same as a batch of one.
    pub fn apply_one(
        &self,
        tenant: &Tenant,
        dataset_id: &str,
        kind: RecordKind,
        row: Value,
    ) -> Result<ApplyReport, ProfileStoreError> {
        self.apply_batch(tenant, dataset_id, kind, [row])
    }

    /// Returns the number of merged profiles under the private graph: the number
    /// of connected components of the tenant's identity graph.
    pub fn profile_count(&self, tenant: &Tenant) -> Result<u64, ProfileStoreError> {
        let txn = self.db.begin_read()?;
        let Some(tenant_id) = lookup_tenant(&txn, tenant)? else {
            return Ok(0);
        };
        counter(
            &txn.open_table(META)?,
            &meta_key(tenant_id, TAG_PERSON_COUNT, ""),
        )
    }

    /// Returns, per dataset, how many rows were accepted into it (cumulative:
    /// replaced records and re-sent events still count).
    pub fn dataset_row_counts(
        &self,
        tenant: &Tenant,
    ) -> Result<BTreeMap<String, u64>, ProfileStoreError> {
        let txn = self.db.begin_read()?;
        let Some(tenant_id) = lookup_tenant(&txn, tenant)? else {
            return Ok(BTreeMap::new());
        };
        let meta = txn.open_table(META)?;
        let start = meta_key(tenant_id, TAG_DATASET_ROWS, "");
        let mut counts = BTreeMap::new();
        for entry in meta.range(start.as_slice()..)? {
            let (key, value) = entry?;
            let Some(dataset) = key.value().strip_prefix(start.as_slice()) else {
                break;
            };
            counts.insert(String::from_utf8_lossy(dataset).into_owned(), value.value());
        }
        Ok(counts)
    }

    /// Calls `f` with every merged profile of the tenant under `policy`, with its
    /// newest 5,000 events, reading the headers and chunks tables once, side by side, in key order.
    ///
    /// The pass runs on one read snapshot: writes committed meanwhile are not
    /// seen. Persons whose graph exceeds 50 identities are skipped and counted.
    pub fn scan(
        &self,
        tenant: &Tenant,
        policy: &MergePolicy,
        mut f: impl FnMut(MergedProfile),
    ) -> Result<ScanStats, ProfileStoreError> {
        let Some(snapshot) = self.snapshot(tenant)? else {
            return Ok(ScanStats::default());
        };
        let all = 0..snapshot.next_person;
        scan_persons(&snapshot, all, policy, &mut f)
    }

    /// Opens a read snapshot of the tenant's persons, or `None` for a tenant without data.
    fn snapshot(&self, tenant: &Tenant) -> Result<Option<PersonsSnapshot>, ProfileStoreError> {
        let txn = self.db.begin_read()?;
        let Some(tenant_id) = lookup_tenant(&txn, tenant)? else {
            return Ok(None);
        };
        let next_person = txn
            .open_table(META)?
            .get(meta_key(tenant_id, TAG_NEXT_PERSON, "").as_slice())?
            .map_or(1, |v| v.value());
        Ok(Some(PersonsSnapshot {
            headers: txn.open_table(HEADERS)?,
            chunks: txn.open_table(CHUNKS)?,
            segments: self.segments.clone(),
            tenant_id,
            next_person,
        }))
    }

    /// Opens a read snapshot of the tenant's persons cut into partitions of [`PARTITION_PERSONS`]
    /// person ids, or `None` for a tenant without data.
    ///
    /// Each partition carries its version: the sequence number of the last committed write that
    /// added, changed, merged away or deleted one of its persons (0 when none did since versions
    /// were recorded). A copy of a partition derived at one version is current for as long as
    /// the version stays the same.
    pub fn partitions(&self, tenant: &Tenant) -> Result<Option<Partitions>, ProfileStoreError> {
        let txn = self.db.begin_read()?;
        let Some(tenant_id) = lookup_tenant(&txn, tenant)? else {
            return Ok(None);
        };
        let meta = txn.open_table(META)?;
        let next_person = meta
            .get(meta_key(tenant_id, TAG_NEXT_PERSON, "").as_slice())?
            .map_or(1, |v| v.value());
        let count = next_person.div_ceil(self.partition_persons);
        let mut versions = vec![0; count as usize];
        let prefix = meta_key(tenant_id, TAG_PARTITION_VERSION, "");
        for (partition, version) in indexed_counters(&meta, &prefix)? {
            if let Some(slot) = versions.get_mut(partition as usize) {
                *slot = version;
            }
        }
        Ok(Some(Partitions {
            snapshot: PersonsSnapshot {
                headers: txn.open_table(HEADERS)?,
                chunks: txn.open_table(CHUNKS)?,
                segments: self.segments.clone(),
                tenant_id,
                next_person,
            },
            versions,
            partition_persons: self.partition_persons,
        }))
    }

    /// Returns the merged profile that `namespace`/`id` belongs to under
    /// `policy`, or `None` when the identity is unknown or, under
    /// [`IdentityGraph::None`], keys no fragment and no event.
    pub fn lookup(
        &self,
        tenant: &Tenant,
        namespace: &str,
        id: &str,
        policy: &MergePolicy,
    ) -> Result<Option<MergedProfile>, ProfileStoreError> {
        // The index and the snapshot are taken together: a write commits the database and
        // changes the index while no reader holds it.
        let index = self.identities.read();
        let txn = self.db.begin_read()?;
        let Some(tenant_id) = lookup_tenant(&txn, tenant)? else {
            return Ok(None);
        };
        let requested = identity::identity_key(namespace, id);
        let Some(person_id) = index.get(IdentityHash::of(tenant_id, &requested)) else {
            return Ok(None);
        };
        drop(index);
        let Some(header) = txn
            .open_table(HEADERS)?
            .get(header_key(tenant_id, person_id).as_slice())?
        else {
            return Err(ProfileStoreError::Corrupt(format!(
                "identity points at missing person {person_id}"
            )));
        };
        let header = open_header(&self.segments, header.value())?;
        if header.identities.len() > merge::MAX_GRAPH_IDENTITIES {
            return Err(ProfileStoreError::GraphTooLarge(header.identities.len()));
        }
        // The chunks are found by key range: writes that only append events leave the header's
        // chunk count behind.
        let chunk_keys = chunk_key_range(tenant_id, person_id, 1);
        let guards = txn
            .open_table(CHUNKS)?
            .range(chunk_keys.start.as_slice()..chunk_keys.end.as_slice())?
            .map(|entry| entry.map(|(_, value)| value))
            .collect::<Result<Vec<_>, _>>()?;
        let chunks = open_chunks(&self.segments, guards.iter().map(|guard| guard.value()))?;
        let mut events = Vec::new();
        for chunk in &chunks {
            codec::decode_chunk(chunk, &mut events)?;
        }
        let requested_identity = Identity::from_key(&requested);
        let mut found = None;
        merge::merge_person(person_id, &header, &events, policy, &mut |profile| {
            let is_requested = match policy.identity_graph {
                IdentityGraph::Pdg => true,
                IdentityGraph::None => profile.identities.iter().any(|i| {
                    i.primary
                        && i.namespace == requested_identity.namespace
                        && i.id == requested_identity.id
                }),
            };
            if is_requested {
                found = Some(profile);
            }
        })?;
        Ok(found)
    }

    /// Reclaims the space of dead chunks (`store/profiles/segments.rs`): every full segment file of which
    /// half or more is dead has its live chunks copied to the active segment and re-pointed in
    /// one durable write, and is then removed. Finds out from a read snapshot whether there is
    /// anything to do, so a call with nothing to reclaim neither waits for nor holds up writes,
    /// and reclaims nothing while a batch holds the segment log (a bulk load can take minutes;
    /// the caller, the job runner, must not wait behind it): a later call does it.
    pub fn reclaim_segments(&self) -> Result<ReclaimReport, ProfileStoreError> {
        if self
            .half_dead_segments(&self.db.begin_read()?.open_table(META)?)?
            .is_empty()
        {
            return Ok(ReclaimReport::default());
        }
        let Some(mut log_write) = self.segments.try_begin() else {
            return Ok(ReclaimReport::default());
        };
        let txn = self.db.begin_write()?;
        let mut report = ReclaimReport::default();
        let half_dead = {
            let mut tables = Tables::open(&txn)?;
            let half_dead = self.half_dead_segments(&tables.meta)?;
            // The pointers into them: one pass over every header and event chunk, each noted with
            // whether it is a header.
            let mut moving = Vec::new();
            for (is_header, table) in [(true, &tables.headers), (false, &tables.chunks)] {
                for entry in table.iter()? {
                    let (key, value) = entry?;
                    if let Some(location) = codec::segment_location(value.value())?
                        && half_dead.contains_key(&location.segment)
                    {
                        moving.push((is_header, key.value().to_vec(), location));
                    }
                }
            }
            let mut copied = Vec::new();
            let mut keys = Vec::new();
            for (index, (is_header, key, location)) in moving.iter().enumerate() {
                let start = copied.len() as u64;
                self.segments.read_into(*location, &mut copied)?;
                keys.push((*is_header, key.as_slice(), start, location.len));
                if copied.len() >= RECLAIM_APPEND_BYTES || index + 1 == moving.len() {
                    let (segment, base) = tables.append_sealed(&mut log_write, &copied)?;
                    for (is_header, key, start, len) in keys.drain(..) {
                        let offset = base + start;
                        let pointer = codec::encode_segment_location(SegmentLocation {
                            segment,
                            offset,
                            len,
                        });
                        let table = if is_header {
                            &mut tables.headers
                        } else {
                            &mut tables.chunks
                        };
                        table.insert(key, pointer.as_slice())?;
                    }
                    report.bytes_moved += copied.len() as u64;
                    copied.clear();
                }
            }
            for (&segment, &length) in &half_dead {
                tables.meta.remove(segment_live_key(segment).as_slice())?;
                report.segments_removed += 1;
                report.bytes_removed += length;
            }
            tables.record_log_end(&mut log_write)?;
            half_dead
        };
        txn.commit()?;
        log_write.committed();
        for segment in half_dead.into_keys() {
            self.segments.retire(segment)?;
        }
        Ok(report)
    }

    /// The full segments (below the active one) of which half or more is dead, with their
    /// lengths.
    fn half_dead_segments(
        &self,
        meta: &impl ReadableTable<&'static [u8], u64>,
    ) -> Result<BTreeMap<u32, u64>, ProfileStoreError> {
        let active = counter(meta, &meta_key(GLOBAL, TAG_SEGMENT_ID, ""))? as u32;
        let mut half_dead = BTreeMap::new();
        for (segment, live) in segments_live(meta)? {
            if segment >= active {
                continue;
            }
            let length = self.segments.segment_len(segment)?;
            if live.saturating_mul(2) <= length {
                half_dead.insert(segment, length);
            }
        }
        Ok(half_dead)
    }

    /// Deletes the whole profile that `namespace`/`id` belongs to: every
    /// fragment, event and graph identity of its person, durably. Returns
    /// whether the identity was known.
    pub fn delete_person(
        &self,
        tenant: &Tenant,
        namespace: &str,
        id: &str,
    ) -> Result<bool, ProfileStoreError> {
        let mut index_write = self.identities.begin();
        let txn = self.db.begin_write()?;
        let deleted = {
            let mut tables = Tables::open(&txn)?;
            let Some(tenant_id) = lookup_tenant_in(&tables.tenants, tenant)? else {
                return Ok(false);
            };
            let key = identity::identity_key(namespace, id);
            let Some(person_id) = index_write.get(IdentityHash::of(tenant_id, &key)) else {
                return Ok(false);
            };
            let header = tables.read_header(&self.segments, tenant_id, person_id)?;
            for identity in &header.identities {
                index_write.remove(IdentityHash::of(tenant_id, identity));
            }
            let last_seq = tables.last_chunk_seq(tenant_id, person_id)?;
            for seq in 1..=last_seq {
                tables.remove_chunk(&chunk_key(tenant_id, person_id, seq))?;
            }
            tables.remove_header(tenant_id, person_id)?;
            tables.bump(&meta_key(tenant_id, TAG_PERSON_COUNT, ""), -1)?;
            let write_seq = tables.bump(&meta_key(GLOBAL, TAG_BATCH_SEQ, ""), 1)?;
            tables.mark_partition(
                tenant_id,
                person_id / self.partition_persons,
                write_seq as u64,
            )?;
            tables.record_identity_end(&mut index_write)?;
            true
        };
        index_write.commit(|| txn.commit())?;
        if deleted {
            self.note_change(tenant);
        }
        Ok(deleted)
    }
}

/// The headers and chunks tables of one read transaction, with the tenant's id and its next
/// person id (every person id of the tenant is below it).
struct PersonsSnapshot {
    headers: redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    chunks: redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    /// Where the chunks the snapshot points at outside the B-tree lie.
    segments: Arc<SegmentLog>,
    tenant_id: u32,
    next_person: u64,
}

/// A tenant's persons on one read snapshot, cut into partitions of [`PARTITION_PERSONS`] person
/// ids with their versions ([`ProfileStore::partitions`]). `Sync`: threads scan partitions of the
/// same snapshot side by side.
pub struct Partitions {
    snapshot: PersonsSnapshot,
    versions: Vec<u64>,
    partition_persons: u64,
}

impl Partitions {
    /// Number of partitions (the last may be partly filled).
    pub fn len(&self) -> usize {
        self.versions.len()
    }

    /// Whether the tenant has no partition.
    pub fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }

    /// The version of `partition`: the sequence number of the last write that touched it.
    pub fn version(&self, partition: usize) -> u64 {
        self.versions[partition]
    }

    /// Calls `f` with every merged profile of `partition` under `policy`, in person-id order,
    /// with its newest 5,000 events (as [`ProfileStore::scan`]).
    pub fn scan(
        &self,
        partition: usize,
        policy: &MergePolicy,
        mut f: impl FnMut(MergedProfile),
    ) -> Result<ScanStats, ProfileStoreError> {
        let start = partition as u64 * self.partition_persons;
        let end = (partition as u64 + 1) * self.partition_persons;
        scan_persons(
            &self.snapshot,
            start..end.min(self.snapshot.next_person),
            policy,
            &mut f,
        )
    }
}

/// Reads the persons whose ids fall in `person_ids` in key order and hands each merged profile
/// to `consume`.
fn scan_persons<F>(
    snapshot: &PersonsSnapshot,
    person_ids: std::ops::Range<u64>,
    policy: &MergePolicy,
    consume: &mut F,
) -> Result<ScanStats, ProfileStoreError>
where
    F: FnMut(MergedProfile),
{
    let PersonsSnapshot {
        headers,
        chunks,
        segments,
        tenant_id,
        ..
    } = snapshot;
    let tenant_id = *tenant_id;
    let mut stats = ScanStats::default();
    let headers = headers.range(
        header_key(tenant_id, person_ids.start).as_slice()
            ..header_key(tenant_id, person_ids.end).as_slice(),
    )?;
    let mut chunks = chunks
        .range(
            chunk_key(tenant_id, person_ids.start, 0).as_slice()
                ..chunk_key(tenant_id, person_ids.end, 0).as_slice(),
        )?
        .peekable();
    let mut skipped = 0;
    // Holding the guards of one person keeps its bytes borrowed until it is merged.
    let mut person_chunks: Vec<redb::AccessGuard<'static, &[u8]>> = Vec::new();
    let mut header_buffer = Vec::new();
    for entry in headers {
        let (key, header) = entry?;
        let person_id = split_header_key(key.value())?;
        person_chunks.clear();
        // Both tables are in person order: the chunks of this person come next.
        while let Some(entry) = chunks.next_if(|entry| {
            entry.as_ref().map_or(true, |(key, _)| {
                split_chunk_key(key.value()).is_ok_and(|(owner, _)| owner <= person_id)
            })
        }) {
            let (key, chunk) = entry?;
            let (owner, _) = split_chunk_key(key.value())?;
            if owner != person_id {
                return Err(headerless_chunks(owner));
            }
            person_chunks.push(chunk);
        }
        let header = open_header_with(segments, header.value(), &mut header_buffer)?;
        if header.identities.len() > merge::MAX_GRAPH_IDENTITIES {
            skipped += 1;
            continue;
        }
        let opened = open_chunks(segments, person_chunks.iter().map(|chunk| chunk.value()))?;
        let mut events = Vec::with_capacity(header.event_count as usize);
        for chunk in &opened {
            codec::decode_chunk(chunk, &mut events)?;
        }
        merge::merge_person(person_id, &header, &events, policy, &mut |profile| {
            stats.profiles += 1;
            consume(profile);
        })?;
    }
    if let Some(entry) = chunks.next() {
        let (owner, _) = split_chunk_key(entry?.0.value())?;
        return Err(headerless_chunks(owner));
    }
    stats.skipped_large_graphs = skipped;
    Ok(stats)
}

/// The error of a scan that meets event chunks of a person without a header (a write keeps or
/// removes both).
fn headerless_chunks(person_id: u64) -> ProfileStoreError {
    ProfileStoreError::Corrupt(format!(
        "event chunks of person {person_id}, who has no header"
    ))
}

/// Moves the graph of a store written before the identity index (table `profile_ids`) into the
/// index write, and deletes the table, within `txn`.
///
/// Why: the index replaced the table; a data directory of an earlier version keeps its graph.
fn move_legacy_identities(
    txn: &redb::WriteTransaction,
    index_write: &mut IndexWrite<'_>,
) -> Result<(), ProfileStoreError> {
    let legacy = txn
        .list_tables()?
        .any(|table| table.name() == LEGACY_IDS.name());
    if legacy {
        for entry in txn.open_table(LEGACY_IDS)?.iter()? {
            let (key, person) = entry?;
            let key = key.value();
            let corrupt = || ProfileStoreError::Corrupt("an identity key of profile_ids".into());
            let tenant_id = u32::from_be_bytes(
                key.get(..4)
                    .ok_or_else(corrupt)?
                    .try_into()
                    .expect("4 bytes"),
            );
            let identity = std::str::from_utf8(&key[4..]).map_err(|_| corrupt())?;
            index_write.set(IdentityHash::of(tenant_id, identity), person.value());
        }
        txn.delete_table(LEGACY_IDS)?;
    }
    Ok(())
}

/// Moves the persons of a store written before headers and event chunks had tables of their own
/// (both in `profile_persons`, the header at sequence number 0) into `profile_headers` and
/// `profile_chunks`, and deletes the old table, within `txn`.
///
/// Why: the tables were split (see the module documentation); a data directory of an earlier
/// version keeps its profiles.
fn move_legacy_persons(txn: &redb::WriteTransaction) -> Result<(), ProfileStoreError> {
    let legacy = txn
        .list_tables()?
        .any(|table| table.name() == LEGACY_PERSONS.name());
    if !legacy {
        return Ok(());
    }
    {
        let mut headers = txn.open_table(HEADERS)?;
        let mut chunks = txn.open_table(CHUNKS)?;
        for entry in txn.open_table(LEGACY_PERSONS)?.iter()? {
            let (key, value) = entry?;
            let key = key.value();
            match split_chunk_key(key)? {
                (_, 0) => headers.insert(&key[..12], value.value())?,
                _ => chunks.insert(key, value.value())?,
            };
        }
    }
    txn.delete_table(LEGACY_PERSONS)?;
    Ok(())
}

/// The open tables of one write transaction.
struct Tables<'txn> {
    tenants: Table<'txn, &'static str, u32>,
    headers: Table<'txn, &'static [u8], &'static [u8]>,
    chunks: Table<'txn, &'static [u8], &'static [u8]>,
    meta: Table<'txn, &'static [u8], u64>,
}

impl<'txn> Tables<'txn> {
    fn open(txn: &'txn redb::WriteTransaction) -> Result<Self, ProfileStoreError> {
        Ok(Self {
            tenants: txn.open_table(TENANTS)?,
            headers: txn.open_table(HEADERS)?,
            chunks: txn.open_table(CHUNKS)?,
            meta: txn.open_table(META)?,
        })
    }

    /// Returns the tenant's id, allocating one on first use.
    fn tenant_id(&mut self, tenant: &Tenant) -> Result<u32, ProfileStoreError> {
        if let Some(id) = lookup_tenant_in(&self.tenants, tenant)? {
            return Ok(id);
        }
        let id = self.bump(&meta_key(GLOBAL, TAG_NEXT_TENANT, ""), 1)? as u32;
        self.tenants.insert(tenant_name(tenant).as_str(), id)?;
        Ok(id)
    }

    /// Adds `delta` to a counter and returns its new value.
    fn bump(&mut self, key: &[u8], delta: i64) -> Result<i64, ProfileStoreError> {
        let current = counter(&self.meta, key)? as i64;
        let next = current + delta;
        self.meta.insert(key, next as u64)?;
        Ok(next)
    }

    /// Removes an event chunk and returns it; a chunk kept in a segment file stops counting as
    /// live there.
    fn remove_chunk(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, ProfileStoreError> {
        let Some(value) = self.chunks.remove(key)?.map(|v| v.value().to_vec()) else {
            return Ok(None);
        };
        self.release(codec::segment_location(&value)?)?;
        Ok(Some(value))
    }

    /// A value kept at `location` in the segment log (if any) left its table: its bytes stop
    /// counting as live there.
    fn release(&mut self, location: Option<SegmentLocation>) -> Result<(), ProfileStoreError> {
        match location {
            Some(location) => self.add_segment_live(location.segment, -i64::from(location.len)),
            None => Ok(()),
        }
    }

    /// Appends sealed values (event chunks or person headers), back to back, to the segment log
    /// and counts them as live there; returns the segment and offset where they start. Nothing
    /// is appended for no values (the start returned then is no place: nothing looks it up).
    fn append_sealed(
        &mut self,
        log_write: &mut LogWrite<'_>,
        values: &[u8],
    ) -> Result<(u32, u64), ProfileStoreError> {
        if values.is_empty() {
            return Ok((0, 0));
        }
        let (segment, start) = log_write.append(values)?;
        self.add_segment_live(segment, values.len() as i64)?;
        Ok((segment, start))
    }

    /// Stores at `key` a pointer to the chunk at `location` in the segment log.
    fn insert_chunk_pointer(
        &mut self,
        key: &[u8],
        location: SegmentLocation,
    ) -> Result<(), ProfileStoreError> {
        self.chunks
            .insert(key, codec::encode_segment_location(location).as_slice())?;
        Ok(())
    }

    /// Adds `delta` to the live bytes of a segment file.
    fn add_segment_live(&mut self, segment: u32, delta: i64) -> Result<(), ProfileStoreError> {
        self.bump(&segment_live_key(segment), delta)?;
        Ok(())
    }

    /// Makes a write's segment appends durable and records the log's new end, to commit with
    /// the write.
    fn record_log_end(&mut self, log_write: &mut LogWrite<'_>) -> Result<(), ProfileStoreError> {
        if log_write.appended() {
            let end = log_write.sync()?;
            self.meta.insert(
                meta_key(GLOBAL, TAG_SEGMENT_ID, "").as_slice(),
                u64::from(end.segment),
            )?;
            self.meta
                .insert(meta_key(GLOBAL, TAG_SEGMENT_END, "").as_slice(), end.end)?;
        }
        Ok(())
    }

    /// Makes an identity index write durable and records the index log's new position, to commit
    /// with the write.
    fn record_identity_end(
        &mut self,
        index_write: &mut IndexWrite<'_>,
    ) -> Result<(), ProfileStoreError> {
        let position = index_write.sync().map_err(ProfileStoreError::IdentityLog)?;
        self.meta.insert(
            meta_key(GLOBAL, TAG_IDENTITY_LOG_FILE, "").as_slice(),
            position.file as u64,
        )?;
        self.meta.insert(
            meta_key(GLOBAL, TAG_IDENTITY_LOG_END, "").as_slice(),
            position.end,
        )?;
        Ok(())
    }

    /// Records that write `write_seq` changed persons of `partition`.
    fn mark_partition(
        &mut self,
        tenant_id: u32,
        partition: u64,
        write_seq: u64,
    ) -> Result<(), ProfileStoreError> {
        self.meta.insert(
            partition_version_key(tenant_id, partition).as_slice(),
            write_seq,
        )?;
        Ok(())
    }

    /// Returns the sequence number of the person's last event chunk (0: none), found by key
    /// range: the header's count is not kept up to date by writes that only append events.
    fn last_chunk_seq(&self, tenant_id: u32, person_id: u64) -> Result<u32, ProfileStoreError> {
        let keys = chunk_key_range(tenant_id, person_id, 1);
        match self
            .chunks
            .range(keys.start.as_slice()..keys.end.as_slice())?
            .next_back()
        {
            Some(entry) => Ok(split_chunk_key(entry?.0.value())?.1),
            None => Ok(0),
        }
    }

    /// Reads a person's header, from the segment log when it is kept there.
    fn read_header(
        &self,
        segments: &SegmentLog,
        tenant_id: u32,
        person_id: u64,
    ) -> Result<PersonHeader, ProfileStoreError> {
        match self
            .headers
            .get(header_key(tenant_id, person_id).as_slice())?
        {
            Some(stored) => open_header(segments, stored.value()),
            None => Err(ProfileStoreError::Corrupt(format!(
                "identity points at missing person {person_id}"
            ))),
        }
    }

    /// Stores a person's header: sealed, or a pointer to it in the segment log. A header it
    /// replaces that was kept in a segment file stops counting as live there.
    fn put_header(
        &mut self,
        tenant_id: u32,
        person_id: u64,
        stored: &[u8],
    ) -> Result<(), ProfileStoreError> {
        let replaced = self
            .headers
            .insert(header_key(tenant_id, person_id).as_slice(), stored)?;
        let location = stored_location(replaced)?;
        self.release(location)
    }

    /// Removes a person's header; one kept in a segment file stops counting as live there.
    fn remove_header(&mut self, tenant_id: u32, person_id: u64) -> Result<(), ProfileStoreError> {
        let removed = self
            .headers
            .remove(header_key(tenant_id, person_id).as_slice())?;
        let location = stored_location(removed)?;
        self.release(location)
    }
}

/// A person loaded into a batch, with its not yet written events.
struct PendingPerson {
    /// The person's header once read (or new); the default until then.
    header: PersonHeader,
    /// Whether `header` holds the person's header: a write that only appends events to a known
    /// person needs none, and leaves the stored one as it is.
    header_read: bool,
    /// The sequence number of the person's last event chunk: chunks are keyed `1..=last_seq`.
    last_seq: u32,
    /// New events, each in the chunk encoding, as the rows brought them: kept apart until the
    /// flush joins them into one chunk, so adding one never copies the others.
    new_events: Vec<Vec<u8>>,
}

/// Applies the rows of one batch, keeping the persons it touches in memory and
/// writing them out once [`FLUSH_BYTES`] of new fragments and events have
/// accumulated (and at [`BatchWriter::finish`]): a person is written once per
/// flush however many rows name it, and a batch's memory is bounded by
/// [`FLUSH_BYTES`] whatever its size. Written persons leave memory; a later row
/// of the same batch reads them back from the (uncommitted) transaction.
struct BatchWriter<'a, 'txn, 'log> {
    tables: &'a mut Tables<'txn>,
    /// Where large flushes append their event chunks.
    segments: &'a mut LogWrite<'log>,
    /// The identity graph's changes of this write.
    identities: &'a mut IndexWrite<'log>,
    /// [`SEGMENT_MIN_BYTES`].
    segment_min_bytes: usize,
    tenant_id: u32,
    batch_seq: u64,
    /// Hashed with aHash: every row looks its person up here, and std's SipHash made that a
    /// tenth of the writing thread's time over the events of 1M profiles.
    pending: HashMap<u64, PendingPerson, ahash::RandomState>,
    pending_bytes: usize,
    flush_bytes: usize,
    next_person: u64,
    created: u64,
    merged: u64,
    /// Partitions whose persons this batch wrote or removed.
    touched_partitions: BTreeSet<u64>,
    /// Person ids per partition.
    partition_persons: u64,
    /// The identities of the last linked row and the person they belong to.
    last_link: Option<(IdentityKeys, u64)>,
    /// Where flushes seal their values, one per sealing thread.
    seal_buffers: Vec<SealBuffer>,
    /// The persons of the flush being written, in key order; kept (empty) from flush to flush,
    /// like `seal_buffers`: collecting them into a new vector every flush had the kernel zero its
    /// fresh pages, 7% of the writing thread's samples (perf, 1M load).
    flushing: Vec<(u64, PendingPerson)>,
}

impl<'a, 'txn, 'log> BatchWriter<'a, 'txn, 'log> {
    fn new(
        tables: &'a mut Tables<'txn>,
        segments: &'a mut LogWrite<'log>,
        identities: &'a mut IndexWrite<'log>,
        tenant_id: u32,
        batch_seq: i64,
        flush_bytes: usize,
    ) -> Result<Self, ProfileStoreError> {
        let next_person = tables
            .meta
            .get(meta_key(tenant_id, TAG_NEXT_PERSON, "").as_slice())?
            .map_or(1, |v| v.value());
        Ok(Self {
            tables,
            segments,
            identities,
            segment_min_bytes: SEGMENT_MIN_BYTES,
            tenant_id,
            batch_seq: batch_seq as u64,
            pending: HashMap::default(),
            pending_bytes: 0,
            flush_bytes,
            next_person,
            created: 0,
            merged: 0,
            touched_partitions: BTreeSet::new(),
            last_link: None,
            partition_persons: PARTITION_PERSONS,
            seal_buffers: Vec::new(),
            flushing: Vec::new(),
        })
    }

    /// Adds one prepared row to the person of its identities; `ingest_ms` stamps records that
    /// carry no `extSourceSystemAudit.lastUpdatedDate`.
    fn add(
        &mut self,
        dataset_id: &str,
        row: PreparedRow,
        ingest_ms: i64,
    ) -> Result<(), ProfileStoreError> {
        self.pending_bytes += row.pending_bytes();
        let PreparedRow {
            identities,
            content,
        } = row;
        let person_id = self.link(&identities)?;
        if matches!(content, PreparedContent::Record { .. }) {
            self.read_header(person_id)?;
        }
        let pending = self
            .pending
            .get_mut(&person_id)
            .expect("linked person is loaded");
        match content {
            PreparedContent::Record { effective_ts, body } => {
                let fragment = Fragment {
                    dataset_id: dataset_id.to_owned(),
                    primary: identities.primary().to_owned(),
                    effective_ts: effective_ts.unwrap_or(ingest_ms),
                    batch_seq: self.batch_seq,
                    body,
                };
                let fragments = &mut pending.header.fragments;
                match fragments
                    .iter_mut()
                    .find(|f| f.dataset_id == fragment.dataset_id && f.primary == fragment.primary)
                {
                    Some(existing) => *existing = fragment,
                    None => fragments.push(fragment),
                }
            }
            PreparedContent::Event { encoded } => {
                pending.new_events.push(encoded);
            }
        }
        if self.pending_bytes > self.flush_bytes {
            self.write_pending()?;
        }
        Ok(())
    }

    /// Links a row's identities into the graph and returns the (loaded) person they now all
    /// belong to.
    fn link(&mut self, identities: &IdentityKeys) -> Result<u64, ProfileStoreError> {
        // Rows of one person tend to come together (a file per source, events in time order):
        // the same identities as the last row's, whose person is still loaded, need no lookups.
        if let Some((last, person)) = &self.last_link
            && last.same_keys(identities)
            && self.pending.contains_key(person)
        {
            return Ok(*person);
        }
        let target = self.link_looked_up(identities.keys())?;
        self.last_link = Some((identities.clone(), target));
        Ok(target)
    }

    /// Finds the persons that own `keys` and makes every key point at the one they merge into.
    fn link_looked_up(&mut self, keys: &[String]) -> Result<u64, ProfileStoreError> {
        let hashes: Vec<IdentityHash> = keys
            .iter()
            .map(|key| IdentityHash::of(self.tenant_id, key))
            .collect();
        let owners: Vec<Option<u64>> = hashes
            .iter()
            .map(|&hash| self.identities.get(hash))
            .collect();
        let mut persons: Vec<u64> = owners.iter().flatten().copied().collect();
        persons.sort_unstable();
        persons.dedup();
        let target = match persons.as_slice() {
            [] => {
                let person_id = self.next_person;
                self.next_person += 1;
                self.created += 1;
                self.pending.insert(person_id, PendingPerson::new_person());
                person_id
            }
            [only] => {
                self.load(*only)?;
                if owners.iter().any(Option::is_none) {
                    self.read_header(*only)?;
                }
                *only
            }
            several => {
                for &person in several {
                    self.load(person)?;
                    self.read_header(person)?;
                }
                let target = *several
                    .iter()
                    .max_by_key(|p| self.pending[p].weight())
                    .expect("several persons");
                for &person in several.iter().filter(|&&p| p != target) {
                    self.absorb(target, person)?;
                }
                target
            }
        };
        let header = &mut self
            .pending
            .get_mut(&target)
            .expect("target is loaded")
            .header;
        for ((key, hash), owner) in keys.iter().zip(hashes).zip(owners) {
            // Identities of an absorbed person were re-pointed by `absorb`. A key the row names
            // twice is new only the first time.
            if owner.is_none() && self.identities.set_unowned(hash, target) {
                header.identities.push(key.clone());
            }
        }
        Ok(target)
    }

    /// Loads a person into the batch if it is not there yet, without its header: the last
    /// chunk's sequence number is all that appending events needs ([`BatchWriter::read_header`]
    /// reads the header for the writes that change it).
    fn load(&mut self, person_id: u64) -> Result<(), ProfileStoreError> {
        if !self.pending.contains_key(&person_id) {
            let last_seq = self.tables.last_chunk_seq(self.tenant_id, person_id)?;
            self.pending.insert(
                person_id,
                PendingPerson {
                    header: PersonHeader::default(),
                    header_read: false,
                    last_seq,
                    new_events: Vec::new(),
                },
            );
        }
        Ok(())
    }

    /// Reads the header of a loaded person if it has not been read yet.
    fn read_header(&mut self, person_id: u64) -> Result<(), ProfileStoreError> {
        let read = self
            .pending
            .get(&person_id)
            .expect("person is loaded")
            .header_read;
        if !read {
            let header = self
                .tables
                .read_header(self.segments.log(), self.tenant_id, person_id)?;
            let person = self.pending.get_mut(&person_id).expect("person is loaded");
            person.header = header;
            person.header_read = true;
        }
        Ok(())
    }

    /// Folds person `source` into `target`: identities, fragments, stored event
    /// chunks (re-keyed after the target's) and pending events.
    fn absorb(&mut self, target: u64, source: u64) -> Result<(), ProfileStoreError> {
        let source_person = self.pending.remove(&source).expect("source is loaded");
        let mut target_person = self.pending.remove(&target).expect("target is loaded");
        for key in &source_person.header.identities {
            self.identities
                .set(IdentityHash::of(self.tenant_id, key), target);
        }
        target_person
            .header
            .identities
            .extend(source_person.header.identities);
        target_person
            .header
            .fragments
            .extend(source_person.header.fragments);
        for seq in 1..=source_person.last_seq {
            let chunk = self
                .tables
                .chunks
                .remove(chunk_key(self.tenant_id, source, seq).as_slice())?
                .map(|guard| guard.value().to_vec())
                .ok_or_else(|| {
                    ProfileStoreError::Corrupt(format!("person {source} lacks event chunk {seq}"))
                })?;
            target_person.last_seq += 1;
            let new_key = chunk_key(self.tenant_id, target, target_person.last_seq);
            self.tables
                .chunks
                .insert(new_key.as_slice(), chunk.as_slice())?;
        }
        self.tables.remove_header(self.tenant_id, source)?;
        self.touched_partitions
            .insert(source / self.partition_persons);
        target_person.header.chunk_count = target_person.last_seq;
        target_person.header.event_count += source_person.header.event_count;
        target_person.new_events.extend(source_person.new_events);
        self.pending.insert(target, target_person);
        self.merged += 1;
        Ok(())
    }

    /// Writes every pending person, a new event chunk if it has new events
    /// (compacting past [`MAX_CHUNKS`]) and then its header, and drops them from memory.
    ///
    /// When the flush's new chunks and headers come to [`SEGMENT_MIN_BYTES`] or more, they are
    /// appended to the segment files in one write each per sealing thread and the B-tree gets
    /// pointers to them.
    ///
    /// Persons are written in key order: rows arrive in any person order, and one
    /// ordered sweep over the tables touches each B-tree page once per
    /// flush, where hash order would dirty and re-read pages all over it. Their
    /// chunks and headers are compressed on every core first ([`seal_persons`]), so
    /// the one thread that writes only inserts.
    fn write_pending(&mut self) -> Result<(), ProfileStoreError> {
        let mut pending = std::mem::take(&mut self.flushing);
        pending.extend(self.pending.drain());
        pending.sort_unstable_by_key(|(person_id, _)| *person_id);
        for (_, person) in &mut pending {
            if !person.new_events.is_empty() {
                person.last_seq += 1;
                person.header.chunk_count = person.last_seq;
                person.header.event_count += person.new_events.len() as u64;
            }
        }
        let sealed = seal_persons(&mut pending, &mut self.seal_buffers);
        let sealed_bytes: usize = self
            .seal_buffers
            .iter()
            .map(|b| b.chunks.len() + b.headers.len())
            .sum();
        // Per seal buffer, where its chunks and its headers start in the segment files.
        let mut chunk_starts = Vec::new();
        let mut header_starts = Vec::new();
        if sealed_bytes > 0 && sealed_bytes >= self.segment_min_bytes {
            for buffer in &self.seal_buffers {
                chunk_starts.push(self.tables.append_sealed(self.segments, &buffer.chunks)?);
                header_starts.push(self.tables.append_sealed(self.segments, &buffer.headers)?);
            }
        }
        // Where the value at `range` of a seal buffer's bytes lies in the segment files.
        let located = |starts: &[(u32, u64)], buffer: usize, range: &std::ops::Range<usize>| {
            starts.get(buffer).map(|&(segment, start)| SegmentLocation {
                segment,
                offset: start + range.start as u64,
                len: range.len() as u32,
            })
        };
        for ((person_id, mut person), sealed) in pending.drain(..).zip(sealed) {
            self.touched_partitions
                .insert(person_id / self.partition_persons);
            let buffer = &self.seal_buffers[sealed.buffer];
            if let Some(chunk) = sealed.chunk {
                let key = chunk_key(self.tenant_id, person_id, person.last_seq);
                match located(&chunk_starts, sealed.buffer, &chunk) {
                    Some(location) => self.tables.insert_chunk_pointer(&key, location)?,
                    None => {
                        self.tables
                            .chunks
                            .insert(key.as_slice(), &buffer.chunks[chunk])?;
                    }
                }
                if person.last_seq > MAX_CHUNKS {
                    let kept = compact_chunks(
                        self.tables,
                        self.segments,
                        self.tenant_id,
                        person_id,
                        person.last_seq,
                    )?;
                    person.last_seq = 1;
                    person.header.chunk_count = 1;
                    person.header.event_count = kept;
                }
            }
            if !person.header_read {
                continue;
            }
            let tenant_id = self.tenant_id;
            match sealed.header {
                Some(header) => match located(&header_starts, sealed.buffer, &header) {
                    Some(location) => self.tables.put_header(
                        tenant_id,
                        person_id,
                        &codec::encode_segment_location(location),
                    )?,
                    None => {
                        self.tables
                            .put_header(tenant_id, person_id, &buffer.headers[header])?
                    }
                },
                // Compaction changed the header after it was sealed.
                None => self.tables.put_header(
                    tenant_id,
                    person_id,
                    &codec::encode_header(&person.header),
                )?,
            }
        }
        self.flushing = pending;
        self.pending_bytes = 0;
        Ok(())
    }

    /// Writes what is left, makes the batch's segment appends durable and updates the counters
    /// (and the segment log's end, committed with them).
    fn finish(&mut self) -> Result<(), ProfileStoreError> {
        self.write_pending()?;
        self.tables.record_log_end(self.segments)?;
        self.tables.record_identity_end(self.identities)?;
        let tenant_id = self.tenant_id;
        self.tables.meta.insert(
            meta_key(tenant_id, TAG_NEXT_PERSON, "").as_slice(),
            self.next_person,
        )?;
        let delta = self.created as i64 - self.merged as i64;
        if delta != 0 {
            self.tables
                .bump(&meta_key(tenant_id, TAG_PERSON_COUNT, ""), delta)?;
        }
        for partition in std::mem::take(&mut self.touched_partitions) {
            self.tables
                .mark_partition(tenant_id, partition, self.batch_seq)?;
        }
        Ok(())
    }
}

impl PendingPerson {
    /// A person this batch creates: its whole (empty) header is known.
    fn new_person() -> Self {
        Self {
            header: PersonHeader::default(),
            header_read: true,
            last_seq: 0,
            new_events: Vec::new(),
        }
    }

    fn weight(&self) -> u64 {
        self.header.weight() + self.new_events.len() as u64
    }
}

/// Where the compressed values of one pending person lie, ready to insert.
struct SealedPerson {
    /// The index of the [`SealBuffer`] holding them.
    buffer: usize,
    /// The new event chunk in the buffer's `chunks`, if the person has new events.
    chunk: Option<std::ops::Range<usize>>,
    /// The header in the buffer's `headers`; `None` when the new chunk makes the person's chunks due for compaction, which
    /// changes the header.
    header: Option<std::ops::Range<usize>>,
}

/// One sealing thread's buffers, kept by a batch from flush to flush so that sealing a flush
/// allocates nothing once the first has grown them: fresh buffers per value (and per short-lived
/// thread) had every flush fault in new pages, which the kernel zeroes first.
#[derive(Default)]
struct SealBuffer {
    /// The sealed event chunks of the current flush, back to back: one write to a segment file.
    chunks: Vec<u8>,
    /// The sealed headers of the current flush, back to back.
    headers: Vec<u8>,
    /// Where a value is built before it is sealed.
    plain: Vec<u8>,
}

/// Persons below this many per flush are sealed on the writing thread: threads are not worth it.
const PARALLEL_SEAL_PERSONS: usize = 256;

/// Seals the new chunk and the header of each pending person (whose header already counts the
/// new chunk), in order, on every core, into `buffers` (one per thread, grown as needed). The
/// persons' new events are freed as they are sealed, on the sealing threads: millions of small
/// frees are no work for the one thread that writes.
fn seal_persons(
    pending: &mut [(u64, PendingPerson)],
    buffers: &mut Vec<SealBuffer>,
) -> Vec<SealedPerson> {
    for buffer in buffers.iter_mut() {
        buffer.chunks.clear();
        buffer.headers.clear();
    }
    let seal_all = |persons: &mut [(u64, PendingPerson)], index: usize, buffer: &mut SealBuffer| {
        let SealBuffer {
            chunks,
            headers,
            plain,
        } = buffer;
        persons
            .iter_mut()
            .map(|(_, person)| SealedPerson {
                buffer: index,
                chunk: (!person.new_events.is_empty()).then(|| {
                    codec::seal_events(&std::mem::take(&mut person.new_events), plain, chunks)
                }),
                header: (person.header_read && person.last_seq <= MAX_CHUNKS)
                    .then(|| codec::encode_header_into(&person.header, plain, headers)),
            })
            .collect::<Vec<_>>()
    };
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let threads = if pending.len() < PARALLEL_SEAL_PERSONS {
        1
    } else {
        threads
    };
    if buffers.len() < threads {
        buffers.resize_with(threads, SealBuffer::default);
    }
    if threads == 1 {
        return seal_all(pending, 0, &mut buffers[0]);
    }
    let part = pending.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let parts: Vec<_> = pending
            .chunks_mut(part)
            .zip(buffers.iter_mut().enumerate())
            .map(|(persons, (index, buffer))| scope.spawn(move || seal_all(persons, index, buffer)))
            .collect();
        parts
            .into_iter()
            .flat_map(|part| part.join().expect("sealing does not panic"))
            .collect()
    })
}

/// Rewrites the event chunks `1..=last_seq` of a person as one (sequence number 1), dropping
/// events superseded by a later write with the same (dataset, `_id`); returns how many it kept.
///
/// The new chunk goes where the old ones were: to a segment file if any of them was in one (a
/// person of bulk loads, whose history would otherwise move back into B-tree pages), else into
/// the B-tree (a person of streamed events, whose compactions would otherwise leave dead segment
/// bytes each time).
fn compact_chunks(
    tables: &mut Tables<'_>,
    segments: &mut LogWrite<'_>,
    tenant_id: u32,
    person_id: u64,
    last_seq: u32,
) -> Result<u64, ProfileStoreError> {
    let mut stored = Vec::with_capacity(last_seq as usize);
    for seq in 1..=last_seq {
        let chunk = tables.remove_chunk(&chunk_key(tenant_id, person_id, seq))?;
        stored.push(chunk.unwrap_or_default());
    }
    let mut in_segments = false;
    for chunk in &stored {
        in_segments |= codec::segment_location(chunk)?.is_some();
    }
    let opened = open_chunks(
        segments.log(),
        stored
            .iter()
            .filter(|chunk| !chunk.is_empty())
            .map(Vec::as_slice),
    )?;
    let mut events = Vec::new();
    for chunk in &opened {
        codec::decode_chunk(chunk, &mut events)?;
    }
    let mut latest: HashMap<(&str, &str), usize> = HashMap::with_capacity(events.len());
    for (index, event) in events.iter().enumerate() {
        latest.insert((event.dataset_id, event.id), index);
    }
    let keep: HashSet<usize> = latest.into_values().collect();
    let mut compacted = codec::new_chunk();
    let mut count = 0;
    for (index, event) in events.iter().enumerate() {
        if keep.contains(&index) {
            codec::push_event(&mut compacted, event)?;
            count += 1;
        }
    }
    let sealed = codec::seal_chunk(&compacted.bytes);
    let key = chunk_key(tenant_id, person_id, 1);
    if in_segments {
        let (segment, offset) = tables.append_sealed(segments, &sealed)?;
        let len = sealed.len() as u32;
        let location = SegmentLocation {
            segment,
            offset,
            len,
        };
        tables.insert_chunk_pointer(&key, location)?;
    } else {
        tables.chunks.insert(key.as_slice(), sealed.as_slice())?;
    }
    Ok(count)
}

/// Where the value a table gave back (replaced or removed) is kept in the segment log, if there.
fn stored_location(
    value: Option<redb::AccessGuard<'_, &'static [u8]>>,
) -> Result<Option<SegmentLocation>, ProfileStoreError> {
    value.map_or(Ok(None), |value| codec::segment_location(value.value()))
}

/// Decodes a stored person header, read from its segment file first when it is kept in one.
fn open_header(segments: &SegmentLog, stored: &[u8]) -> Result<PersonHeader, ProfileStoreError> {
    open_header_with(segments, stored, &mut Vec::new())
}

/// [`open_header`], reading a header kept in a segment file into `buffer` (a pass over many
/// persons reuses it rather than allocating per header).
fn open_header_with(
    segments: &SegmentLog,
    stored: &[u8],
    buffer: &mut Vec<u8>,
) -> Result<PersonHeader, ProfileStoreError> {
    match codec::segment_location(stored)? {
        Some(location) => {
            buffer.clear();
            segments.read_into(location, buffer)?;
            codec::decode_header(buffer)
        }
        None => codec::decode_header(stored),
    }
}

/// The chunks [`codec::decode_chunk`] reads from stored chunk values: those kept in segment
/// files are read from them first.
fn open_chunks<'v>(
    segments: &SegmentLog,
    stored: impl IntoIterator<Item = &'v [u8]>,
) -> Result<Vec<std::borrow::Cow<'v, [u8]>>, ProfileStoreError> {
    stored
        .into_iter()
        .map(|value| match codec::segment_location(value)? {
            Some(location) => {
                let sealed = segments.read(location)?;
                Ok(std::borrow::Cow::Owned(
                    codec::open_chunk(&sealed)?.into_owned(),
                ))
            }
            None => codec::open_chunk(value),
        })
        .collect()
}

/// Parses an XDM date-time: an ISO 8601 string or epoch milliseconds (§4.7).
pub fn parse_timestamp(value: &Value) -> Option<i64> {
    match value {
        Value::String(text) => parse_timestamp_text(text),
        Value::Number(number) => number.as_i64(),
        _ => None,
    }
}

/// Parses an ISO 8601 (RFC 3339) date-time string into epoch milliseconds.
pub fn parse_timestamp_text(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

fn tenant_name(tenant: &Tenant) -> String {
    format!("{}\n{}", tenant.org_id, tenant.sandbox)
}

fn lookup_tenant(
    txn: &redb::ReadTransaction,
    tenant: &Tenant,
) -> Result<Option<u32>, ProfileStoreError> {
    let tenants = txn.open_table(TENANTS)?;
    Ok(tenants
        .get(tenant_name(tenant).as_str())?
        .map(|v| v.value()))
}

fn lookup_tenant_in(
    tenants: &impl ReadableTable<&'static str, u32>,
    tenant: &Tenant,
) -> Result<Option<u32>, ProfileStoreError> {
    Ok(tenants
        .get(tenant_name(tenant).as_str())?
        .map(|v| v.value()))
}

/// The key of a person's header in `profile_headers`.
fn header_key(tenant_id: u32, person_id: u64) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[..4].copy_from_slice(&tenant_id.to_be_bytes());
    key[4..].copy_from_slice(&person_id.to_be_bytes());
    key
}

/// The key of a person's event chunk `seq` (from 1) in `profile_chunks`.
fn chunk_key(tenant_id: u32, person_id: u64, seq: u32) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&tenant_id.to_be_bytes());
    key[4..12].copy_from_slice(&person_id.to_be_bytes());
    key[12..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// The person id of a key of `profile_headers`.
fn split_header_key(key: &[u8]) -> Result<u64, ProfileStoreError> {
    let person_id: [u8; 8] = key
        .get(4..)
        .and_then(|id| id.try_into().ok())
        .ok_or_else(|| ProfileStoreError::Corrupt("header key is not 12 bytes".to_owned()))?;
    Ok(u64::from_be_bytes(person_id))
}

/// The keys of one person's event chunks from sequence number `first_seq` on, as a range to
/// read.
fn chunk_key_range(tenant_id: u32, person_id: u64, first_seq: u32) -> std::ops::Range<[u8; 16]> {
    chunk_key(tenant_id, person_id, first_seq)..chunk_key(tenant_id, person_id + 1, 0)
}

fn split_chunk_key(key: &[u8]) -> Result<(u64, u32), ProfileStoreError> {
    if key.len() != 16 {
        return Err(ProfileStoreError::Corrupt(
            "chunk key is not 16 bytes".to_owned(),
        ));
    }
    let person_id = u64::from_be_bytes(key[4..12].try_into().expect("8 bytes"));
    let seq = u32::from_be_bytes(key[12..].try_into().expect("4 bytes"));
    Ok((person_id, seq))
}

fn meta_key(tenant_id: u32, tag: u8, suffix: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(5 + suffix.len());
    key.extend_from_slice(&tenant_id.to_be_bytes());
    key.push(tag);
    key.extend_from_slice(suffix.as_bytes());
    key
}

/// The key of a counter kept per `index` (a partition, a segment) under `tag`: the prefix
/// [`indexed_counters`] reads back, then the index in big-endian.
/// The counter at `key` in `profile_meta`; 0 when it was never written.
fn counter(
    meta: &impl ReadableTable<&'static [u8], u64>,
    key: &[u8],
) -> Result<u64, ProfileStoreError> {
    Ok(meta.get(key)?.map_or(0, |v| v.value()))
}

fn indexed_counter_key(tenant_id: u32, tag: u8, index: u64) -> Vec<u8> {
    let mut key = meta_key(tenant_id, tag, "");
    key.extend_from_slice(&index.to_be_bytes());
    key
}

fn segment_live_key(segment: u32) -> Vec<u8> {
    indexed_counter_key(GLOBAL, TAG_SEGMENT_LIVE, u64::from(segment))
}

/// The live bytes of every segment file that has a count.
fn segments_live(
    meta: &impl ReadableTable<&'static [u8], u64>,
) -> Result<BTreeMap<u32, u64>, ProfileStoreError> {
    let prefix = meta_key(GLOBAL, TAG_SEGMENT_LIVE, "");
    indexed_counters(meta, &prefix)?
        .into_iter()
        .map(|(segment, live)| {
            let segment = u32::try_from(segment)
                .map_err(|_| ProfileStoreError::Corrupt("segment id out of range".into()))?;
            Ok((segment, live))
        })
        .collect()
}

/// The counters kept under `prefix` followed by a big-endian `u64` index (a partition, a
/// segment), with their indexes, in index order.
fn indexed_counters(
    meta: &impl ReadableTable<&'static [u8], u64>,
    prefix: &[u8],
) -> Result<Vec<(u64, u64)>, ProfileStoreError> {
    let mut counters = Vec::new();
    for entry in meta.range(prefix..)? {
        let (key, value) = entry?;
        let Some(index) = key.value().strip_prefix(prefix) else {
            break;
        };
        let index =
            u64::from_be_bytes(index.try_into().map_err(|_| {
                ProfileStoreError::Corrupt("counter key of the wrong length".into())
            })?);
        counters.push((index, value.value()));
    }
    Ok(counters)
}

fn partition_version_key(tenant_id: u32, partition: u64) -> Vec<u8> {
    indexed_counter_key(tenant_id, TAG_PARTITION_VERSION, partition)
}

#[cfg(test)]
mod tests;
