//! Fuzzes the template loader: any bytes, read as a template beside the
//! shipped examples, must give a template or a list of problems, and every
//! problem must know its place in the file.
#![no_main]

use std::path::Path;

use kiln::template::{self, variables::VarInputs};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.len() as u64 > template::MAX_TEMPLATE_BYTES {
        return;
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates/fuzzed.toml");
    if let Err(error) = template::load_str(&path, text.to_owned(), &VarInputs::default()) {
        for diagnostic in error.diagnostics() {
            let _ = diagnostic.line_column();
            let _ = diagnostic.to_string();
        }
    }
});
