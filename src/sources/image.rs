//! `image`: an image built before, from the store or a registry, as the
//! base (a golden image, then an application image on top of it).

use serde::{Deserialize, Serialize};

use crate::reference::ImageRef;
use crate::template::check::Checker;
use crate::template::keypath::KeyPath;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImageSource {
    #[serde(rename = "ref")]
    reference: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageSource {
    #[serde(rename = "ref")]
    pub reference: ImageRef,
}

impl ImageSource {
    pub fn summary(&self) -> String {
        self.reference.to_string()
    }
}

pub(crate) fn check(cx: &mut Checker<'_>, at: &KeyPath) -> Option<ImageSource> {
    let raw: RawImageSource = cx.shape(at, true)?;
    let reference = cx.parsed(&at.key("ref"), &raw.reference, "image reference")?;
    Some(ImageSource { reference })
}
