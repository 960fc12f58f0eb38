//! kiln's integration tests: one binary, running the real `kiln` executable
//! against templates in temporary folders.

mod ami;
mod boot;
mod build;
mod cache;
mod cli;
mod debian;
mod debian_vm;
mod escape;
mod fleet;
mod fmt;
mod image_tests;
mod layout;
mod leftovers;
mod loader;
mod machine;
mod post;
mod prove;
mod registry;
mod sbom;
mod signing;
mod templates;
mod util;
