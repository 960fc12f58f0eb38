//! What a sandbox helper is asked to do: the overlay to mount and the task
//! to run in it, sent as JSON on the helper's stdin (never on a command
//! line, where every host user could read it).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// An overlay mount: lowers (top first), an optional writable upper with its
/// work directory, and the mount point. Paths are relative to
/// [`Spec::base`], which keeps the mount options short. For a confined
/// task, the upper and its work directory share a parent folder.
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

/// What a confined command's network is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// Its own network namespace, with outbound access through
    /// slirp4netns and no way to the host's loopback.
    #[default]
    Isolated,
    /// The host's network, as it is (the host's loopback included).
    Host,
    /// Its own network namespace with only a loopback interface.
    None,
}

impl Network {
    pub fn name(self) -> &'static str {
        match self {
            Network::Isolated => "isolated",
            Network::Host => "host",
            Network::None => "none",
        }
    }
}

/// A script handed to a command as a file: never as a command-line
/// argument, which would show it (and any secret in it) in process lists.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Script {
    /// Inline commands, written into the script file.
    Text(String),
    /// A host file, copied.
    File(PathBuf),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Task {
    /// A command inside the root, confined like a container: its own user,
    /// mount, pid, uts, ipc and network namespaces, `pivot_root` into the
    /// root, a minimal `/dev`, `/proc` with its usual masks, a read-only
    /// `/sys`, a fresh `/tmp`, bounded capabilities, no new privileges and
    /// a seccomp filter. A script is written into the fresh `/tmp` (or
    /// `/dev`, in an image without `/tmp`) and its path added to `argv`.
    InRoot {
        argv: Vec<String>,
        env: Vec<(String, String)>,
        workdir: String,
        script: Option<Script>,
        network: Network,
        /// Run as this user of the image (`name`, `uid`, with `:group`);
        /// `None`: its root.
        user: Option<String>,
    },
    /// A program of the host (mmdebstrap), confined as a stage is, but in a
    /// root of the host's own `/usr` and `/etc`, read-only, with the
    /// folders of the work folder named in `writable` at their own paths.
    /// It may mount and make mount and pid namespaces of its own, inside
    /// its user namespace (mmdebstrap sets up the root it bootstraps so).
    Tool {
        argv: Vec<String>,
        env: Vec<(String, String)>,
        writable: Vec<String>,
        network: Network,
    },
    /// A command on the host, with `KILN_ROOT` set to the mounted root
    /// (when there is an overlay). A script is written into the work folder
    /// and its path added to `argv`.
    Host {
        argv: Vec<String>,
        env: Vec<(String, String)>,
        cwd: PathBuf,
        script: Option<Script>,
    },
    /// Copies a host file or folder into the mounted root.
    CopyIn(crate::copy_in::CopyIn),
    /// Copies the whole mounted root into a plain folder (to keep a failed
    /// stage's root for inspection).
    Flatten { destination: PathBuf },
}
