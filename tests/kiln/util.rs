//! The test environment: a temporary folder with its own `KILN_HOME`, and a
//! way to run the `kiln` binary in it.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct TestEnv {
    dir: tempfile::TempDir,
}

/// What a run of `kiln` gave back.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// Panics with the whole output unless the exit code is `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "expected exit code {code}, got {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

impl TestEnv {
    pub fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("kiln-test-")
                .tempdir()
                .expect("create a temp folder"),
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// Writes a file (and its folders) under the test folder.
    pub fn write(&self, relative: &str, text: &str) -> PathBuf {
        let path = self.path(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Runs `kiln` with `args` in the test folder, with a clean KILN_* environment.
    pub fn kiln<I, S>(&self, args: I) -> Outcome
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.kiln_with_env(args, &[])
    }

    pub fn kiln_with_env<I, S>(&self, args: I, env: &[(&str, &str)]) -> Outcome
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = self.kiln_command(args);
        for (name, value) in env {
            command.env(name, value);
        }
        let output = command.output().expect("run the kiln binary");
        Outcome {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// The `kiln` command [`TestEnv::kiln`] runs, to spawn it instead.
    pub fn kiln_command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
        command.args(args).current_dir(self.root());
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("KILN_") {
                command.env_remove(name);
            }
        }
        command
            .env("KILN_HOME", self.path("kiln-home"))
            .env("NO_COLOR", "1");
        command
    }
}

/// The `*.toml` files of a folder, sorted.
pub fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("read {}: {error}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "toml")
        })
        .collect();
    files.sort();
    files
}

/// The Python of the venv `.ci/install-deps` makes for the SBOM
/// validators and securesystemslib (`$SBOM_VENV` to use another); fails
/// the test, saying what it `needs`, when it is not there.
#[track_caller]
pub fn sbom_venv_python(needs: &str) -> PathBuf {
    let venv = std::env::var_os("SBOM_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/kiln-test/sbom-venv"));
    let python = venv.join("bin/python");
    assert!(
        python.is_file(),
        "this test needs {needs} in {}: sh .ci/install-deps makes it",
        venv.display()
    );
    python
}

/// Fails the test, loudly, when a tool CI installs is missing here.
#[track_caller]
pub fn require_tool(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()));
    assert!(
        found,
        "this test needs `{tool}`: apt-get install {package} (.ci/install-deps does)"
    );
}

/// The busybox rootfs fixture, made once per test run by the fixture script.
pub fn busybox_tarball() -> PathBuf {
    static TARBALL: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    TARBALL
        .get_or_init(|| {
            require_tool("busybox", "busybox-static");
            let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("busybox-rootfs.tar.gz");
            let status = Command::new(repo_root().join("fixtures/make-busybox-rootfs.sh"))
                .arg(&out)
                .stdout(std::process::Stdio::null())
                .status()
                .expect("run fixtures/make-busybox-rootfs.sh");
            assert!(status.success(), "fixtures/make-busybox-rootfs.sh failed");
            out
        })
        .clone()
}

/// The `[image]` and busybox `[source]` of a test template.
pub fn busybox_template(name: &str, version: &str) -> String {
    format!(
        "[image]\nname = \"{name}\"\nversion = \"{version}\"\n\n[source]\ntype = \"tarball\"\npath = \"{}\"\n",
        busybox_tarball().display()
    )
}

impl TestEnv {
    pub fn home(&self) -> PathBuf {
        self.path("kiln-home")
    }

    pub fn store(&self) -> PathBuf {
        self.home().join("store")
    }

    /// The digest the store's index gives `name:version`, if stored.
    pub fn stored_digest(&self, reference: &str) -> Option<String> {
        let index = std::fs::read_to_string(self.store().join("index.json")).ok()?;
        let index: serde_json::Value = serde_json::from_str(&index).unwrap();
        index["manifests"]
            .as_array()?
            .iter()
            .find(|manifest| {
                manifest["annotations"]["org.opencontainers.image.ref.name"] == reference
            })
            .map(|manifest| manifest["digest"].as_str().unwrap().to_owned())
    }

    /// Where the store keeps the blob of a `sha256:…` digest.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.store()
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    /// The manifest of a stored `name:version`.
    #[track_caller]
    pub fn stored_manifest(&self, reference: &str) -> serde_json::Value {
        let digest = self
            .stored_digest(reference)
            .unwrap_or_else(|| panic!("{reference} is not stored"));
        serde_json::from_slice(&std::fs::read(self.blob_path(&digest)).unwrap()).unwrap()
    }

    /// Panics if a build left a mount, a work folder or a running helper.
    #[track_caller]
    pub fn assert_no_leftovers(&self) {
        let home = self.home().display().to_string();
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
        let leaked: Vec<&str> = mounts.lines().filter(|line| line.contains(&home)).collect();
        assert!(leaked.is_empty(), "mounts left behind: {leaked:#?}");
        if let Ok(entries) = std::fs::read_dir(self.home().join("tmp")) {
            let left: Vec<_> = entries.map(|entry| entry.unwrap().path()).collect();
            assert!(left.is_empty(), "work folders left behind: {left:?}");
        }
        if let Ok(entries) = std::fs::read_dir(self.store().join(".kiln/tmp")) {
            let left: Vec<_> = entries.map(|entry| entry.unwrap().path()).collect();
            assert!(left.is_empty(), "temp blobs left behind: {left:?}");
        }
    }

    /// Unpacks a stored image with umoci; returns the rootfs folder.
    pub fn umoci_unpack(&self, reference: &str) -> PathBuf {
        require_tool("umoci", "umoci");
        let bundle = self.path(&format!("bundle-{}", reference.replace([':', '/'], "-")));
        let output = Command::new("umoci")
            .arg("unpack")
            .arg("--image")
            .arg(format!("{}:{reference}", self.store().display()))
            .arg(&bundle)
            .output()
            .expect("run umoci");
        assert!(
            output.status.success(),
            "umoci unpack failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        bundle.join("rootfs")
    }

    /// What `skopeo inspect` says of a stored image.
    pub fn skopeo_inspect(&self, reference: &str) -> serde_json::Value {
        require_tool("skopeo", "skopeo");
        let output = Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci:{}:{reference}", self.store().display()))
            .output()
            .expect("run skopeo");
        assert!(
            output.status.success(),
            "skopeo inspect failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }
}
