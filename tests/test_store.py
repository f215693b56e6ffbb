"""The SQLite job store: transitions, stickiness of terminal states, many writers at once."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from jupyter_cloudpromote.errors import JobNotFoundError
from jupyter_cloudpromote.models import JobRecord, JobState
from jupyter_cloudpromote.store import JobStore


def _record(job_id: str, created: float | None = None, backend: str = "local") -> JobRecord:
    now = created if created is not None else time.time()
    return JobRecord(
        id=job_id,
        notebook=f"/nb/{job_id}.ipynb",
        backend=backend,
        backend_kind=backend,
        state=JobState.PENDING,
        created=now,
        updated=now,
        job_dir=f"/jobs/{job_id}",
        spec={"parameters": {"n": 1}},
    )


def test_create_and_get_round_trips_every_field(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite")
    created = store.create(_record("abc123"), reason="submitted")
    assert created.state is JobState.PENDING
    assert created.spec == {"parameters": {"n": 1}}
    assert [(t.state, t.reason) for t in created.history] == [(JobState.PENDING, "submitted")]


def test_transitions_are_recorded_with_reason_and_fields(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite")
    store.create(_record("j1"))
    store.transition("j1", JobState.BUILDING, "building image")
    store.transition("j1", JobState.QUEUED, "submitted", backend_id="local:1")
    record, changed = store.transition("j1", JobState.FAILED, "exited with code 3", exit_code=3)
    assert changed
    assert record.state is JobState.FAILED
    assert record.reason == "exited with code 3"
    assert record.exit_code == 3 and record.backend_id == "local:1"
    assert [t.state for t in record.history] == [
        JobState.PENDING,
        JobState.BUILDING,
        JobState.QUEUED,
        JobState.FAILED,
    ]
    assert all(a.time <= b.time for a, b in zip(record.history, record.history[1:]))


def test_terminal_state_is_never_left(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite")
    store.create(_record("j1"))
    store.transition("j1", JobState.CANCELLED, "cancelled by user")
    record, changed = store.transition("j1", JobState.SUCCEEDED, "late success")
    assert not changed
    assert record.state is JobState.CANCELLED and record.reason == "cancelled by user"


def test_refresh_never_moves_a_job_backwards(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite")
    store.create(_record("j1"))
    store.transition("j1", JobState.RUNNING, "running")
    record, changed = store.transition("j1", JobState.QUEUED, "stale report")
    assert not changed and record.state is JobState.RUNNING


def test_find_by_unique_prefix(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite")
    store.create(_record("abc111"))
    store.create(_record("abd222"))
    assert store.find("abc").id == "abc111"
    with pytest.raises(JobNotFoundError, match="several"):
        store.find("ab")
    with pytest.raises(JobNotFoundError, match="list"):
        store.find("zzz")
    # LIKE wildcards typed by a user are literal characters, not patterns.
    with pytest.raises(JobNotFoundError):
        store.find("%")


def test_list_filters_pages_and_sorts_newest_first(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite")
    for i in range(25):
        store.create(
            _record(f"job{i:02d}", created=1000.0 + i, backend="docker" if i % 5 == 0 else "local")
        )
    store.transition("job03", JobState.FAILED, "boom")
    first = store.list(limit=10)
    assert [r.id for r in first] == [f"job{i:02d}" for i in range(24, 14, -1)]
    assert [r.id for r in store.list(limit=10, offset=20)] == [
        f"job{i:02d}" for i in range(4, -1, -1)
    ]
    assert [r.id for r in store.list(backend="docker")] == [
        "job20",
        "job15",
        "job10",
        "job05",
        "job00",
    ]
    assert [r.id for r in store.list(states=[JobState.FAILED])] == ["job03"]
    assert store.count() == 25 and store.count(states=[JobState.FAILED]) == 1
    assert len(store.active()) == 24


def test_delete_removes_job_and_history(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite")
    store.create(_record("j1"))
    store.delete("j1")
    with pytest.raises(JobNotFoundError):
        store.get("j1")


def _hammer(path: str, worker: int, count: int) -> None:
    store = JobStore(path)
    for i in range(count):
        job_id = f"w{worker}-{i}"
        store.create(_record(job_id))
        store.transition(job_id, JobState.RUNNING, "running")
        store.transition(job_id, JobState.SUCCEEDED, "done", exit_code=0)
    store.close()


def test_many_processes_write_at_once_without_losing_anything(tmp_path: Path) -> None:
    path = str(tmp_path / "jobs.sqlite")
    JobStore(path).close()
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_hammer, args=(path, w, 40)) for w in range(4)]
    for proc in workers:
        proc.start()
    for proc in workers:
        proc.join(120)
        assert proc.exitcode == 0
    store = JobStore(path)
    assert store.count() == 160
    assert store.count(states=[JobState.SUCCEEDED]) == 160
    assert all(len(store.get(f"w{w}-5").history) == 3 for w in range(4))
