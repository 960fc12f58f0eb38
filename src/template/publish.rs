//! The `[publish]` section: channels to move, registries to push to and
//! AMIs to make after a good build.

use serde::{Deserialize, Serialize};

use super::check::{Checker, HostPath, optional};
use super::error::DiagnosticKind;
use super::keypath::KeyPath;
use crate::aws::ami::settings::{self as ami, AmiSettings};
use crate::reference::{ChannelName, RemoteRef};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPublish {
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    remote: Vec<String>,
    /// Checked one by one, with their own key paths.
    #[serde(default)]
    ami: Vec<serde::de::IgnoredAny>,
    sign: Option<RawSign>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSign {
    key: String,
}

/// `[publish] sign = { key = "…" }`: sign every image built, with its
/// attestations, before it is pushed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignSettings {
    /// The private key (PKCS#8 PEM), relative to the template.
    pub key: std::path::PathBuf,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Publish {
    pub channels: Vec<ChannelName>,
    /// Repositories (`HOST[:PORT]/REPO`); the image's version is the tag.
    pub remote: Vec<RemoteRef>,
    /// `[[publish.ami]]`: AMIs of the bootable raw disk.
    pub ami: Vec<AmiSettings>,
    pub sign: Option<SignSettings>,
}

pub(crate) fn check(cx: &mut Checker<'_>) -> Option<Publish> {
    let at = KeyPath::root().key("publish");
    if cx.document().get("publish").is_none() {
        return Some(Publish::default());
    }
    let raw: RawPublish = cx.shape(&at, false)?;
    let channels: Vec<Option<ChannelName>> = raw
        .channels
        .iter()
        .enumerate()
        .map(|(index, channel)| {
            cx.parsed(&at.key("channels").index(index), channel, "channel name")
        })
        .collect();
    let remote: Vec<Option<RemoteRef>> = raw
        .remote
        .iter()
        .enumerate()
        .map(|(index, remote)| {
            let remote_at = at.key("remote").index(index);
            let parsed: RemoteRef = cx.parsed(&remote_at, remote, "remote repository")?;
            if parsed.target.is_some() {
                cx.report_help(
                    &remote_at,
                    DiagnosticKind::Invalid(
                        "a publish remote names a repository, not a tag or digest".to_owned(),
                    ),
                    "the image's version is pushed as the tag; write HOST[:PORT]/REPOSITORY"
                        .to_owned(),
                );
                return None;
            }
            Some(parsed)
        })
        .collect();
    let amis: Vec<Option<AmiSettings>> = (0..raw.ami.len())
        .map(|index| ami::check(cx, &at.key("ami").index(index)))
        .collect();
    let sign = optional(raw.sign.as_ref(), |sign| {
        cx.host_path(&at.key("sign").key("key"), &sign.key, HostPath::File)
            .map(|key| SignSettings { key })
    });
    Some(Publish {
        sign: sign?,
        channels: channels.into_iter().collect::<Option<_>>()?,
        remote: remote.into_iter().collect::<Option<_>>()?,
        ami: amis.into_iter().collect::<Option<_>>()?,
    })
}

/// `[[publish.ami]]` takes the raw bootable disk a `disk` post-processor
/// makes: there must be one.
pub(crate) fn check_amis_have_a_disk(
    cx: &mut Checker<'_>,
    publish: &Publish,
    post_processors: &[crate::post_processors::PostProcessor],
) {
    if publish.ami.is_empty()
        || crate::post_processors::raw_bootable_disk(post_processors).is_some()
    {
        return;
    }
    cx.report_help(
        &KeyPath::root().key("publish").key("ami").index(0),
        DiagnosticKind::Invalid(
            "an AMI is made of the template's raw bootable disk, and it has none".to_owned(),
        ),
        "add a [[post_processor]] of type \"disk\" with format = \"raw\" and boot = \"uefi\" (or \"hybrid\", \"bios\")"
            .to_owned(),
    );
}
