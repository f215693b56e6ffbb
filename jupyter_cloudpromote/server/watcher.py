"""The server's one background watcher, and the hub that pushes job events to browsers.

One asyncio task on the server's loop. Each tick runs one blocking pass in an executor:

1. refresh the non-terminal jobs that are due (store.active() is an indexed query, so the
   cost follows the number of active jobs, not of all jobs); a job whose state did not
   change is asked again less and less often (backoff), one somebody is following (a log
   stream is open) is asked at the base interval;
2. read the store's transitions table from where the last tick stopped. Every job creation
   and every state change, by any process sharing the store (this server, the CLI, a
   kernel's %cloud_submit), appends a row there, and `seq` is its primary key, so this is a
   range read of what is new.

What it finds is published as `job-created` / `job-updated` events on the EventHub, which
the events stream hands to every connected browser (with ids, so a reconnecting
EventSource resumes where it stopped).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, cast

from ..errors import JobNotFoundError
from ..jobs import JobManager
from ..models import JobRecord

JobView = Callable[[JobRecord], dict[str, Any]]
EVENT_TYPES = ("job-created", "job-updated", "job-deleted", "resync")
_CURSOR_BATCH = 2000


@dataclass(frozen=True)
class Event:
    id: int
    type: str
    job: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "job": self.job}


class EventHub:
    """Fan-out of job events to subscribers (one asyncio.Queue each), on the loop thread."""

    def __init__(self, buffer: int = 1000, queue_size: int = 1000) -> None:
        self._next_id = 1
        self._recent: deque[Event] = deque(maxlen=buffer)
        self._queue_size = queue_size
        self._subscribers: set[asyncio.Queue[Event | None]] = set()
        self.closed = False

    @property
    def last_id(self) -> int:
        return self._next_id - 1

    def publish(self, kind: str, job: dict[str, Any]) -> Event:
        event = Event(self._next_id, kind, job)
        self._next_id += 1
        self._recent.append(event)
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                # A reader this far behind reconnects and resumes from its last event id.
                self._subscribers.discard(queue)
                with contextlib.suppress(asyncio.QueueFull):
                    queue.get_nowait()
                    queue.put_nowait(None)
        return event

    def subscribe(self, last_event_id: int | None = None) -> asyncio.Queue[Event | None]:
        queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=self._queue_size)
        if self.closed:
            queue.put_nowait(None)
            return queue
        if last_event_id is not None and last_event_id < self.last_id:
            oldest = self._recent[0].id if self._recent else self._next_id
            if last_event_id + 1 < oldest or last_event_id > self.last_id:
                # Missed events are gone (or the id is from an earlier server): reload.
                queue.put_nowait(Event(self.last_id, "resync", {}))
            else:
                for event in self._recent:
                    if event.id > last_event_id:
                        queue.put_nowait(event)
        elif last_event_id is not None and last_event_id > self.last_id:
            queue.put_nowait(Event(self.last_id, "resync", {}))
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Event | None]) -> None:
        self._subscribers.discard(queue)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def close(self) -> None:
        self.closed = True
        for queue in list(self._subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)
        self._subscribers.clear()


class TransitionCursor:
    """Reads what is new in the store's transitions table, with its own connection."""

    def __init__(self, store_path: str) -> None:
        self._conn = sqlite3.connect(store_path, timeout=30.0, check_same_thread=False)
        self._conn.execute("PRAGMA busy_timeout = 30000")
        self._lock = threading.Lock()
        self.position = self._max_seq()

    def _max_seq(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT COALESCE(MAX(seq), 0) FROM transitions").fetchone()
        return int(row[0])

    def read(self, batch: int = _CURSOR_BATCH) -> tuple[dict[str, bool], bool]:
        """New {job_id: created?} since the last read, in order; and whether more remain."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT t.seq, t.job_id,"
                " (SELECT MIN(f.seq) FROM transitions f WHERE f.job_id = t.job_id)"
                " FROM transitions t WHERE t.seq > ? ORDER BY t.seq LIMIT ?",
                (self.position, batch),
            ).fetchall()
        changed: dict[str, bool] = {}
        for seq, job_id, first in rows:
            changed[job_id] = changed.get(job_id, False) or seq == first
            self.position = max(self.position, int(seq))
        return changed, len(rows) == batch

    def close(self) -> None:
        with self._lock:
            self._conn.close()


@dataclass
class _Due:
    at: float
    interval: float
    state: str


@dataclass
class TickResult:
    refreshed: int = 0
    active: int = 0
    events: list[tuple[str, JobRecord]] = field(default_factory=list)
    more: bool = False
    seconds: float = 0.0


class JobWatcher:
    """Refreshes active jobs with backoff and turns store changes into events."""

    def __init__(
        self,
        manager: JobManager,
        hub: EventHub,
        executor: Executor,
        view: JobView,
        *,
        interval: float = 2.0,
        max_interval: float = 15.0,
        log: logging.Logger | None = None,
    ) -> None:
        self.manager = manager
        self.hub = hub
        self.executor = executor
        self.view = view
        self.interval = max(0.05, interval)
        self.max_interval = max(self.interval, max_interval)
        self.log = log or logging.getLogger(__name__)
        self._due: dict[str, _Due] = {}
        self._followed: dict[str, int] = {}
        self._cursor: TransitionCursor | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._tick_lock = threading.Lock()
        self.ticks = 0

    # --- control --------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._cursor = await loop.run_in_executor(
            self.executor, TransitionCursor, str(self.manager.store.path)
        )
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._cursor is not None:
            self._cursor.close()

    def poke(self) -> None:
        """Run a tick now (a job was just created, cancelled or is being followed)."""
        self._wake.set()

    def follow(self, job_id: str) -> None:
        self._followed[job_id] = self._followed.get(job_id, 0) + 1
        due = self._due.get(job_id)
        if due is not None:
            due.at, due.interval = 0.0, self.interval
        self.poke()

    def unfollow(self, job_id: str) -> None:
        count = self._followed.get(job_id, 0) - 1
        if count > 0:
            self._followed[job_id] = count
        else:
            self._followed.pop(job_id, None)

    # --- the loop ---------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            self._wake.clear()
            more = False
            try:
                result = await loop.run_in_executor(self.executor, self.tick_sync)
                self._publish(result)
                more = result.more
            except asyncio.CancelledError:
                raise
            except Exception:  # a store or backend hiccup must not end the watching
                self.log.exception("cloudpromote watcher: tick failed; retrying")
            if more:
                continue
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval)

    def _publish(self, result: TickResult) -> None:
        for kind, record in result.events:
            self.hub.publish(kind, self.view(record))

    def tick_sync(self) -> TickResult:
        """One pass: refresh the due active jobs, then collect what changed. Blocking."""
        with self._tick_lock:
            started = time.perf_counter()
            result = TickResult()
            self._refresh_due(result)
            if self._cursor is not None:
                changed, result.more = self._cursor.read()
                for job_id, created in changed.items():
                    try:
                        record = self.manager.store.get(job_id)
                    except JobNotFoundError:
                        continue  # deleted since; DELETE published its own event
                    result.events.append(("job-created" if created else "job-updated", record))
            self.ticks += 1
            result.seconds = time.perf_counter() - started
            return result

    def _refresh_due(self, result: TickResult) -> None:
        now = time.monotonic()
        # cast: JobStore's method named `list` shadows the builtin in its annotations.
        active = cast("list[JobRecord]", self.manager.store.active())
        result.active = len(active)
        seen = set()
        for record in active:
            seen.add(record.id)
            due = self._due.get(record.id)
            if due is None:
                due = self._due[record.id] = _Due(0.0, self.interval, record.state.value)
            if due.at > now and record.id not in self._followed:
                continue
            try:
                updated = self.manager.refresh(record.id)
            except JobNotFoundError:
                continue
            except Exception as exc:  # an SDK error: keep the job, ask again later
                self.log.warning("cloudpromote watcher: refreshing %s failed: %s", record.id, exc)
                updated = record
            result.refreshed += 1
            if updated.state.value != due.state or record.id in self._followed:
                due.interval = self.interval
            else:
                due.interval = min(due.interval * 1.5, self.max_interval)
            due.state = updated.state.value
            due.at = now + due.interval
        for gone in set(self._due) - seen:
            del self._due[gone]
