//! `kiln diff`: what changed between two stored images, from their file
//! indexes and configs: files added, removed and changed with size deltas,
//! and changes of env, entrypoint, cmd, user, working dir and labels.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::file_index::{self, FileEntry, FileIndex, FileKind, IndexError};
use crate::oci::{ContainerConfig, ImageConfig, Manifest};
use crate::reference::{Digest, StoreRef};
use crate::store::{ImageEntry, Store};

/// A stored image with what a diff or a drift check reads of it.
pub struct StoredImage {
    pub entry: ImageEntry,
    pub manifest: Manifest,
    pub config: ImageConfig,
    pub index_digest: Digest,
    pub index: FileIndex,
}

impl StoredImage {
    pub fn load(store: &Store, reference: &StoreRef) -> Result<Self, IndexError> {
        let entry = store.resolve(reference)?;
        Self::of_entry(store, entry)
    }

    pub fn of_entry(store: &Store, entry: ImageEntry) -> Result<Self, IndexError> {
        let manifest = store.manifest(&entry)?;
        let config = store.config(&manifest)?;
        let (index_digest, index) =
            file_index::image_index(store, &entry.manifest.digest, &manifest, &config)?;
        Ok(Self {
            entry,
            manifest,
            config,
            index_digest,
            index,
        })
    }

    /// `name:version`.
    pub fn name(&self) -> String {
        format!("{}:{}", self.entry.name, self.entry.version)
    }

    /// The stored image this one was built on, if kiln recorded one.
    pub fn parent_digest(&self) -> Option<Digest> {
        self.manifest
            .annotations
            .get(crate::oci::ANNOTATION_PARENT_DIGEST)
            .and_then(|digest| digest.parse().ok())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileChange {
    pub path: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Bytes before and after (0 for what is not a file).
    pub size_before: u64,
    pub size_after: u64,
    /// What changed: `content`, `mode`, `owner`, `type`, `target`, `device`;
    /// empty for an added or removed path.
    pub changes: Vec<&'static str>,
}

impl FileChange {
    pub fn delta(&self) -> i128 {
        i128::from(self.size_after) - i128::from(self.size_before)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConfigChange {
    /// `env PATH`, `label version`, `entrypoint`, `cmd`, `user`, `workdir`.
    pub field: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ImageDiff {
    pub from: String,
    pub from_digest: Digest,
    pub to: String,
    pub to_digest: Digest,
    pub added: Vec<FileChange>,
    pub removed: Vec<FileChange>,
    pub changed: Vec<FileChange>,
    pub config: Vec<ConfigChange>,
    /// Bytes of files, after minus before.
    pub size_delta: i128,
}

impl ImageDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.config.is_empty()
    }
}

fn file_size(entry: &FileEntry) -> u64 {
    if entry.kind == FileKind::File {
        entry.size
    } else {
        0
    }
}

/// What differs between two entries of the same path.
fn entry_changes(before: &FileEntry, after: &FileEntry) -> Vec<&'static str> {
    if before.kind != after.kind {
        return vec!["type"];
    }
    let mut changes = Vec::new();
    if before.sha256 != after.sha256 || before.size != after.size {
        changes.push("content");
    }
    if before.mode != after.mode {
        changes.push("mode");
    }
    if (before.uid, before.gid) != (after.uid, after.gid) {
        changes.push("owner");
    }
    if before.target != after.target {
        changes.push("target");
    }
    if before.device != after.device {
        changes.push("device");
    }
    changes
}

fn one(entry: &FileEntry, before: u64, after: u64) -> FileChange {
    FileChange {
        path: entry.path.clone(),
        kind: entry.kind.name().to_owned(),
        size_before: before,
        size_after: after,
        changes: Vec::new(),
    }
}

fn json_list(values: Option<&Vec<String>>) -> Option<String> {
    values.map(|values| serde_json::to_string(values).expect("strings serialize"))
}

fn config_changes(before: &ContainerConfig, after: &ContainerConfig) -> Vec<ConfigChange> {
    let mut changes = Vec::new();
    let mut compare = |field: String, before: Option<String>, after: Option<String>| {
        if before != after {
            changes.push(ConfigChange {
                field,
                before,
                after,
            });
        }
    };
    let env = |config: &ContainerConfig| -> BTreeMap<String, String> {
        config
            .env
            .iter()
            .map(|entry| {
                let (name, value) = entry.split_once('=').unwrap_or((entry, ""));
                (name.to_owned(), value.to_owned())
            })
            .collect()
    };
    let (env_before, env_after) = (env(before), env(after));
    for name in env_before
        .keys()
        .chain(env_after.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        compare(
            format!("env {name}"),
            env_before.get(name).cloned(),
            env_after.get(name).cloned(),
        );
    }
    compare(
        "entrypoint".to_owned(),
        json_list(before.entrypoint.as_ref()),
        json_list(after.entrypoint.as_ref()),
    );
    compare(
        "cmd".to_owned(),
        json_list(before.cmd.as_ref()),
        json_list(after.cmd.as_ref()),
    );
    compare("user".to_owned(), before.user.clone(), after.user.clone());
    compare(
        "workdir".to_owned(),
        before.working_dir.clone(),
        after.working_dir.clone(),
    );
    for name in before
        .labels
        .keys()
        .chain(after.labels.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        compare(
            format!("label {name}"),
            before.labels.get(name).cloned(),
            after.labels.get(name).cloned(),
        );
    }
    changes
}

/// What changed going from `from` to `to`.
pub fn diff(from: &StoredImage, to: &StoredImage) -> ImageDiff {
    let before = from.index.by_path();
    let after = to.index.by_path();
    let mut added = Vec::new();
    let mut removed = Vec::new();
    let mut changed = Vec::new();
    for (path, entry) in &before {
        match after.get(path) {
            None => removed.push(one(entry, file_size(entry), 0)),
            Some(new) => {
                let changes = entry_changes(entry, new);
                if !changes.is_empty() {
                    changed.push(FileChange {
                        changes,
                        ..one(new, file_size(entry), file_size(new))
                    });
                }
            }
        }
    }
    for (path, entry) in &after {
        if !before.contains_key(path) {
            added.push(one(entry, 0, file_size(entry)));
        }
    }
    let size_delta = added
        .iter()
        .chain(&removed)
        .chain(&changed)
        .map(FileChange::delta)
        .sum();
    ImageDiff {
        from: from.name(),
        from_digest: from.entry.manifest.digest.clone(),
        to: to.name(),
        to_digest: to.entry.manifest.digest.clone(),
        added,
        removed,
        changed,
        config: config_changes(&from.config.config, &to.config.config),
        size_delta,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_changes_name_each_field() {
        let before = ContainerConfig {
            env: vec!["PATH=/bin".to_owned(), "OLD=1".to_owned()],
            cmd: Some(vec!["sh".to_owned()]),
            labels: [("version".to_owned(), "1".to_owned())].into(),
            ..ContainerConfig::default()
        };
        let after = ContainerConfig {
            env: vec!["PATH=/usr/bin:/bin".to_owned()],
            cmd: Some(vec!["sh".to_owned()]),
            labels: [("version".to_owned(), "2".to_owned())].into(),
            ..ContainerConfig::default()
        };
        let fields: Vec<(String, Option<String>, Option<String>)> = config_changes(&before, &after)
            .into_iter()
            .map(|change| (change.field, change.before, change.after))
            .collect();
        assert_eq!(
            fields,
            [
                ("env OLD".to_owned(), Some("1".to_owned()), None),
                (
                    "env PATH".to_owned(),
                    Some("/bin".to_owned()),
                    Some("/usr/bin:/bin".to_owned())
                ),
                (
                    "label version".to_owned(),
                    Some("1".to_owned()),
                    Some("2".to_owned())
                ),
            ]
        );
    }
}
