"""The aws-batch backend against moto's server, whose AWS Batch really runs the job's
container on the local Docker engine (host network, so the job reaches moto's S3), and the
image pushes against Debian's docker-registry and moto's ECR API.

What the emulator cannot show: moto ignores vCPU/memory/GPU requirements and retries, has no
real job role credentials inside the container (the test bucket is public, s3_auth is
anonymous), and writes a job's CloudWatch log only when the container has ended.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_cloudpromote.backends.aws_batch import CANCEL_REASON, AwsBatchBackend
from jupyter_cloudpromote.backends.base import SubmitRequest
from jupyter_cloudpromote.build import build_image
from jupyter_cloudpromote.errors import BackendError
from jupyter_cloudpromote.models import BackendStatus, BuildContext, JobState, Resources
from jupyter_cloudpromote.package import make_build_context
from jupyter_cloudpromote.registry_push import (
    RegistryLogin,
    ecr_login,
    ensure_ecr_repository,
    push_for_backend,
    push_image,
)

from .aws_fixtures import (  # noqa: F401 - fixtures
    DUMMY_KEY_ID,
    DUMMY_SECRET,
    REGION,
    AwsSetup,
    MotoServer,
    fixture_aws_credentials,
    fixture_aws_setup,
    fixture_moto_server,
    start_moto,
    stop_moto,
)
from .conftest import make_notebook
from .test_build_docker import local_registry  # noqa: F401 - the shared registry fixture

JOB_SCRIPT = """\
import json, os, pathlib, sys, time

params = json.loads(os.environ["CLOUDPROMOTE_PARAMETERS"])
mode = params.get("mode", "ok")
out = pathlib.Path(os.environ["CLOUDPROMOTE_OUTPUT_DIR"])
if mode == "ok":
    data = pathlib.Path(os.environ["CLOUDPROMOTE_INPUT_DIR"], "numbers.txt").read_text()
    total = sum(int(x) for x in data.split()) * params["factor"]
    (out / "plots").mkdir(exist_ok=True)
    (out / "plots" / "total.txt").write_text(f"total={total}")
    print(f"hello from batch, total {total}, job {os.environ['CLOUDPROMOTE_JOB_ID']}")
elif mode == "fail":
    print("about to fail")
    raise ValueError("boom on purpose")
elif mode == "sleep":
    print("sleeping", flush=True)
    time.sleep(300)
"""

pytestmark = [pytest.mark.aws, pytest.mark.slow]  # every test here needs moto's server


class BatchJobs:
    def __init__(self, root: Path, context: BuildContext, image: str, setup: AwsSetup) -> None:
        self.root = root
        self.context = context
        self.image = image
        self.setup = setup

    def backend(self, **overrides: Any) -> AwsBatchBackend:
        backend = AwsBatchBackend("batch", self.setup.options(**overrides))
        backend.validate_options()
        return backend

    def submit(
        self, backend: AwsBatchBackend, parameters: dict[str, Any], **resources: Any
    ) -> tuple[str, Path]:
        job_id = uuid.uuid4().hex[:12]
        job_dir = self.root / job_id
        (job_dir / "outputs").mkdir(parents=True)
        request = SubmitRequest(
            job_id=job_id,
            job_dir=job_dir,
            context=self.context,
            image=self.image,
            resources=Resources(**resources),
            parameters=parameters,
            env={"EXTRA_SETTING": "from-env"},
            options=backend.options,
        )
        return backend.submit(request), job_dir


def wait_for(
    backend: AwsBatchBackend, backend_id: str, job_dir: Path, states: set[JobState]
) -> tuple[BackendStatus, list[JobState]]:
    seen: list[JobState] = []
    deadline = time.monotonic() + 120
    while True:
        status = backend.status(backend_id, job_dir)
        if not seen or seen[-1] is not status.state:
            seen.append(status.state)
        if status.state in states:
            return status, seen
        assert time.monotonic() < deadline, f"stuck in {status}"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def batch_jobs(
    tmp_path_factory: pytest.TempPathFactory,
    docker_client: Any,
    base_image: str,
    aws_setup: AwsSetup,
) -> Iterator[BatchJobs]:
    root = tmp_path_factory.mktemp("batchjobs")
    token = uuid.uuid4().hex[:10]
    notebook = make_notebook(root / "nb" / f"batch test {token}.ipynb", [JOB_SCRIPT])
    context = make_build_context(
        dest=root / "context",
        notebook_path=notebook,
        script=JOB_SCRIPT,
        requirements=[],
        local_modules=[],
        include=[],
        base_image=base_image,
        python_version="3.11.2",
        ca_bundle=None,  # nothing to install: no index to reach
    )
    started = time.monotonic()
    result = build_image(context, client=docker_client)
    print(f"\n[measure] aws-batch test image build: {time.monotonic() - started:.1f}s")
    yield BatchJobs(root / "jobs", context, result.image, aws_setup)
    docker_client.images.remove(result.image, force=True)


@pytest.mark.docker
@pytest.mark.slow
def test_batch_job_runs_on_docker_through_moto_with_input_outputs_and_logs(
    batch_jobs: BatchJobs, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "numbers.txt").write_text("1 2 3 4\n")
    backend = batch_jobs.backend(input=str(data))
    started = time.monotonic()
    backend_id, job_dir = batch_jobs.submit(
        backend, {"mode": "ok", "factor": 10}, cpus=1, memory="512M", time_limit="10m"
    )
    status, seen = wait_for(backend, backend_id, job_dir, {JobState.SUCCEEDED, JobState.FAILED})
    print(
        f"\n[measure] aws-batch submit to succeeded through moto: {time.monotonic() - started:.1f}s"
    )
    assert status.state is JobState.SUCCEEDED, status.reason
    assert JobState.QUEUED in seen or JobState.RUNNING in seen
    backend.collect_outputs(backend_id, job_dir)
    assert (job_dir / "outputs" / "plots" / "total.txt").read_text() == "total=100"
    log = backend.logs(backend_id, job_dir)
    assert f"hello from batch, total 100, job {job_dir.name}" in log
    assert "staged 1 input file(s)" in log and "uploaded 1 output file(s)" in log
    assert (job_dir / "logs" / "run.log").read_text() == log

    batch = batch_jobs.setup.server.client("batch")
    job = batch.describe_jobs(jobs=[backend_id])["jobs"][0]
    definition = batch.describe_job_definitions(jobDefinitions=[job["jobDefinition"]])
    env = {e["name"]: e["value"] for e in job["container"]["environment"]}
    assert json.loads(env["CLOUDPROMOTE_PARAMETERS"]) == {"mode": "ok", "factor": 10}
    assert env["EXTRA_SETTING"] == "from-env"
    assert job["timeout"]["attemptDurationSeconds"] == 600 + 300
    everything = json.dumps([job, definition["jobDefinitions"]], default=str) + log
    assert DUMMY_KEY_ID not in everything and DUMMY_SECRET not in everything


@pytest.mark.docker
@pytest.mark.slow
def test_batch_failure_reason_carries_the_traceback_from_cloudwatch(
    batch_jobs: BatchJobs,
) -> None:
    backend = batch_jobs.backend()
    backend_id, job_dir = batch_jobs.submit(backend, {"mode": "fail"})
    status, _ = wait_for(backend, backend_id, job_dir, {JobState.SUCCEEDED, JobState.FAILED})
    assert status.state is JobState.FAILED
    assert "ValueError: boom on purpose" in status.reason
    assert "last log lines" in status.reason
    # the final status is kept: asking again does not need AWS to remember the job
    assert backend.status(backend_id, job_dir) == status


@pytest.mark.docker
@pytest.mark.slow
def test_batch_cancel_terminates_a_running_job(batch_jobs: BatchJobs, docker_client: Any) -> None:
    backend = batch_jobs.backend()
    backend_id, job_dir = batch_jobs.submit(backend, {"mode": "sleep"})
    wait_for(backend, backend_id, job_dir, {JobState.RUNNING})
    started = time.monotonic()
    backend.cancel(backend_id, job_dir)
    status, _ = wait_for(
        backend, backend_id, job_dir, {JobState.CANCELLED, JobState.FAILED, JobState.SUCCEEDED}
    )
    print(
        f"\n[measure] aws-batch cancel to cancelled through moto: {time.monotonic() - started:.1f}s"
    )
    assert status.state is JobState.CANCELLED, status.reason
    job = batch_jobs.setup.server.client("batch").describe_jobs(jobs=[backend_id])["jobs"][0]
    assert job["statusReason"] == CANCEL_REASON
    assert not docker_client.containers.list(filters={"name": backend_id})


@pytest.mark.docker
@pytest.mark.slow
def test_batch_job_definition_is_reused_for_the_same_image(batch_jobs: BatchJobs) -> None:
    backend = batch_jobs.backend()
    first = backend.ensure_job_definition(batch_jobs.image)
    again = backend.ensure_job_definition(batch_jobs.image)
    assert first == again
    name = backend.job_definition_request(batch_jobs.image)["jobDefinitionName"]
    batch = batch_jobs.setup.server.client("batch")
    found = batch.describe_job_definitions(jobDefinitionName=name)["jobDefinitions"]
    assert len(found) == 1
    assert found[0]["containerProperties"]["image"] == batch_jobs.image
    other = backend.ensure_job_definition(batch_jobs.image.rsplit(":", 1)[0] + ":other")
    assert other != first


def test_batch_missing_queue_is_a_clear_submit_error(aws_setup: AwsSetup, tmp_path: Path) -> None:
    backend = AwsBatchBackend("batch", aws_setup.options(job_queue="no-such-queue"))
    backend.validate_options()
    context = BuildContext(
        tmp_path, [], "ab" * 32, "cd" * 32, "", [], "base", "3.11.2", "missing queue.ipynb"
    )
    request = SubmitRequest(
        "q0000000001", tmp_path / "job", context, "img/x:1", Resources(), {}, {}
    )
    with pytest.raises(BackendError) as info:
        backend.submit(request)
    assert "job queue 'no-such-queue' does not exist" in info.value.message
    assert "job_queue" in info.value.fix


def test_batch_access_denied_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aws_credentials: None
) -> None:
    """moto with IAM enforcement on: a user without Batch permissions is refused."""
    server = start_moto(tmp_path, {"INITIAL_NO_AUTH_ACTION_COUNT": "2"})
    try:
        iam = server.client("iam")
        iam.create_user(UserName="no-batch")
        key = iam.create_access_key(UserName="no-batch")["AccessKey"]
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
        backend = AwsBatchBackend(
            "batch",
            {
                "region": REGION,
                "endpoint_url": server.endpoint,
                "job_queue": "queue",
                "bucket": "some-bucket",
                "job_role_arn": "arn:aws:iam::123456789012:role/job",
            },
        )
        backend.validate_options()
        with pytest.raises(BackendError) as info:
            backend.ensure_job_definition("img/x:1")
        assert "AWS denied access to batch:DescribeJobDefinitions" in info.value.message
        assert "permission for batch:DescribeJobDefinitions" in info.value.fix
        assert key["SecretAccessKey"] not in info.value.message
        assert key["AccessKeyId"] not in info.value.message
    finally:
        stop_moto(server)


# --- pushes ----------------------------------------------------------------------------


@pytest.mark.docker
@pytest.mark.slow
def test_push_to_a_registry_named_in_config(
    batch_jobs: BatchJobs,
    docker_client: Any,
    local_registry: str,  # noqa: F811
) -> None:
    lines: list[str] = []
    pushed = push_for_backend(
        batch_jobs.image,
        {"registry": f"{local_registry}/team"},
        client=docker_client,
        progress=lines.append,
    )
    repository, tag = batch_jobs.image.rsplit(":", 1)
    assert pushed == f"{local_registry}/team/{repository}:{tag}"
    url = f"http://{local_registry}/v2/team/{repository}/tags/list"
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert tag in json.loads(answer.read())["tags"]
    assert lines and lines[0].startswith("pushing ")
    # an image already named in a registry, or registry=none, is used as it is
    assert push_for_backend(pushed, {"registry": "ecr"}) == pushed
    assert push_for_backend(batch_jobs.image, {"registry": "none"}) == batch_jobs.image


@pytest.mark.docker
@pytest.mark.slow
def test_push_with_a_login_never_logs_the_password(
    batch_jobs: BatchJobs,
    docker_client: Any,
    local_registry: str,  # noqa: F811
) -> None:
    lines: list[str] = []
    login = RegistryLogin(local_registry, "AWS", "ecr-token-secret-value")
    pushed = push_image(
        docker_client,
        batch_jobs.image,
        f"{local_registry}/ecr-like/job",
        login=login,
        progress=lines.append,
    )
    assert pushed.startswith(f"{local_registry}/ecr-like/job:")
    assert "ecr-token-secret-value" not in repr(login)
    assert not any("ecr-token-secret-value" in line for line in lines)


def test_ecr_repository_created_if_missing_and_login_from_the_api(
    moto_server: MotoServer,
) -> None:
    ecr = moto_server.client("ecr")
    options = {"region": REGION, "endpoint_url": moto_server.endpoint}
    name = f"cloudpromote/Report Final {uuid.uuid4().hex[:6]}"
    uri = ensure_ecr_repository(ecr, name, options)
    assert uri == ensure_ecr_repository(ecr, name, options)  # found, not created twice
    repositories = ecr.describe_repositories()["repositories"]
    assert sum(r["repositoryUri"] == uri for r in repositories) == 1
    assert "/cloudpromote/report-final-" in uri
    login = ecr_login(ecr, options)
    assert login.username == "AWS" and login.password
    assert "://" not in login.registry and ".dkr.ecr." in login.registry
