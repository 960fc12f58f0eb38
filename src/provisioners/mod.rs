//! Provisioners: the stages that change the root after the source.
//!
//! One file per kind; [`Provisioner`] is the closed set, dispatched by `match`.

pub mod file;
pub mod shell;
pub mod shell_local;

use serde::{Deserialize, Serialize};

use crate::template::check::Checker;
use crate::template::keypath::KeyPath;

pub const KINDS: &[&str] = &["file", "shell", "shell-local"];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Provisioner {
    File(file::FileProvisioner),
    Shell(shell::ShellSpec),
    ShellLocal(shell::ShellSpec),
}

impl Provisioner {
    pub fn kind(&self) -> &'static str {
        match self {
            Provisioner::File(_) => "file",
            Provisioner::Shell(_) => "shell",
            Provisioner::ShellLocal(_) => "shell-local",
        }
    }

    /// `false` when the template says `cache = false`: always run it.
    pub fn cache(&self) -> bool {
        match self {
            Provisioner::File(file) => file.cache,
            Provisioner::Shell(spec) | Provisioner::ShellLocal(spec) => spec.cache,
        }
    }

    pub fn summary(&self) -> String {
        match self {
            Provisioner::File(file) => file.summary(),
            Provisioner::Shell(spec) | Provisioner::ShellLocal(spec) => spec.summary(),
        }
    }
}

/// Checks every `[[provisioner]]`, reporting problems in all of them.
pub(crate) fn check_all(cx: &mut Checker<'_>) -> Option<Vec<Provisioner>> {
    let checked: Vec<Option<Provisioner>> = (0..cx.array_len("provisioner")?)
        .map(|index| {
            let at = KeyPath::root().key("provisioner").index(index);
            match cx.kind(&at, "provisioner", KINDS)?.as_str() {
                "file" => file::check(cx, &at).map(Provisioner::File),
                "shell" => shell::check_spec(cx, &at, true).map(Provisioner::Shell),
                "shell-local" => shell_local::check(cx, &at).map(Provisioner::ShellLocal),
                _ => unreachable!("Checker::kind only returns one of KINDS"),
            }
        })
        .collect();
    checked.into_iter().collect()
}
