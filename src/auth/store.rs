//! The key store: who may call, as SHA-256 digests of their keys, with a name, a role and an
//! optional expiry; persisted as one JSON file (`<state_dir>/keys.json` or `auth.keys_file`).
//!
//! The request path reads an immutable index through an `ArcSwap` (no lock); the admin API
//! and a config reload change the file first (atomic write: temp file, `fsync`, rename,
//! `fsync` of the directory) and then publish a new index, so a key added is usable and a
//! key revoked is refused from the next request on, without a restart.
//!
//! Lookup is by digest, never by scanning: the index is keyed by the digest's first 8 bytes
//! and the full 32 bytes are then compared in constant time (`subtle`), so how long a
//! lookup takes says nothing about how much of a digest matched.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;

use super::key::{self, Digest};

/// What a key may do. Ordered: a role includes every role below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Role {
    /// Generation, chat, embeddings and metadata: what an application needs.
    User,
    /// Also model management: pull, push, create, copy, delete, blob uploads.
    Manager,
}

impl Role {
    /// The name used in the key file, the admin API and the CLI.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Manager => "manager",
        }
    }

    /// Parses `user` or `manager`.
    pub(crate) fn parse(text: &str) -> Option<Role> {
        match text {
            "user" => Some(Role::User),
            "manager" => Some(Role::Manager),
            _ => None,
        }
    }
}

/// One key, as the request path sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyEntry {
    /// Its unique name: the `identity` of every request made with it.
    pub(crate) name: Arc<str>,
    /// What it may do.
    pub(crate) role: Role,
    /// When it was made.
    pub(crate) created: DateTime<Utc>,
    /// When it stops working (`None`: never).
    pub(crate) expires: Option<DateTime<Utc>>,
    digest: Digest,
}

/// What a presented key turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// A key in the store, not expired.
    Valid(Arc<KeyEntry>),
    /// A key in the store whose expiry has passed.
    Expired(Arc<KeyEntry>),
    /// No such key.
    Unknown,
}

/// Why the store cannot be read or changed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    /// The file cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The key file vanished while keys were in force (a reload refuses it).
    #[error("{path}: the key file is gone; the keys in force are kept (`keys add` or `keys revoke` writes it again from them; a file without keys removes them all)", path = .0.display())]
    Gone(PathBuf),
    /// The file is not a key file.
    #[error("{path}: not a valid key file: {problem}")]
    Invalid {
        /// The key file.
        path: PathBuf,
        /// What is wrong, naming the entry.
        problem: String,
    },
    /// `add` with a name already in use.
    #[error("a key named {0:?} already exists (revoke it first)")]
    Exists(String),
    /// A name that cannot be an identity.
    #[error("key name {0:?}: use 1 to 64 characters of A-Z a-z 0-9 . _ @ -")]
    BadName(String),
    /// The operating system has no randomness to give.
    #[error("cannot generate a key: {0}")]
    Random(String),
}

/// The key file as stored.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    version: u32,
    keys: Vec<StoredKey>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredKey {
    name: String,
    role: Role,
    /// Lower-case hex SHA-256 of the key.
    sha256: String,
    created: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires: Option<DateTime<Utc>>,
}

/// The format version this build writes and reads.
const VERSION: u32 = 1;

/// The immutable index the request path reads.
#[derive(Debug, Default)]
struct Index {
    /// By the digest's first 8 bytes; a bucket holds more than one entry only on a 64-bit
    /// collision of two keys' digests.
    by_prefix: HashMap<u64, Vec<Arc<KeyEntry>>>,
    /// By name, sorted (listing, revocation).
    by_name: BTreeMap<Arc<str>, Arc<KeyEntry>>,
}

impl Index {
    fn new(entries: impl IntoIterator<Item = Arc<KeyEntry>>) -> Index {
        let mut index = Index::default();
        for e in entries {
            index
                .by_prefix
                .entry(prefix(&e.digest))
                .or_default()
                .push(e.clone());
            index.by_name.insert(e.name.clone(), e);
        }
        index
    }
}

fn prefix(d: &Digest) -> u64 {
    let mut p = [0u8; 8];
    p.copy_from_slice(&d[..8]);
    u64::from_le_bytes(p)
}

/// The key store. Share it behind an `Arc`.
#[derive(Debug)]
pub(crate) struct KeyStore {
    path: PathBuf,
    index: ArcSwap<Index>,
    /// Serialises changes (each one is a read-modify-write of the file).
    write: Mutex<()>,
}

/// Whether `name` can be an identity: it appears in logs and URLs, so a small alphabet.
pub(crate) fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'))
}

impl KeyStore {
    /// Opens the store at `path`; a missing file is an empty store (created on the first
    /// `add`).
    pub(crate) fn open(path: &Path) -> Result<KeyStore, StoreError> {
        let entries = read(path)?;
        Ok(KeyStore {
            path: path.to_owned(),
            index: ArcSwap::from_pointee(Index::new(entries)),
            write: Mutex::new(()),
        })
    }

    /// The file the store lives in.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Re-reads the file (SIGHUP: an operator may have edited or replaced it). On error the
    /// keys in force stay. Returns the number of keys now in force.
    pub(crate) fn reload(&self) -> Result<usize, StoreError> {
        let _w = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        if self.gone() {
            return Err(StoreError::Gone(self.path.clone()));
        }
        let entries = read(&self.path)?;
        let index = Index::new(entries);
        let n = index.by_name.len();
        self.index.store(Arc::new(index));
        Ok(n)
    }

    /// Whether the key file vanished while keys are in force (a bad deploy, a wrong mount):
    /// read as it is, it would revoke every key at once. A reload refuses it and keeps the
    /// keys in force; an `add` or a `revoke` works on the keys in force and writes the file
    /// again (see [`KeyStore::base`]). An empty file removes them all.
    fn gone(&self) -> bool {
        !self.index.load().by_name.is_empty() && !self.path.exists()
    }

    /// What a change starts from: the file (an edit since the last reload, or another
    /// replica's change, is kept), or, when it is [gone](KeyStore::gone), the keys in force
    /// (a revocation must work then too; writing only the new key would revoke the others).
    fn base(&self) -> Result<Vec<Arc<KeyEntry>>, StoreError> {
        if self.gone() {
            tracing::warn!(file = %self.path.display(), "the API key file is gone: it is written again from the keys in force");
            return Ok(self.list());
        }
        read(&self.path)
    }

    /// HOT PATH: what `key` is at `now`. One SHA-256 of the presented bytes, one hash-map
    /// probe, a constant-time comparison of the digests.
    pub(crate) fn lookup(&self, presented: &[u8], now: DateTime<Utc>) -> Lookup {
        let d = key::digest(presented);
        let index = self.index.load();
        let Some(bucket) = index.by_prefix.get(&prefix(&d)) else {
            return Lookup::Unknown;
        };
        for e in bucket {
            if bool::from(e.digest.ct_eq(&d)) {
                return match e.expires {
                    Some(t) if t <= now => Lookup::Expired(e.clone()),
                    _ => Lookup::Valid(e.clone()),
                };
            }
        }
        Lookup::Unknown
    }

    /// Every key, sorted by name.
    pub(crate) fn list(&self) -> Vec<Arc<KeyEntry>> {
        self.index.load().by_name.values().cloned().collect()
    }

    /// The key named `name`.
    pub(crate) fn get(&self, name: &str) -> Option<Arc<KeyEntry>> {
        self.index.load().by_name.get(name).cloned()
    }

    /// Makes a new key named `name`: persisted first, then usable. Returns the entry and
    /// the key text, which exists nowhere else (only its digest is stored).
    pub(crate) fn add(
        &self,
        name: &str,
        role: Role,
        expires: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<(Arc<KeyEntry>, String), StoreError> {
        if !valid_name(name) {
            return Err(StoreError::BadName(name.to_owned()));
        }
        let _w = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let _shared = FileLock::take(&self.path)?;
        let mut entries = self.base()?;
        if entries.iter().any(|e| &*e.name == name) {
            return Err(StoreError::Exists(name.to_owned()));
        }
        let text = key::generate().map_err(|e| StoreError::Random(e.to_string()))?;
        let entry = Arc::new(KeyEntry {
            name: Arc::from(name),
            role,
            created: now,
            expires,
            digest: key::digest(text.as_bytes()),
        });
        entries.push(entry.clone());
        write(&self.path, &entries)?;
        self.index.store(Arc::new(Index::new(entries)));
        Ok((entry, text))
    }

    /// Removes the key named `name` (persisted first, then refused); `None` when there is
    /// no such key.
    pub(crate) fn revoke(&self, name: &str) -> Result<Option<Arc<KeyEntry>>, StoreError> {
        let _w = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let _shared = FileLock::take(&self.path)?;
        let mut entries = self.base()?;
        let Some(pos) = entries.iter().position(|e| &*e.name == name) else {
            return Ok(None);
        };
        let gone = entries.remove(pos);
        write(&self.path, &entries)?;
        self.index.store(Arc::new(Index::new(entries)));
        Ok(Some(gone))
    }
}

/// An exclusive `flock` on `.NAME.lock` beside the key file, held across one change (read,
/// modify, write): replicas that share the file (a shared volume) take turns, so none writes
/// back a list that misses another's new key. Released when dropped. Where the file system
/// has no `flock` (and off Linux), a change goes without it, as before.
struct FileLock {
    _held: Option<fs::File>,
}

impl FileLock {
    fn take(path: &Path) -> Result<FileLock, StoreError> {
        let lock_path = beside(path, "lock");
        let io_err = |source| StoreError::Io {
            path: lock_path.clone(),
            source,
        };
        if let Some(dir) = lock_path.parent() {
            fs::create_dir_all(dir).map_err(io_err)?;
        }
        let mut options = fs::OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        // A lock file another user left (a `sudo` run) is locked read-only: flock needs no
        // write access.
        let file = match options.open(&lock_path) {
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => fs::File::open(&lock_path),
            other => other,
        }
        .map_err(io_err)?;
        #[cfg(target_os = "linux")]
        {
            use rustix::fs::{flock, FlockOperation};
            // Blocking: another replica holds it for one read-modify-write, milliseconds.
            match flock(&file, FlockOperation::LockExclusive) {
                Ok(()) => Ok(FileLock { _held: Some(file) }),
                Err(e) if e == rustix::io::Errno::NOLCK || e == rustix::io::Errno::OPNOTSUPP => {
                    Ok(FileLock { _held: None })
                }
                Err(e) => Err(io_err(e.into())),
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            drop(file);
            Ok(FileLock { _held: None })
        }
    }
}

/// The directory of the key file (`.` for a bare file name).
fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// `DIR/.NAME.SUFFIX` for the key file `DIR/NAME`.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let dir = dir_of(path);
    let name = path
        .file_name()
        .map_or_else(|| "keys.json".into(), |n| n.to_string_lossy().into_owned());
    dir.join(format!(".{name}.{suffix}"))
}

fn read(path: &Path) -> Result<Vec<Arc<KeyEntry>>, StoreError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(StoreError::Io {
                path: path.to_owned(),
                source,
            })
        }
    };
    let invalid = |problem: String| StoreError::Invalid {
        path: path.to_owned(),
        problem,
    };
    let file: KeyFile = serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
    if file.version != VERSION {
        return Err(invalid(format!(
            "version {} (this build reads {VERSION})",
            file.version
        )));
    }
    let mut entries: Vec<Arc<KeyEntry>> = Vec::with_capacity(file.keys.len());
    let mut digests: HashMap<Digest, usize> = HashMap::with_capacity(file.keys.len());
    for (i, k) in file.keys.into_iter().enumerate() {
        if !valid_name(&k.name) {
            return Err(invalid(format!("keys[{i}]: bad name {:?}", k.name)));
        }
        if entries.iter().any(|e| *e.name == *k.name) {
            return Err(invalid(format!("keys[{i}]: duplicate name {:?}", k.name)));
        }
        let mut digest = [0u8; 32];
        hex::decode_to_slice(&k.sha256, &mut digest).map_err(|_| {
            invalid(format!(
                "keys[{i}] ({}): sha256 must be 64 hex digits",
                k.name
            ))
        })?;
        // Two entries with one key (a copied line): the key's role and name would depend on
        // the order of the lines, and revoking one name would leave the key working.
        if let Some(first) = digests.insert(digest, i) {
            return Err(invalid(format!(
                "keys[{i}] ({}): the same key (sha256) as {:?}",
                k.name, entries[first].name
            )));
        }
        entries.push(Arc::new(KeyEntry {
            name: Arc::from(k.name),
            role: k.role,
            created: k.created,
            expires: k.expires,
            digest,
        }));
    }
    Ok(entries)
}

fn write(path: &Path, entries: &[Arc<KeyEntry>]) -> Result<(), StoreError> {
    let file = KeyFile {
        version: VERSION,
        keys: entries
            .iter()
            .map(|e| StoredKey {
                name: e.name.to_string(),
                role: e.role,
                sha256: hex::encode(e.digest),
                created: e.created,
                expires: e.expires,
            })
            .collect(),
    };
    let io_err = |source| StoreError::Io {
        path: path.to_owned(),
        source,
    };
    let mut bytes = serde_json::to_vec_pretty(&file).map_err(|e| io_err(io::Error::other(e)))?;
    bytes.push(b'\n');
    let dir = dir_of(path);
    fs::create_dir_all(&dir).map_err(io_err)?;
    // Unique even between replicas in containers that all run as pid 1 (where `flock` is
    // missing, two writers must not share a temporary file).
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let tmp = beside(path, &format!("{}.{nanos}.tmp", std::process::id()));
    let written = write_private(&tmp, &bytes).and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = written {
        // Best effort: the temp file is useless now; the error that matters is `e`.
        let _ = fs::remove_file(&tmp);
        return Err(io_err(e));
    }
    crate::enforce::sync_dir(&dir).map_err(io_err)
}

/// Writes and syncs a file only its owner can read (digests are not keys, but the list of
/// who may call is nobody else's business).
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-11-29T12:00:00Z".parse().unwrap()
    }

    /// Two stores on one file, as two replicas on a shared volume: every key either adds
    /// (or revokes) is in the file afterwards; none is lost to the other's write.
    #[test]
    fn two_stores_sharing_a_file_lose_none_of_each_others_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let stores = [
            Arc::new(KeyStore::open(&path).unwrap()),
            Arc::new(KeyStore::open(&path).unwrap()),
        ];
        let threads: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(s, store)| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for i in 0..40 {
                        store
                            .add(&format!("k{s}-{i}"), Role::User, None, now())
                            .unwrap();
                    }
                    for i in 0..10 {
                        assert!(store.revoke(&format!("k{s}-{i}")).unwrap().is_some());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut names: Vec<String> = read(&path)
            .unwrap()
            .iter()
            .map(|e| e.name.to_string())
            .collect();
        names.sort();
        let mut want: Vec<String> = (0..2)
            .flat_map(|s| (10..40).map(move |i| format!("k{s}-{i}")))
            .collect();
        want.sort();
        assert_eq!(names, want);
        // No temporary file is left behind; the lock file stays (it is reused).
        let mut files: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(files, [".keys.json.lock", "keys.json"]);
    }

    #[test]
    fn added_keys_are_found_by_their_text_and_only_digests_are_stored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let store = KeyStore::open(&path).unwrap();
        let (alice, key) = store.add("alice", Role::User, None, now()).unwrap();
        assert_eq!(&*alice.name, "alice");
        assert_eq!(store.lookup(key.as_bytes(), now()), Lookup::Valid(alice));
        assert_eq!(store.lookup(b"ogk_wrong", now()), Lookup::Unknown);
        let text = fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&key), "the key itself must never be stored");
        assert!(text.contains(&hex::encode(key::digest(key.as_bytes()))));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        // Another process (a restart) sees the same key.
        let again = KeyStore::open(&path).unwrap();
        assert!(matches!(
            again.lookup(key.as_bytes(), now()),
            Lookup::Valid(e) if &*e.name == "alice" && e.role == Role::User
        ));
    }

    #[test]
    fn revoked_and_expired_keys_stop_working_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(&dir.path().join("k.json")).unwrap();
        let (_, a) = store.add("a", Role::Manager, None, now()).unwrap();
        let later = now() + chrono::TimeDelta::hours(1);
        let (b_entry, b) = store.add("b", Role::User, Some(later), now()).unwrap();
        assert!(matches!(
            store.lookup(b.as_bytes(), now()),
            Lookup::Valid(_)
        ));
        assert_eq!(store.lookup(b.as_bytes(), later), Lookup::Expired(b_entry));
        assert_eq!(
            store.revoke("a").unwrap().map(|e| e.role),
            Some(Role::Manager)
        );
        assert_eq!(store.lookup(a.as_bytes(), now()), Lookup::Unknown);
        assert_eq!(store.revoke("a").unwrap(), None);
        assert_eq!(
            store
                .list()
                .iter()
                .map(|e| e.name.to_string())
                .collect::<Vec<_>>(),
            ["b"]
        );
    }

    #[test]
    fn names_are_unique_and_restricted() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(&dir.path().join("k.json")).unwrap();
        store
            .add("ci-bot@team_1.x", Role::User, None, now())
            .unwrap();
        assert!(matches!(
            store.add("ci-bot@team_1.x", Role::User, None, now()),
            Err(StoreError::Exists(_))
        ));
        for bad in ["", "a b", "a\"b", "é", &"x".repeat(65), "a\nb"] {
            assert!(matches!(
                store.add(bad, Role::User, None, now()),
                Err(StoreError::BadName(_))
            ));
        }
    }

    #[test]
    fn a_hand_edited_file_is_picked_up_by_reload_and_a_broken_one_keeps_the_old_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.json");
        let store = KeyStore::open(&path).unwrap();
        let (_, key) = store.add("a", Role::User, None, now()).unwrap();
        let other = KeyStore::open(&path).unwrap();
        other.revoke("a").unwrap();
        // Still valid here until this store reloads.
        assert!(matches!(
            store.lookup(key.as_bytes(), now()),
            Lookup::Valid(_)
        ));
        assert_eq!(store.reload().unwrap(), 0);
        assert_eq!(store.lookup(key.as_bytes(), now()), Lookup::Unknown);

        let (_, key2) = store.add("b", Role::User, None, now()).unwrap();
        fs::write(&path, "{not json").unwrap();
        let e = store.reload().unwrap_err().to_string();
        assert!(e.contains("not a valid key file"), "{e}");
        assert!(matches!(
            store.lookup(key2.as_bytes(), now()),
            Lookup::Valid(_)
        ));
        let e = KeyStore::open(&path).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}: not a valid key file", path.display())),
            "{e}"
        );
        // A file that vanished while keys are in force is refused too; once no key is in
        // force, a missing file is an empty store, as at the first start.
        fs::remove_file(&path).unwrap();
        let e = store.reload().unwrap_err().to_string();
        assert_eq!(
            e,
            format!("{}: the key file is gone; the keys in force are kept (`keys add` or `keys revoke` writes it again from them; a file without keys removes them all)", path.display())
        );
        assert!(matches!(
            store.lookup(key2.as_bytes(), now()),
            Lookup::Valid(_)
        ));
        let empty = KeyStore::open(&path).unwrap();
        assert_eq!(empty.reload().unwrap(), 0);
    }

    /// An `add` or a `revoke` while the file is gone (a wrong mount) works on the keys in
    /// force and writes the file again with them: an `add` had written a file with only the
    /// new key (every other client refused at the next reload), and refusing would leave a
    /// leaked key unrevokable.
    #[test]
    fn a_change_while_the_file_is_gone_starts_from_the_keys_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("k.json");
        let store = KeyStore::open(&path).unwrap();
        let (_, a) = store.add("a", Role::Manager, None, now()).unwrap();
        let (_, b) = store.add("b", Role::User, None, now()).unwrap();
        let names = || -> Vec<String> {
            read(&path)
                .unwrap()
                .iter()
                .map(|e| e.name.to_string())
                .collect()
        };
        // The whole directory gone (a wrong mount).
        fs::remove_dir_all(dir.path().join("state")).unwrap();
        store.revoke("a").unwrap().unwrap();
        assert_eq!(names(), ["b"]);
        assert_eq!(store.lookup(a.as_bytes(), now()), Lookup::Unknown);
        fs::remove_file(&path).unwrap();
        let (_, c) = store.add("c", Role::User, None, now()).unwrap();
        assert_eq!(names(), ["b", "c"]);
        for (key, name) in [(&b, "b"), (&c, "c")] {
            assert!(matches!(
                store.lookup(key.as_bytes(), now()),
                Lookup::Valid(e) if &*e.name == name
            ));
        }
        // A reload still refuses a file that is gone.
        fs::remove_file(&path).unwrap();
        assert!(matches!(store.reload(), Err(StoreError::Gone(_))));
        assert!(matches!(
            store.lookup(b.as_bytes(), now()),
            Lookup::Valid(_)
        ));
    }

    #[test]
    fn bad_entries_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.json");
        for (text, want) in [
            (
                r#"{"version":1,"keys":[{"name":"a","role":"user","sha256":"zz","created":"2026-01-01T00:00:00Z"}]}"#,
                "keys[0] (a): sha256 must be 64 hex digits",
            ),
            (
                &format!(
                    r#"{{"version":1,"keys":[{{"name":"a","role":"user","sha256":"{d}","created":"2026-01-01T00:00:00Z"}},{{"name":"a-alias","role":"manager","sha256":"{d}","created":"2026-01-01T00:00:00Z"}}]}}"#,
                    d = "ab".repeat(32)
                ),
                "keys[1] (a-alias): the same key (sha256) as \"a\"",
            ),
            (
                r#"{"version":2,"keys":[]}"#,
                "version 2 (this build reads 1)",
            ),
            (
                r#"{"version":1,"keys":[{"name":"a","role":"admin","sha256":"","created":"2026-01-01T00:00:00Z"}]}"#,
                "unknown variant `admin`",
            ),
        ] {
            fs::write(&path, text).unwrap();
            let e = KeyStore::open(&path).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Manager > Role::User);
        assert_eq!(Role::parse("manager"), Some(Role::Manager));
        assert_eq!(Role::parse("admin"), None);
    }
}
