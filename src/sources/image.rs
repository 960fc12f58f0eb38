//! `image`: an image built before, from the store or a registry, as the
//! base (a golden image, then an application image on top of it). Its
//! layers are reused as they are; its digest is the stage's key and is
//! recorded as the new image's parent.

use serde::{Deserialize, Serialize};

use crate::cache::key::KeyInputs;
use crate::reference::{Digest, ImageRef};
use crate::template::check::Checker;
use crate::template::keypath::KeyPath;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImageSource {
    #[serde(rename = "ref")]
    reference: String,
    verify_key: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageSource {
    #[serde(rename = "ref")]
    pub reference: ImageRef,
    /// A public key (PKIX PEM) the base must be signed with; relative to
    /// the template. Not part of the stage key: it checks the base, it
    /// does not change it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_key: Option<std::path::PathBuf>,
}

impl ImageSource {
    pub fn summary(&self) -> String {
        self.reference.to_string()
    }

    /// The base image's manifest digest stands for everything it holds:
    /// however the template names it (a stored version, a registry tag, a
    /// digest pin), the same base gives the same key.
    pub fn key_inputs(&self, inputs: &mut KeyInputs, base: Option<&Digest>) {
        match base {
            Some(base) => {
                inputs.file_digest("base image".to_owned(), base.clone());
            }
            None => {
                inputs.setting("ref", &self.reference);
            }
        }
    }
}

pub(crate) fn check(cx: &mut Checker<'_>, at: &KeyPath) -> Option<ImageSource> {
    let raw: RawImageSource = cx.shape(at, true)?;
    let reference = cx.parsed(&at.key("ref"), &raw.reference, "image reference");
    let verify_key = crate::template::check::optional(raw.verify_key.as_deref(), |key| {
        cx.host_path(
            &at.key("verify_key"),
            key,
            crate::template::check::HostPath::File,
        )
    });
    Some(ImageSource {
        reference: reference?,
        verify_key: verify_key?,
    })
}
