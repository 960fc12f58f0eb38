//! `debootstrap`: a Debian or Ubuntu root made by mmdebstrap (or debootstrap
//! where mmdebstrap is missing).

use serde::{Deserialize, Serialize};

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
