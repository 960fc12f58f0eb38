//! kiln bakes immutable, reproducible machine images.
//!
//! A TOML template names a source, provisioners that change it and
//! post-processors that derive artifacts from it; kiln runs them as a
//! pipeline and bakes the result into a content-addressed OCI image. This
//! crate is the library; `src/main.rs` and `src/cli/` are the thin binary
//! over it. The library never prints: it returns values and errors.

pub mod bake;
pub mod confined;
pub mod fmt;
pub mod hashing;
pub mod image_test;
pub mod oci;
pub mod post_processors;
pub mod provisioners;
pub mod redact;
pub mod reference;
pub mod sources;
pub mod store;
pub mod template;
pub mod unpack;
