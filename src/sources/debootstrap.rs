//! `debootstrap`: a Debian or Ubuntu root made by mmdebstrap, from the
//! suite and any extra suites (updates, security) and components, with
//! what would tie it to the build host or the build's moment left out:
//! the host's `resolv.conf` and `hostname`, a machine id, SSH host keys,
//! and caches that differ from build to build (see [`crate::hygiene`]).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::SourceError;
use crate::cache::key::KeyInputs;
use crate::sandbox::{Network, Spec, Task};
use crate::stage::StageContext;

use crate::template::check::{Checker, optional};
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
    #[serde(default)]
    components: Vec<String>,
    #[serde(default)]
    suites: Vec<RawSuite>,
}

/// An extra suite: a name (from the same mirror) or a table with a mirror
/// of its own (`{ suite = "bookworm-security", mirror = "…/debian-security" }`).
#[derive(Deserialize)]
#[serde(untagged)]
enum RawSuite {
    Name(String),
    WithMirror(RawSuiteWithMirror),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSuiteWithMirror {
    suite: String,
    mirror: String,
}

/// An extra suite, and the mirror it comes from when not the main one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExtraSuite {
    pub suite: String,
    pub mirror: Option<String>,
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
    /// Archive areas; empty: `main`.
    pub components: Vec<String>,
    /// Suites beside `suite`, such as `bookworm-updates`.
    pub suites: Vec<ExtraSuite>,
}

impl DebootstrapSource {
    pub fn summary(&self) -> String {
        let mut summary = format!("{} ({})", self.suite, self.variant);
        for extra in &self.suites {
            summary.push_str(&format!(", {}", extra.suite));
        }
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
            components,
            suites,
        } = self;
        inputs
            .setting("suite", suite)
            .setting("variant", variant)
            .setting("include", include)
            .setting("mirror", &self.mirror_used().unwrap_or_default())
            .setting("arch", &self.arch_used())
            .setting("hygiene", &crate::hygiene::VERSION);
        // Left out when unset, so the keys of existing roots stay.
        if !components.is_empty() || !suites.is_empty() {
            inputs
                .setting("components", components)
                .setting("suites", suites);
        }
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
        crate::hygiene::clean_new_root(root)
            .map_err(crate::io_error::IoError::at("clean", root))?;
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
    let include = check_words(cx, at, "include", &raw.include, "package name");
    let mirror = optional(raw.mirror.as_deref(), |mirror| {
        check_mirror(cx, &at.key("mirror"), mirror)
    });
    let arch = match cx.optional_text(&at.key("arch"), raw.arch.as_deref()) {
        Some(Some(arch)) => check_word(cx, &at.key("arch"), arch, "architecture").map(Some),
        other => other,
    };
    let components = check_words(cx, at, "components", &raw.components, "component");
    let suites: Vec<Option<ExtraSuite>> = raw
        .suites
        .iter()
        .enumerate()
        .map(|(index, extra)| {
            let extra_at = at.key("suites").index(index);
            let (name, mirror) = match extra {
                RawSuite::Name(name) => (name, None),
                RawSuite::WithMirror(table) => (&table.suite, Some(&table.mirror)),
            };
            let name = cx.text(&extra_at, name)?;
            let name = check_word(cx, &extra_at, name, "suite")?;
            let mirror = match mirror {
                Some(mirror) => Some(check_mirror(cx, &extra_at.key("mirror"), mirror)?),
                None => None,
            };
            Some(ExtraSuite {
                suite: name,
                mirror,
            })
        })
        .collect();
    Some(DebootstrapSource {
        suite: suite?,
        variant: variant?,
        include: include?,
        mirror: mirror?,
        arch: arch?,
        components: components?,
        suites: suites.into_iter().collect::<Option<_>>()?,
    })
}

/// Each word of the list at `key`, every bad one reported.
fn check_words(
    cx: &mut Checker<'_>,
    at: &KeyPath,
    key: &str,
    raw: &[String],
    what: &'static str,
) -> Option<Vec<String>> {
    let checked: Vec<Option<String>> = raw
        .iter()
        .enumerate()
        .map(|(index, word)| {
            let word_at = at.key(key).index(index);
            let word = cx.text(&word_at, word)?;
            check_word(cx, &word_at, word, what)
        })
        .collect();
    checked.into_iter().collect()
}

fn check_mirror(cx: &mut Checker<'_>, at: &KeyPath, raw: &str) -> Option<String> {
    let mirror = cx.text(at, raw)?;
    if MIRROR_SCHEMES
        .iter()
        .any(|scheme| mirror.starts_with(scheme))
        && !mirror.contains(char::is_whitespace)
    {
        return Some(mirror);
    }
    cx.report(
        at,
        DiagnosticKind::InvalidValue {
            what: "mirror",
            value: mirror,
            reason: "expected an http://, https://, file:// or copy:// URL".to_owned(),
        },
    );
    None
}

const MIRROR_SCHEMES: &[&str] = &["http://", "https://", "file://", "copy://"];

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

/// Debian's own mirror, when neither the template nor the host names one.
const DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";

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
    if !source.components.is_empty() {
        argv.push(format!("--components={}", source.components.join(",")));
    }
    argv.push(source.suite.clone());
    argv.push(root.display().to_string());
    let mirror = source.mirror_used();
    if source.suites.is_empty() {
        argv.extend(mirror);
    } else {
        // With extra suites, every source as a sources.list line.
        let main = mirror.unwrap_or_else(|| DEBIAN_MIRROR.to_owned());
        let components = if source.components.is_empty() {
            "main".to_owned()
        } else {
            source.components.join(" ")
        };
        argv.push(format!("deb {main} {} {components}", source.suite));
        for extra in &source.suites {
            let from = extra.mirror.as_deref().unwrap_or(&main);
            argv.push(format!("deb {from} {} {components}", extra.suite));
        }
    }
    Ok(argv)
}
