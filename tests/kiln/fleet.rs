//! CI fleets: runners that start with an empty `KILN_HOME` and share one
//! Debian docker-registry. A stage cache shared through it (`--cache-to`,
//! `--cache-from`), checked against poisoned entries and never holding a
//! stage that uses a secret; bases pulled on demand; channels that move and
//! roll back on the registry too.

use std::io::{Read, Write};
use std::process::Command;

use crate::registry::{Registry, skopeo_digest};
use crate::util::{TestEnv, busybox_template, require_tool};

/// A plain HTTP/1.1 request to the test registry; the status and body.
fn http(
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("an HTTP answer has headers");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, response[split + 4..].to_vec())
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn get_manifest(host: &str, repository: &str, reference: &str) -> Vec<u8> {
    let (status, body) = http(
        host,
        "GET",
        &format!("/v2/{repository}/manifests/{reference}"),
        &[("Accept", OCI_MANIFEST)],
        b"",
    );
    assert_eq!(status, 200, "GET {repository}:{reference}");
    body
}

fn put_manifest(host: &str, repository: &str, tag: &str, bytes: &[u8]) {
    let (status, body) = http(
        host,
        "PUT",
        &format!("/v2/{repository}/manifests/{tag}"),
        &[("Content-Type", OCI_MANIFEST)],
        bytes,
    );
    assert_eq!(
        status,
        201,
        "PUT {repository}:{tag}: {}",
        String::from_utf8_lossy(&body)
    );
}

/// The cache entries of a repository: each tag with its manifest, fewest
/// stages first.
fn cache_entries(host: &str, repository: &str) -> Vec<(String, serde_json::Value)> {
    let (status, body) = http(
        host,
        "GET",
        &format!("/v2/{repository}/tags/list"),
        &[],
        b"",
    );
    if status == 404 {
        return Vec::new();
    }
    let tags: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut entries: Vec<(String, serde_json::Value)> = tags["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|tag| tag.as_str().unwrap().to_owned())
        .filter(|tag| tag.starts_with("k1-"))
        .map(|tag| {
            let manifest = serde_json::from_slice(&get_manifest(host, repository, &tag)).unwrap();
            (tag, manifest)
        })
        .collect();
    entries.sort_by_key(|(_, manifest)| {
        manifest["annotations"]["dev.kiln.cache.chain"]
            .as_str()
            .unwrap()
            .split(',')
            .count()
    });
    entries
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The stage lines of a build's progress: `[N] cached…` or `[N] done…`.
fn stage_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|line| line.contains("] cached") || line.contains("] done in"))
        .collect()
}

const DEBIAN: &str = r#"[image]
name = "fleet"
version = "1.0.0"

[source]
type = "debootstrap"
suite = "bookworm"
variant = "minbase"

[[provisioner]]
type = "file"
source = "motd"
destination = "/etc/motd"

[[provisioner]]
type = "shell"
inline = ["useradd --system app", "mkdir -p /srv/app", "echo built > /srv/app/stamp"]

[[provisioner]]
type = "shell"
inline = ["rm -rf /usr/share/doc/* /usr/share/man"]
"#;

#[test]
fn a_fresh_home_builds_every_stage_from_the_registry_and_refuses_poisoned_entries() {
    require_tool("mmdebstrap", "mmdebstrap");
    require_tool("skopeo", "skopeo");
    require_tool("umoci", "umoci");
    let runner_a = TestEnv::new();
    let registry = Registry::start(&runner_a, None);
    let host = registry.host();
    let cache = format!("{host}/golden/kiln-cache");
    let template_in = |env: &TestEnv| {
        env.write("motd", "welcome to the fleet\n");
        env.write("fleet.toml", DEBIAN)
    };
    let build = |env: &TestEnv, flag: &str| {
        let template = template_in(env);
        let outcome = env.kiln([
            "build",
            template.to_str().unwrap(),
            "--no-publish",
            "--output",
            env.path("output").to_str().unwrap(),
            flag,
            &cache,
        ]);
        outcome.expect_code(0);
        let digest = env.stored_digest("fleet:1.0.0").unwrap();
        (outcome.stderr.clone(), digest)
    };

    // Runner A builds from nothing and pushes every stage.
    let (stderr, digest) = build(&runner_a, "--cache-to");
    assert_eq!(stage_lines(&stderr).len(), 4, "{stderr}");
    assert!(
        stage_lines(&stderr)
            .iter()
            .all(|line| line.contains("] done in")),
        "{stderr}"
    );
    assert!(
        stderr.contains("pushed 4 stages, 0 there already"),
        "{stderr}"
    );
    let entries = cache_entries(&host, "golden/kiln-cache");
    assert_eq!(entries.len(), 4, "one tag per stage");
    let (last_tag, last) = entries.last().unwrap();
    let chain: Vec<&str> = last["annotations"]["dev.kiln.cache.chain"]
        .as_str()
        .unwrap()
        .split(',')
        .collect();
    assert_eq!(chain.len(), 4);
    assert_eq!(last["annotations"]["dev.kiln.cache.key"], chain[3]);
    assert_eq!(last["annotations"]["dev.kiln.cache.parent"], chain[2]);
    assert_eq!(
        last["layers"].as_array().unwrap().len(),
        4,
        "the entry holds the whole chain"
    );
    // Any client reads an entry as an image: skopeo copies it, umoci unpacks it.
    let layout = runner_a.path("entry-layout");
    let copied = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{cache}:{}", entries[2].0))
        .arg(format!("oci:{}:entry", layout.display()))
        .output()
        .unwrap();
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    let bundle = runner_a.path("entry-bundle");
    let unpacked = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:entry", layout.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        unpacked.status.success(),
        "{}",
        String::from_utf8_lossy(&unpacked.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(bundle.join("rootfs/srv/app/stamp")).unwrap(),
        "built\n"
    );

    // Runner B starts empty: every stage comes from the registry, and the
    // image is A's, bit for bit.
    let runner_b = TestEnv::new();
    let (stderr, digest_b) = build(&runner_b, "--cache-from");
    let lines = stage_lines(&stderr);
    assert_eq!(lines.len(), 4, "{stderr}");
    assert!(
        lines.iter().all(|line| line.contains("cached (registry")),
        "{stderr}"
    );
    assert_eq!(digest_b, digest);
    // Its provenance says which stages came from where, and what they read.
    let provenance = runner_b.kiln(["provenance", "fleet:1.0.0"]);
    provenance.expect_code(0);
    let statement: serde_json::Value = serde_json::from_str(&provenance.stdout).unwrap();
    assert_eq!(statement["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(statement["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(
        statement["subject"][0]["digest"]["sha256"],
        digest.trim_start_matches("sha256:")
    );
    let dependencies = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap();
    let shared: Vec<&serde_json::Value> = dependencies
        .iter()
        .filter(|dependency| dependency["uri"] == format!("oci://{cache}").as_str())
        .collect();
    assert_eq!(shared.len(), 4, "{statement:#}");
    let motd = dependencies
        .iter()
        .find(|dependency| dependency["uri"] == "file:motd")
        .expect("the file stage's input");
    assert_eq!(
        motd["digest"]["sha256"],
        sha256_hex(b"welcome to the fleet\n").as_str()
    );
    runner_b.assert_no_leftovers();

    // The last stage's tag retagged to the entry of the stage below it: its
    // annotations say so, it is refused, and only that stage runs.
    put_manifest(
        &host,
        "golden/kiln-cache",
        last_tag,
        &get_manifest(&host, "golden/kiln-cache", &entries[2].0),
    );
    let runner_c = TestEnv::new();
    let (stderr, digest_c) = build(&runner_c, "--cache-from");
    assert!(
        stderr.contains("entry of stage 3 not used: its annotation dev.kiln.cache.key"),
        "{stderr}"
    );
    let lines = stage_lines(&stderr);
    assert!(
        lines[..3]
            .iter()
            .all(|line| line.contains("cached (registry")),
        "{stderr}"
    );
    assert!(lines[3].contains("[3] done in"), "{stderr}");
    assert_eq!(digest_c, digest);
    runner_c.assert_no_leftovers();

    // The right annotations over a wrong layer: the layer of stage 1 in the
    // place of stage 3's. Its bytes do not hash to the diff id the config
    // gives, so it is refused when unpacked, and stage 3 runs.
    let mut forged: serde_json::Value = last.clone();
    forged["layers"][3] = last["layers"][1].clone();
    put_manifest(
        &host,
        "golden/kiln-cache",
        last_tag,
        &serde_json::to_vec(&forged).unwrap(),
    );
    let runner_d = TestEnv::new();
    let (stderr, digest_d) = build(&runner_d, "--cache-from");
    assert!(stderr.contains("entry of stage 3 not used"), "{stderr}");
    let lines = stage_lines(&stderr);
    assert!(
        lines[..3]
            .iter()
            .all(|line| line.contains("cached (registry")),
        "the stages restored before the bad layer came from the registry: {stderr}"
    );
    assert!(lines[3].contains("[3] done in"), "{stderr}");
    assert_eq!(digest_d, digest);
    runner_d.assert_no_leftovers();
    runner_a.assert_no_leftovers();
}

#[test]
fn a_stage_that_uses_a_secret_is_not_shared_unless_it_says_so() {
    let env = TestEnv::new();
    let registry = Registry::start(&env, None);
    let cache = format!("{}/golden/kiln-cache", registry.host());
    let secret = "tok-5f1e-secret-value";
    let template = |version: &str, share: &str| {
        format!(
            "{}\n[variables.token]\ndefault = \"{secret}\"\nsensitive = true\n\n\
             [[provisioner]]\ntype = \"shell\"\ninline = [\"echo public > /public\"]\n\n\
             [[provisioner]]\ntype = \"shell\"\ninline = [\"echo \\\"$KILN_VAR_token\\\" | wc -c > /token-length\"]\n{share}\n\
             [[provisioner]]\ntype = \"shell\"\ninline = [\"echo after > /after\"]\n",
            busybox_template("secretive", version)
        )
    };
    let path = env.write("secretive.toml", &template("1", ""));
    let built = env.kiln(["build", path.to_str().unwrap(), "--cache-to", &cache]);
    built.expect_code(0);
    assert!(
        built.stderr.contains(
            "stage 2 uses sensitive variable token: it and the stages after it are not pushed"
        ),
        "{}",
        built.stderr
    );
    assert!(built.stderr.contains("pushed 2 stages"), "{}", built.stderr);
    assert_eq!(
        cache_entries(&registry.host(), "golden/kiln-cache").len(),
        2
    );
    let provenance = env.kiln(["provenance", "secretive:1"]);
    provenance.expect_code(0);
    assert!(!provenance.stdout.contains(secret), "{}", provenance.stdout);
    let statement: serde_json::Value = serde_json::from_str(&provenance.stdout).unwrap();
    assert_eq!(
        statement["predicate"]["buildDefinition"]["externalParameters"]["variables"]["token"],
        "<sensitive>"
    );
    assert!(!built.stderr.contains(secret));

    // With share = true it goes, and what follows it.
    env.write("secretive.toml", &template("2", "share = true\n"));
    let shared = env.kiln(["build", path.to_str().unwrap(), "--cache-to", &cache]);
    shared.expect_code(0);
    assert!(
        shared.stderr.contains("pushed 2 stages, 2 there already"),
        "{}",
        shared.stderr
    );
    assert_eq!(
        cache_entries(&registry.host(), "golden/kiln-cache").len(),
        4
    );
    env.assert_no_leftovers();
}

#[test]
fn an_app_on_a_registry_base_builds_in_a_fresh_home_without_a_pull() {
    let golden = TestEnv::new();
    let registry = Registry::start(&golden, None);
    let host = registry.host();
    let base_template = golden.write(
        "base.toml",
        &format!(
            "{}\n[[provisioner]]\ntype = \"shell\"\ninline = [\"echo golden > /etc/golden\"]\n\n[publish]\nremote = [\"{host}/corp/base\"]\n",
            busybox_template("corp/base", "1.0.0")
        ),
    );
    golden
        .kiln(["build", base_template.to_str().unwrap()])
        .expect_code(0);
    let base_digest = golden.stored_digest("corp/base:1.0.0").unwrap();

    let app = |env: &TestEnv, reference: &str| {
        env.write(
            "app.toml",
            &format!(
                "[image]\nname = \"app\"\nversion = \"2.0.0\"\n\n[source]\ntype = \"image\"\nref = \"{reference}\"\n\n\
                 [[provisioner]]\ntype = \"shell\"\ninline = [\"echo app > /etc/app\"]\n"
            ),
        )
    };
    let cache = format!("{host}/corp/kiln-cache");
    let runner = TestEnv::new();
    let template = app(&runner, &format!("{host}/corp/base:1.0.0"));
    let built = runner.kiln(["build", template.to_str().unwrap(), "--cache-to", &cache]);
    built.expect_code(0);
    assert_eq!(
        runner.stored_digest("corp/base:1.0.0").as_deref(),
        Some(base_digest.as_str()),
        "the base is stored under its repository path, verified"
    );
    assert_eq!(
        runner.stored_manifest("app:2.0.0")["annotations"]["org.opencontainers.image.base.digest"],
        base_digest.as_str()
    );

    // Pinned by digest, in another fresh home: the base is pulled, the app
    // stage comes from the shared cache (its chain starts on the base's
    // layers), and the layers are the same (the template's text, and so
    // its digest annotation, is not).
    let pinned = TestEnv::new();
    let template = app(&pinned, &format!("{host}/corp/base:1.0.0@{base_digest}"));
    let built = pinned.kiln(["build", template.to_str().unwrap(), "--cache-from", &cache]);
    built.expect_code(0);
    assert!(
        built.stderr.contains("[1] cached (registry"),
        "{}",
        built.stderr
    );
    assert_eq!(
        pinned.stored_manifest("app:2.0.0")["layers"],
        runner.stored_manifest("app:2.0.0")["layers"]
    );

    // A pin the registry does not have: a clear error, nothing stored.
    let wrong = TestEnv::new();
    let other = format!("sha256:{}", "0".repeat(64));
    let template = app(&wrong, &format!("{host}/corp/base:1.0.0@{other}"));
    let refused = wrong.kiln(["build", template.to_str().unwrap()]);
    refused.expect_code(1);
    assert!(
        refused.stderr.contains("failed to look up the base image"),
        "{}",
        refused.stderr
    );
    assert_eq!(wrong.stored_digest("corp/base:1.0.0"), None);
    wrong.assert_no_leftovers();

    // kiln pull keeps the repository path.
    let pulled = TestEnv::new();
    pulled
        .kiln(["pull", &format!("{host}/corp/base:1.0.0")])
        .expect_code(0);
    assert_eq!(
        pulled.stored_digest("corp/base:1.0.0").as_deref(),
        Some(base_digest.as_str())
    );
    runner.assert_no_leftovers();
    pinned.assert_no_leftovers();
}

#[test]
fn channels_move_and_roll_back_on_the_registry_as_a_stack() {
    require_tool("skopeo", "skopeo");
    let env = TestEnv::new();
    let registry = Registry::start(&env, None);
    let remote = format!("{}/golden/site", registry.host());
    let template = |version: &str| {
        env.write(
            &format!("site-{version}.toml"),
            &format!(
                "{}\n[[provisioner]]\ntype = \"shell\"\ninline = [\"echo {version} > /etc/release\"]\n\n\
                 [publish]\nchannels = [\"stable\"]\nremote = [\"{remote}\"]\n",
                busybox_template("site", version)
            ),
        )
    };
    let mut digests = Vec::new();
    for version in ["1.1.0", "1.2.0", "1.3.0"] {
        env.kiln(["build", template(version).to_str().unwrap()])
            .expect_code(0);
        digests.push(env.stored_digest(&format!("site:{version}")).unwrap());
    }
    let stable = format!("{remote}:stable");
    assert_eq!(skopeo_digest(&stable, None), digests[2]);

    let back = env.kiln(["channel", "rollback", "site", "stable"]);
    back.expect_code(0);
    assert!(
        back.stdout.contains("rolled back to 1.2.0"),
        "{}",
        back.stdout
    );
    assert_eq!(
        skopeo_digest(&stable, None),
        digests[1],
        "the registry's tag moved too"
    );
    let back = env.kiln(["channel", "rollback", "site", "stable"]);
    back.expect_code(0);
    assert!(
        back.stdout.contains("rolled back to 1.1.0"),
        "{}",
        back.stdout
    );
    assert_eq!(skopeo_digest(&stable, None), digests[0]);

    // CI runs again for 1.3.0, which is stored: the rollback stands.
    let rerun = env.kiln(["build", template("1.3.0").to_str().unwrap()]);
    rerun.expect_code(0);
    assert!(
        rerun.stderr.contains("channel stable stays at 1.1.0"),
        "{}",
        rerun.stderr
    );
    assert_eq!(skopeo_digest(&stable, None), digests[0]);
    assert_eq!(skopeo_digest(&format!("{remote}:1.3.0"), None), digests[2]);

    // Setting the version it points at records nothing.
    let again = env.kiln(["channel", "set", "site", "stable", "1.1.0"]);
    again.expect_code(0);
    assert!(
        again.stdout.contains("is at 1.1.0 already"),
        "{}",
        again.stdout
    );
    let history = env.kiln(["channel", "history", "site", "stable"]);
    history.expect_code(0);
    let moves: Vec<(&str, &str)> = history
        .stdout
        .lines()
        .skip(1)
        .map(|line| {
            let mut words = line.split_whitespace().skip(1);
            (words.next().unwrap(), words.next().unwrap())
        })
        .collect();
    assert_eq!(
        moves,
        [
            ("publish", "1.1.0"),
            ("publish", "1.2.0"),
            ("publish", "1.3.0"),
            ("rollback", "1.2.0"),
            ("rollback", "1.1.0")
        ]
    );
    let bottom = env.kiln(["channel", "rollback", "site", "stable"]);
    bottom.expect_code(1);
    assert!(
        bottom.stderr.contains("no earlier version"),
        "{}",
        bottom.stderr
    );

    // --remote moves the tag in another repository as well.
    let mirror = format!("{}/mirror/site", registry.host());
    env.kiln([
        "channel", "set", "site", "stable", "1.3.0", "--remote", &mirror,
    ])
    .expect_code(0);
    assert_eq!(skopeo_digest(&format!("{mirror}:stable"), None), digests[2]);
    assert_eq!(skopeo_digest(&stable, None), digests[2]);
    env.assert_no_leftovers();
}
