"""The `slurm` backend submitting through slurmrestd (REST API v0.0.38, JWT auth).

Real parts only: slurmrestd, slurmctld and slurmd as .ci/setup-slurm.sh starts them (slurmrestd
on 127.0.0.1:6820 as an unprivileged user, tokens from `scontrol token`). The tests run as root
on the CI machine, so the token is made for root.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path

import pytest

from jupyter_cloudpromote.backends.slurm import REST_API, SlurmBackend
from jupyter_cloudpromote.models import BackendStatus, JobState

from .conftest import require
from .test_slurm_backend import HOSTILE, slurm_cluster, submit, terminal, wait_state

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REST_URL = os.environ.get("CLOUDPROMOTE_SLURMRESTD_URL", "http://127.0.0.1:6820")
TOKEN_ENV = "CLOUDPROMOTE_TEST_SLURM_JWT"
# Set in this process only: a job submitted with sbatch inherits it, one sent through
# slurmrestd does not (it gets just the environment the backend sends).
SUBMITTER_ONLY = "CLOUDPROMOTE_TEST_SUBMITTER_ONLY"

__all__ = ["slurm_cluster"]  # a fixture, used by name


def _make_token() -> str:
    try:
        result = subprocess.run(
            ["scontrol", "token", "username=root", "lifespan=3600"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"!{exc}"
    for line in result.stdout.splitlines():
        if line.startswith("SLURM_JWT="):
            return line.removeprefix("SLURM_JWT=").strip()
    return "!" + (result.stderr or result.stdout).strip()


@pytest.fixture(scope="module")
def rest_token(slurm_cluster: None) -> str:
    """A JWT for root, and slurmrestd answering ping with it (skip here, fail under CI)."""
    token = _make_token()
    require(
        not token.startswith("!"),
        f"`scontrol token` made no token ({token[1:]}); run .ci/setup-slurm.sh (AuthAltTypes)",
    )
    request = urllib.request.Request(
        f"{REST_URL}{REST_API}/ping",
        headers={"X-SLURM-USER-NAME": "root", "X-SLURM-USER-TOKEN": token},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.loads(response.read())
    except (OSError, ValueError) as exc:
        answer = {"errors": [str(exc)]}
    require(
        not answer.get("errors") and bool(answer.get("pings")),
        f"slurmrestd at {REST_URL} does not answer ping ({answer.get('errors')}); "
        "run .ci/setup-slurm.sh",
    )
    return token


@pytest.fixture()
def rest_backend(rest_token: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SlurmBackend:
    token_file = tmp_path / "token"
    token_file.write_text(f"SLURM_JWT={rest_token}\n")  # as `scontrol token` prints it
    token_file.chmod(0o600)
    monkeypatch.setenv(SUBMITTER_ONLY, "leaked")
    instance = SlurmBackend(
        "slurm",
        {
            "rest_url": REST_URL,
            "rest_user": "root",
            "rest_token_file": str(token_file),
            "venv_cache_dir": str(tmp_path.parent / "rest-venvs"),
        },
    )
    instance.validate_options()
    return instance


def _files_mention(folder: Path, secret: str) -> list[Path]:
    return [
        path
        for path in folder.rglob("*")
        if path.is_file() and secret.encode() in path.read_bytes()
    ]


def test_rest_job_succeeds_with_outputs_and_env_as_data(
    rest_backend: SlurmBackend, rest_token: str, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    env = {name: value.format(marker=marker) for name, value in HOSTILE.items()}
    script = """
        import json, os, pathlib
        out = pathlib.Path(os.environ["CLOUDPROMOTE_OUTPUT_DIR"])
        names = ["QUOTES", "SUBST", "BACKTICKS", "NEWLINES", "SEMICOLON"]
        (out / "seen.json").write_text(json.dumps(
            {"params": json.loads(os.environ["CLOUDPROMOTE_PARAMETERS"]),
             "env": {n: os.environ[n] for n in names},
             "submitter_only": os.environ.get("CLOUDPROMOTE_TEST_SUBMITTER_ONLY"),
             "cwd_file": pathlib.Path("data.txt").read_text()}))
        print("done through REST")
    """
    parameters = {"msg": f"$(touch {marker})", "n": 3}
    slurm_id, job_dir = submit(tmp_path, rest_backend, script, parameters=parameters, env=env)
    status = wait_state(rest_backend, slurm_id, job_dir, terminal)
    assert status == BackendStatus(JobState.SUCCEEDED, "exited with code 0", 0)
    seen = json.loads((job_dir / "outputs" / "seen.json").read_text())
    assert seen["params"] == parameters
    assert seen["env"] == env
    assert seen["cwd_file"] == "included file\n"
    # Not sbatch: that would have passed this process's whole environment on.
    assert seen["submitter_only"] is None
    assert not marker.exists()
    assert "done through REST" in rest_backend.logs(slurm_id, job_dir)
    record = json.loads((job_dir / "slurm" / "submit.json").read_text())
    assert record["slurm_job_id"] == slurm_id
    assert record["rest_url"] == REST_URL
    # The token is sent, never written into the job's records, script or logs.
    assert _files_mention(job_dir, rest_token) == []


def test_rest_failing_job_reports_its_exit_code(rest_backend: SlurmBackend, tmp_path: Path) -> None:
    script = "import sys\nprint('about to fail', flush=True)\nsys.exit(3)\n"
    slurm_id, job_dir = submit(tmp_path, rest_backend, script)
    status = wait_state(rest_backend, slurm_id, job_dir, terminal)
    assert status.state is JobState.FAILED
    assert status.exit_code == 3
    assert status.reason.startswith("exited with code 3")
    assert "about to fail" in status.reason


def test_rest_cancel_ends_the_job_cancelled(rest_backend: SlurmBackend, tmp_path: Path) -> None:
    script = "import time\nprint('started', flush=True)\ntime.sleep(600)\n"
    slurm_id, job_dir = submit(tmp_path, rest_backend, script)
    wait_state(
        rest_backend,
        slurm_id,
        job_dir,
        lambda s: s.state is JobState.RUNNING and "started" in rest_backend.logs(slurm_id, job_dir),
    )
    rest_backend.cancel(slurm_id, job_dir)
    status = wait_state(rest_backend, slurm_id, job_dir, terminal)
    assert status.state is JobState.CANCELLED
    assert "started" in rest_backend.logs(slurm_id, job_dir)
    # Slurm itself says so (not only our records).
    shown = subprocess.run(
        ["scontrol", "show", "job", "--oneliner", slurm_id], capture_output=True, text=True
    )
    assert "JobState=CANCELLED" in shown.stdout


def test_rest_rejected_token_makes_up_no_state_and_is_not_shown(
    rest_token: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "not-a-valid-token")
    backend = SlurmBackend(
        "slurm", {"rest_url": REST_URL, "rest_user": "root", "rest_token_env": TOKEN_ENV}
    )
    status = backend.status("1", tmp_path)
    # slurmrestd answers, but slurmctld cannot be asked with that token: no state is made up.
    assert status.state is JobState.QUEUED
    assert "not answering" in status.reason
    assert "not-a-valid-token" not in status.reason
