//! `shell`: commands run inside the image root, in a chroot with fresh
//! mount, pid, uts and ipc namespaces.
//!
//! [`ShellSpec`] is also what `shell-local` (provisioner and post-processor)
//! and `[[test]]` blocks take, so the rules for `inline`, `script`,
//! `scripts`, `env` and `timeout` live here once.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::template::check::{Checker, HostPath};
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

/// Checks a shell table; `cache` is refused where it means nothing
/// (post-processors).
pub(crate) fn check_spec(
    cx: &mut Checker<'_>,
    at: &KeyPath,
    allow_cache: bool,
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
        Some(_) if !allow_cache => {
            cx.report_key(
                &at.key("cache"),
                DiagnosticKind::Invalid("`cache` applies to provisioners only".to_owned()),
            );
            None
        }
        cache => Some(cache.unwrap_or(true)),
    };
    Some(ShellSpec {
        body: body?,
        env: env?,
        shell: shell?,
        timeout: timeout?,
        max_retries: raw.max_retries.unwrap_or(0),
        workdir: workdir?,
        cache: cache?,
    })
}

impl ShellSpec {
    pub fn summary(&self) -> String {
        match &self.body {
            ShellBody::Inline(commands) if commands.len() == 1 => commands[0].clone(),
            ShellBody::Inline(commands) => format!("{} commands", commands.len()),
            ShellBody::Scripts(scripts) => scripts
                .iter()
                .map(|script| script.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}
