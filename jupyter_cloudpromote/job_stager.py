"""The in-job side of S3 data staging, for backends whose service does not stage data itself.

Runs inside the job's container, before and after the runner: downloads the input prefix
(CLOUDPROMOTE_INPUT_URI) into CLOUDPROMOTE_INPUT_DIR, runs the command it is given, then
uploads CLOUDPROMOTE_OUTPUT_DIR to CLOUDPROMOTE_OUTPUT_URI, whatever the command's exit code,
and exits with that code. Standard library only: the job image holds just the notebook's own
requirements. The AWS Batch backend sends this file's source as the job's command
(`python -c ...`), so nothing has to be added to the image.

Credentials come from the job's own role, the way the AWS SDKs find them in a container:
AWS_ACCESS_KEY_ID/... in the environment (when a platform sets them), the ECS container
credentials endpoint (AWS Batch job roles), then the instance metadata service (IMDSv2).
CLOUDPROMOTE_S3_AUTH=anonymous sends unsigned requests instead (public buckets, emulators).
Nothing here ever prints a credential.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from typing import Any, BinaryIO

INPUT_URI_ENV = "CLOUDPROMOTE_INPUT_URI"
INPUT_DIR_ENV = "CLOUDPROMOTE_INPUT_DIR"
OUTPUT_URI_ENV = "CLOUDPROMOTE_OUTPUT_URI"
OUTPUT_DIR_ENV = "CLOUDPROMOTE_OUTPUT_DIR"
ENDPOINT_ENV = "CLOUDPROMOTE_S3_ENDPOINT"
AUTH_ENV = "CLOUDPROMOTE_S3_AUTH"
STAGING_FAILED_EXIT_CODE = 125
_UNSIGNED = "UNSIGNED-PAYLOAD"
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def say(message: str) -> None:
    print(f"[cloudpromote] {message}", file=sys.stderr, flush=True)


# --- credentials ------------------------------------------------------------------------


def _http_json(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> dict:
    # Only the container-credential and metadata endpoints AWS documents reach here.
    request = urllib.request.Request(url, headers=headers or {}, method=method)  # noqa: S310
    with urllib.request.urlopen(request, timeout=3) as answer:  # noqa: S310
        return json.loads(answer.read().decode("utf-8"))


def find_credentials(env: dict[str, str]) -> dict[str, str] | None:
    """{access_key, secret_key, token} from the container's standard sources, or None."""
    if env.get(AUTH_ENV, "").lower() == "anonymous":
        return None
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        return {
            "access_key": env["AWS_ACCESS_KEY_ID"],
            "secret_key": env["AWS_SECRET_ACCESS_KEY"],
            "token": env.get("AWS_SESSION_TOKEN", ""),
        }
    data = None
    if env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
        uri = env["AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"]
        data = _http_json("http://169.254.170.2" + uri)
    elif env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        headers = {}
        if env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN"):
            headers["Authorization"] = env["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
        data = _http_json(env["AWS_CONTAINER_CREDENTIALS_FULL_URI"], headers)
    else:
        base = "http://169.254.169.254/latest"
        token_request = urllib.request.Request(  # noqa: S310 - the metadata service
            base + "/api/token",
            method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": "21600"},
        )
        with urllib.request.urlopen(token_request, timeout=2) as answer:  # noqa: S310
            token = answer.read().decode("ascii")
        headers = {"X-aws-ec2-metadata-token": token}
        role_request = urllib.request.Request(  # noqa: S310 - the metadata service
            base + "/meta-data/iam/security-credentials/", headers=headers
        )
        with urllib.request.urlopen(role_request, timeout=2) as answer:  # noqa: S310
            role = answer.read().decode("utf-8").split()[0]
        data = _http_json(base + "/meta-data/iam/security-credentials/" + role, headers)
    return {
        "access_key": data["AccessKeyId"],
        "secret_key": data["SecretAccessKey"],
        "token": data.get("Token", ""),
    }


# --- requests ---------------------------------------------------------------------------


def _quote(text: str, safe: str = "-_.~") -> str:
    return urllib.parse.quote(text, safe=safe)


def sign_v4(
    method: str,
    url: str,
    headers: dict[str, str],
    credentials: dict[str, str],
    region: str,
    now: datetime.datetime,
    payload_hash: str = _UNSIGNED,
) -> dict[str, str]:
    """Headers for an S3 request signed with AWS Signature Version 4."""
    parts = urllib.parse.urlsplit(url)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    signed = {k.lower(): v.strip() for k, v in headers.items()}
    signed["host"] = parts.netloc
    signed["x-amz-date"] = amz_date
    signed["x-amz-content-sha256"] = payload_hash
    if credentials.get("token"):
        signed["x-amz-security-token"] = credentials["token"]
    query = sorted(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    canonical_query = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in query)
    names = sorted(signed)
    canonical = "\n".join(
        [
            method,
            _quote(urllib.parse.unquote(parts.path) or "/", safe="/-_.~"),
            canonical_query,
            "".join(f"{name}:{signed[name]}\n" for name in names),
            ";".join(names),
            payload_hash,
        ]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = ("AWS4" + credentials["secret_key"]).encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    signed["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={credentials['access_key']}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    del signed["host"]
    return signed


class S3:
    """The few S3 calls staging needs: list a prefix, get an object, put an object."""

    def __init__(self, env: dict[str, str]) -> None:
        self.region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
        self.endpoint = env.get(ENDPOINT_ENV, "").rstrip("/")
        self.credentials = find_credentials(env)

    def url(self, bucket: str, key: str, query: str = "") -> str:
        path = "/" + _quote(key, safe="/-_.~") if key else "/"
        if self.endpoint:  # emulators and VPC endpoints: path-style addressing
            base = f"{self.endpoint}/{bucket}"
        elif "." in bucket:  # dotted names break virtual-host TLS: path style
            base = f"https://s3.{self.region}.amazonaws.com/{bucket}"
        else:
            base = f"https://{bucket}.s3.{self.region}.amazonaws.com"
        return base + path + (f"?{query}" if query else "")

    def request(
        self,
        method: str,
        url: str,
        body: BinaryIO | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        headers = dict(headers or {})
        if self.credentials is not None:
            now = datetime.datetime.now(datetime.timezone.utc)
            # Bodiless requests sign the empty payload's hash; uploads stream unsigned.
            payload = _EMPTY_SHA256 if body is None else _UNSIGNED
            headers = sign_v4(method, url, headers, self.credentials, self.region, now, payload)
        request = urllib.request.Request(  # noqa: S310 - the S3 endpoint
            url,
            data=body,
            headers=headers,
            method=method,
        )
        return urllib.request.urlopen(request, timeout=300)  # noqa: S310 - S3 endpoint

    def list(self, bucket: str, prefix: str) -> list[str]:
        keys: list[str] = []
        token = ""
        while True:
            params = {"list-type": "2", "prefix": prefix}
            if token:
                params["continuation-token"] = token
            query = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in sorted(params.items()))
            with self.request("GET", self.url(bucket, "", query)) as answer:
                root = ET.fromstring(answer.read())  # noqa: S314 - S3's own answer
            keys += [e.text or "" for e in root.iter(f"{_S3_NS}Key")]
            truncated = root.findtext(f"{_S3_NS}IsTruncated") == "true"
            token = root.findtext(f"{_S3_NS}NextContinuationToken") or ""
            if not truncated or not token:
                return keys

    def get(self, bucket: str, key: str, path: str) -> None:
        with self.request("GET", self.url(bucket, key)) as answer, open(path, "wb") as out:
            while True:
                chunk = answer.read(1 << 20)
                if not chunk:
                    break
                out.write(chunk)

    def put(self, bucket: str, key: str, path: str) -> None:
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            # An explicit type: urllib would otherwise label the body as a form.
            headers = {"content-length": str(size), "content-type": "application/octet-stream"}
            with self.request("PUT", self.url(bucket, key), handle, headers):
                pass


def split_uri(uri: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"not an s3:// URI: {uri!r}")
    prefix = parts.path.lstrip("/")
    return parts.netloc, prefix


def safe_target(root: str, relative: str) -> str | None:
    """root/relative, or None when the key would land outside root."""
    target = os.path.normpath(os.path.join(root, relative))
    if relative.startswith("/") or os.path.commonpath([root, target]) != os.path.normpath(root):
        return None
    return target


# --- staging ----------------------------------------------------------------------------


def download_inputs(s3: S3, uri: str, dest: str) -> int:
    bucket, prefix = split_uri(uri)
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    count = 0
    os.makedirs(dest, exist_ok=True)
    for key in s3.list(bucket, prefix):
        relative = key[len(prefix) :]
        if not relative or relative.endswith("/"):
            continue
        target = safe_target(dest, relative)
        if target is None:
            say(f"skipped input object {key!r}: its name leaves the input folder")
            continue
        os.makedirs(os.path.dirname(target), exist_ok=True)
        s3.get(bucket, key, target)
        count += 1
    return count


def upload_outputs(s3: S3, source: str, uri: str) -> int:
    bucket, prefix = split_uri(uri)
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    count = 0
    for folder, _dirs, files in os.walk(source):
        for name in sorted(files):
            path = os.path.join(folder, name)
            if os.path.islink(path):
                continue
            relative = os.path.relpath(path, source).replace(os.sep, "/")
            s3.put(bucket, prefix + relative, path)
            count += 1
    return count


def main(argv: list[str]) -> int:
    if not argv:
        say("usage: job_stager COMMAND [ARGS...]")
        return 2
    env = dict(os.environ)
    try:
        s3 = S3(env)
        if env.get(INPUT_URI_ENV):
            started = time.monotonic()
            count = download_inputs(s3, env[INPUT_URI_ENV], env[INPUT_DIR_ENV])
            say(f"staged {count} input file(s) in {time.monotonic() - started:.1f}s")
    except Exception as exc:  # say what failed, never the credentials
        say(f"staging the inputs from {env.get(INPUT_URI_ENV)} failed: {type(exc).__name__}: {exc}")
        return STAGING_FAILED_EXIT_CODE
    child = subprocess.Popen(argv)

    def forward(signum: int, _frame: object) -> None:
        child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = child.wait()
    if env.get(OUTPUT_URI_ENV) and env.get(OUTPUT_DIR_ENV):
        try:
            count = upload_outputs(s3, env[OUTPUT_DIR_ENV], env[OUTPUT_URI_ENV])
            say(f"uploaded {count} output file(s) to {env[OUTPUT_URI_ENV]}")
        except Exception as exc:
            say(
                f"uploading the outputs to {env[OUTPUT_URI_ENV]} failed: "
                f"{type(exc).__name__}: {exc}"
            )
            if code == 0:
                return STAGING_FAILED_EXIT_CODE
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
