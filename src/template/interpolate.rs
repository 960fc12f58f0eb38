//! `${…}` references inside template strings.
//!
//! `${var.NAME}`, `${image.name}` and `${image.version}` everywhere but the
//! `[image]` name and version themselves; `${env.NAME}` only inside variable
//! defaults, which cannot refer to other variables; `$${` is a literal `${`.
//! A list variable inside a string is joined with spaces, as a shell would
//! want its words. A sensitive variable cannot go into the image config:
//! whatever is there ships with the image.

use std::collections::{BTreeMap, BTreeSet};

use super::error::{DiagnosticKind, closest};
use super::values::Variable;

/// What a string may refer to where it stands.
pub struct Scope<'a> {
    pub variables: &'a BTreeMap<String, Variable>,
    /// Declared variables without a (valid) value, already reported where
    /// they are declared: a use of one is not an undeclared variable.
    pub unresolved: &'a BTreeSet<String>,
    /// `(name, version)` once `[image]` is resolved; `None` inside `[image]`.
    pub image: Option<(&'a str, &'a str)>,
    pub within: Within,
}

/// Where the string being interpolated stands, for what it may refer to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Within {
    /// A variable's default: it may read the host environment, and no other
    /// variable (defaults are resolved before any variable has a value).
    VariableDefault,
    /// An `[image]` field stored in the image config: no sensitive variable.
    ImageConfig,
    /// Anywhere else: stages, tests, post-processors, publish targets.
    Stage,
}

impl Scope<'_> {
    /// Replaces every reference in `text`, or says what is wrong with the first bad one.
    pub fn interpolate(&self, text: &str) -> Result<String, DiagnosticKind> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(dollar) = rest.find('$') {
            out.push_str(&rest[..dollar]);
            rest = &rest[dollar..];
            if let Some(after) = rest.strip_prefix("$${") {
                out.push_str("${");
                rest = after;
            } else if let Some(after) = rest.strip_prefix("${") {
                let Some(close) = after.find('}') else {
                    return Err(DiagnosticKind::Interpolation(
                        "unterminated `${` (write `$${` for a literal `${`)".to_owned(),
                    ));
                };
                out.push_str(&self.resolve(after[..close].trim())?);
                rest = &after[close + 1..];
            } else {
                out.push('$');
                rest = &rest[1..];
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    fn resolve(&self, expression: &str) -> Result<String, DiagnosticKind> {
        let Some((namespace, name)) = expression.split_once('.') else {
            return Err(unknown_reference(expression));
        };
        match namespace {
            "var" if self.within == Within::VariableDefault => {
                Err(DiagnosticKind::Interpolation(format!(
                    "a default cannot refer to `${{var.{name}}}`: defaults are read before any variable has a value (write `$${{` for a literal `${{`)"
                )))
            }
            "var" => match self.variables.get(name) {
                Some(variable) if variable.sensitive && self.within == Within::ImageConfig => {
                    Err(DiagnosticKind::SensitiveInImage(name.to_owned()))
                }
                Some(variable) => Ok(variable.value.to_interpolated()),
                None if self.unresolved.contains(name) => {
                    Err(DiagnosticKind::VariableWithoutValue(name.to_owned()))
                }
                None => Err(DiagnosticKind::UndeclaredVariable(name.to_owned())),
            },
            "image" => match (self.image, name) {
                (None, "name" | "version") => Err(DiagnosticKind::Interpolation(format!(
                    "`${{image.{name}}}` cannot be used inside [image].name or [image].version"
                ))),
                (Some((image_name, _)), "name") => Ok(image_name.to_owned()),
                (Some((_, version)), "version") => Ok(version.to_owned()),
                _ => Err(unknown_reference(expression)),
            },
            "env" if self.within == Within::VariableDefault => {
                Ok(std::env::var(name).unwrap_or_default())
            }
            "env" => Err(DiagnosticKind::Interpolation(format!(
                "`${{env.{name}}}` is only allowed in variable defaults; declare a variable with default = \"${{env.{name}}}\""
            ))),
            _ => Err(unknown_reference(expression)),
        }
    }

    /// A hint for an undeclared variable: the nearest declared name, or the list.
    pub fn undeclared_help(&self, name: &str) -> String {
        match closest(name, self.variables.keys().map(String::as_str)) {
            Some(near) => format!("did you mean `{near}`?"),
            None if self.variables.is_empty() => {
                format!("declare it with a [variables.{name}] table")
            }
            None => format!(
                "declared variables: {}",
                self.variables
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

fn unknown_reference(expression: &str) -> DiagnosticKind {
    DiagnosticKind::Interpolation(format!(
        "unknown reference `${{{expression}}}`; expected ${{var.NAME}}, ${{image.name}} or ${{image.version}}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::values::{ValueOrigin, VarValue, VariableType};

    fn variables() -> BTreeMap<String, Variable> {
        let mut variables = BTreeMap::new();
        for (name, value) in [
            ("greeting", VarValue::String("hello".into())),
            (
                "packages",
                VarValue::List(vec!["nginx".into(), "curl".into()]),
            ),
            ("retries", VarValue::Number(3.into())),
        ] {
            variables.insert(
                name.to_owned(),
                Variable {
                    name: name.to_owned(),
                    ty: VariableType::String,
                    value,
                    sensitive: false,
                    description: None,
                    origin: ValueOrigin::Default,
                },
            );
        }
        variables
    }

    #[test]
    fn references_escapes_and_lists() {
        let variables = variables();
        let scope = Scope {
            variables: &variables,
            unresolved: &BTreeSet::new(),
            image: Some(("web", "1.0")),
            within: Within::Stage,
        };
        assert_eq!(
            scope
                .interpolate("echo '${var.greeting}' > /etc/motd")
                .unwrap(),
            "echo 'hello' > /etc/motd"
        );
        assert_eq!(
            scope
                .interpolate("apt-get install ${ var.packages }")
                .unwrap(),
            "apt-get install nginx curl"
        );
        assert_eq!(
            scope.interpolate("${image.name}:${image.version}").unwrap(),
            "web:1.0"
        );
        assert_eq!(
            scope.interpolate("$${var.greeting} costs $5").unwrap(),
            "${var.greeting} costs $5"
        );
        assert_eq!(scope.interpolate("n=${var.retries}").unwrap(), "n=3");
    }

    #[test]
    fn bad_references_say_what_is_wrong() {
        let variables = variables();
        let unresolved = BTreeSet::from(["unset".to_owned()]);
        let scope = Scope {
            variables: &variables,
            unresolved: &unresolved,
            image: None,
            within: Within::Stage,
        };
        let message = |text: &str| scope.interpolate(text).unwrap_err().to_string();
        assert_eq!(message("${var.greting}"), "undeclared variable `greting`");
        assert_eq!(message("${var.unset}"), "variable `unset` has no value");
        assert_eq!(scope.undeclared_help("greting"), "did you mean `greeting`?");
        assert!(message("${var.x").contains("unterminated"));
        assert!(message("${env.HOME}").contains("only allowed in variable defaults"));
        assert!(message("${image.name}").contains("cannot be used inside [image]"));
        assert!(message("${foo}").contains("unknown reference `${foo}`"));
    }
}
