//! `file`: copies a host file or folder into the image root. The
//! destination is resolved inside the root without following a symlink out
//! of it (the copy itself is [`crate::copy_in`], run by the sandbox helper
//! with the stage's overlay mounted).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cache::key::{KeyError, KeyInputs};
use crate::copy_in::CopyIn;
use crate::sandbox::{Overlay, Spec, Task};
use crate::stage::{StageContext, TaskError};
use crate::template::check::{Checker, HostPath, relative};
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
    share: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileProvisioner {
    pub source: PathBuf,
    pub destination: String,
    pub mode: Option<FileMode>,
    pub owner: Option<Owner>,
    pub cache: bool,
    /// `share = true`: pushed to the shared cache even though it uses a
    /// sensitive variable.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub share: bool,
}

impl FileProvisioner {
    pub fn summary(&self, dir: &Path) -> String {
        format!("{} -> {}", relative(&self.source, dir), self.destination)
    }

    /// Where the copy goes and how, and the content of what is copied.
    pub fn key_inputs(&self, inputs: &mut KeyInputs) -> Result<(), KeyError> {
        let FileProvisioner {
            source,
            destination,
            mode,
            owner,
            cache: _,
            share: _,
        } = self;
        inputs
            .path_setting("source", source)
            .setting("destination", destination)
            .setting("mode", mode)
            .setting("owner", owner)
            .host_file(source)?;
        Ok(())
    }

    pub fn run(&self, cx: &StageContext<'_>, overlay: Overlay) -> Result<(), TaskError> {
        let spec = Spec {
            base: cx.work.to_owned(),
            overlay: Some(overlay),
            task: Task::CopyIn(CopyIn {
                source: self.source.clone(),
                destination: self.destination.clone(),
                mode: self.mode,
                owner: self.owner.clone(),
            }),
        };
        cx.run(&spec, None)
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
        share: raw.share.unwrap_or(false),
    })
}
