//! `kiln fmt`: one canonical layout for templates, keeping every comment.
//!
//! The layout: sections in the contract's order (`image`, `variables`,
//! `source`, `provisioner`, `test`, `post_processor`, `publish`, then any
//! other), one blank line before each table header, `type` first in a kind's
//! table, `key = value` with single spaces, comments kept where they stand
//! with one space before a trailing `#`, short arrays on one line, long or
//! commented ones one item a line with a trailing comma, inline tables as
//! `{ a = 1 }`. Array-of-tables elements keep their order: it is the
//! pipeline's. Formatting is idempotent.

use std::ops::Range;

use toml_edit::{Array, DocumentMut, InlineTable, Item, RawString, Table, Value};

use crate::template::SECTIONS;

/// Formatting failed because the text is not TOML.
#[derive(Debug, thiserror::Error)]
#[error("invalid TOML: {message}")]
pub struct FormatError {
    pub message: String,
    pub span: Option<Range<usize>>,
}

/// Arrays longer than this on one line are broken one item a line.
const MAX_INLINE_ARRAY: usize = 80;

pub fn format_template(text: &str) -> Result<String, FormatError> {
    let mut document: DocumentMut =
        text.parse()
            .map_err(|error: toml_edit::TomlError| FormatError {
                message: error.message().trim_end().to_owned(),
                span: error.span(),
            })?;
    let root = document.as_table_mut();
    order_sections(root);
    format_table_body(root, true);
    for (mut key, item) in root.iter_mut() {
        if !item.is_value() {
            key.leaf_decor_mut().clear();
            key.dotted_decor_mut().clear();
        }
        match item {
            Item::Table(table) => format_table(table),
            Item::ArrayOfTables(tables) => {
                for table in tables.iter_mut() {
                    format_table(table);
                }
            }
            _ => {}
        }
    }
    let trailing = comment_lines(document.trailing().as_str().unwrap_or_default());
    document.set_trailing(if trailing.is_empty() {
        String::new()
    } else {
        format!("\n{trailing}")
    });
    let mut out = document.to_string().trim_start_matches('\n').to_owned();
    let trimmed_len = out.trim_end_matches('\n').len();
    out.truncate(trimmed_len);
    out.push('\n');
    Ok(out)
}

/// Gives every top-level table a document position in canonical order.
fn order_sections(root: &mut Table) {
    let rank = |key: &str| {
        SECTIONS
            .iter()
            .position(|section| *section == key)
            .unwrap_or(SECTIONS.len())
    };
    let mut keys: Vec<(usize, usize, String)> = root
        .iter()
        .enumerate()
        .map(|(index, (key, _))| (rank(key), index, key.to_owned()))
        .collect();
    keys.sort();
    let mut position: isize = 0;
    for (_, _, key) in keys {
        match root.get_mut(&key) {
            Some(Item::Table(table)) => {
                position = set_positions(table, position);
            }
            Some(Item::ArrayOfTables(tables)) => {
                for table in tables.iter_mut() {
                    position += 1;
                    table.set_position(Some(position));
                }
            }
            _ => {}
        }
    }
}

/// Numbers a table and its sub-tables (`[variables.x]` under `[variables]`).
fn set_positions(table: &mut Table, mut position: isize) -> isize {
    position += 1;
    table.set_position(Some(position));
    for (_, item) in table.iter_mut() {
        match item {
            Item::Table(child) => position = set_positions(child, position),
            Item::ArrayOfTables(tables) => {
                for child in tables.iter_mut() {
                    position += 1;
                    child.set_position(Some(position));
                }
            }
            _ => {}
        }
    }
    position
}

/// Every table header gets one blank line before it; the one that ends up
/// first loses it when the document is trimmed.
fn format_table(table: &mut Table) {
    if !table.is_implicit() {
        let comments = comment_lines(
            table
                .decor()
                .prefix()
                .and_then(RawString::as_str)
                .unwrap_or_default(),
        );
        table.decor_mut().set_prefix(format!("\n{comments}"));
        let suffix = trailing_comment(table.decor().suffix());
        table.decor_mut().set_suffix(suffix);
    }
    format_table_body(table, false);
    for (mut key, item) in table.iter_mut() {
        if !item.is_value() {
            key.leaf_decor_mut().clear();
            key.dotted_decor_mut().clear();
        }
        match item {
            Item::Table(child) => format_table(child),
            Item::ArrayOfTables(tables) => {
                for child in tables.iter_mut() {
                    format_table(child);
                }
            }
            _ => {}
        }
    }
}

/// Orders `type` first and normalizes each `key = value` line.
fn format_table_body(table: &mut Table, is_root: bool) {
    if !is_root && let Some((key, item)) = table.remove_entry("type") {
        let rest: Vec<_> = table.iter().map(|(key, _)| key.to_owned()).collect();
        let rest: Vec<_> = rest
            .iter()
            .filter_map(|key| table.remove_entry(key))
            .collect();
        table.insert_formatted(&key, item);
        for (key, item) in rest {
            table.insert_formatted(&key, item);
        }
    }
    let mut first_value = true;
    for (mut key, item) in table.iter_mut() {
        let Item::Value(value) = item else { continue };
        let comments = comment_lines(
            key.leaf_decor()
                .prefix()
                .and_then(RawString::as_str)
                .unwrap_or_default(),
        );
        let had_blank_line = key
            .leaf_decor()
            .prefix()
            .and_then(RawString::as_str)
            .is_some_and(|prefix| prefix.trim_start_matches([' ', '\t']).starts_with('\n'));
        let blank = if had_blank_line && !first_value {
            "\n"
        } else {
            ""
        };
        key.leaf_decor_mut()
            .set_prefix(format!("{blank}{comments}"));
        key.leaf_decor_mut().set_suffix(" ");
        key.dotted_decor_mut().clear();
        format_value(value);
        value.decor_mut().set_prefix(" ");
        first_value = false;
    }
}

fn format_value(value: &mut Value) {
    let suffix = trailing_comment(value.decor().suffix());
    match value {
        Value::Array(array) => format_array(array),
        Value::InlineTable(table) => format_inline_table(table),
        _ => {}
    }
    value.decor_mut().set_suffix(suffix);
}

fn format_array(array: &mut Array) {
    let has_comment = array.iter().any(|item| {
        let decor = item.decor();
        [decor.prefix(), decor.suffix()]
            .into_iter()
            .flatten()
            .any(|raw| raw.as_str().unwrap_or_default().contains('#'))
    }) || array.trailing().as_str().unwrap_or_default().contains('#');
    for item in array.iter_mut() {
        match item {
            Value::Array(inner) => format_array(inner),
            Value::InlineTable(table) => format_inline_table(table),
            _ => {}
        }
    }
    let one_line_len: usize = array
        .iter()
        .map(|item| item.to_string().trim().len() + 2)
        .sum();
    if !has_comment && one_line_len <= MAX_INLINE_ARRAY {
        array.fmt();
        return;
    }
    // A comment after an item's comma is stored in the next item's prefix
    // (or the array's trailing part); it stays on the item's line.
    let mut carried: Option<String> = None;
    for item in array.iter_mut() {
        let prefix = item
            .decor()
            .prefix()
            .and_then(RawString::as_str)
            .unwrap_or_default()
            .to_owned();
        let (same_line, rest) = split_first_line(&prefix);
        let same_line = join_comments(carried.take(), same_line);
        let before = indent_comments(&comment_lines(rest));
        let lead = same_line.map_or_else(|| "\n".to_owned(), |comment| format!(" {comment}\n"));
        let suffix = trailing_comment(item.decor().suffix());
        carried = (!suffix.is_empty()).then(|| suffix.trim().to_owned());
        item.decor_mut().set_prefix(format!("{lead}{before}    "));
        item.decor_mut().set_suffix("");
    }
    let trailing = array.trailing().as_str().unwrap_or_default().to_owned();
    let (same_line, rest) = split_first_line(&trailing);
    let same_line = join_comments(carried, same_line);
    let lead = same_line.map_or_else(|| "\n".to_owned(), |comment| format!(" {comment}\n"));
    array.set_trailing_comma(true);
    array.set_trailing(format!("{lead}{}", indent_comments(&comment_lines(rest))));
}

/// Splits decor into the comment on its first line (if any) and the rest.
fn split_first_line(raw: &str) -> (Option<String>, &str) {
    let (first, rest) = raw.split_once('\n').unwrap_or((raw, ""));
    let comment = first
        .find('#')
        .map(|hash| first[hash..].trim_end().to_owned());
    (comment, rest)
}

fn join_comments(a: Option<String>, b: Option<String>) -> Option<String> {
    match (a, b) {
        (Some(a), Some(b)) => Some(format!("{a} {}", b.trim_start_matches('#').trim_start())),
        (a, b) => a.or(b),
    }
}

fn format_inline_table(table: &mut InlineTable) {
    for (_, value) in table.iter_mut() {
        match value {
            Value::Array(inner) => format_array(inner),
            Value::InlineTable(inner) => format_inline_table(inner),
            _ => {}
        }
    }
    table.fmt();
}

/// The comment lines of a decor prefix, each trimmed and ending in `\n`.
/// A blank line between comments, or between the comments and what
/// follows them, is kept as one blank line; leading blank lines are not.
fn comment_lines(raw: &str) -> String {
    let mut out = String::new();
    let mut blank = false;
    for line in raw.lines().map(str::trim) {
        if line.starts_with('#') {
            if blank && !out.is_empty() {
                out.push('\n');
            }
            out.push_str(line);
            out.push('\n');
            blank = false;
        } else if line.is_empty() {
            blank = true;
        }
    }
    if blank
        && !out.is_empty()
        && raw.ends_with('\n')
        && raw
            .lines()
            .last()
            .is_some_and(|line| line.trim().is_empty())
    {
        out.push('\n');
    }
    out
}

fn indent_comments(comments: &str) -> String {
    comments
        .lines()
        .map(|line| {
            if line.is_empty() {
                "\n".to_owned()
            } else {
                format!("    {line}\n")
            }
        })
        .collect()
}

/// A trailing `# comment` after a value, with one space before it.
fn trailing_comment(raw: Option<&RawString>) -> String {
    let raw = raw.and_then(RawString::as_str).unwrap_or_default();
    match raw.find('#') {
        Some(hash) => format!(" {}", raw[hash..].trim_end()),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_sections_and_keeps_comments() {
        let text = "# header comment\n[[provisioner]]\ninline=[ 'a','b' ]   # why\n  type='shell'\n\n\n[image]\n# the name\nname   =  'x'\nversion='1'\n";
        let formatted = format_template(text).unwrap();
        assert_eq!(
            formatted,
            "[image]\n# the name\nname = 'x'\nversion = '1'\n\n# header comment\n[[provisioner]]\ntype = 'shell'\ninline = ['a', 'b'] # why\n"
        );
        assert_eq!(format_template(&formatted).unwrap(), formatted);
    }

    #[test]
    fn long_or_commented_arrays_go_one_item_a_line() {
        let text = "[[provisioner]]\ntype = 'shell'\ninline = [\n  'apt-get update', # refresh\n  'apt-get install -y nginx']\n";
        let formatted = format_template(text).unwrap();
        assert_eq!(
            formatted,
            "[[provisioner]]\ntype = 'shell'\ninline = [\n    'apt-get update', # refresh\n    'apt-get install -y nginx',\n]\n"
        );
        assert_eq!(format_template(&formatted).unwrap(), formatted);
    }

    #[test]
    fn syntax_errors_keep_their_span() {
        let error = format_template("a = [1,\nb =").unwrap_err();
        assert!(error.span.is_some());
    }
}
