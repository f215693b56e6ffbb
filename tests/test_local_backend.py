"""The `local` backend with real processes: a detached supervisor, real venvs, real signals."""

from __future__ import annotations

import fcntl
import json
import os
import platform
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jupyter_cloudpromote.backends.base import SubmitRequest
from jupyter_cloudpromote.backends.local import (
    LocalBackend,
    build_logs,
    process_start_time,
    result_path,
    state_path,
)
from jupyter_cloudpromote.errors import BackendError, ConfigError
from jupyter_cloudpromote.models import BackendStatus, BuildContext, JobState, Resources
from jupyter_cloudpromote.venvs import inspect_interpreter, requirements_hash

from .conftest import make_job_context

NO_SUCH_PACKAGE = "cloudpromote-no-such-package-zz"
DEADLINE_SECONDS = 240.0  # generous: a shared 2-core machine, maybe a cold package download


# ---------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def venv_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared by the module's jobs, as the real cache is shared by a user's jobs."""
    return tmp_path_factory.mktemp("venvs")


def make_request(
    root: Path,
    context: BuildContext,
    *,
    parameters: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    time_limit: str | None = None,
) -> SubmitRequest:
    return SubmitRequest(
        job_id="job-" + root.name[-12:],
        job_dir=root / "job",
        context=context,
        image=None,
        resources=Resources(time_limit=time_limit),
        parameters=parameters or {},
        env=env or {},
    )


def backend_for(venv_cache: Path, **options: Any) -> LocalBackend:
    return LocalBackend("local", {"venv_cache_dir": str(venv_cache), **options})


def wait_for(check: Callable[[], bool], what: str, deadline: float = DEADLINE_SECONDS) -> None:
    """Poll until `check()` holds; the deadline only guards against hanging forever."""
    end = time.monotonic() + deadline
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


def wait_terminal(backend: LocalBackend, backend_id: str, job_dir: Path) -> BackendStatus:
    seen: list[BackendStatus] = []

    def done() -> bool:
        seen.append(backend.status(backend_id, job_dir))
        return seen[-1].state.terminal

    wait_for(done, f"job in {job_dir} to finish")
    return seen[-1]


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


# ---------------------------------------------------------------------------- fast


def test_invalid_time_limit_is_refused_before_anything_starts(tmp_path: Path) -> None:
    context = make_job_context(tmp_path, "print('never')\n")
    request = make_request(tmp_path, context, time_limit="soon")
    with pytest.raises(ConfigError, match="Invalid time limit 'soon'"):
        LocalBackend("local").submit(request)
    assert not state_path(request.job_dir).exists()


def test_incomplete_context_is_refused(tmp_path: Path) -> None:
    context = make_job_context(tmp_path, "print('x')\n")
    (context.directory / "_cloudpromote_runner.py").unlink()
    with pytest.raises(BackendError, match=r"has no _cloudpromote_runner\.py"):
        LocalBackend("local").submit(make_request(tmp_path, context))


def test_dead_runner_without_result_is_failed_and_recorded(tmp_path: Path) -> None:
    # A real process stands in for a supervisor that died (killed, machine rebooted).
    sleeper = subprocess.Popen(["sleep", "60"])
    start = process_start_time(sleeper.pid)
    sleeper.kill()
    sleeper.wait()
    job_dir = tmp_path / "job"
    (job_dir / "local").mkdir(parents=True)
    state = {"supervisor_pid": sleeper.pid, "supervisor_start_time": start}
    state_path(job_dir).write_text(json.dumps(state))
    status = LocalBackend("local").status(f"local:{sleeper.pid}", job_dir)
    assert status.state is JobState.FAILED
    assert status.reason == f"the local runner stopped unexpectedly (pid {sleeper.pid})"
    # Recorded, so every later status call (from any process) says the same.
    assert json.loads(result_path(job_dir).read_text())["state"] == "failed"


def test_a_reused_pid_is_not_mistaken_for_the_runner(tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    (job_dir / "local").mkdir(parents=True)
    # Our own pid is alive, but with another start time it belongs to a different process.
    start = process_start_time(os.getpid())
    assert start is not None
    state = {"supervisor_pid": os.getpid(), "supervisor_start_time": start + 1}
    state_path(job_dir).write_text(json.dumps(state))
    status = LocalBackend("local").status("local:x", job_dir)
    assert status.state is JobState.FAILED and "stopped unexpectedly" in status.reason


def test_profile_with_a_missing_python_is_refused(tmp_path: Path) -> None:
    backend = LocalBackend("local", {"python": str(tmp_path / "no-python")})
    with pytest.raises(ConfigError, match=r"python=.*does not exist"):
        backend.validate_options()
    LocalBackend("local", {"python": sys.executable}).validate_options()
    with pytest.raises(ConfigError, match="cancel_grace_seconds"):
        LocalBackend("local", {"cancel_grace_seconds": "soon"}).validate_options()


def test_backend_declares_its_kind_and_features() -> None:
    assert LocalBackend.kind == "local" and LocalBackend.needs_image is False
    assert LocalBackend.features == {"cancel", "logs-follow", "outputs", "time_limit"}


# ---------------------------------------------------------------------------- slow: real jobs


@pytest.mark.slow
def test_job_succeeds_prints_writes_outputs_and_gets_parameters(
    tmp_path: Path, venv_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a submitting kernel's environment carries must not reach the job.
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "kernel-only-modules"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("JPY_PARENT_PID", "12345")
    monkeypatch.setenv("CLOUDPROMOTE_PARAMETERS", '{"alpha": -1}')
    script = """
        import importlib.util, json, os, sys
        import six
        alpha = 1  # parameters cell
        alpha = json.loads(os.environ["CLOUDPROMOTE_PARAMETERS"]).get("alpha", alpha)
        print("six", six.__version__)
        print("alpha", alpha, type(alpha).__name__)
        print("env", os.environ["GREETING"], os.environ["CLOUDPROMOTE_JOB_ID"])
        print("included", open("data.txt").read().strip())
        print("isolated", importlib.util.find_spec("jupyter_cloudpromote") is None)
        print("venv", sys.prefix != sys.base_prefix, os.environ["VIRTUAL_ENV"] == sys.prefix)
        print("noise", [k for k in ("PYTHONPATH", "JPY_PARENT_PID") if k in os.environ])
        print("mpl", os.environ["MPLBACKEND"])  # the runner's default, not the kernel's
        out = os.environ["CLOUDPROMOTE_OUTPUT_DIR"]
        with open(os.path.join(out, "result.json"), "w") as handle:
            json.dump({"alpha": alpha}, handle)
    """
    context = make_job_context(tmp_path, script, ["six==1.17.0"])
    request = make_request(
        tmp_path, context, parameters={"alpha": 42}, env={"GREETING": "hello there"}
    )
    backend = backend_for(venv_cache)
    backend_id = backend.submit(request)
    assert backend_id.startswith("local:")
    status = wait_terminal(backend, backend_id, request.job_dir)
    log = backend.logs(backend_id, request.job_dir)
    assert status == BackendStatus(JobState.SUCCEEDED, "exited with code 0", 0), log
    assert "six 1.17.0" in log and "alpha 42 int" in log
    assert f"env hello there {request.job_id}" in log
    assert "included included file" in log
    assert "isolated True" in log and "venv True True" in log and "noise []" in log
    assert "mpl Agg" in log
    assert json.loads((request.outputs_dir / "result.json").read_text()) == {"alpha": 42}
    assert "six==1.17.0" in build_logs(request.job_dir)
    assert "six==1.17.0" in backend.build_logs(request.job_dir)
    assert "".join(backend.follow_logs(backend_id, request.job_dir)) == log
    # The job folder is private to the job: the spec (with its env) is not world-readable.
    assert (request.job_dir / "local" / "spec.json").stat().st_mode & 0o077 == 0


@pytest.mark.slow
def test_job_survives_the_submitting_process(tmp_path: Path, venv_cache: Path) -> None:
    go = tmp_path / "go"
    script = f"""
        import os, time
        print("waiting for the test", flush=True)
        while not os.path.exists({str(go)!r}):
            time.sleep(0.05)
        open(os.path.join(os.environ["CLOUDPROMOTE_OUTPUT_DIR"], "done.txt"), "w").write("ok")
        print("finished")
    """
    make_job_context(tmp_path, script)
    submitter = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from jupyter_cloudpromote.backends.base import SubmitRequest
        from jupyter_cloudpromote.backends.local import LocalBackend
        from jupyter_cloudpromote.models import BuildContext, Resources
        root, cache, version = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
        context = BuildContext(root / "context", [], "0", "1", "", [], "", version, "example")
        request = SubmitRequest("detached", root / "job", context, None, Resources(), {}, {})
        print(LocalBackend("local", {"venv_cache_dir": cache}).submit(request))
        """
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            submitter,
            str(tmp_path),
            str(venv_cache),
            platform.python_version(),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    backend_id = done.stdout.strip()
    job_dir = tmp_path / "job"
    backend = backend_for(venv_cache)
    # The submitter has exited; the job carries on, and this process can watch it.
    wait_for(lambda: "waiting for the test" in backend.logs(backend_id, job_dir), "job start")
    assert backend.status(backend_id, job_dir).state is JobState.RUNNING
    go.touch()
    status = wait_terminal(backend, backend_id, job_dir)
    assert status.state is JobState.SUCCEEDED, backend.logs(backend_id, job_dir)
    assert (job_dir / "outputs" / "done.txt").read_text() == "ok"


@pytest.mark.slow
def test_failing_script_reports_exit_code_and_last_lines(tmp_path: Path, venv_cache: Path) -> None:
    script = """
        import sys
        for number in range(1, 31):
            print(f"line {number}")
        print("about to fail", file=sys.stderr)
        sys.exit(3)
    """
    request = make_request(tmp_path, make_job_context(tmp_path, script))
    backend = backend_for(venv_cache)
    backend_id = backend.submit(request)
    status = wait_terminal(backend, backend_id, request.job_dir)
    assert status.state is JobState.FAILED and status.exit_code == 3
    assert status.reason.startswith("exited with code 3; last log lines:\n")
    tail = status.reason.split("\n")[1:]
    assert tail == [f"line {n}" for n in range(22, 31)] + ["about to fail"]


@pytest.mark.slow
def test_uncaught_exception_fails_with_the_traceback(tmp_path: Path, venv_cache: Path) -> None:
    request = make_request(tmp_path, make_job_context(tmp_path, "ratio = 1 / 0\n"))
    backend = backend_for(venv_cache)
    backend_id = backend.submit(request)
    status = wait_terminal(backend, backend_id, request.job_dir)
    assert status.state is JobState.FAILED and status.exit_code == 1
    assert "ZeroDivisionError: division by zero" in status.reason


@pytest.mark.slow
def test_cancel_stops_the_whole_process_group(tmp_path: Path, venv_cache: Path) -> None:
    # The job ignores SIGTERM and has a child: cancel must escalate to SIGKILL, group-wide.
    script = """
        import os, signal, subprocess, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen(["sleep", "600"])
        out = os.environ["CLOUDPROMOTE_OUTPUT_DIR"]
        with open(os.path.join(out, "pids.txt"), "w") as handle:
            handle.write(f"{os.getpgid(0)} {child.pid}")
        time.sleep(600)
    """
    request = make_request(tmp_path, make_job_context(tmp_path, script))
    backend = backend_for(venv_cache, cancel_grace_seconds="1")
    backend_id = backend.submit(request)
    pids = request.outputs_dir / "pids.txt"
    wait_for(lambda: pids.exists() and " " in pids.read_text(), "the job to start")
    pgid, child = (int(value) for value in pids.read_text().split())
    assert backend.status(backend_id, request.job_dir).state is JobState.RUNNING
    backend.cancel(backend_id, request.job_dir)
    status = wait_terminal(backend, backend_id, request.job_dir)
    assert status.state is JobState.CANCELLED and status.reason == "cancelled by user"
    assert group_gone(pgid)
    assert process_start_time(child) is None
    backend.cancel(backend_id, request.job_dir)  # cancelling a finished job changes nothing
    assert backend.status(backend_id, request.job_dir).state is JobState.CANCELLED


@pytest.mark.slow
def test_cancel_while_the_environment_is_building(tmp_path: Path, venv_cache: Path) -> None:
    # Holding the environment's build lock keeps the job in its building phase, for sure.
    cache = tmp_path / "cache"
    cache.mkdir()
    executable, version = inspect_interpreter(sys.executable)
    key = requirements_hash([], f"{executable} {version}")
    lock = os.open(cache / f"{key}.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        request = make_request(tmp_path, make_job_context(tmp_path, "print('never runs')\n"))
        backend = backend_for(cache)
        backend_id = backend.submit(request)
        wait_for(lambda: "Waiting for another job" in build_logs(request.job_dir), "the build")
        status = backend.status(backend_id, request.job_dir)
        assert status == BackendStatus(JobState.QUEUED, "preparing the environment")
        backend.cancel(backend_id, request.job_dir)
        status = wait_terminal(backend, backend_id, request.job_dir)
    finally:
        os.close(lock)
    assert status.state is JobState.CANCELLED and status.reason == "cancelled by user"
    assert backend.logs(backend_id, request.job_dir) == ""


@pytest.mark.slow
def test_time_limit_stops_the_job(tmp_path: Path, venv_cache: Path) -> None:
    script = """
        import time
        print("started, sleeping", flush=True)
        time.sleep(600)
    """
    request = make_request(tmp_path, make_job_context(tmp_path, script), time_limit="2s")
    backend = backend_for(venv_cache)
    backend_id = backend.submit(request)
    status = wait_terminal(backend, backend_id, request.job_dir)
    assert status.state is JobState.FAILED
    assert status.reason.startswith("hit its time limit of 2s")
    assert "started, sleeping" in status.reason
    assert status.exit_code == 128 + signal.SIGTERM


@pytest.mark.slow
def test_killed_runner_is_reported_and_its_job_stopped(tmp_path: Path, venv_cache: Path) -> None:
    script = """
        import os, time
        with open(os.path.join(os.environ["CLOUDPROMOTE_OUTPUT_DIR"], "pgid"), "w") as f:
            f.write(str(os.getpgid(0)))
        time.sleep(600)
    """
    request = make_request(tmp_path, make_job_context(tmp_path, script))
    backend = backend_for(venv_cache)
    backend_id = backend.submit(request)
    pgid_file = request.outputs_dir / "pgid"
    wait_for(lambda: pgid_file.exists() and pgid_file.read_text() != "", "the job to start")
    supervisor = json.loads(state_path(request.job_dir).read_text())["supervisor_pid"]
    assert backend_id == f"local:{supervisor}"
    os.kill(supervisor, signal.SIGKILL)
    status = wait_terminal(backend, backend_id, request.job_dir)
    assert status.state is JobState.FAILED
    assert status.reason.startswith(f"the local runner stopped unexpectedly (pid {supervisor})")
    wait_for(lambda: group_gone(int(pgid_file.read_text())), "the orphaned job to stop", 30)


@pytest.mark.slow
def test_runner_stopped_with_sigterm_stops_the_job_and_says_so(
    tmp_path: Path, venv_cache: Path
) -> None:
    # As at a shutdown: the runner gets SIGTERM, stops its job and records why.
    script = """
        import os, time
        with open(os.path.join(os.environ["CLOUDPROMOTE_OUTPUT_DIR"], "pgid"), "w") as f:
            f.write(str(os.getpgid(0)))
        print("working", flush=True)
        time.sleep(600)
    """
    request = make_request(tmp_path, make_job_context(tmp_path, script))
    backend = backend_for(venv_cache)
    backend_id = backend.submit(request)
    pgid_file = request.outputs_dir / "pgid"
    wait_for(lambda: pgid_file.exists() and pgid_file.read_text() != "", "the job to start")
    os.kill(int(backend_id.split(":")[1]), signal.SIGTERM)
    status = wait_terminal(backend, backend_id, request.job_dir)
    assert status.state is JobState.FAILED
    assert status.reason.startswith("the local runner was stopped by SIGTERM")
    assert "working" in status.reason
    assert group_gone(int(pgid_file.read_text()))


@pytest.mark.slow
def test_unknown_requirement_fails_naming_it(tmp_path: Path, venv_cache: Path) -> None:
    context = make_job_context(tmp_path, "print('never runs')\n", [f"{NO_SUCH_PACKAGE}==1.0"])
    request = make_request(tmp_path, context)
    backend = backend_for(venv_cache)
    backend_id = backend.submit(request)
    status = wait_terminal(backend, backend_id, request.job_dir)
    assert status.state is JobState.FAILED and status.exit_code is None
    assert status.reason.startswith("building the job's environment failed")
    assert f"The failing requirement: {NO_SUCH_PACKAGE}==1.0." in status.reason
    assert "not found in the package registry" in status.reason  # the installer's own words
    assert "pip_index_url" in status.reason  # and the fix
    assert NO_SUCH_PACKAGE in build_logs(request.job_dir)


@pytest.mark.slow
def test_kernel_python_not_found_fails_with_the_fix(tmp_path: Path, venv_cache: Path) -> None:
    context = make_job_context(tmp_path, "print('never runs')\n", python_version="3.99.1")
    request = make_request(tmp_path, context)
    backend = backend_for(venv_cache)
    backend_id = backend.submit(request)
    status = wait_terminal(backend, backend_id, request.job_dir)
    assert status.state is JobState.FAILED
    assert "kernel runs Python 3.99.1, but no working Python 3.99 was found" in status.reason
    assert "option python=" in status.reason
