//! Publishing against a real registry: Debian's docker-registry started on
//! 127.0.0.1 with a free port (plain, or with htpasswd basic auth), skopeo
//! reading what kiln pushed and kiln pulling what skopeo pushed.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{TestEnv, busybox_template, require_tool};

/// A docker-registry process with its storage in a test folder.
pub struct Registry {
    child: Option<Child>,
    pub port: u16,
    pub storage: PathBuf,
    config: PathBuf,
}

impl Registry {
    /// Starts a registry; with `basic_auth`, users must log in as it says.
    pub fn start(env: &TestEnv, basic_auth: Option<(&str, &str)>) -> Self {
        let auth = basic_auth.map_or_else(String::new, |(user, password)| {
            require_tool("htpasswd", "apache2-utils");
            let output = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .unwrap();
            assert!(output.status.success());
            let htpasswd = env.path(&format!("htpasswd-{user}"));
            std::fs::write(&htpasswd, output.stdout).unwrap();
            format!(
                "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                htpasswd.display()
            )
        });
        Self::start_with(env, &auth)
    }

    /// Starts a registry with `extra` appended to its configuration.
    pub fn start_with(env: &TestEnv, extra: &str) -> Self {
        require_tool("docker-registry", "docker-registry");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = env.path(&format!("registry-{port}"));
        let storage = dir.join("storage");
        std::fs::create_dir_all(&storage).unwrap();
        let config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{extra}",
            storage.display()
        );
        let config_path = dir.join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let mut registry = Self {
            child: None,
            port,
            storage,
            config: config_path,
        };
        registry.resume();
        registry
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the registry process again (same storage, same port).
    pub fn resume(&mut self) {
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The file holding a blob in the registry's storage.
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage.join(format!(
            "docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The digest skopeo reads for `reference` on a registry.
pub fn skopeo_digest(reference: &str, credentials: Option<&str>) -> String {
    let mut command = Command::new("skopeo");
    command.args(["inspect", "--tls-verify=false"]);
    if let Some(credentials) = credentials {
        command.args(["--creds", credentials]);
    }
    let output = command
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "skopeo inspect {reference}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    json["Digest"].as_str().unwrap().to_owned()
}

/// How many blobs a push's output says were sent, present or mounted.
fn blobs(stdout: &str, outcome: &str) -> usize {
    stdout
        .lines()
        // `TIME TARGET OUTCOME DIGEST (SIZE) in …`
        .filter(|line| line.split_whitespace().nth(2) == Some(outcome))
        .count()
}

fn build(env: &TestEnv, name: &str, version: &str, extra: &str) -> String {
    let template = env.write(
        &format!("{}-{version}.toml", name.replace('/', "-")),
        &format!("{}\n[[provisioner]]\ntype = \"shell\"\ninline = [\"echo {name} {version} > /etc/release\"]\n{extra}", busybox_template(name, version)),
    );
    env.kiln(["build", template.to_str().unwrap()])
        .expect_code(0);
    env.stored_digest(&format!("{name}:{version}")).unwrap()
}

#[test]
fn push_then_skopeo_reads_it_and_a_second_push_sends_nothing() {
    let env = TestEnv::new();
    let registry = Registry::start(&env, None);
    let digest = build(&env, "web", "1.0", "");
    let remote = format!("{}/team/web", registry.host());
    let first = env.kiln(["push", "web:1.0", &remote]);
    first.expect_code(0);
    assert_eq!(
        blobs(&first.stderr, "sent"),
        3,
        "config and two layers: {}",
        first.stderr
    );
    assert_eq!(skopeo_digest(&format!("{remote}:1.0"), None), digest);
    let second = env.kiln(["push", "web:1.0", &remote]);
    second.expect_code(0);
    assert!(
        second.stderr.contains("nothing to send"),
        "{}",
        second.stderr
    );

    // A second repository of the same registry: blobs are mounted, not sent.
    let other = format!("{}/other/web", registry.host());
    let mounted = env.kiln(["push", "web:1.0", &other]);
    mounted.expect_code(0);
    assert_eq!(
        (
            blobs(&mounted.stderr, "mounted"),
            blobs(&mounted.stderr, "sent")
        ),
        (3, 0),
        "{}",
        mounted.stderr
    );
    assert!(mounted.stderr.contains("(0 B sent)"), "{}", mounted.stderr);

    // A newer image that shares its base sends only its own layer.
    build(&env, "web", "1.1", "");
    let newer = env.kiln(["push", "web:1.1", &remote]);
    newer.expect_code(0);
    assert_eq!(
        (
            blobs(&newer.stderr, "present"),
            blobs(&newer.stderr, "sent")
        ),
        (1, 2),
        "{}",
        newer.stderr
    );

    // --json: one event a line, and nothing else on stdout.
    let third = format!("{}/json/web", registry.host());
    let json = env.kiln(["push", "--json", "web:1.0", &third]);
    json.expect_code(0);
    let events: Vec<serde_json::Value> = json
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let finished = events
        .iter()
        .filter(|event| event["event"] == "transfer_finished")
        .count();
    assert_eq!(finished, 3, "{}", json.stdout);
    assert_eq!(events.last().unwrap()["event"], "image_pushed");
    assert_eq!(events.last().unwrap()["digest"], digest.as_str());

    let listing = env.kiln(["images", &remote]);
    listing.expect_code(0);
    assert!(
        listing
            .stdout
            .lines()
            .any(|line| line.split_whitespace().collect::<Vec<_>>() == ["1.0", digest.as_str()]),
        "{}",
        listing.stdout
    );
}

#[test]
fn a_version_on_the_registry_is_never_overwritten() {
    let env = TestEnv::new();
    let registry = Registry::start(&env, None);
    let remote = format!("{}/team/app", registry.host());
    build(&env, "app", "1", "");
    env.kiln(["push", "app:1", &remote]).expect_code(0);
    let other_home = TestEnv::new();
    let template = other_home.write(
        "app.toml",
        &format!(
            "{}\n[[provisioner]]\ntype = \"shell\"\ninline = [\"echo different > /etc/release\"]\n",
            busybox_template("app", "1")
        ),
    );
    other_home
        .kiln(["build", template.to_str().unwrap()])
        .expect_code(0);
    let refused = other_home.kiln(["push", "app:1", &remote]);
    refused.expect_code(3);
    assert!(
        refused.stderr.contains("bump the version"),
        "{}",
        refused.stderr
    );
}

#[test]
fn pull_reads_what_skopeo_pushed_and_verifies_every_blob() {
    let env = TestEnv::new();
    let mut registry = Registry::start(&env, None);
    let digest = build(&env, "base", "1", "");
    let remote = format!("{}/mirror/base:7", registry.host());
    let output = Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:base:1", env.store().display()))
        .arg(format!("docker://{remote}"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let fresh = TestEnv::new();
    let pulled = fresh.kiln(["pull", &remote]);
    pulled.expect_code(0);
    assert_eq!(
        fresh.stored_digest("mirror/base:7").unwrap(),
        digest,
        "stored under the repository path without the host, tag as version"
    );
    let rootfs = fresh.umoci_unpack("mirror/base:7");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/release")).unwrap(),
        "base 1\n"
    );
    let manifest = env.stored_manifest("base:1");

    // The file index stays home; the first drift check makes it again from
    // the pulled layers, byte for byte the one made while baking.
    fresh
        .kiln([
            "verify",
            "mirror/base:7",
            "--root",
            rootfs.to_str().unwrap(),
        ])
        .expect_code(0);
    let made = std::fs::read_to_string(
        fresh
            .store()
            .join(".kiln/files/images")
            .join(digest.trim_start_matches("sha256:")),
    )
    .unwrap();
    assert_eq!(
        made,
        manifest["annotations"]["dev.kiln.files"].as_str().unwrap()
    );

    // A blob changed on the registry's disk is refused, and nothing is stored.
    let layer = manifest["layers"][1]["digest"].as_str().unwrap();
    let data = registry.blob_data(layer);
    let mut bytes = std::fs::read(&data).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    registry.stop();
    std::fs::write(&data, bytes).unwrap();
    registry.resume();
    let tampered = TestEnv::new();
    let refused = tampered.kiln(["pull", &remote, "--as", "tampered:1"]);
    refused.expect_code(1);
    assert!(
        refused.stderr.contains("refused blob sha256:")
            && refused.stderr.contains("nothing was kept"),
        "{}",
        refused.stderr
    );
    assert_eq!(tampered.stored_digest("tampered:1"), None);
    let temp_blobs = tampered.store().join(".kiln/tmp");
    assert_eq!(
        std::fs::read_dir(temp_blobs).unwrap().count(),
        0,
        "no half-written blob is left"
    );
}

#[test]
fn basic_auth_with_login_env_and_wrong_passwords() {
    let env = TestEnv::new();
    let registry = Registry::start(&env, Some(("builder", "s3cret-pass")));
    build(&env, "secure", "1", "");
    let remote = format!("{}/team/secure", registry.host());

    let anonymous = env.kiln(["push", "secure:1", &remote]);
    anonymous.expect_code(1);
    assert!(
        anonymous.stderr.contains("asks for credentials")
            && anonymous.stderr.contains("kiln login"),
        "{}",
        anonymous.stderr
    );

    let started = Instant::now();
    let wrong = env.kiln_with_env(
        ["push", "secure:1", &remote],
        &[
            ("KILN_REGISTRY_USER", "builder"),
            ("KILN_REGISTRY_PASSWORD", "n0t-the-pa55"),
        ],
    );
    wrong.expect_code(1);
    assert!(
        wrong.stderr.contains("refused the credentials"),
        "{}",
        wrong.stderr
    );
    assert_eq!(
        wrong.stderr.lines().count(),
        1,
        "one clear error: {}",
        wrong.stderr
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "no stack of retries"
    );
    assert!(
        !wrong.stderr.contains("n0t-the-pa55"),
        "the password is not echoed"
    );

    let bad_login = env.kiln_with_env(
        ["login", &registry.host(), "--username", "builder"],
        &[("KILN_REGISTRY_PASSWORD", "nope")],
    );
    bad_login.expect_code(1);
    assert!(
        !env.home().join("auth.json").exists(),
        "refused credentials are not saved"
    );
    let login = env.kiln_with_env(
        ["login", &registry.host(), "--username", "builder"],
        &[("KILN_REGISTRY_PASSWORD", "s3cret-pass")],
    );
    login.expect_code(0);
    let auth = std::fs::metadata(env.home().join("auth.json")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&auth.permissions()) & 0o777,
        0o600
    );
    env.kiln(["push", "secure:1", &remote]).expect_code(0);
    assert_eq!(
        skopeo_digest(&format!("{remote}:1"), Some("builder:s3cret-pass")),
        env.stored_digest("secure:1").unwrap()
    );

    // Docker's own config file is read too.
    let docker = TestEnv::new();
    docker.write(
        "docker/config.json",
        &format!(
            "{{\"auths\": {{\"{}\": {{\"auth\": \"YnVpbGRlcjpzM2NyZXQtcGFzcw==\"}}}}}}",
            registry.host()
        ),
    );
    let pulled = docker.kiln_with_env(
        ["pull", &format!("{remote}:1")],
        &[("DOCKER_CONFIG", docker.path("docker").to_str().unwrap())],
    );
    pulled.expect_code(0);
}

#[test]
fn a_push_stopped_midway_resumes_with_what_is_missing() {
    let env = TestEnv::new();
    let mut registry = Registry::start(&env, None);
    build(
        &env,
        "big",
        "1",
        "\n[[provisioner]]\ntype = \"shell\"\ninline = [\"head -c 80000000 /dev/urandom > /big\"]\n",
    );
    let remote = format!("{}/team/big", registry.host());
    // The registry is down: a clear error after a few retries.
    registry.stop();
    let down = env.kiln(["push", "big:1", &remote]);
    down.expect_code(1);
    assert!(
        down.stderr
            .contains(&format!("failed to reach {}", registry.host())),
        "{}",
        down.stderr
    );
    registry.resume();

    // Stopped while the big layer is on its way.
    let mut push = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["push", "big:1", &remote])
        .env("KILN_HOME", env.home())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let uploads = registry
        .storage
        .join("docker/registry/v2/repositories/team/big/_uploads");
    let deadline = Instant::now() + Duration::from_secs(30);
    // The big layer is the last blob, and the only one over 4 MiB: once an
    // upload holds more than that, the blobs before it are on the registry.
    // (Watching upload folders come and go would miss the short-lived ones.)
    let big_on_its_way = || {
        std::fs::read_dir(&uploads)
            .into_iter()
            .flatten()
            .flatten()
            .any(|upload| {
                std::fs::metadata(upload.path().join("data")).is_ok_and(|data| data.len() > 4 << 20)
            })
    };
    while !big_on_its_way() {
        assert!(
            Instant::now() < deadline && push.try_wait().unwrap().is_none(),
            "the push ended before it could be stopped"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    registry.stop();
    assert!(
        !push.wait().unwrap().success(),
        "the interrupted push fails"
    );
    registry.resume();
    let resumed = env.kiln(["push", "big:1", &remote]);
    resumed.expect_code(0);
    assert!(
        blobs(&resumed.stderr, "present") >= 2,
        "blobs sent before the stop are not sent again: {}",
        resumed.stderr
    );
    assert_eq!(
        blobs(&resumed.stderr, "sent") + blobs(&resumed.stderr, "present"),
        4,
        "{}",
        resumed.stderr
    );
    assert_eq!(
        skopeo_digest(&format!("{remote}:1"), None),
        env.stored_digest("big:1").unwrap()
    );
}

#[test]
fn channels_move_roll_back_and_publish() {
    let env = TestEnv::new();
    let registry = Registry::start(&env, None);
    let remote = format!("{}/golden/site", registry.host());
    let publish = format!("\n[publish]\nchannels = [\"dev\"]\nremote = [\"{remote}\"]\n");
    let one = build(&env, "site", "1", &publish);
    let two = build(&env, "site", "2", &publish);
    assert_eq!(
        skopeo_digest(&format!("{remote}:dev"), None),
        two,
        "the dev tag moved to the newest version"
    );
    assert_eq!(skopeo_digest(&format!("{remote}:1"), None), one);

    let images = env.kiln(["images", "site"]);
    assert!(
        images
            .stdout
            .lines()
            .any(|line| line.starts_with("site  2 ")
                && line.split_whitespace().rev().nth(1) == Some("dev")),
        "{}",
        images.stdout
    );

    env.kiln(["channel", "set", "site", "stable", "1"])
        .expect_code(0);
    env.kiln(["channel", "set", "site", "stable", "2"])
        .expect_code(0);
    let back = env.kiln(["channel", "rollback", "site", "stable"]);
    back.expect_code(0);
    assert!(back.stdout.contains("rolled back to 1"), "{}", back.stdout);
    let history = env.kiln(["channel", "history", "site", "stable"]);
    history.expect_code(0);
    let actions: Vec<&str> = history
        .stdout
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(actions, ["set", "set", "rollback"]);

    let missing = env.kiln(["channel", "set", "site", "stable", "9"]);
    missing.expect_code(1);
    assert!(
        missing.stderr.contains("no image site:9"),
        "{}",
        missing.stderr
    );
    let nothing = env.kiln(["channel", "rollback", "site", "fresh"]);
    nothing.expect_code(1);
    env.kiln([
        "build",
        "--no-publish",
        env.path("site-2.toml").to_str().unwrap(),
    ])
    .expect_code(0);
}

/// A token service for the registry's `token` auth: it checks basic
/// credentials and issues RS256 JWTs (signed with the openssl CLI) that
/// carry their certificate in `x5c`; the registry verifies them against it.
struct TokenService {
    port: u16,
    cert: PathBuf,
}

impl TokenService {
    fn start(env: &TestEnv, user: &'static str, password: &'static str) -> Self {
        require_tool("openssl", "openssl");
        let dir = env.path("token-service");
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("key.pem");
        let cert = dir.join("cert.pem");
        let status = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=kiln-test-issuer",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()
            .unwrap()
            .stdout;
        use base64::Engine as _;
        let x5c = base64::engine::general_purpose::STANDARD.encode(der);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = serve_token(stream, user, password, &key, &x5c);
            }
        });
        Self { port, cert }
    }

    fn registry_config(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: kiln-registry\n    issuer: kiln-test-issuer\n    rootcertbundle: {}\n",
            self.port,
            self.cert.display()
        )
    }
}

fn serve_token(
    mut stream: std::net::TcpStream,
    user: &str,
    password: &str,
    key: &std::path::Path,
    x5c: &str,
) -> std::io::Result<()> {
    use base64::Engine as _;
    use std::io::{BufRead, Write};

    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut reader = std::io::BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut authorization = None;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("authorization")
        {
            authorization = Some(value.trim().to_owned());
        }
    }
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    );
    if authorization.as_deref() != Some(expected.as_str()) {
        return stream.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("");
    let query = target.split_once('?').map_or("", |(_, query)| query);
    let mut access = Vec::new();
    for pair in query.split('&') {
        if let Some(scope) = pair.strip_prefix("scope=") {
            let scope = scope
                .replace("%3A", ":")
                .replace("%2F", "/")
                .replace("%2C", ",");
            let parts: Vec<&str> = scope.splitn(3, ':').collect();
            if parts.len() == 3 {
                access.push(serde_json::json!({"type": parts[0], "name": parts[1], "actions": parts[2].split(',').collect::<Vec<_>>()}));
            }
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": "kiln-test-issuer", "sub": user, "aud": "kiln-registry",
        "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", access.len()), "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        url.encode(header.to_string()),
        url.encode(claims.to_string())
    );
    let mut openssl = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    openssl
        .stdin
        .take()
        .unwrap()
        .write_all(signing_input.as_bytes())?;
    let signature = openssl.wait_with_output()?.stdout;
    let token = format!("{signing_input}.{}", url.encode(signature));
    let body = serde_json::json!({"token": token, "access_token": token}).to_string();
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn bearer_tokens_from_the_registrys_token_service() {
    let env = TestEnv::new();
    let tokens = TokenService::start(&env, "robot", "t0ken-pass");
    let registry = Registry::start_with(&env, &tokens.registry_config());
    build(&env, "tokened", "1", "");
    let remote = format!("{}/team/tokened", registry.host());

    let anonymous = env.kiln(["push", "tokened:1", &remote]);
    anonymous.expect_code(1);
    assert!(
        anonymous.stderr.contains("asks for credentials"),
        "{}",
        anonymous.stderr
    );
    let wrong = env.kiln_with_env(
        ["push", "tokened:1", &remote],
        &[
            ("KILN_REGISTRY_USER", "robot"),
            ("KILN_REGISTRY_PASSWORD", "bad-t0ken"),
        ],
    );
    wrong.expect_code(1);
    assert!(
        wrong.stderr.contains("refused the credentials"),
        "{}",
        wrong.stderr
    );

    let credentials = [
        ("KILN_REGISTRY_USER", "robot"),
        ("KILN_REGISTRY_PASSWORD", "t0ken-pass"),
    ];
    let pushed = env.kiln_with_env(["push", "tokened:1", &remote], &credentials);
    pushed.expect_code(0);
    let fresh = TestEnv::new();
    fresh
        .kiln_with_env(["pull", &format!("{remote}:1")], &credentials)
        .expect_code(0);
    assert_eq!(
        fresh.stored_digest("team/tokened:1"),
        env.stored_digest("tokened:1")
    );
}
