//! `directory`: a copy of a folder on the host as the starting root.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::template::check::{Checker, HostPath};
use crate::template::keypath::KeyPath;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDirectory {
    path: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DirectorySource {
    /// Absolute; it is read when the build starts.
    pub path: PathBuf,
}

impl DirectorySource {
    pub fn summary(&self) -> String {
        self.path.display().to_string()
    }
}

pub(crate) fn check(cx: &mut Checker<'_>, at: &KeyPath) -> Option<DirectorySource> {
    let raw: RawDirectory = cx.shape(at, true)?;
    let path = cx.host_path(&at.key("path"), &raw.path, HostPath::Unchecked)?;
    Some(DirectorySource { path })
}
