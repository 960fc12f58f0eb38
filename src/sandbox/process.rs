//! Processes of the sandbox: how the helper and its children wait for one
//! another, stop on a signal, and die with their parent, so that a stopped
//! or killed kiln leaves nothing of a stage running.

use std::io;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};

/// Kills this process when its parent dies. The setting is cleared when a
/// process changes its ids, so it is made again after every change; and
/// a parent already gone by then is caught here too.
pub(super) fn set_parent_death_signal() -> io::Result<()> {
    // SAFETY: prctl with these arguments only sets a flag of this process.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: getppid only reads this process's parent id.
    if unsafe { libc::getppid() } == 1 {
        return Err(io::Error::other("the parent process is gone"));
    }
    Ok(())
}

/// Waits for the task's process. When asked to stop (SIGTERM from kiln, or
/// SIGINT from a terminal), kills it and reaps it: it is the init of the
/// stage's pid namespace, and the kernel reaps it only after every other
/// process in the namespace is gone, so when this returns, nothing of the
/// stage is left running.
pub(super) fn wait(mut child: Child, program: &str) -> Result<i32, String> {
    loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|error| format!("failed to wait for {program}: {error}"))?
        {
            return Ok(exit_code(status));
        }
        if STOP.load(Ordering::SeqCst) {
            let _ = child.kill();
            let status = child
                .wait()
                .map_err(|error| format!("failed to wait for {program}: {error}"))?;
            return Ok(exit_code(status));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Kills a forked child and reaps it.
pub(super) fn kill_and_reap(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: a signal to, and a wait for, our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, &mut status, 0);
    }
}

/// An exit code from a status, 128 + the signal for a killed process.
pub(super) fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// How a forked child is stopped when this process is asked to stop.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum OnStop {
    /// SIGTERM passed on (the child stops what it runs and waits for it),
    /// and SIGKILL if it has not ended 10 seconds later.
    PassOn,
    /// SIGKILL at once: the child is a pid namespace's init, which takes
    /// every process of the namespace with it.
    Kill,
}

/// Waits for a forked child; returns its exit code.
pub(super) fn wait_for_pid(pid: libc::pid_t, on_stop: OnStop) -> Result<i32, String> {
    let mut stop_sent: Option<std::time::Instant> = None;
    loop {
        let mut status = 0;
        // SAFETY: polling our own child.
        let done = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if done == pid {
            return Ok(if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            });
        }
        if done < 0 {
            return Err(format!(
                "failed to wait for the stage: {}",
                io::Error::last_os_error()
            ));
        }
        if STOP.load(Ordering::SeqCst) {
            match stop_sent {
                None => {
                    let signal = match on_stop {
                        OnStop::PassOn => libc::SIGTERM,
                        OnStop::Kill => libc::SIGKILL,
                    };
                    // SAFETY: a signal to our own child.
                    unsafe { libc::kill(pid, signal) };
                    stop_sent = Some(std::time::Instant::now());
                }
                Some(sent) if sent.elapsed() > std::time::Duration::from_secs(10) => {
                    // SAFETY: as above.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                Some(_) => {}
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Set by SIGTERM or SIGINT: stop the task, and everything it started.
static STOP: AtomicBool = AtomicBool::new(false);

pub(super) fn catch_stop_signals() -> Result<(), String> {
    extern "C" fn stop(_: libc::c_int) {
        STOP.store(true, Ordering::SeqCst);
    }
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        let previous = unsafe { libc::signal(signal, stop as *const () as libc::sighandler_t) };
        if previous == libc::SIG_ERR {
            return Err(format!(
                "failed to handle signal {signal}: {}",
                io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}
