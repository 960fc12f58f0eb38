//! The shared stage cache through a registry: a cold build in a fresh
//! `$KILN_HOME` that pushes every stage (`--cache-to`), then a build in
//! another fresh home that restores every stage from the registry
//! (`--cache-from`) and must store the same image digest; beside
//! `buildah build --layers` with `--cache-to`/`--cache-from` on an
//! equivalent Containerfile, each run in fresh storage.
//!
//! Five stages: a Debian bookworm minbase root, a file, a shell (useradd,
//! mkdir), a shell writing 20 MB of random data, a shell writing a stamp.
//! kiln runs it twice: with a `debootstrap` source, and with a `tarball`
//! source on the rootfs.tar that buildah starts from too (`FROM scratch`,
//! `ADD rootfs.tar /`; made once with mmdebstrap under target/bench/), the
//! like-for-like pair. Every cold build pushes to its own fresh
//! docker-registry on loopback (kiln and buildah in different repositories
//! and registries), so nothing is there already and no blob can be mounted
//! from an earlier run. Every build is timed end to end, median of 3.
//!
//! `cargo bench --bench shared_cache` (as root, with mmdebstrap,
//! docker-registry, buildah and runc, and network access to a Debian
//! mirror). Target: a fresh-home build from the shared cache at most 10% of
//! the cold build.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::Registry;

const RUNS: usize = 3;

/// The provisioners, the same for both kiln sources.
const PROVISIONERS: &str = r#"
[[provisioner]]
type = "file"
source = "motd"
destination = "/etc/motd"

[[provisioner]]
type = "shell"
inline = ["useradd --system --create-home app", "mkdir -p /srv/app"]

[[provisioner]]
type = "shell"
inline = ["head -c 20000000 /dev/urandom > /srv/app/data"]

[[provisioner]]
type = "shell"
inline = ["echo 'first' > /etc/build-stamp"]
"#;

/// The same steps for buildah.
const CONTAINERFILE: &str = r#"FROM scratch
ADD rootfs.tar /
COPY motd /etc/motd
RUN useradd --system --create-home app && mkdir -p /srv/app
RUN head -c 20000000 /dev/urandom > /srv/app/data
RUN echo 'first' > /etc/build-stamp
"#;

const STAGES: usize = 5;

/// Flushes every dirty page to disk.
fn sync() {
    let status = Command::new("sync").status().expect("run sync");
    assert!(status.success(), "sync failed");
}

/// Runs a command to success; its time and its stdout and stderr.
fn run(command: &mut Command) -> (Duration, String, String) {
    let started = Instant::now();
    let output = command.output().expect("run the command");
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{command:?}: {stdout}{stderr}");
    (elapsed, stdout, stderr)
}

/// A Debian bookworm minbase root as a tarball, made once under
/// `target/bench`.
fn rootfs_tar() -> PathBuf {
    let tar = common::bench_dir().join("debian-minbase.tar");
    if !tar.exists() {
        eprintln!("making the bench rootfs.tar with mmdebstrap (once)...");
        let partial = common::bench_dir().join("debian-minbase.partial.tar");
        let status = Command::new("mmdebstrap")
            .args(["--variant=minbase", "bookworm"])
            .arg(&partial)
            .stdout(Stdio::null())
            .status()
            .expect("run mmdebstrap");
        assert!(status.success(), "mmdebstrap failed");
        std::fs::rename(&partial, &tar).unwrap();
    }
    tar
}

/// One kiln build in a fresh home under `dir`, with `flag` (`--cache-to`
/// or `--cache-from`) naming `repository`; asserts what each stage line
/// says; its time and the stored digest.
fn kiln_build(dir: &Path, template: &Path, flag: &str, repository: &str) -> (Duration, String) {
    let home = tempfile::tempdir_in(dir).unwrap();
    let output = tempfile::tempdir_in(dir).unwrap();
    let (time, _, stderr) = run(Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("build")
        .arg(template)
        .arg("--no-publish")
        .arg("--output")
        .arg(output.path())
        .args([flag, repository])
        .env("KILN_HOME", home.path())
        .env_remove("KILN_CACHE_FROM")
        .env_remove("KILN_CACHE_TO"));
    let stages: Vec<String> = stderr
        .lines()
        .filter(|line| line.contains("] cached") || line.contains("] done in"))
        .map(str::to_owned)
        .collect();
    assert_eq!(stages.len(), STAGES, "{stderr}");
    let digest = stderr
        .lines()
        .find_map(|line| line.split(": stored ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no `stored` line: {stderr}"))
        .to_owned();
    if flag == "--cache-to" {
        assert!(
            stages.iter().all(|line| line.contains("] done in")),
            "{stderr}"
        );
        assert!(
            stderr.contains(&format!("pushed {STAGES} stages, 0 there already")),
            "{stderr}"
        );
    } else {
        assert!(
            stages
                .iter()
                .all(|line| line.contains("] cached (registry ")),
            "{stderr}"
        );
    }
    (time, digest)
}

/// kiln cold (`--cache-to`) then warm in a fresh home (`--cache-from`),
/// on its own registry; asserts the same digest.
fn kiln_pair(dir: &Path, template: &Path, repository: &str) -> (Duration, Duration) {
    let registry = Registry::start(dir);
    let repository = registry.repository(repository);
    let (cold, cold_digest) = kiln_build(dir, template, "--cache-to", &repository);
    // The cold build's writes reach the disk first: on CI the warm build
    // runs on another machine, not beside their writeback.
    sync();
    let (warm, warm_digest) = kiln_build(dir, template, "--cache-from", &repository);
    assert_eq!(
        cold_digest,
        warm_digest,
        "{}: the build from the shared cache stored another image",
        template.display()
    );
    (cold, warm)
}

/// One `buildah build` in fresh storage under `dir`; its time and the
/// image id (the last line of its output).
fn buildah_build(dir: &Path, context: &Path, cache: &[&str]) -> (Duration, String, String) {
    let root = tempfile::tempdir_in(dir).unwrap();
    let runroot = tempfile::tempdir_in(dir).unwrap();
    let (time, stdout, stderr) = run(Command::new("buildah")
        .arg("--root")
        .arg(root.path())
        .arg("--runroot")
        .arg(runroot.path())
        .args(["--storage-driver", "overlay", "build", "--layers"])
        .args(["--tls-verify=false", "--isolation", "oci"])
        .args(cache)
        .args(["-t", "bench-shared-cache:1"])
        .arg(context));
    let id = stdout.lines().last().unwrap_or_default().trim().to_owned();
    (time, id, format!("{stdout}{stderr}"))
}

/// buildah cold (`--cache-to` and `--cache-from`, empty repository) then
/// warm in fresh storage (`--cache-from`), on its own registry; asserts
/// every step came from the cache and the same image id.
fn buildah_pair(dir: &Path, context: &Path) -> (Duration, Duration) {
    let registry = Registry::start(dir);
    let repository = registry.repository("bench/buildah");
    let (cold, cold_id, _) = buildah_build(
        dir,
        context,
        &["--cache-to", &repository, "--cache-from", &repository],
    );
    sync();
    let (warm, warm_id, output) = buildah_build(dir, context, &["--cache-from", &repository]);
    assert_eq!(
        output.matches("Cache pulled from remote").count(),
        STAGES,
        "{output}"
    );
    assert_eq!(cold_id, warm_id, "{output}");
    (cold, warm)
}

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return;
    }
    for (tool, package) in [
        ("mmdebstrap", "mmdebstrap"),
        ("docker-registry", "docker-registry"),
        ("buildah", "buildah"),
        ("runc", "runc"),
    ] {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .unwrap();
        assert!(
            found.status.success(),
            "the shared_cache bench needs {tool}: apt-get install {package}"
        );
    }
    let buildah_version = run(Command::new("buildah").arg("--version")).1;
    let tar = rootfs_tar();
    let dir = tempfile::tempdir_in(common::bench_dir()).unwrap();
    std::fs::write(dir.path().join("motd"), "benchmarked\n").unwrap();
    let debootstrap = dir.path().join("debootstrap.toml");
    std::fs::write(
        &debootstrap,
        format!(
            "[image]\nname = \"bench-shared-cache\"\nversion = \"1\"\n\n[source]\ntype = \"debootstrap\"\nsuite = \"bookworm\"\nvariant = \"minbase\"\n{PROVISIONERS}"
        ),
    )
    .unwrap();
    let tarball = dir.path().join("tarball.toml");
    std::fs::write(
        &tarball,
        format!(
            "[image]\nname = \"bench-shared-cache-tarball\"\nversion = \"1\"\n\n[source]\ntype = \"tarball\"\npath = \"{}\"\n{PROVISIONERS}",
            tar.display()
        ),
    )
    .unwrap();
    let context = dir.path().join("context");
    std::fs::create_dir(&context).unwrap();
    std::fs::write(context.join("Containerfile"), CONTAINERFILE).unwrap();
    std::fs::write(context.join("motd"), "benchmarked\n").unwrap();
    if std::fs::hard_link(&tar, context.join("rootfs.tar")).is_err() {
        std::fs::copy(&tar, context.join("rootfs.tar")).unwrap();
    }

    let mut times: [Vec<Duration>; 6] = Default::default();
    for round in 1..=RUNS {
        eprintln!("run {round} of {RUNS}...");
        let scratch = tempfile::tempdir_in(dir.path()).unwrap();
        let (cold, warm) = kiln_pair(scratch.path(), &debootstrap, "bench/kiln-debootstrap");
        times[0].push(cold);
        times[1].push(warm);
        let (cold, warm) = kiln_pair(scratch.path(), &tarball, "bench/kiln-tarball");
        times[2].push(cold);
        times[3].push(warm);
        let (cold, warm) = buildah_pair(scratch.path(), &context);
        times[4].push(cold);
        times[5].push(warm);
    }
    let [
        debootstrap_cold,
        debootstrap_warm,
        tarball_cold,
        tarball_warm,
        buildah_cold,
        buildah_warm,
    ] = times.map(common::median);

    println!(
        "{STAGES} stages: Debian bookworm minbase, file, shell (useradd), shell (20 MB), shell (stamp); {RUNS} runs, median"
    );
    println!(
        "cold: fresh home or storage, pushing to an empty repository; warm: another fresh home or storage, every stage from that repository"
    );
    println!("{}", buildah_version.trim());
    println!("| build | cold | warm, fresh home | warm / cold | target |");
    println!("|---|---|---|---|---|");
    for (name, cold, warm, target) in [
        (
            "kiln, debootstrap source (--cache-to / --cache-from)",
            debootstrap_cold,
            debootstrap_warm,
            "at most 10%",
        ),
        (
            "kiln, tarball source on rootfs.tar (--cache-to / --cache-from)",
            tarball_cold,
            tarball_warm,
            "at most 10%",
        ),
        (
            "buildah build --layers, ADD rootfs.tar (--cache-to / --cache-from)",
            buildah_cold,
            buildah_warm,
            "",
        ),
    ] {
        println!(
            "| {name} | {cold:.2} s | {warm:.2} s | {:.1}% | {target} |",
            100.0 * warm / cold
        );
    }
    println!("| same base (rootfs.tar) | cold | warm, fresh home |");
    println!("|---|---|---|");
    println!(
        "| buildah / kiln | {:.2}x | {:.2}x |",
        buildah_cold / tarball_cold,
        buildah_warm / tarball_warm
    );
}
