//! Turning template diagnostics into what a person reads: a headline with
//! the key path, the offending line underlined (miette), and a hint.

use std::io::IsTerminal;
use std::path::Path;

use miette::{GraphicalReportHandler, GraphicalTheme, NamedSource, SourceSpan};

use kiln::template::error::{Diagnostic, Origin};
use kiln::template::variables::{ValueOrigin, VarInputs};
use kiln::template::{Template, TemplateError};

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("{headline}")]
struct Rendered {
    headline: String,
    #[source_code]
    source_code: Option<NamedSource<String>>,
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

/// Renders one diagnostic as text (without a trailing newline).
pub fn render(diagnostic: &Diagnostic) -> String {
    let what = if diagnostic.key.is_root() {
        diagnostic.kind.to_string()
    } else {
        format!("{}: {}", diagnostic.key, diagnostic.kind)
    };
    // With a span, miette adds :LINE:COL to the file name above the snippet; without one,
    // the headline names the place.
    let (headline, source_code, span) = match &diagnostic.origin {
        Origin::File {
            file,
            span: Some(span),
        } => (
            what,
            Some(NamedSource::new(
                file.path.display().to_string(),
                file.text.clone(),
            )),
            Some(SourceSpan::from(span.clone())),
        ),
        _ => (format!("{}: {what}", diagnostic.location()), None, None),
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
        TemplateError::Invalid { path, diagnostics } => {
            eprintln!(
                "error: failed to load template {}: {} problem{}",
                path.display(),
                diagnostics.len(),
                if diagnostics.len() == 1 { "" } else { "s" }
            );
            for diagnostic in diagnostics {
                eprintln!("{}\n", render(diagnostic));
            }
        }
    }
}

pub use kiln::error_chain;
