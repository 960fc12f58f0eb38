//! `scratch`: an empty root, for images built entirely by provisioners.

use serde::Deserialize;

use crate::template::check::Checker;
use crate::template::keypath::KeyPath;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScratch {}

pub(crate) fn check(cx: &mut Checker<'_>, at: &KeyPath) -> Option<()> {
    cx.shape::<RawScratch>(at, true).map(|_| ())
}
