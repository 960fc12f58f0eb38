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
    if json {
        let json = template.to_redacted_json();
        println!(
            "{}",
            serde_json::to_string_pretty(&json).expect("JSON values always serialize")
        );
    } else {
        print!("{}", template.redactor().redact(&describe(&template)));
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
fn describe(template: &Template) -> String {
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
    let _ = writeln!(
        out,
        "  0  source {:<12} {}",
        template.source.kind(),
        template.source.summary()
    );
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
