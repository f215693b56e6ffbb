"""The `slurm` backend against a real one-node Slurm (slurm-wlm + munge, .ci/setup-slurm.sh).

Every job here is a real batch job: sbatch, slurmctld, slurmd and the generated script. The
one-minute time-limit job is submitted when the module starts and checked by the last test,
so its minute (plus Slurm's 30 s limit check) overlaps the other tests instead of adding up.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_cloudpromote.backends.base import SubmitRequest
from jupyter_cloudpromote.backends.slurm import SlurmBackend
from jupyter_cloudpromote.backends.slurm_script import read_env_file
from jupyter_cloudpromote.config import CloudPromote
from jupyter_cloudpromote.jobs import JobManager
from jupyter_cloudpromote.models import BackendStatus, JobState, PromotionOptions
from jupyter_cloudpromote.models import Resources as Res
from jupyter_cloudpromote.venvs import ensure_venv

from .conftest import make_job_context, make_notebook, require

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

DEADLINE_SECONDS = 240.0  # guards against hanging only; a shared 2-core machine
HOSTILE = {
    "QUOTES": 'it\'s "quoted"',
    "SUBST": "$(touch {marker})",
    "BACKTICKS": "`touch {marker}`",
    "NEWLINES": "one\ntwo\n#SBATCH --wrap=touch {marker}",
    "SEMICOLON": "; touch {marker} #",
}


# ---------------------------------------------------------------------------- fixtures


def _answers(argv: list[str]) -> tuple[bool, str]:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    return result.returncode == 0, (result.stdout + result.stderr).strip()


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """sbatch and squeue must answer: skipped locally without Slurm, a failure under CI."""
    require(shutil.which("sbatch") is not None, "sbatch not on PATH; run .ci/setup-slurm.sh")
    ok, output = _answers(["squeue", "--noheader"])
    require(ok, f"squeue does not answer ({output}); run .ci/setup-slurm.sh")
    ok, output = _answers(["sinfo", "--noheader", "--Node", "--format=%T"])
    states = output.split()
    require(
        ok and any(s.rstrip("*") in ("idle", "mixed", "allocated") for s in states),
        f"no usable Slurm node (sinfo: {output!r}); run .ci/setup-slurm.sh",
    )


@pytest.fixture(scope="module")
def venv_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("slurm-venvs")


def submit(
    root: Path,
    backend: SlurmBackend,
    script: str,
    *,
    parameters: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    resources: Res | None = None,
) -> tuple[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    request = SubmitRequest(
        job_id=re.sub(r"[^a-z0-9]", "", root.name.lower())[-12:] or "job",
        job_dir=root / "job",
        context=make_job_context(root, script, notebook_name="example.ipynb"),
        image=None,
        resources=resources or Res(),
        parameters=parameters or {},
        env=env or {},
        options=backend.options,
    )
    return backend.submit(request), request.job_dir


def wait_for(check: Callable[[], bool], what: str, deadline: float = DEADLINE_SECONDS) -> None:
    end = time.monotonic() + deadline
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.3)


def wait_state(
    backend: SlurmBackend,
    slurm_id: str,
    job_dir: Path,
    wanted: Callable[[BackendStatus], bool],
    deadline: float = DEADLINE_SECONDS,
) -> BackendStatus:
    seen: list[BackendStatus] = []

    def done() -> bool:
        seen.append(backend.status(slurm_id, job_dir))
        return wanted(seen[-1])

    wait_for(done, f"Slurm job {slurm_id} ({job_dir})", deadline)
    return seen[-1]


def terminal(status: BackendStatus) -> bool:
    return status.state.terminal


@pytest.fixture(scope="module")
def backend(slurm_cluster: None, venv_cache: Path) -> SlurmBackend:
    instance = SlurmBackend("slurm", {"venv_cache_dir": str(venv_cache)})
    instance.validate_options()
    return instance


@pytest.fixture(scope="module", autouse=True)
def time_limited_job(
    backend: SlurmBackend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """A job that outlives its 1-minute limit, started first so its wait overlaps the rest."""
    root = tmp_path_factory.mktemp("timelimit")
    script = "import time\nprint('started', flush=True)\ntime.sleep(600)\n"
    job = submit(root, backend, script, resources=Res(time_limit="1m"))
    yield job
    subprocess.run(["scancel", job[0]], capture_output=True)


# ---------------------------------------------------------------------------- real jobs


def test_job_succeeds_with_outputs_parameters_and_hostile_values(
    backend: SlurmBackend, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    env = {name: value.format(marker=marker) for name, value in HOSTILE.items()}
    hostile_backend = SlurmBackend(
        "slurm", {**backend.options, "job_name": "x$(touch pwned)`id`\n#SBATCH --wrap=id"}
    )
    script = """
        import json, os, pathlib
        params = json.loads(os.environ["CLOUDPROMOTE_PARAMETERS"])
        out = pathlib.Path(os.environ["CLOUDPROMOTE_OUTPUT_DIR"])
        names = ["QUOTES", "SUBST", "BACKTICKS", "NEWLINES", "SEMICOLON"]
        (out / "seen.json").write_text(json.dumps(
            {"params": params, "env": {n: os.environ[n] for n in names},
             "included": pathlib.Path("data.txt").read_text(),
             "job_id": os.environ["CLOUDPROMOTE_JOB_ID"],
             "virtual_env": os.environ.get("VIRTUAL_ENV")}))
        print("done with", params["msg"])
    """
    parameters = {"msg": f"$(touch {marker})", "n": 3}
    slurm_id, job_dir = submit(tmp_path, hostile_backend, script, parameters=parameters, env=env)
    assert re.fullmatch(r"\d+", slurm_id)
    status = wait_state(backend, slurm_id, job_dir, terminal)
    assert status == BackendStatus(JobState.SUCCEEDED, "exited with code 0", 0)
    seen = json.loads((job_dir / "outputs" / "seen.json").read_text())
    assert seen["params"] == parameters
    assert seen["env"] == env
    assert seen["included"] == "included file\n"
    assert seen["virtual_env"].startswith(backend.options["venv_cache_dir"])
    assert not marker.exists()
    assert f"done with $(touch {marker})" in backend.logs(slurm_id, job_dir)
    # The secrets-bearing env file is private and holds exactly the job's variables.
    env_file = job_dir / "slurm" / "job.env"
    assert env_file.stat().st_mode & 0o777 == 0o600
    assert read_env_file(env_file.read_bytes())["NEWLINES"] == env["NEWLINES"]
    shown = subprocess.run(
        ["scontrol", "show", "job", "--oneliner", slurm_id], capture_output=True, text=True
    ).stdout
    assert "JobName=x-touch-pwned-id-SBATCH-wrap-id " in shown
    assert "JobState=COMPLETED" in shown
    submitted = json.loads((job_dir / "slurm" / "submit.json").read_text())
    print(f"sbatch took {submitted['sbatch_seconds']}s")


def test_failing_job_reports_its_exit_code_and_last_lines(
    backend: SlurmBackend, tmp_path: Path
) -> None:
    script = "import sys\nprint('loading data')\nprint('giving up', file=sys.stderr)\nsys.exit(3)\n"
    slurm_id, job_dir = submit(tmp_path, backend, script)
    status = wait_state(backend, slurm_id, job_dir, terminal)
    assert status.state is JobState.FAILED and status.exit_code == 3
    assert status.reason.startswith("exited with code 3; last log lines:\n")
    assert "loading data" in status.reason and "giving up" in status.reason


def test_cancel_stops_a_running_job(backend: SlurmBackend, tmp_path: Path) -> None:
    script = "import time\nprint('working', flush=True)\ntime.sleep(300)\nprint('finished')\n"
    slurm_id, job_dir = submit(tmp_path, backend, script)
    wait_state(backend, slurm_id, job_dir, lambda s: s.state is JobState.RUNNING)
    wait_for(lambda: "working" in backend.logs(slurm_id, job_dir), "the job's first line")
    backend.cancel(slurm_id, job_dir)
    status = wait_state(backend, slurm_id, job_dir, terminal)
    assert status.state is JobState.CANCELLED
    assert "finished" not in backend.logs(slurm_id, job_dir)
    backend.cancel(slurm_id, job_dir)  # cancelling a finished job is harmless


def test_memory_limit_ends_failed_with_an_out_of_memory_reason(
    backend: SlurmBackend, tmp_path: Path
) -> None:
    script = """
        import time
        block = bytearray(400 * 1024 * 1024)
        for i in range(0, len(block), 4096):
            block[i] = 1
        print("holding 400M", flush=True)
        time.sleep(60)
        print("survived")
    """
    slurm_id, job_dir = submit(tmp_path, backend, script, resources=Res(memory="100M"))
    status = wait_state(backend, slurm_id, job_dir, terminal)
    assert status.state is JobState.FAILED
    assert status.reason.startswith("ran out of memory (limit 100M)")
    assert "survived" not in backend.logs(slurm_id, job_dir)


def _slurmctld_pidfile() -> Path:
    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True)
    match = re.search(r"^SlurmctldPidFile\s*=\s*(\S+)", config.stdout, re.MULTILINE)
    assert match, config.stdout
    return Path(match.group(1))


def test_job_is_tracked_across_a_slurmctld_restart(backend: SlurmBackend, tmp_path: Path) -> None:
    require(os.geteuid() == 0, "restarting slurmctld needs root")
    pidfile = _slurmctld_pidfile()
    script = """
        import os, pathlib, time
        print("before", flush=True)
        time.sleep(12)
        pathlib.Path(os.environ["CLOUDPROMOTE_OUTPUT_DIR"], "after.txt").write_text("ok")
        print("after")
    """
    slurm_id, job_dir = submit(tmp_path, backend, script)
    wait_state(backend, slurm_id, job_dir, lambda s: s.state is JobState.RUNNING)
    pid = int(pidfile.read_text().strip())
    os.kill(pid, 15)
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), "slurmctld to stop", 60)
    try:
        while_down = backend.status(slurm_id, job_dir)
        assert while_down.state is JobState.RUNNING
        assert "not answering" in while_down.reason
    finally:
        subprocess.run(["slurmctld"], check=True)
    wait_for(lambda: _answers(["scontrol", "ping"])[0], "slurmctld to answer again", 60)
    status = wait_state(backend, slurm_id, job_dir, terminal)
    assert status.state is JobState.SUCCEEDED
    assert (job_dir / "outputs" / "after.txt").read_text() == "ok"


def test_staging_dir_elsewhere_collects_outputs_back(backend: SlurmBackend, tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    staged = SlurmBackend("slurm", {**backend.options, "staging_dir": str(scratch)})
    script = """
        import os, pathlib
        out = pathlib.Path(os.environ["CLOUDPROMOTE_OUTPUT_DIR"])
        (out / "sub").mkdir()
        (out / "sub" / "result.csv").write_text("a,b\\n1,2\\n")
        print("cwd", os.getcwd())
    """
    slurm_id, job_dir = submit(tmp_path / "j", staged, script)
    status = wait_state(staged, slurm_id, job_dir, terminal)
    assert status.state is JobState.SUCCEEDED
    stage = scratch / job_dir.parent.name.replace("_", "")[-12:]
    assert (stage / "outputs" / "sub" / "result.csv").is_file()
    assert not (job_dir / "outputs" / "sub").exists()
    staged.collect_outputs(slurm_id, job_dir)
    assert (job_dir / "outputs" / "sub" / "result.csv").read_text() == "a,b\n1,2\n"
    assert f"cwd {stage / 'work'}" in (job_dir / "logs" / "run.log").read_text()


def test_end_to_end_through_the_job_manager(isolated_jupyter: Path, slurm_cluster: None) -> None:
    manager = JobManager(CloudPromote())
    nb = make_notebook(
        isolated_jupyter / "nb" / "report.ipynb",
        [
            ("greeting = 'hello'\nrepeat = 2", ["parameters"]),
            "import os, pathlib\nout = pathlib.Path(os.environ['CLOUDPROMOTE_OUTPUT_DIR'])",
            "(out / 'result.txt').write_text(greeting * repeat)\nprint('wrote', greeting)",
        ],
    )
    record = manager.submit(
        nb,
        PromotionOptions(backend="slurm", options={"runtime": "venv"}, parameters={"repeat": "3"}),
    )
    assert record.state is JobState.QUEUED, record.reason
    end = time.monotonic() + DEADLINE_SECONDS
    while not record.state.terminal and time.monotonic() < end:
        time.sleep(0.5)
        record = manager.refresh(record.id)
    assert record.state is JobState.SUCCEEDED, record.reason
    assert record.exit_code == 0
    assert (Path(record.job_dir) / "outputs" / "result.txt").read_text() == "hello" * 3
    assert [item["path"] for item in manager.outputs(record.id)] == ["result.txt"]
    assert "wrote hello" in manager.run_logs(record.id)
    states = [t.state for t in manager.get(record.id).history]
    assert states[0] is JobState.PENDING and JobState.QUEUED in states


@pytest.mark.docker
def test_docker_runtime_runs_the_built_image_with_outputs_and_parameters(
    isolated_jupyter: Path, slurm_cluster: None, base_image: str
) -> None:
    manager = JobManager(CloudPromote())
    nb = make_notebook(
        isolated_jupyter / "nb" / "dockerjob.ipynb",
        [
            ("label = 'x'", ["parameters"]),
            "import os, pathlib, sys\nout = pathlib.Path(os.environ['CLOUDPROMOTE_OUTPUT_DIR'])",
            "(out / 'where.txt').write_text(f'{label} {sys.prefix} {os.getuid()}')",
        ],
    )
    record = manager.submit(
        nb,
        PromotionOptions(
            backend="slurm",
            options={"runtime": "docker"},
            parameters={"label": "it's $(id)"},
            base_image=base_image,
        ),
    )
    assert record.state is JobState.QUEUED, record.reason
    assert record.image
    end = time.monotonic() + DEADLINE_SECONDS
    while not record.state.terminal and time.monotonic() < end:
        time.sleep(0.5)
        record = manager.refresh(record.id)
    assert record.state is JobState.SUCCEEDED, record.reason
    # The job ran inside the image (its venv, its unprivileged user), outputs on the host.
    assert (Path(record.job_dir) / "outputs" / "where.txt").read_text() == (
        "it's $(id) /opt/venv 10001"
    )


@pytest.mark.docker
def test_docker_runtime_cancel_stops_the_container(
    isolated_jupyter: Path, slurm_cluster: None, base_image: str, docker_client: Any
) -> None:
    manager = JobManager(CloudPromote())
    nb = make_notebook(
        isolated_jupyter / "nb" / "sleeper.ipynb",
        ["import time\nprint('sleeping', flush=True)\ntime.sleep(300)\nprint('woke up')"],
    )
    record = manager.submit(
        nb, PromotionOptions(backend="slurm", options={"runtime": "docker"}, base_image=base_image)
    )
    assert record.state is JobState.QUEUED, record.reason
    name = f"cloudpromote-{record.id}"

    def container_running() -> bool:
        return any(c.name == name for c in docker_client.containers.list())

    wait_for(container_running, f"container {name} to run")
    wait_for(lambda: "sleeping" in manager.run_logs(record.id), "the job's first line")
    manager.cancel(record.id)
    end = time.monotonic() + DEADLINE_SECONDS
    while not record.state.terminal and time.monotonic() < end:
        time.sleep(0.5)
        record = manager.refresh(record.id)
    assert record.state is JobState.CANCELLED, record.reason
    # scancel's SIGTERM reached the container through the batch script, not just the client.
    wait_for(lambda: not container_running(), f"container {name} to stop", 60)
    assert docker_client.containers.list(all=True, filters={"name": name}) == []
    assert "woke up" not in manager.run_logs(record.id)


@pytest.fixture(scope="module")
def login_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A real sshd on 127.0.0.1 standing in for a cluster's login node (same machine)."""
    require(os.path.exists("/usr/sbin/sshd"), "no sshd; run .ci/setup-slurm.sh")
    require(os.geteuid() == 0, "the sshd test fixture logs in as root")
    home = tmp_path_factory.mktemp("login")
    for name in ("host_key", "client_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / name)], check=True
        )
    (home / "authorized_keys").write_text((home / "client_key.pub").read_text())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (home / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {home / 'host_key'}\n"
        f"AuthorizedKeysFile {home / 'authorized_keys'}\nPidFile {home / 'sshd.pid'}\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nUsePAM no\n"
        "StrictModes no\n"
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(home / "sshd_config")])

    def listening() -> bool:
        with socket.socket() as client:
            return client.connect_ex(("127.0.0.1", port)) == 0

    wait_for(listening, "sshd to listen", 30)
    yield {
        "host": "127.0.0.1",
        "port": str(port),
        "user": "root",
        "key": str(home / "client_key"),
        "ssh_options": "StrictHostKeyChecking=no UserKnownHostsFile=/dev/null LogLevel=ERROR",
    }
    sshd.terminate()
    sshd.wait(timeout=30)


def test_submit_over_ssh_stages_runs_and_collects_outputs(
    slurm_cluster: None,
    login_node: dict[str, Any],
    venv_cache: Path,
    tmp_path: Path,
) -> None:
    venv = ensure_venv([], python=sys.executable, cache_dir=venv_cache)
    scratch = tmp_path / "cluster-scratch"  # "on the cluster": reached only through ssh
    remote = SlurmBackend(
        "hpc",
        {**login_node, "staging_dir": str(scratch), "venv_path": str(venv), "runtime": "venv"},
    )
    remote.validate_options()
    assert remote.over_ssh and not remote.staging_shared
    script = """
        import json, os, pathlib
        out = pathlib.Path(os.environ["CLOUDPROMOTE_OUTPUT_DIR"])
        (out / "result.json").write_text(os.environ["CLOUDPROMOTE_PARAMETERS"])
        print("ran in", os.getcwd(), "token", os.environ["TOKEN"])
    """
    token = "a'b $(id) `id`"
    slurm_id, job_dir = submit(
        tmp_path / "j", remote, script, parameters={"x": "it's"}, env={"TOKEN": token}
    )
    stage = scratch / job_dir.parent.name.replace("_", "")[-12:]
    assert (stage / "slurm" / "job.sbatch").is_file()  # copied over ssh
    assert (stage / "slurm" / "job.env").stat().st_mode & 0o777 == 0o600
    status = wait_state(remote, slurm_id, job_dir, terminal)
    assert status.state is JobState.SUCCEEDED, status.reason
    remote.collect_outputs(slurm_id, job_dir)
    assert json.loads((job_dir / "outputs" / "result.json").read_text()) == {"x": "it's"}
    log = (job_dir / "logs" / "run.log").read_text()
    assert f"ran in {stage / 'work'} token {token}" in log


def test_time_limit_reached_ends_failed_with_a_time_limit_reason(
    backend: SlurmBackend, time_limited_job: tuple[str, Path]
) -> None:
    slurm_id, job_dir = time_limited_job
    status = wait_state(backend, slurm_id, job_dir, terminal)
    assert status.state is JobState.FAILED
    assert status.reason.startswith("hit its 1m time limit and was stopped by Slurm")
    assert "started" in status.reason  # the last log lines are part of the reason
