//! Sources: where a build starts (a builder, in Packer's words), stage 0.
//!
//! One file per kind; [`Source`] is the closed set, dispatched by `match`.
//! Each kind's file holds its wire struct and check, its checked settings,
//! the inputs of its stage key, and the code that makes its root.

pub mod debootstrap;
pub mod directory;
mod error;
pub mod image;
pub mod scratch;
pub mod tarball;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::cache::key::{KeyError, KeyInputs};
use crate::reference::Digest;
use crate::template::check::Checker;
use crate::template::error::DiagnosticKind;
use crate::template::keypath::KeyPath;
pub use error::SourceError;

pub const KINDS: &[&str] = &["scratch", "tarball", "directory", "debootstrap", "image"];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Source {
    Scratch,
    Tarball(tarball::TarballSource),
    Directory(directory::DirectorySource),
    Debootstrap(debootstrap::DebootstrapSource),
    Image(image::ImageSource),
}

impl Source {
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Scratch => "scratch",
            Source::Tarball(_) => "tarball",
            Source::Directory(_) => "directory",
            Source::Debootstrap(_) => "debootstrap",
            Source::Image(_) => "image",
        }
    }

    /// A one-line description for plans, progress and history; host paths
    /// relative to the template's folder `dir`.
    pub fn summary(&self, dir: &Path) -> String {
        match self {
            Source::Scratch => "empty root".to_owned(),
            Source::Tarball(source) => source.summary(dir),
            Source::Directory(source) => source.summary(dir),
            Source::Debootstrap(source) => source.summary(),
            Source::Image(source) => source.summary(),
        }
    }

    /// What the source stage's key is made of. `base` is the manifest
    /// digest of an `image` source, resolved by the plan.
    pub fn key_inputs(
        &self,
        inputs: &mut KeyInputs,
        base: Option<&Digest>,
    ) -> Result<(), KeyError> {
        match self {
            Source::Scratch => Ok(()),
            Source::Tarball(source) => source.key_inputs(inputs),
            Source::Directory(source) => source.key_inputs(inputs),
            Source::Debootstrap(source) => {
                source.key_inputs(inputs);
                Ok(())
            }
            Source::Image(source) => {
                source.key_inputs(inputs, base);
                Ok(())
            }
        }
    }
}

pub(crate) fn check(cx: &mut Checker<'_>) -> Option<Source> {
    let at = KeyPath::root().key("source");
    if cx.document().get("source").is_none() {
        cx.report_help(
            &KeyPath::root(),
            DiagnosticKind::MissingKey("source".to_owned()),
            format!(
                "add a [source] table with a `type`: one of {}",
                KINDS.join(", ")
            ),
        );
        return None;
    }
    let kind = cx.kind(&at, "source", KINDS)?;
    match kind.as_str() {
        "scratch" => scratch::check(cx, &at).map(|()| Source::Scratch),
        "tarball" => tarball::check(cx, &at).map(Source::Tarball),
        "directory" => directory::check(cx, &at).map(Source::Directory),
        "debootstrap" => debootstrap::check(cx, &at).map(Source::Debootstrap),
        "image" => image::check(cx, &at).map(Source::Image),
        _ => unreachable!("Checker::kind only returns one of KINDS"),
    }
}
