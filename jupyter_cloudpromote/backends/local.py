"""The `local` backend: run the job on this machine in a cached virtualenv, no Docker needed.

submit() copies the build context into the job folder and starts a detached supervisor
process (`_local_supervisor`), then returns at once. The supervisor builds or reuses the
job's virtualenv, runs the job in its own process group, enforces the time limit and
cancellation, and writes the result. Everything it knows lives in files in the job folder, so
any process (the CLI, the Jupyter server, a kernel) can ask for status later, even after the
process that submitted the job has exited.

Job folder layout (all under job_dir):
    work/                  copy of the build context; the job's working directory
    outputs/               CLOUDPROMOTE_OUTPUT_DIR
    logs/run.log           everything the job printed
    logs/build.log         virtualenv build progress
    logs/supervisor.log    the supervisor's own messages
    local/spec.json        what to run (written by submit, private: it holds the job's env)
    local/state.json       supervisor pid + start time (written by submit, atomically)
    local/phase.json       "building" or "running" + the job's pid and start time (supervisor)
    local/cancel-requested marker written by cancel()
    local/result.json      {exit_code, reason, finished, state} (written once, atomically)
"""

from __future__ import annotations

import codecs
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import BuildError, ConfigError
from ..models import BackendStatus, JobState
from ..procs import process_alive, process_start_time
from ..resources import parse_duration_seconds
from .base import Backend, SubmitRequest, stage_working_copy

SCRIPT_NAME = "job.py"
RUNNER_NAME = "_cloudpromote_runner.py"
SUPERVISOR_MODULE = "jupyter_cloudpromote.backends._local_supervisor"
DEFAULT_CANCEL_GRACE_SECONDS = 10.0
_LAST_LOG_LINES = 10
_POLL_SECONDS = 0.5


# ---------------------------------------------------------------------------- job folder


def local_dir(job_dir: Path) -> Path:
    return Path(job_dir) / "local"


def spec_path(job_dir: Path) -> Path:
    return local_dir(job_dir) / "spec.json"


def state_path(job_dir: Path) -> Path:
    return local_dir(job_dir) / "state.json"


def phase_path(job_dir: Path) -> Path:
    return local_dir(job_dir) / "phase.json"


def result_path(job_dir: Path) -> Path:
    return local_dir(job_dir) / "result.json"


def cancel_marker_path(job_dir: Path) -> Path:
    return local_dir(job_dir) / "cancel-requested"


def run_log_path(job_dir: Path) -> Path:
    return Path(job_dir) / "logs" / "run.log"


def build_log_path(job_dir: Path) -> Path:
    return Path(job_dir) / "logs" / "build.log"


def supervisor_log_path(job_dir: Path) -> Path:
    return Path(job_dir) / "logs" / "supervisor.log"


def write_json_atomic(path: Path, data: dict[str, Any], mode: int = 0o644) -> None:
    """Write to a temp file beside `path`, fsync, rename: readers see old or new, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(Path(path).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ---------------------------------------------------------------------------- processes


def kill_process_group(pgid: int, sig: int) -> bool:
    """Signal a whole process group; False when it is already gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


def process_group_exists(pgid: int) -> bool:
    return kill_process_group(pgid, 0)


# ---------------------------------------------------------------------------- time limits

# ---------------------------------------------------------------------------- interpreters


def find_python(python_version: str, explicit: str = "") -> str:
    """The interpreter a job runs on: `explicit`, or one matching the kernel's X.Y version.

    Order: the explicit option; this process's own interpreter when its X.Y matches;
    `pythonX.Y` on PATH; `uv python find` among system interpreters. Every candidate is run
    to check it works and has the right version (a pyenv shim may exist but fail).
    """
    from ..venvs import find_uv, inspect_interpreter

    if explicit:
        resolved = explicit if os.sep in explicit else (shutil.which(explicit) or explicit)
        inspect_interpreter(resolved)  # raises BuildError with the fix when unusable
        return resolved
    wanted = ".".join(python_version.split(".")[:2]) if python_version else ""
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if not wanted or wanted == here:
        return sys.executable
    candidates: list[str] = []
    on_path = shutil.which(f"python{wanted}")
    if on_path:
        candidates.append(on_path)
    uv = find_uv()
    if uv:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            found = subprocess.run(
                [uv, "python", "find", "--python-preference", "only-system", wanted],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"},
            )
            if found.returncode == 0 and found.stdout.strip():
                candidates.append(found.stdout.strip().splitlines()[-1])
    for candidate in candidates:
        try:
            _path, version = inspect_interpreter(candidate)
        except BuildError:
            continue
        if version.startswith(wanted + "."):
            return candidate
    raise BuildError(
        f"The notebook's kernel runs Python {python_version}, but no working Python {wanted} "
        f"was found (this process runs Python {here}; python{wanted} is not usable on PATH).",
        f"Install Python {wanted} and put python{wanted} on PATH, or set the local profile's "
        f"option python=/path/to/python{wanted} (e.g. --option python=...).",
    )


def default_venv_cache_dir() -> Path:
    from jupyter_core.paths import jupyter_data_dir

    return Path(jupyter_data_dir()) / "cloudpromote" / "venvs"


# ---------------------------------------------------------------------------- logs


def last_log_lines(path: Path, count: int = _LAST_LOG_LINES) -> list[str]:
    """The last `count` non-empty lines of a log, reading only its end."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            data = handle.read()
    except OSError:
        return []
    lines = [line.rstrip() for line in data.decode("utf-8", "replace").splitlines()]
    return [line for line in lines if line.strip()][-count:]


def failure_reason(summary: str, log: Path) -> str:
    lines = last_log_lines(log)
    if not lines:
        return f"{summary}; the job printed nothing"
    return f"{summary}; last log lines:\n" + "\n".join(lines)


def _read_text(path: Path) -> str:
    try:
        return path.read_text("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def build_logs(job_dir: Path) -> str:
    """The virtualenv build log of a local job (separate from what the job printed)."""
    return _read_text(build_log_path(job_dir))


# ---------------------------------------------------------------------------- the backend


def _result_status(result: dict[str, Any]) -> BackendStatus:
    exit_code = result.get("exit_code")
    reason = str(result.get("reason") or "")
    state = result.get("state")
    if state == JobState.CANCELLED.value:
        return BackendStatus(JobState.CANCELLED, reason or "cancelled by user", exit_code)
    if state == JobState.SUCCEEDED.value or (state is None and exit_code == 0):
        return BackendStatus(JobState.SUCCEEDED, reason, exit_code)
    return BackendStatus(JobState.FAILED, reason or f"exited with code {exit_code}", exit_code)


class LocalBackend(Backend):
    """Runs jobs on this machine, each in a cached virtualenv of its own requirements.

    Options (profile settings; jobs.py fills the cache, index and CA ones from CloudPromote):
      python                interpreter for the job (default: one matching the kernel's X.Y)
      venv_cache_dir        where environments are cached (<jupyter data dir>/cloudpromote/venvs)
      pip_index_url         package index for the job's requirements
      ca_bundle             extra CA bundle trusted while installing (alias: extra_ca_bundle)
      cancel_grace_seconds  seconds between SIGTERM and SIGKILL on cancel/time limit (10)
    """

    kind = "local"
    description = "Run on this machine in a cached virtualenv (no Docker needed)."
    features = frozenset({"cancel", "logs-follow", "outputs", "time_limit"})
    needs_image = False

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        from ..venvs import find_uv

        if find_uv():
            return True, ""
        return True, "uv not found: environments are built with venv + pip (slower)"

    def validate_options(self) -> None:
        python = str(self.options.get("python") or "")
        if python and not (Path(python).is_file() if os.sep in python else shutil.which(python)):
            raise ConfigError(
                f"The local profile's python={python!r} does not exist.",
                "Give the path of a Python interpreter, or remove the option to use the one "
                "matching the notebook's kernel.",
            )
        grace = self.options.get("cancel_grace_seconds")
        if grace is not None:
            try:
                float(grace)
            except (TypeError, ValueError) as exc:
                raise ConfigError(
                    f"cancel_grace_seconds={grace!r} is not a number.",
                    "Give the seconds a cancelled job gets to stop, e.g. 10.",
                ) from exc

    # -- submit

    def submit(self, request: SubmitRequest) -> str:
        job_dir = Path(request.job_dir)
        options = {**self.options, **request.options}
        time_limit = request.resources.time_limit
        limit_seconds = parse_duration_seconds(time_limit) if time_limit else None
        parameters_json = stage_working_copy(request, job_dir)
        for folder in ("logs", "outputs", "local"):
            (job_dir / folder).mkdir(parents=True, exist_ok=True)
        for stale in (result_path(job_dir), cancel_marker_path(job_dir), phase_path(job_dir)):
            stale.unlink(missing_ok=True)  # a resubmission into the same folder starts clean
        cache_dir = options.get("venv_cache_dir") or default_venv_cache_dir()
        spec = {
            "job_id": request.job_id,
            "requirements": list(request.context.requirements),
            "python": str(options.get("python") or ""),
            "python_version": request.context.python_version,
            "venv_cache_dir": str(cache_dir),
            "index_url": str(options.get("pip_index_url") or options.get("index_url") or ""),
            "ca_bundle": str(options.get("ca_bundle") or options.get("extra_ca_bundle") or ""),
            "time_limit": time_limit,
            "time_limit_seconds": limit_seconds,
            "cancel_grace_seconds": float(
                options.get("cancel_grace_seconds") or DEFAULT_CANCEL_GRACE_SECONDS
            ),
            "parameters_json": parameters_json,
            "env": dict(request.env),
            "script": SCRIPT_NAME,
            "runner": RUNNER_NAME,
        }
        # Private: the job's environment variables may hold credentials.
        write_json_atomic(spec_path(job_dir), spec, mode=0o600)
        with open(supervisor_log_path(job_dir), "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", SUPERVISOR_MODULE, str(job_dir)],
                cwd=job_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # survives the submitter and its terminal
                close_fds=True,
            )
        # Reap it if this process outlives it (a long-running server), so no zombie lingers.
        threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()
        backend_id = f"local:{proc.pid}"
        write_json_atomic(
            state_path(job_dir),
            {
                "backend_id": backend_id,
                "supervisor_pid": proc.pid,
                "supervisor_start_time": process_start_time(proc.pid),
                "submitted": time.time(),
            },
        )
        return backend_id

    # -- status

    def status(self, backend_id: str, job_dir: Path) -> BackendStatus:
        job_dir = Path(job_dir)
        result = read_json(result_path(job_dir))
        if result is not None:
            return _result_status(result)
        state = read_json(state_path(job_dir))
        if state is None:
            return BackendStatus(
                JobState.FAILED,
                f"no local runner record in {local_dir(job_dir)}; the job was never started",
            )
        pid = state.get("supervisor_pid")
        if process_alive(pid, state.get("supervisor_start_time")):
            phase = read_json(phase_path(job_dir)) or {}
            if cancel_marker_path(job_dir).exists():
                return BackendStatus(JobState.CANCELLING, "cancel requested")
            if phase.get("phase") == "running":
                return BackendStatus(JobState.RUNNING, "running")
            return BackendStatus(JobState.QUEUED, "preparing the environment")
        # The supervisor may have written its result just before exiting.
        result = read_json(result_path(job_dir))
        if result is not None:
            return _result_status(result)
        return self._record_runner_death(job_dir, pid)

    def _record_runner_death(self, job_dir: Path, pid: Any) -> BackendStatus:
        """The supervisor died without a result (killed, machine rebooted): stop its job."""
        reason = f"the local runner stopped unexpectedly (pid {pid})"
        phase = read_json(phase_path(job_dir)) or {}
        job_pid = phase.get("job_pid")
        if job_pid and process_alive(job_pid, phase.get("job_start_time")):
            kill_process_group(int(job_pid), signal.SIGKILL)
            reason += "; its job processes were stopped"
        result = {
            "state": JobState.FAILED.value,
            "exit_code": None,
            "reason": reason,
            "finished": time.time(),
        }
        with contextlib.suppress(OSError):
            write_json_atomic(result_path(job_dir), result)
        return BackendStatus(JobState.FAILED, reason)

    # -- logs

    def logs(self, backend_id: str, job_dir: Path) -> str:
        return _read_text(run_log_path(job_dir))

    def build_logs(self, job_dir: Path) -> str:
        return build_logs(job_dir)

    def follow_logs(self, backend_id: str, job_dir: Path) -> Iterator[str]:
        """Tail run.log by byte offset until the job is terminal, then yield the rest."""
        path = run_log_path(job_dir)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        offset = 0

        def read_new() -> str:
            nonlocal offset
            try:
                with open(path, "rb") as handle:
                    handle.seek(offset)
                    data = handle.read()
            except FileNotFoundError:
                return ""
            offset += len(data)
            return decoder.decode(data)

        while True:
            terminal = self.status(backend_id, job_dir).state.terminal
            text = read_new()  # after the status check, so nothing written before the end
            if text:
                yield text
            if terminal:
                rest = decoder.decode(b"", final=True)
                if rest:
                    yield rest
                return
            time.sleep(_POLL_SECONDS)

    # -- cancel

    def cancel(self, backend_id: str, job_dir: Path) -> None:
        """Mark the job cancelled and SIGTERM its process group; the supervisor escalates."""
        job_dir = Path(job_dir)
        if read_json(result_path(job_dir)) is not None:
            return  # already over
        write_json_atomic(cancel_marker_path(job_dir), {"requested": time.time()})
        phase = read_json(phase_path(job_dir)) or {}
        job_pid = phase.get("job_pid")
        if (
            phase.get("phase") == "running"
            and job_pid
            and process_alive(job_pid, phase.get("job_start_time"))
        ):
            kill_process_group(int(job_pid), signal.SIGTERM)
        state = read_json(state_path(job_dir)) or {}
        if not process_alive(state.get("supervisor_pid"), state.get("supervisor_start_time")):
            # Nobody is left to finish the job: status() records the runner's death.
            self.status(backend_id, job_dir)

    def collect_outputs(self, backend_id: str, job_dir: Path) -> None:
        """Outputs are written straight to job_dir/outputs."""
