//! `kiln validate`: loads each template and reports every problem found.

use std::path::PathBuf;

use super::{Exit, diagnostics};
use kiln::template::{self, variables::VarInputs};

pub fn run(templates: &[PathBuf], inputs: &VarInputs) -> Exit {
    let mut exit = Exit::Success;
    for path in templates {
        match template::load(path, inputs) {
            Ok(_) => println!("{}: valid", path.display()),
            Err(error) => {
                diagnostics::print_template_error(&error);
                exit = Exit::Usage;
            }
        }
    }
    exit
}
