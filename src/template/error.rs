//! What can be wrong with a template, and where.
//!
//! A load gathers every problem it can find into one [`TemplateError`]; each
//! [`Diagnostic`] keeps the file, the key path and the byte span, so the
//! binary can show the offending line and tests can assert on the location.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::keypath::KeyPath;

/// The text of a file a diagnostic points into (a template or a var-file).
#[derive(Debug)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
    /// The byte offset of each line's start, for [`SourceFile::line_column`]
    /// without a scan from the top per problem.
    line_starts: Vec<usize>,
}

impl SourceFile {
    pub fn new(path: PathBuf, text: String) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(newline, _)| newline + 1))
            .collect();
        Self {
            path,
            text,
            line_starts,
        }
    }

    /// The 1-based line and column (in characters) of a byte offset.
    pub fn line_column(&self, offset: usize) -> (usize, usize) {
        let offset = self.char_boundary(offset);
        let line = self.line_starts.partition_point(|start| *start <= offset);
        let line_start = self.line_starts[line - 1];
        (line, self.text[line_start..offset].chars().count() + 1)
    }

    /// The byte range of the 1-based `line`, without its newline.
    pub fn line_range(&self, line: usize) -> std::ops::Range<usize> {
        let start = self.line_starts[line.clamp(1, self.line_starts.len()) - 1];
        let end = self.text[start..]
            .find('\n')
            .map_or(self.text.len(), |newline| start + newline);
        start..end
    }

    pub fn line_count(&self) -> usize {
        self.line_starts.len()
    }

    /// `offset`, moved back to a character boundary inside the text.
    pub fn char_boundary(&self, offset: usize) -> usize {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        offset
    }
}

/// Where a problem comes from: a place in a file, or a value given outside
/// any file (`--var`, an environment variable).
#[derive(Debug, Clone)]
pub enum Origin {
    File {
        file: Arc<SourceFile>,
        span: Option<Range<usize>>,
    },
    Flag(String),
    Environment(String),
}

/// One problem found in a template.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub origin: Origin,
    pub key: KeyPath,
    pub kind: DiagnosticKind,
    pub help: Option<String>,
}

impl Diagnostic {
    /// `(line, column)` in the file the diagnostic points into, if any.
    pub fn line_column(&self) -> Option<(usize, usize)> {
        match &self.origin {
            Origin::File {
                file,
                span: Some(span),
            } => Some(file.line_column(span.start)),
            _ => None,
        }
    }

    /// `FILE:LINE:COL`, `--var`, or `env NAME`: the place a user looks.
    pub fn location(&self) -> String {
        match &self.origin {
            Origin::File { file, .. } => match self.line_column() {
                Some((line, column)) => format!("{}:{line}:{column}", file.path.display()),
                None => file.path.display().to_string(),
            },
            Origin::Flag(flag) => flag.clone(),
            Origin::Environment(name) => format!("environment variable {name}"),
        }
    }
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.key.is_root() {
            write!(f, "{}: {}", self.location(), self.kind)
        } else {
            write!(f, "{}: {}: {}", self.location(), self.key, self.kind)
        }
    }
}

/// The kinds of problems, each a lowercase fragment that reads after
/// "failed to load template: ".
#[derive(Debug, Clone, thiserror::Error)]
pub enum DiagnosticKind {
    #[error("invalid TOML: {0}")]
    Syntax(String),
    #[error("unknown key `{key}`")]
    UnknownKey { key: String, allowed: Vec<String> },
    #[error("missing required key `{0}`")]
    MissingKey(String),
    #[error("{0}")]
    WrongType(String),
    #[error("unknown {section} type `{kind}`")]
    UnknownKind {
        section: &'static str,
        kind: String,
        allowed: &'static [&'static str],
    },
    #[error("invalid {what} `{value}`: {reason}")]
    InvalidValue {
        what: &'static str,
        value: String,
        reason: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("file `{}` does not exist", .0.display())]
    FileNotFound(PathBuf),
    #[error("expected exactly one of {}", .0.join(", "))]
    ExactlyOne(&'static [&'static str]),
    #[error("undeclared variable `{0}`")]
    UndeclaredVariable(String),
    #[error("variable `{0}` has no value")]
    VariableWithoutValue(String),
    #[error("variable `{name}` expects a {expected}: {reason}")]
    VariableType {
        name: String,
        expected: &'static str,
        reason: String,
    },
    #[error("{0}")]
    Interpolation(String),
    #[error(
        "sensitive variable `{0}` cannot be used in [image]: the image config ships with the image, readable by anyone who pulls it"
    )]
    SensitiveInImage(String),
}

/// Reading a template failed: either the file could not be read, or its
/// content is wrong in one or more places.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("failed to read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} has {} problem{}", path.display(), diagnostics.len() + omitted, if diagnostics.len() + omitted == 1 { "" } else { "s" })]
    Invalid {
        path: PathBuf,
        /// The first problems, in the order of the file.
        diagnostics: Vec<Diagnostic>,
        /// Problems found past the most kept.
        omitted: usize,
    },
}

impl TemplateError {
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            TemplateError::Read { .. } => &[],
            TemplateError::Invalid { diagnostics, .. } => diagnostics,
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            TemplateError::Read { path, .. } | TemplateError::Invalid { path, .. } => path,
        }
    }
}

/// Suggests the closest of `candidates` to a misspelt `word`.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let length = word.chars().count();
    candidates
        .into_iter()
        // The distance is at least the difference in length: skip the sums.
        .filter(|candidate| {
            candidate.chars().count().abs_diff(length) <= (candidate.len() / 3).max(1)
        })
        .map(|candidate| (edit_distance(word, candidate), candidate))
        .filter(|(distance, candidate)| *distance <= (candidate.len() / 3).max(1))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance with adjacent transpositions counted as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut rows = vec![vec![0; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_suggests_only_near_misses() {
        let keys = ["source", "destination", "mode", "owner"];
        assert_eq!(closest("destinaton", keys), Some("destination"));
        assert_eq!(closest("mdoe", keys), Some("mode"));
        assert_eq!(closest("colour", keys), None);
    }

    #[test]
    fn line_column_counts_characters() {
        let file = SourceFile::new("t.toml".into(), "a = 1\nb = \"é\" x\n".into());
        assert_eq!(file.line_column(0), (1, 1));
        assert_eq!(file.line_column(5), (1, 6));
        assert_eq!(file.line_column(6), (2, 1));
        assert_eq!(file.line_column(14), (2, 8));
        assert_eq!(file.line_column(11), (2, 6), "inside `é`: its start");
        assert_eq!(file.line_column(99), (3, 1));
        assert_eq!(file.line_range(2), 6..16);
        assert_eq!(file.line_count(), 3);
    }
}
