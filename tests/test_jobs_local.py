"""The job lifecycle end to end on the real `local` backend (real processes, real venvs)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jupyter_cloudpromote.config import CloudPromote
from jupyter_cloudpromote.errors import (
    BackendError,
    FindingsError,
    KernelNotFoundError,
    NotebookError,
    ParameterError,
)
from jupyter_cloudpromote.jobs import JobManager
from jupyter_cloudpromote.models import JobRecord, JobState, PromotionOptions

from .conftest import make_notebook

pytestmark = pytest.mark.slow


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def manager(isolated_jupyter: Path) -> JobManager:
    return JobManager(CloudPromote())


def _wait(manager: JobManager, job_id: str, deadline: float = 300) -> JobRecord:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        record = manager.refresh(job_id)
        if record.state.terminal:
            return record
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish: {manager.get(job_id).to_dict()}")


def test_notebook_runs_to_succeeded_with_parameters_outputs_and_history(
    manager: JobManager, tmp_path: Path
) -> None:
    nb = make_notebook(
        tmp_path / "work" / "report.ipynb",
        [
            ("greeting = 'hello'\nrepeat = 2", ["parameters"]),
            "import os, pathlib\nout = pathlib.Path(os.environ['CLOUDPROMOTE_OUTPUT_DIR'])",
            "(out / 'result.txt').write_text(greeting * repeat)\nprint('wrote', greeting * repeat)",
        ],
    )
    before = _digest(nb)
    record = manager.submit(nb, PromotionOptions(backend="local", parameters={"repeat": "3"}))
    assert record.state is JobState.QUEUED and record.backend == "local"
    final = _wait(manager, record.id)
    assert final.state is JobState.SUCCEEDED, final.reason
    assert final.exit_code == 0
    assert [o["path"] for o in manager.outputs(final.id)] == ["result.txt"]
    assert (Path(final.job_dir) / "outputs" / "result.txt").read_text() == "hellohellohello"
    assert "wrote hellohellohello" in manager.run_logs(final.id)
    states = [t.state for t in manager.get(final.id).history]
    assert states[0] is JobState.PENDING and states[-1] is JobState.SUCCEEDED
    assert JobState.QUEUED in states
    assert final.spec["parameters"] == {"repeat": 3}
    assert _digest(nb) == before, "the user's notebook must never be modified"


def test_failing_notebook_ends_failed_with_exit_code_and_last_lines(
    manager: JobManager, tmp_path: Path
) -> None:
    nb = make_notebook(
        tmp_path / "fail.ipynb",
        ["print('step one done')", "raise ValueError('bad column: price')"],
    )
    final = _wait(manager, manager.submit(nb, PromotionOptions(backend="local")).id)
    assert final.state is JobState.FAILED
    assert final.exit_code == 1
    assert "exit" in final.reason and "ValueError: bad column: price" in final.reason


def test_cancel_running_job_ends_cancelled(manager: JobManager, tmp_path: Path) -> None:
    nb = make_notebook(
        tmp_path / "slow.ipynb", ["import time\nprint('started', flush=True)\ntime.sleep(600)"]
    )
    record = manager.submit(nb, PromotionOptions(backend="local"))
    end = time.monotonic() + 120
    while "started" not in manager.run_logs(record.id) and time.monotonic() < end:
        time.sleep(0.3)
    cancelled = manager.cancel(record.id)
    assert cancelled.state in (JobState.CANCELLING, JobState.CANCELLED)
    final = _wait(manager, record.id)
    assert final.state is JobState.CANCELLED
    assert "cancel" in final.reason


def test_rerun_runs_the_same_packaged_job_again(manager: JobManager, tmp_path: Path) -> None:
    nb = make_notebook(tmp_path / "again.ipynb", ["print('run')"])
    first = _wait(manager, manager.submit(nb, PromotionOptions(backend="local")).id)
    nb.write_text(nb.read_text().replace("print('run')", "print('edited')"))
    second = _wait(manager, manager.rerun(first.id).id)
    assert second.id != first.id and second.state is JobState.SUCCEEDED
    assert second.content_hash == first.content_hash
    assert second.spec["rerun_of"] == first.id
    assert "run" in manager.run_logs(second.id) and "edited" not in manager.run_logs(second.id)


def test_failure_after_the_record_exists_leaves_a_failed_record(
    manager: JobManager, tmp_path: Path
) -> None:
    nb = make_notebook(tmp_path / "inc.ipynb", ["print(1)"])
    record = manager.submit(nb, PromotionOptions(backend="local", include=["missing-data.csv"]))
    assert record.state is JobState.FAILED
    assert "missing-data.csv" in record.reason
    assert manager.get(record.id).history[-1].state is JobState.FAILED


def test_job_of_a_dead_submitting_process_is_marked_failed(
    manager: JobManager, tmp_path: Path
) -> None:
    nb = make_notebook(tmp_path / "orphan.ipynb", ["print(1)"])
    promotion = manager.preview(nb, PromotionOptions(backend="local"))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = manager._create(promotion, PromotionOptions(backend="local"), manager.backend("local"))
    spec = {**record.spec, "owner": {**record.spec["owner"], "pid": dead.pid}}
    manager.store.update(record.id, spec=spec)
    refreshed = manager.refresh(record.id)
    assert refreshed.state is JobState.FAILED
    assert "interrupted" in refreshed.reason and str(dead.pid) in refreshed.reason


@pytest.mark.parametrize(
    ("cells", "error", "words"),
    [
        (["x = 1", "def broken(:\n    pass"], FindingsError, "syntax"),
        (["name = input('who? ')"], FindingsError, "input"),
    ],
)
def test_error_findings_refuse_submission_without_a_record(
    manager: JobManager, tmp_path: Path, cells: list[str], error: type, words: str
) -> None:
    nb = make_notebook(tmp_path / "bad.ipynb", cells)
    before = _digest(nb)
    with pytest.raises(error) as info:
        manager.submit(nb, PromotionOptions(backend="local"))
    assert words in str(info.value).lower() and "--force" in str(info.value)
    assert manager.store.count() == 0
    assert _digest(nb) == before


def test_bad_input_errors_name_the_fix_and_create_no_record(
    manager: JobManager, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.ipynb"
    broken.write_text('{"cells": [ {"cell_type": "code", ')
    with pytest.raises(NotebookError, match="not a valid notebook"):
        manager.submit(broken, PromotionOptions(backend="local"))
    assert broken.read_text() == '{"cells": [ {"cell_type": "code", '

    nb = make_notebook(tmp_path / "ok.ipynb", [("alpha = 0.5", ["parameters"]), "print(alpha)"])
    with pytest.raises(BackendError, match=r"Unknown backend 'nowhere'.*local"):
        manager.submit(nb, PromotionOptions(backend="nowhere"))
    with pytest.raises(ParameterError, match="beta") as info:
        manager.submit(nb, PromotionOptions(backend="local", parameters={"beta": "1"}))
    assert "alpha" in str(info.value)
    with pytest.raises(ParameterError, match="alpha"):
        manager.submit(nb, PromotionOptions(backend="local", parameters={"alpha": "lots"}))

    other = make_notebook(tmp_path / "r.ipynb", ["print(1)"], kernel="no-such-kernel")
    with pytest.raises(KernelNotFoundError, match="no-such-kernel") as info:
        manager.submit(other, PromotionOptions(backend="local"))
    assert "ipykernel install" in str(info.value) or "--kernel" in str(info.value)
    assert manager.store.count() == 0


def test_jobs_submitted_by_another_process_share_the_store(
    manager: JobManager, tmp_path: Path
) -> None:
    nb = make_notebook(tmp_path / "shared.ipynb", ["print('from the cli')"])
    out = subprocess.run(
        [sys.executable, "-m", "jupyter_cloudpromote", "submit", str(nb), "--json"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        check=True,
    )
    job_id = json.loads(out.stdout)["id"]
    assert _wait(manager, job_id).state is JobState.SUCCEEDED
