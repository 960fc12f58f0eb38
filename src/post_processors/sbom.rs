//! `sbom`: the image's software bill of materials, `NAME-VERSION.cdx.json`
//! (CycloneDX 1.6) or `NAME-VERSION.spdx.json` (SPDX 2.3), the document
//! the store keeps with the image.

use serde::{Deserialize, Serialize};

use super::context::PostContext;
use super::error::PostError;
use crate::artifact::Artifact;
use crate::sbom::{SbomFormat, Subject, sbom_of};
use crate::template::check::Checker;
use crate::template::keypath::KeyPath;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSbom {
    format: Option<SbomFormat>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SbomSettings {
    pub format: SbomFormat,
}

impl SbomSettings {
    pub fn summary(&self) -> String {
        match self.format {
            SbomFormat::Cyclonedx => "the image's packages as CycloneDX 1.6".to_owned(),
            SbomFormat::Spdx => "the image's packages as SPDX 2.3".to_owned(),
        }
    }
}

pub(crate) fn check(cx: &mut Checker<'_>, at: &KeyPath) -> Option<SbomSettings> {
    let raw: RawSbom = cx.shape(at, true)?;
    Some(SbomSettings {
        format: raw.format.unwrap_or_default(),
    })
}

pub(crate) fn run(
    cx: &mut PostContext<'_>,
    settings: &SbomSettings,
) -> Result<Artifact, PostError> {
    let subject = Subject {
        name: cx.image.name,
        version: cx.image.version,
        digest: cx.image.digest,
        epoch: cx.epoch,
    };
    let bytes = sbom_of(cx.store, cx.image.manifest, &subject, settings.format)?;
    let name = format!("{}.{}", cx.stem(), settings.format.extension());
    Ok(cx.write_artifact(&name, |mut out| {
        std::io::Write::write_all(&mut out, &bytes)?;
        Ok(out)
    })?)
}
