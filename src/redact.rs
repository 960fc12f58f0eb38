//! Keeping sensitive variable values out of everything kiln shows or stores.
//!
//! A [`Redactor`] knows the text of every sensitive value and replaces it
//! with `<sensitive>` wherever it appears: in messages, in `inspect`, and
//! (once builds run) in logs, history entries and manifests.

use std::borrow::Cow;

use crate::template::values::{VarValue, Variable};

pub const MASK: &str = "<sensitive>";

#[derive(Clone, Debug, Default)]
pub struct Redactor {
    /// Longest first, so a secret that contains another is masked whole.
    secrets: Vec<String>,
    /// Each sensitive variable's name and the texts of its value.
    variables: Vec<(String, Vec<String>)>,
}

impl Redactor {
    pub fn new<'v>(variables: impl IntoIterator<Item = &'v Variable>) -> Self {
        let variables: Vec<(String, Vec<String>)> = variables
            .into_iter()
            .filter(|variable| variable.sensitive)
            .map(|variable| {
                let texts = match &variable.value {
                    VarValue::List(items) => {
                        let mut texts = items.clone();
                        texts.push(variable.value.to_interpolated());
                        texts
                    }
                    other => vec![other.to_interpolated()],
                };
                let texts = texts.into_iter().filter(|text| !text.is_empty()).collect();
                (variable.name.clone(), texts)
            })
            .collect();
        let mut secrets: Vec<String> = variables
            .iter()
            .flat_map(|(_, texts)| texts.iter().cloned())
            .collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Self { secrets, variables }
    }

    /// The name of a sensitive variable whose value is in `text`, or, with
    /// `by_name`, that `text` names as `KILN_VAR_NAME`.
    pub fn sensitive_in(&self, text: &str, by_name: bool) -> Option<String> {
        self.variables.iter().find_map(|(name, texts)| {
            let used = texts.iter().any(|secret| text.contains(secret.as_str()))
                || (by_name && text.contains(&format!("KILN_VAR_{name}")));
            used.then(|| name.clone())
        })
    }

    /// The name of a sensitive variable whose value is in any string of a
    /// JSON tree, or, with `by_name`, that one of them names.
    pub fn sensitive_in_json(&self, value: &serde_json::Value, by_name: bool) -> Option<String> {
        use serde_json::Value;
        match value {
            Value::String(text) => self.sensitive_in(text, by_name),
            Value::Array(items) => items
                .iter()
                .find_map(|item| self.sensitive_in_json(item, by_name)),
            Value::Object(map) => map.iter().find_map(|(key, value)| {
                self.sensitive_in(key, by_name)
                    .or_else(|| self.sensitive_in_json(value, by_name))
            }),
            _ => None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    pub fn redact<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let mut text = Cow::Borrowed(text);
        for secret in &self.secrets {
            if text.contains(secret.as_str()) {
                text = Cow::Owned(text.replace(secret.as_str(), MASK));
            }
        }
        text
    }

    /// Redacts every string in a JSON tree, keys included.
    pub fn redact_json(&self, value: serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match value {
            Value::String(text) => Value::String(self.redact(&text).into_owned()),
            Value::Array(items) => Value::Array(
                items
                    .into_iter()
                    .map(|item| self.redact_json(item))
                    .collect(),
            ),
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(key, value)| (self.redact(&key).into_owned(), self.redact_json(value)))
                    .collect(),
            ),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::template::values::{ValueOrigin, VariableType};

    #[test]
    fn masks_every_occurrence_longest_first() {
        let mut variables = BTreeMap::new();
        for (name, value, sensitive) in [
            ("token", "abc123", true),
            ("short", "abc", true),
            ("public", "xyz", false),
        ] {
            variables.insert(
                name.to_owned(),
                Variable {
                    name: name.to_owned(),
                    ty: VariableType::String,
                    value: VarValue::String(value.to_owned()),
                    sensitive,
                    description: None,
                    origin: ValueOrigin::Default,
                },
            );
        }
        let redactor = Redactor::new(variables.values());
        assert_eq!(
            redactor.redact("t=abc123 s=abc p=xyz"),
            "t=<sensitive> s=<sensitive> p=xyz"
        );
        let json = redactor.redact_json(serde_json::json!({"a": ["abc123"], "abc": 1}));
        assert_eq!(
            json,
            serde_json::json!({"a": ["<sensitive>"], "<sensitive>": 1})
        );
    }
}
