//! The helper every section uses to turn its wire struct into checked values.
//!
//! A [`Checker`] holds the spanned document, the resolved variables and the
//! diagnostics found so far. Its methods take the key path of the value they
//! check, interpolate, parse, and report problems without stopping, so one
//! `kiln validate` shows every problem it can.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use serde::de::{DeserializeOwned, IntoDeserializer};
use toml_edit::{Item, Table, Value};

use super::error::{Diagnostic, DiagnosticKind, Origin, SourceFile, closest};
use super::interpolate::{Scope, Within};
use super::keypath::{self, KeyPath, Segment};
use super::values::Variable;

/// What a host path given in a template must be.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum HostPath {
    File,
    Directory,
    FileOrDirectory,
    /// Checked later (a source read at build time, an output path).
    Unchecked,
}

/// The most problems one template reports: past it, a broken template (or a
/// generated one, thousands of lines long) would cost more to report than
/// to fix.
pub const MAX_DIAGNOSTICS: usize = 100;

/// Where in the file a problem is underlined; worked out only for the
/// problems kept.
enum SpanOf {
    Value,
    Key,
    Exact(Option<std::ops::Range<usize>>),
}

pub struct Checker<'a> {
    file: Arc<SourceFile>,
    document: &'a Table,
    dir: PathBuf,
    diagnostics: Vec<Diagnostic>,
    /// Problems found beyond [`MAX_DIAGNOSTICS`].
    omitted: usize,
    pub(crate) variables: BTreeMap<String, Variable>,
    /// Declared variables left without a value (already reported).
    pub(crate) unresolved: BTreeSet<String>,
    pub(crate) image: Option<(String, String)>,
    /// Where the strings being checked stand (the image config refuses
    /// sensitive variables).
    pub(crate) within: Within,
}

impl<'a> Checker<'a> {
    pub fn new(file: Arc<SourceFile>, document: &'a Table, dir: PathBuf) -> Self {
        Self {
            file,
            document,
            dir,
            diagnostics: Vec::new(),
            omitted: 0,
            variables: BTreeMap::new(),
            unresolved: BTreeSet::new(),
            image: None,
            within: Within::Stage,
        }
    }

    pub fn document(&self) -> &'a Table {
        self.document
    }

    /// The problems kept, and how many more were only counted.
    pub fn into_diagnostics(self) -> (Vec<Diagnostic>, usize) {
        (self.diagnostics, self.omitted)
    }

    pub fn has_errors(&self) -> bool {
        !self.diagnostics.is_empty()
    }

    /// Keeps a problem, unless [`MAX_DIAGNOSTICS`] are kept already: then
    /// it is only counted.
    pub fn push(&mut self, diagnostic: Diagnostic) {
        if self.is_full() {
            self.omitted += 1;
        } else {
            self.diagnostics.push(diagnostic);
        }
    }

    /// Whether further problems are only counted, so working out their
    /// help is wasted.
    pub fn is_full(&self) -> bool {
        self.diagnostics.len() >= MAX_DIAGNOSTICS
    }

    fn push_at(&mut self, at: &KeyPath, span: SpanOf, kind: DiagnosticKind, help: Option<String>) {
        if self.is_full() {
            self.omitted += 1;
            return;
        }
        let span = match span {
            SpanOf::Value => keypath::value_span(self.document, at),
            SpanOf::Key => keypath::key_span(self.document, at),
            SpanOf::Exact(span) => span,
        };
        self.push(Diagnostic {
            origin: Origin::File {
                file: self.file.clone(),
                span,
            },
            key: at.clone(),
            kind,
            help,
        });
    }

    /// A problem with the value at `at`.
    pub fn report(&mut self, at: &KeyPath, kind: DiagnosticKind) {
        self.push_at(at, SpanOf::Value, kind, None);
    }

    pub fn report_help(&mut self, at: &KeyPath, kind: DiagnosticKind, help: String) {
        self.push_at(at, SpanOf::Value, kind, Some(help));
    }

    /// A problem with the key at `at` itself (its name, or its presence).
    pub fn report_key(&mut self, at: &KeyPath, kind: DiagnosticKind) {
        self.push_at(at, SpanOf::Key, kind, None);
    }

    pub fn report_key_help(&mut self, at: &KeyPath, kind: DiagnosticKind, help: String) {
        self.push_at(at, SpanOf::Key, kind, Some(help));
    }

    /// The plain value at `at`, if there is one.
    pub fn value_at(&self, at: &KeyPath) -> Option<&'a Value> {
        keypath::value_at(self.document, at)
    }

    /// Deserializes the table at `at` into a wire struct, reporting unknown
    /// keys, missing keys and wrong types with their places. With
    /// `skip_type`, the `type` key (already read by [`Checker::kind`]) is ignored.
    pub fn shape<T: DeserializeOwned>(&mut self, at: &KeyPath, skip_type: bool) -> Option<T> {
        let Some(mut value) = keypath::table_at(self.document, at) else {
            self.report(
                at,
                DiagnosticKind::WrongType(format!("`{}` must be a table", last_key(at))),
            );
            return None;
        };
        if skip_type && let Value::InlineTable(table) = &mut value {
            table.remove("type");
        }
        match T::deserialize(value.into_deserializer()) {
            Ok(shaped) => Some(shaped),
            Err(error) => {
                self.report_serde(at, &error);
                None
            }
        }
    }

    fn report_serde(&mut self, at: &KeyPath, error: &toml_edit::de::Error) {
        let message = error.message();
        if let Some(key) = between(message, "unknown field `", "`") {
            let allowed: Vec<String> = message
                .split_once("expected ")
                .map(|(_, list)| {
                    list.split('`')
                        .skip(1)
                        .step_by(2)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            let help = match closest(key, allowed.iter().map(String::as_str)) {
                Some(near) => format!(
                    "did you mean `{near}`? allowed keys: {}",
                    allowed.join(", ")
                ),
                None if allowed.is_empty() => "this table takes no keys".to_owned(),
                None => format!("allowed keys: {}", allowed.join(", ")),
            };
            let key_path = at.key(key);
            self.report_key_help(
                &key_path,
                DiagnosticKind::UnknownKey {
                    key: key.to_owned(),
                    allowed,
                },
                help,
            );
        } else if let Some(key) = between(message, "missing field `", "`") {
            self.push_at(
                at,
                SpanOf::Value,
                DiagnosticKind::MissingKey(key.to_owned()),
                None,
            );
        } else if let Some(variant) = between(message, "unknown variant `", "`") {
            let span = error.span();
            let key_path = span.as_ref().map_or_else(
                || at.clone(),
                |span| keypath::path_at(self.document, at, span),
            );
            let expected = message.split_once("expected ").map_or("", |(_, list)| list);
            self.push_at(
                &key_path,
                SpanOf::Exact(span),
                DiagnosticKind::InvalidValue {
                    what: "value",
                    value: variant.to_owned(),
                    reason: format!("expected {}", expected.replace('`', "\"")),
                },
                None,
            );
        } else {
            let span = error.span();
            let key_path = span.as_ref().map_or_else(
                || at.clone(),
                |span| keypath::path_at(self.document, at, span),
            );
            self.push_at(
                &key_path,
                SpanOf::Exact(span),
                DiagnosticKind::WrongType(plain_type_names(message)),
                None,
            );
        }
    }

    /// Reads the `type` key of the table at `at` and checks it is one of `kinds`.
    pub fn kind(
        &mut self,
        at: &KeyPath,
        section: &'static str,
        kinds: &'static [&'static str],
    ) -> Option<String> {
        let Some(table) = keypath::table_at(self.document, at) else {
            self.report(
                at,
                DiagnosticKind::WrongType(format!("`{}` must be a table", last_key(at))),
            );
            return None;
        };
        let kind_at = at.key("type");
        let kind = match table.as_inline_table().and_then(|table| table.get("type")) {
            None => {
                self.report_help(
                    at,
                    DiagnosticKind::MissingKey("type".to_owned()),
                    format!("one of: {}", kinds.join(", ")),
                );
                return None;
            }
            Some(Value::String(kind)) => kind.value().clone(),
            Some(other) => {
                self.report(
                    &kind_at,
                    DiagnosticKind::WrongType(format!(
                        "invalid type: {}, expected a string",
                        other.type_name()
                    )),
                );
                return None;
            }
        };
        if !kinds.contains(&kind.as_str()) {
            let help = match closest(&kind, kinds.iter().copied()) {
                Some(near) => format!("did you mean `{near}`? known types: {}", kinds.join(", ")),
                None => format!("known types: {}", kinds.join(", ")),
            };
            self.report_help(
                &kind_at,
                DiagnosticKind::UnknownKind {
                    section,
                    kind,
                    allowed: kinds,
                },
                help,
            );
            return None;
        }
        Some(kind)
    }

    fn scope(&self) -> Scope<'_> {
        Scope {
            variables: &self.variables,
            unresolved: &self.unresolved,
            image: self
                .image
                .as_ref()
                .map(|(name, version)| (name.as_str(), version.as_str())),
            within: self.within,
        }
    }

    /// How many `[[key]]` tables there are (0 when absent).
    pub fn array_len(&mut self, key: &str) -> Option<usize> {
        match self.document.get(key) {
            None => Some(0),
            Some(Item::ArrayOfTables(tables)) => Some(tables.len()),
            Some(_) => {
                self.report_help(
                    &KeyPath::root().key(key),
                    DiagnosticKind::WrongType(format!("`{key}` must be an array of tables")),
                    format!("write each one as [[{key}]]"),
                );
                None
            }
        }
    }

    /// Interpolates a string.
    pub fn text(&mut self, at: &KeyPath, raw: &str) -> Option<String> {
        match self.scope().interpolate(raw) {
            Ok(text) => Some(text),
            // Reported once, where the variable is declared.
            Err(DiagnosticKind::VariableWithoutValue(_)) => None,
            Err(kind) => {
                let help = match &kind {
                    _ if self.is_full() => None,
                    DiagnosticKind::UndeclaredVariable(name) => {
                        Some(self.scope().undeclared_help(name))
                    }
                    DiagnosticKind::SensitiveInImage(_) => Some(
                        "give the value to the image at run time, or to a provisioner, which keeps it out of the image".to_owned(),
                    ),
                    _ => None,
                };
                self.push_at(at, SpanOf::Value, kind, help);
                None
            }
        }
    }

    pub fn optional_text(&mut self, at: &KeyPath, raw: Option<&str>) -> Option<Option<String>> {
        optional(raw, |raw| self.text(at, raw))
    }

    /// Interpolates every string of a list, reporting each bad one.
    pub fn texts(&mut self, at: &KeyPath, raw: &[String]) -> Option<Vec<String>> {
        let texts: Vec<Option<String>> = raw
            .iter()
            .enumerate()
            .map(|(index, item)| self.text(&at.index(index), item))
            .collect();
        texts.into_iter().collect()
    }

    /// Interpolates, then parses with `T`'s `FromStr`.
    pub fn parsed<T: FromStr<Err = String>>(
        &mut self,
        at: &KeyPath,
        raw: &str,
        what: &'static str,
    ) -> Option<T> {
        let text = self.text(at, raw)?;
        match text.parse() {
            Ok(value) => Some(value),
            Err(reason) => {
                let value = self.redact(&text);
                self.report(
                    at,
                    DiagnosticKind::InvalidValue {
                        what,
                        value,
                        reason,
                    },
                );
                None
            }
        }
    }

    pub fn optional_parsed<T: FromStr<Err = String>>(
        &mut self,
        at: &KeyPath,
        raw: Option<&str>,
        what: &'static str,
    ) -> Option<Option<T>> {
        optional(raw, |raw| self.parsed(at, raw, what))
    }

    /// A host path, resolved against the template's folder and checked.
    pub fn host_path(&mut self, at: &KeyPath, raw: &str, kind: HostPath) -> Option<PathBuf> {
        let text = self.text(at, raw)?;
        if text.is_empty() {
            self.report(
                at,
                DiagnosticKind::Invalid("a path must not be empty".to_owned()),
            );
            return None;
        }
        let path = self.dir.join(&text);
        self.host_path_exists(at, &path, kind).then_some(path)
    }

    /// Whether the host path given at `at` is what `kind` says; reports it if not.
    pub fn host_path_exists(&mut self, at: &KeyPath, path: &Path, kind: HostPath) -> bool {
        let found = match kind {
            HostPath::Unchecked => return true,
            HostPath::File => path.is_file(),
            HostPath::Directory => path.is_dir(),
            HostPath::FileOrDirectory => path
                .metadata()
                .is_ok_and(|metadata| metadata.is_file() || metadata.is_dir()),
        };
        if found {
            return true;
        }
        let kind = if path.exists() {
            DiagnosticKind::Invalid(format!(
                "`{}` is not a {}",
                path.display(),
                match kind {
                    HostPath::Directory => "directory",
                    HostPath::FileOrDirectory => "regular file or a directory",
                    _ => "regular file",
                }
            ))
        } else {
            DiagnosticKind::FileNotFound(path.to_owned())
        };
        self.report_help(
            at,
            kind,
            format!("relative paths start at {}", self.dir.display()),
        );
        false
    }

    pub fn host_paths(
        &mut self,
        at: &KeyPath,
        raw: &[String],
        kind: HostPath,
    ) -> Option<Vec<PathBuf>> {
        let paths: Vec<Option<PathBuf>> = raw
            .iter()
            .enumerate()
            .map(|(index, item)| self.host_path(&at.index(index), item, kind))
            .collect();
        paths.into_iter().collect()
    }

    /// An absolute path inside the image, without `..`.
    pub fn image_path(&mut self, at: &KeyPath, raw: &str) -> Option<String> {
        let text = self.text(at, raw)?;
        let path = Path::new(&text);
        let reason = if !path.is_absolute() {
            Some("a path inside the image must be absolute, like /etc/motd")
        } else if path
            .components()
            .any(|component| component == Component::ParentDir)
        {
            Some("a path inside the image must not contain `..`")
        } else {
            None
        };
        match reason {
            Some(reason) => {
                let value = self.redact(&text);
                self.report(
                    at,
                    DiagnosticKind::InvalidValue {
                        what: "path",
                        value,
                        reason: reason.to_owned(),
                    },
                );
                None
            }
            None => Some(text),
        }
    }

    pub fn optional_image_path(
        &mut self,
        at: &KeyPath,
        raw: Option<&str>,
    ) -> Option<Option<String>> {
        optional(raw, |raw| self.image_path(at, raw))
    }

    /// Environment variables for a command: valid names, interpolated values.
    pub fn environment(
        &mut self,
        at: &KeyPath,
        raw: &BTreeMap<String, String>,
    ) -> Option<BTreeMap<String, String>> {
        let mut environment = BTreeMap::new();
        let mut ok = true;
        for (name, value) in raw {
            let at = at.key(name);
            if !valid_env_name(name) {
                self.report_key(
                    &at,
                    DiagnosticKind::Invalid(format!(
                        "invalid environment variable name `{name}`: use letters, digits and `_`, not starting with a digit"
                    )),
                );
                ok = false;
            } else if let Some(value) = self.text(&at, value) {
                environment.insert(name.clone(), value);
            } else {
                ok = false;
            }
        }
        ok.then_some(environment)
    }

    /// Replaces sensitive values in text that is about to go into a message.
    pub fn redact(&self, text: &str) -> String {
        crate::redact::Redactor::new(self.variables.values())
            .redact(text)
            .into_owned()
    }
}

/// A host path as the template's reader sees it: relative to the
/// template's folder `dir` when it is inside it (`../x` counts), else whole.
pub fn relative(path: &Path, dir: &Path) -> String {
    path.strip_prefix(dir).unwrap_or(path).display().to_string()
}

pub fn valid_env_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Runs `check` on a value that may be absent: `Some(None)` when absent,
/// `None` when present and bad.
pub fn optional<R, T>(raw: Option<R>, check: impl FnOnce(R) -> Option<T>) -> Option<Option<T>> {
    match raw {
        None => Some(None),
        Some(raw) => check(raw).map(Some),
    }
}

/// serde names Rust types ("expected u32"); a template author reads TOML ones.
fn plain_type_names(message: &str) -> String {
    let mut message = message.to_owned();
    for (rust, plain) in [
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected u16", "expected a whole number from 0 to 65535"),
        (
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        ),
        ("expected u64", "expected a non-negative whole number"),
        ("expected i64", "expected a whole number"),
        ("expected a boolean", "expected true or false"),
        ("expected a sequence", "expected an array"),
        ("expected a map", "expected a table"),
    ] {
        if let Some(stripped) = message.strip_suffix(rust) {
            message = format!("{stripped}{plain}");
        }
    }
    message
}

fn between<'t>(text: &'t str, start: &str, end: &str) -> Option<&'t str> {
    let after = &text[text.find(start)? + start.len()..];
    Some(&after[..after.find(end)?])
}

fn last_key(at: &KeyPath) -> String {
    at.segments()
        .iter()
        .rev()
        .find_map(|segment| match segment {
            Segment::Key(key) => Some(key.clone()),
            Segment::Index(_) => None,
        })
        .unwrap_or_default()
}
