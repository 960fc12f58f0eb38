//! Variables: declared in `[variables.NAME]`, given values by (later wins)
//! the default, `KILN_VAR_NAME`, `--var-file FILE` and `--var NAME=VALUE`.
//!
//! Every value is checked against the declared type here, once; what
//! follows sees only typed [`VarValue`]s. Sensitive values are never put in
//! an error message: the messages name the variable, not its value.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use toml_edit::Value;

use super::check::Checker;
use super::error::{Diagnostic, DiagnosticKind, Origin, SourceFile, closest};
use super::interpolate::Scope;
use super::keypath::{self, KeyPath};

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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VariableType {
    String,
    Number,
    Bool,
    List,
}

impl VariableType {
    fn noun(self) -> &'static str {
        match self {
            VariableType::String => "string",
            VariableType::Number => "number",
            VariableType::Bool => "bool",
            VariableType::List => "list of strings",
        }
    }
}

/// A typed variable value. Lists hold strings (numbers are written as text).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum VarValue {
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    List(Vec<String>),
}

impl VarValue {
    /// Parses text from the environment, `--var` or a string default.
    fn from_text(ty: VariableType, text: &str) -> Result<Self, String> {
        match ty {
            VariableType::String => Ok(VarValue::String(text.to_owned())),
            VariableType::Number => {
                parse_number(text.trim()).ok_or_else(|| "the value is not a number".to_owned())
            }
            VariableType::Bool => match text.trim() {
                "true" => Ok(VarValue::Bool(true)),
                "false" => Ok(VarValue::Bool(false)),
                _ => Err("the value is neither `true` nor `false`".to_owned()),
            },
            VariableType::List => match text.trim().parse::<Value>() {
                Ok(Value::Array(array)) => list_items(array.iter()),
                _ => Err("the value is not a list like [\"a\", \"b\"]".to_owned()),
            },
        }
    }

    /// Converts a TOML value from a default or a var-file.
    fn from_toml(ty: VariableType, value: &Value) -> Result<Self, String> {
        match (ty, value) {
            (_, Value::String(text)) => Self::from_text(ty, text.value()),
            (VariableType::Number, Value::Integer(number)) => {
                Ok(VarValue::Number((*number.value()).into()))
            }
            (VariableType::Number, Value::Float(number)) => {
                serde_json::Number::from_f64(*number.value())
                    .map(VarValue::Number)
                    .ok_or_else(|| "the value is not a finite number".to_owned())
            }
            (VariableType::Bool, Value::Boolean(flag)) => Ok(VarValue::Bool(*flag.value())),
            (VariableType::List, Value::Array(array)) => list_items(array.iter()),
            (_, other) => Err(format!("got {}", other.type_name())),
        }
    }

    fn inferred_type(value: &Value) -> VariableType {
        match value {
            Value::Integer(_) | Value::Float(_) => VariableType::Number,
            Value::Boolean(_) => VariableType::Bool,
            Value::Array(_) => VariableType::List,
            _ => VariableType::String,
        }
    }
}

fn parse_number(text: &str) -> Option<VarValue> {
    if let Ok(integer) = text.parse::<i64>() {
        return Some(VarValue::Number(integer.into()));
    }
    let float = text.parse::<f64>().ok()?;
    serde_json::Number::from_f64(float).map(VarValue::Number)
}

fn list_items<'a>(items: impl Iterator<Item = &'a Value>) -> Result<VarValue, String> {
    items
        .map(|item| match item {
            Value::String(text) => Ok(text.value().clone()),
            Value::Integer(number) => Ok(number.value().to_string()),
            Value::Float(number) => Ok(number.value().to_string()),
            other => Err(format!(
                "a list holds strings or numbers, found a {}",
                other.type_name()
            )),
        })
        .collect::<Result<_, _>>()
        .map(VarValue::List)
}

/// Where a variable's value came from, for `inspect`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "from", content = "at")]
pub enum ValueOrigin {
    Default,
    Environment,
    VarFile(PathBuf),
    Flag,
}

/// A declared variable with its resolved value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Variable {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: VariableType,
    pub value: VarValue,
    pub sensitive: bool,
    pub description: Option<String>,
    pub origin: ValueOrigin,
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
                        allow_env: true,
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

fn apply_var_file(cx: &mut Checker<'_>, path: &PathBuf, declared: &mut BTreeMap<String, Declared>) {
    let text = match std::fs::read_to_string(path) {
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
    let file = Arc::new(SourceFile {
        path: path.clone(),
        text: text.clone(),
    });
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
            Ok(parsed) => variable.value = Some((parsed, ValueOrigin::VarFile(path.clone()))),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_values_parse_by_type() {
        assert_eq!(
            VarValue::from_text(VariableType::Number, "42"),
            Ok(VarValue::Number(42.into()))
        );
        assert_eq!(
            VarValue::from_text(VariableType::List, r#"["a", 2]"#),
            Ok(VarValue::List(vec!["a".into(), "2".into()]))
        );
        assert_eq!(
            VarValue::from_text(VariableType::Bool, "true"),
            Ok(VarValue::Bool(true))
        );
        let secret_error = VarValue::from_text(VariableType::Number, "hunter2").unwrap_err();
        assert!(
            !secret_error.contains("hunter2"),
            "errors must not echo values: {secret_error}"
        );
        assert!(VarValue::from_text(VariableType::List, "a,b").is_err());
    }
}
