"""The job store: one SQLite file shared by the CLI, the server extension and kernels.

Several processes write it at once (a CLI `--wait`, the server's watcher, a kernel running
%cloud_submit), so every write is a short transaction in WAL mode with a generous busy
timeout, and state changes are compare-and-set: a job that reached a terminal state never
leaves it, whoever writes second.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import JobNotFoundError
from .models import JobRecord, JobState, Transition

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    notebook TEXT NOT NULL,
    backend TEXT NOT NULL,
    backend_kind TEXT NOT NULL,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    job_dir TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    backend_id TEXT,
    exit_code INTEGER,
    image TEXT,
    content_hash TEXT,
    spec TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created);
CREATE TABLE IF NOT EXISTS transitions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    time REAL NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS transitions_job ON transitions(job_id, seq);
"""

# Forward order of the non-terminal states: a refresh never moves a job backwards.
_ORDER = {
    JobState.PENDING: 0,
    JobState.BUILDING: 1,
    JobState.QUEUED: 2,
    JobState.RUNNING: 3,
    JobState.CANCELLING: 4,
}
_UPDATABLE = ("backend_id", "exit_code", "image", "content_hash", "spec", "job_dir")


class JobStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(
            str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False
        )
        self._conn.row_factory = sqlite3.Row
        with self._lock:
            self._conn.execute("PRAGMA busy_timeout = 30000")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._conn.executescript(_SCHEMA)
            self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """An IMMEDIATE transaction: takes the write lock up front, so read-then-write is atomic."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")

    def create(self, record: JobRecord, reason: str = "created") -> JobRecord:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO jobs (id, notebook, backend, backend_kind, state, created, updated,"
                " job_dir, reason, backend_id, exit_code, image, content_hash, spec)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    record.id,
                    record.notebook,
                    record.backend,
                    record.backend_kind,
                    record.state.value,
                    record.created,
                    record.updated,
                    record.job_dir,
                    record.reason,
                    record.backend_id,
                    record.exit_code,
                    record.image,
                    record.content_hash,
                    json.dumps(record.spec, sort_keys=True),
                ),
            )
            conn.execute(
                "INSERT INTO transitions (job_id, time, state, reason) VALUES (?,?,?,?)",
                (record.id, record.created, record.state.value, reason),
            )
        return self.get(record.id)

    def transition(
        self, job_id: str, state: JobState, reason: str = "", **fields: Any
    ) -> tuple[JobRecord, bool]:
        """Move a job to `state`, recording time and reason; returns (record, changed).

        Refused (changed=False, nothing written) when the job is already terminal or the
        move would go backwards. Moving to the same state only updates the extra fields.
        """
        now = time.time()
        with self._write() as conn:
            row = conn.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFoundError(f"No job {job_id!r}.", "See `jupyter cloudpromote list`.")
            current = JobState(row["state"])
            allowed = not current.terminal and (state.terminal or _ORDER[state] >= _ORDER[current])
            if allowed:
                sets: dict[str, Any] = {"state": state.value, "updated": now}
                if state != current or reason:
                    sets["reason"] = reason
                sets.update(_settable(fields))
                _update_row(conn, job_id, sets)
                if state != current:
                    conn.execute(
                        "INSERT INTO transitions (job_id, time, state, reason) VALUES (?,?,?,?)",
                        (job_id, now, state.value, reason),
                    )
        return self.get(job_id), allowed and state != current

    def update(self, job_id: str, **fields: Any) -> JobRecord:
        """Set non-state fields (backend id, image, ...) without a transition."""
        sets = _settable(fields)
        if sets:
            with self._write() as conn:
                _update_row(conn, job_id, sets)
        return self.get(job_id)

    def get(self, job_id: str) -> JobRecord:
        with self._lock:
            row = self._conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFoundError(
                    f"No job {job_id!r}.", "See `jupyter cloudpromote list` for job ids."
                )
            history = self._conn.execute(
                "SELECT time, state, reason FROM transitions WHERE job_id = ? ORDER BY seq",
                (job_id,),
            ).fetchall()
        record = _record(row)
        record.history = [Transition(h["time"], JobState(h["state"]), h["reason"]) for h in history]
        return record

    def find(self, prefix: str) -> JobRecord:
        """A job by id or unique id prefix (what users type)."""
        with self._lock:  # the exact id first: a primary-key lookup, whatever the store's size
            exact = self._conn.execute("SELECT 1 FROM jobs WHERE id = ?", (prefix,)).fetchone()
        if exact is not None:
            return self.get(prefix)
        with self._lock:
            rows = self._conn.execute(
                "SELECT id FROM jobs WHERE id LIKE ? ESCAPE '\\' LIMIT 2",
                (prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%",),
            ).fetchall()
        if len(rows) == 1:
            return self.get(rows[0]["id"])
        if not rows:
            raise JobNotFoundError(
                f"No job {prefix!r}.", "See `jupyter cloudpromote list` for job ids."
            )
        raise JobNotFoundError(f"{prefix!r} matches several jobs.", "Give more of the id.")

    def list(
        self,
        *,
        states: builtins.list[JobState] | None = None,
        backend: str | None = None,
        notebook: str | None = None,
        limit: int = 50,
        offset: int = 0,
        newest_first: bool = True,
    ) -> builtins.list[JobRecord]:
        where, params = self._filters(states, backend, notebook)
        order = "DESC" if newest_first else "ASC"
        with self._lock:
            rows = self._conn.execute(
                f"SELECT * FROM jobs {where} ORDER BY created {order}, id {order}"  # noqa: S608
                " LIMIT ? OFFSET ?",
                (*params, limit, offset),
            ).fetchall()
        return [_record(row) for row in rows]

    def count(
        self,
        *,
        states: builtins.list[JobState] | None = None,
        backend: str | None = None,
        notebook: str | None = None,
    ) -> int:
        where, params = self._filters(states, backend, notebook)
        with self._lock:
            row = self._conn.execute(f"SELECT COUNT(*) FROM jobs {where}", params).fetchone()  # noqa: S608
        return int(row[0])

    def active(self) -> builtins.list[JobRecord]:
        """Non-terminal jobs: what a watcher refreshes (indexed, so cost follows active jobs)."""
        live = [s for s in JobState if not s.terminal]
        return self.list(states=live, limit=10_000, newest_first=False)

    def delete(self, job_id: str) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM transitions WHERE job_id = ?", (job_id,))
            conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    @staticmethod
    def _filters(
        states: builtins.list[JobState] | None, backend: str | None, notebook: str | None
    ) -> tuple[str, builtins.list[Any]]:
        clauses: list[str] = []
        params: builtins.list[Any] = []
        if states:
            clauses.append(f"state IN ({', '.join('?' for _ in states)})")
            params.extend(s.value for s in states)
        if backend:
            clauses.append("backend = ?")
            params.append(backend)
        if notebook:
            clauses.append("notebook = ?")
            params.append(notebook)
        return ("WHERE " + " AND ".join(clauses) if clauses else ""), params


def _settable(fields: dict[str, Any]) -> dict[str, Any]:
    sets = {k: v for k, v in fields.items() if k in _UPDATABLE}
    if "spec" in sets:
        sets["spec"] = json.dumps(sets["spec"], sort_keys=True)
    return sets


def _update_row(conn: sqlite3.Connection, job_id: str, sets: dict[str, Any]) -> None:
    # Column names come from this module (state, updated, reason, _UPDATABLE), never users.
    assignments = ", ".join(f"{name} = ?" for name in sets)
    conn.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*sets.values(), job_id))  # noqa: S608


def _record(row: sqlite3.Row) -> JobRecord:
    return JobRecord(
        id=row["id"],
        notebook=row["notebook"],
        backend=row["backend"],
        backend_kind=row["backend_kind"],
        state=JobState(row["state"]),
        created=row["created"],
        updated=row["updated"],
        job_dir=row["job_dir"],
        reason=row["reason"],
        backend_id=row["backend_id"],
        exit_code=row["exit_code"],
        image=row["image"],
        content_hash=row["content_hash"],
        spec=json.loads(row["spec"] or "{}"),
    )
