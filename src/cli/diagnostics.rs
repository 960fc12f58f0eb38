//! Turning template diagnostics into what a person reads: a headline with
//! the key path, the offending line underlined (miette), and a hint.

use std::io::IsTerminal;
use std::ops::Range;
use std::path::Path;

use miette::{
    GraphicalReportHandler, GraphicalTheme, MietteError, MietteSpanContents, SourceCode,
    SourceSpan, SpanContents,
};

use kiln::template::error::{Diagnostic, Origin, SourceFile};
use kiln::template::variables::{ValueOrigin, VarInputs};
use kiln::template::{Template, TemplateError};

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("{headline}")]
struct Rendered {
    headline: String,
    #[source_code]
    source_code: Option<Excerpt>,
    #[label("here")]
    span: Option<SourceSpan>,
    #[help]
    help: Option<String>,
}

fn handler() -> GraphicalReportHandler {
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    GraphicalReportHandler::new_themed(theme).with_width(100)
}

/// Lines of a template shown around a problem on each side.
const CONTEXT_LINES: usize = 2;
/// A snippet with a longer line is not shown: the headline names the place.
const MAX_SNIPPET_LINE: usize = 400;
/// A span over more lines is underlined on its first line only.
const MAX_SPAN_LINES: usize = 8;

/// A few lines of a template around one problem, as miette reads source.
/// Offsets and line numbers stay those of the whole file, so miette neither
/// scans nor copies the file for each problem.
#[derive(Debug)]
struct Excerpt {
    name: String,
    text: String,
    /// Byte offset of `text` in the file.
    start: usize,
    /// 0-based line of the file `text` starts at.
    first_line: usize,
}

impl SourceCode for Excerpt {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        let local = SourceSpan::new(span.offset().saturating_sub(self.start).into(), span.len());
        let contents = self
            .text
            .read_span(&local, context_lines_before, context_lines_after)?;
        Ok(Box::new(MietteSpanContents::new_named(
            self.name.clone(),
            contents.data(),
            SourceSpan::new(
                (contents.span().offset() + self.start).into(),
                contents.span().len(),
            ),
            contents.line() + self.first_line,
            contents.column(),
            contents.line_count(),
        )))
    }
}

/// The excerpt and span miette shows for a problem at `span`, or `None`
/// when a line there is too long to show.
fn excerpt(file: &SourceFile, span: &Range<usize>) -> Option<(Excerpt, SourceSpan)> {
    let start = file.char_boundary(span.start);
    let mut end = file.char_boundary(span.end.max(start));
    let (first, _) = file.line_column(start);
    let (mut last, _) = file.line_column(end);
    if last - first >= MAX_SPAN_LINES {
        last = first;
        end = file.line_range(first).end;
    }
    let from = first.saturating_sub(CONTEXT_LINES).max(1);
    let to = (last + CONTEXT_LINES).min(file.line_count());
    if (from..=to).any(|line| file.line_range(line).len() > MAX_SNIPPET_LINE) {
        return None;
    }
    let text_start = file.line_range(from).start;
    let text_end = file.line_range(to).end;
    Some((
        Excerpt {
            name: file.path.display().to_string(),
            text: file.text[text_start..text_end].to_owned(),
            start: text_start,
            first_line: from - 1,
        },
        SourceSpan::new(start.into(), end - start),
    ))
}

/// Renders one diagnostic as text (without a trailing newline).
pub fn render(diagnostic: &Diagnostic) -> String {
    let what = if diagnostic.key.is_root() {
        diagnostic.kind.to_string()
    } else {
        format!("{}: {}", diagnostic.key, diagnostic.kind)
    };
    // With a snippet, miette adds :LINE:COL to the file name above it;
    // without one, the headline names the place.
    let snippet = match &diagnostic.origin {
        Origin::File {
            file,
            span: Some(span),
        } => excerpt(file, span),
        _ => None,
    };
    let (headline, source_code, span) = match snippet {
        Some((excerpt, span)) => (what, Some(excerpt), Some(span)),
        None => (format!("{}: {what}", diagnostic.location()), None, None),
    };
    let rendered = Rendered {
        headline,
        source_code,
        span,
        help: diagnostic.help.clone(),
    };
    let mut out = String::new();
    handler()
        .render_report(&mut out, &rendered)
        .expect("rendering into a String cannot fail");
    out.trim_end().to_owned()
}

/// Loads a template, printing what is wrong with it, and a warning for each
/// sensitive value given on the command line, which every host user can
/// read in the process list.
pub fn load_template(path: &Path, inputs: &VarInputs) -> Option<Template> {
    match kiln::template::load(path, inputs) {
        Ok(template) => {
            for variable in &template.variables {
                if variable.sensitive && variable.origin == ValueOrigin::Flag {
                    eprintln!(
                        "warning: --var {name}=… shows the sensitive value in the host's process list; pass it as KILN_VAR_{name} or in a --var-file",
                        name = variable.name
                    );
                }
            }
            Some(template)
        }
        Err(error) => {
            print_template_error(&error);
            None
        }
    }
}

pub fn print_template_error(error: &TemplateError) {
    match error {
        TemplateError::Read { .. } => eprintln!("error: {}", error_chain(error)),
        TemplateError::Invalid {
            path,
            diagnostics,
            omitted,
        } => {
            let total = diagnostics.len() + omitted;
            eprintln!(
                "error: failed to load template {}: {total} problem{}",
                path.display(),
                if total == 1 { "" } else { "s" }
            );
            for diagnostic in diagnostics {
                eprintln!("{}\n", render(diagnostic));
            }
            if *omitted > 0 {
                eprintln!(
                    "error: {omitted} more problem{} not shown: fix these first",
                    if *omitted == 1 { "" } else { "s" }
                );
            }
        }
    }
}

pub use kiln::error_chain;
