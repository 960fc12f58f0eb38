//! `kiln inspect`: the template as kiln will run it, with every variable
//! resolved and sensitive values shown as `<sensitive>`, then its plan:
//! the same one `kiln build --plan` prints and `kiln build` runs.

use std::fmt::Write as _;
use std::path::Path;

use super::{Exit, diagnostics, diagnostics::error_chain};
use kiln::plan::{self, PlanOptions};
use kiln::template::variables::VarValue;
use kiln::template::{self, Template, variables::VarInputs};

pub fn run(path: &Path, inputs: &VarInputs, json: bool) -> Exit {
    let Some(template) = diagnostics::load_template(path, inputs) else {
        return Exit::Usage;
    };
    let planned = match super::build::source_date_epoch() {
        Ok(epoch) => {
            let home = kiln::kiln_home();
            let options = PlanOptions {
                home: &home,
                epoch,
                output: None,
                publish: true,
                remote: &kiln::remote::RemoteOptions {
                    home: home.clone(),
                    ..Default::default()
                },
            };
            plan::plan(template.clone(), &options).map_err(|error| error_chain(&error))
        }
        Err(message) => Err(message),
    };
    if json {
        let mut json = template.to_redacted_json();
        if let serde_json::Value::Object(map) = &mut json {
            match &planned {
                Ok(plan) => {
                    let keys = plan
                        .stages
                        .iter()
                        .map(|stage| serde_json::Value::String(stage.key.key.to_string()))
                        .collect();
                    map.insert("stage_keys".to_owned(), serde_json::Value::Array(keys));
                    map.insert("plan".to_owned(), plan::show::plan_json(plan));
                }
                Err(reason) => {
                    map.insert(
                        "plan_error".to_owned(),
                        serde_json::Value::String(template.redactor().redact(reason).into_owned()),
                    );
                }
            }
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&json).expect("JSON values always serialize")
        );
    } else {
        let mut text = describe(&template);
        match &planned {
            Ok(plan) => {
                text.push('\n');
                text.push_str(&plan::show::plan_text(plan));
            }
            Err(reason) => {
                text.push_str(&format!("\nno plan: {reason}\n"));
            }
        }
        print!("{}", template.redactor().redact(&text));
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

/// The template's image and variables as text; the caller redacts it.
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
    out
}
