"""Server extension benchmark: GET jobs latency over a big store, and the watcher's cost.

    python bench/server_bench.py [--jobs 10000] [--requests 200]

1. GET /cloudpromote/jobs, 50 per page, against a real `jupyter server` subprocess whose
   store holds --jobs jobs (first page, a middle page, the last page, a status filter).
2. The watcher's cost per tick (JobWatcher.tick_sync: refresh the due active jobs with the
   real local backend, then read new store transitions) with 1,000 finished and 10 active
   jobs, and again with 10x the finished jobs to show the cost does not follow them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from jupyter_cloudpromote.backends.local import process_start_time, write_json_atomic
from jupyter_cloudpromote.config import CloudPromote
from jupyter_cloudpromote.jobs import JobManager
from jupyter_cloudpromote.models import JobRecord, JobState
from jupyter_cloudpromote.server.watcher import EventHub, JobWatcher
from jupyter_cloudpromote.store import JobStore

FINISHED = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


def fill_store(store: JobStore, jobs_dir: Path, finished: int, active: int = 0) -> list[str]:
    """Insert finished jobs, plus active local jobs whose runner is this (live) process."""
    now = time.time()
    for index in range(finished):
        job_id = f"f{index:011x}"
        store.create(
            JobRecord(
                id=job_id,
                notebook=f"/data/notebooks/nb{index % 40}.ipynb",
                backend="local",
                backend_kind="local",
                state=FINISHED[index % 3],
                created=now - finished + index,
                updated=now - finished + index,
                job_dir=str(jobs_dir / job_id),
                backend_id=f"local:{index}",
                spec={"parameters": {}, "owner": {"pid": 1, "host": "bench"}},
            )
        )
    active_ids = []
    pid = os.getpid()
    for index in range(active):
        job_id = f"a{index:011x}"
        job_dir = jobs_dir / job_id
        (job_dir / "local").mkdir(parents=True)
        (job_dir / "logs").mkdir()
        write_json_atomic(
            job_dir / "local" / "state.json",
            {"supervisor_pid": pid, "supervisor_start_time": process_start_time(pid)},
        )
        write_json_atomic(job_dir / "local" / "phase.json", {"phase": "running"})
        store.create(
            JobRecord(
                id=job_id,
                notebook="/data/notebooks/live.ipynb",
                backend="local",
                backend_kind="local",
                state=JobState.RUNNING,
                created=now + index,
                updated=now + index,
                job_dir=str(job_dir),
                backend_id=f"local:{pid}",
                spec={"owner": {"pid": pid, "host": "bench"}},
            )
        )
        active_ids.append(job_id)
    return active_ids


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bench_get_jobs(jobs: int, requests: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        for sub in ("config", "data", "runtime", "root"):
            (home / sub).mkdir()
        settings = CloudPromote(data_dir=str(home / "data" / "cloudpromote"))
        store = JobStore(settings.store_path)
        started = time.perf_counter()
        fill_store(store, settings.jobs_dir, jobs)
        fill_seconds = time.perf_counter() - started
        store.close()
        (home / "config" / "jupyter_server_config.json").write_text(
            json.dumps({"ServerApp": {"jpserver_extensions": {"jupyter_cloudpromote": True}}})
        )
        port, token = free_port(), secrets.token_hex(16)
        env = {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(home / "config"),
            "JUPYTER_CONFIG_PATH": str(home / "config"),
            "JUPYTER_DATA_DIR": str(home / "data"),
            "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        }
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyter_server",
                "--no-browser",
                "--allow-root",
                f"--port={port}",
                "--port-retries=0",
                "--ip=127.0.0.1",
                f"--ServerApp.root_dir={home / 'root'}",
                f"--IdentityProvider.token={token}",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}/cloudpromote/jobs"

        def get(query: str) -> tuple[float, dict[str, Any]]:
            request = urllib.request.Request(
                f"{base}?{query}", headers={"Authorization": f"token {token}"}
            )
            began = time.perf_counter()
            with urllib.request.urlopen(request, timeout=30) as response:
                body = json.loads(response.read())
            return time.perf_counter() - began, body

        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    get("limit=1")
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            results: dict[str, Any] = {"jobs": jobs, "fill_seconds": round(fill_seconds, 2)}
            queries = {
                "first page": "limit=50",
                "middle page": f"limit=50&offset={jobs // 2}",
                "last page": f"limit=50&offset={jobs - 50}",
                "status=failed": "limit=50&status=failed",
                "oldest first": "limit=50&sort=created-asc",
            }
            for name, query in queries.items():
                get(query)  # warm
                times = []
                for _ in range(requests):
                    seconds, body = get(query)
                    times.append(seconds * 1000)
                assert len(body["jobs"]) == 50 and body["total"] > 0
                times.sort()
                results[name] = {
                    "median_ms": round(statistics.median(times), 2),
                    "p95_ms": round(times[int(len(times) * 0.95) - 1], 2),
                }
            return results
        finally:
            server.terminate()
            server.wait(20)


def bench_watcher(finished: int, active: int, ticks: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = CloudPromote(data_dir=tmp)
        manager = JobManager(settings)
        active_ids = fill_store(manager.store, settings.jobs_dir, finished, active)
        executor = ThreadPoolExecutor(1)
        watcher = JobWatcher(
            manager,
            EventHub(),
            executor,
            lambda record: record.to_dict(with_history=False),
            interval=0.05,
            max_interval=0.05,
            log=logging.getLogger("bench"),
        )
        from jupyter_cloudpromote.server.watcher import TransitionCursor

        watcher._cursor = TransitionCursor(str(manager.store.path))
        for job_id in active_ids:
            watcher.follow(job_id)  # followed jobs skip the backoff: each is asked every tick
        watcher.tick_sync()  # warm
        times = []
        refreshed = 0
        for _ in range(ticks):
            result = watcher.tick_sync()
            times.append(result.seconds * 1000)
            refreshed = result.refreshed
        watcher._cursor.close()
        executor.shutdown()
        times.sort()
        assert refreshed == active
        return {
            "finished": finished,
            "active": active,
            "refreshed_per_tick": refreshed,
            "median_ms_per_tick": round(statistics.median(times), 3),
            "p95_ms_per_tick": round(times[int(len(times) * 0.95) - 1], 3),
            "median_ms_per_active_job": round(statistics.median(times) / max(active, 1), 3),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--ticks", type=int, default=100)
    args = parser.parse_args()
    report = {
        "get_jobs": bench_get_jobs(args.jobs, args.requests),
        "watcher": [
            bench_watcher(1_000, 10, args.ticks),
            bench_watcher(10_000, 10, args.ticks),
            bench_watcher(1_000, 0, args.ticks),
        ],
    }
    print(json.dumps(report, indent=2))
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    (results / "server_bench.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
