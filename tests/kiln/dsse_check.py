"""Checks kiln's DSSE envelopes with securesystemslib, and tampers with an
attestation on a registry, for tests/kiln/signing.rs.

verify PUB ENVELOPE     prints "verified" or "refused: WHY"
tamper HOST REPO TAG    changes one byte of the second envelope's payload
                        under TAG (not re-signed) and stores it back
"""

import base64
import hashlib
import json
import sys
import urllib.request

from cryptography.hazmat.primitives.serialization import load_pem_public_key
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey


def verify(public_path, envelope_path):
    with open(public_path, "rb") as file:
        public = load_pem_public_key(file.read())
    with open(envelope_path) as file:
        document = json.load(file)
    key = SSlibKey.from_crypto(public, keyid=document["signatures"][0]["keyid"])
    try:
        Envelope.from_dict(document).verify([key], 1)
        print("verified")
    except Exception as error:  # the verifier's own error types vary
        print(f"refused: {type(error).__name__}: {error}")


MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def request(method, url, body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    with urllib.request.urlopen(req) as response:
        return response.read(), response.headers


def tamper(host, repo, tag):
    base = f"http://{host}/v2/{repo}"
    manifest, _ = request("GET", f"{base}/manifests/{tag}", headers={"Accept": MANIFEST})
    manifest = json.loads(manifest)
    layer = manifest["layers"][1]
    envelope, _ = request("GET", f"{base}/blobs/{layer['digest']}")
    envelope = json.loads(envelope)
    payload = bytearray(base64.b64decode(envelope["payload"]))
    at = payload.index(b"sha256") + len("sha256") + 5
    payload[at] = ord("0") if payload[at] != ord("0") else ord("1")
    envelope["payload"] = base64.b64encode(bytes(payload)).decode()
    blob = json.dumps(envelope).encode()
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    _, headers = request("POST", f"{base}/blobs/uploads/", body=b"")
    location = headers["Location"]
    if location.startswith("/"):
        location = f"http://{host}{location}"
    separator = "&" if "?" in location else "?"
    request("PUT", f"{location}{separator}digest={digest}", body=blob,
            headers={"Content-Type": "application/octet-stream"})
    layer["digest"] = digest
    layer["size"] = len(blob)
    request("PUT", f"{base}/manifests/{tag}", body=json.dumps(manifest).encode(),
            headers={"Content-Type": MANIFEST})
    print("tampered")


if __name__ == "__main__":
    if sys.argv[1] == "verify":
        verify(sys.argv[2], sys.argv[3])
    else:
        tamper(sys.argv[2], sys.argv[3], sys.argv[4])
