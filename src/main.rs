//! The `kiln` binary: parses the command line, runs one command, and turns
//! its outcome into an exit code (0 ok, 1 failure, 2 usage or template
//! error, 3 version already stored with another digest).

mod cli;

fn main() -> std::process::ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|arg| arg == kiln::sandbox::HELPER_ARG)
    {
        kiln::sandbox::helper_main();
    }
    cli::main()
}
