//! The helper side of the sandbox: runs as `kiln __sandbox`, in a process
//! of its own, and is the only code in kiln that mounts or enters a root.
//! Commands from a template or an image run confined (`confine.rs`); kiln's
//! own work in the root (copying files in, keeping a failed root) and host
//! commands run on an overlay the helper mounts.

use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::confine::{self, Confined, RootOf};
use super::mounts::mount;
use super::process::{catch_stop_signals, set_parent_death_signal, wait};
use super::spec::{Overlay, Script, Spec, Task};

/// The entry point of `kiln __sandbox`: reads the spec on stdin, runs it,
/// and exits with the task's exit code (127 when the sandbox itself failed).
pub fn helper_main() -> ! {
    let code = match run_helper() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("kiln sandbox: {error}");
            127
        }
    };
    std::process::exit(code)
}

fn run_helper() -> Result<i32, String> {
    catch_stop_signals()?;
    let mut input = Vec::new();
    io::stdin()
        .read_to_end(&mut input)
        .map_err(|error| format!("failed to read the spec: {error}"))?;
    let spec: Spec = serde_json::from_slice(&input)
        .map_err(|error| format!("failed to read the spec: {error}"))?;

    // Files a stage makes get the same modes on every machine (as Docker's RUN).
    // SAFETY: umask only sets this process's file creation mask.
    unsafe { libc::umask(0o022) };
    // SAFETY: this process is single-threaded; nothing shares its fd table.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(format!(
            "failed to create a mount namespace: {}",
            io::Error::last_os_error()
        ));
    }
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )
    .map_err(|error| format!("failed to make mounts private: {error}"))?;
    std::env::set_current_dir(&spec.base)
        .map_err(|error| format!("failed to enter {}: {error}", spec.base.display()))?;

    if let Task::InRoot {
        argv,
        env,
        workdir,
        script,
        network,
        user,
    } = &spec.task
    {
        let overlay = spec
            .overlay
            .as_ref()
            .ok_or("a command in the image needs an overlay")?;
        let command = Confined {
            argv,
            env,
            workdir,
            script: script.as_ref(),
            network: *network,
            user: user.as_deref(),
            root: RootOf::Image(overlay),
        };
        return confine::run(&spec.base, &command);
    }
    if let Task::Tool {
        argv,
        env,
        writable,
        network,
    } = &spec.task
    {
        let command = Confined {
            argv,
            env,
            workdir: "/",
            script: None,
            network: *network,
            user: None,
            root: RootOf::Host { writable },
        };
        return confine::run(&spec.base, &command);
    }

    // Kiln's own work and host commands: in pid, uts and ipc namespaces
    // of their own, the overlay mounted by the helper.
    // SAFETY: as above.
    let unshared =
        unsafe { libc::unshare(libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC) };
    if unshared != 0 {
        return Err(format!(
            "failed to create namespaces: {}",
            io::Error::last_os_error()
        ));
    }
    rustix::system::sethostname(b"kiln")
        .map_err(|error| format!("failed to set the hostname: {error}"))?;
    let merged = match &spec.overlay {
        Some(overlay) => Some(mount_overlay(&spec.base, overlay)?),
        None => None,
    };

    match spec.task {
        Task::InRoot { .. } | Task::Tool { .. } => {
            unreachable!("confined commands returned above")
        }
        Task::Host {
            mut argv,
            env,
            cwd,
            script,
        } => {
            if let Some(script) = script {
                argv.push(
                    write_host_script(&spec.base, &script)?
                        .display()
                        .to_string(),
                );
            }
            let mut command = Command::new(&argv[0]);
            command.args(&argv[1..]).envs(env).current_dir(&cwd);
            if let Some(root) = &merged {
                command.env("KILN_ROOT", root);
            }
            // SAFETY: one syscall in the forked child.
            unsafe {
                command.pre_exec(set_parent_death_signal);
            }
            spawn_and_wait(command)
        }
        Task::CopyIn(copy) => {
            let root = merged.ok_or("copying into the image needs an overlay")?;
            crate::copy_in::copy_into(&root, &copy).map_err(|error| error.to_string())?;
            Ok(0)
        }
        Task::Flatten { destination } => {
            let root = merged.ok_or("flattening needs an overlay")?;
            let mut command = Command::new("cp");
            command
                .arg("-a")
                .arg("--")
                .arg(root.join("."))
                .arg(&destination);
            // SAFETY: one syscall in the forked child.
            unsafe {
                command.pre_exec(set_parent_death_signal);
            }
            spawn_and_wait(command)
        }
    }
}

/// Writes a host command's script into the work folder, readable by root
/// only; returns its path.
fn write_host_script(base: &Path, script: &Script) -> Result<PathBuf, String> {
    let path = base.join(format!("kiln-script-{}", std::process::id()));
    let content = match script {
        Script::Text(text) => text.clone().into_bytes(),
        Script::File(file) => std::fs::read(file)
            .map_err(|error| format!("failed to read {}: {error}", file.display()))?,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o700)
        .open(&path)
        .map_err(|error| format!("failed to write {}: {error}", path.display()))?;
    io::Write::write_all(&mut file, &content)
        .map_err(|error| format!("failed to write {}: {error}", path.display()))?;
    Ok(path)
}

fn spawn_and_wait(mut command: Command) -> Result<i32, String> {
    let program = command.get_program().to_string_lossy().into_owned();
    let child = command
        .spawn()
        .map_err(|error| format!("failed to run {program}: {error}"))?;
    wait(child, &program)
}

/// Mounts the overlay; returns the absolute mount point.
fn mount_overlay(base: &Path, overlay: &Overlay) -> Result<PathBuf, String> {
    let merged = base.join(&overlay.merged);
    let mut lowers = overlay.lowers.clone();
    let mut flags = 0;
    let mut options = String::new();
    match &overlay.upper {
        Some((upper, work)) => options.push_str(&format!("upperdir={upper},workdir={work},")),
        None => {
            // A read-only overlay needs two lowers; an empty one changes nothing.
            std::fs::create_dir_all(base.join("empty"))
                .map_err(|error| format!("failed to make an empty lower: {error}"))?;
            lowers.push("empty".to_owned());
            flags |= libc::MS_RDONLY;
        }
    }
    if lowers.is_empty() {
        std::fs::create_dir_all(base.join("empty"))
            .map_err(|error| format!("failed to make an empty lower: {error}"))?;
        lowers.push("empty".to_owned());
    }
    // userxattr: overlayfs keeps its marks (opaque folders) in
    // `user.overlay.*`, the same as in confined stages, which may not
    // write `trusted.*`; every overlay of kiln reads them alike.
    options.push_str(&format!("lowerdir={},userxattr", lowers.join(":")));
    mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        flags,
        Some(&options),
    )
    .map_err(|error| format!("failed to mount the stage's overlay ({options}): {error}"))?;
    Ok(merged)
}
