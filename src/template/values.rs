//! Variable values: typed, with where each came from. What every pass
//! after variable resolution sees of a variable (interpolation, the
//! checker, redaction), apart from how values are resolved
//! (`variables.rs`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use toml_edit::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VariableType {
    String,
    Number,
    Bool,
    List,
}

impl VariableType {
    pub(crate) fn noun(self) -> &'static str {
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
    pub(crate) fn from_text(ty: VariableType, text: &str) -> Result<Self, String> {
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
    pub(crate) fn from_toml(ty: VariableType, value: &Value) -> Result<Self, String> {
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

    pub(crate) fn inferred_type(value: &Value) -> VariableType {
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

impl VarValue {
    /// The text a value becomes inside a string.
    pub fn to_interpolated(&self) -> String {
        match self {
            VarValue::String(text) => text.clone(),
            VarValue::Number(number) => number.to_string(),
            VarValue::Bool(flag) => flag.to_string(),
            VarValue::List(items) => items.join(" "),
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
