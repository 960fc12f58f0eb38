//! Baking: a directory tree into a deterministic, gzip'd OCI layer in the
//! store, hashed while it streams.
//!
//! tar (sorted, clamped, numeric owners) → sha256 of the tar (the diff id) →
//! gzip on every core, with bytes independent of the thread count → sha256
//! of the blob → a temp file renamed into the store. Nothing is held in memory.

pub mod gzip;
pub mod tar;

use std::io::{self, Write};
use std::path::Path;

use crate::file_index::FileEntry;
use crate::hashing::HashingWriter;
use crate::oci::{self, Descriptor};
use crate::reference::Digest;
use crate::store::{Store, StoreError};

pub use self::tar::TreeOptions;

/// A baked layer: its blob in the store and the digest of its tar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    pub descriptor: Descriptor,
    pub diff_id: Digest,
    /// Size of the uncompressed tar.
    pub tar_size: u64,
    /// The layer's file index, made while baking.
    pub files: Vec<FileEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum BakeError {
    #[error("failed to bake {}", path.display())]
    Tree {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Calls a function with the running count of bytes every so often.
struct Progress<'a, W> {
    inner: W,
    count: u64,
    reported: u64,
    report: &'a mut dyn FnMut(u64),
}

impl<W: Write> Write for Progress<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        if self.count - self.reported >= 4 << 20 {
            (self.report)(self.count);
            self.reported = self.count;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// How many threads compress: every core.
pub fn compression_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Bakes the tree at `root` into a layer blob in `store`. `report` is
/// called with the uncompressed bytes written so far.
pub fn bake_layer(
    store: &Store,
    root: &Path,
    options: TreeOptions,
    report: &mut dyn FnMut(u64),
) -> Result<Layer, BakeError> {
    let tree_error = |source| BakeError::Tree {
        path: root.to_owned(),
        source,
    };
    let blob = store.blob_writer()?;
    let gzip = gzip::ParallelGzip::new(blob, compression_threads()).map_err(tree_error)?;
    let tar_hasher = HashingWriter::new(gzip);
    let progress = Progress {
        inner: tar_hasher,
        count: 0,
        reported: 0,
        report,
    };
    let (progress, files) = tar::write_tree_indexed(root, progress, options).map_err(tree_error)?;
    (progress.report)(progress.count);
    let (diff_id, tar_size, gzip) = progress.inner.finish();
    let blob = gzip.finish().map_err(tree_error)?;
    let (digest, size) = blob.commit()?;
    Ok(Layer {
        descriptor: Descriptor {
            media_type: oci::MEDIA_TYPE_LAYER_GZIP.to_owned(),
            digest,
            size,
            annotations: Default::default(),
        },
        diff_id,
        tar_size,
        files,
    })
}

/// The diff id the tree at `root` would bake into: the sha256 of its
/// deterministic tar, written to nowhere.
pub fn tree_digest(root: &Path, options: TreeOptions) -> io::Result<Digest> {
    let hashing = tar::write_tree(root, HashingWriter::new(io::sink()), options)?;
    let (digest, _, _) = hashing.finish();
    Ok(digest)
}

/// Whether a stage's upper directory holds no change at all.
pub fn is_empty_tree(root: &Path) -> io::Result<bool> {
    Ok(std::fs::read_dir(root)?.next().is_none())
}
