//! `shell-local`: commands run on the host, from the template's folder,
//! with `KILN_ROOT` set to the mounted image root. Same keys as `shell`.
//! Nothing confines them: they are the template author's own commands on
//! the build host, as Packer's shell-local is.

use super::shell::{Place, ShellSpec, ShellTable, check_spec};
use crate::sandbox::Overlay;
use crate::stage::{StageContext, TaskError};
use crate::template::check::Checker;
use crate::template::keypath::KeyPath;

pub(crate) fn check(cx: &mut Checker<'_>, at: &KeyPath) -> Option<ShellSpec> {
    check_spec(cx, at, ShellTable::ShellLocal)
}

pub(crate) fn run(
    spec: &ShellSpec,
    cx: &StageContext<'_>,
    overlay: Overlay,
) -> Result<(), TaskError> {
    let cwd = cx.template_dir;
    spec.run(cx, overlay, Place::OnHost { cwd })
}
