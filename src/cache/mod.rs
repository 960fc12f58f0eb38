//! The stage cache: a stage whose key is cached is not run again; its
//! layer is reused and its unpacked tree is mounted as an overlay lower.
//!
//! Under `$KILN_HOME/cache`:
//! - `stages/KEY.json`: an entry, the stage's layer (its blob is in the
//!   store), history and the tree's census, with a checksum of itself;
//! - `trees/NAME/`: the stage's tree (its overlay upper, moved here after
//!   baking), never changed afterwards;
//! - `last/TEMPLATE.json`: the keys of a template's last build, to say why
//!   a stage missed;
//! - `layer-trees/DIFF_ID/tree`: unpacked layers of base images (with
//!   overlayfs's `user.overlay.*` marks);
//! - `tests/KEY`: a `[[test]]` passed with this key;
//! - `artifacts/KEY-PATH.json`: an artifact a post-processor wrote for an
//!   image, with its size, sha256 and how its file looked when written, so
//!   a rebuild that would write the same bytes finds them in place.
//!
//! Builds hold a shared lock on the cache; `prune` takes it exclusively,
//! so nothing a build mounts is removed under it. Entries are written by
//! rename, so a killed build leaves either a whole entry or none. An entry
//! whose checksum, tree census or layer blob does not match is damaged: it
//! counts as a miss and is replaced.

pub mod key;
pub mod shared;
mod verify;

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::artifact::Artifact;
use crate::oci::{Descriptor, History};
use crate::reference::Digest;
use crate::store::Store;
pub use key::StageKey;
pub use verify::{DropReason, DroppedTree, Verified};

/// A stage's cached layer and the tree it was baked from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CachedLayer {
    pub descriptor: Descriptor,
    pub diff_id: Digest,
    /// The folder under `trees/`; `None` when the stage's root is a host
    /// folder (a `directory` source), which is its own tree.
    pub tree: Option<String>,
    /// Census of the tree when it was cached: entries and bytes of files.
    pub entries: u64,
    pub bytes: u64,
    /// The tree is an overlay upper (whiteouts as 0/0 devices, opaque
    /// marks), as a provisioner's is; a source's is a plain tree.
    pub overlay_upper: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entry {
    pub key: StageKey,
    /// The stage's number: 0 for the source, N for the Nth provisioner.
    pub stage: usize,
    pub kind: String,
    /// The image whose build made it.
    pub image: String,
    /// `None`: the stage changed nothing.
    pub layer: Option<CachedLayer>,
    pub history: History,
    /// sha256 of this entry's JSON with this field empty.
    #[serde(default)]
    pub checksum: String,
}

impl Entry {
    fn with_checksum(mut self) -> Self {
        self.checksum = String::new();
        self.checksum =
            Digest::of(&serde_json::to_vec(&self).expect("entries serialize")).to_string();
        self
    }

    fn checksum_matches(&self) -> bool {
        let mut copy = self.clone();
        copy.checksum = String::new();
        Digest::of(&serde_json::to_vec(&copy).expect("entries serialize")).to_string()
            == self.checksum
    }

    /// Bytes the entry holds on disk: its tree and its layer blob.
    pub fn size(&self) -> u64 {
        self.layer
            .as_ref()
            .map_or(0, |layer| layer.bytes + layer.descriptor.size)
    }
}

/// Readable entries with when each was last used, and unreadable entry files.
type EntryFiles = (Vec<(Entry, SystemTime)>, Vec<PathBuf>);

/// What a lookup found.
pub enum Lookup {
    Hit(Box<Entry>),
    Missing,
    Damaged(String),
}

/// Where unpacked base layers live, below the cache.
const LAYER_TREES: &str = "layer-trees";
/// Beside each unpacked base layer's `tree`: the descriptor of the layer
/// it was unpacked from, for `cache verify`.
pub const LAYER_TREE_RECORD: &str = "layer.json";

pub struct Cache {
    root: PathBuf,
    _lock: File,
}

fn census(tree: &Path) -> io::Result<(u64, u64)> {
    let mut entries = 0;
    let mut bytes = 0;
    let mut pending = vec![tree.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let metadata = entry.metadata()?;
            entries += 1;
            if metadata.is_dir() {
                pending.push(entry.path());
            } else if metadata.is_file() {
                bytes += metadata.size();
            }
        }
    }
    Ok((entries, bytes))
}

impl Cache {
    /// Opens the cache under `home`, holding its shared lock until dropped.
    pub fn open(home: &Path) -> io::Result<Self> {
        let root = home.join("cache");
        for dir in ["stages", "trees", "last", LAYER_TREES, "tests", "artifacts"] {
            fs::create_dir_all(root.join(dir))?;
        }
        let lock = File::create(root.join(".lock"))?;
        lock.lock_shared()?;
        Ok(Self { root, _lock: lock })
    }

    /// Opens the cache only if there is one, holding its lock exclusively
    /// (waiting for running builds), to remove what builds may mount.
    pub fn open_exclusive(home: &Path) -> io::Result<Option<Self>> {
        let root = home.join("cache");
        if !root.join("stages").is_dir() {
            return Ok(None);
        }
        let lock = File::create(root.join(".lock"))?;
        lock.lock()?;
        for dir in ["stages", "trees", "last", LAYER_TREES, "tests", "artifacts"] {
            fs::create_dir_all(root.join(dir))?;
        }
        Ok(Some(Self { root, _lock: lock }))
    }

    /// Opens the cache only if there is one: `cache ls` on an empty home
    /// creates nothing.
    pub fn open_existing(home: &Path) -> io::Result<Option<Self>> {
        if !home.join("cache/stages").is_dir() {
            return Ok(None);
        }
        Self::open(home).map(Some)
    }

    fn entry_path(&self, key: &Digest) -> PathBuf {
        self.root.join("stages").join(format!("{}.json", key.hex()))
    }

    /// Whether there is an entry for `key` (unchecked: [`Cache::lookup`]
    /// checks it).
    pub fn has_entry(&self, key: &Digest) -> bool {
        self.entry_path(key).is_file()
    }

    fn test_path(&self, key: &StageKey) -> PathBuf {
        self.root.join("tests").join(key.key.hex())
    }

    /// Whether a test with this key passed before.
    pub fn test_passed(&self, key: &StageKey) -> bool {
        self.test_path(key).is_file()
    }

    /// Records that a test with this key passed.
    pub fn record_test_pass(&self, key: &StageKey) -> io::Result<()> {
        let bytes = serde_json::to_vec(key).expect("keys serialize");
        write_atomically(&self.root.join("tests"), &self.test_path(key), &bytes)
    }

    /// The cached tree of a layer, unless the stage's root was a host folder.
    pub fn tree_path(&self, layer: &CachedLayer) -> Option<PathBuf> {
        layer
            .tree
            .as_ref()
            .map(|tree| self.root.join("trees").join(tree))
    }

    /// The unpacked layers of base images live here.
    pub fn layers_dir(&self) -> PathBuf {
        self.root.join(LAYER_TREES)
    }

    /// Finds the entry for `key` and checks it: its checksum, its tree's
    /// census, and its layer blob in `store`, re-hashed.
    pub fn lookup(&self, key: &Digest, store: &Store) -> Lookup {
        let path = self.entry_path(key);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Lookup::Missing,
            Err(error) => return Lookup::Damaged(format!("cannot read its entry: {error}")),
        };
        let entry: Entry = match serde_json::from_slice(&bytes) {
            Ok(entry) => entry,
            Err(error) => return Lookup::Damaged(format!("its entry is not valid: {error}")),
        };
        if !entry.checksum_matches() || &entry.key.key != key {
            return Lookup::Damaged("its entry does not match its checksum".to_owned());
        }
        if let Some(layer) = &entry.layer {
            if let Some(tree) = self.tree_path(layer) {
                match census(&tree) {
                    Ok(found) if found == (layer.entries, layer.bytes) => {}
                    Ok((entries, bytes)) => {
                        return Lookup::Damaged(format!(
                            "its tree has {entries} entries and {bytes} bytes, not {} and {}",
                            layer.entries, layer.bytes
                        ));
                    }
                    Err(error) => {
                        return Lookup::Damaged(format!("its tree cannot be read: {error}"));
                    }
                }
            }
            let verified = store
                .open_blob(&layer.descriptor.digest, Some(layer.descriptor.size))
                .map_err(|error| error.to_string())
                .and_then(|mut blob| {
                    io::copy(&mut blob, &mut io::sink()).map_err(|error| error.to_string())
                });
            if let Err(reason) = verified {
                return Lookup::Damaged(format!("its layer: {reason}"));
            }
        }
        // Last used: the entry's modification time.
        if let Ok(file) = File::options().write(true).open(&path) {
            let _ = file.set_modified(SystemTime::now());
        }
        Lookup::Hit(Box::new(entry))
    }

    /// Records a stage's result. A tree, when given, is moved into the
    /// cache (it must be on the same filesystem) and its new path returned.
    pub fn persist(&self, mut entry: Entry, tree: Option<&Path>) -> io::Result<Option<PathBuf>> {
        let mut moved = None;
        if let (Some(layer), Some(tree)) = (entry.layer.as_mut(), tree) {
            let (entries, bytes) = census(tree)?;
            let name = format!("{}-{}", &entry.key.key.hex()[..16], unique_suffix());
            let target = self.root.join("trees").join(&name);
            fs::rename(tree, &target)?;
            layer.tree = Some(name);
            layer.entries = entries;
            layer.bytes = bytes;
            moved = Some(target);
        }
        let entry = entry.with_checksum();
        write_atomically(
            &self.root.join("stages"),
            &self.entry_path(&entry.key.key),
            &serde_json::to_vec_pretty(&entry).expect("entries serialize"),
        )?;
        Ok(moved)
    }

    fn last_path(&self, template: &Path) -> PathBuf {
        self.root.join("last").join(format!(
            "{}.json",
            Digest::of(template.as_os_str().as_encoded_bytes()).hex()
        ))
    }

    /// The stage keys of the template's last build, if there was one.
    pub fn last_build(&self, template: &Path) -> Vec<StageKey> {
        fs::read(self.last_path(template))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    pub fn record_build(&self, template: &Path, keys: &[StageKey]) -> io::Result<()> {
        write_atomically(
            &self.root.join("last"),
            &self.last_path(template),
            &serde_json::to_vec(keys).expect("keys serialize"),
        )
    }

    /// Every readable entry, with when it was last used, most recent first.
    pub fn entries(&self) -> io::Result<Vec<(Entry, SystemTime)>> {
        let (mut entries, _) = self.entry_files()?;
        entries.sort_by_key(|(_, used)| std::cmp::Reverse(*used));
        Ok(entries)
    }

    /// The entries, and the entry files that cannot be read (written by
    /// another version of kiln, or damaged).
    fn entry_files(&self) -> io::Result<EntryFiles> {
        let mut entries = Vec::new();
        let mut unreadable = Vec::new();
        for file in fs::read_dir(self.root.join("stages"))? {
            let path = file?.path();
            if path.extension().is_none_or(|extension| extension != "json") {
                continue;
            }
            let entry = fs::read(&path)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Entry>(&bytes).ok());
            let Some(entry) = entry else {
                unreadable.push(path);
                continue;
            };
            let used = fs::metadata(&path)
                .and_then(|metadata| metadata.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            entries.push((entry, used));
        }
        Ok((entries, unreadable))
    }

    fn artifact_path(&self, key: &Digest, path: &Path) -> PathBuf {
        let place = Digest::of(path.as_os_str().as_encoded_bytes());
        self.root.join("artifacts").join(format!(
            "{}-{}.json",
            &key.hex()[..32],
            &place.hex()[..32]
        ))
    }

    /// The artifact made for `key` at `path`, if it is still there as it
    /// was written: same file, untouched since (device, inode, size, ctime),
    /// or, if touched, still hashing to the recorded sha256.
    pub fn artifact_in_place(&self, key: &Digest, path: &Path) -> Option<Artifact> {
        let bytes = fs::read(self.artifact_path(key, path)).ok()?;
        let record: ArtifactRecord = serde_json::from_slice(&bytes).ok()?;
        if record.key != *key || record.artifact.path != path {
            return None;
        }
        let metadata = fs::metadata(path).ok()?;
        if !metadata.is_file() || metadata.len() != record.artifact.size {
            return None;
        }
        if FileStamp::of(&metadata) != record.stamp {
            let (sha256, _) = crate::hashing::digest_file(path).ok()?;
            if sha256 != record.artifact.sha256 {
                return None;
            }
            let _ = self.record_artifact(key, &record.artifact);
        }
        Some(record.artifact)
    }

    /// Records an artifact just written for `key`.
    pub fn record_artifact(&self, key: &Digest, artifact: &Artifact) -> io::Result<()> {
        let metadata = fs::metadata(&artifact.path)?;
        let record = ArtifactRecord {
            key: key.clone(),
            artifact: artifact.clone(),
            stamp: FileStamp::of(&metadata),
        };
        write_atomically(
            &self.root.join("artifacts"),
            &self.artifact_path(key, &artifact.path),
            &serde_json::to_vec(&record).expect("records serialize"),
        )
    }
}

/// An artifact written for an image, and how its file looked then.
#[derive(Serialize, Deserialize)]
struct ArtifactRecord {
    key: Digest,
    artifact: Artifact,
    stamp: FileStamp,
}

/// What changes whenever a file is written or replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct FileStamp {
    device: u64,
    inode: u64,
    size: u64,
    ctime: i64,
    ctime_nanos: i64,
}

impl FileStamp {
    fn of(metadata: &fs::Metadata) -> Self {
        Self {
            device: metadata.dev(),
            inode: metadata.ino(),
            size: metadata.len(),
            ctime: metadata.ctime(),
            ctime_nanos: metadata.ctime_nsec(),
        }
    }
}

fn unique_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    format!("{:x}{:x}", std::process::id(), nanos)
}

fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut temp = tempfile::Builder::new()
        .prefix(".partial-")
        .tempfile_in(dir)?;
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|error| error.error)?;
    Ok(())
}

/// Which entries `prune` removes.
#[derive(Clone, Copy, Debug)]
pub enum PrunePolicy {
    All,
    /// Least recently used first, until the cache holds at most this much.
    KeepBytes(u64),
    OlderThan(Duration),
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Pruned {
    pub entries: usize,
    pub bytes: u64,
}

/// Removes entries by `policy`, then every tree and base layer no entry
/// uses. Waits for running builds (they hold the cache's shared lock).
pub fn prune(home: &Path, policy: PrunePolicy) -> io::Result<Pruned> {
    let Some(cache) = Cache::open_exclusive(home)? else {
        return Ok(Pruned::default());
    };
    let root = cache.root.clone();
    let mut pruned = Pruned::default();
    let (mut entries, unreadable) = cache.entry_files()?;
    entries.sort_by_key(|(_, used)| std::cmp::Reverse(*used));
    for path in unreadable {
        fs::remove_file(path)?;
        pruned.entries += 1;
    }
    let now = SystemTime::now();
    let mut kept_bytes: u64 = entries.iter().map(|(entry, _)| entry.size()).sum();
    // Oldest first, so a byte budget keeps the most recently used.
    entries.reverse();
    let mut keep = BTreeSet::new();
    for (entry, used) in entries {
        let remove = match policy {
            PrunePolicy::All => true,
            PrunePolicy::KeepBytes(limit) => kept_bytes > limit,
            PrunePolicy::OlderThan(age) => now.duration_since(used).unwrap_or_default() > age,
        };
        if remove {
            fs::remove_file(cache.entry_path(&entry.key.key))?;
            kept_bytes -= entry.size();
            pruned.entries += 1;
            pruned.bytes += entry.size();
        } else if let Some(tree) = entry.layer.as_ref().and_then(|layer| layer.tree.clone()) {
            keep.insert(tree);
        }
    }
    for dir in fs::read_dir(root.join("trees"))? {
        let dir = dir?;
        if !keep.contains(&dir.file_name().to_string_lossy().into_owned()) {
            fs::remove_dir_all(dir.path())?;
        }
    }
    if matches!(policy, PrunePolicy::All) {
        for dir in fs::read_dir(root.join(LAYER_TREES))? {
            fs::remove_dir_all(dir?.path())?;
        }
        // Base layers unpacked by a kiln that marked them for trusted.* overlays.
        let legacy = root.join("layers");
        if legacy.is_dir() {
            fs::remove_dir_all(legacy)?;
        }
    }
    for dir in ["tests", "artifacts"] {
        fs::create_dir_all(root.join(dir))?;
    }
    let records = fs::read_dir(root.join("tests"))?.chain(fs::read_dir(root.join("artifacts"))?);
    for file in records {
        let file = file?;
        let stale = match policy {
            PrunePolicy::All => true,
            PrunePolicy::KeepBytes(_) => false,
            PrunePolicy::OlderThan(age) => file
                .metadata()?
                .modified()
                .is_ok_and(|at| now.duration_since(at).unwrap_or_default() > age),
        };
        if stale {
            fs::remove_file(file.path())?;
        }
    }
    for dir in ["stages", "last", "tests", "artifacts"] {
        for file in fs::read_dir(root.join(dir))? {
            let file = file?;
            if file.file_name().to_string_lossy().starts_with(".partial-") {
                fs::remove_file(file.path())?;
            }
        }
    }
    Ok(pruned)
}

impl Cache {
    /// Checks every stage tree and unpacked base layer; removes those that
    /// differ, with the entries that use them. `checking` is told each
    /// tree before it is read. The cache must be held exclusively
    /// ([`Cache::open_exclusive`]): nothing may mount a tree being removed.
    pub fn verify(
        &self,
        store: &Store,
        checking: &mut dyn FnMut(&str),
    ) -> io::Result<verify::Verified> {
        let mut verified = verify::Verified::default();
        let (entries, _) = self.entry_files()?;
        for (entry, _) in entries {
            let Some(layer) = &entry.layer else {
                continue;
            };
            let Some(tree) = self.tree_path(layer) else {
                // A directory source's host folder: its own tree, checked
                // against its planned digest by every build.
                continue;
            };
            let what = format!("stage {} ({}) of {}", entry.stage, entry.kind, entry.image);
            checking(&what);
            match verify::check_tree(
                store,
                &tree,
                &layer.descriptor,
                &layer.diff_id,
                layer.overlay_upper,
            ) {
                None => verified.intact += 1,
                Some(reason) => {
                    fs::remove_file(self.entry_path(&entry.key.key))?;
                    verify::remove_tree(&tree)?;
                    verified
                        .dropped
                        .push(verify::DroppedTree { what, tree, reason });
                }
            }
        }
        for dir in fs::read_dir(self.root.join(LAYER_TREES))? {
            let dir = dir?.path();
            let name = dir
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.starts_with('.') {
                continue;
            }
            let what = format!("base layer sha256:{name}");
            checking(&what);
            let record = fs::read(dir.join(LAYER_TREE_RECORD))
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Descriptor>(&bytes).ok());
            let reason = match (record, format!("sha256:{name}").parse::<Digest>()) {
                (Some(descriptor), Ok(diff_id)) => {
                    verify::check_tree(store, &dir.join("tree"), &descriptor, &diff_id, true)
                }
                _ => Some(verify::DropReason::NoRecord),
            };
            match reason {
                None => verified.intact += 1,
                Some(reason) => {
                    verify::remove_tree(&dir)?;
                    verified.dropped.push(verify::DroppedTree {
                        what,
                        tree: dir.join("tree"),
                        reason,
                    });
                }
            }
        }
        Ok(verified)
    }
}
