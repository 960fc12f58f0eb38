//! `kiln validate`: loads each template and reports every problem found.

use std::path::PathBuf;

use super::{Exit, diagnostics};
use kiln::template::variables::VarInputs;

pub fn run(templates: &[PathBuf], inputs: &VarInputs) -> Exit {
    let mut exit = Exit::Success;
    for path in templates {
        match diagnostics::load_template(path, inputs) {
            Some(_) => println!("{}: valid", path.display()),
            None => exit = Exit::Usage,
        }
    }
    exit
}
