"""moto's AWS emulator as a real server process, for the AWS backend tests.

`moto_server` runs on a free 127.0.0.1 port for the whole test session, with dummy
credentials set only while it runs. Its AWS Batch runs job containers on the local Docker
engine in host network mode, so the jobs reach the emulator's S3 on 127.0.0.1 too.
Import the fixtures a test module needs from here (`from .aws_fixtures import fixture_...`);
they register under their `name` (moto_server, aws_setup, aws_credentials).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .conftest import require

REGION = "us-east-1"
# Dummy values for the emulator only; the tests check they never reach a job or a log.
DUMMY_KEY_ID = "AKIAMOTOTESTKEY00042"
DUMMY_SECRET = "moto-dummy-secret-value-0123456789abcdef"


def _moto_binary() -> str | None:
    beside = Path(sys.executable).with_name("moto_server")
    return str(beside) if beside.is_file() else shutil.which("moto_server")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class MotoServer:
    endpoint: str
    log: Path
    process: subprocess.Popen[bytes]

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(service, region_name=REGION, endpoint_url=self.endpoint)


def start_moto(folder: Path, extra_env: dict[str, str] | None = None) -> MotoServer:
    """Start moto_server on a free loopback port and wait until it answers."""
    binary = _moto_binary()
    require(binary is not None, "moto_server not installed: pip install 'moto[server]'")
    assert binary is not None
    port = _free_port()
    log = folder / f"moto-{port}.log"
    env = {
        **os.environ,
        # Batch job containers share the host's network: they reach 127.0.0.1:port.
        "MOTO_DOCKER_NETWORK_MODE": "host",
        "MOTO_PORT": str(port),
        **(extra_env or {}),
    }
    process = subprocess.Popen(
        [binary, "-H", "127.0.0.1", "-p", str(port)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
                break
        except OSError:
            pass
        if process.poll() is not None:
            pytest.fail(f"moto_server exited at start: {log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("moto_server did not answer within 60 s")
        time.sleep(0.1)
    return MotoServer(endpoint, log, process)


def stop_moto(server: MotoServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=10)


@pytest.fixture(scope="session", name="aws_credentials")
def fixture_aws_credentials(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Dummy credentials and no shared AWS config, for the tests' lifetime only."""
    empty = tmp_path_factory.mktemp("aws-config") / "none"
    patch = pytest.MonkeyPatch()
    patch.setenv("AWS_ACCESS_KEY_ID", DUMMY_KEY_ID)
    patch.setenv("AWS_SECRET_ACCESS_KEY", DUMMY_SECRET)
    patch.delenv("AWS_SESSION_TOKEN", raising=False)
    patch.delenv("AWS_PROFILE", raising=False)
    patch.setenv("AWS_DEFAULT_REGION", REGION)
    patch.setenv("AWS_CONFIG_FILE", str(empty))
    patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    yield
    patch.undo()


@pytest.fixture(scope="session", name="moto_server")
def fixture_moto_server(
    tmp_path_factory: pytest.TempPathFactory, aws_credentials: None
) -> Iterator[MotoServer]:
    try:
        import boto3  # noqa: F401
    except ImportError:
        require(False, "boto3 not installed: pip install 'jupyter-cloudpromote[aws,test]'")
    server = start_moto(tmp_path_factory.mktemp("moto"))
    try:
        yield server
    finally:
        stop_moto(server)


@dataclass
class AwsSetup:
    """The resources a profile needs, made in the emulator: a role, a bucket, and for Batch
    an UNMANAGED compute environment with a job queue."""

    server: MotoServer
    role_arn: str
    bucket: str
    job_queue: str

    def options(self, **overrides: Any) -> dict[str, Any]:
        return {
            "region": REGION,
            "endpoint_url": self.server.endpoint,
            "job_queue": self.job_queue,
            "bucket": self.bucket,
            "prefix": "jobs",
            "job_role_arn": self.role_arn,
            "role_arn": self.role_arn,
            "registry": "none",  # the emulator runs images straight from the local engine
            "s3_auth": "anonymous",  # moto accepts unsigned requests from the job
            **overrides,
        }


@pytest.fixture(scope="session", name="aws_setup")
def fixture_aws_setup(moto_server: MotoServer) -> AwsSetup:
    token = uuid.uuid4().hex[:8]
    iam = moto_server.client("iam")
    role_arn = iam.create_role(
        RoleName=f"cloudpromote-test-{token}",
        AssumeRolePolicyDocument='{"Version": "2012-10-17", "Statement": []}',
    )["Role"]["Arn"]
    bucket = f"cloudpromote-test-{token}"
    s3 = moto_server.client("s3")
    s3.create_bucket(Bucket=bucket)
    # Jobs in the emulator have no role to sign with (s3_auth=anonymous): the test bucket
    # lets anyone read and write, as a public bucket would. Signed requests from the
    # in-job signer are checked separately, with IAM enforcement on (test_staging.py).
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
            }
        ],
    }
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    batch = moto_server.client("batch")
    environment = batch.create_compute_environment(
        computeEnvironmentName=f"cpenv-{token}",
        type="UNMANAGED",
        state="ENABLED",
        serviceRole=role_arn,
    )["computeEnvironmentArn"]
    queue = f"cpqueue-{token}"
    batch.create_job_queue(
        jobQueueName=queue,
        state="ENABLED",
        priority=1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": environment}],
    )
    return AwsSetup(moto_server, role_arn, bucket, queue)
