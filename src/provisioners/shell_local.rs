//! `shell-local`: commands run on the host, with `KILN_ROOT` set to the
//! image root. Same keys as `shell`.

use super::shell::{ShellSpec, check_spec};
use crate::template::check::Checker;
use crate::template::keypath::KeyPath;

pub(crate) fn check(cx: &mut Checker<'_>, at: &KeyPath) -> Option<ShellSpec> {
    check_spec(cx, at, true)
}
