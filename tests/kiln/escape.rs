//! The escape suite: every way out of the sandbox that issue 12 found,
//! tried from a provisioner (with each network) and from a `[[test]]`, in
//! a real Debian root where ordinary work (apt-get from the mirror,
//! useradd, chown, setuid files, a service's config test) still succeeds.
//! And the stage cache: no stage or test can change a cached tree, and
//! `kiln cache verify` finds and drops one changed behind kiln's back.

use std::io::ErrorKind;
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::util::{Outcome, TestEnv, busybox_template, repo_root, require_tool};

/// A TCP service on the host's loopback that counts who reached it.
struct LoopbackService {
    port: u16,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LoopbackService {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let accepted = accepted.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok(_) => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(error) if error.kind() == ErrorKind::WouldBlock => {
                            std::thread::sleep(std::time::Duration::from_millis(20));
                        }
                        Err(error) => panic!("accept: {error}"),
                    }
                }
            })
        };
        Self {
            port,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for LoopbackService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `major:minor` of the device the host's root file system is on.
fn host_root_device() -> String {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mountinfo
        .lines()
        .map(|line| line.split(' ').collect::<Vec<_>>())
        .find(|fields| fields.get(4) == Some(&"/"))
        .map(|fields| fields[2].to_owned())
        .expect("the host's root in /proc/self/mountinfo")
}

fn host_interfaces() -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != "lo")
        .collect()
}

/// What every run of `attempts.sh` must report blocked.
const ALWAYS_BLOCKED: &[&str] = &[
    "mknod-host-disk",
    "mount-host-disk",
    "mount-tmpfs",
    "read-host-marker",
    "chroot-breakout",
    "open-by-handle-at",
    "remount-resolv-conf",
    "remount-sys",
    "write-sys-block",
    "make-cgroup",
    "write-cgroup-procs",
    "write-core-pattern",
    "open-sysrq-trigger",
    "signal-host-process",
    "syscall-mount",
    "syscall-umount2",
    "syscall-pivot_root",
    "syscall-init_module",
    "syscall-finit_module",
    "syscall-delete_module",
    "syscall-kexec_load",
    "syscall-bpf",
    "syscall-perf_event_open",
    "syscall-add_key",
    "syscall-keyctl",
    "syscall-request_key",
    "syscall-reboot",
    "syscall-swapon",
    "syscall-swapoff",
    "syscall-settimeofday",
    "syscall-clock_settime",
    "syscall-adjtimex",
    "syscall-unshare-user",
    "syscall-unshare-net",
    "syscall-setns",
    "syscall-open_by_handle_at",
    "raw-socket",
    "add-address",
    "add-link",
];

/// Blocked too when the run has a network namespace of its own.
const BLOCKED_WITHOUT_HOST_NETWORK: &[&str] = &[
    "connect-host-loopback-127.0.0.1",
    "connect-host-loopback-10.0.2.2",
    "see-host-interfaces",
];

/// The lines of one run's output, from the `--json` events.
fn run_lines(outcome: &Outcome, run: &Run) -> Vec<String> {
    outcome
        .stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| match run {
            Run::Stage(number) => event["event"] == "stage_output" && event["stage"] == *number,
            Run::Test(name) => event["event"] == "test_output" && event["name"] == *name,
        })
        .filter_map(|event| event["line"].as_str().map(str::to_owned))
        .collect()
}

enum Run {
    Stage(u64),
    Test(&'static str),
}

fn assert_all_blocked(outcome: &Outcome, run: Run, network: &str) {
    let lines = run_lines(outcome, &run);
    let label = match &run {
        Run::Stage(number) => format!("stage {number} (network {network})"),
        Run::Test(name) => format!("test `{name}` (network {network})"),
    };
    let escaped: Vec<&String> = lines
        .iter()
        .filter(|line| line.starts_with("ESCAPED"))
        .collect();
    assert!(escaped.is_empty(), "{label}: {escaped:#?}");
    assert!(
        lines.iter().any(|line| line == "attempts done"),
        "{label} did not finish its attempts: {lines:#?}"
    );
    let mut required: Vec<&str> = ALWAYS_BLOCKED.to_vec();
    if network != "host" {
        required.extend(BLOCKED_WITHOUT_HOST_NETWORK);
    }
    for name in required {
        assert!(
            lines.iter().any(|line| line == &format!("blocked {name}")),
            "{label}: `{name}` was not tried: {lines:#?}"
        );
    }
}

#[test]
fn no_stage_or_test_gets_out_while_ordinary_work_succeeds() {
    require_tool("mmdebstrap", "mmdebstrap");
    require_tool("slirp4netns", "slirp4netns");
    require_tool("umoci", "umoci");
    let env = TestEnv::new();
    let service = LoopbackService::start();
    let marker = env.path("host-only-marker");
    std::fs::write(&marker, b"the host's").unwrap();
    let attempts = repo_root().join("fixtures/escape/attempts.sh");
    let probe_env = |network: &str| {
        format!(
            "{{ HOST_DISK = \"{}\", HOST_MARKER = \"{}\", HOST_PORT = \"{}\", HOST_IFACES = \"{}\", HOST_PID = \"{}\", PROBE_NETWORK = \"{network}\" }}",
            host_root_device(),
            marker.display(),
            service.port,
            host_interfaces().join(" "),
            std::process::id(),
        )
    };
    let attempt = |network: &str| {
        format!(
            "\n[[provisioner]]\ntype = \"shell\"\nnetwork = \"{network}\"\nscript = \"{}\"\nenv = {}\n",
            attempts.display(),
            probe_env(network)
        )
    };
    let template = env.write(
        "escape.toml",
        &format!(
            "[image]\nname = \"escape\"\nversion = \"1\"\n\n\
             [source]\ntype = \"debootstrap\"\nsuite = \"bookworm\"\nvariant = \"minbase\"\n\n\
             [[provisioner]]\ntype = \"shell\"\nenv = {{ DEBIAN_FRONTEND = \"noninteractive\" }}\ntimeout = \"10m\"\ninline = [\n\
               \"apt-get update\",\n\
               \"apt-get install -y --no-install-recommends nginx-light iproute2\",\n\
               \"useradd -m -u 1234 -s /bin/bash builder\",\n\
               \"install -d /srv/data && chown builder:builder /srv/data\",\n\
               \"install -m 4755 /bin/true /usr/local/bin/suid-true\",\n\
               \"nginx -t\",\n\
               \"rm -rf /var/lib/apt/lists/*\",\n]\n\
             {}{}{}\n\
             [[test]]\nname = \"escape attempts\"\nscript = \"{}\"\nenv = {}\n\n\
             [[test]]\nname = \"ordinary work\"\ninline = [\"id builder\", \"test -u /usr/local/bin/suid-true\", \"nginx -v\", \"test \\\"$(stat -c %U:%G /srv/data)\\\" = builder:builder\"]\n",
            attempt("isolated"),
            attempt("host"),
            attempt("none"),
            attempts.display(),
            probe_env("none"),
        ),
    );
    let outcome = env.kiln(["build", "--json", template.to_str().unwrap()]);
    outcome.expect_code(0);
    assert_all_blocked(&outcome, Run::Stage(2), "isolated");
    assert_all_blocked(&outcome, Run::Stage(3), "host");
    assert_all_blocked(&outcome, Run::Stage(4), "none");
    assert_all_blocked(&outcome, Run::Test("escape attempts"), "none");
    assert!(
        outcome.stdout.contains("\"event\":\"test_finished\"")
            && outcome.stdout.contains("\"name\":\"ordinary work\""),
        "{}",
        outcome.stdout
    );

    // Nothing changed on the host.
    assert_eq!(service.accepted(), 0, "a stage reached the host's loopback");
    let addresses = std::process::Command::new("ip")
        .args(["-o", "addr", "show", "dev", "lo"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&addresses.stdout).contains("10.9.9.9"));
    assert!(!std::path::Path::new("/sys/fs/cgroup/kiln-escape-probe").exists());
    assert!(!std::path::Path::new("/sys/class/net/kiln-probe").exists());

    // The ordinary work is in the layers, owners as seen inside.
    let rootfs = env.umoci_unpack("escape:1");
    let home = std::fs::metadata(rootfs.join("home/builder")).unwrap();
    assert_eq!((home.uid(), home.gid()), (1234, 1234));
    let data = std::fs::metadata(rootfs.join("srv/data")).unwrap();
    assert_eq!((data.uid(), data.gid()), (1234, 1234));
    let suid = std::fs::metadata(rootfs.join("usr/local/bin/suid-true")).unwrap();
    assert_eq!(suid.permissions().mode() & 0o7777, 0o4755);
    assert_eq!(suid.uid(), 0);
    let shadow = std::fs::metadata(rootfs.join("etc/shadow")).unwrap();
    assert_eq!((shadow.uid(), shadow.gid()), (0, 42), "root:shadow");
    assert!(rootfs.join("usr/sbin/nginx").is_file());
    assert!(
        std::fs::read_to_string(rootfs.join("etc/passwd"))
            .unwrap()
            .contains("builder:x:1234:1234:")
    );
    env.assert_no_leftovers();
}

fn motd(rootfs: &std::path::Path) -> String {
    std::fs::read_to_string(rootfs.join("etc/motd")).unwrap()
}

/// A stage cached by one template is a lower of another's stages and
/// tests: neither can change it, so the first template's next build ships
/// what it built.
#[test]
fn no_stage_or_test_can_change_a_cached_tree() {
    let env = TestEnv::new();
    let shared = "[[provisioner]]\ntype = \"shell\"\ninline = [\"echo victim > /etc/motd\"]\n";
    let victim = env.write(
        "victim.toml",
        &format!("{}\n{shared}", busybox_template("victim", "1")),
    );
    env.kiln(["build", victim.to_str().unwrap()]).expect_code(0);
    // Same base, same first stage: the attacker's build mounts the
    // victim's cached tree as its lower.
    let attacker = env.write(
        "attacker.toml",
        &format!(
            "{}\n{shared}\n\
             [[provisioner]]\ntype = \"shell\"\ninline = [\"echo VICTIM > /etc/motd\", \"mount -o remount,rw / 2>/dev/null && echo ESCAPED remount || echo blocked remount\"]\n\n\
             [[test]]\nname = \"plant\"\ninline = [\
               \"grep -qx VICTIM /etc/motd\", \
               \"echo PLANTED > /etc/motd && touch /etc/planted && echo wrote on the throwaway layer\", \
               \"mount -o remount,rw / 2>/dev/null && echo ESCAPED remount || echo blocked remount\"]\n",
            busybox_template("attacker", "1")
        ),
    );
    let outcome = env.kiln(["build", attacker.to_str().unwrap()]);
    outcome.expect_code(0);
    assert!(
        outcome.stderr.contains("attacker:1 [1] cached"),
        "the attacker shares the victim's stage: {}",
        outcome.stderr
    );
    assert!(!outcome.stderr.contains("ESCAPED"), "{}", outcome.stderr);
    // A test may write: on a throwaway layer, never the cached tree.
    assert!(
        outcome.stderr.contains("| wrote on the throwaway layer"),
        "{}",
        outcome.stderr
    );
    assert!(
        outcome.stderr.contains("| blocked remount"),
        "{}",
        outcome.stderr
    );

    let again = env.write(
        "victim.toml",
        &format!("{}\n{shared}", busybox_template("victim", "2")),
    );
    let outcome = env.kiln(["build", again.to_str().unwrap()]);
    outcome.expect_code(0);
    assert!(
        outcome.stderr.contains("victim:2 [1] cached"),
        "{}",
        outcome.stderr
    );
    let rootfs = env.umoci_unpack("victim:2");
    assert_eq!(motd(&rootfs), "victim\n");
    assert!(!rootfs.join("etc/planted").exists());
    let verified = env.kiln(["cache", "verify"]);
    verified.expect_code(0);
    assert!(
        verified.stdout.contains("intact, 0 dropped"),
        "{}",
        verified.stdout
    );
    env.assert_no_leftovers();
}

/// A cached tree changed behind kiln's back (same size, so no census
/// notices) is found by `kiln cache verify`, dropped with its entry, and
/// the next build runs the stage again and ships the right content. An
/// unpacked base layer is checked too.
#[test]
fn cache_verify_drops_a_changed_tree() {
    let env = TestEnv::new();
    let victim = env.write(
        "victim.toml",
        &format!(
            "{}\n[[provisioner]]\ntype = \"shell\"\ninline = [\"echo victim > /etc/motd\", \"rm /etc/hostname\", \"mkdir -p /opt/app && ln /bin/busybox /opt/app/tool\"]\n",
            busybox_template("victim", "1")
        ),
    );
    env.kiln(["build", victim.to_str().unwrap()]).expect_code(0);
    let based = env.write(
        "based.toml",
        "[image]\nname = \"based\"\nversion = \"1\"\n\n[source]\ntype = \"image\"\nref = \"victim:1\"\n\n\
         [[provisioner]]\ntype = \"shell\"\ninline = [\"echo based > /etc/based\"]\n",
    );
    env.kiln(["build", based.to_str().unwrap()]).expect_code(0);

    let clean = env.kiln(["cache", "verify"]);
    clean.expect_code(0);
    assert!(
        clean.stdout.contains("intact, 0 dropped"),
        "whiteouts, hard links and unpacked base layers check out: {}",
        clean.stdout
    );

    // Change the victim's stage tree and the unpacked copy of that layer.
    let cache = env.home().join("cache");
    let mut planted = 0;
    for dir in ["trees", "layer-trees"] {
        for tree in std::fs::read_dir(cache.join(dir)).unwrap() {
            let tree = tree.unwrap().path();
            let tree = if dir == "layer-trees" {
                tree.join("tree")
            } else {
                tree
            };
            let motd = tree.join("etc/motd");
            if std::fs::read_to_string(&motd).is_ok_and(|text| text == "victim\n") {
                std::fs::write(&motd, "VICTIM\n").unwrap();
                planted += 1;
            }
        }
    }
    assert_eq!(planted, 2, "the stage's tree and the base layer's");

    let verified = env.kiln(["cache", "verify"]);
    verified.expect_code(1);
    assert_eq!(
        verified
            .stdout
            .matches("1 path differs from the layer: changed /etc/motd")
            .count(),
        2,
        "{}",
        verified.stdout
    );
    assert!(
        verified
            .stdout
            .contains("dropped stage 1 (shell) of victim:1"),
        "{}",
        verified.stdout
    );
    assert!(verified.stdout.contains("dropped base layer sha256:"));
    assert!(verified.stdout.contains(" intact, 2 dropped"));
    env.kiln(["cache", "verify"]).expect_code(0);

    let again = env.write(
        "victim.toml",
        &format!(
            "{}\n[[provisioner]]\ntype = \"shell\"\ninline = [\"echo victim > /etc/motd\", \"rm /etc/hostname\", \"mkdir -p /opt/app && ln /bin/busybox /opt/app/tool\"]\n",
            busybox_template("victim", "2")
        ),
    );
    let outcome = env.kiln(["build", again.to_str().unwrap()]);
    outcome.expect_code(0);
    assert!(
        !outcome.stderr.contains("victim:2 [1] cached"),
        "{}",
        outcome.stderr
    );
    let rootfs = env.umoci_unpack("victim:2");
    assert_eq!(motd(&rootfs), "victim\n");
    env.assert_no_leftovers();
}
