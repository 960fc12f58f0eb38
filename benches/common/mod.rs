//! What the benchmarks share: their folder, the Debian tree they bake,
//! push and turn into disks (made once with mmdebstrap), and timing.

// Each bench includes this module and uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// `target/bench`, made if missing.
pub fn bench_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A Debian bookworm minbase root (about 160 MiB), made once under
/// `target/bench`, or the folder `KILN_BENCH_TREE` names.
pub fn debian_tree() -> PathBuf {
    if let Some(tree) = std::env::var_os("KILN_BENCH_TREE") {
        return tree.into();
    }
    let tree = bench_dir().join("debian-minbase");
    if !tree.join("etc/debian_version").exists() {
        let _ = std::fs::remove_dir_all(&tree);
        eprintln!("making the bench tree with mmdebstrap (once)...");
        let status = Command::new("mmdebstrap")
            .args([
                "--variant=minbase",
                "--mode=root",
                "--format=directory",
                "bookworm",
            ])
            .arg(&tree)
            .status()
            .expect("run mmdebstrap (apt-get install mmdebstrap)");
        assert!(status.success(), "mmdebstrap failed");
    }
    tree
}

/// Runs a command to success and returns how long it took.
pub fn timed(command: &mut Command) -> std::time::Duration {
    let started = std::time::Instant::now();
    let output = command.output().expect("run the command");
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    started.elapsed()
}

/// The median of some timings, in seconds.
pub fn median(mut times: Vec<std::time::Duration>) -> f64 {
    times.sort();
    times[times.len() / 2].as_secs_f64()
}

/// Builds the Debian tree into an image `debian:1` (a `directory` source)
/// with the kiln binary, in a fresh `$KILN_HOME` under `dir`; returns it.
pub fn build_debian_image(dir: &Path) -> PathBuf {
    let home = dir.join("home");
    let template = dir.join("debian.toml");
    std::fs::write(
        &template,
        format!("[image]\nname = \"debian\"\nversion = \"1\"\n\n[source]\ntype = \"directory\"\npath = \"{}\"\n", debian_tree().display()),
    )
    .unwrap();
    timed(
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("build")
            .arg(&template)
            .env("KILN_HOME", &home),
    );
    home
}

/// A docker-registry on a free loopback port, its storage under `dir`.
pub struct Registry {
    child: Child,
    pub port: u16,
}

impl Registry {
    pub fn start(dir: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let storage = dir.join(format!("registry-{port}"));
        std::fs::create_dir_all(&storage).unwrap();
        let config = storage.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                storage.join("data").display()
            ),
        )
        .unwrap();
        let child = std::process::Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "docker-registry did not start on port {port}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Self { child, port }
    }

    /// `127.0.0.1:PORT/PATH`.
    pub fn repository(&self, path: &str) -> String {
        format!("127.0.0.1:{}/{path}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
