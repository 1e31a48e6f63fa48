//! Columnar snapshots of the profile store, kept on disk per partition, that segment jobs read
//! instead of merging and flattening every profile on every run.
//!
//! # Why
//!
//! A pass over the store decodes each person's header and event chunks, merges its fragments
//! into one profile and flattens profile and events into columns before a definition is
//! evaluated; that is about three quarters of a segment job, and it gives the same tables every
//! time the persons did not change. So the flattened tables are kept: the store is cut into
//! partitions of [`PARTITION_PERSONS`](crate::store::profiles::PARTITION_PERSONS) person ids, each partition's merged profiles are stored as
//! [`ProfileTables`] (all fields, not projected, so any definition can read them) in one file per
//! merge policy, and a pass reads a partition's file when it is current and rebuilds it from the
//! store when it is not.
//!
//! # Staying exact
//!
//! The store gives every partition a version: the sequence number of the last write that touched
//! one of its persons ([`ProfileStore::partitions`]), read on the same snapshot the pass scans. A
//! file records the version it was built at and is used only while it matches, so a pass sees
//! exactly the store of its read snapshot, cached or not. Files are derived data: written to a
//! temporary file and renamed, checked with a CRC-32 when read; a torn, damaged or old-format file
//! is rebuilt, and a file that cannot be written is only logged (the pass goes on with the
//! partition it built in memory).
//!
//! # Layout
//!
//! `<data dir>/columnar/<tenant hash>/<merge policy hash>/<partition>.cols`:
//!
//! | field | encoding |
//! | --- | --- |
//! | magic, format | `SGCS`, `u8` |
//! | partition version | `u64` |
//! | merged profiles scanned, graphs skipped (> 50 identities) | `u64`, `u64` |
//! | namespace sets | count, then each set's names |
//! | rows | count, then each row's XID and namespace set index |
//! | tables | [`ProfileTables::encode`] |
//! | CRC-32 of all of the above | `u32` |

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::sample::columns::encoding::{Reader, Writer};
use crate::sample::columns::{DecodeError, ProfileTables, ProfileTablesBuilder};
use crate::store::profiles::{
    MergePolicy, MergedProfile, NamespaceSets, Partitions, ProfileStore, ProfileStoreError,
};
use crate::tenant::Tenant;

/// The folder of snapshots inside the data directory.
pub const DIR: &str = "columnar";

const MAGIC: &[u8; 4] = b"SGCS";
const FORMAT_VERSION: u8 = 1;
/// Bytes of the magic, format and version that start every file.
const HEADER_BYTES: usize = 13;
const FILE_EXTENSION: &str = "cols";
/// The name prefix of a partition file being written.
const PARTIAL_PREFIX: &str = ".partial-";

/// Errors of a pass over the snapshots: only the store's (a damaged cache file is rebuilt).
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Reading the profile store failed.
    #[error(transparent)]
    Store(#[from] ProfileStoreError),
    /// A partition's profiles could not be flattened (a column past 4 GiB of strings).
    #[error("partition {partition} cannot be flattened: {reason}")]
    Flatten {
        /// The partition.
        partition: usize,
        /// Why.
        reason: String,
    },
}

/// The merged profiles of one partition, columnar, with what a job needs of each besides its
/// fields.
#[derive(Debug)]
pub struct Partition {
    /// The partition's index.
    pub index: usize,
    /// The profiles that have an identity (all, in practice), one row each.
    pub tables: ProfileTables,
    /// Row by row: the profile's XID.
    pub xids: Vec<String>,
    /// Row by row: an index into [`Partition::namespace_sets`].
    pub namespace_set: Vec<u32>,
    /// Distinct sorted sets of identity namespaces of the rows.
    pub namespace_sets: Vec<Vec<String>>,
    /// Merged profiles the store gave, rows and profiles without identities alike.
    pub profiles_scanned: u64,
    /// Persons skipped because their graph exceeds 50 identities.
    pub skipped_large_graphs: u64,
}

impl Partition {
    /// The namespaces of row `row`'s identities, sorted, without repeats.
    pub fn namespaces(&self, row: usize) -> &[String] {
        &self.namespace_sets[self.namespace_set[row] as usize]
    }

    /// Builds the partition from the store's merged profiles.
    fn build(
        partitions: &Partitions,
        index: usize,
        policy: &MergePolicy,
    ) -> Result<Partition, SnapshotError> {
        let mut tables = ProfileTablesBuilder::default();
        let (mut xids, mut namespace_set) = (Vec::new(), Vec::new());
        let mut namespace_sets = NamespaceSets::default();
        let mut flatten_error = None;
        let stats = partitions.scan(index, policy, |profile: MergedProfile| {
            let Some(xid) = profile.xid() else {
                return;
            };
            if flatten_error.is_some() {
                return;
            }
            let events = profile.events.iter().map(|event| event.packed.as_slice());
            if let Err(error) = tables.push_with_packed_events(&profile.attributes, events) {
                flatten_error = Some(error.to_string());
                return;
            }
            namespace_set.push(namespace_sets.intern(&profile.namespaces()));
            xids.push(xid);
        })?;
        if let Some(reason) = flatten_error {
            return Err(SnapshotError::Flatten {
                partition: index,
                reason,
            });
        }
        Ok(Partition {
            index,
            tables: tables.finish(),
            xids,
            namespace_set,
            namespace_sets: namespace_sets.into_sets(),
            profiles_scanned: stats.profiles,
            skipped_large_graphs: stats.skipped_large_graphs,
        })
    }

    /// The file contents of the partition at `version`.
    fn encode(&self, version: u64) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.tables.heap_bytes() + 64 * self.xids.len());
        bytes.extend_from_slice(MAGIC);
        let mut writer = Writer(&mut bytes);
        writer.u8(FORMAT_VERSION);
        writer.u64(version);
        writer.u64(self.profiles_scanned);
        writer.u64(self.skipped_large_graphs);
        writer.u64(self.namespace_sets.len() as u64);
        for set in &self.namespace_sets {
            writer.u64(set.len() as u64);
            for namespace in set {
                writer.str(namespace);
            }
        }
        writer.u64(self.xids.len() as u64);
        for (xid, set) in self.xids.iter().zip(&self.namespace_set) {
            writer.str(xid);
            writer.u64(u64::from(*set));
        }
        self.tables.encode(&mut bytes);
        let checksum = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&checksum.to_le_bytes());
        bytes
    }

    /// Reads a file written by [`Partition::encode`]; an error unless it is of this format and of
    /// `version` (checked first, from the header, so a stale file is not checksummed) and intact.
    fn decode(index: usize, bytes: &[u8], version: u64) -> Result<Partition, DecodeError> {
        match header_version(bytes) {
            Some(written_at) if written_at == version => {}
            Some(written_at) => {
                return Err(DecodeError(format!(
                    "stale: version {written_at}, not {version}"
                )));
            }
            None => return Err(DecodeError("not a snapshot file of this format".into())),
        }
        let damaged = || DecodeError("checksum mismatch".into());
        let (body, checksum) = bytes.split_last_chunk::<4>().ok_or_else(damaged)?;
        if crc32fast::hash(body) != u32::from_le_bytes(*checksum) {
            return Err(damaged());
        }
        let body = &body[HEADER_BYTES..];
        let mut reader = Reader::new(body);
        let (profiles_scanned, skipped_large_graphs) = (reader.u64()?, reader.u64()?);
        let set_count = reader.len(8)?;
        let mut namespace_sets = Vec::with_capacity(set_count);
        for _ in 0..set_count {
            let names = reader.len(8)?;
            namespace_sets.push(
                (0..names)
                    .map(|_| reader.str().map(str::to_owned))
                    .collect::<Result<Vec<_>, _>>()?,
            );
        }
        let rows = reader.len(16)?;
        let (mut xids, mut namespace_set) = (Vec::with_capacity(rows), Vec::with_capacity(rows));
        for _ in 0..rows {
            xids.push(reader.str()?.to_owned());
            let set = reader.u64()?;
            if set >= set_count as u64 {
                return Err(DecodeError("namespace set".into()));
            }
            namespace_set.push(set as u32);
        }
        let (tables, read) = ProfileTables::decode(&body[reader.position()..])?;
        if reader.position() + read != body.len() || tables.len() != xids.len() {
            return Err(DecodeError("rows and tables disagree".into()));
        }
        Ok(Partition {
            index,
            tables,
            xids,
            namespace_set,
            namespace_sets,
            profiles_scanned,
            skipped_large_graphs,
        })
    }
}

/// Which partitions a pass hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// All of them, read or rebuilt.
    Every,
    /// Only those rebuilt; current files are not read.
    StaleOnly,
}

/// Counts of one [`ColumnarSnapshots::for_each_partition`] pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassStats {
    /// Merged profiles of the partitions handed out.
    pub profiles_scanned: u64,
    /// Persons skipped because their graph exceeds 50 identities.
    pub skipped_large_graphs: u64,
    /// Partitions read from current files (for a refresh: found current by their header).
    pub partitions_read: u64,
    /// Partitions rebuilt from the store (missing, stale or damaged files).
    pub partitions_built: u64,
}

/// The columnar snapshots of one data directory. See the module documentation.
#[derive(Debug, Clone)]
pub struct ColumnarSnapshots {
    dir: PathBuf,
}

impl ColumnarSnapshots {
    /// Opens the snapshots kept under `data_dir` (the folder is created when the first is
    /// written), removing the temporary files of writes a crash interrupted.
    pub fn open(data_dir: &Path) -> std::io::Result<Self> {
        let dir = data_dir.join(DIR);
        remove_partial_files(&dir)?;
        Ok(Self { dir })
    }

    /// Hands every partition of the tenant's merged profiles under `policy` to one of
    /// `consumers`, each consumer on its own thread taking the next partition when done with one,
    /// all partitions from one read snapshot of the store. A consumer answering `Break` ends the
    /// pass (partitions already taken are finished).
    pub fn for_each_partition<F>(
        &self,
        store: &ProfileStore,
        tenant: &Tenant,
        policy: &MergePolicy,
        consumers: &mut [F],
    ) -> Result<PassStats, SnapshotError>
    where
        F: FnMut(&Partition) -> ControlFlow<()> + Send,
    {
        self.pass(store, tenant, policy, consumers, Pass::Every)
    }

    /// Rebuilds the partitions whose files are missing or stale, one per thread of `workers`,
    /// without reading current files beyond their header (a refresh after a write that touched a
    /// few partitions costs those few). `give_way` is asked after each rebuilt partition; `true`
    /// ends the refresh. Damaged files with a current header are left to the next pass, which
    /// checks them whole.
    pub fn refresh(
        &self,
        store: &ProfileStore,
        tenant: &Tenant,
        policy: &MergePolicy,
        workers: usize,
        give_way: &(dyn Fn() -> bool + Sync),
    ) -> Result<PassStats, SnapshotError> {
        let mut consumers: Vec<_> = (0..workers.max(1))
            .map(|_| {
                |_: &Partition| match give_way() {
                    true => ControlFlow::Break(()),
                    false => ControlFlow::Continue(()),
                }
            })
            .collect();
        self.pass(store, tenant, policy, &mut consumers, Pass::StaleOnly)
    }

    fn pass<F>(
        &self,
        store: &ProfileStore,
        tenant: &Tenant,
        policy: &MergePolicy,
        consumers: &mut [F],
        which: Pass,
    ) -> Result<PassStats, SnapshotError>
    where
        F: FnMut(&Partition) -> ControlFlow<()> + Send,
    {
        let Some(partitions) = store.partitions(tenant)? else {
            return Ok(PassStats::default());
        };
        let folder = self
            .dir
            .join(format!(
                "{:016x}",
                fingerprint(&format!("{}\n{}", tenant.org_id, tenant.sandbox))
            ))
            .join(format!("{:016x}", fingerprint(&policy_key(policy))));
        let (next, stop) = (AtomicUsize::new(0), AtomicBool::new(false));
        let work = |consume: &mut F| -> Result<PassStats, SnapshotError> {
            let mut stats = PassStats::default();
            while !stop.load(Ordering::Relaxed) {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= partitions.len() {
                    break;
                }
                let path = folder.join(format!("{index:08}.{FILE_EXTENSION}"));
                if which == Pass::StaleOnly
                    && version_on_disk(&path) == Some(partitions.version(index))
                {
                    stats.partitions_read += 1;
                    continue;
                }
                let (partition, built) = load_or_build(&folder, &path, &partitions, index, policy)?;
                stats.profiles_scanned += partition.profiles_scanned;
                stats.skipped_large_graphs += partition.skipped_large_graphs;
                match built {
                    true => stats.partitions_built += 1,
                    false => stats.partitions_read += 1,
                }
                if consume(&partition).is_break() {
                    stop.store(true, Ordering::Relaxed);
                }
            }
            Ok(stats)
        };
        let results: Vec<Result<PassStats, SnapshotError>> = match consumers {
            [only] => vec![work(only)],
            _ => std::thread::scope(|scope| {
                let handles: Vec<_> = consumers
                    .iter_mut()
                    .map(|consume| {
                        let work = &work;
                        let stop = &stop;
                        scope.spawn(move || {
                            let result = work(consume);
                            // A failing thread stops the others: the pass fails anyway.
                            if result.is_err() {
                                stop.store(true, Ordering::Relaxed);
                            }
                            result
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|handle| {
                        handle
                            .join()
                            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                    })
                    .collect()
            }),
        };
        let mut total = PassStats::default();
        for result in results {
            let stats = result?;
            total.profiles_scanned += stats.profiles_scanned;
            total.skipped_large_graphs += stats.skipped_large_graphs;
            total.partitions_read += stats.partitions_read;
            total.partitions_built += stats.partitions_built;
        }
        Ok(total)
    }
}

/// Partition `index` from its file when current, else built from the store and saved; the flag
/// tells whether it was built.
fn load_or_build(
    folder: &Path,
    path: &Path,
    partitions: &Partitions,
    index: usize,
    policy: &MergePolicy,
) -> Result<(Partition, bool), SnapshotError> {
    let version = partitions.version(index);
    match std::fs::read(path) {
        Ok(bytes) => match Partition::decode(index, &bytes, version) {
            Ok(partition) => return Ok((partition, false)),
            Err(error) => {
                tracing::debug!(%error, path = %path.display(), "rebuilding a snapshot partition")
            }
        },
        Err(error) => {
            tracing::debug!(%error, path = %path.display(), "building a snapshot partition")
        }
    }
    let partition = Partition::build(partitions, index, policy)?;
    if let Err(error) = save(folder, path, &partition.encode(version)) {
        tracing::warn!(%error, path = %path.display(), "cannot save a columnar snapshot partition");
    }
    Ok((partition, true))
}

/// The partition version a file's header names, without reading the rest.
fn version_on_disk(path: &Path) -> Option<u64> {
    let mut header = [0u8; HEADER_BYTES];
    std::io::Read::read_exact(&mut std::fs::File::open(path).ok()?, &mut header).ok()?;
    header_version(&header)
}

/// The partition version named by a file's header (magic, format, version), if it is a snapshot
/// file of this format.
fn header_version(bytes: &[u8]) -> Option<u64> {
    let rest = bytes.get(..HEADER_BYTES)?.strip_prefix(MAGIC)?;
    let (format, version) = rest.split_first()?;
    let version = u64::from_le_bytes(version.try_into().ok()?);
    (*format == FORMAT_VERSION).then_some(version)
}

/// Writes `bytes` to `path` through a temporary file in the same folder, so readers see the old
/// file or the new one, never a part.
fn save(folder: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(folder)?;
    let mut file = tempfile::Builder::new()
        .prefix(PARTIAL_PREFIX)
        .tempfile_in(folder)?;
    std::io::Write::write_all(&mut file, bytes)?;
    file.persist(path).map_err(|error| error.error)?;
    Ok(())
}

/// Removes, under `dir`, the files of [`save`]s that never got renamed.
fn remove_partial_files(dir: &Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            remove_partial_files(&path)?;
        } else if path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.starts_with(PARTIAL_PREFIX))
        {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// The merge policy as the key of its snapshots.
fn policy_key(policy: &MergePolicy) -> String {
    // Serialising a plain struct of enums and strings cannot fail.
    serde_json::to_string(policy).unwrap_or_default()
}

/// FNV-1a: a stable 64-bit hash for folder names (std's hashers may change between releases).
fn fingerprint(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests;
