//! kiln bakes immutable, reproducible machine images.
//!
//! A TOML template names a source, provisioners that change it and
//! post-processors that derive artifacts from it; kiln runs them as a
//! pipeline and bakes the result into a content-addressed OCI image. This
//! crate is the library; `src/main.rs` and `src/cli/` are the thin binary
//! over it. The library never prints: it returns values and errors, and
//! reports progress through [`report::Reporter`].
//!
//! From a template to a stored, published image: [`template`] checks the
//! file, [`plan`] works out every stage and key, and [`pipeline`] runs the
//! plan. Each kind of source, provisioner and post-processor has a file of
//! its own under [`sources`], [`provisioners`] and [`post_processors`].
//! Below them sit the sandbox, the store, the cache, baking and the
//! registry client; below those, plumbing every layer shares (reporting,
//! compression, hashing, references, OCI documents).

pub mod artifact;
pub mod aws;
pub mod bake;
pub mod cache;
pub mod compression;
pub mod confined;
pub mod copy_in;
pub mod disk;
pub mod export;
pub mod file_index;
pub mod fmt;
pub mod hashing;
pub mod hygiene;
pub mod image_diff;
pub mod image_test;
pub mod io_error;
pub mod oci;
pub mod overlay_marks;
pub mod pipeline;
pub mod plan;
pub mod post_processors;
pub mod provenance;
pub mod provisioners;
pub mod record;
pub mod redact;
pub mod reference;
pub mod remote;
pub mod report;
pub mod sandbox;
pub mod sbom;
pub mod signing;
pub mod sources;
pub mod stage;
pub mod store;
pub mod template;
pub mod unpack;
pub mod vm;

/// `$KILN_HOME`, or `$XDG_DATA_HOME/kiln`, or `~/.local/share/kiln`, made
/// absolute: sandbox helpers work from other folders, so a relative
/// `KILN_HOME=home` must mean the same folder to them.
pub fn kiln_home() -> std::path::PathBuf {
    let home = if let Some(home) = std::env::var_os("KILN_HOME").filter(|home| !home.is_empty()) {
        std::path::PathBuf::from(home)
    } else if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|data| !data.is_empty()) {
        std::path::Path::new(&data).join("kiln")
    } else {
        let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
        std::path::Path::new(&home).join(".local/share/kiln")
    };
    std::path::absolute(&home).unwrap_or(home)
}

/// `error: cause: cause`, on one line, as ripgrep prints a chain.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
