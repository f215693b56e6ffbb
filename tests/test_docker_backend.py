"""The docker backend: real containers on the local engine, one image built for the module.

The job script picks its behaviour from a `mode` parameter, passed the way every backend
passes parameters (CLOUDPROMOTE_PARAMETERS), so one image serves every test.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_cloudpromote.backends.base import SubmitRequest
from jupyter_cloudpromote.backends.docker import DockerBackend, parse_memory
from jupyter_cloudpromote.build import build_image
from jupyter_cloudpromote.errors import BackendError, ConfigError
from jupyter_cloudpromote.models import BackendStatus, BuildContext, JobState, Resources
from jupyter_cloudpromote.package import make_build_context

from .conftest import make_notebook, require

HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"

JOB_SCRIPT = """\
import json, os, sys, time
import six

params = json.loads(os.environ["CLOUDPROMOTE_PARAMETERS"])
mode = params.get("mode", "ok")
out = os.environ["CLOUDPROMOTE_OUTPUT_DIR"]
if mode == "ok":
    with open(os.path.join(out, "result.txt"), "w") as handle:
        handle.write(f"six {six.__version__} job {os.environ['CLOUDPROMOTE_JOB_ID']}")
    print("done ok", os.getuid())
elif mode == "fail":
    for i in range(30):
        print(f"progress line {i}")
    print("about to fail", file=sys.stderr)
    sys.exit(3)
elif mode == "sleep":
    print("sleeping", flush=True)
    time.sleep(600)
elif mode == "oom":
    hog = bytearray(400 * 1024 * 1024)
    print("survived", len(hog))
"""


# --- fast checks, no engine ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("4G", 4 * 1024**3),
        ("512M", 512 * 1024**2),
        ("4GiB", 4 * 1024**3),
        ("1.5g", int(1.5 * 1024**3)),
        ("256mb", 256 * 1024**2),
        ("8192k", 8192 * 1024),
        (10 * 1024**2, 10 * 1024**2),
    ],
)
def test_parse_memory_accepts_common_forms(text: str | int, size: int) -> None:
    assert parse_memory(text) == size


@pytest.mark.parametrize("bad", ["lots", "4 X", "-1G", "1K", "", "G"])
def test_parse_memory_rejects_nonsense(bad: str) -> None:
    with pytest.raises(ConfigError):
        parse_memory(bad)


def test_options_are_validated() -> None:
    backend = DockerBackend("d", {"network": "none", "remove_container": "true"})
    backend.validate_options()
    assert backend.options["network"] == "none"
    assert backend.options["remove_container"] is True
    with pytest.raises(ConfigError, match="network"):
        DockerBackend("d", {"network": "bridge; rm -rf /"}).validate_options()
    with pytest.raises(ConfigError, match="remove_container"):
        DockerBackend("d", {"remove_container": "maybe"}).validate_options()


# --- against the engine -------------------------------------------------------------------


class Jobs:
    def __init__(self, root: Path, client: Any, context: BuildContext, image: str) -> None:
        self.root = root
        self.client = client
        self.context = context
        self.image = image
        self.job_ids: list[str] = []

    def submit(
        self,
        backend: DockerBackend,
        mode: str,
        resources: Resources | None = None,
    ) -> tuple[str, str, Path]:
        job_id = f"t{uuid.uuid4().hex[:12]}"
        self.job_ids.append(job_id)
        job_dir = self.root / job_id
        (job_dir / "logs").mkdir(parents=True)
        request = SubmitRequest(
            job_id=job_id,
            job_dir=job_dir,
            context=self.context,
            image=self.image,
            resources=resources or Resources(),
            parameters={"mode": mode},
            env={"EXTRA_SETTING": "from-env"},
            options=backend.options,
        )
        return job_id, backend.submit(request), job_dir


def wait_for(
    backend: DockerBackend, backend_id: str, job_dir: Path, states: set[JobState]
) -> BackendStatus:
    deadline = time.monotonic() + 120
    while True:
        status = backend.status(backend_id, job_dir)
        if status.state in states:
            return status
        assert time.monotonic() < deadline, f"stuck in {status}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def jobs(
    tmp_path_factory: pytest.TempPathFactory, docker_client: Any, base_image: str
) -> Iterator[Jobs]:
    root = tmp_path_factory.mktemp("dockerjobs")
    token = uuid.uuid4().hex[:10]
    notebook = make_notebook(root / "nb" / f"backendtest-{token}.ipynb", [JOB_SCRIPT])
    context = make_build_context(
        dest=root / "context",
        notebook_path=notebook,
        script=JOB_SCRIPT,
        requirements=["six==1.16.0"],
        local_modules=[],
        include=[],
        base_image=base_image,
        python_version="3.11.2",
        ca_bundle=HOST_CA_BUNDLE,
    )
    started = time.monotonic()
    result = build_image(context, client=docker_client)
    print(f"\n[measure] backend test image build: {time.monotonic() - started:.1f}s")
    state = Jobs(root / "jobs", docker_client, context, result.image)
    yield state
    for job_id in state.job_ids:
        for container in docker_client.containers.list(
            all=True, filters={"label": f"io.cloudpromote.job={job_id}"}
        ):
            container.remove(force=True)
    docker_client.images.remove(result.image, force=True)


@pytest.fixture()
def backend() -> DockerBackend:
    instance = DockerBackend("docker", {})
    instance.validate_options()
    return instance


@pytest.mark.docker
@pytest.mark.slow
def test_availability_pings_the_engine(docker_client: Any) -> None:
    available, message = DockerBackend.availability()
    assert available, message


@pytest.mark.docker
@pytest.mark.slow
def test_job_succeeds_with_outputs_on_the_host_and_limits_applied(jobs: Jobs) -> None:
    backend = DockerBackend("docker", {"network": "none"})
    backend.validate_options()
    started = time.monotonic()
    job_id, backend_id, job_dir = jobs.submit(backend, "ok", Resources(cpus=0.5, memory="256M"))
    status = wait_for(
        backend, backend_id, job_dir, {JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED}
    )
    print(
        f"\n[measure] submit to running/finished (image present): {time.monotonic() - started:.2f}s"
    )
    status = wait_for(backend, backend_id, job_dir, {JobState.SUCCEEDED, JobState.FAILED})
    assert status.state is JobState.SUCCEEDED, status.reason
    assert status.exit_code == 0

    result = job_dir / "outputs" / "result.txt"
    assert result.read_text() == f"six 1.16.0 job {job_id}"
    assert "done ok 10001" in backend.logs(backend_id, job_dir)
    assert "done ok" in (job_dir / "logs" / "run.log").read_text()

    attrs = jobs.client.containers.get(backend_id).attrs
    assert attrs["Name"] == f"/cloudpromote-{job_id}"
    assert attrs["Config"]["Labels"]["io.cloudpromote.job"] == job_id
    assert "EXTRA_SETTING=from-env" in attrs["Config"]["Env"]
    assert attrs["HostConfig"]["NanoCpus"] == 500_000_000
    assert attrs["HostConfig"]["Memory"] == 256 * 1024**2
    assert attrs["HostConfig"]["NetworkMode"] == "none"
    assert attrs["HostConfig"]["AutoRemove"] is False


@pytest.mark.docker
@pytest.mark.slow
def test_failing_job_reports_exit_code_and_last_lines(jobs: Jobs, backend: DockerBackend) -> None:
    _, backend_id, job_dir = jobs.submit(backend, "fail")
    status = wait_for(backend, backend_id, job_dir, {JobState.SUCCEEDED, JobState.FAILED})
    assert status.state is JobState.FAILED
    assert status.exit_code == 3
    assert status.reason.startswith("exited with code 3; last log lines:")
    assert "about to fail" in status.reason
    assert "progress line 29" in status.reason
    assert "progress line 5\n" not in status.reason  # only the tail, not the whole log


@pytest.mark.docker
@pytest.mark.slow
def test_cancel_stops_a_sleeping_job(jobs: Jobs, backend: DockerBackend) -> None:
    _, backend_id, job_dir = jobs.submit(backend, "sleep")
    wait_for(backend, backend_id, job_dir, {JobState.RUNNING})
    deadline = time.monotonic() + 60
    while "sleeping" not in backend.logs(backend_id, job_dir):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    started = time.monotonic()
    backend.cancel(backend_id, job_dir)
    print(f"\n[measure] cancel of a sleeping job: {time.monotonic() - started:.2f}s")
    status = backend.status(backend_id, job_dir)
    assert status.state.terminal
    assert status.exit_code not in (0, None)
    assert jobs.client.containers.get(backend_id).status == "exited"


@pytest.mark.docker
@pytest.mark.slow
def test_time_limit_stops_the_job_with_a_time_limit_reason(
    jobs: Jobs, backend: DockerBackend
) -> None:
    _, backend_id, job_dir = jobs.submit(backend, "sleep", Resources(time_limit="3s"))
    status = wait_for(backend, backend_id, job_dir, {JobState.SUCCEEDED, JobState.FAILED})
    assert status.state is JobState.FAILED
    assert status.exit_code == 124
    assert "hit its time limit of 3s" in status.reason


@pytest.mark.docker
@pytest.mark.slow
def test_out_of_memory_is_named(jobs: Jobs, backend: DockerBackend) -> None:
    _, backend_id, job_dir = jobs.submit(backend, "oom", Resources(memory="64M"))
    status = wait_for(backend, backend_id, job_dir, {JobState.SUCCEEDED, JobState.FAILED})
    assert status.state is JobState.FAILED
    assert "ran out of memory (limit 64MiB)" in status.reason


@pytest.mark.docker
@pytest.mark.slow
def test_follow_logs_streams_until_the_job_ends(jobs: Jobs, backend: DockerBackend) -> None:
    _, backend_id, job_dir = jobs.submit(backend, "fail")
    text = "".join(backend.follow_logs(backend_id, job_dir))
    assert "progress line 0" in text and "about to fail" in text
    assert backend.status(backend_id, job_dir).state is JobState.FAILED


@pytest.mark.docker
@pytest.mark.slow
def test_removed_container_keeps_its_final_status_and_log(jobs: Jobs) -> None:
    backend = DockerBackend("docker", {"remove_container": True})
    backend.validate_options()
    _, backend_id, job_dir = jobs.submit(backend, "fail")
    first = wait_for(backend, backend_id, job_dir, {JobState.SUCCEEDED, JobState.FAILED})
    assert not jobs.client.containers.list(all=True, filters={"id": backend_id})
    again = backend.status(backend_id, job_dir)
    assert again == first
    assert "about to fail" in backend.logs(backend_id, job_dir)


@pytest.mark.docker
@pytest.mark.slow
def test_container_removed_behind_our_back_fails_with_a_reason(
    jobs: Jobs, backend: DockerBackend
) -> None:
    _, backend_id, job_dir = jobs.submit(backend, "sleep")
    jobs.client.containers.get(backend_id).remove(force=True)
    status = backend.status(backend_id, job_dir)
    assert status.state is JobState.FAILED
    assert "no longer exists" in status.reason


def test_resources_map_to_docker_run_arguments() -> None:
    backend = DockerBackend("docker", {})
    request = SubmitRequest(
        job_id="x",
        job_dir=Path("/nonexistent"),
        context=None,  # type: ignore[arg-type]
        image="img",
        resources=Resources(cpus=1.5, memory="4GiB", gpus=2),
        parameters={},
        env={},
    )
    kwargs = backend._run_kwargs(request)
    assert kwargs["nano_cpus"] == 1_500_000_000
    assert kwargs["mem_limit"] == 4 * 1024**3
    (gpu_request,) = kwargs["device_requests"]
    assert gpu_request["Count"] == 2 and gpu_request["Capabilities"] == [["gpu"]]
    assert "device_requests" not in backend._run_kwargs(
        SubmitRequest("x", Path("/n"), None, "img", Resources(), {}, {})  # type: ignore[arg-type]
    )


@pytest.mark.docker
@pytest.mark.slow
def test_gpus_on_an_engine_without_a_gpu_runtime_say_what_to_install(
    jobs: Jobs, backend: DockerBackend, docker_client: Any
) -> None:
    runtimes = docker_client.info().get("Runtimes", {})
    require("nvidia" not in runtimes, "this engine has a GPU runtime; the failure path cannot show")
    with pytest.raises(BackendError) as info:
        jobs.submit(backend, "ok", Resources(gpus=1))
    assert "NVIDIA Container Toolkit" in info.value.fix
    # the container run() created before failing to start is not left behind
    job_id = jobs.job_ids[-1]
    assert not docker_client.containers.list(
        all=True, filters={"label": f"io.cloudpromote.job={job_id}"}
    )


@pytest.mark.docker
@pytest.mark.slow
def test_missing_image_is_a_clear_error(jobs: Jobs, backend: DockerBackend) -> None:
    jobs.image, real_image = f"cloudpromote/never-built-{uuid.uuid4().hex[:8]}:0", jobs.image
    try:
        with pytest.raises(BackendError, match="not on this Docker engine") as info:
            jobs.submit(backend, "ok")
    finally:
        jobs.image = real_image
    assert "Build it on this engine first" in info.value.fix
