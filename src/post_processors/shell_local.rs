//! `shell-local` post-processor: a host command run after the image is
//! stored, with `KILN_IMAGE`, `KILN_OUTPUT` and `KILN_ROOT` set.

use crate::provisioners::shell::{ShellSpec, check_spec};
use crate::template::check::Checker;
use crate::template::keypath::KeyPath;

pub(crate) fn check(cx: &mut Checker<'_>, at: &KeyPath) -> Option<ShellSpec> {
    check_spec(cx, at, false)
}

/// Runs the command on the host with `KILN_IMAGE`, `KILN_OUTPUT` and a
/// read-only flattened root at `KILN_ROOT`.
pub(crate) fn run(cx: &mut super::run::PostContext<'_>, spec: &ShellSpec) -> Result<(), String> {
    use crate::sandbox::{self, Outcome, Overlay, Spec, Task};

    cx.flattened_root()?;
    let work = cx
        .work_dir()
        .map_err(|error| format!("cannot make a work folder: {error}"))?;
    let merged = work.join("merged");
    if !merged.exists() {
        std::fs::create_dir(&merged)
            .map_err(|error| format!("cannot make {}: {error}", merged.display()))?;
    }
    std::fs::create_dir_all(&cx.inputs.output)
        .map_err(|error| format!("cannot make {}: {error}", cx.inputs.output.display()))?;
    let template_dir = cx
        .inputs
        .template
        .path
        .parent()
        .unwrap_or(std::path::Path::new("/"))
        .to_owned();
    let build = format!("{}:{}", cx.inputs.entry.name, cx.inputs.entry.version);
    let redactor = cx.inputs.template.redactor();
    let timeout = spec.timeout.map(|timeout| timeout.as_std());
    for task in crate::pipeline::shell_tasks(spec, true, &template_dir) {
        let Task::Host { argv, mut env, cwd } = task else {
            continue;
        };
        env.push(("KILN_IMAGE".to_owned(), build.clone()));
        env.push((
            "KILN_OUTPUT".to_owned(),
            cx.inputs.output.display().to_string(),
        ));
        let sandbox_spec = Spec {
            base: work.clone(),
            overlay: Some(Overlay {
                lowers: vec!["root".to_owned()],
                upper: None,
                merged: "merged".to_owned(),
            }),
            task: Task::Host { argv, env, cwd },
        };
        let mut tail = Vec::new();
        let outcome = sandbox::run(
            &sandbox_spec,
            timeout,
            &std::sync::atomic::AtomicBool::new(false),
            &mut |line| {
                let line = redactor.redact(line).into_owned();
                tail.push(line.clone());
                cx.inputs
                    .reporter
                    .report(crate::pipeline::reporter::Event::StageOutput {
                        build: build.clone(),
                        stage: 0,
                        line,
                    });
            },
        )
        .map_err(|error| crate::pipeline::error_chain(&error))?;
        match outcome {
            Outcome::Exited(0) => {}
            Outcome::Exited(code) => {
                let last = tail
                    .iter()
                    .rev()
                    .take(5)
                    .rev()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" | ");
                return Err(format!("exited with code {code}: {last}"));
            }
            Outcome::TimedOut => return Err("timed out".to_owned()),
            Outcome::Cancelled => return Err("cancelled".to_owned()),
        }
    }
    Ok(())
}
