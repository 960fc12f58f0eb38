//! A plan as a person reads it (`kiln build --plan`, `kiln inspect`) and as
//! JSON (`--json`), both redacted: sensitive values show as `<sensitive>`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Value, json};

use super::{BuildPlan, PlannedStage};
use crate::reference::Digest;
use crate::template::check::relative;

fn digests(map: &BTreeMap<String, Digest>) -> Value {
    Value::Object(
        map.iter()
            .map(|(name, digest)| (name.clone(), Value::String(digest.to_string())))
            .collect(),
    )
}

fn stage_json(stage: &PlannedStage) -> Value {
    json!({
        "stage": stage.number,
        "kind": stage.kind,
        "summary": stage.summary,
        "cache": stage.cache,
        "shareable": stage.shareable(),
        "sensitive_variable": stage.sensitive,
        "key": stage.key.key,
        "parent": stage.key.parent,
        "settings": digests(&stage.key.settings),
        "files": digests(&stage.key.files),
    })
}

/// The plan as one JSON document.
pub fn plan_json(plan: &BuildPlan) -> Value {
    let template = &plan.template;
    let json = json!({
        "image": plan.reference,
        "template": template.path,
        "template_digest": template.digest,
        "epoch": plan.epoch,
        "base": plan.base.as_ref().map(|base| json!({
            "ref": base.reference.to_string(),
            "digest": base.digest,
        })),
        "stages": plan.stages.iter().map(stage_json).collect::<Vec<_>>(),
        "tests": plan.tests.iter().map(|test| json!({
            "name": test.name,
            "in": plan.template.tests[test.index].place,
            "settings": digests(&test.inputs.settings),
            "files": digests(&test.inputs.files),
        })).collect::<Vec<_>>(),
        "output": plan.output,
        "artifacts": plan.artifacts.iter().map(|artifact| json!({
            "post_processor": artifact.index,
            "kind": artifact.kind,
            "summary": artifact.summary,
            "path": artifact.path,
        })).collect::<Vec<_>>(),
        "channels": plan.channels,
        "remotes": plan.remotes.iter().map(|remote| format!("{remote}:{}", template.image.version)).collect::<Vec<_>>(),
        "amis": plan.amis,
        "shared_cache": {
            "from": template.cache.from,
            "to": template.cache.to,
        },
    });
    template.redactor().redact_json(json)
}

/// The plan as text, one section a paragraph.
pub fn plan_text(plan: &BuildPlan) -> String {
    let template = &plan.template;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "plan of {} from {}",
        plan.reference,
        template.path.display()
    );
    if let Some(base) = &plan.base {
        let _ = writeln!(out, "base       {} {}", base.reference, base.digest);
    }
    let total = plan.stages.len() - 1;
    let _ = writeln!(out, "\nstages");
    for stage in &plan.stages {
        let cache = match (&stage.sensitive, stage.cache, stage.share) {
            (_, false, _) => "  (cache = false)".to_owned(),
            (Some(variable), true, false) => {
                format!("  (not shared: uses sensitive variable {variable})")
            }
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "  {:<5} {:<12} {}{cache}",
            format!("{}/{total}", stage.number),
            stage.kind,
            stage.summary
        );
        if let super::Step::Provisioner(index) = stage.step
            && let crate::provisioners::Provisioner::Shell(spec)
            | crate::provisioners::Provisioner::ShellLocal(spec) = &template.provisioners[index]
            && let crate::provisioners::shell::ShellBody::Inline(commands) = &spec.body
            && commands.len() > 1
        {
            for command in commands {
                let _ = writeln!(out, "        $ {command}");
            }
        }
        let _ = writeln!(out, "       key {}", stage.key.key);
        let mut inputs: Vec<&str> = stage.key.settings.keys().map(String::as_str).collect();
        inputs.extend(stage.key.files.keys().map(String::as_str));
        if !inputs.is_empty() {
            let _ = writeln!(out, "       from {}", inputs.join(", "));
        }
    }
    if !plan.tests.is_empty() {
        let _ = writeln!(
            out,
            "\ntests (keyed by the image's digest and their settings)"
        );
        for test in &plan.tests {
            let place = match plan.template.tests[test.index].place {
                crate::image_test::TestPlace::Chroot => "",
                crate::image_test::TestPlace::Vm => " (in the machine)",
            };
            let _ = writeln!(out, "  {}{place}", test.name);
        }
    }
    if !plan.artifacts.is_empty() {
        let _ = writeln!(out, "\nartifacts, into {}", plan.output.display());
        for artifact in &plan.artifacts {
            let file = artifact.path.as_ref().map_or_else(
                || "(a host command)".to_owned(),
                |path| relative(path, &plan.output),
            );
            let _ = writeln!(
                out,
                "  {:<2} {:<12} {file}  {}",
                artifact.index, artifact.kind, artifact.summary
            );
        }
    }
    let shared = &template.cache;
    if !shared.from.is_empty() || shared.to.is_some() {
        let _ = writeln!(out, "\nshared cache (unless --cache-from, --cache-to)");
        for from in &shared.from {
            let _ = writeln!(out, "  from       {from}");
        }
        if let Some(to) = &shared.to {
            let _ = writeln!(out, "  to         {to}");
        }
    }
    if !plan.channels.is_empty() || !plan.remotes.is_empty() || !plan.amis.is_empty() {
        let _ = writeln!(out, "\npublish");
        for channel in &plan.channels {
            let _ = writeln!(out, "  channel    {channel}");
        }
        for remote in &plan.remotes {
            let _ = writeln!(out, "  remote     {remote}:{}", template.image.version);
        }
        for ami in &plan.amis {
            let regions = if ami.regions.is_empty() {
                "the environment's region".to_owned()
            } else {
                ami.regions.join(", ")
            };
            let _ = writeln!(out, "  ami        {} in {regions}", ami.name);
        }
    }
    template.redactor().redact(&out).into_owned()
}
