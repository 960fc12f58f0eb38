//! The file index: every path of an image's flattened root with its type,
//! mode, owner, size, content sha256 and link target.
//!
//! It exists so an image can be checked against a deployed machine
//! (`kiln verify --root`) and compared with another image (`kiln diff`)
//! without unpacking anything. Each layer's index is made while the layer
//! is baked (or, for a layer kiln did not bake, by streaming its blob once)
//! and kept as a blob, named by a note under the layer's diff id in the
//! store's private folder; an image's index is the
//! layers' indexes merged, whiteouts applied. It is stored as a blob, and
//! the manifests kiln writes name it in the `dev.kiln.files` annotation, so
//! the index is part of what the image digest covers.

pub mod drift;
mod entry;
pub mod glob;
pub mod layer;

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use entry::{FileEntry, FileKind, normalize};

use crate::oci::{Descriptor, ImageConfig, Manifest};
use crate::reference::Digest;
use crate::store::{Store, StoreError};

/// The media type of an image's file index blob.
pub const MEDIA_TYPE_FILE_INDEX: &str = "application/vnd.kiln.file-index.v1+json";
/// The media type of a layer's index blob: its entries in tar order, with
/// whiteouts and hard links as they are in the layer.
pub const MEDIA_TYPE_LAYER_FILE_INDEX: &str = "application/vnd.kiln.layer-file-index.v1+json";
/// The manifest annotation naming the image's file index blob.
pub const ANNOTATION_FILE_INDEX: &str = "dev.kiln.files";

/// An image's file index: its flattened root, sorted by path.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileIndex {
    pub media_type: String,
    pub entries: Vec<FileEntry>,
}

/// The range of paths below `dir` in byte order: from `dir/` up to, not
/// including, `dir0` (`0` is the byte after `/`).
fn below(dir: &str) -> (String, String) {
    let dir = dir.trim_end_matches('/');
    (format!("{dir}/"), format!("{dir}0"))
}

fn remove_below(map: &mut BTreeMap<String, FileEntry>, dir: &str) {
    let (start, end) = below(dir);
    let doomed: Vec<String> = map
        .range(start..end)
        .map(|(path, _)| path.clone())
        .collect();
    for path in doomed {
        map.remove(&path);
    }
}

impl FileIndex {
    /// The flattened root of layers given bottom first: each layer's
    /// whiteouts remove paths below it, then its entries are laid over.
    pub fn merge<I: IntoIterator<Item = Vec<FileEntry>>>(layers: I) -> Self {
        let mut map: BTreeMap<String, FileEntry> = BTreeMap::new();
        for layer in layers {
            for entry in &layer {
                match entry.kind {
                    FileKind::Whiteout => {
                        map.remove(&entry.path);
                        remove_below(&mut map, &entry.path);
                    }
                    FileKind::Opaque => remove_below(&mut map, &entry.path),
                    _ => {}
                }
            }
            for entry in layer {
                if matches!(entry.kind, FileKind::Whiteout | FileKind::Opaque) || entry.path == "/"
                {
                    continue;
                }
                let entry = if entry.kind == FileKind::Hardlink {
                    let target = entry.target.as_deref().map(normalize);
                    match target.and_then(|target| map.get(&target)) {
                        Some(linked) if linked.kind == FileKind::File => FileEntry {
                            path: entry.path,
                            ..linked.clone()
                        },
                        // A link to nothing cannot be unpacked either.
                        _ => continue,
                    }
                } else {
                    entry
                };
                if entry.kind != FileKind::Dir {
                    remove_below(&mut map, &entry.path);
                }
                let mut parent = entry.path.as_str();
                while let Some((up, _)) = parent.rsplit_once('/') {
                    if up.is_empty() {
                        break;
                    }
                    match map.get(up) {
                        Some(existing) if existing.kind == FileKind::Dir => {}
                        _ => {
                            map.insert(up.to_owned(), FileEntry::implied_dir(up.to_owned()));
                        }
                    }
                    parent = up;
                }
                // A directory given again keeps what is below it: those are entries of their own.
                map.insert(entry.path.clone(), entry);
            }
        }
        FileIndex {
            media_type: MEDIA_TYPE_FILE_INDEX.to_owned(),
            entries: map.into_values().collect(),
        }
    }

    /// Its bytes as stored: the same index always gives the same bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("file indexes serialize")
    }

    pub fn by_path(&self) -> BTreeMap<&str, &FileEntry> {
        self.entries
            .iter()
            .map(|entry| (entry.path.as_str(), entry))
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("failed to index layer {digest}")]
    Layer {
        digest: Digest,
        #[source]
        source: io::Error,
    },
    #[error("file index {digest} is not a kiln file index: {reason}")]
    Invalid { digest: Digest, reason: String },
}

/// Where the store notes the digest of a layer's index blob: by diff id, in
/// kiln's own folder.
fn layer_index_path(store: &Store, diff_id: &Digest) -> PathBuf {
    store.private_dir().join("files/layers").join(diff_id.hex())
}

/// Where the store keeps the index digest of an image kiln did not build.
fn image_index_path(store: &Store, manifest: &Digest) -> PathBuf {
    store
        .private_dir()
        .join("files/images")
        .join(manifest.hex())
}

/// Keeps a layer's index, made while baking it: a blob, verified when read
/// like any other, named by a note under the layer's diff id.
pub fn save_layer_index(
    store: &Store,
    diff_id: &Digest,
    entries: &[FileEntry],
) -> Result<(), StoreError> {
    let layer_index = FileIndex {
        media_type: MEDIA_TYPE_LAYER_FILE_INDEX.to_owned(),
        entries: entries.to_vec(),
    };
    let descriptor = store.put_bytes(MEDIA_TYPE_LAYER_FILE_INDEX, &layer_index.to_bytes())?;
    store.write_private(
        &layer_index_path(store, diff_id),
        descriptor.digest.as_str().as_bytes(),
    )
}

/// A blob's bytes, read whole and checked against its digest.
fn blob_bytes(store: &Store, digest: &Digest) -> Result<Vec<u8>, StoreError> {
    let mut bytes = Vec::new();
    store
        .open_blob(digest, None)?
        .read_to_end(&mut bytes)
        .map_err(|error| StoreError::Damaged {
            digest: digest.clone(),
            reason: error.to_string(),
        })?;
    Ok(bytes)
}

/// The digest a note under kiln's folder names, and that blob's verified
/// bytes, when both are there and intact.
fn noted_blob(store: &Store, note: &Path) -> Option<(Digest, Vec<u8>)> {
    let digest: Digest = std::fs::read_to_string(note).ok()?.trim().parse().ok()?;
    let bytes = blob_bytes(store, &digest).ok()?;
    Some((digest, bytes))
}

/// A layer's index: kept since it was baked, or made now by streaming its
/// blob (and kept).
pub fn layer_index(
    store: &Store,
    layer: &Descriptor,
    diff_id: &Digest,
) -> Result<Vec<FileEntry>, IndexError> {
    if let Some((digest, bytes)) = noted_blob(store, &layer_index_path(store, diff_id))
        && let Ok(layer_index) = parse_index(&digest, &bytes, MEDIA_TYPE_LAYER_FILE_INDEX)
    {
        return Ok(layer_index.entries);
    }
    let mut reader = store.open_layer(layer, diff_id)?;
    let entries = layer::index_tar(&mut reader).map_err(|source| IndexError::Layer {
        digest: layer.digest.clone(),
        source,
    })?;
    reader.finish()?;
    save_layer_index(store, diff_id, &entries)?;
    Ok(entries)
}

/// The merged index of an image's layers.
pub fn index_of_layers(
    store: &Store,
    layers: &[Descriptor],
    diff_ids: &[Digest],
) -> Result<FileIndex, IndexError> {
    let mut indexes = Vec::with_capacity(layers.len());
    for (layer, diff_id) in layers.iter().zip(diff_ids) {
        indexes.push(layer_index(store, layer, diff_id)?);
    }
    Ok(FileIndex::merge(indexes))
}

fn parse_index(digest: &Digest, bytes: &[u8], media_type: &str) -> Result<FileIndex, IndexError> {
    let index: FileIndex = serde_json::from_slice(bytes).map_err(|error| IndexError::Invalid {
        digest: digest.clone(),
        reason: error.to_string(),
    })?;
    if index.media_type != media_type {
        return Err(IndexError::Invalid {
            digest: digest.clone(),
            reason: format!("its media type is {}", index.media_type),
        });
    }
    Ok(index)
}

/// The file index of a stored image: the blob its manifest names, the one
/// made for it before, or one made now from its layers and kept.
pub fn image_index(
    store: &Store,
    manifest_digest: &Digest,
    manifest: &Manifest,
    config: &ImageConfig,
) -> Result<(Digest, FileIndex), IndexError> {
    if let Some(named) = manifest.annotations.get(ANNOTATION_FILE_INDEX)
        && let Ok(digest) = named.parse::<Digest>()
        && store.has_blob(&digest)
    {
        let bytes = blob_bytes(store, &digest)?;
        let index = parse_index(&digest, &bytes, MEDIA_TYPE_FILE_INDEX)?;
        return Ok((digest, index));
    }
    let note = image_index_path(store, manifest_digest);
    if let Some((digest, bytes)) = noted_blob(store, &note)
        && let Ok(index) = parse_index(&digest, &bytes, MEDIA_TYPE_FILE_INDEX)
    {
        return Ok((digest, index));
    }
    let index = index_of_layers(store, &manifest.layers, &config.rootfs.diff_ids)?;
    let descriptor = store.put_bytes(MEDIA_TYPE_FILE_INDEX, &index.to_bytes())?;
    store.write_private(&note, descriptor.digest.as_str().as_bytes())?;
    Ok((descriptor.digest, index))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: FileKind) -> FileEntry {
        FileEntry::new(path.to_owned(), kind, 0o644, 0, 0)
    }

    fn paths(index: &FileIndex) -> Vec<&str> {
        index
            .entries
            .iter()
            .map(|entry| entry.path.as_str())
            .collect()
    }

    #[test]
    fn merging_applies_whiteouts_to_lower_layers_only() {
        let lower = vec![
            entry("/a", FileKind::Dir),
            entry("/a/x", FileKind::File),
            entry("/a.b", FileKind::File),
            entry("/c", FileKind::Dir),
            entry("/c/y", FileKind::File),
            entry("/d", FileKind::File),
        ];
        let upper = vec![
            entry("/a", FileKind::Dir),
            entry("/a", FileKind::Opaque),
            entry("/a/new", FileKind::File),
            entry("/c", FileKind::Whiteout),
            entry("/d/e/f", FileKind::File),
        ];
        let merged = FileIndex::merge([lower, upper]);
        assert_eq!(
            paths(&merged),
            ["/a", "/a.b", "/a/new", "/d", "/d/e", "/d/e/f"]
        );
        assert_eq!(merged.entries[3].kind, FileKind::Dir, "implied parents");
    }

    #[test]
    fn hard_links_take_their_target_content() {
        let mut file = entry("/bin/a", FileKind::File);
        file.sha256 = Some("ab".to_owned());
        file.size = 3;
        let mut link = entry("/bin/b", FileKind::Hardlink);
        link.target = Some("bin/a".to_owned());
        let merged = FileIndex::merge([vec![file], vec![link]]);
        assert_eq!(merged.entries[2].path, "/bin/b");
        assert_eq!(merged.entries[2].sha256.as_deref(), Some("ab"));
        assert_eq!(merged.entries[2].kind, FileKind::File);
    }

    #[test]
    fn modes_round_trip_as_octal_text() {
        let mut file = entry("/x", FileKind::File);
        file.mode = 0o4755;
        let json = serde_json::to_string(&file).unwrap();
        assert!(json.contains(r#""mode":"4755""#), "{json}");
        assert_eq!(serde_json::from_str::<FileEntry>(&json).unwrap(), file);
    }
}
