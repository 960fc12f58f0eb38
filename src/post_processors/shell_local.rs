//! `shell-local` post-processor: a host command run after the image is
//! stored, with `KILN_IMAGE`, `KILN_OUTPUT` and `KILN_ROOT` set.

use crate::provisioners::shell::{ShellSpec, check_spec};
use crate::template::check::Checker;
use crate::template::keypath::KeyPath;

pub(crate) fn check(cx: &mut Checker<'_>, at: &KeyPath) -> Option<ShellSpec> {
    check_spec(cx, at, false)
}
