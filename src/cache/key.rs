//! Stage keys: what decides whether a stage's cached layer can be reused,
//! and, beside the key, the inputs that made it.
//!
//! A key is the sha256 of the parent stage's key, the stage's kind, the
//! epoch, a digest of each setting after interpolation, and the content of
//! every host file the stage reads. Each kind says what its inputs are
//! ([`KeyInputs`]), field by typed field: host paths enter by their path
//! relative to the template (so a moved checkout keeps its cache) and their
//! content; every other setting enters as written, so an inline command
//! that names the template's folder is not mistaken for one that does not.
//! Sensitive values only ever enter digests.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::hashing::digest_file;
use crate::reference::Digest;
use crate::report::MissReason;

/// Bumped when what a key covers, or how layers are baked, changes.
const KEY_VERSION: &str = "kiln-stage-key-v3";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageKey {
    pub key: Digest,
    pub parent: Option<Digest>,
    /// A digest of each setting, by name.
    pub settings: BTreeMap<String, Digest>,
    /// A digest of each host file read, by path relative to the template.
    pub files: BTreeMap<String, Digest>,
}

#[derive(Debug, thiserror::Error)]
#[error("failed to read {} for the stage key", path.display())]
pub struct KeyError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl KeyError {
    pub fn at(path: &Path) -> impl FnOnce(io::Error) -> Self + '_ {
        move |source| Self {
            path: path.to_owned(),
            source,
        }
    }
}

/// What a stage (or a test, or an artifact) is made from, as digests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInputs {
    pub kind: String,
    pub epoch: u64,
    pub settings: BTreeMap<String, Digest>,
    pub files: BTreeMap<String, Digest>,
    /// The template's folder: host paths are named relative to it.
    #[serde(skip)]
    template_dir: PathBuf,
}

impl KeyInputs {
    pub fn new(kind: &str, epoch: u64, template_dir: &Path) -> Self {
        Self {
            kind: kind.to_owned(),
            epoch,
            settings: BTreeMap::new(),
            files: BTreeMap::new(),
            template_dir: template_dir.to_owned(),
        }
    }

    /// A setting, by the key the template gives it: its value as JSON.
    pub fn setting(&mut self, name: &str, value: &impl Serialize) -> &mut Self {
        let json = serde_json::to_string(value).expect("settings serialize to JSON");
        self.settings
            .insert(name.to_owned(), Digest::of(json.as_bytes()));
        self
    }

    /// A setting whose value is already a digest (of something large).
    pub fn setting_digest(&mut self, name: &str, digest: Digest) -> &mut Self {
        self.settings.insert(name.to_owned(), digest);
        self
    }

    /// A host path as a setting: relative to the template.
    pub fn path_setting(&mut self, name: &str, path: &Path) -> &mut Self {
        let relative = self.relative(path);
        self.setting(name, &relative)
    }

    /// A list of host paths as a setting: each relative to the template.
    pub fn paths_setting(&mut self, name: &str, paths: &[PathBuf]) -> &mut Self {
        let relative: Vec<String> = paths.iter().map(|path| self.relative(path)).collect();
        self.setting(name, &relative)
    }

    /// A host file or folder the stage reads: its content (a file's bytes
    /// and mode, a folder's whole tree), under its relative path.
    pub fn host_file(&mut self, path: &Path) -> Result<&mut Self, KeyError> {
        let digest = digest_path(path)?;
        let name = self.relative(path);
        self.files.insert(name, digest);
        Ok(self)
    }

    /// Content that stands for a host file, under a name of its own (the
    /// digest of a base image, of a tarball, of a directory's tar).
    pub fn file_digest(&mut self, name: String, digest: Digest) -> &mut Self {
        self.files.insert(name, digest);
        self
    }

    /// `path` relative to the template's folder, as the key names it.
    pub fn relative(&self, path: &Path) -> String {
        crate::template::check::relative(path, &self.template_dir)
    }

    /// The key of these inputs below `parent`.
    pub fn key(&self, parent: Option<&Digest>) -> StageKey {
        let mut hasher = Sha256::new();
        hasher.update(KEY_VERSION.as_bytes());
        hasher.update(
            format!(
                "\0{}\0{}\0{}\0",
                parent.map_or("", Digest::as_str),
                self.kind,
                self.epoch
            )
            .as_bytes(),
        );
        for (name, digest) in &self.settings {
            hasher.update(format!("setting {name}={digest}\n").as_bytes());
        }
        for (name, digest) in &self.files {
            hasher.update(format!("file {name}={digest}\n").as_bytes());
        }
        StageKey {
            key: Digest::from_sha256(&hasher.finalize()),
            parent: parent.cloned(),
            settings: self.settings.clone(),
            files: self.files.clone(),
        }
    }
}

/// A digest of a host folder: every path, type, mode, owner, link target
/// and file content, in sorted order.
pub fn digest_tree(root: &Path) -> io::Result<Digest> {
    fn walk(dir: &Path, relative: &str, hasher: &mut Sha256) -> io::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|entry| entry.file_name());
        for entry in entries {
            let path = entry.path();
            let name = format!("{relative}/{}", entry.file_name().to_string_lossy());
            let metadata = std::fs::symlink_metadata(&path)?;
            hasher.update(
                format!(
                    "{name}\0{:o}\0{}\0{}\0",
                    metadata.mode(),
                    metadata.uid(),
                    metadata.gid()
                )
                .as_bytes(),
            );
            if metadata.file_type().is_symlink() {
                hasher.update(std::fs::read_link(&path)?.as_os_str().as_encoded_bytes());
            } else if metadata.is_file() {
                hasher.update(digest_file(&path)?.0.as_str().as_bytes());
            } else if metadata.is_dir() {
                walk(&path, &name, hasher)?;
            } else {
                hasher.update(metadata.rdev().to_le_bytes());
            }
            hasher.update(b"\n");
        }
        Ok(())
    }
    let mut hasher = Sha256::new();
    walk(root, "", &mut hasher)?;
    Ok(Digest::from_sha256(&hasher.finalize()))
}

/// A digest of what a host path holds: a file's content and mode, or a
/// folder's tree.
fn digest_path(path: &Path) -> Result<Digest, KeyError> {
    let metadata = std::fs::metadata(path).map_err(KeyError::at(path))?;
    if metadata.is_dir() {
        digest_tree(path).map_err(KeyError::at(path))
    } else if !metadata.is_file() {
        // A FIFO or a device would block, or never end.
        Err(KeyError::at(path)(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file or a folder",
        )))
    } else {
        let (digest, _) = digest_file(path).map_err(KeyError::at(path))?;
        // The mode of a copied file ends up in the layer.
        Ok(Digest::of(
            format!("{digest}\0{:o}", metadata.mode() & 0o7777).as_bytes(),
        ))
    }
}

/// What differs between an earlier key of the same stage and this one.
pub fn difference(before: &StageKey, now: &StageKey) -> MissReason {
    if before.parent != now.parent {
        return MissReason::ParentChanged;
    }
    let changed = |a: &BTreeMap<String, Digest>, b: &BTreeMap<String, Digest>| -> Vec<String> {
        a.keys()
            .chain(b.keys())
            .filter(|name| a.get(*name) != b.get(*name))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    let files = changed(&before.files, &now.files);
    if !files.is_empty() {
        return MissReason::FilesChanged(files);
    }
    let settings = changed(&before.settings, &now.settings);
    if !settings.is_empty() {
        return MissReason::SettingsChanged(settings);
    }
    MissReason::NoEntry
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(parent: Option<&str>, settings: &[(&str, &str)], files: &[(&str, &str)]) -> StageKey {
        let mut inputs = KeyInputs::new("shell", 0, Path::new("/t"));
        for (name, value) in settings {
            inputs.setting(name, value);
        }
        for (name, value) in files {
            inputs.file_digest((*name).to_owned(), Digest::of(value.as_bytes()));
        }
        inputs.key(parent.map(|parent| Digest::of(parent.as_bytes())).as_ref())
    }

    #[test]
    fn differences_name_what_changed() {
        let before = key(
            Some("p"),
            &[("inline", "a"), ("env", "x")],
            &[("s.sh", "1")],
        );
        let same = key(
            Some("p"),
            &[("inline", "a"), ("env", "x")],
            &[("s.sh", "1")],
        );
        assert_eq!(before.key, same.key);
        let cases = [
            (
                key(
                    Some("q"),
                    &[("inline", "a"), ("env", "x")],
                    &[("s.sh", "1")],
                ),
                "parent changed",
            ),
            (
                key(
                    Some("p"),
                    &[("inline", "a"), ("env", "x")],
                    &[("s.sh", "2")],
                ),
                "file changed: s.sh",
            ),
            (
                key(
                    Some("p"),
                    &[("inline", "b"), ("env", "x")],
                    &[("s.sh", "1")],
                ),
                "settings changed: inline",
            ),
        ];
        for (now, reason) in cases {
            assert_ne!(before.key, now.key, "{reason}");
            assert_eq!(difference(&before, &now).to_string(), reason);
        }
    }

    #[test]
    fn only_typed_paths_are_made_relative() {
        let dir = Path::new("/tmp/t");
        let mut absolute = KeyInputs::new("shell", 0, dir);
        absolute.setting("inline", &["cat /tmp/t/x"]);
        let mut relative = KeyInputs::new("shell", 0, dir);
        relative.setting("inline", &["cat x"]);
        assert_ne!(absolute.key(None).key, relative.key(None).key);
        let mut moved = KeyInputs::new("file", 0, Path::new("/elsewhere"));
        moved.path_setting("source", Path::new("/elsewhere/files/motd"));
        let mut here = KeyInputs::new("file", 0, dir);
        here.path_setting("source", Path::new("/tmp/t/files/motd"));
        assert_eq!(moved.key(None).key, here.key(None).key);
    }
}
