//! The shape of the code: the library's modules import each other without
//! cycles, so each can be read from the modules below it up.
//!
//! Every file of the library is a module (`src/a/b.rs` and `src/a/b/mod.rs`
//! are `a::b`). A module depends on another when it names a path in it
//! (`crate::…`, `super::…`, `self::…`, or a child module by name), in a
//! `use` or in code. The test lists every cycle of that graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::util::repo_root;

type Module = Vec<String>;

/// Every library module (not the binary's `main.rs` and `cli/`) and its text.
fn modules(src: &Path) -> BTreeMap<Module, String> {
    let mut modules = BTreeMap::new();
    let mut pending = vec![src.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(src).unwrap();
            if relative == Path::new("main.rs") || relative.starts_with("cli") {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if path.extension().is_none_or(|extension| extension != "rs") {
                continue;
            }
            let mut module: Module = relative
                .with_extension("")
                .components()
                .map(|component| component.as_os_str().to_string_lossy().into_owned())
                .collect();
            if module
                .last()
                .is_some_and(|last| last == "mod" || last == "lib")
            {
                module.pop();
            }
            modules.insert(module, std::fs::read_to_string(&path).unwrap());
        }
    }
    modules
}

/// The text without comments and string literals, which may name paths
/// that are not imports (`[`crate::copy_in`]` in a doc comment).
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                out.push('"');
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
                out.push('"');
            }
            // A char literal: skip it whole, so '"' opens no string.
            '\'' if chars.clone().nth(1) == Some('\'') => {
                chars.next();
                chars.next();
                out.push_str("' '");
            }
            '\'' if chars.peek() == Some(&'\\') => {
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                }
                out.push_str("' '");
            }
            c => out.push(c),
        }
    }
    out
}

/// Every path of the code, `a::b::{c, d::e}` expanded into `a::b::c` and
/// `a::b::d::e`, as segments.
fn paths(code: &str) -> Vec<Vec<String>> {
    fn is_ident(c: char) -> bool {
        c.is_alphanumeric() || c == '_'
    }
    fn expand(prefix: &[String], group: &str, out: &mut Vec<Vec<String>>) {
        let mut depth = 0;
        let mut start = 0;
        let mut items = Vec::new();
        for (at, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(&group[start..at]);
                    start = at + 1;
                }
                _ => {}
            }
        }
        items.push(&group[start..]);
        for item in items {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            let (head, rest) = match item.find('{') {
                Some(open) => (
                    &item[..open],
                    Some(&item[open + 1..item.rfind('}').unwrap_or(item.len())]),
                ),
                None => (item, None),
            };
            let mut path = prefix.to_vec();
            path.extend(
                head.split("::")
                    .map(|segment| segment.split_whitespace().next().unwrap_or("").to_owned())
                    .filter(|segment| !segment.is_empty()),
            );
            match rest {
                Some(group) => expand(&path, group, out),
                None => out.push(path),
            }
        }
    }
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut at = 0;
    while at < chars.len() {
        let starts =
            is_ident(chars[at]) && (at == 0 || !is_ident(chars[at - 1]) && chars[at - 1] != ':');
        if !starts {
            at += 1;
            continue;
        }
        // One path: identifiers joined by `::`, maybe ending in a `{…}` group.
        let mut segments = Vec::new();
        let mut end = at;
        loop {
            let ident_start = end;
            while end < chars.len() && is_ident(chars[end]) {
                end += 1;
            }
            segments.push(chars[ident_start..end].iter().collect::<String>());
            if end + 1 < chars.len() && chars[end] == ':' && chars[end + 1] == ':' {
                end += 2;
                if end < chars.len() && chars[end] == '{' {
                    let mut depth = 0;
                    let open = end;
                    while end < chars.len() {
                        match chars[end] {
                            '{' => depth += 1,
                            '}' => {
                                depth -= 1;
                                if depth == 0 {
                                    break;
                                }
                            }
                            _ => {}
                        }
                        end += 1;
                    }
                    let group: String = chars[open + 1..end.min(chars.len())].iter().collect();
                    expand(&segments, &group, &mut out);
                    segments.clear();
                    break;
                }
                if end < chars.len() && is_ident(chars[end]) {
                    continue;
                }
            }
            break;
        }
        if segments.len() > 1 {
            out.push(segments);
        }
        at = end.max(at + 1);
    }
    out
}

/// The module a path names, from `module`, if it is one of the crate's.
fn target(module: &Module, path: &[String], known: &BTreeSet<Module>) -> Option<Module> {
    let mut absolute: Module = match path.first().map(String::as_str) {
        Some("crate") => Vec::new(),
        Some("super") => {
            let mut base = module.clone();
            let mut rest = path;
            while rest.first().is_some_and(|segment| segment == "super") {
                base.pop();
                rest = &rest[1..];
            }
            base.extend(rest.iter().cloned());
            return longest_module(base, known);
        }
        Some("self") => module.clone(),
        Some(first) => {
            let mut child = module.clone();
            child.push(first.to_owned());
            if !known.contains(&child) {
                return None;
            }
            module.clone()
        }
        None => return None,
    };
    let skip = usize::from(matches!(
        path.first().map(String::as_str),
        Some("crate" | "self")
    ));
    absolute.extend(path[skip..].iter().cloned());
    longest_module(absolute, known)
}

fn longest_module(mut path: Module, known: &BTreeSet<Module>) -> Option<Module> {
    while !known.contains(&path) {
        path.pop()?;
    }
    Some(path)
}

/// The cycles of a graph, as the modules in each strongly connected part.
fn cycles(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    // Kosaraju: finish order on the graph, then parts on its reverse.
    fn visit(
        node: &Module,
        graph: &BTreeMap<Module, BTreeSet<Module>>,
        seen: &mut BTreeSet<Module>,
        order: &mut Vec<Module>,
    ) {
        if !seen.insert(node.clone()) {
            return;
        }
        for next in graph.get(node).into_iter().flatten() {
            visit(next, graph, seen, order);
        }
        order.push(node.clone());
    }
    let mut seen = BTreeSet::new();
    let mut order = Vec::new();
    for node in graph.keys() {
        visit(node, graph, &mut seen, &mut order);
    }
    let mut reverse: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (from, tos) in graph {
        for to in tos {
            reverse.entry(to.clone()).or_default().insert(from.clone());
        }
    }
    let mut assigned = BTreeSet::new();
    let mut parts = Vec::new();
    for node in order.iter().rev() {
        let mut part = Vec::new();
        visit(node, &reverse, &mut assigned, &mut part);
        if part.len() > 1 {
            part.sort();
            parts.push(part);
        }
    }
    parts
}

fn name(module: &Module) -> String {
    if module.is_empty() {
        "crate".to_owned()
    } else {
        module.join("::")
    }
}

#[test]
fn library_modules_import_each_other_without_cycles() {
    let modules = modules(&repo_root().join("src"));
    let known: BTreeSet<Module> = modules.keys().cloned().collect();
    assert!(
        known.len() > 40,
        "found the library's modules: {}",
        known.len()
    );
    let mut graph: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, text) in &modules {
        let edges = graph.entry(module.clone()).or_default();
        for path in paths(&code_only(text)) {
            if let Some(to) = target(module, &path, &known)
                && &to != module
            {
                edges.insert(to);
            }
        }
    }
    // The scan sees what it should: a few edges known to be there.
    for (from, to) in [
        ("pipeline::stages", "plan"),
        ("sources::tarball", "compression"),
    ] {
        let from: Module = from.split("::").map(str::to_owned).collect();
        let to: Module = to.split("::").map(str::to_owned).collect();
        assert!(
            graph[&from].contains(&to),
            "{} uses {}",
            name(&from),
            name(&to)
        );
    }
    let found = cycles(&graph);
    let described: Vec<String> = found
        .iter()
        .map(|part| {
            let members: BTreeSet<&Module> = part.iter().collect();
            part.iter()
                .map(|module| {
                    let uses: Vec<String> = graph[module]
                        .iter()
                        .filter(|to| members.contains(to))
                        .map(name)
                        .collect();
                    format!("{} -> {}", name(module), uses.join(", "))
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .collect();
    assert!(
        described.is_empty(),
        "modules that import each other:\n{}",
        described.join("\n")
    );
}
