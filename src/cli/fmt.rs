//! `kiln fmt [--check]`: rewrites templates in the canonical layout, or
//! names those that would change.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Exit, diagnostics};
use kiln::fmt::format_template;
use kiln::template::error::{Diagnostic, DiagnosticKind, Origin, SourceFile};
use kiln::template::keypath::KeyPath;

pub fn run(templates: &[PathBuf], check: bool) -> Exit {
    let mut exit = Exit::Success;
    for path in templates {
        let outcome = format_one(path, check);
        exit = match (exit, outcome) {
            (Exit::Usage, _) | (_, Exit::Usage) => Exit::Usage,
            (Exit::Failure, _) | (_, Exit::Failure) => Exit::Failure,
            _ => Exit::Success,
        };
    }
    exit
}

fn format_one(path: &Path, check: bool) -> Exit {
    let text = match kiln::template::read_text(path) {
        Ok(text) => text,
        Err(error) => {
            eprintln!("error: failed to read {}: {error}", path.display());
            return Exit::Usage;
        }
    };
    let formatted = match format_template(&text) {
        Ok(formatted) => formatted,
        Err(error) => {
            let diagnostic = Diagnostic {
                origin: Origin::File {
                    file: Arc::new(SourceFile::new(path.to_owned(), text)),
                    span: error.span.clone(),
                },
                key: KeyPath::root(),
                kind: DiagnosticKind::Syntax(error.message),
                help: None,
            };
            eprintln!(
                "error: failed to format {}\n{}",
                path.display(),
                diagnostics::render(&diagnostic)
            );
            return Exit::Usage;
        }
    };
    if formatted == text {
        return Exit::Success;
    }
    if check {
        println!("would reformat {}", path.display());
        return Exit::Failure;
    }
    match replace_file(path, &formatted) {
        Ok(()) => {
            println!("formatted {}", path.display());
            Exit::Success
        }
        Err(error) => {
            eprintln!("error: failed to write {}: {error}", path.display());
            Exit::Failure
        }
    }
}

/// Writes beside the file and renames over it, keeping its permissions, so
/// an interrupted `fmt` never leaves half a template.
fn replace_file(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let permissions = std::fs::metadata(path)?.permissions();
    let mut temp = tempfile::Builder::new()
        .prefix(".kiln-fmt-")
        .tempfile_in(dir)?;
    temp.write_all(text.as_bytes())?;
    temp.as_file().sync_all()?;
    temp.as_file().set_permissions(permissions)?;
    temp.persist(path).map_err(|error| error.error)?;
    Ok(())
}
