//! The store: kiln's local registry, a standard OCI image layout under
//! `$KILN_HOME/store` that skopeo and umoci read as it is.
//!
//! Every write is atomic. Blobs go to a temp file, are fsynced, verified
//! and renamed into `blobs/sha256/`, read-only; `index.json` is replaced by
//! rename while holding the store's lock. A build killed at any moment
//! leaves the store as it was, and its half-written temp files are removed
//! the next time the store is opened. Versions never change: tagging a version
//! again with another digest is refused.

pub mod amis;
mod blob;
pub mod channels;
mod error;
pub mod layer;
mod temp;
pub mod verify;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::io_error::IoError;
pub use blob::BlobWriter;
use blob::sync_dir;
pub use error::{Result, StoreError};
use temp::TempFile;

use crate::hashing::VerifyingReader;
use crate::oci::{self, Descriptor, ImageConfig, Index, Manifest};
use crate::reference::{Digest, ImageName, StoreRef, StoreTarget, Version};

/// The annotations kiln puts on each image's entry in `index.json`: the
/// image's name, and when it was stored (the image's own creation time is
/// the reproducible epoch, so it cannot say).
pub const ANNOTATION_NAME: &str = "dev.kiln.image.name";
pub const ANNOTATION_STORED: &str = "dev.kiln.stored";

/// One tagged image of the store.
#[derive(Clone, Debug)]
pub struct ImageEntry {
    pub name: ImageName,
    pub version: Version,
    pub manifest: Descriptor,
    /// When it was stored, as RFC 3339; images stored by other tools have none.
    pub stored: Option<String>,
}

/// The result of tagging an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tagged {
    Stored,
    /// The same name and version with the same digest was there already.
    AlreadyStored,
}

#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

/// A lock on the store, released when dropped.
pub struct StoreLock {
    _file: File,
}

impl Store {
    /// Opens the store at `root`, creating an empty layout if there is none.
    pub fn open(root: &Path) -> Result<Self> {
        let store = Self {
            root: root.to_owned(),
        };
        fs::create_dir_all(store.blobs_dir()).map_err(IoError::at("create", &store.blobs_dir()))?;
        fs::create_dir_all(store.tmp_dir()).map_err(IoError::at("create", &store.tmp_dir()))?;
        let lock = store.lock()?;
        temp::remove_abandoned(&store.tmp_dir());
        let layout = root.join("oci-layout");
        if !layout.exists() {
            store.replace_file(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        if !store.index_path().exists() {
            store.write_index(&Index {
                schema_version: 2,
                media_type: Some(oci::MEDIA_TYPE_INDEX.to_owned()),
                manifests: Vec::new(),
            })?;
        }
        drop(lock);
        Ok(store)
    }

    /// Opens the store at `root` only if there is one: read-only commands
    /// on an empty home create nothing.
    pub fn open_existing(root: &Path) -> Result<Option<Self>> {
        if !root.join("index.json").is_file() {
            return Ok(None);
        }
        Self::open(root).map(Some)
    }

    /// Opens the store at `root` to read `what` from it: without a store,
    /// `what` is not found, and nothing is created.
    pub fn open_to_read(root: &Path, what: &dyn std::fmt::Display) -> Result<Self> {
        Self::open_existing(root)?.ok_or_else(|| StoreError::NotFound(what.to_string()))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// kiln's own folder in the layout, which other tools ignore.
    pub fn private_dir(&self) -> PathBuf {
        self.root.join(".kiln")
    }

    /// Replaces a file under [`Store::private_dir`] atomically.
    /// A JSON file kiln keeps beside the layout, or the default when there
    /// is none yet.
    pub(crate) fn read_private_json<T: serde::de::DeserializeOwned + Default>(
        &self,
        path: &Path,
    ) -> Result<T> {
        match fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|error| StoreError::InvalidLayout {
                    path: path.to_owned(),
                    reason: error.to_string(),
                })
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
            Err(source) => Err(IoError::new("read", path, source).into()),
        }
    }

    /// Where kiln keeps a file of its own about image `name`:
    /// `.kiln/KIND/NAME.json`.
    pub(crate) fn private_image_file(&self, kind: &str, name: &ImageName) -> PathBuf {
        self.private_dir()
            .join(kind)
            .join(format!("{}.json", name.as_str().replace('/', "%2F")))
    }

    pub(crate) fn write_private(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(IoError::at("create", parent))?;
        }
        self.replace_file(path, bytes)
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }

    /// kiln's own files (lock, temp files) live beside the layout's.
    fn tmp_dir(&self) -> PathBuf {
        self.root.join(".kiln/tmp")
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    /// Takes the store's exclusive lock (index changes).
    pub fn lock(&self) -> Result<StoreLock> {
        let path = self.root.join(".kiln/lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(IoError::at("open", &path))?;
        file.lock().map_err(IoError::at("lock", &path))?;
        Ok(StoreLock { _file: file })
    }

    pub fn blob_writer(&self) -> Result<BlobWriter> {
        BlobWriter::new(&self.tmp_dir(), self.blobs_dir())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Stores a small document (JSON) given in memory.
    pub fn put_bytes(&self, media_type: &str, bytes: &[u8]) -> Result<Descriptor> {
        let mut writer = self.blob_writer()?;
        writer
            .write_all(bytes)
            .map_err(IoError::at("write", &self.tmp_dir()))?;
        let (digest, size) = writer.commit()?;
        Ok(Descriptor {
            media_type: media_type.to_owned(),
            digest,
            size,
            annotations: BTreeMap::new(),
        })
    }

    /// A reader of a blob that fails at the end unless the content matches
    /// its digest (and size, when given).
    pub fn open_blob(&self, digest: &Digest, size: Option<u64>) -> Result<VerifyingReader<File>> {
        let path = self.blob_path(digest);
        let file = File::open(&path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => StoreError::Damaged {
                digest: digest.clone(),
                reason: "it is missing".to_owned(),
            },
            _ => IoError::new("open", &path, source).into(),
        })?;
        Ok(VerifyingReader::new(file, digest.clone(), size))
    }

    /// Reads a small blob whole, verified.
    pub fn read_blob(&self, descriptor: &Descriptor) -> Result<Vec<u8>> {
        let mut bytes = Vec::with_capacity(descriptor.size.min(1 << 20) as usize);
        self.open_blob(&descriptor.digest, Some(descriptor.size))?
            .read_to_end(&mut bytes)
            .map_err(|error| StoreError::Damaged {
                digest: descriptor.digest.clone(),
                reason: error.to_string(),
            })?;
        Ok(bytes)
    }

    fn read_json<T: serde::de::DeserializeOwned>(&self, descriptor: &Descriptor) -> Result<T> {
        let bytes = self.read_blob(descriptor)?;
        serde_json::from_slice(&bytes).map_err(|error| StoreError::Damaged {
            digest: descriptor.digest.clone(),
            reason: format!("it is not the JSON document expected: {error}"),
        })
    }

    pub fn manifest(&self, entry: &ImageEntry) -> Result<Manifest> {
        self.read_json(&entry.manifest)
    }

    pub fn config(&self, manifest: &Manifest) -> Result<ImageConfig> {
        self.read_json(&manifest.config)
    }

    pub fn read_index(&self) -> Result<Index> {
        let path = self.index_path();
        let bytes = fs::read(&path).map_err(IoError::at("read", &path))?;
        serde_json::from_slice(&bytes).map_err(|error| StoreError::InvalidLayout {
            path: path.clone(),
            reason: error.to_string(),
        })
    }

    fn write_index(&self, index: &Index) -> Result<()> {
        self.replace_file(&self.index_path(), &oci::to_canonical_json(index))
    }

    /// Writes `bytes` to a temp file, fsyncs it and renames it over `path`.
    pub(crate) fn replace_file(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let mut temp = TempFile::create(&self.tmp_dir(), "file-")
            .map_err(IoError::at("create a temp file in", &self.tmp_dir()))?;
        temp.write_all(bytes)
            .map_err(IoError::at("write", temp.path()))?;
        temp.as_file()
            .sync_all()
            .map_err(IoError::at("sync", temp.path()))?;
        temp.persist(path).map_err(IoError::at("replace", path))?;
        sync_dir(&self.root)
    }

    /// Every tagged image, in index order.
    pub fn list(&self) -> Result<Vec<ImageEntry>> {
        Ok(self
            .read_index()?
            .manifests
            .iter()
            .filter_map(entry_of)
            .collect())
    }

    /// Finds an image by `name:version` or `name@digest`.
    pub fn resolve(&self, reference: &StoreRef) -> Result<ImageEntry> {
        self.list()?
            .into_iter()
            .find(|entry| {
                entry.name == reference.name
                    && match &reference.target {
                        StoreTarget::Version(version) => &entry.version == version,
                        StoreTarget::Digest(digest) => &entry.manifest.digest == digest,
                    }
            })
            .ok_or_else(|| StoreError::NotFound(reference.to_string()))
    }

    /// Tags a stored manifest as `name:version`, unless that version exists:
    /// with the same digest that is a no-op, with another it is refused.
    pub fn tag(
        &self,
        name: &ImageName,
        version: &Version,
        manifest: &Descriptor,
    ) -> Result<Tagged> {
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        if let Some(existing) = index
            .manifests
            .iter()
            .filter_map(entry_of)
            .find(|entry| &entry.name == name && &entry.version == version)
        {
            if existing.manifest.digest == manifest.digest {
                return Ok(Tagged::AlreadyStored);
            }
            return Err(StoreError::VersionConflict {
                name: name.clone(),
                version: version.clone(),
                existing: existing.manifest.digest,
                new: manifest.digest.clone(),
            });
        }
        let mut descriptor = manifest.clone();
        descriptor.annotations.insert(
            oci::ANNOTATION_REF_NAME.to_owned(),
            format!("{name}:{version}"),
        );
        descriptor
            .annotations
            .insert(ANNOTATION_NAME.to_owned(), name.to_string());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        descriptor
            .annotations
            .insert(ANNOTATION_STORED.to_owned(), oci::rfc3339(now));
        index.manifests.push(descriptor);
        self.write_index(&index)?;
        Ok(Tagged::Stored)
    }
}

/// Reads kiln's name and version from an index entry; entries of other tools
/// with only a `ref.name` are read as `NAME:VERSION` too.
fn entry_of(descriptor: &Descriptor) -> Option<ImageEntry> {
    let ref_name = descriptor.annotations.get(oci::ANNOTATION_REF_NAME)?;
    let (name, version) = match descriptor.annotations.get(ANNOTATION_NAME) {
        Some(name) => (
            name.as_str(),
            ref_name.strip_prefix(name.as_str())?.strip_prefix(':')?,
        ),
        None => ref_name.rsplit_once(':')?,
    };
    Some(ImageEntry {
        name: name.parse().ok()?,
        version: version.parse().ok()?,
        manifest: descriptor.clone(),
        stored: descriptor.annotations.get(ANNOTATION_STORED).cloned(),
    })
}
