//! The window store's key maps: entries packed densely in fixed-size chunks, found through a
//! hash table of 4-byte positions.
//!
//! Why not a `HashMap<WindowKey, V>` (or a `DashMap` of them): a hash table's buckets are a
//! power of two, at most 7/8 full, and right after it doubles only 7/16 full; every bucket
//! holds a whole entry (72 bytes), so an entry costs 73 bytes / load factor — 106–115 bytes
//! per key at 1 M keys, up to 167 right after a doubling — and each doubling frees a table
//! the allocator may keep resident. Here the table holds only a `u32` position per bucket
//! (5 bytes with its control byte), and the entries sit packed in 32 KiB chunks: an
//! entry costs its own size plus 5 bytes / load factor (≈ 8), the chunks never move, and
//! the only slack is the last, partly filled chunk of each shard.
//!
//! Removal moves the last entry into the freed place (and repoints its position), so the
//! entries stay packed; iteration order is storage order, which callers must not rely on
//! (the engine sorts what it emits).
//!
//! [`KeyTable`] is the concurrent form (`serve`): shards chosen by hash, each behind an
//! `RwLock`, like `DashMap`. [`LocalTable`] is one shard without a lock, in a `RefCell`
//! (`scan`, one engine per thread).

use std::hash::BuildHasher;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use hashbrown::HashTable;

use super::window::WindowKey;

/// Bytes per chunk: 32 KiB, allocated when the shard's last chunk is full. A power of two is
/// one of the allocator's size classes exactly (mimalloc has four classes per power of two:
/// 512 entries of 72 bytes, 36 KiB, took a 40 KiB block).
const CHUNK_BYTES: usize = 32 * 1024;

/// One shard: packed entries and the table of their positions.
#[derive(Debug)]
pub(crate) struct Slab<V> {
    index: HashTable<u32>,
    chunks: Vec<Vec<(WindowKey, V)>>,
    len: usize,
}

/// Entries per chunk for entries of `V`: as many as fit in [`CHUNK_BYTES`].
const fn per_chunk<V>() -> usize {
    let size = std::mem::size_of::<(WindowKey, V)>();
    if size >= CHUNK_BYTES {
        1
    } else {
        CHUNK_BYTES / size
    }
}

impl<V> Default for Slab<V> {
    fn default() -> Self {
        Slab {
            index: HashTable::new(),
            chunks: Vec::new(),
            len: 0,
        }
    }
}

fn at<V>(chunks: &[Vec<(WindowKey, V)>], pos: u32) -> &(WindowKey, V) {
    let pos = pos as usize;
    &chunks[pos / per_chunk::<V>()][pos % per_chunk::<V>()]
}

fn at_mut<V>(chunks: &mut [Vec<(WindowKey, V)>], pos: usize) -> &mut (WindowKey, V) {
    &mut chunks[pos / per_chunk::<V>()][pos % per_chunk::<V>()]
}

impl<V> Slab<V> {
    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn position(&self, hash: u64, key: &WindowKey) -> Option<usize> {
        let chunks = &self.chunks;
        self.index
            .find(hash, |&p| at(chunks, p).0 == *key)
            .map(|&p| p as usize)
    }

    /// The value of `key` (hashed to `hash`).
    pub(crate) fn get(&self, hash: u64, key: &WindowKey) -> Option<&V> {
        self.position(hash, key)
            .map(|p| &at(&self.chunks, p as u32).1)
    }

    /// The value of `key`, to change.
    pub(crate) fn get_mut(&mut self, hash: u64, key: &WindowKey) -> Option<&mut V> {
        let p = self.position(hash, key)?;
        Some(&mut at_mut(&mut self.chunks, p).1)
    }

    /// Appends `key` (absent) with `value`; returns the stored value. `hasher` hashes a key
    /// as the callers do (the table rehashes positions through it when it grows).
    pub(crate) fn push(
        &mut self,
        hash: u64,
        key: WindowKey,
        value: V,
        hasher: impl Fn(&WindowKey) -> u64,
    ) -> &mut V {
        let pos = self.len;
        let p32 = u32::try_from(pos).expect("fewer than 2^32 keys per shard");
        if pos % per_chunk::<V>() == 0 {
            self.chunks.push(Vec::with_capacity(per_chunk::<V>()));
        }
        let chunks = &mut self.chunks;
        chunks[pos / per_chunk::<V>()].push((key, value));
        self.index
            .insert_unique(hash, p32, |&p| hasher(&at(chunks, p).0));
        self.len += 1;
        &mut at_mut(chunks, pos).1
    }

    /// Inserts or replaces; true when `key` was new.
    pub(crate) fn put(
        &mut self,
        hash: u64,
        key: WindowKey,
        value: V,
        hasher: impl Fn(&WindowKey) -> u64,
    ) -> bool {
        match self.get_mut(hash, &key) {
            Some(v) => {
                *v = value;
                false
            }
            None => {
                self.push(hash, key, value, hasher);
                true
            }
        }
    }

    /// Removes `key`; its value when it was present.
    pub(crate) fn remove(
        &mut self,
        hash: u64,
        key: &WindowKey,
        hasher: impl Fn(&WindowKey) -> u64,
    ) -> Option<V> {
        let chunks = &self.chunks;
        let pos = match self.index.find_entry(hash, |&p| at(chunks, p).0 == *key) {
            Ok(entry) => entry.remove().0 as usize,
            Err(_) => return None,
        };
        Some(self.take(pos, hasher).1)
    }

    /// Takes the entry at `pos` (already out of the index) out of the chunks, moving the
    /// last entry into its place.
    fn take(&mut self, pos: usize, hasher: impl Fn(&WindowKey) -> u64) -> (WindowKey, V) {
        let last = self.len - 1;
        let tail = self
            .chunks
            .last_mut()
            .expect("a non-empty slab has a chunk");
        let moved = tail.pop().expect("the last chunk holds the last entry");
        if tail.is_empty() {
            self.chunks.pop();
        }
        self.len = last;
        if pos == last {
            return moved;
        }
        // Repoint the moved entry's position before it lands in `pos`.
        let last32 = last as u32;
        if let Some(p) = self.index.find_mut(hasher(&moved.0), |&p| p == last32) {
            *p = pos as u32;
        }
        std::mem::replace(at_mut(&mut self.chunks, pos), moved)
    }

    /// Keeps the entries for which `f` is true.
    pub(crate) fn retain(
        &mut self,
        mut f: impl FnMut(&WindowKey, &mut V) -> bool,
        hasher: impl Fn(&WindowKey) -> u64,
    ) {
        let mut pos = 0;
        while pos < self.len {
            let (key, value) = at_mut(&mut self.chunks, pos);
            if f(key, value) {
                pos += 1;
                continue;
            }
            let key = *key;
            let p32 = pos as u32;
            if let Ok(entry) = self.index.find_entry(hasher(&key), |&p| p == p32) {
                entry.remove();
            }
            // The last entry moves into `pos`: look at it next.
            self.take(pos, &hasher);
        }
    }

    /// Every entry, in storage order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &(WindowKey, V)> {
        self.chunks.iter().flatten()
    }

    /// Bytes held: the position table (4 bytes and a control byte per bucket, buckets being
    /// capacity × 8/7) and the allocated chunks.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.index.capacity() * 8 / 7 * (std::mem::size_of::<u32>() + 1)
            + self.chunks.len() * per_chunk::<V>() * std::mem::size_of::<(WindowKey, V)>()
            + self.chunks.capacity() * std::mem::size_of::<Vec<(WindowKey, V)>>()
    }
}

type Hasher = foldhash::fast::RandomState;

/// The concurrent key map (`serve`): [`Slab`]s behind `RwLock`s, the shard chosen by hash.
/// Every method locks one shard at a time and runs the caller's closures under that lock.
#[derive(Debug)]
pub(crate) struct KeyTable<V> {
    shards: Box<[RwLock<Slab<V>>]>,
    hasher: Hasher,
    /// `64 - log2(shards)`.
    shift: u32,
}

impl<V> Default for KeyTable<V> {
    fn default() -> Self {
        // As `DashMap`: four shards per CPU, a power of two.
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        KeyTable::with_shards((cpus * 4).next_power_of_two())
    }
}

impl<V> KeyTable<V> {
    /// A table of `shards` shards (a power of two, at least 2).
    pub(crate) fn with_shards(shards: usize) -> KeyTable<V> {
        let shards = shards.max(2).next_power_of_two();
        KeyTable {
            shards: (0..shards).map(|_| RwLock::default()).collect(),
            hasher: Hasher::default(),
            shift: 64 - shards.trailing_zeros(),
        }
    }

    fn hash(&self, key: &WindowKey) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The shard of `hash`: bits below the top seven, which the table's control bytes use.
    fn shard(&self, hash: u64) -> &RwLock<Slab<V>> {
        &self.shards[((hash << 7) >> self.shift) as usize]
    }

    fn read(shard: &RwLock<Slab<V>>) -> RwLockReadGuard<'_, Slab<V>> {
        shard.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(shard: &RwLock<Slab<V>>) -> RwLockWriteGuard<'_, Slab<V>> {
        shard.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `key` is present.
    pub(crate) fn contains(&self, key: &WindowKey) -> bool {
        let hash = self.hash(key);
        Self::read(self.shard(hash)).position(hash, key).is_some()
    }

    /// Runs `occupied` on `key`'s value; when absent, inserts what `vacant` builds. Both run
    /// under the shard's write lock.
    pub(crate) fn upsert<C, R>(
        &self,
        key: WindowKey,
        cx: &mut C,
        occupied: impl FnOnce(&mut V, &mut C) -> R,
        vacant: impl FnOnce(&mut C) -> (V, R),
    ) -> R {
        let hash = self.hash(&key);
        let mut shard = Self::write(self.shard(hash));
        if let Some(v) = shard.get_mut(hash, &key) {
            return occupied(v, cx);
        }
        let (value, r) = vacant(cx);
        shard.push(hash, key, value, |k| self.hash(k));
        r
    }

    /// Runs `f` on `key`'s value, if present, under the shard's write lock.
    pub(crate) fn update<R>(&self, key: &WindowKey, f: impl FnOnce(&mut V) -> R) -> Option<R> {
        let hash = self.hash(key);
        Self::write(self.shard(hash)).get_mut(hash, key).map(f)
    }

    /// Inserts or replaces; true when `key` was new.
    pub(crate) fn put(&self, key: WindowKey, value: V) -> bool {
        let hash = self.hash(&key);
        Self::write(self.shard(hash)).put(hash, key, value, |k| self.hash(k))
    }

    /// Removes `key`; its value when present.
    pub(crate) fn remove(&self, key: &WindowKey) -> Option<V> {
        let hash = self.hash(key);
        Self::write(self.shard(hash)).remove(hash, key, |k| self.hash(k))
    }

    /// A copy of `key`'s value.
    pub(crate) fn get_copy(&self, key: &WindowKey) -> Option<V>
    where
        V: Copy,
    {
        let hash = self.hash(key);
        Self::read(self.shard(hash)).get(hash, key).copied()
    }

    /// Keeps the entries for which `f` is true, one shard (write-locked) at a time.
    pub(crate) fn retain(&self, mut f: impl FnMut(&WindowKey, &mut V) -> bool) {
        for shard in &self.shards {
            Self::write(shard).retain(&mut f, |k| self.hash(k));
        }
    }

    /// Calls `f` on every entry, one shard (read-locked) at a time.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&WindowKey, &V)) {
        for shard in &self.shards {
            Self::read(shard).iter().for_each(|(k, v)| f(k, v));
        }
    }

    /// Entries held (a sum over the shards, each read in turn).
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| Self::read(s).len()).sum()
    }

    /// Bytes held (see [`Slab::bytes`]).
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.shards.iter().map(|s| Self::read(s).bytes()).sum()
    }
}

/// The single-thread key map (`scan`): one [`Slab`] and its hasher.
#[derive(Debug)]
pub(crate) struct LocalTable<V> {
    slab: Slab<V>,
    hasher: Hasher,
}

impl<V> Default for LocalTable<V> {
    fn default() -> Self {
        LocalTable {
            slab: Slab::default(),
            hasher: Hasher::default(),
        }
    }
}

impl<V> LocalTable<V> {
    fn hash(&self, key: &WindowKey) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Whether `key` is present.
    pub(crate) fn contains(&self, key: &WindowKey) -> bool {
        self.slab.position(self.hash(key), key).is_some()
    }

    /// [`KeyTable::upsert`].
    pub(crate) fn upsert<C, R>(
        &mut self,
        key: WindowKey,
        cx: &mut C,
        occupied: impl FnOnce(&mut V, &mut C) -> R,
        vacant: impl FnOnce(&mut C) -> (V, R),
    ) -> R {
        let hash = self.hash(&key);
        let hasher = &self.hasher;
        if let Some(v) = self.slab.get_mut(hash, &key) {
            return occupied(v, cx);
        }
        let (value, r) = vacant(cx);
        self.slab.push(hash, key, value, |k| hasher.hash_one(k));
        r
    }

    /// Inserts or replaces; true when `key` was new.
    pub(crate) fn put(&mut self, key: WindowKey, value: V) -> bool {
        let hash = self.hash(&key);
        let hasher = &self.hasher;
        self.slab.put(hash, key, value, |k| hasher.hash_one(k))
    }

    /// Removes `key`; its value when present.
    pub(crate) fn remove(&mut self, key: &WindowKey) -> Option<V> {
        let hash = self.hash(key);
        let hasher = &self.hasher;
        self.slab.remove(hash, key, |k| hasher.hash_one(k))
    }

    /// The value of `key`.
    pub(crate) fn get(&self, key: &WindowKey) -> Option<&V> {
        self.slab.get(self.hash(key), key)
    }

    /// Keeps the entries for which `f` is true.
    pub(crate) fn retain(&mut self, f: impl FnMut(&WindowKey, &mut V) -> bool) {
        let hasher = &self.hasher;
        self.slab.retain(f, |k| hasher.hash_one(k));
    }

    /// Every entry, in storage order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &(WindowKey, V)> {
        self.slab.iter()
    }

    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.slab.len()
    }

    /// Bytes held (see [`Slab::bytes`]).
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.slab.bytes()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::detect::source::SourceKey;

    fn key(i: u32) -> WindowKey {
        WindowKey::new(
            u64::from(i % 7),
            SourceKey::new(IpAddr::V4(Ipv4Addr::from(i)), 64),
            0,
        )
    }

    /// Every present key maps to its own value and the count agrees (positions repointed
    /// correctly after removals moved entries).
    fn check(t: &KeyTable<u64>, present: impl Iterator<Item = u32>) {
        let mut n = 0;
        for i in present {
            assert_eq!(t.get_copy(&key(i)), Some(u64::from(i) * 3), "key {i}");
            n += 1;
        }
        assert_eq!(t.len(), n);
        let mut seen = 0;
        t.for_each(|k, v| {
            assert_eq!(t.shards.len(), 8);
            let _ = k;
            seen += 1;
            assert_eq!(v % 3, 0);
        });
        assert_eq!(seen, n);
    }

    #[test]
    fn entries_survive_removals_that_move_others() {
        let t: KeyTable<u64> = KeyTable::with_shards(8);
        for i in 0..5_000u32 {
            assert!(t.put(key(i), u64::from(i) * 3));
        }
        assert!(!t.put(key(10), 30));
        check(&t, 0..5_000);
        // Remove every third key one by one, then every other remaining one by retain.
        for i in (0..5_000u32).step_by(3) {
            assert_eq!(t.remove(&key(i)), Some(u64::from(i) * 3));
        }
        assert_eq!(t.remove(&key(0)), None);
        check(&t, (0..5_000).filter(|i| i % 3 != 0));
        t.retain(|_, v| (*v / 3) % 2 == 0);
        check(&t, (0..5_000).filter(|i| i % 3 != 0 && i % 2 == 0));
        // Emptied: every chunk is given back.
        t.retain(|_, _| false);
        check(&t, std::iter::empty());
        assert!(t.shards.iter().all(|s| s.read().unwrap().chunks.is_empty()));
    }

    #[test]
    fn upsert_runs_one_closure_and_keeps_the_value() {
        let t: KeyTable<u64> = KeyTable::default();
        let mut log = Vec::new();
        for v in [5, 6] {
            let r = t.upsert(
                key(1),
                &mut log,
                |st, log| {
                    log.push(("occupied", *st));
                    *st += v;
                    *st
                },
                |log| {
                    log.push(("vacant", v));
                    (v, v)
                },
            );
            assert_eq!(r, [5, 11][usize::from(v == 6)]);
        }
        assert_eq!(log, [("vacant", 5), ("occupied", 5)]);
        assert_eq!(t.update(&key(1), |st| *st), Some(11));
        assert_eq!(t.update(&key(2), |st| *st), None);
        assert!(t.contains(&key(1)) && !t.contains(&key(2)));
    }

    /// One shard (as `scan` has), 100 000 entries of 72 bytes: 220 chunks of 455 (32 760
    /// bytes; the last 100 slots unused) = 7 207 200 bytes, a position table of 131 072
    /// buckets × 5 = 655 360, and the chunk list (256 × 24 = 6 144): 78.7 bytes per key,
    /// against 73 × 131 072 = 9 568 256 (95.7 per key) for a `HashMap` of the same entries.
    #[test]
    fn a_table_costs_the_entries_plus_a_few_bytes_per_key() {
        let mut t: LocalTable<[u32; 11]> = LocalTable::default();
        assert_eq!(std::mem::size_of::<(WindowKey, [u32; 11])>(), 72);
        for i in 0..100_000u32 {
            let v = [i; 11];
            t.upsert(key(i), &mut (), |_, _| unreachable!(), |_| (v, ()));
        }
        assert_eq!(t.len(), 100_000);
        assert_eq!(per_chunk::<[u32; 11]>(), 455);
        assert_eq!(t.bytes(), 7_207_200 + 655_360 + 6_144);
        assert_eq!(t.get(&key(99_999)), Some(&[99_999; 11]));
        t.retain(|k, _| *k != key(5));
        assert_eq!((t.len(), t.get(&key(5))), (99_999, None));
        assert_eq!(t.remove(&key(6)), Some([6; 11]));
        assert!(!t.contains(&key(6)) && t.contains(&key(7)));
    }
}
