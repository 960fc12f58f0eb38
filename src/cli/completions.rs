//! `kiln completions SHELL`: a completion script on stdout.

use clap::CommandFactory;

use super::{Cli, Exit};

pub fn run(shell: clap_complete::Shell) -> Exit {
    clap_complete::generate(shell, &mut Cli::command(), "kiln", &mut std::io::stdout());
    Exit::Success
}
