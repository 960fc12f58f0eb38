//! `checksum`: a `SHA256SUMS` file (as `sha256sum -c` reads it) of every
//! artifact written before it.

use serde::Deserialize;

use crate::template::check::Checker;
use crate::template::keypath::KeyPath;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChecksum {}

pub(crate) fn check(cx: &mut Checker<'_>, at: &KeyPath) -> Option<()> {
    cx.shape::<RawChecksum>(at, true).map(|_| ())
}
