//! Provisioners: the stages that change the root after the source.
//!
//! One file per kind; [`Provisioner`] is the closed set, dispatched by
//! `match`. Each kind's file holds its check, its settings, the inputs of
//! its stage key and the code that runs it on the stage's overlay.

pub mod file;
pub mod shell;
pub mod shell_local;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::cache::key::{KeyError, KeyInputs};
use crate::reference::Digest;
use crate::sandbox::Overlay;
use crate::stage::{StageContext, TaskError};
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

    /// `true` when the template says `share = true`: pushed to the shared
    /// cache even when it uses a sensitive variable.
    pub fn share(&self) -> bool {
        match self {
            Provisioner::File(file) => file.share,
            Provisioner::Shell(spec) | Provisioner::ShellLocal(spec) => spec.share,
        }
    }

    /// The sensitive variable the stage uses, if any: its value is in the
    /// stage's settings, or its commands or scripts name `KILN_VAR_NAME`
    /// (every shell stage has every variable in its environment).
    pub fn sensitive_use(&self, redactor: &crate::redact::Redactor) -> Option<String> {
        let by_name = !matches!(self, Provisioner::File(_));
        let settings = serde_json::to_value(self).expect("provisioners serialize");
        if let Some(name) = redactor.sensitive_in_json(&settings, by_name) {
            return Some(name);
        }
        let (Provisioner::Shell(spec) | Provisioner::ShellLocal(spec)) = self else {
            return None;
        };
        let shell::ShellBody::Scripts(scripts) = &spec.body else {
            return None;
        };
        scripts
            .iter()
            .filter_map(|script| std::fs::read(script).ok())
            .find_map(|bytes| redactor.sensitive_in(&String::from_utf8_lossy(&bytes), by_name))
    }

    /// How many times a failed run is tried again, from a clean upper.
    pub fn max_retries(&self) -> u32 {
        match self {
            Provisioner::File(_) => 0,
            Provisioner::Shell(spec) | Provisioner::ShellLocal(spec) => spec.max_retries,
        }
    }

    /// A one-line description; host paths relative to the template's folder.
    pub fn summary(&self, dir: &Path) -> String {
        match self {
            Provisioner::File(file) => file.summary(dir),
            Provisioner::Shell(spec) | Provisioner::ShellLocal(spec) => spec.summary(dir),
        }
    }

    /// What the stage's history entry says it did.
    pub fn history_text(&self, dir: &Path) -> String {
        match self {
            Provisioner::File(file) => file.summary(dir),
            Provisioner::Shell(spec) | Provisioner::ShellLocal(spec) => spec.history_text(dir),
        }
    }

    /// What the stage's key is made of; `variables` is the digest of the
    /// template's variables, which shell stages see.
    pub fn key_inputs(&self, inputs: &mut KeyInputs, variables: &Digest) -> Result<(), KeyError> {
        match self {
            Provisioner::File(file) => file.key_inputs(inputs),
            Provisioner::Shell(spec) | Provisioner::ShellLocal(spec) => {
                spec.key_inputs(inputs, variables)
            }
        }
    }

    /// Runs the stage on `overlay`, whose upper directory becomes its layer.
    pub fn run(&self, cx: &StageContext<'_>, overlay: Overlay) -> Result<(), TaskError> {
        match self {
            Provisioner::File(file) => file.run(cx, overlay),
            Provisioner::Shell(spec) => spec.run(cx, overlay, shell::Place::InRoot),
            Provisioner::ShellLocal(spec) => shell_local::run(spec, cx, overlay),
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
                "shell" => {
                    shell::check_spec(cx, &at, shell::ShellTable::Shell).map(Provisioner::Shell)
                }
                "shell-local" => shell_local::check(cx, &at).map(Provisioner::ShellLocal),
                _ => unreachable!("Checker::kind only returns one of KINDS"),
            }
        })
        .collect();
    checked.into_iter().collect()
}
