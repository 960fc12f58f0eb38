//! Signing: `kiln keygen`, `kiln sign`, `kiln verify --key` on the store and
//! on a Debian docker-registry, cosign's `.sig`/`.att`/`.sbom` tags read
//! with `skopeo inspect --raw`, every DSSE envelope checked by
//! securesystemslib (and refused by it after one byte changes), and `kiln
//! pull --key` refusing a wrong key, an unsigned image and a tampered
//! attestation with nothing stored; an `image` source with `verify_key`
//! refusing the same bases before a build.

use std::path::Path;
use std::process::Command;

use crate::registry::Registry;
use crate::util::{TestEnv, busybox_template, repo_root, require_tool, sbom_venv_python};

fn dsse_check(args: &[&str]) -> String {
    let output = Command::new(sbom_venv_python("securesystemslib"))
        .arg(repo_root().join("tests/kiln/dsse_check.py"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "dsse_check.py {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The manifest `skopeo inspect --raw` reads for `reference`.
fn raw_manifest(reference: &str) -> serde_json::Value {
    require_tool("skopeo", "skopeo");
    let output = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "skopeo inspect --raw {reference}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn build(env: &TestEnv, name: &str, version: &str) -> String {
    let template = env.write(
        &format!("{name}-{version}.toml"),
        &format!(
            "{}\n[[provisioner]]\ntype = \"shell\"\ninline = [\"echo {name} {version} > /etc/release\"]\n",
            busybox_template(name, version)
        ),
    );
    env.kiln(["build", template.to_str().unwrap()])
        .expect_code(0);
    env.stored_digest(&format!("{name}:{version}")).unwrap()
}

fn text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// A build in a fresh store on `reference` with `verify_key = key`: the
/// finished run, and the store it ran against.
fn build_on(reference: &str, key: &str) -> (TestEnv, crate::util::Outcome) {
    let env = TestEnv::new();
    let template = env.write(
        "based.toml",
        &format!(
            "[image]\nname = \"based\"\nversion = \"1\"\n\n[source]\ntype = \"image\"\n\
             ref = \"{reference}\"\nverify_key = \"{key}\"\n\n[[provisioner]]\ntype = \"shell\"\n\
             inline = [\"echo based > /etc/based\"]\n"
        ),
    );
    let run = env.kiln(["build", template.to_str().unwrap()]);
    (env, run)
}

fn assert_base_refused(reference: &str, key: &str, why: &str) {
    let (env, run) = build_on(reference, key);
    run.expect_code(1);
    assert!(
        run.stderr
            .contains("failed to verify the signature of the base image")
            && run.stderr.contains(why),
        "{}",
        run.stderr
    );
    assert_eq!(env.stored_digest("based:1"), None);
    env.assert_no_leftovers();
}

#[test]
fn signed_images_verify_locally_on_the_registry_and_before_a_pull() {
    let env = TestEnv::new();
    let registry = Registry::start(&env, None);
    let digest = build(&env, "web", "1.0");
    let hex = digest.trim_start_matches("sha256:");

    // Keys: PKCS#8 private (0600), PKIX public; never overwritten.
    let key = env.path("keys/release.pem");
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    env.kiln(["keygen", "-o", key.to_str().unwrap()])
        .expect_code(0);
    let public = env.path("keys/release.pub");
    assert!(text(&key).starts_with("-----BEGIN PRIVATE KEY-----\n"));
    assert!(text(&public).starts_with("-----BEGIN PUBLIC KEY-----\n"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let again = env.kiln(["keygen", "-o", key.to_str().unwrap()]);
    again.expect_code(1);
    assert!(
        again.stderr.contains("kiln does not overwrite a key"),
        "{}",
        again.stderr
    );
    let other_key = env.path("keys/other.pem");
    env.kiln(["keygen", "-o", other_key.to_str().unwrap()])
        .expect_code(0);
    let other = env.path("keys/other.pub");
    let (public, other) = (public.to_str().unwrap(), other.to_str().unwrap());

    // Locally: unsigned, then signed, and only by the right key.
    let unsigned = env.kiln(["verify", "web:1.0", "--key", public]);
    unsigned.expect_code(1);
    assert!(
        unsigned.stderr.contains("is not signed"),
        "{}",
        unsigned.stderr
    );
    env.kiln(["sign", "web:1.0", "--key", key.to_str().unwrap()])
        .expect_code(0);
    let verified = env.kiln(["verify", "--json", "web:1.0", "--key", public]);
    verified.expect_code(0);
    let report: serde_json::Value = serde_json::from_str(&verified.stdout).unwrap();
    assert_eq!(report["digest"], digest.as_str());
    assert_eq!(
        report["attestations"],
        serde_json::json!([
            "https://sigstore.dev/cosign/sign/v1",
            "https://slsa.dev/provenance/v1",
            "https://cyclonedx.org/bom",
            "https://spdx.dev/Document"
        ])
    );
    let wrong = env.kiln(["verify", "web:1.0", "--key", other]);
    wrong.expect_code(1);
    assert!(
        wrong.stderr.contains("not made by this key"),
        "{}",
        wrong.stderr
    );
    let private_as_public = env.kiln(["verify", "web:1.0", "--key", key.to_str().unwrap()]);
    private_as_public.expect_code(2);

    // On the registry: cosign's tags beside the image, naming its digest.
    let remote = format!("{}/team/web", registry.host());
    env.kiln(["push", "web:1.0", &remote]).expect_code(0);
    let sig = raw_manifest(&format!("{remote}:sha256-{hex}.sig"));
    let layer = &sig["layers"][0];
    assert_eq!(
        layer["mediaType"],
        "application/vnd.dev.cosign.simplesigning.v1+json"
    );
    assert!(layer["annotations"]["dev.cosignproject.cosign/signature"].is_string());
    let payload: serde_json::Value = serde_json::from_slice(
        &std::fs::read(registry.blob_data(layer["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    assert_eq!(
        payload["critical"]["image"]["docker-manifest-digest"],
        digest.as_str()
    );
    assert_eq!(
        payload["critical"]["type"],
        "cosign container image signature"
    );
    let att = raw_manifest(&format!("{remote}:sha256-{hex}.att"));
    let layers = att["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 4, "{att}");
    for layer in layers {
        assert_eq!(layer["mediaType"], "application/vnd.dsse.envelope.v1+json");
        let envelope_path = registry.blob_data(layer["digest"].as_str().unwrap());
        let envelope: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&envelope_path).unwrap()).unwrap();
        assert_eq!(envelope["payloadType"], "application/vnd.in-toto+json");
        let checked = dsse_check(&["verify", public, envelope_path.to_str().unwrap()]);
        assert_eq!(checked.trim(), "verified", "{}", layer["annotations"]);
        let refused = dsse_check(&["verify", other, envelope_path.to_str().unwrap()]);
        assert!(refused.starts_with("refused"), "{refused}");
        // One byte of the payload changed: securesystemslib refuses it.
        let mut tampered = envelope.clone();
        let mut bytes = envelope["payload"].as_str().unwrap().as_bytes().to_vec();
        bytes[8] = if bytes[8] == b'A' { b'B' } else { b'A' };
        tampered["payload"] = String::from_utf8(bytes).unwrap().into();
        let tampered_path = env.write("tampered.json", &tampered.to_string());
        let refused = dsse_check(&["verify", public, tampered_path.to_str().unwrap()]);
        assert!(refused.starts_with("refused"), "{refused}");
    }
    let sbom = raw_manifest(&format!("{remote}:sha256-{hex}.sbom"));
    assert_eq!(
        sbom["layers"][0]["mediaType"],
        "application/vnd.cyclonedx+json"
    );
    assert_eq!(sbom["layers"][1]["mediaType"], "application/spdx+json");
    let listing = env.kiln(["images", &remote]);
    assert!(!listing.stdout.contains(".sig"), "{}", listing.stdout);

    env.kiln(["verify", &format!("{remote}:1.0"), "--key", public])
        .expect_code(0);
    env.kiln(["verify", &format!("{remote}:1.0"), "--key", other])
        .expect_code(1);

    // `[publish] sign`: every build signed before it is pushed; a key that
    // is not there is a template error.
    let signed_remote = format!("{}/team/signed", registry.host());
    let publish = format!(
        "\n[publish]\nremote = [\"{signed_remote}\"]\nsign = {{ key = \"keys/release.pem\" }}\n"
    );
    let template = env.write(
        "signed.toml",
        &format!("{}{publish}", busybox_template("signed", "2.0")),
    );
    env.kiln(["build", template.to_str().unwrap()])
        .expect_code(0);
    env.kiln(["verify", "signed:2.0", "--key", public])
        .expect_code(0);
    env.kiln(["verify", &format!("{signed_remote}:2.0"), "--key", public])
        .expect_code(0);
    let missing = env.write(
        "missing-key.toml",
        &format!(
            "{}{}",
            busybox_template("signed", "2.1"),
            publish.replace("release.pem", "missing.pem")
        ),
    );
    let invalid = env.kiln(["validate", missing.to_str().unwrap()]);
    invalid.expect_code(2);
    assert!(
        invalid.stderr.contains("publish.sign.key"),
        "{}",
        invalid.stderr
    );

    // Pulls: the wrong key and an unsigned image store nothing.
    let fresh = TestEnv::new();
    let refused = fresh.kiln(["pull", &format!("{remote}:1.0"), "--key", other]);
    refused.expect_code(1);
    assert!(
        refused.stderr.contains("not made by this key"),
        "{}",
        refused.stderr
    );
    assert_eq!(fresh.stored_digest("team/web:1.0"), None);
    build(&env, "plain", "1.0");
    let plain = format!("{}/team/plain", registry.host());
    env.kiln(["push", "plain:1.0", &plain]).expect_code(0);
    let refused = fresh.kiln(["pull", &format!("{plain}:1.0"), "--key", public]);
    refused.expect_code(1);
    assert!(
        refused.stderr.contains("is not signed"),
        "{}",
        refused.stderr
    );
    assert_eq!(fresh.stored_digest("team/plain:1.0"), None);

    // The right key: pulled, with its signatures, which verify locally.
    let pulled = fresh.kiln(["pull", &format!("{remote}:1.0"), "--key", public]);
    pulled.expect_code(0);
    assert!(
        pulled
            .stderr
            .contains("signature verified (4 attestations)"),
        "{}",
        pulled.stderr
    );
    assert_eq!(
        fresh.stored_digest("team/web:1.0").as_deref(),
        Some(digest.as_str())
    );
    fresh
        .kiln(["verify", "team/web:1.0", "--key", public])
        .expect_code(0);

    // An image source with `verify_key`: the same checks before a build.
    assert_base_refused(&format!("{remote}:1.0"), other, "not made by this key");
    assert_base_refused(&format!("{plain}:1.0"), public, "is not signed");
    let (based, run) = build_on(&format!("{remote}:1.0"), public);
    run.expect_code(0);
    assert!(based.stored_digest("based:1").is_some());
    // The base's signatures, checked on the registry, were kept with it.
    based
        .kiln(["verify", "team/web:1.0", "--key", public])
        .expect_code(0);

    // A tampered attestation on the registry: refused, nothing stored.
    dsse_check(&[
        "tamper",
        &registry.host(),
        "team/web",
        &format!("sha256-{hex}.att"),
    ]);
    env.kiln(["verify", &format!("{remote}:1.0"), "--key", public])
        .expect_code(1);
    let third = TestEnv::new();
    let refused = third.kiln(["pull", &format!("{remote}:1.0"), "--key", public]);
    refused.expect_code(1);
    assert!(
        refused
            .stderr
            .contains("failed to verify the attestation `https://slsa.dev/provenance/v1`"),
        "{}",
        refused.stderr
    );
    assert_eq!(third.stored_digest("team/web:1.0"), None);
    third.assert_no_leftovers();
    assert_base_refused(
        &format!("{remote}:1.0"),
        public,
        "failed to verify the attestation `https://slsa.dev/provenance/v1`",
    );
}
