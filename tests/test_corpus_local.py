"""Real public notebooks (../shared/corpus) promoted and run on the real `local` backend."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from jupyter_cloudpromote.config import CloudPromote
from jupyter_cloudpromote.jobs import JobManager
from jupyter_cloudpromote.models import JobState, PromotionOptions

from .conftest import CORPUS_DIR, REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.corpus]


def _runnable() -> list[str]:
    labels_path = CORPUS_DIR / "labels.json"
    if not labels_path.is_file():
        return ["<corpus missing>"]
    labels = json.loads(labels_path.read_text())
    return sorted(name for name, label in labels.items() if label["runnable_offline"])


@pytest.fixture(scope="module")
def manager(tmp_path_factory: pytest.TempPathFactory) -> JobManager:
    data = tmp_path_factory.mktemp("cloudpromote-data")
    return JobManager(CloudPromote(data_dir=str(data)))


def _wait(manager: JobManager, job_id: str, deadline: float = 900) -> object:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        record = manager.refresh(job_id)
        if record.state.terminal:
            return record
        time.sleep(1)
    raise AssertionError(f"{job_id} still {manager.get(job_id).state} after {deadline}s")


@pytest.mark.parametrize("name", _runnable())
def test_runnable_corpus_notebook_succeeds_on_local(
    manager: JobManager, corpus_dir: Path, name: str
) -> None:
    path = corpus_dir / "notebooks" / name
    before = path.read_bytes()
    record = manager.submit(path, PromotionOptions(backend="local"))
    final = _wait(manager, record.id)
    assert final.state is JobState.SUCCEEDED, (
        f"{name}: {final.reason}\n{manager.build_logs(final.id)[-3000:]}"
    )
    assert path.read_bytes() == before


def test_example_notebook_succeeds_on_local(manager: JobManager) -> None:
    """What `make demo` does, minus the terminal."""
    path = REPO_ROOT / "examples" / "hello_report.ipynb"
    record = manager.submit(
        path, PromotionOptions(backend="local", parameters={"n_samples": "300"})
    )
    final = _wait(manager, record.id)
    assert final.state is JobState.SUCCEEDED, final.reason
    names = {o["path"] for o in manager.outputs(final.id)}
    assert {"scatter.png", "summary.csv"} <= names
    assert "300 samples" in manager.run_logs(final.id)
