//! Stage keys: what decides whether a stage's cached layer can be reused.
//!
//! A key is the sha256 of the parent stage's key, the stage's settings after
//! interpolation (paths relative to the template, so a moved checkout keeps
//! its cache), the epoch, and the content of every host file the stage
//! reads. Beside the key, a [`StageKey`] keeps a digest for each setting and
//! each file, so a miss can say which setting or file changed. Sensitive
//! values only ever enter digests.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::hashing::digest_file;
use crate::provisioners::Provisioner;
use crate::provisioners::shell::ShellBody;
use crate::reference::Digest;
use crate::sources::Source;
use crate::template::Template;

/// Bumped when what a key covers, or how layers are baked, changes.
const KEY_VERSION: &str = "kiln-stage-key-v1";

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

fn digest_text(text: &str) -> Digest {
    Digest::of(text.as_bytes())
}

/// Relative to the template's folder, as the key sees host paths.
fn relative(template: &Template, path: &Path) -> String {
    let dir = template.path.parent().unwrap_or(Path::new("/"));
    path.strip_prefix(dir).unwrap_or(path).display().to_string()
}

/// Settings as JSON, one digest per top-level setting; host paths are
/// made relative to the template.
fn setting_digests(template: &Template, settings: &impl Serialize) -> BTreeMap<String, Digest> {
    let dir = template
        .path
        .parent()
        .map(|dir| format!("{}/", dir.display()))
        .unwrap_or_default();
    let json = serde_json::to_value(settings).expect("stage settings serialize");
    let serde_json::Value::Object(map) = json else {
        return BTreeMap::new();
    };
    map.into_iter()
        .map(|(name, value)| {
            // A shell body is `{"inline": …}` or `{"scripts": …}`: name it
            // by the key the template used.
            let name = match &value {
                serde_json::Value::Object(inner) if name == "body" && inner.len() == 1 => {
                    inner.keys().next().cloned().unwrap_or(name)
                }
                _ => name,
            };
            let text = serde_json::to_string(&value)
                .expect("JSON serializes")
                .replace(&dir, "");
            (name, digest_text(&text))
        })
        .collect()
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

/// A digest of what a host path holds: a file's content or a folder's tree.
fn digest_path(path: &Path) -> Result<Digest, KeyError> {
    let error = |source| KeyError {
        path: path.to_owned(),
        source,
    };
    let metadata = std::fs::metadata(path).map_err(error)?;
    if metadata.is_dir() {
        digest_tree(path).map_err(error)
    } else {
        let (digest, _) = digest_file(path).map_err(error)?;
        // The mode of a copied file ends up in the layer.
        Ok(digest_text(&format!(
            "{digest}\0{:o}",
            metadata.mode() & 0o7777
        )))
    }
}

fn finish(
    parent: Option<&Digest>,
    kind: &str,
    settings: BTreeMap<String, Digest>,
    files: BTreeMap<String, Digest>,
    epoch: u64,
) -> StageKey {
    let mut hasher = Sha256::new();
    hasher.update(KEY_VERSION.as_bytes());
    hasher.update(format!("\0{}\0{kind}\0{epoch}\0", parent.map_or("", Digest::as_str)).as_bytes());
    for (name, digest) in settings.iter().chain(&files) {
        hasher.update(format!("{name}={digest}\n").as_bytes());
    }
    StageKey {
        key: Digest::from_sha256(&hasher.finalize()),
        parent: parent.cloned(),
        settings,
        files,
    }
}

/// The key of the source stage. `base` is the manifest digest of an
/// `image` source, looked up by the caller.
pub fn source_key(
    template: &Template,
    epoch: u64,
    base: Option<&Digest>,
) -> Result<StageKey, KeyError> {
    let source = &template.source;
    let mut settings = setting_digests(template, source);
    let mut files = BTreeMap::new();
    match source {
        Source::Tarball(tarball) => {
            // The archive's content, wherever it lives.
            settings.remove("path");
            let (digest, _) = digest_file(&tarball.path).map_err(|source| KeyError {
                path: tarball.path.clone(),
                source,
            })?;
            files.insert(relative(template, &tarball.path), digest);
        }
        Source::Directory(directory) => {
            files.insert(
                relative(template, &directory.path),
                digest_path(&directory.path)?,
            );
        }
        Source::Debootstrap(debootstrap) => {
            // The mirror and architecture actually used, not only the ones written.
            let mirror = debootstrap
                .mirror
                .clone()
                .or_else(crate::sources::debootstrap::host_mirror)
                .unwrap_or_default();
            let arch = debootstrap
                .arch
                .clone()
                .unwrap_or_else(|| crate::oci::host_architecture().to_owned());
            settings.insert("mirror".to_owned(), digest_text(&mirror));
            settings.insert("arch".to_owned(), digest_text(&arch));
        }
        Source::Image(_) => {
            if let Some(base) = base {
                files.insert("base image".to_owned(), base.clone());
            }
        }
        Source::Scratch => {}
    }
    Ok(finish(None, source.kind(), settings, files, epoch))
}

/// The key of a provisioner stage below `parent`.
pub fn provisioner_key(
    template: &Template,
    provisioner: &Provisioner,
    parent: &Digest,
    epoch: u64,
) -> Result<StageKey, KeyError> {
    let mut settings = setting_digests(template, provisioner);
    // Whether it is cached says nothing about what it makes.
    settings.remove("cache");
    let mut files = BTreeMap::new();
    match provisioner {
        Provisioner::File(file) => {
            files.insert(relative(template, &file.source), digest_path(&file.source)?);
        }
        Provisioner::Shell(spec) | Provisioner::ShellLocal(spec) => {
            if let ShellBody::Scripts(scripts) = &spec.body {
                for script in scripts {
                    files.insert(relative(template, script), digest_path(script)?);
                }
            }
        }
    }
    Ok(finish(
        Some(parent),
        provisioner.kind(),
        settings,
        files,
        epoch,
    ))
}

/// The key of a `[[test]]`: the digest of the image it tests, its
/// settings and the content of its scripts. A test that passed with the
/// same key is not run again.
pub fn test_key(
    template: &Template,
    test: &crate::image_test::ImageTest,
    image: &Digest,
) -> Result<StageKey, KeyError> {
    let settings = setting_digests(template, test);
    let mut files = BTreeMap::new();
    if let ShellBody::Scripts(scripts) = &test.body {
        for script in scripts {
            files.insert(relative(template, script), digest_path(script)?);
        }
    }
    Ok(finish(Some(image), "test", settings, files, 0))
}

/// Every stage's key, in order, as a build would compute them.
pub fn stage_keys(
    template: &Template,
    epoch: u64,
    base: Option<&Digest>,
) -> Result<Vec<StageKey>, KeyError> {
    let mut keys = vec![source_key(template, epoch, base)?];
    for provisioner in &template.provisioners {
        let parent = keys.last().expect("the source key is first").key.clone();
        keys.push(provisioner_key(template, provisioner, &parent, epoch)?);
    }
    Ok(keys)
}

/// What differs between an earlier key of the same stage and this one, in
/// words: `parent changed`, `file changed: files/motd`, `settings changed: inline`.
pub fn difference(before: &StageKey, now: &StageKey) -> String {
    if before.parent != now.parent {
        return "parent changed".to_owned();
    }
    let changed = |a: &BTreeMap<String, Digest>, b: &BTreeMap<String, Digest>| -> Vec<String> {
        a.keys()
            .chain(b.keys())
            .filter(|name| a.get(*name) != b.get(*name))
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    let files = changed(&before.files, &now.files);
    if !files.is_empty() {
        return format!("file changed: {}", files.join(", "));
    }
    let settings = changed(&before.settings, &now.settings);
    if !settings.is_empty() {
        return format!("settings changed: {}", settings.join(", "));
    }
    "no cache entry".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(parent: Option<&str>, settings: &[(&str, &str)], files: &[(&str, &str)]) -> StageKey {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), digest_text(v)))
                .collect()
        };
        finish(
            parent.map(digest_text).as_ref(),
            "shell",
            map(settings),
            map(files),
            0,
        )
    }

    #[test]
    fn differences_name_what_changed() {
        let before = key(
            Some("p"),
            &[("inline", "a"), ("env", "x")],
            &[("s.sh", "1")],
        );
        assert_eq!(
            difference(
                &before,
                &key(
                    Some("q"),
                    &[("inline", "a"), ("env", "x")],
                    &[("s.sh", "1")]
                )
            ),
            "parent changed"
        );
        assert_eq!(
            difference(
                &before,
                &key(
                    Some("p"),
                    &[("inline", "a"), ("env", "x")],
                    &[("s.sh", "2")]
                )
            ),
            "file changed: s.sh"
        );
        assert_eq!(
            difference(
                &before,
                &key(
                    Some("p"),
                    &[("inline", "b"), ("env", "x")],
                    &[("s.sh", "1")]
                )
            ),
            "settings changed: inline"
        );
        assert_ne!(
            before.key,
            key(
                Some("p"),
                &[("inline", "b"), ("env", "x")],
                &[("s.sh", "1")]
            )
            .key
        );
        assert_eq!(
            before.key,
            key(
                Some("p"),
                &[("inline", "a"), ("env", "x")],
                &[("s.sh", "1")]
            )
            .key
        );
    }
}
