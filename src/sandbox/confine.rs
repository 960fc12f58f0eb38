//! Running a command inside an image root, confined at least as strictly as
//! a container runtime's defaults.
//!
//! The helper (real root, in a mount namespace of its own) makes the
//! stage's user namespace and mounts each layer through its id mapping.
//! Then, in a first child that joins the user namespace and makes mount,
//! pid, uts, ipc and (unless `network = "host"`) network namespaces owned
//! by it, a second child, pid 1 of the new pid namespace:
//!
//! 1. mounts the overlay of the layers (`userxattr`: overlayfs keeps its
//!    own marks in `user.overlay.*`, which a user namespace may write);
//! 2. mounts a minimal `/dev`, a read-only `/sys` (a fresh one in the
//!    stage's network namespace; with the host's network, the host's with
//!    every mount below it read-only too), a fresh `/tmp` with the stage's scripts, the name server's
//!    `resolv.conf`, and a `/proc` of its own with the usual masked and
//!    read-only paths;
//! 3. `pivot_root`s into the root and detaches the old one, so nothing of
//!    the host is left in its view;
//! 4. cuts its capabilities to the default container set, sets no new
//!    privileges, installs the seccomp filter, and execs the command.
//!
//! Mounts made by the helper are locked in the stage's mount namespace: a
//! read-only one can never be made writable from inside, even by a
//! process that could call `mount` (none can: the filter refuses it).

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::mounts::{
    self, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY,
};
use super::network::{self, ISOLATED_NAMESERVER, Slirp};
use super::process::OnStop;
use super::seccomp::Profile;
use super::spec::{Network, Overlay, Script};
use super::{caps, process, seccomp, userns};

/// Paths of `/proc` and `/sys` a container runtime hides (as runc does).
const MASKED: &[&str] = &[
    "proc/acpi",
    "proc/asound",
    "proc/interrupts",
    "proc/kcore",
    "proc/keys",
    "proc/latency_stats",
    "proc/timer_list",
    "proc/timer_stats",
    "proc/sched_debug",
    "proc/scsi",
    "sys/firmware",
    "sys/devices/virtual/powercap",
];

/// Paths of `/proc` a container runtime makes read-only.
const READ_ONLY: &[&str] = &[
    "proc/bus",
    "proc/fs",
    "proc/irq",
    "proc/sys",
    "proc/sysrq-trigger",
];

/// Nodes of the host's `/dev` a stage gets.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// What one confined command is.
pub struct Confined<'a> {
    pub argv: &'a [String],
    pub env: &'a [(String, String)],
    pub workdir: &'a str,
    pub script: Option<&'a Script>,
    pub network: Network,
    /// A user of the image to run as; `None`: its root.
    pub user: Option<&'a str>,
    pub root: RootOf<'a>,
}

/// What a confined command's root is.
pub enum RootOf<'a> {
    /// The image: the overlay of its layers.
    Image(&'a Overlay),
    /// The host's own programs, for a host tool: its `/usr` and `/etc`
    /// read-only, and these folders of the work folder, writable, at their
    /// own paths.
    Host { writable: &'a [String] },
}

/// The root's mounts, prepared by the helper.
enum Layers {
    /// The overlay's mount options, over layers mounted through the
    /// stage's id mapping.
    Overlay(String),
    /// Writable folders mounted through the id mapping (under `ids/`), and
    /// the host paths where the tool sees them.
    Host(Vec<(PathBuf, PathBuf)>),
}

/// The top-level folders of the host a tool's root has: read-only copies
/// of these, and empty mount points for the rest of [`TOOL_MOUNT_POINTS`].
const TOOL_HOST_FOLDERS: &[&str] = &["usr", "etc"];
const TOOL_MOUNT_POINTS: &[&str] = &["dev", "proc", "sys", "tmp"];

/// The script's name in the root's `/tmp` (or `/dev`).
const SCRIPT_NAME: &str = "kiln-script";

fn fail(what: &str) -> impl FnOnce(io::Error) -> String + '_ {
    move |error| format!("failed to {what}: {error}")
}

fn pipe() -> io::Result<(std::fs::File, std::fs::File)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both were just made and are owned here.
    Ok(unsafe {
        (
            std::fs::File::from(OwnedFd::from_raw_fd(fds[0])),
            std::fs::File::from(OwnedFd::from_raw_fd(fds[1])),
        )
    })
}

/// The overlay's layers mounted through the namespace's mapping, under
/// `ids/` in the work folder; returns the overlay's mount options.
fn idmapped_layers(base: &Path, overlay: &Overlay, userns: &OwnedFd) -> Result<String, String> {
    let ids = base.join("ids");
    std::fs::create_dir_all(&ids).map_err(fail("make the layers' mount points"))?;
    let mut lowers = Vec::new();
    let mut sources: Vec<String> = overlay.lowers.clone();
    // A read-only overlay needs two lowers; an empty one changes nothing.
    let wanted = if overlay.upper.is_some() { 1 } else { 2 };
    while sources.len() < wanted {
        std::fs::create_dir_all(base.join("empty")).map_err(fail("make an empty lower"))?;
        sources.push("empty".to_owned());
    }
    for (index, lower) in sources.iter().enumerate() {
        let target = format!("ids/lower{index}");
        std::fs::create_dir_all(base.join(&target)).map_err(fail("make a mount point"))?;
        mounts::bind_idmapped(&base.join(lower), &base.join(&target), userns, true).map_err(
            |error| {
                format!("failed to mount layer {lower} through the stage's id mapping: {error}")
            },
        )?;
        lowers.push(target);
    }
    let mut options = format!("lowerdir={}", lowers.join(":"));
    if let Some((upper, work)) = &overlay.upper {
        let parent = |path: &str| Path::new(path).parent().map(Path::to_owned);
        let stage = parent(upper)
            .filter(|stage| Some(stage) == parent(work).as_ref() && !stage.as_os_str().is_empty())
            .ok_or("a confined stage's upper and work folders must share a parent")?;
        let name = |path: &str| {
            Path::new(path)
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        std::fs::create_dir_all(base.join("ids/stage")).map_err(fail("make a mount point"))?;
        mounts::bind_idmapped(&base.join(&stage), &base.join("ids/stage"), userns, false).map_err(
            |error| format!("failed to mount the stage's upper through its id mapping: {error}"),
        )?;
        options.push_str(&format!(
            ",upperdir=ids/stage/{},workdir=ids/stage/{}",
            name(upper),
            name(work)
        ));
    }
    options.push_str(",userxattr");
    Ok(options)
}

/// Runs a confined command; returns its exit code.
pub fn run(base: &Path, command: &Confined<'_>) -> Result<i32, String> {
    // Read as the helper, which may: the stage's root may not.
    let script = match command.script {
        None => None,
        Some(Script::Text(text)) => Some(text.clone().into_bytes()),
        Some(Script::File(path)) => Some(
            std::fs::read(path)
                .map_err(|error| format!("failed to read {}: {error}", path.display()))?,
        ),
    };
    if command.network == Network::Isolated {
        std::fs::write(
            base.join("resolv.conf"),
            format!("nameserver {ISOLATED_NAMESERVER}\n"),
        )
        .map_err(fail("write the stage's resolv.conf"))?;
    }
    let userns = userns::create().map_err(fail("make the stage's user namespace"))?;
    let (root, layers) = match &command.root {
        RootOf::Image(overlay) => (
            base.join(&overlay.merged),
            Layers::Overlay(idmapped_layers(base, overlay, &userns)?),
        ),
        RootOf::Host { writable } => {
            let root = base.join("tool-root");
            std::fs::create_dir_all(&root).map_err(fail("make the tool's root"))?;
            let mut binds = Vec::new();
            for (index, folder) in writable.iter().enumerate() {
                let source = base.join(folder);
                let target = base.join(format!("ids/writable{index}"));
                std::fs::create_dir_all(&target).map_err(fail("make a mount point"))?;
                mounts::bind_idmapped(&source, &target, &userns, false).map_err(|error| {
                    format!("failed to mount {folder} through the stage's id mapping: {error}")
                })?;
                binds.push((target, source));
            }
            (root, Layers::Host(binds))
        }
    };
    let (mut ready_read, ready_write) = pipe().map_err(fail("make a pipe"))?;
    let (go_read, mut go_write) = pipe().map_err(fail("make a pipe"))?;
    let setup = Setup {
        base,
        root: &root,
        layers: &layers,
        command,
        script: script.as_deref(),
    };
    // SAFETY: the helper is single-threaded; the child runs `namespaces`
    // and exits.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(format!("failed to fork: {}", io::Error::last_os_error()));
    }
    if child == 0 {
        drop(ready_read);
        drop(go_write);
        let code = match namespaces(&setup, &userns, ready_write, go_read) {
            Ok(code) => code,
            Err(error) => {
                eprintln!("kiln sandbox: {error}");
                127
            }
        };
        // SAFETY: the child ends here, without unwinding into the helper's code.
        unsafe { libc::_exit(code) };
    }
    drop(ready_write);
    drop(go_read);
    drop(userns);
    let mut slirp = None;
    if command.network == Network::Isolated {
        let mut byte = [0u8];
        if ready_read.read(&mut byte).unwrap_or(0) == 1 {
            match Slirp::start(child) {
                Ok(started) => {
                    slirp = Some(started);
                    let _ = go_write.write_all(&[1]);
                }
                Err(error) => {
                    process::kill_and_reap(child);
                    return Err(error.to_string());
                }
            }
        }
    }
    drop(go_write);
    let code = process::wait_for_pid(child, OnStop::PassOn);
    drop(slirp);
    code
}

/// What the stage's pid 1 sets up before it runs the command.
struct Setup<'a> {
    base: &'a Path,
    root: &'a Path,
    layers: &'a Layers,
    command: &'a Confined<'a>,
    script: Option<&'a [u8]>,
}

/// The first child: joins the user namespace, makes the others, and runs
/// the command as pid 1 of the new pid namespace; returns its exit code.
fn namespaces(
    setup: &Setup<'_>,
    userns: &OwnedFd,
    mut ready: std::fs::File,
    mut go: std::fs::File,
) -> Result<i32, String> {
    // SAFETY: plain system calls on this process.
    unsafe {
        if libc::setns(userns.as_fd().as_raw_fd(), libc::CLONE_NEWUSER) != 0 {
            return Err(format!(
                "failed to join the stage's user namespace: {}",
                io::Error::last_os_error()
            ));
        }
        if libc::setresgid(0, 0, 0) != 0 || libc::setresuid(0, 0, 0) != 0 {
            return Err(format!(
                "failed to become the stage's root: {}",
                io::Error::last_os_error()
            ));
        }
    }
    // Made after the ids changed, which clear it.
    process::set_parent_death_signal().map_err(fail("set the parent death signal"))?;
    let network = setup.command.network;
    let mut flags =
        libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    if network != Network::Host {
        flags |= libc::CLONE_NEWNET;
    }
    // SAFETY: a plain system call on this process.
    if unsafe { libc::unshare(flags) } != 0 {
        return Err(format!(
            "failed to create the stage's namespaces: {}",
            io::Error::last_os_error()
        ));
    }
    mounts::mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )
    .map_err(fail("make mounts private"))?;
    // The helper starts slirp4netns for the new network namespace while
    // the root is set up; the command waits for it only before it runs.
    if network == Network::Isolated {
        ready.write_all(&[1]).map_err(fail("signal the helper"))?;
    }
    drop(ready);
    // SAFETY: this process is single-threaded; the child sets up the root
    // and execs the command, or exits.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(format!("failed to fork: {}", io::Error::last_os_error()));
    }
    if child == 0 {
        let network_ready = |script| {
            if network == Network::Isolated {
                let mut byte = [0u8];
                if go.read(&mut byte).unwrap_or(0) != 1 || byte[0] != 1 {
                    return Err(io::Error::other("the stage's network was not set up"));
                }
            }
            Ok(script)
        };
        let error = match prepare(setup)
            .and_then(network_ready)
            .and_then(|script| enter(setup, script))
        {
            Ok(command) => command_error(command),
            Err(error) => error,
        };
        eprintln!("kiln sandbox: {error}");
        // SAFETY: the child ends here when its command could not start.
        unsafe { libc::_exit(127) };
    }
    process::wait_for_pid(child, OnStop::Kill)
}

/// Execs the command; returns only why it could not.
fn command_error(mut command: Command) -> io::Error {
    let program = command.get_program().to_string_lossy().into_owned();
    let error = command.exec();
    io::Error::new(
        error.kind(),
        format!("failed to run {program} in the image: {error}"),
    )
}

/// Mounts the root and what a command in it expects, as pid 1 of the
/// stage's pid namespace; returns where the script is, as the command
/// sees it.
fn prepare(setup: &Setup<'_>) -> io::Result<Option<String>> {
    process::set_parent_death_signal()?;
    let Setup {
        base,
        root,
        layers,
        command,
        script,
    } = *setup;
    let network = command.network;
    std::env::set_current_dir(base)?;
    match layers {
        Layers::Overlay(options) => {
            mounts::mount(Some("overlay"), root, Some("overlay"), 0, Some(options)).map_err(
                |error| {
                    io::Error::new(
                        error.kind(),
                        format!("failed to mount the stage's overlay ({options}): {error}"),
                    )
                },
            )?;
        }
        Layers::Host(_) => host_root(root)?,
    }
    // A mount point missing from the image is left alone rather than
    // made, so the layer never records kiln's scaffolding.
    let dev = root.join("dev");
    if dev.is_dir() {
        mounts::mount(
            Some("tmpfs"),
            &dev,
            Some("tmpfs"),
            libc::MS_NOSUID | libc::MS_NOEXEC,
            Some("mode=0755,size=65536k"),
        )?;
        for node in DEVICES {
            let target = dev.join(node);
            std::fs::File::create(&target)?;
            mounts::bind(&Path::new("/dev").join(node), &target, false)?;
        }
        for (link, target) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
            ("ptmx", "pts/ptmx"),
        ] {
            std::os::unix::fs::symlink(target, dev.join(link))?;
        }
        for dir in ["pts", "shm"] {
            std::fs::create_dir(dev.join(dir))?;
        }
        mounts::mount(
            Some("devpts"),
            &dev.join("pts"),
            Some("devpts"),
            libc::MS_NOSUID | libc::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620"),
        )?;
        mounts::mount(
            Some("shm"),
            &dev.join("shm"),
            Some("tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV,
            Some("mode=1777,size=65536k"),
        )?;
    }
    let sys = root.join("sys");
    if sys.is_dir() {
        // In a network namespace of its own, a fresh sysfs shows that
        // namespace's interfaces, not the host's (and no host cgroups);
        // with the host's network only the host's /sys can be shown.
        let fresh = network != Network::Host
            && mounts::mount(
                Some("sysfs"),
                &sys,
                Some("sysfs"),
                libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                None,
            )
            .is_ok();
        if !fresh {
            mounts::bind_tree(
                Path::new("/sys"),
                &sys,
                MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
            )?;
        }
    }
    let tmp = root.join("tmp");
    if tmp.is_dir() {
        mounts::mount(
            Some("tmpfs"),
            &tmp,
            Some("tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV,
            Some("mode=1777"),
        )?;
    }
    // The script goes where the command can read it and a layer never
    // sees it: the fresh /tmp, or /dev in an image without one.
    let script_path = match script {
        None => None,
        Some(content) => {
            let folder = [("tmp", &tmp), ("dev", &dev)]
                .into_iter()
                .find(|(_, folder)| folder.is_dir())
                .ok_or_else(|| {
                    io::Error::other(
                        "the image has neither /tmp nor /dev, where kiln puts the commands it runs",
                    )
                })?;
            let path = folder.1.join(SCRIPT_NAME);
            std::fs::write(&path, content)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))?;
            Some(format!("/{}/{SCRIPT_NAME}", folder.0))
        }
    };
    let resolv = root.join("etc/resolv.conf");
    let is_plain_file = std::fs::symlink_metadata(&resolv).is_ok_and(|metadata| metadata.is_file());
    let nameservers = match network {
        Network::Isolated => Some(base.join("resolv.conf")),
        Network::Host => Some(PathBuf::from("/etc/resolv.conf")),
        Network::None => None,
    };
    if let Some(nameservers) = nameservers.filter(|path| is_plain_file && path.exists()) {
        mounts::bind(&nameservers, &resolv, true)?;
    }
    // /proc of the new pid namespace: mounted while the host's is still
    // in view (the kernel wants one fully visible proc to allow another).
    let proc = root.join("proc");
    if proc.is_dir() {
        mounts::mount(
            Some("proc"),
            &proc,
            Some("proc"),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            None,
        )?;
        for path in MASKED {
            let target = root.join(path);
            match std::fs::symlink_metadata(&target) {
                Ok(metadata) if metadata.is_dir() => mounts::mount(
                    Some("tmpfs"),
                    &target,
                    Some("tmpfs"),
                    libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    Some("size=0"),
                )?,
                Ok(_) => mounts::bind(Path::new("/dev/null"), &target, true)?,
                Err(_) => {}
            }
        }
        for path in READ_ONLY {
            let target = root.join(path);
            if target.exists() {
                mounts::bind(&target, &target, true)?;
            }
        }
    }
    // A tool's writable folders go on last, over the fresh /tmp too.
    if let Layers::Host(binds) = layers {
        for (source, path) in binds {
            let target = root.join(path.strip_prefix("/").unwrap_or(path));
            std::fs::create_dir_all(&target)?;
            mounts::bind(source, &target, false)?;
        }
    }
    Ok(script_path)
}

/// A tool's root: a tmpfs with the host's top-level links (`bin ->
/// usr/bin`), read-only copies of its [`TOOL_HOST_FOLDERS`], and the
/// mount points the sandbox fills.
fn host_root(root: &Path) -> io::Result<()> {
    mounts::mount(
        Some("tmpfs"),
        root,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=0755"),
    )?;
    for entry in std::fs::read_dir("/")? {
        let entry = entry?;
        let name = entry.file_name();
        let host = Path::new("/").join(&name);
        let target = root.join(&name);
        let metadata = std::fs::symlink_metadata(&host)?;
        let name = name.to_string_lossy();
        if metadata.file_type().is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&host)?, &target)?;
        } else if TOOL_HOST_FOLDERS.contains(&name.as_ref()) {
            std::fs::create_dir(&target)?;
            mounts::bind_tree(&host, &target, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV)?;
        } else if TOOL_MOUNT_POINTS.contains(&name.as_ref()) {
            std::fs::create_dir(&target)?;
        }
    }
    Ok(())
}

/// Moves into the root for good, gives up what a container's process does
/// not have, and returns the command to exec.
fn enter(setup: &Setup<'_>, script: Option<String>) -> io::Result<Command> {
    let command = setup.command;
    let network = command.network;
    let workdir = command.workdir;
    std::env::set_current_dir(setup.root)?;
    // SAFETY: pivot_root(".", ".") stacks the old root under the new one,
    // which the detaching unmount then removes from this namespace.
    unsafe {
        let dot = c".";
        if libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) != 0 {
            return Err(io::Error::other(format!(
                "failed to pivot into the root: {}",
                io::Error::last_os_error()
            )));
        }
        if libc::umount2(dot.as_ptr(), libc::MNT_DETACH) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    std::env::set_current_dir("/")?;
    rustix::system::sethostname(b"kiln")?;
    if network != Network::Host {
        network::loopback_up()?;
    }
    std::env::set_current_dir(workdir).map_err(|error| {
        io::Error::new(
            error.kind(),
            format!("working directory {workdir} in the image: {error}"),
        )
    })?;
    let user = match command.user {
        Some(user) => Some(super::users::lookup(user)?),
        None => None,
    };
    if let (Some(user), Some(script)) = (&user, &script) {
        std::os::unix::fs::chown(script, Some(user.uid), Some(user.gid))?;
    }

    let mut process = Command::new(&command.argv[0]);
    process
        .args(&command.argv[1..])
        .args(script)
        .env_clear()
        .envs(command.env.iter().cloned())
        .stdin(Stdio::null());
    if let Some(user) = user {
        process
            .env("HOME", &user.home)
            .env("USER", &user.name)
            .env("LOGNAME", &user.name);
        let (uid, gid, groups) = (user.uid, user.gid, user.groups);
        // SAFETY: setgroups, setgid and setuid are async-signal-safe, and
        // the closure only reads memory allocated before the fork. The
        // groups go first: after setuid there is no right to change them.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut process, move || {
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let (capabilities, profile) = match command.root {
        RootOf::Image(_) => (caps::DEFAULT, Profile::Stage),
        RootOf::Host { .. } => (caps::DEFAULT | caps::SYS_ADMIN, Profile::Tool),
    };
    caps::limit_to(capabilities).map_err(|error| {
        io::Error::new(
            error.kind(),
            format!("failed to limit capabilities: {error}"),
        )
    })?;
    seccomp::no_new_privileges()?;
    seccomp::install(profile).map_err(|error| {
        io::Error::new(
            error.kind(),
            format!("failed to install the seccomp filter: {error}"),
        )
    })?;
    Ok(process)
}
