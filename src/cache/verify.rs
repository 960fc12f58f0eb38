//! `kiln cache verify`: every cached tree checked against the file index of
//! the layer it stands for, and dropped when they differ.
//!
//! A cached tree is mounted as a lower of later stages, so a tree changed
//! after it was cached (by hand, by a bug, by an attacker with host access)
//! would ship its change in every image built on it while the layer in the
//! store stays intact, and `kiln verify` would find nothing. Stages cannot
//! write these trees (they are read-only lowers); this is the check that
//! they are still what was baked.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::bake::tar::{TreeOptions, write_tree_indexed};
use crate::file_index::{FileEntry, FileKind, layer_index, normalize};
use crate::oci::Descriptor;
use crate::reference::Digest;
use crate::store::Store;

/// What `verify` did.
#[derive(Debug, Default)]
pub struct Verified {
    /// Trees whose content is their layer's.
    pub intact: usize,
    pub dropped: Vec<DroppedTree>,
}

/// A tree that differed from its layer (or could not be checked), and was
/// removed with the entry that used it.
#[derive(Debug)]
pub struct DroppedTree {
    /// `stage N (KIND) of IMAGE`, or `base layer DIFF_ID`.
    pub what: String,
    pub tree: PathBuf,
    pub reason: DropReason,
}

#[derive(Debug, thiserror::Error)]
pub enum DropReason {
    /// The first differing paths, and how many differ in all.
    #[error("{count} {} from the layer: {}", if *count == 1 { "path differs" } else { "paths differ" }, paths.join(", "))]
    Differs { count: usize, paths: Vec<String> },
    #[error("its layer cannot be read: {0}")]
    Layer(String),
    #[error("the tree cannot be read: {0}")]
    Tree(io::Error),
    #[error("no record of the layer it was unpacked from")]
    NoRecord,
}

/// A path's content as both sides can state it: link-resolved, and with
/// whiteouts and opaque markers compared by place only.
fn comparable(entries: Vec<FileEntry>) -> BTreeMap<(String, bool), FileEntry> {
    let by_path: BTreeMap<String, FileEntry> = entries
        .iter()
        .filter(|entry| !matches!(entry.kind, FileKind::Whiteout | FileKind::Opaque))
        .map(|entry| (entry.path.clone(), entry.clone()))
        .collect();
    entries
        .into_iter()
        .map(|mut entry| {
            let marker = matches!(entry.kind, FileKind::Whiteout | FileKind::Opaque);
            if marker {
                entry.mode = 0;
                entry.uid = 0;
                entry.gid = 0;
            } else if entry.kind == FileKind::Hardlink
                && let Some(target) = entry
                    .target
                    .as_deref()
                    .and_then(|target| by_path.get(&normalize(target)))
            {
                let path = std::mem::take(&mut entry.path);
                entry = target.clone();
                entry.path = path;
            }
            ((entry.path.clone(), marker), entry)
        })
        .collect()
}

/// The paths on which a tree and its layer disagree.
fn differences(tree: Vec<FileEntry>, layer: Vec<FileEntry>) -> Vec<String> {
    let tree = comparable(tree);
    let layer = comparable(layer);
    let mut differing = Vec::new();
    for (key, entry) in &tree {
        match layer.get(key) {
            None => differing.push(format!("added {}", key.0)),
            Some(expected) if expected != entry => differing.push(format!("changed {}", key.0)),
            Some(_) => {}
        }
    }
    for key in layer.keys() {
        if !tree.contains_key(key) {
            differing.push(format!("removed {}", key.0));
        }
    }
    differing
}

/// Checks one tree; `None` when it is its layer's.
pub fn check_tree(
    store: &Store,
    tree: &Path,
    descriptor: &Descriptor,
    diff_id: &Digest,
    overlay_upper: bool,
) -> Option<DropReason> {
    let options = TreeOptions {
        epoch: u64::MAX,
        overlay_upper,
    };
    let found = match write_tree_indexed(tree, io::sink(), options) {
        Ok((_, entries)) => entries,
        Err(error) => return Some(DropReason::Tree(error)),
    };
    let expected = match layer_index(store, descriptor, diff_id) {
        Ok(entries) => entries,
        Err(error) => return Some(DropReason::Layer(crate::error_chain(&error))),
    };
    let differing = differences(found, expected);
    (!differing.is_empty()).then(|| DropReason::Differs {
        count: differing.len(),
        paths: differing.into_iter().take(5).collect(),
    })
}

pub fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}
