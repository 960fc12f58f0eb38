//! `file`: copies a host file or folder into the image root. The
//! destination is resolved inside the root without following a symlink out
//! of it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::template::check::{Checker, HostPath};
use crate::template::keypath::KeyPath;
use crate::template::units::{FileMode, Owner};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    source: String,
    destination: String,
    mode: Option<String>,
    owner: Option<String>,
    cache: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileProvisioner {
    pub source: PathBuf,
    pub destination: String,
    pub mode: Option<FileMode>,
    pub owner: Option<Owner>,
    pub cache: bool,
}

impl FileProvisioner {
    pub fn summary(&self) -> String {
        format!("{} -> {}", self.source.display(), self.destination)
    }
}

pub(crate) fn check(cx: &mut Checker<'_>, at: &KeyPath) -> Option<FileProvisioner> {
    let raw: RawFile = cx.shape(at, true)?;
    let source = cx.host_path(&at.key("source"), &raw.source, HostPath::FileOrDirectory);
    let destination = cx.image_path(&at.key("destination"), &raw.destination);
    let mode = cx.optional_parsed(&at.key("mode"), raw.mode.as_deref(), "mode");
    let owner = cx.optional_parsed(&at.key("owner"), raw.owner.as_deref(), "owner");
    Some(FileProvisioner {
        source: source?,
        destination: destination?,
        mode: mode?,
        owner: owner?,
        cache: raw.cache.unwrap_or(true),
    })
}
