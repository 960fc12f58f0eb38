//! `shell-local` post-processor: a host command run after the image is
//! stored, from the template's folder, with `KILN_IMAGE`, `KILN_OUTPUT`
//! and a read-only flattened root at `KILN_ROOT`.

use super::context::PostContext;
use super::error::PostError;
use crate::io_error::IoError;
use crate::provisioners::shell::{Place, ShellSpec, ShellTable, check_spec};
use crate::sandbox::{Overlay, Spec};
use crate::stage::OutputOf;
use crate::template::check::Checker;
use crate::template::keypath::KeyPath;

pub(crate) fn check(cx: &mut Checker<'_>, at: &KeyPath) -> Option<ShellSpec> {
    check_spec(cx, at, ShellTable::PostProcessor)
}

pub(crate) fn run(
    cx: &mut PostContext<'_>,
    spec: &ShellSpec,
    index: usize,
) -> Result<(), PostError> {
    cx.flattened_root()?;
    let work = cx.work_dir()?;
    let merged = work.join("merged");
    if !merged.exists() {
        std::fs::create_dir(&merged).map_err(IoError::at("create", &merged))?;
    }
    std::fs::create_dir_all(cx.output).map_err(IoError::at("create", cx.output))?;
    let mut env = cx.variables.to_vec();
    env.push((
        "KILN_IMAGE".to_owned(),
        format!("{}:{}", cx.image.name, cx.image.version),
    ));
    env.push(("KILN_OUTPUT".to_owned(), cx.output.display().to_string()));
    let timeout = spec.timeout.map(|timeout| timeout.as_std());
    let place = Place::OnHost {
        cwd: cx.template_dir,
    };
    for task in spec.tasks(place, &env) {
        let sandbox_spec = Spec {
            base: work.clone(),
            overlay: Some(Overlay {
                lowers: vec!["root".to_owned()],
                upper: None,
                merged: "merged".to_owned(),
            }),
            task,
        };
        cx.runner
            .run(&sandbox_spec, timeout, OutputOf::PostProcessor(index))?;
    }
    Ok(())
}
