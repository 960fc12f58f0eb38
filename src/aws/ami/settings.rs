//! `[[publish.ami]]`: which AMI to make of the template's bootable raw
//! disk, where, and who may launch it. Checked here, before anything runs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::template::check::Checker;
use crate::template::error::DiagnosticKind;
use crate::template::keypath::KeyPath;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Architecture {
    #[serde(rename = "x86_64")]
    X86_64,
    #[serde(rename = "arm64")]
    Arm64,
}

impl Architecture {
    pub fn as_str(self) -> &'static str {
        match self {
            Architecture::X86_64 => "x86_64",
            Architecture::Arm64 => "arm64",
        }
    }

    /// From an OCI config's `architecture`.
    pub fn of_oci(architecture: &str) -> Option<Self> {
        match architecture {
            "amd64" => Some(Architecture::X86_64),
            "arm64" => Some(Architecture::Arm64),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AmiBootMode {
    Uefi,
    LegacyBios,
    UefiPreferred,
}

impl AmiBootMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AmiBootMode::Uefi => "uefi",
            AmiBootMode::LegacyBios => "legacy-bios",
            AmiBootMode::UefiPreferred => "uefi-preferred",
        }
    }

    /// What a disk made with `boot` boots with.
    pub fn of_disk(boot: crate::disk::BootMode) -> Option<Self> {
        match boot {
            crate::disk::BootMode::Uefi => Some(AmiBootMode::Uefi),
            crate::disk::BootMode::Bios => Some(AmiBootMode::LegacyBios),
            crate::disk::BootMode::Hybrid => Some(AmiBootMode::UefiPreferred),
            crate::disk::BootMode::None => None,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VolumeType {
    Gp2,
    #[default]
    Gp3,
    Io1,
    Io2,
    Standard,
}

impl VolumeType {
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeType::Gp2 => "gp2",
            VolumeType::Gp3 => "gp3",
            VolumeType::Io1 => "io1",
            VolumeType::Io2 => "io2",
            VolumeType::Standard => "standard",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Imds {
    #[default]
    V2Required,
    V2Optional,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAmi {
    name: Option<String>,
    #[serde(default)]
    regions: Vec<String>,
    architecture: Option<Architecture>,
    boot_mode: Option<AmiBootMode>,
    volume_size: Option<u64>,
    volume_type: Option<VolumeType>,
    ena: Option<bool>,
    imds: Option<Imds>,
    tpm: Option<bool>,
    #[serde(default)]
    launch_permissions: Vec<String>,
    ssm_parameter: Option<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    endpoint: Option<String>,
    profile: Option<String>,
}

/// One `[[publish.ami]]`, checked. `None`s are decided from the image and
/// the disk when it is published.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AmiSettings {
    pub name: String,
    /// The first is where the snapshot is made; the others get copies.
    /// Empty: the region of the environment or profile.
    pub regions: Vec<String>,
    pub architecture: Option<Architecture>,
    pub boot_mode: Option<AmiBootMode>,
    /// GiB; `None`: the disk's size, rounded up.
    pub volume_size: Option<u64>,
    pub volume_type: VolumeType,
    pub ena: bool,
    pub imds: Imds,
    pub tpm: bool,
    /// Account ids, or `all` (public).
    pub launch_permissions: Vec<String>,
    pub ssm_parameter: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// One URL for every AWS service (an emulator, another partition).
    pub endpoint: Option<String>,
    pub profile: Option<String>,
}

/// The tag that says which kiln image an AMI or snapshot holds.
pub const DIGEST_TAG: &str = "kiln:digest";
/// `name:version` of that image.
pub const IMAGE_TAG: &str = "kiln:image";

/// Why a value is not a valid AMI name (3 to 128 of letters, digits and
/// `()[] ./-'@_`), `None` if it is.
pub fn invalid_name(name: &str) -> Option<String> {
    if !(3..=128).contains(&name.chars().count()) {
        return Some("an AMI name is 3 to 128 characters".to_owned());
    }
    name.chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "()[] ./-'@_".contains(*c)))
        .map(|c| {
            format!("`{c}` is not allowed in an AMI name (letters, digits and ()[] ./-'@_ are)")
        })
}

/// `eu-west-1`, `us-gov-west-1`, `cn-north-1`.
pub fn valid_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    parts.len() >= 3
        && parts[..parts.len() - 1]
            .iter()
            .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_lowercase()))
        && parts[parts.len() - 1].chars().all(|c| c.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty()
}

/// A 12-digit account id or `all`.
pub fn valid_account(account: &str) -> bool {
    account == "all" || (account.len() == 12 && account.chars().all(|c| c.is_ascii_digit()))
}

pub(crate) fn check(cx: &mut Checker<'_>, at: &KeyPath) -> Option<AmiSettings> {
    let raw: RawAmi = cx.shape(at, false)?;
    let invalid =
        |cx: &mut Checker<'_>, key: &str, what: &'static str, value: &str, reason: String| {
            cx.report(
                &at.key(key),
                DiagnosticKind::InvalidValue {
                    what,
                    value: value.to_owned(),
                    reason,
                },
            );
        };
    let default_name = cx
        .image
        .as_ref()
        .map(|(name, version)| format!("{}-{version}", name.replace('/', "-")))
        .unwrap_or_default();
    let name = match &raw.name {
        Some(name) => cx.text(&at.key("name"), name)?,
        None => default_name,
    };
    if let Some(reason) = invalid_name(&name) {
        if raw.name.is_some() {
            invalid(cx, "name", "AMI name", &name, reason);
        } else {
            cx.report_help(
                at,
                DiagnosticKind::Invalid(format!(
                    "the default AMI name `{name}` is invalid: {reason}"
                )),
                "set `name`".to_owned(),
            );
        }
    }
    let regions = cx.texts(&at.key("regions"), &raw.regions)?;
    for (index, region) in regions.iter().enumerate() {
        if !valid_region(region) {
            cx.report(
                &at.key("regions").index(index),
                DiagnosticKind::InvalidValue {
                    what: "AWS region",
                    value: region.clone(),
                    reason: "a region is like eu-west-1".to_owned(),
                },
            );
        } else if regions[..index].contains(region) {
            cx.report(
                &at.key("regions").index(index),
                DiagnosticKind::Invalid(format!("region {region} is listed twice")),
            );
        }
    }
    if let Some(size) = raw.volume_size
        && !(1..=16384).contains(&size)
    {
        invalid(
            cx,
            "volume_size",
            "volume size",
            &size.to_string(),
            "a root volume is 1 to 16384 GiB".to_owned(),
        );
    }
    let launch_permissions = cx.texts(&at.key("launch_permissions"), &raw.launch_permissions)?;
    for (index, account) in launch_permissions.iter().enumerate() {
        if !valid_account(account) {
            cx.report(
                &at.key("launch_permissions").index(index),
                DiagnosticKind::InvalidValue {
                    what: "account id",
                    value: account.clone(),
                    reason: "an AWS account id is 12 digits (or \"all\", for a public AMI)"
                        .to_owned(),
                },
            );
        }
    }
    let ssm_parameter = cx.optional_text(&at.key("ssm_parameter"), raw.ssm_parameter.as_deref())?;
    if let Some(parameter) = &ssm_parameter
        && (parameter.is_empty()
            || parameter.len() > 1011
            || !parameter
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c))
            || parameter
                .to_ascii_lowercase()
                .trim_start_matches('/')
                .starts_with("aws")
            || parameter
                .to_ascii_lowercase()
                .trim_start_matches('/')
                .starts_with("ssm"))
    {
        invalid(
            cx,
            "ssm_parameter",
            "SSM parameter name",
            parameter,
            "a parameter name is letters, digits and _.-/, and does not start with aws or ssm"
                .to_owned(),
        );
    }
    let mut tags = BTreeMap::new();
    for (key, value) in &raw.tags {
        let tag_at = at.key("tags").key(key);
        let value = cx.text(&tag_at, value)?;
        if key.is_empty()
            || key.len() > 128
            || value.len() > 256
            || key.to_ascii_lowercase().starts_with("aws:")
            || key.starts_with("kiln:")
        {
            cx.report(
                &tag_at,
                DiagnosticKind::Invalid(format!(
                    "tag `{key}`: a tag key is 1 to 128 characters and does not start with aws: or kiln: (kiln's own), a value at most 256"
                )),
            );
        }
        tags.insert(key.clone(), value);
    }
    let endpoint = cx.optional_text(&at.key("endpoint"), raw.endpoint.as_deref())?;
    if let Some(endpoint) = &endpoint
        && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
    {
        invalid(
            cx,
            "endpoint",
            "endpoint",
            endpoint,
            "an endpoint is an http:// or https:// URL".to_owned(),
        );
    }
    let tpm = raw.tpm.unwrap_or(false);
    if tpm && raw.boot_mode == Some(AmiBootMode::LegacyBios) {
        invalid(
            cx,
            "tpm",
            "tpm",
            "true",
            "NitroTPM needs UEFI: boot_mode = \"uefi\" or \"uefi-preferred\"".to_owned(),
        );
    }
    let profile = cx.optional_text(&at.key("profile"), raw.profile.as_deref())?;
    (!cx.has_errors()).then_some(AmiSettings {
        name,
        regions,
        architecture: raw.architecture,
        boot_mode: raw.boot_mode,
        volume_size: raw.volume_size,
        volume_type: raw.volume_type.unwrap_or_default(),
        ena: raw.ena.unwrap_or(true),
        imds: raw.imds.unwrap_or_default(),
        tpm,
        launch_permissions,
        ssm_parameter,
        tags,
        endpoint,
        profile,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_regions_and_accounts_are_checked_as_aws_checks_them() {
        assert_eq!(invalid_name("web-1.4.0"), None);
        assert!(invalid_name("ab").is_some());
        assert!(invalid_name("web+1").unwrap().contains('+'));
        assert!(valid_region("eu-west-1") && valid_region("us-gov-west-1"));
        assert!(!valid_region("eu-west") && !valid_region("EU-west-1") && !valid_region("eu--1"));
        assert!(valid_account("123456789012") && valid_account("all"));
        assert!(!valid_account("12345") && !valid_account("everyone"));
    }
}
