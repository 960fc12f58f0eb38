//! The `[image]` section: the name and version of the image, and the OCI
//! config fields it carries (env, entrypoint, cmd, workdir, user, labels).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::check::{Checker, optional, valid_env_name};
use super::error::DiagnosticKind;
use super::interpolate::Within;
use super::keypath::KeyPath;
use crate::reference::{ImageName, Version};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawImage {
    name: String,
    version: String,
    description: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    env: Vec<String>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    workdir: Option<String>,
    user: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageSpec {
    pub name: ImageName,
    pub version: Version,
    pub description: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub env: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub workdir: Option<String>,
    pub user: Option<String>,
}

/// Reads the name and version first: the rest of the template may refer to
/// them as `${image.name}` and `${image.version}`.
pub(crate) fn check(cx: &mut Checker<'_>) -> Option<ImageSpec> {
    let at = KeyPath::root().key("image");
    if cx.document().get("image").is_none() {
        cx.report_help(
            &KeyPath::root(),
            DiagnosticKind::MissingKey("image".to_owned()),
            "add an [image] table with `name` and `version`".to_owned(),
        );
        return None;
    }
    let raw: RawImage = cx.shape(&at, false)?;
    cx.within = Within::ImageConfig;
    let name: Option<ImageName> = cx.parsed(&at.key("name"), &raw.name, "image name");
    let version: Option<Version> = cx.parsed(&at.key("version"), &raw.version, "version");
    if let (Some(name), Some(version)) = (&name, &version) {
        cx.image = Some((name.to_string(), version.to_string()));
    }
    let description = cx.optional_text(&at.key("description"), raw.description.as_deref());
    let mut labels = BTreeMap::new();
    let mut labels_ok = true;
    for (key, value) in &raw.labels {
        let label_at = at.key("labels").key(key);
        if key.is_empty() {
            cx.report_key(
                &label_at,
                DiagnosticKind::Invalid("a label key must not be empty".to_owned()),
            );
            labels_ok = false;
        } else if let Some(value) = cx.text(&label_at, value) {
            labels.insert(key.clone(), value);
        } else {
            labels_ok = false;
        }
    }
    let labels = labels_ok.then_some(labels);
    let env = cx.texts(&at.key("env"), &raw.env).and_then(|env| {
        let mut ok = true;
        for (index, entry) in env.iter().enumerate() {
            let valid = entry
                .split_once('=')
                .is_some_and(|(name, _)| valid_env_name(name));
            if !valid {
                let value = cx.redact(entry);
                cx.report(
                    &at.key("env").index(index),
                    DiagnosticKind::InvalidValue {
                        what: "environment entry",
                        value,
                        reason: "expected NAME=VALUE".to_owned(),
                    },
                );
                ok = false;
            }
        }
        ok.then_some(env)
    });
    let entrypoint = optional(raw.entrypoint.as_deref(), |raw| {
        cx.texts(&at.key("entrypoint"), raw)
    });
    let cmd = optional(raw.cmd.as_deref(), |raw| cx.texts(&at.key("cmd"), raw));
    let workdir = cx.optional_image_path(&at.key("workdir"), raw.workdir.as_deref());
    let user = cx.optional_text(&at.key("user"), raw.user.as_deref());
    cx.within = Within::Stage;
    Some(ImageSpec {
        name: name?,
        version: version?,
        description: description?,
        labels: labels?,
        env: env?,
        entrypoint: entrypoint?,
        cmd: cmd?,
        workdir: workdir?,
        user: user?,
    })
}
