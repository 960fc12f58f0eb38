//! Variables: declared in `[variables.NAME]`, given values by (later wins)
//! the default, `KILN_VAR_NAME`, `--var-file FILE` and `--var NAME=VALUE`.
//!
//! Every value is checked against the declared type here, once; what
//! follows sees only typed [`VarValue`]s. Sensitive values are never put in
//! an error message: the messages name the variable, not its value.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use toml_edit::Value;

use super::check::Checker;
use super::error::{Diagnostic, DiagnosticKind, Origin, SourceFile, closest};
use super::interpolate::{Scope, Within};
use super::keypath::{self, KeyPath};
pub use super::values::{ValueOrigin, VarValue, Variable, VariableType};

/// Values for variables from outside the template, in the order given.
#[derive(Clone, Debug, Default)]
pub struct VarInputs {
    /// `--var-file` paths.
    pub files: Vec<PathBuf>,
    /// `--var NAME=VALUE` pairs.
    pub flags: Vec<(String, String)>,
}

impl VarInputs {
    /// Splits a `NAME=VALUE` flag; the value may contain `=`.
    pub fn parse_flag(flag: &str) -> Result<(String, String), String> {
        match flag.split_once('=') {
            Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
            _ => Err(format!("expected NAME=VALUE, got `{flag}`")),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVariable {
    #[serde(rename = "type")]
    ty: Option<VariableType>,
    #[allow(dead_code, reason = "read from the spanned document, to keep its type")]
    default: Option<serde::de::IgnoredAny>,
    description: Option<String>,
    #[serde(default)]
    sensitive: bool,
}

struct Declared {
    ty: VariableType,
    /// A default was given but is wrong: already reported, so "no value" is not.
    default_invalid: bool,
    value: Option<(VarValue, ValueOrigin)>,
    sensitive: bool,
    description: Option<String>,
}

fn valid_variable_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Resolves every declared variable from all value sources, reporting
/// problems into `cx`. Variables that could not be resolved are left out,
/// and named in `cx.unresolved`, so their uses add no second error.
pub(crate) fn resolve(cx: &mut Checker<'_>, inputs: &VarInputs) -> BTreeMap<String, Variable> {
    let mut declared = BTreeMap::new();
    let section = KeyPath::root().key("variables");
    let names: Vec<String> = match cx.document().get("variables") {
        None => Vec::new(),
        Some(item) if item.is_table_like() => item
            .as_table_like()
            .map(|table| table.iter().map(|(name, _)| name.to_owned()).collect())
            .unwrap_or_default(),
        Some(_) => {
            cx.report(
                &section,
                DiagnosticKind::WrongType(
                    "`variables` must be a table of [variables.NAME] tables".into(),
                ),
            );
            Vec::new()
        }
    };
    for name in names {
        let at = section.key(&name);
        if !valid_variable_name(&name) {
            cx.report_key(&at, DiagnosticKind::Invalid(format!(
                "invalid variable name `{name}`: use letters, digits and `_`, not starting with a digit"
            )));
            continue;
        }
        let Some(raw) = cx.shape::<RawVariable>(&at, false) else {
            continue;
        };
        let default = cx.value_at(&at.key("default")).cloned();
        let ty = raw.ty.unwrap_or_else(|| {
            default
                .as_ref()
                .map_or(VariableType::String, VarValue::inferred_type)
        });
        let mut value = None;
        let has_default = default.is_some();
        if let Some(default) = default {
            let default = match default {
                Value::String(text) => {
                    let env_scope = Scope {
                        variables: &BTreeMap::new(),
                        unresolved: &BTreeSet::new(),
                        image: None,
                        within: Within::VariableDefault,
                    };
                    match env_scope.interpolate(text.value()) {
                        Ok(text) => Some(Value::from(text)),
                        Err(kind) => {
                            cx.report(&at.key("default"), kind);
                            None
                        }
                    }
                }
                other => Some(other),
            };
            if let Some(default) = default {
                match VarValue::from_toml(ty, &default) {
                    Ok(parsed) => value = Some((parsed, ValueOrigin::Default)),
                    Err(reason) => cx.report(&at.key("default"), type_error(&name, ty, reason)),
                }
            }
        }
        declared.insert(
            name,
            Declared {
                ty,
                default_invalid: has_default && value.is_none(),
                value,
                sensitive: raw.sensitive,
                description: raw.description,
            },
        );
    }

    for (name, variable) in &mut declared {
        let env_name = format!("KILN_VAR_{name}");
        if let Ok(text) = std::env::var(&env_name) {
            match VarValue::from_text(variable.ty, &text) {
                Ok(parsed) => variable.value = Some((parsed, ValueOrigin::Environment)),
                Err(reason) => cx.push(Diagnostic {
                    origin: Origin::Environment(env_name),
                    key: KeyPath::root(),
                    kind: type_error(name, variable.ty, reason),
                    help: None,
                }),
            }
        }
    }

    for path in &inputs.files {
        apply_var_file(cx, path, &mut declared);
    }

    for (name, text) in &inputs.flags {
        let origin = Origin::Flag(format!("--var {name}=…"));
        match declared.get_mut(name) {
            None => cx.push(Diagnostic {
                origin,
                key: KeyPath::root(),
                kind: DiagnosticKind::UndeclaredVariable(name.clone()),
                help: Some(undeclared_help(name, &declared)),
            }),
            Some(variable) => match VarValue::from_text(variable.ty, text) {
                Ok(parsed) => variable.value = Some((parsed, ValueOrigin::Flag)),
                Err(reason) => cx.push(Diagnostic {
                    origin,
                    key: KeyPath::root(),
                    kind: type_error(name, variable.ty, reason),
                    help: None,
                }),
            },
        }
    }

    let mut resolved = BTreeMap::new();
    for (name, variable) in declared {
        let Some((value, origin)) = variable.value else {
            cx.unresolved.insert(name.clone());
            if variable.default_invalid {
                continue;
            }
            cx.report_key_help(
                &section.key(&name),
                DiagnosticKind::VariableWithoutValue(name.clone()),
                format!("give it a default, or set it with --var {name}=VALUE, KILN_VAR_{name} or --var-file"),
            );
            continue;
        };
        resolved.insert(
            name.clone(),
            Variable {
                name,
                ty: variable.ty,
                value,
                sensitive: variable.sensitive,
                description: variable.description,
                origin,
            },
        );
    }
    resolved
}

fn type_error(name: &str, ty: VariableType, reason: String) -> DiagnosticKind {
    DiagnosticKind::VariableType {
        name: name.to_owned(),
        expected: ty.noun(),
        reason,
    }
}

fn undeclared_help(name: &str, declared: &BTreeMap<String, Declared>) -> String {
    match closest(name, declared.keys().map(String::as_str)) {
        Some(near) => format!("did you mean `{near}`?"),
        None => format!("declare it in the template with a [variables.{name}] table"),
    }
}

fn apply_var_file(cx: &mut Checker<'_>, path: &Path, declared: &mut BTreeMap<String, Declared>) {
    let text = match super::read::read_text(path) {
        Ok(text) => text,
        Err(error) => {
            cx.push(Diagnostic {
                origin: Origin::Flag(format!("--var-file {}", path.display())),
                key: KeyPath::root(),
                kind: DiagnosticKind::Invalid(format!("cannot read the var-file: {error}")),
                help: None,
            });
            return;
        }
    };
    let file = Arc::new(SourceFile::new(path.to_owned(), text.clone()));
    let at = |span| Origin::File {
        file: file.clone(),
        span,
    };
    let document = match toml_edit::Document::parse(text) {
        Ok(document) => document,
        Err(error) => {
            cx.push(Diagnostic {
                origin: at(error.span()),
                key: KeyPath::root(),
                kind: DiagnosticKind::Syntax(error.message().to_owned()),
                help: None,
            });
            return;
        }
    };
    let root = document.as_table();
    for (name, item) in root.iter() {
        let key = KeyPath::root().key(name);
        let Some(variable) = declared.get_mut(name) else {
            cx.push(Diagnostic {
                origin: at(keypath::key_span(root, &key)),
                key,
                kind: DiagnosticKind::UndeclaredVariable(name.to_owned()),
                help: Some(undeclared_help(name, declared)),
            });
            continue;
        };
        let parsed = match item.as_value() {
            Some(value) => VarValue::from_toml(variable.ty, value),
            None => Err("got a table".to_owned()),
        };
        match parsed {
            Ok(parsed) => variable.value = Some((parsed, ValueOrigin::VarFile(path.to_owned()))),
            Err(reason) => {
                // The line of a sensitive value is not shown: the key names it.
                let span = if variable.sensitive {
                    None
                } else {
                    keypath::value_span(root, &key)
                };
                cx.push(Diagnostic {
                    origin: at(span),
                    key,
                    kind: type_error(name, variable.ty, reason),
                    help: None,
                });
            }
        }
    }
}
