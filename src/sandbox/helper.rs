//! The helper side of the sandbox: runs as `kiln __sandbox`, in a process
//! of its own, and is the only code in kiln that mounts or chroots.

use std::ffi::CString;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::spec::{Overlay, Spec, Task};

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
    let unshared = unsafe {
        libc::unshare(
            libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC,
        )
    };
    if unshared != 0 {
        return Err(format!(
            "failed to create namespaces: {}",
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
    rustix::system::sethostname(b"kiln")
        .map_err(|error| format!("failed to set the hostname: {error}"))?;
    std::env::set_current_dir(&spec.base)
        .map_err(|error| format!("failed to enter {}: {error}", spec.base.display()))?;
    let merged = match &spec.overlay {
        Some(overlay) => Some(mount_overlay(&spec.base, overlay)?),
        None => None,
    };

    match spec.task {
        Task::Chroot {
            argv,
            env,
            workdir,
            scripts,
        } => {
            let root = merged.ok_or("a chroot task needs an overlay")?;
            prepare_root(&root, &scripts)?;
            let mut command = Command::new(&argv[0]);
            command.args(&argv[1..]).env_clear().envs(env);
            let chroot_root = root.clone();
            // SAFETY: the closure runs in the forked child before exec; the
            // helper is single-threaded, so allocating there is sound.
            unsafe {
                command.pre_exec(move || {
                    set_parent_death_signal()?;
                    // /proc must be mounted from inside the new pid namespace.
                    let proc_dir = chroot_root.join("proc");
                    if proc_dir.is_dir() {
                        mount(
                            Some("proc"),
                            &proc_dir,
                            Some("proc"),
                            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                            None,
                        )?;
                    }
                    std::os::unix::fs::chroot(&chroot_root)?;
                    std::env::set_current_dir(&workdir).map_err(|error| {
                        io::Error::new(
                            error.kind(),
                            format!("working directory {workdir} in the image: {error}"),
                        )
                    })
                });
            }
            wait(command)
        }
        Task::Host { argv, env, cwd } => {
            let mut command = Command::new(&argv[0]);
            command.args(&argv[1..]).envs(env).current_dir(&cwd);
            if let Some(root) = &merged {
                command.env("KILN_ROOT", root);
            }
            // SAFETY: one syscall in the forked child.
            unsafe {
                command.pre_exec(set_parent_death_signal);
            }
            wait(command)
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
            wait(command)
        }
    }
}

fn set_parent_death_signal() -> io::Result<()> {
    // SAFETY: prctl with these arguments only sets a flag of this process.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Runs the task's process and waits for it. When asked to stop (SIGTERM
/// from kiln, or SIGINT from a terminal), kills it and reaps it: it is the
/// init of the stage's pid namespace, and the kernel reaps it only after
/// every other process in the namespace is gone, so when the helper exits,
/// nothing of the stage is left running.
fn wait(mut command: Command) -> Result<i32, String> {
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command
        .spawn()
        .map_err(|error| format!("failed to run {program}: {error}"))?;
    let code = |status: std::process::ExitStatus| {
        status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
    };
    loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|error| format!("failed to wait for {program}: {error}"))?
        {
            return Ok(code(status));
        }
        if STOP.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = child.kill();
            let status = child
                .wait()
                .map_err(|error| format!("failed to wait for {program}: {error}"))?;
            return Ok(code(status));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Set by SIGTERM or SIGINT: stop the task, and everything it started.
static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn catch_stop_signals() -> Result<(), String> {
    extern "C" fn stop(_: libc::c_int) {
        STOP.store(true, std::sync::atomic::Ordering::SeqCst);
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

fn mount(
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let c =
        |text: &str| CString::new(text).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let source = source.map(c).transpose()?;
    let target_c = CString::new(target.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let fstype = fstype.map(c).transpose()?;
    let data = data.map(c).transpose()?;
    let pointer = |value: &Option<CString>| {
        value
            .as_ref()
            .map_or(std::ptr::null(), |value| value.as_ptr())
    };
    // SAFETY: every pointer is a valid NUL-terminated string or null.
    let result = unsafe {
        libc::mount(
            pointer(&source),
            target_c.as_ptr(),
            pointer(&fstype),
            flags,
            pointer(&data).cast(),
        )
    };
    if result != 0 {
        let error = io::Error::last_os_error();
        return Err(io::Error::new(
            error.kind(),
            format!("mount on {}: {error}", target.display()),
        ));
    }
    Ok(())
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
    options.push_str(&format!(
        "lowerdir={},metacopy=off,redirect_dir=off,index=off,xino=off",
        lowers.join(":")
    ));
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

/// Mounts what a command in the root expects: /dev (a few host nodes bound
/// into a tmpfs), /sys read-only, /tmp, and the host's resolv.conf. A mount
/// point missing from the image is left alone rather than created, so the
/// layer never records kiln's scaffolding.
fn prepare_root(root: &Path, scripts: &[(PathBuf, String)]) -> Result<(), String> {
    let fail = |what: &str| {
        let what = what.to_owned();
        move |error: io::Error| format!("failed to set up {what} in the image: {error}")
    };
    let dev = root.join("dev");
    if dev.is_dir() {
        mount(
            Some("tmpfs"),
            &dev,
            Some("tmpfs"),
            libc::MS_NOSUID | libc::MS_NOEXEC,
            Some("mode=0755,size=65536k"),
        )
        .map_err(fail("/dev"))?;
        for node in ["null", "zero", "full", "random", "urandom", "tty"] {
            let target = dev.join(node);
            std::fs::File::create(&target).map_err(fail("/dev"))?;
            mount(
                Some(&format!("/dev/{node}")),
                &target,
                None,
                libc::MS_BIND,
                None,
            )
            .map_err(fail("/dev"))?;
        }
        for (link, target) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
            ("ptmx", "pts/ptmx"),
        ] {
            std::os::unix::fs::symlink(target, dev.join(link)).map_err(fail("/dev"))?;
        }
        for dir in ["pts", "shm"] {
            std::fs::create_dir(dev.join(dir)).map_err(fail("/dev"))?;
        }
        mount(
            Some("devpts"),
            &dev.join("pts"),
            Some("devpts"),
            libc::MS_NOSUID | libc::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620"),
        )
        .map_err(fail("/dev/pts"))?;
        mount(
            Some("shm"),
            &dev.join("shm"),
            Some("tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV,
            Some("mode=1777,size=65536k"),
        )
        .map_err(fail("/dev/shm"))?;
    }
    let sys = root.join("sys");
    if sys.is_dir() {
        mount(Some("/sys"), &sys, None, libc::MS_BIND | libc::MS_REC, None)
            .map_err(fail("/sys"))?;
        mount(
            None,
            &sys,
            None,
            libc::MS_BIND
                | libc::MS_REMOUNT
                | libc::MS_RDONLY
                | libc::MS_NOSUID
                | libc::MS_NODEV
                | libc::MS_NOEXEC,
            None,
        )
        .map_err(fail("/sys"))?;
    }
    let tmp = root.join("tmp");
    if tmp.is_dir() {
        mount(
            Some("tmpfs"),
            &tmp,
            Some("tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV,
            Some("mode=1777"),
        )
        .map_err(fail("/tmp"))?;
    }
    for (host, name) in scripts {
        if !tmp.is_dir() {
            return Err("the image has no /tmp to run scripts from".to_owned());
        }
        std::fs::copy(host, tmp.join(name))
            .map_err(|error| format!("failed to copy {} into /tmp: {error}", host.display()))?;
    }
    let resolv = root.join("etc/resolv.conf");
    let is_plain_file = std::fs::symlink_metadata(&resolv).is_ok_and(|metadata| metadata.is_file());
    if is_plain_file && Path::new("/etc/resolv.conf").exists() {
        mount(Some("/etc/resolv.conf"), &resolv, None, libc::MS_BIND, None)
            .map_err(fail("/etc/resolv.conf"))?;
        mount(
            None,
            &resolv,
            None,
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
            None,
        )
        .map_err(fail("/etc/resolv.conf"))?;
    }
    Ok(())
}
