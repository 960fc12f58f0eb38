//! Writing a stored image out in other forms: an OCI image layout, an OCI
//! archive (that layout as one tar), or the flattened root as a tarball.
//!
//! Every output is made next to its final path and renamed into place, so
//! an interrupted export leaves nothing half-written.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::bake::{TreeOptions, gzip::ParallelGzip};
use crate::disk::{DiskError, DiskImage, DiskSettings, write_disk};
use crate::io_error::IoError;
use crate::oci::{self, Descriptor, Index, Manifest};
use crate::store::{ImageEntry, Store, StoreError};
use crate::unpack::{self, UnpackError, Whiteouts};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{} exists already; kiln does not overwrite it", .0.display())]
    Exists(PathBuf),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("failed to apply layer {digest}")]
    Unpack {
        digest: crate::reference::Digest,
        #[source]
        source: UnpackError,
    },
    #[error("{0} layers but {1} diff ids in the image's config")]
    LayerCount(usize, usize),
    #[error("failed to make the disk")]
    Disk(#[from] DiskError),
    #[error(transparent)]
    Io(#[from] crate::io_error::IoError),
}

fn refuse_existing(path: &Path) -> Result<(), ExportError> {
    if fs::symlink_metadata(path).is_ok() {
        return Err(ExportError::Exists(path.to_owned()));
    }
    Ok(())
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Writes the image's layout into a temp folder beside `destination`;
/// returns the folder and `destination`'s parent.
fn staged_layout(
    store: &Store,
    entry: &ImageEntry,
    destination: &Path,
) -> Result<(tempfile::TempDir, PathBuf), ExportError> {
    refuse_existing(destination)?;
    let parent = parent_of(destination);
    let staging = tempfile::Builder::new()
        .prefix(".kiln-export-")
        .tempdir_in(&parent)
        .map_err(IoError::at("create a folder in", &parent))?;
    write_layout(store, entry, staging.path())?;
    Ok((staging, parent))
}

/// Writes an OCI image layout holding just this image at `destination`.
pub fn oci_layout(
    store: &Store,
    entry: &ImageEntry,
    destination: &Path,
) -> Result<(), ExportError> {
    let (staging, _) = staged_layout(store, entry, destination)?;
    fs::rename(staging.path(), destination).map_err(IoError::at("create", destination))?;
    let _ = staging.keep();
    Ok(())
}

/// Writes the layout as one tar file (an OCI archive) at `destination`.
pub fn oci_archive(
    store: &Store,
    entry: &ImageEntry,
    destination: &Path,
) -> Result<(), ExportError> {
    let (staging, parent) = staged_layout(store, entry, destination)?;
    let mut file = tempfile::Builder::new()
        .prefix(".kiln-export-")
        .tempfile_in(&parent)
        .map_err(IoError::at("create a file in", &parent))?;
    let options = TreeOptions {
        epoch: 0,
        overlay_upper: false,
    };
    let writer = crate::bake::tar::write_tree(
        staging.path(),
        io::BufWriter::new(file.as_file_mut()),
        options,
    )
    .map_err(IoError::at("write", destination))?;
    writer
        .into_inner()
        .map_err(|error| IoError::at("write", destination)(error.into_error()))?;
    finish_file(file, destination)
}

fn finish_file(file: tempfile::NamedTempFile, destination: &Path) -> Result<(), ExportError> {
    file.as_file()
        .sync_all()
        .map_err(IoError::at("sync", destination))?;
    let permissions = std::os::unix::fs::PermissionsExt::from_mode(0o644);
    file.as_file()
        .set_permissions(permissions)
        .map_err(IoError::at("set permissions of", destination))?;
    file.persist_noclobber(destination)
        .map_err(|error| IoError::new("create", destination, error.error))?;
    Ok(())
}

fn write_layout(store: &Store, entry: &ImageEntry, root: &Path) -> Result<(), ExportError> {
    let manifest: Manifest = store.manifest(entry)?;
    let blobs = root.join("blobs/sha256");
    fs::create_dir_all(&blobs).map_err(IoError::at("create", &blobs))?;
    let descriptors = [entry.manifest.clone(), manifest.config.clone()]
        .into_iter()
        .chain(manifest.layers.iter().cloned());
    for descriptor in descriptors {
        let target = blobs.join(descriptor.digest.hex());
        if target.exists() {
            continue;
        }
        let mut reader = store.open_blob(&descriptor.digest, Some(descriptor.size))?;
        let mut file = fs::File::create(&target).map_err(IoError::at("create", &target))?;
        io::copy(&mut reader, &mut file).map_err(|error| StoreError::Damaged {
            digest: descriptor.digest.clone(),
            reason: error.to_string(),
        })?;
    }
    fs::write(
        root.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .map_err(IoError::at("write", root))?;
    let mut annotations = BTreeMap::new();
    annotations.insert(
        oci::ANNOTATION_REF_NAME.to_owned(),
        format!("{}:{}", entry.name, entry.version),
    );
    let index = Index {
        schema_version: 2,
        media_type: Some(oci::MEDIA_TYPE_INDEX.to_owned()),
        manifests: vec![Descriptor {
            annotations,
            ..entry.manifest.clone()
        }],
    };
    fs::write(root.join("index.json"), oci::to_canonical_json(&index))
        .map_err(IoError::at("write", root))?;
    Ok(())
}

/// Applies every layer of the image, in order, into the empty folder
/// `root`, each checked against its digest and its diff id.
pub fn flatten(store: &Store, manifest: &Manifest, root: &Path) -> Result<(), ExportError> {
    let config = store.config(manifest)?;
    flatten_layers(store, manifest, &config.rootfs.diff_ids, root)
}

/// Applies the layers of `manifest`, whose diff ids are `diff_ids`, into
/// `root`: for an image whose config is not stored yet.
pub fn flatten_layers(
    store: &Store,
    manifest: &Manifest,
    diff_ids: &[crate::reference::Digest],
    root: &Path,
) -> Result<(), ExportError> {
    if diff_ids.len() != manifest.layers.len() {
        return Err(ExportError::LayerCount(
            manifest.layers.len(),
            diff_ids.len(),
        ));
    }
    for (layer, diff_id) in manifest.layers.iter().zip(diff_ids) {
        let mut reader = store.open_layer(layer, diff_id)?;
        unpack::unpack(&mut reader, root, Whiteouts::Apply).map_err(|source| {
            ExportError::Unpack {
                digest: layer.digest.clone(),
                source,
            }
        })?;
        reader.finish()?;
    }
    Ok(())
}

/// The image's flattened root, in a temp folder under `scratch` (a
/// filesystem that keeps owners and devices), removed when dropped.
fn flattened(
    store: &Store,
    entry: &ImageEntry,
    scratch: &Path,
) -> Result<tempfile::TempDir, ExportError> {
    fs::create_dir_all(scratch).map_err(IoError::at("create", scratch))?;
    let root = tempfile::Builder::new()
        .prefix("flatten-")
        .tempdir_in(scratch)
        .map_err(IoError::at("create a folder in", scratch))?;
    flatten(store, &store.manifest(entry)?, root.path())?;
    Ok(root)
}

/// Writes the flattened root as a deterministic tar.gz at `destination`,
/// using `scratch` (a folder on a filesystem that keeps owners and devices)
/// to unpack it.
pub fn rootfs(
    store: &Store,
    entry: &ImageEntry,
    destination: &Path,
    scratch: &Path,
    epoch: u64,
) -> Result<(), ExportError> {
    refuse_existing(destination)?;
    let root = flattened(store, entry, scratch)?;
    let parent = parent_of(destination);
    let file = tempfile::Builder::new()
        .prefix(".kiln-export-")
        .tempfile_in(&parent)
        .map_err(IoError::at("create a file in", &parent))?;
    let handle = file.reopen().map_err(IoError::at("open", file.path()))?;
    let gzip = ParallelGzip::new(
        io::BufWriter::new(handle),
        crate::bake::compression_threads(),
    )
    .map_err(IoError::at("write", destination))?;
    let options = TreeOptions {
        epoch,
        overlay_upper: false,
    };
    let gzip = crate::bake::tar::write_tree(root.path(), gzip, options)
        .map_err(IoError::at("write", destination))?;
    let mut buffered = gzip.finish().map_err(IoError::at("write", destination))?;
    buffered
        .flush()
        .map_err(IoError::at("write", destination))?;
    drop(buffered);
    finish_file(file, destination)
}

/// Writes the flattened root as a disk at `destination`, the same bytes
/// the `disk` post-processor makes with the same settings.
pub fn disk(
    store: &Store,
    entry: &ImageEntry,
    settings: &DiskSettings,
    destination: &Path,
    scratch: &Path,
    epoch: u64,
) -> Result<(), ExportError> {
    refuse_existing(destination)?;
    let manifest = store.manifest(entry)?;
    let architecture = store.config(&manifest)?.architecture;
    let root = flattened(store, entry, scratch)?;
    let image = DiskImage {
        digest: &entry.manifest.digest,
        name: entry.name.as_str(),
        architecture: &architecture,
        epoch,
    };
    write_disk(root.path(), &image, settings, destination)?;
    Ok(())
}
