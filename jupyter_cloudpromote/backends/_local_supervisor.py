"""The detached process that runs one local job: `python -m ... <job_dir>`.

Started by LocalBackend.submit() in a session of its own, it outlives whoever submitted the
job. It builds (or reuses) the job's virtualenv, runs the job in a process group of its own,
enforces the time limit and cancellation (SIGTERM, then SIGKILL after a grace period), and
writes local/result.json exactly once. Its own messages go to logs/supervisor.log.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from ..errors import BuildError
from ..models import JOB_ID_ENV, OUTPUT_DIR_ENV, PARAMETERS_ENV, JobState
from ..venvs import ensure_venv
from .local import (
    build_log_path,
    cancel_marker_path,
    failure_reason,
    find_python,
    kill_process_group,
    phase_path,
    process_group_exists,
    process_start_time,
    read_json,
    result_path,
    run_log_path,
    spec_path,
    write_json_atomic,
)

_TICK_SECONDS = 0.2
# Variables of the submitting process (its virtualenv, the kernel, another job) that would
# make the job see something other than its own fresh environment.
_DROPPED_ENV = frozenset(
    {
        "VIRTUAL_ENV",
        "VIRTUAL_ENV_PROMPT",
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONSTARTUP",
        "PYTHONEXECUTABLE",
        "__PYVENV_LAUNCHER__",
        "CONDA_PREFIX",
        "CONDA_DEFAULT_ENV",
        "CONDA_PROMPT_MODIFIER",
    }
)
_DROPPED_ENV_PREFIXES = ("JPY_", "CLOUDPROMOTE_")
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def _prctl() -> Any:
    """libc's prctl (Linux only), or None."""
    try:
        return getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)
    except OSError:
        return None


def become_subreaper() -> bool:
    """Linux: processes the job orphans are re-parented to us, so we can reap them."""
    prctl = _prctl()
    return prctl is not None and prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def reap_orphans() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def log(message: str) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"{stamp} {message}", flush=True)


def job_environment(venv: Path, spec: dict[str, Any], outputs: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in _DROPPED_ENV and not key.startswith(_DROPPED_ENV_PREFIXES)
    }
    if env.get("MPLBACKEND", "").startswith("module://"):
        env.pop("MPLBACKEND")  # the kernel's inline backend does not exist in the job
    foreign_bins = {
        str(Path(prefix) / "bin")
        for prefix in (os.environ.get("VIRTUAL_ENV"), os.environ.get("CONDA_PREFIX"))
        if prefix
    }
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and p not in foreign_bins]
    env["PATH"] = os.pathsep.join([str(venv / "bin"), *path])
    env["VIRTUAL_ENV"] = str(venv)
    env.update({str(k): str(v) for k, v in (spec.get("env") or {}).items()})
    env["PYTHONUNBUFFERED"] = "1"
    env[OUTPUT_DIR_ENV] = str(outputs)
    env[PARAMETERS_ENV] = spec.get("parameters_json") or "{}"
    env[JOB_ID_ENV] = str(spec.get("job_id") or "")
    return env


def _die_with_parent(parent_pid: int) -> Any:
    """preexec_fn: the job gets SIGKILL if the supervisor dies (Linux), so none is orphaned."""
    prctl = _prctl()  # looked up before the fork: nothing to load in the child

    def preexec() -> None:
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent_pid:  # the supervisor died before prctl took effect
            os._exit(1)

    return preexec


class Supervisor:
    def __init__(self, job_dir: Path) -> None:
        self.job_dir = job_dir
        spec = read_json(spec_path(job_dir))
        if spec is None:
            raise RuntimeError(f"no readable {spec_path(job_dir)}")
        self.spec = spec
        self.phase = "starting"
        # Re-entrant: a signal handler may run while the main thread holds it.
        self.phase_lock = threading.RLock()
        self.result_lock = threading.RLock()
        self.finished = False
        self.stop_signal: int | None = None
        self.job: subprocess.Popen[bytes] | None = None
        self.build_done = threading.Event()
        self.subreaper = False

    # -- results and phases

    def finish(self, state: JobState, exit_code: int | None, reason: str) -> None:
        with self.result_lock:
            if self.finished:
                return
            self.finished = True
            write_json_atomic(
                result_path(self.job_dir),
                {
                    "state": state.value,
                    "exit_code": exit_code,
                    "reason": reason,
                    "finished": time.time(),
                },
            )
            log(f"result: {state.value}, exit code {exit_code}: {reason.splitlines()[0]}")

    def set_phase(self, phase: str, **extra: Any) -> None:
        self.phase = phase
        write_json_atomic(
            phase_path(self.job_dir), {"phase": phase, "updated": time.time(), **extra}
        )

    def cancel_requested(self) -> bool:
        return cancel_marker_path(self.job_dir).exists()

    def abort_build(self, state: JobState, reason: str) -> None:
        """Stop during the build: record the result, then kill ourselves and the installer."""
        self.finish(state, None, reason)
        if os.getpgid(0) == os.getpid():  # our own group (start_new_session): uv is in it
            os.killpg(os.getpid(), signal.SIGKILL)
        os._exit(1)

    # -- signals and cancellation while building

    def on_signal(self, signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        log(f"received {name}")
        with self.phase_lock:
            if self.phase in ("starting", "building"):
                self.abort_build(
                    JobState.FAILED, f"the local runner was stopped by {name} before the job ran"
                )
        self.stop_signal = signum

    def watch_build(self) -> None:
        while not self.build_done.wait(_TICK_SECONDS):
            with self.phase_lock:
                if self.phase == "building" and self.cancel_requested():
                    log("cancel requested while building the environment")
                    self.abort_build(JobState.CANCELLED, "cancelled by user")

    # -- main

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self.on_signal)
        log(f"supervisor {os.getpid()} for job {self.spec.get('job_id')} in {self.job_dir}")
        if self.cancel_requested():
            self.finish(JobState.CANCELLED, None, "cancelled by user")
            return 0
        with self.phase_lock:
            self.set_phase("building")
        watcher = threading.Thread(target=self.watch_build, name="cancel-watch", daemon=True)
        watcher.start()
        try:
            venv = self.build()
        except BuildError as exc:
            self.finish(JobState.FAILED, None, f"building the job's environment failed: {exc}")
            return 1
        finally:
            self.build_done.set()
            watcher.join()
        # One thread again: safe to fork the job with a preexec_fn.
        if self.cancel_requested():
            self.finish(JobState.CANCELLED, None, "cancelled by user")
            return 0
        return self.run_job(venv)

    def build(self) -> Path:
        with open(build_log_path(self.job_dir), "a", encoding="utf-8", buffering=1) as out:

            def progress(line: str) -> None:
                out.write(line + "\n")

            python = find_python(
                str(self.spec.get("python_version") or ""), str(self.spec.get("python") or "")
            )
            progress(f"Python for the job: {python}")
            return ensure_venv(
                list(self.spec.get("requirements") or []),
                python=python,
                cache_dir=Path(self.spec["venv_cache_dir"]),
                progress=progress,
                index_url=str(self.spec.get("index_url") or ""),
                ca_bundle=self.spec.get("ca_bundle") or None,
            )

    def run_job(self, venv: Path) -> int:
        work = self.job_dir / "work"
        outputs = self.job_dir / "outputs"
        outputs.mkdir(parents=True, exist_ok=True)
        run_log = run_log_path(self.job_dir)
        env = job_environment(venv, self.spec, outputs)
        self.subreaper = become_subreaper()
        argv = [
            str(venv / "bin" / "python"),
            "-u",
            str(self.spec["runner"]),
            str(self.spec["script"]),
        ]
        with open(run_log, "ab", buffering=0) as out:
            self.job = subprocess.Popen(
                argv,
                cwd=work,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: cancel kills all of it
                close_fds=True,
                preexec_fn=_die_with_parent(os.getpid()),  # safe: the watcher thread has ended
            )
        pgid = self.job.pid
        with self.phase_lock:
            self.set_phase(
                "running",
                job_pid=pgid,
                job_start_time=process_start_time(pgid),
                venv=str(venv),
                started=time.time(),
            )
        log(f"job started: pid {pgid}, python {venv / 'bin' / 'python'}")
        try:
            return self.watch_job(self.job, pgid, run_log)
        except BaseException:
            kill_process_group(pgid, signal.SIGKILL)
            raise

    def watch_job(self, job: subprocess.Popen[bytes], pgid: int, run_log: Path) -> int:
        limit_text = self.spec.get("time_limit")
        limit = self.spec.get("time_limit_seconds")
        grace = float(self.spec.get("cancel_grace_seconds") or 10.0)
        started = time.monotonic()
        deadline = started + float(limit) if limit else None
        stop: tuple[JobState, str] | None = None
        kill_at: float | None = None
        while True:
            try:
                returncode = job.wait(timeout=_TICK_SECONDS)
                break
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if stop is None:
                if self.cancel_requested():
                    stop = (JobState.CANCELLED, "cancelled by user")
                elif self.stop_signal is not None:
                    name = signal.Signals(self.stop_signal).name
                    stop = (JobState.FAILED, f"the local runner was stopped by {name}")
                elif deadline is not None and now >= deadline:
                    stop = (JobState.FAILED, f"hit its time limit of {limit_text}")
                if stop is not None:
                    log(f"stopping the job ({stop[1]}): SIGTERM, SIGKILL after {grace:g}s")
                    kill_process_group(pgid, signal.SIGTERM)
                    kill_at = now + grace
            elif kill_at is not None and now >= kill_at:
                log("job still running after the grace period: SIGKILL")
                kill_process_group(pgid, signal.SIGKILL)
                kill_at = None
        # cancel() signals the group itself, so the job may be gone before we saw the marker.
        if stop is None and self.cancel_requested():
            stop = (JobState.CANCELLED, "cancelled by user")
        self.sweep_group(pgid, grace)
        exit_code = returncode if returncode >= 0 else 128 - returncode
        if stop is not None:
            state, summary = stop
            reason = summary if state is JobState.CANCELLED else failure_reason(summary, run_log)
            self.finish(state, exit_code, reason)
            return 1
        if returncode == 0:
            self.finish(JobState.SUCCEEDED, 0, "exited with code 0")
            return 0
        if returncode < 0:
            name = signal.Signals(-returncode).name
            summary = f"was killed by signal {name} (exit code {exit_code})"
        else:
            summary = f"exited with code {exit_code}"
        self.finish(JobState.FAILED, exit_code, failure_reason(summary, run_log))
        return 1

    def sweep_group(self, pgid: int, grace: float) -> None:
        """Stop what the job left running in its group, as a container's end would."""
        if not kill_process_group(pgid, signal.SIGTERM):
            return
        log("stopping processes the job left running")
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            reap_orphans()  # a killed orphan stays in the group as a zombie until reaped
            if not process_group_exists(pgid):
                return
            time.sleep(0.05)
        kill_process_group(pgid, signal.SIGKILL)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and self.subreaper:
            reap_orphans()
            if not process_group_exists(pgid):
                return
            time.sleep(0.05)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(
            "usage: python -m jupyter_cloudpromote.backends._local_supervisor JOB_DIR",
            file=sys.stderr,
        )
        return 2
    job_dir = Path(argv[1]).resolve()
    supervisor: Supervisor | None = None
    try:
        supervisor = Supervisor(job_dir)
        return supervisor.run()
    except Exception as exc:
        traceback.print_exc()
        sys.stderr.flush()
        reason = f"the local runner failed: {exc!r} (see logs/supervisor.log)"
        if supervisor is not None:
            if supervisor.job is not None:
                kill_process_group(supervisor.job.pid, signal.SIGKILL)
            supervisor.finish(JobState.FAILED, None, reason)
        else:
            with contextlib.suppress(OSError):
                write_json_atomic(
                    result_path(job_dir),
                    {
                        "state": "failed",
                        "exit_code": None,
                        "reason": reason,
                        "finished": time.time(),
                    },
                )
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
