//! The texts of the paths that live counter keys refer to.
//!
//! Keys carry a keyed 64-bit hash of the normalised path so they stay fixed-size; the text
//! (needed only when an event is written) is stored once per distinct path, shared by every
//! key that uses it and reference-counted, so evicting or closing keys also frees the paths
//! only they used.
//!
//! Paths longer than [`MAX_PATH_BYTES`] are cut to their first 1024 bytes (fewer when that
//! would split a character) followed by `…`, and that capped text is what is hashed, stored
//! and reported. So distinct long paths sharing their first KiB share one key (they are
//! counted together); no real Ollama route is that long. With the cap, an attacker spraying
//! random paths grows this table to at most one entry per live key (`max_tracked_keys`),
//! each at most 1027 bytes of text plus a ~40-byte entry: about 1.1 KB per key in the worst
//! case, on top of the window maps.
//!
//! Lock order: callers may hold a window-map shard lock while calling in here; this table
//! never calls back into the window maps.

use std::borrow::Cow;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

/// Path hash used for keys of rules grouped by source only.
pub(crate) const NO_PATH: u64 = 0;

/// The longest path text kept whole, in bytes; longer ones are cut (see the module docs).
pub(crate) const MAX_PATH_BYTES: usize = 1024;

/// Marks a cut path text.
const CUT_MARK: &str = "…";

/// The kept prefix of `path` and whether it was cut: all of it up to [`MAX_PATH_BYTES`],
/// else the longest prefix of at most that many bytes ending on a character boundary.
fn kept(path: &str) -> (&str, bool) {
    if path.len() <= MAX_PATH_BYTES {
        return (path, false);
    }
    let mut end = MAX_PATH_BYTES;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    (&path[..end], true)
}

/// [`capped`] without a copy when `text` is short enough (the detection log's other events
/// write a request's path and method with the same cap).
pub(crate) fn capped_cow(text: &str) -> Cow<'_, str> {
    match kept(text) {
        (whole, false) => Cow::Borrowed(whole),
        _ => Cow::Owned(capped(text)),
    }
}

/// The text a key on `path` stands for: `path` itself, or its kept prefix and `…`.
pub(crate) fn capped(path: &str) -> String {
    match kept(path) {
        (whole, false) => whole.to_owned(),
        (prefix, true) => {
            let mut text = String::with_capacity(prefix.len() + CUT_MARK.len());
            text.push_str(prefix);
            text.push_str(CUT_MARK);
            text
        }
    }
}

#[derive(Debug)]
struct PathEntry {
    text: Cow<'static, str>,
    refs: u32,
}

/// Reference-counted path texts, keyed by a SipHash of the text under a per-process random
/// key (an attacker cannot aim collisions at it).
///
/// The table itself hashes those keys with foldhash: they are already uniform keyed hashes,
/// so a second SipHash round per lookup (about 50 instructions for a `u64`) bought nothing.
#[derive(Debug, Default)]
pub(crate) struct PathStore {
    map: DashMap<u64, PathEntry, foldhash::fast::RandomState>,
    hasher: RandomState,
}

impl PathStore {
    /// The key hash of `path` as capped (paths equal in their kept prefix hash alike, without
    /// allocating); never [`NO_PATH`].
    pub(crate) fn hash(&self, path: &str) -> u64 {
        self.hasher.hash_one(kept(path)).max(1)
    }

    /// A new key refers to `hash`: store the text (capped) on first use, count the reference.
    ///
    /// Takes the `Cow` itself (not `&str`) so a borrowed static route path is stored
    /// without allocating.
    #[allow(clippy::ptr_arg)]
    pub(crate) fn acquire(&self, hash: u64, text: &Cow<'static, str>) {
        if hash == NO_PATH {
            return;
        }
        let mut entry = self.map.entry(hash).or_insert_with(|| PathEntry {
            text: match kept(text) {
                (_, false) => text.clone(),
                (_, true) => Cow::Owned(capped(text)),
            },
            refs: 0,
        });
        entry.refs = entry.refs.saturating_add(1);
    }

    /// An empty table under the same hash key, so a rebuilt engine can take over keys (and
    /// their path hashes) from this one.
    pub(crate) fn empty_sharing_key(&self) -> PathStore {
        PathStore {
            map: DashMap::default(),
            hasher: self.hasher.clone(),
        }
    }

    /// A key copied from `from` refers to `hash`: take the text over from there and count the
    /// reference. Returns `false` (and stores nothing) when `from` does not hold `hash`.
    pub(crate) fn acquire_from(&self, from: &PathStore, hash: u64) -> bool {
        if hash == NO_PATH {
            return true;
        }
        let Some(text) = from.map.get(&hash).map(|e| e.text.clone()) else {
            return false;
        };
        self.acquire(hash, &text);
        true
    }

    /// A key referring to `hash` is gone: drop the text with its last reference.
    pub(crate) fn release(&self, hash: u64) {
        if let Entry::Occupied(mut e) = self.map.entry(hash) {
            e.get_mut().refs = e.get().refs.saturating_sub(1);
            if e.get().refs == 0 {
                e.remove();
            }
        }
    }

    /// The text for an event (`None` for [`NO_PATH`]).
    pub(crate) fn text(&self, hash: u64) -> Option<String> {
        if hash == NO_PATH {
            return None;
        }
        self.map.get(&hash).map(|e| e.text.to_string())
    }

    /// Distinct paths stored.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Heap bytes held by the owned texts (static route paths cost nothing).
    #[cfg(test)]
    pub(crate) fn text_bytes(&self) -> usize {
        self.map
            .iter()
            .map(|e| match &e.text {
                Cow::Owned(s) => s.capacity(),
                Cow::Borrowed(_) => 0,
            })
            .sum()
    }

    /// Approximate heap bytes held (entries plus owned texts), for the memory estimate.
    #[cfg(test)]
    pub(crate) fn approx_bytes(&self) -> usize {
        let entry = std::mem::size_of::<(u64, PathEntry)>() + 1;
        self.map.capacity() * entry * 8 / 7 + self.text_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_release_frees_the_text() {
        let store = PathStore::default();
        let text: Cow<'static, str> = Cow::Owned("/x/y".to_owned());
        let h = store.hash(&text);
        store.acquire(h, &text);
        store.acquire(h, &text);
        store.release(h);
        assert_eq!(store.text(h).as_deref(), Some("/x/y"));
        store.release(h);
        assert_eq!(store.text(h), None);
        assert_eq!(store.len(), 0);
    }

    #[test]
    fn a_table_sharing_the_key_hashes_alike_and_takes_texts_over() {
        let old = PathStore::default();
        let text: Cow<'static, str> = Cow::Owned("/api/show".to_owned());
        let h = old.hash(&text);
        old.acquire(h, &text);
        let new = old.empty_sharing_key();
        assert_eq!(new.hash("/api/show"), h);
        assert!(new.acquire_from(&old, h));
        assert!(!new.acquire_from(&old, h ^ 1));
        assert_eq!((new.text(h).as_deref(), new.len()), (Some("/api/show"), 1));
    }

    #[test]
    fn long_paths_are_cut_on_a_char_boundary_and_share_a_key_by_their_first_kib() {
        let store = PathStore::default();
        // "/" then 2-byte characters: byte 1024 falls inside one, so the cut is at 1023.
        let long = |tail: &str| -> Cow<'static, str> {
            Cow::Owned(format!("/{}{tail}", "é".repeat(600)))
        };
        let (a, b) = (long("/a"), long("/b"));
        let (ha, hb) = (store.hash(&a), store.hash(&b));
        assert_eq!(ha, hb);
        store.acquire(ha, &a);
        store.acquire(hb, &b);
        let want = format!("/{}…", "é".repeat(511));
        assert_eq!(want.len(), 1026);
        assert_eq!((store.text(ha), store.len()), (Some(want.clone()), 1));
        assert_eq!(capped(&a), want);
    }

    #[test]
    fn a_path_of_exactly_1024_bytes_is_kept_whole_and_one_more_byte_is_cut() {
        let store = PathStore::default();
        let exact = "a".repeat(MAX_PATH_BYTES);
        let longer: Cow<'static, str> = Cow::Owned("a".repeat(MAX_PATH_BYTES + 1));
        assert_eq!(capped(&exact), exact);
        assert_ne!(store.hash(&exact), store.hash(&longer));
        let h = store.hash(&longer);
        store.acquire(h, &longer);
        assert_eq!(store.text(h), Some(format!("{exact}…")));
    }

    #[test]
    fn no_path_is_never_stored() {
        let store = PathStore::default();
        store.acquire(NO_PATH, &Cow::Borrowed("/a"));
        assert_eq!(store.len(), 0);
        assert_eq!(store.text(NO_PATH), None);
        assert_ne!(store.hash(""), NO_PATH);
    }
}
