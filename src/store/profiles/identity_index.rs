//! The identity graph's index, identity → person, held in memory and made durable by an
//! append-only log beside the database.
//!
//! # Why not a B-tree table
//!
//! Every row of a batch looks its identities up, and every new person inserts them. In redb each
//! of those was a B-tree descent over random keys, and each insert rewrote its path: over a 1M
//! load (3M identities) that was a third of the writing thread's time during the events, and its
//! pages crowded the rest out of redb's cache as the store grew. Here a lookup is a hash probe and
//! a write appends 24 bytes.
//!
//! # Keys
//!
//! An identity is kept as a 128-bit SipHash-1-3 fingerprint of its tenant id and key
//! ([`IdentityHash`]), so an entry is 24 bytes whatever the identity's length (~45 bytes of memory
//! each with the hash tables' slack: +130 MB peak for the 2.8M identities of a million generated
//! profiles, +310 MB at 5M). Two distinct identities share a fingerprint with probability about
//! n²/2¹²⁹: 10⁻²² for 10⁹ identities, far below the odds of an undetected disk error.
//!
//! # Durability
//!
//! A write ([`IdentityIndex::begin`]) gathers its changes apart from the shared map, so neither
//! its own readers nor other threads see them before it commits. At the end it appends them to
//! the log at the committed end and syncs ([`IndexWrite::sync`]); the store records the new end
//! in the same redb transaction as the rest of the write, and [`IndexWrite::commit`] applies the
//! changes to the map while holding readers off across the redb commit, so a reader sees the map
//! and the database of the same write. Bytes past the committed end belong to a write that did
//! not commit: the next write overwrites them and [`IdentityIndex::open`] cuts them off.
//!
//! # Growth
//!
//! The log holds each write's final value per changed identity: one entry per identity for a
//! bulk load, plus one per identity re-pointed by a merge (an identity moves O(log n) times, see
//! the store's module documentation) and one per identity deleted. It is read whole at opening
//! (a store of 1M generated profiles, 2.8M entries, serves 0.8 s after start). When most of it is
//! superseded, the store rewrites it at opening ([`IndexWrite::rewrite_if_sparse`]) into the
//! other of two files ([`INDEX_FILES`]): the live entries are written and synced there, and the
//! redb commit that records the new file and end is the switch; a rewrite that did not commit
//! leaves the old file as it was, and the file not in use is removed at opening.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};

use siphasher::sip128::{Hasher128, SipHasher13};

/// The log's two file names inside the store's directory: one is in use, the other takes a
/// rewrite of the live entries when most of the log is superseded.
pub const INDEX_FILES: [&str; 2] = ["identities-0.log", "identities-1.log"];

/// Where the log's committed entries end: in which of [`INDEX_FILES`], and at which byte.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogPosition {
    /// The index of the file in use in [`INDEX_FILES`].
    pub file: usize,
    /// The end of the committed entries in it.
    pub end: u64,
}

/// Bytes of one log entry: the fingerprint's two halves and the person, little-endian.
const ENTRY_BYTES: usize = 24;

/// The map is cut into this many shards, each grown on its own, so that growing never needs a
/// second copy of the whole map (at 15M identities one table doubling would briefly hold 1.3 GB).
const SHARDS: usize = 64;

/// [`IndexWrite::sync`] writes the log in pieces of at most this many bytes.
const WRITE_PIECE_BYTES: usize = 1 << 20;

/// A person id that marks a removed identity in the log; person ids start at 1.
const REMOVED: u64 = 0;

/// The fixed SipHash key: fingerprints are stored, so they must never change.
const SIP_KEYS: (u64, u64) = (0x7365_676d_656e_7464, 0x6964_656e_7469_7479);

/// The fingerprint of one identity of one tenant (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentityHash([u64; 2]);

impl IdentityHash {
    /// The fingerprint of `identity_key` (`namespace \0 id`) in tenant `tenant_id`.
    pub fn of(tenant_id: u32, identity_key: &str) -> Self {
        let mut hasher = SipHasher13::new_with_keys(SIP_KEYS.0, SIP_KEYS.1);
        hasher.write(&tenant_id.to_be_bytes());
        hasher.write(identity_key.as_bytes());
        let (high, low) = hasher.finish128().as_u64();
        Self([high, low])
    }

    fn shard(self) -> usize {
        (self.0[1] >> 58) as usize % SHARDS
    }
}

impl Hash for IdentityHash {
    /// A fingerprint is already uniformly spread: its first half is the table's hash as it is.
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0[0]);
    }
}

/// Passes on the one `u64` a [`IdentityHash`] writes.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else in rather than lose it.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

type Shard = HashMap<IdentityHash, u64, BuildHasherDefault<PassThrough>>;

/// The index of one store: read by any thread, written by one write at a time.
#[derive(Debug)]
pub struct IdentityIndex {
    shards: RwLock<Vec<Shard>>,
    log: Mutex<IndexLog>,
}

/// The appending side of the log.
#[derive(Debug)]
struct IndexLog {
    /// The store's directory.
    dir: PathBuf,
    /// The file in use.
    file: File,
    /// The position recorded by the last committed write.
    committed: LogPosition,
}

impl IdentityIndex {
    /// Opens the log in `store_dir` whose last committed write ended at `committed` (the default
    /// for a new store), cutting off what writes that did not commit left past it and removing
    /// the other file, and reads it into memory.
    pub fn open(store_dir: &Path, committed: LogPosition) -> io::Result<Self> {
        let name = INDEX_FILES
            .get(committed.file)
            .ok_or_else(|| invalid(format!("no identity log file {}", committed.file)))?;
        // The file not in use holds a superseded log or a rewrite that never committed.
        match std::fs::remove_file(store_dir.join(INDEX_FILES[1 - committed.file])) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(store_dir.join(name))?;
        let length = file.metadata()?.len();
        let end = committed.end;
        if length < end || !end.is_multiple_of(ENTRY_BYTES as u64) {
            return Err(invalid(format!(
                "{name} holds {length} bytes, but its committed end is byte {end}"
            )));
        }
        if length > end {
            file.set_len(end)?;
            file.sync_all()?;
        }
        let entries = end / ENTRY_BYTES as u64;
        // Sized for the log's entries at once rather than grown as they are read: at most
        // twice the live identities, since a log mostly superseded is rewritten.
        let mut shards: Vec<Shard> = (0..SHARDS)
            .map(|_| Shard::with_capacity_and_hasher(entries as usize / SHARDS, Default::default()))
            .collect();
        let mut reader = io::BufReader::with_capacity(1 << 20, &file);
        let mut entry = [0u8; ENTRY_BYTES];
        for _ in 0..entries {
            reader.read_exact(&mut entry)?;
            let (hash, person) = decode_entry(&entry);
            apply(&mut shards[hash.shard()], hash, person);
        }
        // A log of many removed identities sized the shards for more than remain.
        for shard in &mut shards {
            if shard.len() * 4 < shard.capacity() {
                shard.shrink_to_fit();
            }
        }
        // New writes start in a new directory entry's file: its name must be durable before a
        // commit counts on its bytes.
        if end == 0 {
            File::open(store_dir)?.sync_all()?;
        }
        Ok(Self {
            shards: RwLock::new(shards),
            log: Mutex::new(IndexLog {
                dir: store_dir.to_owned(),
                file,
                committed,
            }),
        })
    }

    /// A consistent view of the committed index for reading; hold it while opening the database
    /// snapshot the answers are used with (see the module documentation).
    pub fn read(&self) -> IndexRead<'_> {
        IndexRead(self.shards.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Starts the changes of one write; it holds the log until it commits or drops.
    pub fn begin(&self) -> IndexWrite<'_> {
        IndexWrite {
            index: self,
            log: self.log.lock().unwrap_or_else(PoisonError::into_inner),
            changes: new_shards(),
            synced: None,
            rewritten: None,
        }
    }

    /// Identities in the committed index.
    pub fn len(&self) -> usize {
        self.read().0.iter().map(HashMap::len).sum()
    }

    fn get(&self, hash: IdentityHash) -> Option<u64> {
        self.read().get(hash)
    }
}

/// A read view of the committed index ([`IdentityIndex::read`]).
pub struct IndexRead<'a>(RwLockReadGuard<'a, Vec<Shard>>);

impl IndexRead<'_> {
    /// The person the identity belongs to.
    pub fn get(&self, hash: IdentityHash) -> Option<u64> {
        self.0[hash.shard()].get(&hash).copied()
    }
}

/// The changes of one write ([`IdentityIndex::begin`]).
pub struct IndexWrite<'a> {
    index: &'a IdentityIndex,
    log: MutexGuard<'a, IndexLog>,
    /// The final value of each identity this write changed, [`REMOVED`] for a removed one; in
    /// shards like the index's, so that a commit moves them over one shard at a time and a bulk
    /// load's changes are never in memory twice.
    changes: Vec<Shard>,
    /// The log's position after [`IndexWrite::sync`].
    synced: Option<LogPosition>,
    /// The other file, holding the live entries, after [`IndexWrite::rewrite_if_sparse`].
    rewritten: Option<File>,
}

impl IndexWrite<'_> {
    /// The person the identity belongs to, with this write's changes.
    pub fn get(&self, hash: IdentityHash) -> Option<u64> {
        match self.changes[hash.shard()].get(&hash) {
            Some(&REMOVED) => None,
            Some(&person) => Some(person),
            None => self.index.get(hash),
        }
    }

    /// Points the identity at `person`.
    pub fn set(&mut self, hash: IdentityHash, person: u64) {
        debug_assert_ne!(person, REMOVED, "person ids start at 1");
        debug_assert!(
            self.rewritten.is_none(),
            "a rewrite takes no changes after it"
        );
        self.changes[hash.shard()].insert(hash, person);
    }

    /// Points an identity that [`IndexWrite::get`] found without a person at `person`, unless
    /// this write has pointed it at one since; returns whether it did. One probe of this write's
    /// changes, where `get` and then `set` took three: a bulk load links millions of new
    /// identities, each a cache miss per probe, on the one writing thread.
    pub fn set_unowned(&mut self, hash: IdentityHash, person: u64) -> bool {
        debug_assert_ne!(person, REMOVED, "person ids start at 1");
        debug_assert!(
            self.index.get(hash).is_none() || self.changes[hash.shard()].contains_key(&hash),
            "the identity had no person when the caller looked"
        );
        match self.changes[hash.shard()].entry(hash) {
            std::collections::hash_map::Entry::Occupied(mut entry) => {
                if *entry.get() != REMOVED {
                    return false;
                }
                entry.insert(person);
                true
            }
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert(person);
                true
            }
        }
    }

    /// Removes the identity.
    pub fn remove(&mut self, hash: IdentityHash) {
        debug_assert!(
            self.rewritten.is_none(),
            "a rewrite takes no changes after it"
        );
        self.changes[hash.shard()].insert(hash, REMOVED);
    }

    /// Appends the changes to the log and makes them durable; returns the end to record with
    /// the write's commit.
    pub fn sync(&mut self) -> io::Result<LogPosition> {
        if let Some(position) = self.synced.filter(|_| self.rewritten.is_some()) {
            return Ok(position);
        }
        let position = self.log.committed;
        let start = position.end;
        if self.changes.iter().all(HashMap::is_empty) {
            self.synced = Some(position);
            return Ok(position);
        }
        // From the committed end: what an abandoned write left there is overwritten.
        let end = write_entries(&self.log.file, start, self.changes.iter().flatten())?;
        self.log.file.sync_data()?;
        let synced = LogPosition { end, ..position };
        self.synced = Some(synced);
        Ok(synced)
    }

    /// Rewrites the log without its superseded entries when they are more than half of it and
    /// at least `min_entries`: the live entries go to the other file, synced; the write's commit
    /// then switches to it ([`IndexWrite::sync`] gives its position). Does nothing when this
    /// write has changes of its own, and takes none after it (the store calls it at opening
    /// only). Returns whether it rewrote.
    pub fn rewrite_if_sparse(&mut self, min_entries: u64) -> io::Result<bool> {
        let entries = self.log.committed.end / ENTRY_BYTES as u64;
        let live = self.index.len() as u64;
        let superseded = entries - live.min(entries);
        if superseded < min_entries
            || superseded <= live
            || self.changes.iter().any(|changes| !changes.is_empty())
        {
            return Ok(false);
        }
        let file_index = 1 - self.log.committed.file;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(self.log.dir.join(INDEX_FILES[file_index]))?;
        let end = write_entries(&file, 0, self.index.read().0.iter().flatten())?;
        file.sync_all()?;
        File::open(&self.log.dir)?.sync_all()?;
        self.synced = Some(LogPosition {
            file: file_index,
            end,
        });
        self.rewritten = Some(file);
        Ok(true)
    }

    /// Runs `commit` (the database commit that records the end [`IndexWrite::sync`] gave) with
    /// readers held off, and when it succeeds makes the changes visible.
    ///
    /// # Panics
    /// If called before [`IndexWrite::sync`]: the changes would not be durable.
    pub fn commit<T, E>(mut self, commit: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let synced = self
            .synced
            .expect("an index write is synced before it commits");
        let mut shards = self
            .index
            .shards
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let committed = commit()?;
        for (shard, changes) in shards.iter_mut().zip(&mut self.changes) {
            // Taken whole, so each shard's changes are freed once applied.
            let mut changes = std::mem::take(changes);
            if shard.is_empty() {
                // The first load into a shard: its changes become the shard, rather than being
                // inserted one by one into a table grown as they come (2.8M identities at the
                // end of a 1M load, with the readers held off).
                changes.retain(|_, person| *person != REMOVED);
                *shard = changes;
                continue;
            }
            shard.reserve(changes.len());
            for (hash, person) in changes {
                apply(shard, hash, person);
            }
        }
        if let Some(file) = self.rewritten.take() {
            let old = INDEX_FILES[self.log.committed.file];
            self.log.file = file;
            // The old log is superseded; failing to remove it is harmless (opening removes it).
            let _ = std::fs::remove_file(self.log.dir.join(old));
        }
        self.log.committed = synced;
        Ok(committed)
    }
}

fn new_shards() -> Vec<Shard> {
    (0..SHARDS).map(|_| Shard::default()).collect()
}

fn apply(shard: &mut Shard, hash: IdentityHash, person: u64) {
    if person == REMOVED {
        shard.remove(&hash);
    } else {
        shard.insert(hash, person);
    }
}

/// Writes `entries` to `file` from byte `start` and returns where they end; in pieces of
/// [`WRITE_PIECE_BYTES`], as a bulk load changes millions of identities.
fn write_entries<'a>(
    file: &File,
    start: u64,
    entries: impl Iterator<Item = (&'a IdentityHash, &'a u64)>,
) -> io::Result<u64> {
    let mut piece = Vec::with_capacity(WRITE_PIECE_BYTES);
    let mut end = start;
    for (hash, person) in entries {
        piece.extend_from_slice(&hash.0[0].to_le_bytes());
        piece.extend_from_slice(&hash.0[1].to_le_bytes());
        piece.extend_from_slice(&person.to_le_bytes());
        if piece.len() + ENTRY_BYTES > WRITE_PIECE_BYTES {
            file.write_all_at(&piece, end)?;
            end += piece.len() as u64;
            piece.clear();
        }
    }
    file.write_all_at(&piece, end)?;
    Ok(end + piece.len() as u64)
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

fn decode_entry(entry: &[u8; ENTRY_BYTES]) -> (IdentityHash, u64) {
    let word = |at: usize| u64::from_le_bytes(entry[at..at + 8].try_into().expect("8 bytes"));
    (IdentityHash([word(0), word(8)]), word(16))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(key: &str) -> IdentityHash {
        IdentityHash::of(1, key)
    }

    /// An index opened on a new directory, which the caller keeps for as long as it reads it.
    fn empty_index() -> (tempfile::TempDir, IdentityIndex) {
        let dir = tempfile::tempdir().unwrap();
        let index = IdentityIndex::open(dir.path(), LogPosition::default()).unwrap();
        (dir, index)
    }

    #[test]
    fn fingerprints_are_fixed_and_tell_tenants_apart() {
        // Stored in logs: a change of hash function would orphan every store.
        assert_eq!(
            IdentityHash::of(1, "Email\0a@example.com"),
            IdentityHash::of(1, "Email\0a@example.com")
        );
        assert_ne!(
            IdentityHash::of(1, "Email\0a@example.com"),
            IdentityHash::of(2, "Email\0a@example.com")
        );
        // Pinned: the value this code first wrote to a log.
        assert_eq!(
            IdentityHash::of(7, "ECID\x00123").0,
            [0x2cf7_220e_8619_b76f, 0xac90_2655_6fb9_f764]
        );
    }

    #[test]
    fn a_first_write_removing_identities_leaves_none_of_them() {
        // A first write's changes become the empty shards whole: its removals must not.
        let (_dir, index) = empty_index();
        let mut write = index.begin();
        write.set(hash("kept"), 1);
        write.set(hash("gone"), 2);
        write.remove(hash("gone"));
        write.remove(hash("never"));
        write.sync().unwrap();
        write.commit(|| Ok::<_, ()>(())).unwrap();
        assert_eq!(index.len(), 1);
        assert_eq!(index.read().get(hash("kept")), Some(1));
        assert_eq!(index.read().get(hash("gone")), None);
        assert_eq!(index.read().get(hash("never")), None);
    }

    #[test]
    fn an_unowned_identity_is_claimed_once() {
        let (_dir, index) = empty_index();
        let mut write = index.begin();
        assert!(write.set_unowned(hash("a"), 1));
        assert!(
            !write.set_unowned(hash("a"), 2),
            "this write pointed it already"
        );
        assert_eq!(write.get(hash("a")), Some(1));
        write.remove(hash("a"));
        assert!(write.set_unowned(hash("a"), 3), "removed: unowned again");
        assert_eq!(write.get(hash("a")), Some(3));
    }

    #[test]
    fn committed_changes_survive_reopening_and_uncommitted_ones_vanish() {
        let (dir, index) = empty_index();
        let mut write = index.begin();
        write.set(hash("a"), 1);
        write.set(hash("b"), 1);
        write.set(hash("b"), 2);
        assert_eq!(write.get(hash("b")), Some(2));
        assert_eq!(
            index.read().get(hash("b")),
            None,
            "not visible before commit"
        );
        let end = write.sync().unwrap();
        write.commit(|| Ok::<_, ()>(())).unwrap();
        assert_eq!(
            end.end,
            2 * ENTRY_BYTES as u64,
            "the final value per identity"
        );
        assert_eq!(index.read().get(hash("b")), Some(2));

        // A write whose database commit fails: synced to the log, never committed.
        let mut failed = index.begin();
        failed.set(hash("c"), 3);
        failed.remove(hash("a"));
        failed.sync().unwrap();
        assert_eq!(
            failed.commit(|| Err::<(), _>("disk full")),
            Err("disk full")
        );
        assert_eq!(index.read().get(hash("c")), None);
        assert_eq!(index.read().get(hash("a")), Some(1));

        let mut removal = index.begin();
        removal.remove(hash("a"));
        assert_eq!(removal.get(hash("a")), None);
        let end = removal.sync().unwrap();
        removal.commit(|| Ok::<_, ()>(())).unwrap();
        drop(index);

        // Reopened at the committed end: the failed write's bytes were overwritten.
        let index = IdentityIndex::open(dir.path(), end).unwrap();
        assert_eq!(index.len(), 1);
        assert_eq!(index.read().get(hash("a")), None);
        assert_eq!(index.read().get(hash("b")), Some(2));
        assert_eq!(index.read().get(hash("c")), None);
    }

    #[test]
    fn bytes_past_the_committed_end_are_cut_off_at_opening() {
        let (dir, index) = empty_index();
        let mut write = index.begin();
        write.set(hash("a"), 1);
        // Synced, then the process dies before the database commit recorded the end.
        write.sync().unwrap();
        drop(write);
        drop(index);
        let index = IdentityIndex::open(dir.path(), LogPosition::default()).unwrap();
        assert_eq!(index.len(), 0);
        let length = std::fs::metadata(dir.path().join(INDEX_FILES[0]))
            .unwrap()
            .len();
        assert_eq!(length, 0);
    }

    #[test]
    fn a_log_shorter_than_its_committed_end_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        drop(IdentityIndex::open(dir.path(), LogPosition::default()).unwrap());
        let position = LogPosition {
            file: 0,
            end: ENTRY_BYTES as u64,
        };
        let error = IdentityIndex::open(dir.path(), position).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn many_identities_spread_over_every_shard() {
        let (dir, index) = empty_index();
        let mut write = index.begin();
        for n in 0..50_000u64 {
            write.set(hash(&n.to_string()), n + 1);
        }
        let end = write.sync().unwrap();
        write.commit(|| Ok::<_, ()>(())).unwrap();
        let shards = index.read();
        assert!(shards.0.iter().all(|shard| shard.len() > 100));
        drop(shards);
        drop(index);
        let index = IdentityIndex::open(dir.path(), end).unwrap();
        for n in (0..50_000u64).step_by(97) {
            assert_eq!(index.read().get(hash(&n.to_string())), Some(n + 1));
        }
    }

    /// A log mostly of superseded entries is rewritten into the other file, which the commit
    /// switches to; a rewrite whose commit fails leaves the old log in use, and opening removes
    /// the file not in use.
    #[test]
    fn a_sparse_log_is_rewritten_into_the_other_file() {
        let (dir, index) = empty_index();
        let mut position = LogPosition::default();
        // 10 identities, each re-pointed in five writes: 50 entries, 10 live.
        for person in 1..=5 {
            let mut write = index.begin();
            for n in 0..10 {
                write.set(hash(&n.to_string()), person);
            }
            position = write.sync().unwrap();
            write.commit(|| Ok::<_, ()>(())).unwrap();
        }
        assert_eq!(position.end, 50 * ENTRY_BYTES as u64);
        let mut write = index.begin();
        assert!(
            !write.rewrite_if_sparse(41).unwrap(),
            "40 superseded: under the minimum"
        );
        assert!(write.rewrite_if_sparse(40).unwrap());
        let rewritten = write.sync().unwrap();
        assert_eq!(
            rewritten,
            LogPosition {
                file: 1,
                end: 10 * ENTRY_BYTES as u64
            }
        );
        // The database commit fails: the old log stays in use.
        assert!(write.commit(|| Err::<(), _>("disk full")).is_err());
        drop(index);
        let index = IdentityIndex::open(dir.path(), position).unwrap();
        assert!(!dir.path().join(INDEX_FILES[1]).exists());
        assert_eq!(index.len(), 10);

        let mut write = index.begin();
        assert!(write.rewrite_if_sparse(1).unwrap());
        let rewritten = write.sync().unwrap();
        write.commit(|| Ok::<_, ()>(())).unwrap();
        assert!(!dir.path().join(INDEX_FILES[0]).exists());
        // Writes go on in the new file.
        let mut write = index.begin();
        write.set(hash("new"), 9);
        let after = write.sync().unwrap();
        write.commit(|| Ok::<_, ()>(())).unwrap();
        assert_eq!(after.file, 1);
        assert_eq!(after.end, rewritten.end + ENTRY_BYTES as u64);
        drop(index);
        let index = IdentityIndex::open(dir.path(), after).unwrap();
        assert_eq!(index.len(), 11);
        for n in 0..10 {
            assert_eq!(index.read().get(hash(&n.to_string())), Some(5));
        }
        assert_eq!(index.read().get(hash("new")), Some(9));
    }
}
