//! Booting a bootable disk under qemu to run `in = "vm"` tests inside the
//! machine. The disk booted is a test-only copy: the image's disk plus a
//! helper (a systemd unit that, once the machine is up, runs each test's
//! commands, prints their output and exit status on a second serial port,
//! and powers the machine off). KVM is used when a probe guest with the
//! same machine settings runs on it, TCG otherwise; qemu runs as `nobody`
//! in its own seccomp sandbox, and the guest's network (DHCP only) is
//! restricted from the host and the world.

use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::confined::{self, Resolve};
use crate::disk::BootMode;
use crate::io_error::IoError;

/// Where the helper lives in the test copy of the disk.
const HELPER_DIR: &str = "usr/lib/kiln-vm-test";
const UNIT_NAME: &str = "kiln-vm-test.service";
/// How long the machine may take to come up and start the helper.
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
/// How long it may take to power off after the last test.
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(120);
/// A test without its own `timeout`.
pub const DEFAULT_TEST_TIMEOUT: Duration = Duration::from_secs(600);

/// The helper's markers are `kiln-vm-NONCE: ready`, `… begin N` and
/// `… end N STATUS`, each on a line of its own (a newline first, so a
/// test's output without one does not swallow it). The nonce is new for
/// every run: neither a test's output nor a file the image ships can pass
/// for a marker by accident.
const MARK: &str = "kiln-vm-";

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("failed to run qemu-system-x86_64 (apt-get install qemu-system-x86)")]
    NoQemu(#[source] io::Error),
    #[error("find UEFI firmware for the machine (apt-get install ovmf)")]
    NoFirmware,
    #[error(
        "the machine did not start kiln's test helper within {}s ({accel}, {firmware}); its console ended with:\n{console}",
        after.as_secs()
    )]
    NoBoot {
        after: Duration,
        accel: &'static str,
        firmware: &'static str,
        console: String,
    },
    #[error(
        "qemu exited with {status} before the tests finished; the console ended with:\n{console}"
    )]
    Exited { status: String, console: String },
    #[error("qemu stopped the machine ({accel}): {console}")]
    Halted {
        accel: &'static str,
        console: String,
    },
    #[error("cancelled")]
    Cancelled,
    #[error(transparent)]
    Io(#[from] crate::io_error::IoError),
}

/// One test to run in the machine.
pub struct VmTest {
    /// Its scripts, run in order until one fails: its inline commands as
    /// one script for `/bin/sh -e`, or its script file, as a chroot test
    /// runs them.
    pub scripts: Vec<String>,
    pub errexit: bool,
    pub env: Vec<(String, String)>,
    pub workdir: String,
    pub user: Option<String>,
    pub timeout: Duration,
}

/// What happened to each test, in order; tests after a failure do not run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmOutcome {
    Exited(i32),
    TimedOut(Duration),
}

/// What the machine reports as it runs.
pub enum VmEvent<'a> {
    Booting {
        accel: &'static str,
        firmware: &'static str,
    },
    Begin(usize),
    Line(usize, &'a str),
    End(usize, &'a VmOutcome),
}

/// Writes the helper into `root` (the flattened image the test disk is
/// made of): the unit, enabled, the runner and each test. Every path is
/// resolved inside the root, so the image's symlinks cannot send a write
/// to the host.
pub fn install_helper(root: &Path, tests: &[VmTest], nonce: &str) -> io::Result<()> {
    let root = confined::open_root(root)?;
    // Only kiln's tests run: whatever the image has at the helper's place goes.
    let (parents, name) = confined::split_entry_path(HELPER_DIR.as_bytes())
        .map_err(io::Error::other)?
        .ok_or_else(|| io::Error::other("the helper's folder is the root"))?;
    let parent = confined::open_dir(&root, &parents, Resolve::InRoot, true)?;
    confined::remove_at(&parent, &name)?;
    let write = |path: &str, text: &str, mode: u32| -> io::Result<()> {
        let (parents, name) = confined::split_entry_path(path.as_bytes())
            .map_err(io::Error::other)?
            .ok_or_else(|| io::Error::other("the helper's path is the root"))?;
        let dir = confined::open_dir(&root, &parents, Resolve::InRoot, true)?;
        confined::remove_at(&dir, &name)?;
        confined::create_file(
            &dir,
            &name,
            &mut text.as_bytes(),
            (0, 0),
            rustix::fs::Mode::from_raw_mode(mode),
        )?;
        Ok(())
    };
    write(
        &format!("{HELPER_DIR}/run"),
        &format!(
            "#!/bin/sh\n\
             mark() {{ printf '\\n{MARK}{nonce}: %s\\n' \"$*\"; }}\n\
             mark ready\n\
             for test in /{HELPER_DIR}/tests/*; do\n\
             \x20   number=${{test##*/}}\n\
             \x20   mark begin \"$number\"\n\
             \x20   /bin/sh \"$test/run\" </dev/null 2>&1\n\
             \x20   status=$?\n\
             \x20   mark end \"$number\" \"$status\"\n\
             \x20   [ \"$status\" -eq 0 ] || break\n\
             done\n\
             systemctl poweroff --no-block || poweroff -f\n"
        ),
        0o755,
    )?;
    for (index, test) in tests.iter().enumerate() {
        let dir = format!("{HELPER_DIR}/tests/{index:04}");
        for (number, script) in test.scripts.iter().enumerate() {
            write(&format!("{dir}/script{number}"), script, 0o755)?;
        }
        // Plain output: the port is a terminal, and systemctl would colour it.
        let mut run = format!(
            "export SYSTEMD_COLORS=0 SYSTEMD_PAGER= TERM=dumb\ncd {} || exit 1\n",
            quote(&test.workdir)
        );
        for (name, value) in &test.env {
            if is_env_name(name) {
                run.push_str(&format!("export {name}={}\n", quote(value)));
            }
        }
        let prefix = match &test.user {
            // As a chroot test's: the user's primary group unless one is
            // named, its supplementary groups when the image knows the user,
            // and a bare uid as itself.
            Some(user) => {
                let (user, group) = match user.split_once(':') {
                    Some((user, group)) => (quote(user), Some(quote(group))),
                    None => (quote(user), None),
                };
                run.push_str(&format!(
                    "if id {user} >/dev/null 2>&1; then kiln_gid=$(id -g {user}); kiln_groups=--init-groups; \
                     else kiln_gid={user}; kiln_groups=--clear-groups; fi\n"
                ));
                if let Some(group) = group {
                    run.push_str(&format!(
                        "kiln_gid=$(getent group {group} | cut -d: -f3); [ -n \"$kiln_gid\" ] || kiln_gid={group}\n"
                    ));
                }
                format!("setpriv --reuid={user} --regid=\"$kiln_gid\" $kiln_groups ")
            }
            None => String::new(),
        };
        let shell = if test.errexit {
            "/bin/sh -e"
        } else {
            "/bin/sh"
        };
        for number in 0..test.scripts.len() {
            run.push_str(&format!(
                "{prefix}{shell} /{dir}/script{number} || exit $?\n"
            ));
        }
        write(&format!("{dir}/run"), &run, 0o700)?;
    }
    write(
        &format!("etc/systemd/system/{UNIT_NAME}"),
        &format!(
            "[Unit]\n\
             Description=kiln: run the image's tests in the machine\n\
             After=multi-user.target\n\n\
             [Service]\n\
             Type=simple\n\
             ExecStart=/{HELPER_DIR}/run\n\
             StandardOutput=tty\n\
             StandardError=tty\n\
             TTYPath=/dev/ttyS1\n\n\
             [Install]\n\
             WantedBy=multi-user.target\n"
        ),
        0o644,
    )?;
    let wants: Vec<std::ffi::OsString> = ["etc", "systemd", "system", "multi-user.target.wants"]
        .into_iter()
        .map(Into::into)
        .collect();
    let wants = confined::open_dir(&root, &wants, Resolve::InRoot, true)?;
    confined::remove_at(&wants, std::ffi::OsStr::new(UNIT_NAME))?;
    rustix::fs::symlinkat(format!("../{UNIT_NAME}"), &wants, UNIT_NAME)?;
    Ok(())
}

/// A new nonce for the helper's markers.
pub fn nonce() -> io::Result<String> {
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

impl VmError {
    /// The error with `redact` applied to what the machine printed (its
    /// kernel command line may hold a sensitive value).
    pub fn redacted(self, redact: impl Fn(&str) -> String) -> Self {
        match self {
            VmError::NoBoot {
                after,
                accel,
                firmware,
                console,
            } => VmError::NoBoot {
                after,
                accel,
                firmware,
                console: redact(&console),
            },
            VmError::Halted { accel, console } => VmError::Halted {
                accel,
                console: redact(&console),
            },
            VmError::Exited { status, console } => VmError::Exited {
                status,
                console: redact(&console),
            },
            other => other,
        }
    }
}

/// A name `/bin/sh` can export.
fn is_env_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// One word for `/bin/sh`, in single quotes.
fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The UEFI firmware: code and a template of its variables.
fn ovmf() -> Option<(PathBuf, PathBuf)> {
    [
        (
            "/usr/share/OVMF/OVMF_CODE_4M.fd",
            "/usr/share/OVMF/OVMF_VARS_4M.fd",
        ),
        (
            "/usr/share/OVMF/OVMF_CODE.fd",
            "/usr/share/OVMF/OVMF_VARS.fd",
        ),
    ]
    .into_iter()
    .map(|(code, vars)| (PathBuf::from(code), PathBuf::from(vars)))
    .find(|(code, vars)| code.is_file() && vars.is_file())
}

/// The machine every boot uses, beside the accelerator.
const MACHINE: &[&str] = &["-machine", "q35", "-smp", "2", "-m", "1024"];

/// Whether KVM runs a guest here: a boot sector that starts the FPU and
/// asks CPUID, as firmware does first, then exits qemu through its
/// debug-exit port, with the machine settings tests use. `/dev/kvm` may
/// exist and still fail: a nested host without the CPU features `-cpu
/// host` asks for, or one whose KVM cannot emulate `fninit` in real mode
/// (OVMF then stops with "KVM internal error" and qemu hangs), which a
/// sector of plain moves would pass. A probe that stalls fails at once
/// when qemu reports the internal error.
pub fn kvm_works() -> bool {
    static WORKS: OnceLock<bool> = OnceLock::new();
    *WORKS.get_or_init(|| {
        if !Path::new("/dev/kvm").exists() {
            return false;
        }
        let Ok(dir) = tempfile::tempdir() else {
            return false;
        };
        let probe = dir.path().join("probe.img");
        let log = dir.path().join("probe.log");
        // fwait; fninit; mov eax, 1; cpuid; mov al, 0x31; out 0xf4, al; hlt; jmp $-1
        let mut sector = vec![
            0x9B, 0xDB, 0xE3, 0x66, 0xB8, 0x01, 0x00, 0x00, 0x00, 0x0F, 0xA2, 0xB0, 0x31, 0xE6,
            0xF4, 0xF4, 0xEB, 0xFD,
        ];
        sector.resize(510, 0);
        sector.extend([0x55, 0xAA]);
        // A disk of one sector does not boot on q35: make it a MiB.
        sector.resize(1 << 20, 0);
        if std::fs::write(&probe, sector).is_err() {
            return false;
        }
        let child = Command::new("qemu-system-x86_64")
            .args(["-accel", "kvm", "-cpu", "host"])
            .args(MACHINE)
            .args(["-nodefaults", "-display", "none", "-no-reboot"])
            .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
            .arg("-drive")
            .arg(format!("file={},format=raw,if=virtio", probe.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(match std::fs::File::create(&log) {
                Ok(file) => Stdio::from(file),
                Err(_) => Stdio::null(),
            })
            .spawn();
        let Ok(mut child) = child else {
            return false;
        };
        let started = Instant::now();
        loop {
            let stalled =
                std::fs::read_to_string(&log).is_ok_and(|text| text.contains("KVM internal error"));
            match child.try_wait() {
                // The probe's 0x31 comes back as (0x31 << 1) | 1.
                Ok(Some(status)) => return status.code() == Some(99),
                Ok(None) if !stalled && started.elapsed() < Duration::from_secs(20) => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return false;
                }
            }
        }
    })
}

/// Kills qemu when the run ends, however it ends.
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Boots `disk` (raw; changed by the boot, so a throwaway copy) with
/// `boot`'s firmware, using `work` for its logs, and runs `tests` there.
pub fn run_tests(
    disk: &Path,
    boot: BootMode,
    work: &Path,
    tests: &[VmTest],
    nonce: &str,
    cancelled: &AtomicBool,
    on_event: &mut dyn FnMut(VmEvent<'_>),
) -> Result<Vec<VmOutcome>, VmError> {
    let console = work.join("console.log");
    let channel = work.join("tests.log");
    for path in [&console, &channel] {
        std::fs::write(path, b"").map_err(IoError::at("create", path))?;
    }
    let kvm = kvm_works();
    let accel = if kvm { "kvm" } else { "tcg" };
    let mut command = Command::new("qemu-system-x86_64");
    command
        .args(["-accel", accel])
        .args(if kvm { &["-cpu", "host"][..] } else { &[][..] })
        .args(MACHINE)
        .args(["-nodefaults", "-display", "none", "-no-reboot"])
        .args(["-runas", "nobody"])
        .args([
            "-sandbox",
            // Privileges are dropped by -runas, after the filter is in
            // place, so elevateprivileges stays allowed.
            "on,obsolete=deny,spawn=deny,resourcecontrol=deny",
        ])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-serial")
        .arg(format!("file:{}", channel.display()))
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio", disk.display()))
        .args([
            "-netdev",
            "user,id=net0,restrict=on",
            "-device",
            "virtio-net-pci,netdev=net0",
        ]);
    let firmware = if boot.uefi() && (boot == BootMode::Uefi || ovmf().is_some()) {
        let (code, vars_template) = ovmf().ok_or(VmError::NoFirmware)?;
        let vars = work.join("OVMF_VARS.fd");
        std::fs::copy(&vars_template, &vars).map_err(IoError::at("copy", &vars_template))?;
        command
            .arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,readonly=on,file={}",
                code.display()
            ))
            .arg("-drive")
            .arg(format!("if=pflash,format=raw,file={}", vars.display()));
        "uefi"
    } else {
        "bios"
    };
    on_event(VmEvent::Booting { accel, firmware });
    // qemu's own messages go to a file: a pipe nobody reads would stall it.
    let qemu_log = work.join("qemu.log");
    let log = std::fs::File::create(&qemu_log).map_err(IoError::at("create", &qemu_log))?;
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(VmError::NoQemu)?;
    let mut qemu = Qemu(child);
    let mut reader = LineReader::new(&channel);
    let mut run = Run {
        marker: format!("{MARK}{nonce}: "),
        tests,
        ready: false,
        current: None,
        outcomes: Vec::new(),
        done_at: None,
    };
    let started = Instant::now();
    let mut last_check = started;
    loop {
        if cancelled.load(Ordering::SeqCst) {
            return Err(VmError::Cancelled);
        }
        for line in reader.new_lines().map_err(IoError::at("read", &channel))? {
            run.line(&line, on_event);
        }
        if let Some((index, since)) = run.current {
            let timeout = tests
                .get(index)
                .map_or(DEFAULT_TEST_TIMEOUT, |test| test.timeout);
            if since.elapsed() > timeout {
                let outcome = VmOutcome::TimedOut(timeout);
                on_event(VmEvent::End(index, &outcome));
                run.outcomes.push(outcome);
                return Ok(run.outcomes);
            }
        }
        // A KVM that cannot emulate what the guest runs pauses it for good.
        if last_check.elapsed() > Duration::from_secs(1) {
            last_check = Instant::now();
            if std::fs::read_to_string(&qemu_log).is_ok_and(|text| text.contains("internal error"))
            {
                return Err(VmError::Halted {
                    accel,
                    console: console_tail(&console, &qemu_log),
                });
            }
        }
        if !run.ready && started.elapsed() > BOOT_TIMEOUT {
            return Err(VmError::NoBoot {
                after: BOOT_TIMEOUT,
                accel,
                firmware,
                console: console_tail(&console, &qemu_log),
            });
        }
        if let Some(at) = run.done_at
            && at.elapsed() > POWEROFF_TIMEOUT
        {
            return Ok(run.outcomes);
        }
        match qemu
            .0
            .try_wait()
            .map_err(IoError::at("wait for qemu", disk))?
        {
            Some(status) => {
                for line in reader.new_lines().map_err(IoError::at("read", &channel))? {
                    run.line(&line, on_event);
                }
                if run.finished() && status.success() {
                    return Ok(run.outcomes);
                }
                return Err(VmError::Exited {
                    status: status.to_string(),
                    console: console_tail(&console, &qemu_log),
                });
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// What the helper has said so far.
struct Run<'a> {
    marker: String,
    tests: &'a [VmTest],
    ready: bool,
    current: Option<(usize, Instant)>,
    outcomes: Vec<VmOutcome>,
    done_at: Option<Instant>,
}

impl Run<'_> {
    /// Every test has ended, or one failed.
    fn finished(&self) -> bool {
        self.outcomes.len() == self.tests.len()
            || self
                .outcomes
                .last()
                .is_some_and(|outcome| *outcome != VmOutcome::Exited(0))
    }

    /// One line from the helper's port: a marker (anywhere in it, what
    /// comes before being output), or a line of the current test's output.
    fn line(&mut self, line: &str, on_event: &mut dyn FnMut(VmEvent<'_>)) {
        let line = line.trim_end_matches('\r');
        let (output, mark) = match line.find(&self.marker) {
            Some(at) => (&line[..at], Some(&line[at + self.marker.len()..])),
            None => (line, None),
        };
        // Blank lines are dropped: the helper puts one before each marker.
        if let Some((index, _)) = self.current
            && !output.is_empty()
        {
            on_event(VmEvent::Line(index, output));
        }
        let Some(mark) = mark else {
            return;
        };
        let words: Vec<&str> = mark.split_whitespace().collect();
        // Tests begin and end in order, one at a time: any other marker is
        // not the helper's.
        let expected = self.outcomes.len();
        match words.as_slice() {
            ["ready"] => self.ready = true,
            ["begin", number] if self.current.is_none() && number.parse() == Ok(expected) => {
                self.current = Some((expected, Instant::now()));
                on_event(VmEvent::Begin(expected));
            }
            ["end", number, status]
                if self.current.is_some_and(|(index, _)| index == expected)
                    && number.parse() == Ok(expected) =>
            {
                let Ok(status) = status.parse::<i32>() else {
                    return;
                };
                let outcome = VmOutcome::Exited(status);
                on_event(VmEvent::End(expected, &outcome));
                self.outcomes.push(outcome);
                self.current = None;
                if self.finished() {
                    self.done_at = Some(Instant::now());
                }
            }
            _ => {}
        }
    }
}

/// The last lines of the machine's console, and what qemu said, for an
/// error.
fn console_tail(console: &Path, qemu_log: &Path) -> String {
    let text = std::fs::read(console).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text
        .lines()
        .map(|line| line.trim_end_matches('\r'))
        .filter(|line| !line.trim().is_empty())
        .collect();
    let start = lines.len().saturating_sub(20);
    let mut tail = lines[start..].join("\n");
    let said = std::fs::read(qemu_log).unwrap_or_default();
    let said = String::from_utf8_lossy(&said);
    if !said.trim().is_empty() {
        tail.push_str(&format!("\nqemu: {}", said.trim()));
    }
    tail
}

/// Reads whole lines appended to a file since the last call.
struct LineReader {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl LineReader {
    fn new(path: &Path) -> Self {
        LineReader {
            path: path.to_owned(),
            offset: 0,
            partial: Vec::new(),
        }
    }

    fn new_lines(&mut self) -> io::Result<Vec<String>> {
        let mut file = std::fs::File::open(&self.path)?;
        file.seek(SeekFrom::Start(self.offset))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        self.offset += bytes.len() as u64;
        self.partial.extend(bytes);
        let mut lines = Vec::new();
        while let Some(end) = self.partial.iter().position(|byte| *byte == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            lines.push(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
        }
        Ok(lines)
    }
}
