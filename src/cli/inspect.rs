//! `kiln inspect`: the template as kiln will run it, with every variable
//! resolved and sensitive values shown as `<sensitive>`.

use std::fmt::Write as _;
use std::path::Path;

use super::{Exit, diagnostics};
use kiln::provisioners::Provisioner;
use kiln::template::variables::VarValue;
use kiln::template::{self, Template, variables::VarInputs};

pub fn run(path: &Path, inputs: &VarInputs, json: bool) -> Exit {
    let template = match template::load(path, inputs) {
        Ok(template) => template,
        Err(error) => {
            diagnostics::print_template_error(&error);
            return Exit::Usage;
        }
    };
    let keys = stage_keys(&template);
    if json {
        let mut json = template.to_redacted_json();
        if let (serde_json::Value::Object(map), Ok(keys)) = (&mut json, &keys) {
            let keys = keys
                .iter()
                .map(|key| serde_json::Value::String(key.key.to_string()))
                .collect();
            map.insert("stage_keys".to_owned(), serde_json::Value::Array(keys));
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&json).expect("JSON values always serialize")
        );
    } else {
        print!(
            "{}",
            template.redactor().redact(&describe(&template, &keys))
        );
    }
    Exit::Success
}

fn quoted(value: &VarValue) -> String {
    match value {
        VarValue::String(text) => format!("{text:?}"),
        VarValue::List(items) => format!("{items:?}"),
        other => other.to_interpolated(),
    }
}

/// The plain-text view; the caller redacts it as a whole.
/// The stage keys a build would use now; an `image` base is looked up in
/// the store, if it is there.
fn stage_keys(template: &Template) -> Result<Vec<kiln::cache::StageKey>, String> {
    let epoch = super::build::source_date_epoch()?;
    let base = match &template.source {
        kiln::sources::Source::Image(image) => match &image.reference {
            kiln::reference::ImageRef::Store(reference) => {
                let store = kiln::kiln_home().join("store");
                let found = store
                    .join("index.json")
                    .exists()
                    .then(|| {
                        kiln::store::Store::open(&store)
                            .and_then(|store| store.resolve(reference))
                            .ok()
                    })
                    .flatten();
                match found {
                    Some(entry) => Some(entry.manifest.digest),
                    None => return Err(format!("the base image {reference} is not in the store")),
                }
            }
            kiln::reference::ImageRef::Remote(reference) => {
                return Err(format!("the base image {reference} is on a registry"));
            }
        },
        _ => None,
    };
    kiln::cache::key::stage_keys(template, epoch, base.as_ref())
        .map_err(|error| super::diagnostics::error_chain(&error))
}

fn describe(template: &Template, keys: &Result<Vec<kiln::cache::StageKey>, String>) -> String {
    let mut out = String::new();
    let image = &template.image;
    let _ = writeln!(out, "template   {}", template.path.display());
    let _ = writeln!(out, "digest     {}", template.digest);
    let _ = writeln!(out, "image      {}:{}", image.name, image.version);
    if let Some(description) = &image.description {
        let _ = writeln!(out, "           {description}");
    }
    for (key, value) in &image.labels {
        let _ = writeln!(out, "label      {key} = {value}");
    }
    for (field, value) in [
        ("env", (!image.env.is_empty()).then(|| image.env.join(" "))),
        (
            "entrypoint",
            image.entrypoint.as_ref().map(|args| format!("{args:?}")),
        ),
        ("cmd", image.cmd.as_ref().map(|args| format!("{args:?}"))),
        ("workdir", image.workdir.clone()),
        ("user", image.user.clone()),
    ] {
        if let Some(value) = value {
            let _ = writeln!(out, "{field:<10} {value}");
        }
    }
    if !template.variables.is_empty() {
        let _ = writeln!(out, "\nvariables");
        for variable in &template.variables {
            let value = if variable.sensitive {
                kiln::redact::MASK.to_owned()
            } else {
                quoted(&variable.value)
            };
            let origin = match &variable.origin {
                template::variables::ValueOrigin::Default => "default".to_owned(),
                template::variables::ValueOrigin::Environment => {
                    format!("env KILN_VAR_{}", variable.name)
                }
                template::variables::ValueOrigin::VarFile(path) => {
                    format!("var-file {}", path.display())
                }
                template::variables::ValueOrigin::Flag => "--var".to_owned(),
            };
            let _ = write!(out, "  {} = {value}  ({origin})", variable.name);
            if let Some(description) = &variable.description {
                let _ = write!(out, "  {description}");
            }
            out.push('\n');
        }
    }
    let _ = writeln!(out, "\nstages");
    let key_of = |stage: usize| match keys {
        Ok(keys) => format!("       key {}", keys[stage].key),
        Err(reason) => format!("       key unknown: {reason}"),
    };
    let _ = writeln!(
        out,
        "  0  source {:<12} {}",
        template.source.kind(),
        template.source.summary()
    );
    let _ = writeln!(out, "{}", key_of(0));
    for (index, provisioner) in template.provisioners.iter().enumerate() {
        let cache = if provisioner.cache() {
            ""
        } else {
            "  (cache = false)"
        };
        let _ = writeln!(
            out,
            "  {:<2} {:<19} {}{cache}",
            index + 1,
            provisioner.kind(),
            provisioner.summary()
        );
        if let Provisioner::Shell(spec) | Provisioner::ShellLocal(spec) = provisioner
            && let kiln::provisioners::shell::ShellBody::Inline(commands) = &spec.body
            && commands.len() > 1
        {
            for command in commands {
                let _ = writeln!(out, "       $ {command}");
            }
        }
        let _ = writeln!(out, "{}", key_of(index + 1));
    }
    if !template.tests.is_empty() {
        let _ = writeln!(out, "\ntests");
        for test in &template.tests {
            let _ = writeln!(out, "  {}", test.name);
        }
    }
    if !template.post_processors.is_empty() {
        let _ = writeln!(out, "\npost-processors");
        for post_processor in &template.post_processors {
            let _ = writeln!(
                out,
                "  {:<12} {}",
                post_processor.kind(),
                post_processor.summary()
            );
        }
    }
    let publish = &template.publish;
    if !publish.channels.is_empty() || !publish.remote.is_empty() {
        let _ = writeln!(out, "\npublish");
        for channel in &publish.channels {
            let _ = writeln!(out, "  channel    {channel}");
        }
        for remote in &publish.remote {
            let _ = writeln!(out, "  remote     {remote}:{}", image.version);
        }
    }
    out
}
