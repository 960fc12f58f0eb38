//! What a sandbox helper is asked to do: the overlay to mount and the task
//! to run in it, sent as JSON on the helper's stdin.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// An overlay mount: lowers (top first), an optional writable upper with its
/// work directory, and the mount point. Paths are relative to
/// [`Spec::base`], which keeps the mount options short.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Overlay {
    pub lowers: Vec<String>,
    pub upper: Option<(String, String)>,
    pub merged: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Spec {
    /// The build's work folder; the helper works from there.
    pub base: PathBuf,
    pub overlay: Option<Overlay>,
    pub task: Task,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Task {
    /// A command inside the root: chroot, with /proc, a minimal /dev, a
    /// read-only /sys, a fresh /tmp and the host's resolv.conf.
    Chroot {
        argv: Vec<String>,
        env: Vec<(String, String)>,
        workdir: String,
        /// Host files copied into the fresh /tmp before the command starts.
        scripts: Vec<(PathBuf, String)>,
    },
    /// A command on the host, with `KILN_ROOT` set to the mounted root
    /// (when there is an overlay).
    Host {
        argv: Vec<String>,
        env: Vec<(String, String)>,
        cwd: PathBuf,
    },
    /// Copies a host file or folder into the mounted root.
    CopyIn(crate::copy_in::CopyIn),
    /// Copies the whole mounted root into a plain folder (to keep a failed
    /// stage's root for inspection).
    Flatten { destination: PathBuf },
}
