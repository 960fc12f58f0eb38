//! One path of a root, as file indexes record it.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Char,
    Block,
    Fifo,
    /// Layer indexes only: a hard link to `target`, resolved when merging.
    Hardlink,
    /// Layer indexes only: the path is removed from the layers below.
    Whiteout,
    /// Layer indexes only: the directory's content below is hidden.
    Opaque,
}

impl FileKind {
    pub fn name(self) -> &'static str {
        match self {
            FileKind::File => "file",
            FileKind::Dir => "directory",
            FileKind::Symlink => "symlink",
            FileKind::Char => "character device",
            FileKind::Block => "block device",
            FileKind::Fifo => "fifo",
            FileKind::Hardlink => "hard link",
            FileKind::Whiteout => "whiteout",
            FileKind::Opaque => "opaque marker",
        }
    }
}

/// One path of a root. Paths are absolute (`/etc/passwd`), without `/` itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    #[serde(rename = "type")]
    pub kind: FileKind,
    /// Permission bits (with setuid, setgid, sticky), as `"0755"`.
    #[serde(with = "octal_mode")]
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// A file's size in bytes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    /// A file's content digest, in hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// A symlink's target, or a hard link's first path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// A device's major and minor numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<(u32, u32)>,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

mod octal_mode {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(mode: &u32, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("{mode:04o}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
        let text = String::deserialize(deserializer)?;
        u32::from_str_radix(&text, 8).map_err(serde::de::Error::custom)
    }
}

impl FileEntry {
    /// An entry with no size, content, target or device yet.
    pub fn new(path: String, kind: FileKind, mode: u32, uid: u32, gid: u32) -> Self {
        FileEntry {
            path,
            kind,
            mode,
            uid,
            gid,
            size: 0,
            sha256: None,
            target: None,
            device: None,
        }
    }

    /// A directory made because a path below it was given without it.
    pub(super) fn implied_dir(path: String) -> Self {
        Self::new(path, FileKind::Dir, 0o755, 0, 0)
    }

    /// `uid:gid`.
    pub fn owner(&self) -> String {
        format!("{}:{}", self.uid, self.gid)
    }
}

/// The absolute index path of a tar path: `./a/b/` → `/a/b`.
pub fn normalize(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .collect();
    format!("/{}", parts.join("/"))
}
