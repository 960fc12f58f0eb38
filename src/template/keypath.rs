//! Key paths (`provisioner[1].inline[0]`) and their places in the TOML text.
//!
//! Every diagnostic names the key it is about as a [`KeyPath`]; the span that
//! miette underlines is looked up from that path in the spanned document, so
//! checks that run long after parsing still point at the right line.

use std::fmt;
use std::ops::Range;

use serde::Serialize;
use toml_edit::{Array, ArrayOfTables, InlineTable, Item, Table, Value};

/// One step of a key path: a table key or an array index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// Where a value stands in a template, printed the way a user writes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyPath(Vec<Segment>);

impl KeyPath {
    pub fn root() -> Self {
        Self(Vec::new())
    }

    pub fn key(&self, key: &str) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Key(key.to_owned()));
        Self(segments)
    }

    pub fn index(&self, index: usize) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Index(index));
        Self(segments)
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub fn segments(&self) -> &[Segment] {
        &self.0
    }
}

fn is_bare_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (position, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) => {
                    if position > 0 {
                        f.write_str(".")?;
                    }
                    if is_bare_key(key) {
                        f.write_str(key)?;
                    } else {
                        write!(f, "{key:?}")?;
                    }
                }
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

impl Serialize for KeyPath {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A node of the document while walking it: tables of both kinds, arrays
/// of both kinds, and plain values.
#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a Item),
    Value(&'a Value),
    Table(&'a Table),
}

impl<'a> Node<'a> {
    fn span(self) -> Option<Range<usize>> {
        match self {
            Node::Item(item) => item.span(),
            Node::Value(value) => value.span(),
            Node::Table(table) => table.span(),
        }
    }

    fn child(self, segment: &Segment) -> Option<Node<'a>> {
        match (self, segment) {
            (Node::Item(Item::Table(table)), Segment::Key(key))
            | (Node::Table(table), Segment::Key(key)) => table.get(key).map(Node::Item),
            (Node::Item(Item::Value(value)), _) => Node::Value(value).child(segment),
            (Node::Item(Item::ArrayOfTables(tables)), Segment::Index(index)) => {
                tables.get(*index).map(Node::Table)
            }
            (Node::Value(Value::InlineTable(table)), Segment::Key(key)) => {
                table.get(key).map(Node::Value)
            }
            (Node::Value(Value::Array(array)), Segment::Index(index)) => {
                array.get(*index).map(Node::Value)
            }
            _ => None,
        }
    }

    /// The span of the key `key` itself, when this node is a table.
    fn key_span(self, key: &str) -> Option<Range<usize>> {
        match self {
            Node::Item(Item::Table(table)) | Node::Table(table) => table.key(key)?.span(),
            Node::Item(Item::Value(Value::InlineTable(table)))
            | Node::Value(Value::InlineTable(table)) => table.key(key)?.span(),
            _ => None,
        }
    }
}

fn walk<'a>(root: &'a Table, path: &KeyPath) -> Option<Node<'a>> {
    path.segments()
        .iter()
        .try_fold(Node::Table(root), |node, segment| node.child(segment))
}

/// The plain value at `path`, in tables, inline tables and arrays alike.
pub fn value_at<'a>(root: &'a Table, path: &KeyPath) -> Option<&'a Value> {
    match walk(root, path)? {
        Node::Item(Item::Value(value)) | Node::Value(value) => Some(value),
        _ => None,
    }
}

/// The table at `path` (a `[table]`, one `[[table]]` element, or an inline
/// table) as an inline-table value, which serde reads with its spans.
pub fn table_at(root: &Table, path: &KeyPath) -> Option<Value> {
    match walk(root, path)? {
        Node::Table(table) | Node::Item(Item::Table(table)) => {
            Some(Value::InlineTable(table.clone().into_inline_table()))
        }
        Node::Item(Item::Value(value @ Value::InlineTable(_)))
        | Node::Value(value @ Value::InlineTable(_)) => Some(value.clone()),
        _ => None,
    }
}

/// The span of the value at `path`, or of the nearest enclosing value that
/// has one (an array-of-tables element yields its `[[header]]`).
pub fn value_span(root: &Table, path: &KeyPath) -> Option<Range<usize>> {
    let mut node = Node::Table(root);
    let mut best = None;
    for segment in path.segments() {
        node = match node.child(segment) {
            Some(child) => child,
            None => break,
        };
        if let Some(span) = node.span() {
            best = Some(span);
        }
    }
    best
}

/// The span of the last key of `path` (for "unknown key" and friends), or the
/// value span when the path ends in an index.
pub fn key_span(root: &Table, path: &KeyPath) -> Option<Range<usize>> {
    if let Some((Segment::Key(last), parent)) = path.segments().split_last() {
        let parent = KeyPath(parent.to_vec());
        if let Some(span) = walk(root, &parent).and_then(|node| node.key_span(last)) {
            return Some(span);
        }
    }
    value_span(root, path)
}

/// The deepest key path whose value covers `span`, starting below `base`.
pub fn path_at(root: &Table, base: &KeyPath, span: &Range<usize>) -> KeyPath {
    walk(root, base)
        .and_then(|node| search(node, span, base))
        .unwrap_or_else(|| base.clone())
}

fn search(node: Node<'_>, span: &Range<usize>, path: &KeyPath) -> Option<KeyPath> {
    let children: Vec<(Segment, Node<'_>)> = match node {
        Node::Item(Item::Table(table)) | Node::Table(table) => table_children(table),
        Node::Item(Item::ArrayOfTables(tables)) => aot_children(tables),
        Node::Item(Item::Value(value)) | Node::Value(value) => match value {
            Value::InlineTable(table) => inline_children(table),
            Value::Array(array) => array_children(array),
            _ => Vec::new(),
        },
        Node::Item(Item::None) => Vec::new(),
    };
    for (segment, child) in children {
        let child_path = match segment {
            Segment::Key(key) => path.key(&key),
            Segment::Index(index) => path.index(index),
        };
        // Values span all of their text; a table's span is only its header,
        // so tables are always searched.
        let is_value = matches!(child, Node::Value(_) | Node::Item(Item::Value(_)));
        if is_value {
            if child.span().is_some_and(|child_span| {
                child_span.start <= span.start && span.end <= child_span.end
            }) {
                return Some(search(child, span, &child_path).unwrap_or(child_path));
            }
        } else if let Some(found) = search(child, span, &child_path) {
            return Some(found);
        }
    }
    None
}

fn table_children(table: &Table) -> Vec<(Segment, Node<'_>)> {
    table
        .iter()
        .filter_map(|(key, _)| Some((Segment::Key(key.to_owned()), Node::Item(table.get(key)?))))
        .collect()
}

fn inline_children(table: &InlineTable) -> Vec<(Segment, Node<'_>)> {
    table
        .iter()
        .map(|(key, value)| (Segment::Key(key.to_owned()), Node::Value(value)))
        .collect()
}

fn array_children(array: &Array) -> Vec<(Segment, Node<'_>)> {
    array
        .iter()
        .enumerate()
        .map(|(index, value)| (Segment::Index(index), Node::Value(value)))
        .collect()
}

fn aot_children(tables: &ArrayOfTables) -> Vec<(Segment, Node<'_>)> {
    tables
        .iter()
        .enumerate()
        .map(|(index, table)| (Segment::Index(index), Node::Table(table)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> toml_edit::Document<String> {
        toml_edit::Document::parse(text.to_owned()).unwrap()
    }

    #[test]
    fn display_quotes_keys_that_are_not_bare() {
        let path = KeyPath::root()
            .key("image")
            .key("labels")
            .key("org.opencontainers.image.source");
        assert_eq!(
            path.to_string(),
            r#"image.labels."org.opencontainers.image.source""#
        );
        assert_eq!(
            KeyPath::root()
                .key("provisioner")
                .index(1)
                .key("inline")
                .index(0)
                .to_string(),
            "provisioner[1].inline[0]"
        );
    }

    #[test]
    fn spans_follow_paths_into_arrays_of_tables() {
        let text = "[[provisioner]]\ntype = 'shell'\n\n[[provisioner]]\ntype = 'shell'\ninline = ['a', 'bad']\n";
        let doc = parse(text);
        let path = KeyPath::root()
            .key("provisioner")
            .index(1)
            .key("inline")
            .index(1);
        let span = value_span(doc.as_table(), &path).unwrap();
        assert_eq!(&text[span.clone()], "'bad'");
        assert_eq!(path_at(doc.as_table(), &KeyPath::root(), &span), path);
        let key = key_span(
            doc.as_table(),
            &KeyPath::root().key("provisioner").index(1).key("inline"),
        )
        .unwrap();
        assert_eq!(&text[key], "inline");
    }
}
