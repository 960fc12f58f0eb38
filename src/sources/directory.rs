//! `directory`: a host folder as the starting root.
//!
//! The folder is not copied: its layer is baked straight from it, and it
//! serves as the overlay lower of the stages above it (read-only, as every
//! lower is). Its key is the digest of the tar it bakes into (every path,
//! mode, owner, link, xattr and byte, as the layer will hold them), so a
//! cached layer is reused only for the same content; the bake checks that
//! the folder still hashes to what the plan saw.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::bake::TreeOptions;
use crate::cache::key::{KeyError, KeyInputs};
use crate::template::check::{Checker, HostPath, relative};
use crate::template::keypath::KeyPath;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDirectory {
    path: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DirectorySource {
    /// Absolute.
    pub path: PathBuf,
}

impl DirectorySource {
    pub fn summary(&self, dir: &Path) -> String {
        relative(&self.path, dir)
    }

    /// How the folder's tree is baked: as a plain root, mtimes clamped.
    pub fn tree_options(epoch: u64) -> TreeOptions {
        TreeOptions {
            epoch,
            overlay_upper: false,
        }
    }

    /// The digest of the tar the folder bakes into, under the folder's
    /// [`DirectorySource::key_name`].
    pub fn key_inputs(&self, inputs: &mut KeyInputs) -> Result<(), KeyError> {
        let DirectorySource { path } = self;
        let digest = crate::bake::tree_digest(path, Self::tree_options(inputs.epoch))
            .map_err(KeyError::at(path))?;
        inputs.file_digest(inputs.relative(path), digest);
        Ok(())
    }

    /// The name the stage key gives the folder's digest: its path relative
    /// to the template's folder `dir`.
    pub fn key_name(&self, dir: &Path) -> String {
        relative(&self.path, dir)
    }
}

pub(crate) fn check(cx: &mut Checker<'_>, at: &KeyPath) -> Option<DirectorySource> {
    let raw: RawDirectory = cx.shape(at, true)?;
    let path = cx.host_path(&at.key("path"), &raw.path, HostPath::Directory)?;
    Some(DirectorySource { path })
}
