//! `kiln login REGISTRY`: checks credentials against the registry, then
//! keeps them in `$KILN_HOME/auth.json` (Docker's format, mode 0600).

use std::io::{BufRead, IsTerminal, Write};

use kiln::remote::auth::{self, Credentials};
use kiln::remote::{Registry, RemoteOptions, block_on};

use super::{Exit, diagnostics::error_chain};

fn prompt(question: &str, hide: bool) -> std::io::Result<String> {
    let stdin = std::io::stdin();
    let terminal = stdin.is_terminal();
    if terminal {
        eprint!("{question}: ");
        std::io::stderr().flush()?;
    }
    let saved = if hide && terminal {
        rustix::termios::tcgetattr(&stdin).ok()
    } else {
        None
    };
    if let Some(saved) = &saved {
        let mut quiet = saved.clone();
        quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
        let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &quiet);
    }
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if let Some(saved) = &saved {
        let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, saved);
        eprintln!();
    }
    read?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

pub fn run(
    registry: &str,
    username: Option<&str>,
    password_stdin: bool,
    options: &RemoteOptions,
) -> Exit {
    let credentials = (|| -> std::io::Result<Credentials> {
        let username = match username {
            Some(username) => username.to_owned(),
            None => match std::env::var("KILN_REGISTRY_USER") {
                Ok(username) => username,
                Err(_) => prompt("user name", false)?,
            },
        };
        let password = if password_stdin {
            prompt("password", true)?
        } else {
            match std::env::var("KILN_REGISTRY_PASSWORD") {
                Ok(password) => password,
                Err(_) => prompt("password", true)?,
            }
        };
        Ok(Credentials { username, password })
    })();
    let credentials = match credentials {
        Ok(credentials) if !credentials.username.is_empty() => credentials,
        Ok(_) => {
            eprintln!("error: failed to log in to {registry}: no user name given");
            return Exit::Usage;
        }
        Err(error) => {
            eprintln!(
                "error: failed to log in to {registry}: cannot read the credentials: {error}"
            );
            return Exit::Failure;
        }
    };
    let checked = Registry::with_credentials(registry, options, Some(credentials.clone()))
        .and_then(|client| block_on(client.check()));
    if let Err(error) = checked {
        eprintln!(
            "error: failed to log in to {registry}: {}",
            error_chain(&error)
        );
        return Exit::Failure;
    }
    match auth::save(&options.home, registry, &credentials) {
        Ok(()) => {
            println!("logged in to {registry} as {}", credentials.username);
            Exit::Success
        }
        Err(error) => {
            eprintln!(
                "error: failed to save the credentials in {}: {error}",
                auth::kiln_auth_file(&options.home).display()
            );
            Exit::Failure
        }
    }
}
