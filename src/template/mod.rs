//! Templates: from a TOML file to a checked [`Template`].
//!
//! The passes, in order:
//! 1. **parse**: `toml_edit` reads the text into a spanned document;
//! 2. **shape**: each section (and each element of an array of tables) is
//!    deserialized on its own into a wire struct with
//!    `deny_unknown_fields`, so one run reports problems in all of them;
//! 3. **resolve variables**: defaults, `KILN_VAR_*`, `--var-file`, `--var`;
//! 4. **interpolate**: `${…}` in every string, `[image]` name and version first;
//! 5. **check**: names, versions, durations, sizes, modes, paths, files.
//!
//! Passes 3 to 5 run field by field through a [`check::Checker`], which
//! keeps every diagnostic with its key path and span.

pub mod check;
pub mod error;
pub mod image;
pub mod interpolate;
pub mod keypath;
pub mod publish;
mod read;
pub mod shared_cache;
pub mod units;
pub mod values;
pub mod variables;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::image_test::{self, ImageTest};
use crate::post_processors::{self, PostProcessor};
use crate::provisioners::{self, Provisioner};
use crate::redact::{MASK, Redactor};
use crate::reference::Digest;
use crate::sources::{self, Source};
use check::Checker;
pub use error::TemplateError;
use error::{Diagnostic, DiagnosticKind, Origin, SourceFile, closest};
use image::ImageSpec;
use keypath::KeyPath;
use publish::Publish;
pub use read::{MAX_TEMPLATE_BYTES, read_text};
use values::{VarValue, Variable};
use variables::VarInputs;

/// The top-level sections a template may have, in canonical order.
pub const SECTIONS: &[&str] = &[
    "image",
    "variables",
    "source",
    "provisioner",
    "test",
    "post_processor",
    "publish",
    "cache",
];

/// A template after every pass: what the user asked for, checked and with
/// every variable and reference resolved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Template {
    /// The template file, absolute.
    pub path: PathBuf,
    /// sha256 of the template file's bytes without its `[[test]]`,
    /// `[[post_processor]]` and `[publish]` tables: what happens after the
    /// image is made never changes it, so its template annotation neither.
    pub digest: Digest,
    pub image: ImageSpec,
    pub variables: Vec<Variable>,
    pub source: Source,
    pub provisioners: Vec<Provisioner>,
    pub tests: Vec<ImageTest>,
    pub post_processors: Vec<PostProcessor>,
    pub publish: Publish,
    /// `[cache]`: the registry repositories of the shared stage cache.
    #[serde(default, skip_serializing_if = "is_default")]
    pub cache: shared_cache::SharedCache,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

impl Template {
    pub fn redactor(&self) -> Redactor {
        Redactor::new(&self.variables)
    }

    /// The template as JSON with every sensitive value replaced by
    /// `<sensitive>`, in variables and wherever it was interpolated.
    pub fn to_redacted_json(&self) -> serde_json::Value {
        let mut template = self.clone();
        for variable in &mut template.variables {
            if variable.sensitive {
                variable.value = VarValue::String(MASK.to_owned());
            }
        }
        let json = serde_json::to_value(&template).expect("a template always serializes to JSON");
        self.redactor().redact_json(json)
    }
}

/// Reads and checks the template at `path`.
pub fn load(path: &Path, inputs: &VarInputs) -> Result<Template, TemplateError> {
    let text = read::read_text(path).map_err(|source| TemplateError::Read {
        path: path.to_owned(),
        source,
    })?;
    load_str(path, text, inputs)
}

/// Sections about what happens once the image is made (tests, artifacts
/// and publishing) and where the stage cache is shared: they are left out
/// of the template's digest.
const AFTER_THE_IMAGE: [&str; 4] = ["test", "post_processor", "publish", "cache"];

/// The digest of template text with the [`AFTER_THE_IMAGE`] sections cut
/// out, the rest byte for byte as written.
fn image_part_digest(text: &str) -> Digest {
    match text.parse::<toml_edit::DocumentMut>() {
        Ok(mut document) if AFTER_THE_IMAGE.iter().any(|key| document.contains_key(key)) => {
            for key in AFTER_THE_IMAGE {
                document.remove(key);
            }
            Digest::of(document.to_string().as_bytes())
        }
        _ => Digest::of(text.as_bytes()),
    }
}

/// Checks template text as if it were read from `path`.
pub fn load_str(path: &Path, text: String, inputs: &VarInputs) -> Result<Template, TemplateError> {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let dir = absolute.parent().map(Path::to_owned).unwrap_or_default();
    let digest = image_part_digest(&text);
    let file = Arc::new(SourceFile::new(path.to_owned(), text.clone()));
    let document = match toml_edit::Document::parse(text) {
        Ok(document) => document,
        Err(error) => {
            return Err(TemplateError::Invalid {
                path: path.to_owned(),
                diagnostics: vec![Diagnostic {
                    origin: Origin::File {
                        file,
                        span: error.span(),
                    },
                    key: KeyPath::root(),
                    kind: DiagnosticKind::Syntax(error.message().trim_end().to_owned()),
                    help: None,
                }],
                omitted: 0,
            });
        }
    };
    let mut cx = Checker::new(file, document.as_table(), dir);
    for (key, _) in document.as_table().iter() {
        if !SECTIONS.contains(&key) {
            let help = match closest(key, SECTIONS.iter().copied()) {
                Some(near) => format!("did you mean `{near}`? sections: {}", SECTIONS.join(", ")),
                None => format!("sections: {}", SECTIONS.join(", ")),
            };
            cx.report_key_help(
                &KeyPath::root().key(key),
                DiagnosticKind::UnknownKey {
                    key: key.to_owned(),
                    allowed: SECTIONS
                        .iter()
                        .map(|section| (*section).to_owned())
                        .collect(),
                },
                help,
            );
        }
    }
    let variables = variables::resolve(&mut cx, inputs);
    cx.variables = variables;
    let image = image::check(&mut cx);
    if cx.image.is_none() {
        // [image] is broken and already reported; `${image.*}` elsewhere
        // should not add a second, misleading error.
        cx.image = Some(Default::default());
    }
    let source = sources::check(&mut cx);
    let provisioners = provisioners::check_all(&mut cx);
    let tests = image_test::check_all(&mut cx);
    let post_processors = post_processors::check_all(&mut cx);
    let publish = publish::check(&mut cx);
    let cache = shared_cache::check(&mut cx);
    if let (Some(tests), Some(post_processors)) = (&tests, &post_processors) {
        image_test::check_vm_tests_have_a_disk(&mut cx, tests, post_processors);
    }
    if let (Some(publish), Some(post_processors)) = (&publish, &post_processors) {
        publish::check_amis_have_a_disk(&mut cx, publish, post_processors);
    }
    let variables = std::mem::take(&mut cx.variables).into_values().collect();
    match (
        image,
        source,
        provisioners,
        tests,
        post_processors,
        publish,
        cache,
    ) {
        (
            Some(image),
            Some(source),
            Some(provisioners),
            Some(tests),
            Some(post_processors),
            Some(publish),
            Some(cache),
        ) if !cx.has_errors() => Ok(Template {
            path: absolute,
            digest,
            image,
            variables,
            source,
            provisioners,
            tests,
            post_processors,
            publish,
            cache,
        }),
        _ => {
            let (mut diagnostics, omitted) = cx.into_diagnostics();
            diagnostics.sort_by_key(|diagnostic| match &diagnostic.origin {
                Origin::File {
                    span: Some(span), ..
                } => (0, span.start),
                _ => (1, 0),
            });
            Err(TemplateError::Invalid {
                path: path.to_owned(),
                diagnostics,
                omitted,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tests_outputs_and_publishing_do_not_change_the_template_digest() {
        let plain = "[image]\nname = \"a\"\n\n[source]\ntype = \"scratch\"\n";
        let tested = format!(
            "{plain}\n[[test]]\nname = \"t\"\ninline = [\"true\"]\n\n[[test]] # again\nname = \"u\"\ninline = [\"true\"]\n\n\
             [[post_processor]]\ntype = \"checksum\"\n\n[publish]\nchannels = [\"dev\"]\n"
        );
        assert_eq!(image_part_digest(plain), Digest::of(plain.as_bytes()));
        assert_eq!(image_part_digest(&tested), image_part_digest(plain));
        let changed = plain.replace("\"a\"", "\"b\"");
        assert_ne!(image_part_digest(&changed), image_part_digest(plain));
    }
}
