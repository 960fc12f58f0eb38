//! `debootstrap`: a Debian or Ubuntu root made by mmdebstrap (or debootstrap
//! where mmdebstrap is missing).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::SourceError;
use crate::cache::key::KeyInputs;
use crate::sandbox::{Network, Spec, Task};
use crate::stage::StageContext;

use crate::template::check::Checker;
use crate::template::error::DiagnosticKind;
use crate::template::keypath::KeyPath;

pub const VARIANTS: &[&str] = &[
    "extract",
    "custom",
    "essential",
    "apt",
    "required",
    "minbase",
    "buildd",
    "important",
    "debootstrap",
    "standard",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDebootstrap {
    suite: String,
    variant: Option<String>,
    #[serde(default)]
    include: Vec<String>,
    mirror: Option<String>,
    arch: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DebootstrapSource {
    pub suite: String,
    /// mmdebstrap's variant; `minbase` unless the template says otherwise.
    pub variant: String,
    pub include: Vec<String>,
    /// `None`: the host's apt sources.
    pub mirror: Option<String>,
    /// `None`: the host's architecture.
    pub arch: Option<String>,
}

impl DebootstrapSource {
    pub fn summary(&self) -> String {
        let mut summary = format!("{} ({})", self.suite, self.variant);
        if !self.include.is_empty() {
            summary.push_str(&format!(" + {}", self.include.join(",")));
        }
        summary
    }

    /// The mirror actually used: the template's, or the host's apt mirror.
    pub fn mirror_used(&self) -> Option<String> {
        self.mirror.clone().or_else(host_mirror)
    }

    /// The architecture actually used: the template's, or the host's.
    pub fn arch_used(&self) -> String {
        self.arch
            .clone()
            .unwrap_or_else(|| crate::oci::host_architecture().to_owned())
    }

    /// The suite, variant and packages, and the mirror and architecture
    /// actually used, not only the ones written.
    pub fn key_inputs(&self, inputs: &mut KeyInputs) {
        let DebootstrapSource {
            suite,
            variant,
            include,
            mirror: _,
            arch: _,
        } = self;
        inputs
            .setting("suite", suite)
            .setting("variant", variant)
            .setting("include", include)
            .setting("mirror", &self.mirror_used().unwrap_or_default())
            .setting("arch", &self.arch_used());
    }

    /// Makes the root in `root` (a folder of the work folder) with
    /// mmdebstrap, confined as a stage is: package scripts run as the root
    /// of a user namespace, on the stage's isolated network, with only
    /// `root` writable.
    pub fn run(&self, cx: &StageContext<'_>, root: &Path) -> Result<(), SourceError> {
        let folder = root
            .strip_prefix(cx.work)
            .unwrap_or(root)
            .display()
            .to_string();
        let spec = Spec {
            base: cx.work.to_owned(),
            overlay: None,
            task: Task::Tool {
                argv: command(self, root)?,
                env: vec![
                    ("PATH".to_owned(), TOOL_PATH.to_owned()),
                    ("HOME".to_owned(), "/root".to_owned()),
                    ("TMPDIR".to_owned(), "/tmp".to_owned()),
                    ("SOURCE_DATE_EPOCH".to_owned(), cx.epoch.to_string()),
                ],
                writable: vec![folder],
                network: Network::Isolated,
            },
        };
        cx.run(&spec, None)?;
        Ok(())
    }
}

fn check_word(
    cx: &mut Checker<'_>,
    at: &KeyPath,
    text: String,
    what: &'static str,
) -> Option<String> {
    let valid = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".+-_:=~".contains(c));
    if valid {
        return Some(text);
    }
    cx.report(
        at,
        DiagnosticKind::InvalidValue {
            what,
            value: text,
            reason: "expected letters, digits and . + - _ : = ~".to_owned(),
        },
    );
    None
}

pub(crate) fn check(cx: &mut Checker<'_>, at: &KeyPath) -> Option<DebootstrapSource> {
    let raw: RawDebootstrap = cx.shape(at, true)?;
    let suite = cx
        .text(&at.key("suite"), &raw.suite)
        .and_then(|suite| check_word(cx, &at.key("suite"), suite, "suite"));
    let variant = match cx.optional_text(&at.key("variant"), raw.variant.as_deref()) {
        Some(Some(variant)) if !VARIANTS.contains(&variant.as_str()) => {
            cx.report(
                &at.key("variant"),
                DiagnosticKind::InvalidValue {
                    what: "variant",
                    value: variant,
                    reason: format!("expected one of {}", VARIANTS.join(", ")),
                },
            );
            None
        }
        Some(variant) => Some(variant.unwrap_or_else(|| "minbase".to_owned())),
        None => None,
    };
    let include: Vec<Option<String>> = raw
        .include
        .iter()
        .enumerate()
        .map(|(index, package)| {
            let package_at = at.key("include").index(index);
            let package = cx.text(&package_at, package)?;
            check_word(cx, &package_at, package, "package name")
        })
        .collect();
    let mirror = match cx.optional_text(&at.key("mirror"), raw.mirror.as_deref()) {
        Some(Some(mirror))
            if !["http://", "https://", "file://", "copy://"]
                .iter()
                .any(|scheme| mirror.starts_with(scheme)) =>
        {
            cx.report(
                &at.key("mirror"),
                DiagnosticKind::InvalidValue {
                    what: "mirror",
                    value: mirror,
                    reason: "expected an http://, https://, file:// or copy:// URL".to_owned(),
                },
            );
            None
        }
        other => other,
    };
    let arch = match cx.optional_text(&at.key("arch"), raw.arch.as_deref()) {
        Some(Some(arch)) => check_word(cx, &at.key("arch"), arch, "architecture").map(Some),
        other => other,
    };
    Some(DebootstrapSource {
        suite: suite?,
        variant: variant?,
        include: include.into_iter().collect::<Option<_>>()?,
        mirror: mirror?,
        arch: arch?,
    })
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// The main archive of the host's apt sources (not its security mirror),
/// so a Debian host builds from the mirror it already uses.
pub fn host_mirror() -> Option<String> {
    let mut files = vec![std::path::PathBuf::from("/etc/apt/sources.list")];
    if let Ok(entries) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<_> = entries.flatten().map(|entry| entry.path()).collect();
        more.sort();
        files.extend(more);
    }
    for file in files {
        let name = file.to_string_lossy();
        if !(name.ends_with(".list") || name.ends_with(".sources")) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for line in text.lines().map(str::trim) {
            let uris: Vec<&str> = if let Some(uris) = line.strip_prefix("URIs:") {
                uris.split_whitespace().collect()
            } else if let Some(rest) = line.strip_prefix("deb ") {
                rest.split_whitespace()
                    .filter(|word| word.contains("://"))
                    .take(1)
                    .collect()
            } else {
                Vec::new()
            };
            if let Some(uri) = uris.into_iter().find(|uri| !uri.contains("security")) {
                return Some(uri.to_owned());
            }
        }
    }
    None
}

/// Where the confined mmdebstrap finds programs.
const TOOL_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The mmdebstrap command that makes the root in `root`. Its unshare mode
/// run as the root of kiln's user namespace makes no namespace of users
/// of its own: it mounts what the bootstrap needs in mount and pid
/// namespaces inside kiln's, and binds device nodes where it cannot make
/// them.
fn command(source: &DebootstrapSource, root: &Path) -> Result<Vec<String>, SourceError> {
    if !on_path("mmdebstrap") {
        return Err(SourceError::NoBootstrapTool);
    }
    let mut argv: Vec<String> = vec![
        "mmdebstrap".to_owned(),
        "--mode=unshare".to_owned(),
        "--format=directory".to_owned(),
        format!("--variant={}", source.variant),
    ];
    if !source.include.is_empty() {
        argv.push(format!("--include={}", source.include.join(",")));
    }
    if let Some(arch) = &source.arch {
        argv.push(format!("--architectures={arch}"));
    }
    argv.push(source.suite.clone());
    argv.push(root.display().to_string());
    argv.extend(source.mirror_used());
    Ok(argv)
}
