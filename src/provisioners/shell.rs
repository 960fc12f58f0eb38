//! `shell`: commands run inside the image root, in a chroot with fresh
//! mount, pid, uts and ipc namespaces.
//!
//! [`ShellSpec`] is also what `shell-local` (provisioner and post-processor)
//! and `[[test]]` blocks take, so the rules for `inline`, `script`,
//! `scripts`, `env` and `timeout`, what their keys are made of, and the
//! sandbox tasks they run live here once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cache::key::{KeyError, KeyInputs};
use crate::reference::Digest;
use crate::sandbox::{Network, Overlay, Script, Spec, Task};
use crate::stage::{StageContext, TaskError};
use crate::template::check::{Checker, HostPath, relative};
use crate::template::error::DiagnosticKind;
use crate::template::keypath::KeyPath;
use crate::template::units::Duration;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawShell {
    inline: Option<Vec<String>>,
    script: Option<String>,
    scripts: Option<Vec<String>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    shell: Option<String>,
    timeout: Option<String>,
    max_retries: Option<u32>,
    workdir: Option<String>,
    cache: Option<bool>,
    share: Option<bool>,
    network: Option<Network>,
}

/// What a shell stage runs: inline commands, or script files from the host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShellBody {
    Inline(Vec<String>),
    Scripts(Vec<PathBuf>),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShellSpec {
    pub body: ShellBody,
    pub env: BTreeMap<String, String>,
    /// The interpreter; `/bin/sh` unless set.
    pub shell: String,
    pub timeout: Option<Duration>,
    pub max_retries: u32,
    pub workdir: Option<String>,
    pub cache: bool,
    /// `share = true`: pushed to the shared cache even though it uses a
    /// sensitive variable.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub share: bool,
    /// Where its commands reach: `isolated` unless the template says
    /// otherwise (`host` for commands on the host).
    pub network: Network,
}

/// Which shell table a check is of: what keys it takes beside the common ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ShellTable {
    /// A `shell` provisioner: `cache` and `network`.
    Shell,
    /// A `shell-local` provisioner: `cache`; it runs on the host's network.
    ShellLocal,
    /// A `shell-local` post-processor: neither.
    PostProcessor,
}

/// Checks that exactly one of `inline`, `script` and `scripts` is given.
pub(crate) fn check_body(
    cx: &mut Checker<'_>,
    at: &KeyPath,
    inline: Option<&[String]>,
    script: Option<&str>,
    scripts: Option<&[String]>,
    keys: &'static [&'static str],
) -> Option<ShellBody> {
    let given = usize::from(inline.is_some())
        + usize::from(script.is_some())
        + usize::from(scripts.is_some());
    if given != 1 {
        cx.report(at, DiagnosticKind::ExactlyOne(keys));
        return None;
    }
    if let Some(inline) = inline {
        if inline.is_empty() {
            cx.report(
                &at.key("inline"),
                DiagnosticKind::Invalid("`inline` needs at least one command".to_owned()),
            );
            return None;
        }
        return cx.texts(&at.key("inline"), inline).map(ShellBody::Inline);
    }
    if let Some(script) = script {
        return cx
            .host_path(&at.key("script"), script, HostPath::File)
            .map(|path| ShellBody::Scripts(vec![path]));
    }
    let scripts = scripts.unwrap_or_default();
    if scripts.is_empty() {
        cx.report(
            &at.key("scripts"),
            DiagnosticKind::Invalid("`scripts` needs at least one script".to_owned()),
        );
        return None;
    }
    cx.host_paths(&at.key("scripts"), scripts, HostPath::File)
        .map(ShellBody::Scripts)
}

/// Checks a shell table; `cache` and `network` are refused where they
/// mean nothing.
pub(crate) fn check_spec(
    cx: &mut Checker<'_>,
    at: &KeyPath,
    table: ShellTable,
) -> Option<ShellSpec> {
    let raw: RawShell = cx.shape(at, true)?;
    let body = check_body(
        cx,
        at,
        raw.inline.as_deref(),
        raw.script.as_deref(),
        raw.scripts.as_deref(),
        &["inline", "script", "scripts"],
    );
    let env = cx.environment(&at.key("env"), &raw.env);
    let shell = match cx.optional_text(&at.key("shell"), raw.shell.as_deref()) {
        Some(Some(shell)) if shell.trim().is_empty() => {
            cx.report(
                &at.key("shell"),
                DiagnosticKind::Invalid("`shell` must name an interpreter".to_owned()),
            );
            None
        }
        Some(shell) => Some(shell.unwrap_or_else(|| "/bin/sh".to_owned())),
        None => None,
    };
    let timeout = cx.optional_parsed(&at.key("timeout"), raw.timeout.as_deref(), "duration");
    let workdir = cx.optional_image_path(&at.key("workdir"), raw.workdir.as_deref());
    let cache = match raw.cache {
        Some(_) if table == ShellTable::PostProcessor => {
            cx.report_key(
                &at.key("cache"),
                DiagnosticKind::Invalid("`cache` applies to provisioners only".to_owned()),
            );
            None
        }
        cache => Some(cache.unwrap_or(true)),
    };
    let share = match raw.share {
        Some(_) if table == ShellTable::PostProcessor => {
            cx.report_key(
                &at.key("share"),
                DiagnosticKind::Invalid("`share` applies to provisioners only".to_owned()),
            );
            None
        }
        share => Some(share.unwrap_or(false)),
    };
    let network = match (raw.network, table) {
        (Some(_), ShellTable::ShellLocal | ShellTable::PostProcessor) => {
            cx.report_key(
                &at.key("network"),
                DiagnosticKind::Invalid(
                    "`network` applies to commands in the image; shell-local runs on the host"
                        .to_owned(),
                ),
            );
            None
        }
        (network, ShellTable::Shell) => Some(network.unwrap_or_default()),
        (None, _) => Some(Network::Host),
    };
    Some(ShellSpec {
        body: body?,
        env: env?,
        shell: shell?,
        timeout: timeout?,
        max_retries: raw.max_retries.unwrap_or(0),
        workdir: workdir?,
        cache: cache?,
        share: share?,
        network: network?,
    })
}

/// Where a shell stage's commands run.
#[derive(Clone, Copy, Debug)]
pub enum Place<'a> {
    /// Inside the image root (`shell`, `[[test]]`).
    InRoot,
    /// On the host, from `cwd` (`shell-local`).
    OnHost { cwd: &'a Path },
}

/// The `PATH` commands inside an image root get, as Docker's RUN does.
const IMAGE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl ShellBody {
    /// `inline` with its commands, or `scripts` with their paths relative
    /// to the template's folder `dir`, and the scripts' content.
    pub fn key_inputs(&self, inputs: &mut KeyInputs) -> Result<(), KeyError> {
        match self {
            ShellBody::Inline(commands) => {
                inputs.setting("inline", commands);
            }
            ShellBody::Scripts(scripts) => {
                inputs.paths_setting("scripts", scripts);
                for script in scripts {
                    inputs.host_file(script)?;
                }
            }
        }
        Ok(())
    }

    pub fn summary(&self, dir: &Path) -> String {
        match self {
            ShellBody::Inline(commands) if commands.len() == 1 => commands[0].clone(),
            ShellBody::Inline(commands) => format!("{} commands", commands.len()),
            ShellBody::Scripts(scripts) => scripts
                .iter()
                .map(|script| relative(script, dir))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

impl ShellSpec {
    pub fn summary(&self, dir: &Path) -> String {
        self.body.summary(dir)
    }

    /// What a shell stage's history entry says it did: its inline commands
    /// in full, or its scripts.
    pub fn history_text(&self, dir: &Path) -> String {
        match &self.body {
            ShellBody::Inline(commands) => commands.join(" ; "),
            ShellBody::Scripts(_) => self.summary(dir),
        }
    }

    /// Every setting but `cache` and `share` (whether a stage is cached or
    /// shared says nothing of what it makes), the scripts' content, and the template's variables,
    /// which its commands see as `KILN_VAR_NAME`.
    pub fn key_inputs(&self, inputs: &mut KeyInputs, variables: &Digest) -> Result<(), KeyError> {
        let ShellSpec {
            body,
            env,
            shell,
            timeout,
            max_retries,
            workdir,
            cache: _,
            share: _,
            network,
        } = self;
        body.key_inputs(inputs)?;
        inputs
            .setting("env", env)
            .setting("shell", shell)
            .setting("timeout", timeout)
            .setting("max_retries", max_retries)
            .setting("workdir", workdir)
            .setting("network", network)
            .setting("hygiene", &crate::hygiene::VERSION)
            .setting_digest("variables", variables.clone());
        Ok(())
    }

    /// The sandbox tasks of the stage: one for inline commands (run with
    /// `-e`, stopping at the first failure), or one per script. Commands
    /// and scripts reach the shell as files, never on its command line,
    /// where every host user could read them. `kiln_env` is what kiln
    /// gives every command (the template's variables as `KILN_VAR_NAME`,
    /// and the like); the stage's own `env` wins.
    pub fn tasks(&self, place: Place<'_>, kiln_env: &[(String, String)]) -> Vec<Task> {
        let mut env: Vec<(String, String)> = Vec::new();
        if matches!(place, Place::InRoot) {
            env.push(("PATH".to_owned(), IMAGE_PATH.to_owned()));
            env.push(("HOME".to_owned(), "/root".to_owned()));
        }
        env.extend(kiln_env.iter().cloned());
        env.extend(
            self.env
                .iter()
                .map(|(name, value)| (name.clone(), value.clone())),
        );
        let scripts: Vec<(Script, bool)> = match &self.body {
            ShellBody::Inline(commands) => vec![(Script::Text(commands.join("\n")), true)],
            ShellBody::Scripts(scripts) => scripts
                .iter()
                .map(|script| (Script::File(script.clone()), false))
                .collect(),
        };
        scripts
            .into_iter()
            .map(|(script, inline)| {
                let mut argv = vec![self.shell.clone()];
                if inline {
                    argv.push("-e".to_owned());
                }
                match place {
                    Place::OnHost { cwd } => Task::Host {
                        argv,
                        env: env.clone(),
                        cwd: cwd.to_owned(),
                        script: Some(script),
                    },
                    Place::InRoot => Task::InRoot {
                        argv,
                        env: env.clone(),
                        workdir: self.workdir.clone().unwrap_or_else(|| "/".to_owned()),
                        script: Some(script),
                        network: self.network,
                        user: None,
                    },
                }
            })
            .collect()
    }

    /// Runs the stage's tasks, in order, on `overlay`.
    pub fn run(
        &self,
        cx: &StageContext<'_>,
        overlay: Overlay,
        place: Place<'_>,
    ) -> Result<(), TaskError> {
        let timeout = self.timeout.map(Duration::as_std);
        for task in self.tasks(place, cx.variables) {
            let spec = Spec {
                base: cx.work.to_owned(),
                overlay: Some(overlay.clone()),
                task,
            };
            cx.run(&spec, timeout)?;
        }
        Ok(())
    }
}
