//! The sandbox: the one place for mounts, namespaces and chroot.
//!
//! kiln never mounts anything in its own process. Each stage that needs a
//! mounted root runs a helper: the kiln binary itself, started as
//! `kiln __sandbox`, reading a [`Spec`] on stdin. The helper unshares mount,
//! pid, uts and ipc namespaces, mounts the stage's overlay, and runs the
//! task; the task's process is pid 1 of the new pid namespace. All mounts
//! live only in the helper's mount namespace, so they vanish when it ends,
//! however it ends. A parent-death signal at each step means that when
//! kiln is killed, or kills the helper on a timeout, the whole process tree
//! of the stage dies with it.

mod caps;
mod confine;
mod helper;
mod mounts;
mod network;
mod process;
mod seccomp;
mod spec;
mod userns;
mod users;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use helper::helper_main;
pub use spec::{Network, Overlay, Script, Spec, Task};

/// The argument that starts the kiln binary as the sandbox helper.
pub const HELPER_ARG: &str = "__sandbox";

/// How a sandboxed task ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Exited(i32),
    TimedOut,
    Cancelled,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("failed to start the sandbox helper")]
    Spawn(#[source] std::io::Error),
    #[error("failed to talk to the sandbox helper")]
    Pipe(#[source] std::io::Error),
}

/// Runs `spec` in a helper and waits for it, streaming each line of its
/// output (stdout and stderr, in arrival order) to `on_line`. The helper is
/// killed, with everything it started, after `timeout` or as soon as
/// `cancelled` is set.
pub fn run(
    spec: &Spec,
    timeout: Option<Duration>,
    cancelled: &AtomicBool,
    on_line: &mut dyn FnMut(&str),
) -> Result<Outcome, SandboxError> {
    // The running binary itself, even when a newer one has replaced its
    // file since (an upgrade, a rebuild) mid-build.
    let mut command = Command::new("/proc/self/exe");
    command
        .arg(HELPER_ARG)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: the closure only makes one async-signal-safe syscall.
    unsafe {
        command.pre_exec(|| {
            // The helper dies with this thread, which waits for it below.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(SandboxError::Spawn)?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let spec_json = serde_json::to_vec(spec).expect("a sandbox spec always serializes");
    stdin.write_all(&spec_json).map_err(SandboxError::Pipe)?;
    drop(stdin);

    let (lines, received) = mpsc::channel::<String>();
    let readers: Vec<_> = [
        Box::new(child.stdout.take().expect("stdout is piped")) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().expect("stderr is piped")),
    ]
    .into_iter()
    .map(|stream| {
        let lines = lines.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut line = Vec::new();
            while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
                let text = String::from_utf8_lossy(&line)
                    .trim_end_matches(['\n', '\r'])
                    .to_owned();
                if lines.send(text).is_err() {
                    return;
                }
                line.clear();
            }
        })
    })
    .collect();
    drop(lines);

    let deadline = timeout.map(|timeout| Instant::now() + timeout);
    let mut stopped = None;
    let mut kill_deadline: Option<Instant> = None;
    let mut streams_open = true;
    let status = loop {
        if streams_open {
            match received.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => {
                    on_line(&line);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => streams_open = false,
            }
        } else {
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(status) = child.try_wait().map_err(SandboxError::Pipe)? {
            break status;
        }
        if kill_deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            let _ = child.kill();
            kill_deadline = None;
        }
        if stopped.is_none() {
            if cancelled.load(Ordering::SeqCst) {
                stopped = Some(Outcome::Cancelled);
            } else if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                stopped = Some(Outcome::TimedOut);
            }
            if stopped.is_some() {
                // The helper stops the stage and waits for all of it to be
                // gone; SIGKILL (below) only if it does not in time.
                // SAFETY: a signal to our own child process.
                unsafe {
                    libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
                }
                kill_deadline = Some(Instant::now() + Duration::from_secs(10));
            }
        }
    };
    for reader in readers {
        let _ = reader.join();
    }
    for line in received.try_iter() {
        on_line(&line);
    }
    if let Some(outcome) = stopped {
        return Ok(outcome);
    }
    use std::os::unix::process::ExitStatusExt;
    Ok(Outcome::Exited(
        status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
    ))
}
