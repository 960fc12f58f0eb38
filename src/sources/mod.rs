//! Sources: where a build starts (a builder, in Packer's words).
//!
//! One file per kind; [`Source`] is the closed set, dispatched by `match`.
//! Each kind's file holds its wire struct, its checked settings and, once
//! builds run, the code that produces its root.

pub mod debootstrap;
pub mod directory;
pub mod image;
pub mod scratch;
pub mod tarball;

use serde::{Deserialize, Serialize};

use crate::template::check::Checker;
use crate::template::error::DiagnosticKind;
use crate::template::keypath::KeyPath;

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

    /// A one-line description for `inspect` and progress output.
    pub fn summary(&self) -> String {
        match self {
            Source::Scratch => "empty root".to_owned(),
            Source::Tarball(source) => source.summary(),
            Source::Directory(source) => source.summary(),
            Source::Debootstrap(source) => source.summary(),
            Source::Image(source) => source.summary(),
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
