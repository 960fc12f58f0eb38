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

const MARK_READY: &str = "kiln-vm: ready";
const MARK_BEGIN: &str = "kiln-vm: begin ";
const MARK_END: &str = "kiln-vm: end ";

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
    #[error("cancelled")]
    Cancelled,
    #[error(transparent)]
    Io(#[from] crate::io_error::IoError),
}

/// One test to run in the machine.
pub struct VmTest {
    /// Its script, for `/bin/sh -e`.
    pub script: String,
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
pub fn install_helper(root: &Path, tests: &[VmTest]) -> io::Result<()> {
    let root = confined::open_root(root)?;
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
             echo '{MARK_READY}'\n\
             for test in /{HELPER_DIR}/tests/*; do\n\
             \x20   number=${{test##*/}}\n\
             \x20   echo \"{MARK_BEGIN}$number\"\n\
             \x20   /bin/sh \"$test/run\" </dev/null 2>&1\n\
             \x20   status=$?\n\
             \x20   echo \"{MARK_END}$number $status\"\n\
             \x20   [ \"$status\" -eq 0 ] || break\n\
             done\n\
             systemctl poweroff --no-block || poweroff -f\n"
        ),
        0o755,
    )?;
    for (index, test) in tests.iter().enumerate() {
        let dir = format!("{HELPER_DIR}/tests/{index:04}");
        write(&format!("{dir}/script"), &test.script, 0o755)?;
        // Plain output: the port is a terminal, and systemctl would colour it.
        let mut run = format!(
            "export SYSTEMD_COLORS=0 SYSTEMD_PAGER= TERM=dumb\ncd {} || exit 1\n",
            quote(&test.workdir)
        );
        for (name, value) in &test.env {
            run.push_str(&format!("export {name}={}\n", quote(value)));
        }
        let script = format!("/{dir}/script");
        match &test.user {
            Some(user) => {
                let (user, group) = match user.split_once(':') {
                    Some((user, group)) => (user, Some(group)),
                    None => (user.as_str(), None),
                };
                run.push_str(&format!("exec setpriv --reuid={} ", quote(user)));
                match group {
                    Some(group) => {
                        run.push_str(&format!("--regid={} --clear-groups", quote(group)))
                    }
                    None => run.push_str("--init-groups"),
                }
                run.push_str(&format!(" /bin/sh -e {script}\n"));
            }
            None => run.push_str(&format!("exec /bin/sh -e {script}\n")),
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

/// Whether KVM runs a guest here: a boot sector that exits qemu through
/// its debug-exit port, with the machine settings tests use. `/dev/kvm`
/// may exist and still fail (a nested host without the CPU features
/// `-cpu host` asks for).
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
        // mov al, 0x31; out 0xf4, al; hlt; jmp $-1
        let mut sector = vec![0xB0, 0x31, 0xE6, 0xF4, 0xF4, 0xEB, 0xFD];
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
            .stderr(Stdio::null())
            .spawn();
        let Ok(mut child) = child else {
            return false;
        };
        let started = Instant::now();
        loop {
            match child.try_wait() {
                // The probe's 0x31 comes back as (0x31 << 1) | 1.
                Ok(Some(status)) => return status.code() == Some(99),
                Ok(None) if started.elapsed() < Duration::from_secs(20) => {
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
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(VmError::NoQemu)?;
    let mut qemu = Qemu(child);
    let mut reader = LineReader::new(&channel);
    let started = Instant::now();
    let mut ready = false;
    let mut current: Option<(usize, Instant)> = None;
    let mut outcomes: Vec<VmOutcome> = Vec::new();
    let finished = |outcomes: &[VmOutcome]| {
        outcomes.len() == tests.len() || outcomes.last().is_some_and(|o| *o != VmOutcome::Exited(0))
    };
    let mut done_at: Option<Instant> = None;
    loop {
        if cancelled.load(Ordering::SeqCst) {
            return Err(VmError::Cancelled);
        }
        for line in reader.new_lines().map_err(IoError::at("read", &channel))? {
            let line = line.trim_end_matches('\r');
            if line == MARK_READY {
                ready = true;
            } else if let Some(number) = line.strip_prefix(MARK_BEGIN) {
                if let Ok(index) = number.trim().parse::<usize>() {
                    current = Some((index, Instant::now()));
                    on_event(VmEvent::Begin(index));
                }
            } else if let Some(rest) = line.strip_prefix(MARK_END) {
                let mut words = rest.split_whitespace();
                let index = words.next().and_then(|word| word.parse::<usize>().ok());
                let status = words.next().and_then(|word| word.parse::<i32>().ok());
                if let (Some(index), Some(status)) = (index, status) {
                    let outcome = VmOutcome::Exited(status);
                    on_event(VmEvent::End(index, &outcome));
                    outcomes.push(outcome);
                    current = None;
                    if finished(&outcomes) {
                        done_at = Some(Instant::now());
                    }
                }
            } else if let Some((index, _)) = current {
                on_event(VmEvent::Line(index, line));
            }
        }
        if let Some((index, since)) = current {
            let timeout = tests
                .get(index)
                .map_or(DEFAULT_TEST_TIMEOUT, |test| test.timeout);
            if since.elapsed() > timeout {
                let outcome = VmOutcome::TimedOut(timeout);
                on_event(VmEvent::End(index, &outcome));
                outcomes.push(outcome);
                return Ok(outcomes);
            }
        }
        if !ready && started.elapsed() > BOOT_TIMEOUT {
            return Err(VmError::NoBoot {
                after: BOOT_TIMEOUT,
                accel,
                firmware,
                console: console_tail(&console),
            });
        }
        if let Some(at) = done_at
            && at.elapsed() > POWEROFF_TIMEOUT
        {
            return Ok(outcomes);
        }
        match qemu
            .0
            .try_wait()
            .map_err(IoError::at("wait for qemu", disk))?
        {
            Some(status) => {
                for line in reader.new_lines().map_err(IoError::at("read", &channel))? {
                    if let Some((index, _)) = current {
                        on_event(VmEvent::Line(index, line.trim_end_matches('\r')));
                    }
                }
                if finished(&outcomes) && status.success() {
                    return Ok(outcomes);
                }
                let mut stderr = String::new();
                if let Some(mut pipe) = qemu.0.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                let mut console = console_tail(&console);
                if !stderr.trim().is_empty() {
                    console = format!("{console}\nqemu: {}", stderr.trim());
                }
                return Err(VmError::Exited {
                    status: status.to_string(),
                    console,
                });
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The last lines of the machine's console, for an error.
fn console_tail(path: &Path) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text
        .lines()
        .map(|line| line.trim_end_matches('\r'))
        .filter(|line| !line.trim().is_empty())
        .collect();
    let start = lines.len().saturating_sub(20);
    lines[start..].join("\n")
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
