//! kiln bakes immutable, reproducible machine images.
//!
//! A TOML template names a source, provisioners that change it and
//! post-processors that derive artifacts from it; kiln runs them as a
//! pipeline and bakes the result into a content-addressed OCI image. This
//! crate is the library; `src/main.rs` and `src/cli/` are the thin binary
//! over it. The library never prints: it returns values and errors.

pub mod bake;
pub mod cache;
pub mod confined;
pub mod export;
pub mod file_index;
pub mod fmt;
pub mod hashing;
pub mod image_diff;
pub mod image_test;
pub mod oci;
pub mod pipeline;
pub mod post_processors;
pub mod provisioners;
pub mod redact;
pub mod reference;
pub mod remote;
pub mod sandbox;
pub mod sources;
pub mod store;
pub mod template;
pub mod unpack;

/// `$KILN_HOME`, or `$XDG_DATA_HOME/kiln`, or `~/.local/share/kiln`.
pub fn kiln_home() -> std::path::PathBuf {
    if let Some(home) = std::env::var_os("KILN_HOME").filter(|home| !home.is_empty()) {
        return home.into();
    }
    if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|data| !data.is_empty()) {
        return std::path::Path::new(&data).join("kiln");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    std::path::Path::new(&home).join(".local/share/kiln")
}
