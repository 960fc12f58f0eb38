"""What the AMI tests ask of moto, through boto3 (moto's own venv).

  setup ENDPOINT               an IAM user allowed everything; prints its keys
  state ENDPOINT REGION...     images, snapshots, launch permissions, the SSM
                               parameter of each region, as JSON
  blocks ENDPOINT REGION SNAP  each block index of a snapshot and the sha256
                               (hex) of its bytes, as JSON
  record ENDPOINT              start moto's request recorder
  recording ENDPOINT           the recorded requests (method, url, headers and
                               the body as text, block data left out), as JSON
  proxy ENDPOINT FAIL_AFTER    a proxy to moto that answers the PutSnapshotBlock
                               after the first FAIL_AFTER with a 400; prints its
                               port, serves until killed
  throttle ENDPOINT LOG        a proxy that answers every third request with a
                               503 and every seventh with a 400 ThrottlingException
                               (each logged as a line to LOG), forwards the rest

Keys come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. moto rebuilds each
request to check its signature and hashes a GET's body wrongly unless the
request carries X-Amz-Content-SHA256 (kiln always sends it); boto3 is made to
send it too.
"""

import base64
import hashlib
import http.client
import http.server
import json
import os
import sys
import threading
import urllib.parse
import urllib.request

import boto3


def add_content_sha256(request, **_):
    body = request.body or b""
    if isinstance(body, str):
        body = body.encode()
    if hasattr(body, "read"):
        return
    request.headers["X-Amz-Content-SHA256"] = hashlib.sha256(body).hexdigest()


def client(service, endpoint, region, **keys):
    made = boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=keys.get("key", os.environ.get("AWS_ACCESS_KEY_ID", "x")),
        aws_secret_access_key=keys.get(
            "secret", os.environ.get("AWS_SECRET_ACCESS_KEY", "x")
        ),
    )
    made.meta.events.register("before-sign.*", add_content_sha256)
    return made


def setup(endpoint):
    iam = client("iam", endpoint, "us-east-1", key="setup", secret="setup")
    iam.create_user(UserName="kiln")
    iam.put_user_policy(
        UserName="kiln",
        PolicyName="everything",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
            }
        ),
    )
    key = iam.create_access_key(UserName="kiln")["AccessKey"]
    print(json.dumps({"key": key["AccessKeyId"], "secret": key["SecretAccessKey"]}))


def state(endpoint, regions):
    out = {}
    for region in regions:
        ec2 = client("ec2", endpoint, region)
        ssm = client("ssm", endpoint, region)
        images = []
        for image in ec2.describe_images(Owners=["self"])["Images"]:
            permissions = ec2.describe_image_attribute(
                ImageId=image["ImageId"], Attribute="launchPermission"
            )["LaunchPermissions"]
            images.append(
                {
                    "id": image["ImageId"],
                    "name": image.get("Name"),
                    "tags": {tag["Key"]: tag["Value"] for tag in image.get("Tags", [])},
                    "launch_permissions": [
                        p.get("UserId") or p.get("Group") for p in permissions
                    ],
                }
            )
        snapshots = [
            {
                "id": snapshot["SnapshotId"],
                "tags": {tag["Key"]: tag["Value"] for tag in snapshot.get("Tags", [])},
            }
            for snapshot in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
        ]
        parameters = {
            parameter["Name"]: parameter["Value"]
            for parameter in ssm.get_parameters_by_path(Path="/", Recursive=True)[
                "Parameters"
            ]
        }
        out[region] = {"images": images, "snapshots": snapshots, "parameters": parameters}
    print(json.dumps(out))


def blocks(endpoint, region, snapshot):
    ebs = client("ebs", endpoint, region)
    listed = ebs.list_snapshot_blocks(SnapshotId=snapshot)["Blocks"]
    out = {}
    for block in listed:
        index = int(block["BlockIndex"])
        data = ebs.get_snapshot_block(
            SnapshotId=snapshot, BlockIndex=index, BlockToken=block["BlockToken"]
        )["BlockData"].read()
        out[str(index)] = hashlib.sha256(data).hexdigest()
    print(json.dumps(out))


def record(endpoint):
    urllib.request.urlopen(
        urllib.request.Request(endpoint + "/moto-api/recorder/start-recording", method="POST")
    ).read()


def recording(endpoint):
    text = urllib.request.urlopen(endpoint + "/moto-api/recorder/download-recording").read()
    # moto's threads append entries without a lock: two can share a line,
    # or (the big PutSnapshotBlock ones) cut into each other. Read every
    # object that parses, and skip to the next entry's start otherwise.
    text = text.decode("utf-8", "replace")
    decoder = json.JSONDecoder()
    entries = []
    at = 0
    while True:
        at = text.find('{"headers"', at)
        if at < 0:
            break
        try:
            entry, end = decoder.raw_decode(text, at)
            entries.append(entry)
            at = end
        except json.JSONDecodeError:
            at += 1
    out = []
    for entry in entries:
        body = entry.get("body") or ""
        if entry.get("body_encoded"):
            body = base64.b64decode(body)
            body = "" if "/blocks/" in entry["url"] else body.decode("utf-8", "replace")
        out.append(
            {
                "method": entry["method"],
                "url": entry["url"],
                "headers": entry["headers"],
                "body": urllib.parse.unquote_plus(body),
            }
        )
    print(json.dumps(out))


def proxy(endpoint, fail_after, throttle_log=None):
    upstream = urllib.parse.urlparse(endpoint)
    lock = threading.Lock()
    seen = {"blocks": 0, "requests": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_):
            pass

        def refuse(self, status, code):
            answer = json.dumps({"__type": code, "message": "forced by the test"}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("x-amzn-ErrorType", code)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
            with lock, open(throttle_log, "a") as log:
                log.write(f"{status} {self.command} {self.path}\n")

        def forward(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if throttle_log is not None:
                with lock:
                    seen["requests"] += 1
                    count = seen["requests"]
                if count % 3 == 0:
                    return self.refuse(503, "ServiceUnavailable")
                if count % 7 == 0:
                    return self.refuse(400, "ThrottlingException")
            if self.command == "PUT" and "/blocks/" in self.path:
                with lock:
                    seen["blocks"] += 1
                    failing = seen["blocks"] > fail_after
                if failing:
                    answer = json.dumps(
                        {"__type": "ValidationException", "message": "forced by the test"}
                    ).encode()
                    self.send_response(400)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                    return
            connection = http.client.HTTPConnection(upstream.hostname, upstream.port)
            headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in ("content-length", "connection", "transfer-encoding"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            connection.close()

        do_GET = do_PUT = do_POST = do_DELETE = forward

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    command, endpoint, *rest = sys.argv[1:]
    if command == "setup":
        setup(endpoint)
    elif command == "state":
        state(endpoint, rest)
    elif command == "blocks":
        blocks(endpoint, rest[0], rest[1])
    elif command == "record":
        record(endpoint)
    elif command == "recording":
        recording(endpoint)
    elif command == "proxy":
        proxy(endpoint, int(rest[0]))
    elif command == "throttle":
        proxy(endpoint, 1 << 62, rest[0])
    else:
        sys.exit(f"unknown command {command}")
