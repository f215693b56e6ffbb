"""The REST API against a real Jupyter server (pytest-jupyter) and the real backends.

pytest-jupyter's fixtures are imported into this module only (not registered as a global
plugin), so its autouse fixtures do not touch the rest of the suite; tests here are plain
functions that drive the server's own loop with `run(...)`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import yaml
from pytest_jupyter.jupyter_server import *  # noqa: F403
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse
from traitlets.config import Config

from jupyter_cloudpromote.models import JobRecord, JobState
from jupyter_cloudpromote.server.app import CloudPromoteService
from jupyter_cloudpromote.server.handlers import ROUTES, handler_methods

from .conftest import make_notebook

OPENAPI = Path(__file__).resolve().parents[1] / "jupyter_cloudpromote" / "server" / "openapi.yaml"
Run = Callable[[Coroutine[Any, Any, Any]], Any]


# --- fixtures and helpers shared by the server test modules ------------------------------------


@pytest.fixture(scope="session")
def shared_venv_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One virtualenv cache for all server tests: a job environment is built once."""
    return tmp_path_factory.mktemp("venv-cache")


def server_config(venv_cache: Path, **cloudpromote: Any) -> Config:
    return Config(
        {
            "ServerApp": {"jpserver_extensions": {"jupyter_cloudpromote": True}},
            "CloudPromote": {
                "profiles": {"local": {"kind": "local", "venv_cache_dir": str(venv_cache)}},
                "watch_interval": 0.3,
                **cloudpromote,
            },
        }
    )


@pytest.fixture()
def jp_server_config(shared_venv_cache: Path) -> Config:
    return server_config(shared_venv_cache)


@pytest.fixture()
def run(jp_asyncio_loop: asyncio.AbstractEventLoop) -> Run:
    """Run a coroutine on the server's loop (the server answers while it runs)."""
    return jp_asyncio_loop.run_until_complete


@pytest.fixture()
def service(jp_serverapp: Any) -> CloudPromoteService:
    return jp_serverapp.web_app.settings["cloudpromote_service"]  # type: ignore[no-any-return]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def call(
    jp_fetch: Any, method: str, *parts: str, body: Any = None, params: dict[str, Any] | None = None
) -> tuple[int, Any]:
    """(status, parsed JSON or raw bytes) without raising on 4xx/5xx."""
    kwargs: dict[str, Any] = {"method": method, "raise_error": False}
    if body is not None:
        kwargs["body"] = body if isinstance(body, (str, bytes)) else json.dumps(body)
    elif method in ("POST", "PUT"):
        kwargs["body"] = b""
        kwargs["allow_nonstandard_methods"] = True
    response: HTTPResponse = await jp_fetch("cloudpromote", *parts, params=params, **kwargs)
    content_type = response.headers.get("Content-Type", "")
    if content_type.startswith("application/json") and response.body:
        return response.code, json.loads(response.body)
    return response.code, response.body


async def wait_status(
    jp_fetch: Any, job_id: str, done: Callable[[dict[str, Any]], bool], timeout: float = 300
) -> dict[str, Any]:
    end = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < end:
        code, job = await call(jp_fetch, "GET", "jobs", job_id)
        assert code == 200, job
        if done(job):
            return job
        await asyncio.sleep(0.3)
    raise AssertionError(f"job {job_id} never reached the expected state: {job}")


def terminal(job: dict[str, Any]) -> bool:
    return JobState(job["status"]).terminal


class SSEReader:
    """A streaming client for text/event-stream that parses events as they arrive."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url = url
        self.headers = headers
        self.events: list[tuple[str, Any]] = []
        self.on_event: Callable[[str, Any], None] | None = None
        self._buffer = ""
        self.connected = False
        self.response: asyncio.Future[Any] | None = None

    async def wait_connected(self, timeout: float = 120) -> None:
        """Until the stream is open, so no event published after this can be missed."""
        end = time.monotonic() + timeout
        while not self.connected:
            if time.monotonic() > end or (self.response is not None and self.response.done()):
                raise AssertionError(f"the stream {self.url} never opened")
            await asyncio.sleep(0.05)

    def _chunk(self, data: bytes) -> None:
        self.connected = True  # the server greets every stream with a comment line
        self._buffer += data.decode("utf-8")
        while "\n\n" in self._buffer:
            block, self._buffer = self._buffer.split("\n\n", 1)
            kind, payload = "message", None
            for line in block.splitlines():
                if line.startswith("event: "):
                    kind = line[len("event: ") :]
                elif line.startswith("data: "):
                    payload = json.loads(line[len("data: ") :])
            if payload is not None:
                self.events.append((kind, payload))
                if self.on_event is not None:
                    self.on_event(kind, payload)

    def start(self) -> asyncio.Future[Any]:
        request = HTTPRequest(
            self.url,
            headers=self.headers,
            streaming_callback=self._chunk,
            request_timeout=600,
        )
        self.response = asyncio.ensure_future(AsyncHTTPClient().fetch(request, raise_error=False))
        # A stream still open when the test ends is closed by the server's shutdown.
        self.response.add_done_callback(lambda future: future.exception())
        return self.response

    async def wait_for(self, predicate: Callable[[str, Any], bool], timeout: float = 300) -> Any:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for kind, payload in self.events:
                if predicate(kind, payload):
                    return payload
            if self.response is not None and self.response.done():
                break
            await asyncio.sleep(0.1)
        raise AssertionError(f"no matching event; got {self.events}")


def sse_url(jp_serverapp: Any, jp_base_url: str, *parts: str) -> str:
    return f"http://127.0.0.1:{jp_serverapp.port}{jp_base_url}cloudpromote/" + "/".join(parts)


def auth_headers(jp_serverapp: Any) -> dict[str, str]:
    return {"Authorization": f"token {jp_serverapp.identity_provider.token}"}


def insert_job(service: CloudPromoteService, job_id: str, **fields: Any) -> JobRecord:
    """A record straight into the real store (for listing/paging tests: no job is run)."""
    now = fields.pop("created", time.time())
    state = fields.pop("state", JobState.SUCCEEDED)
    record = JobRecord(
        id=job_id,
        notebook=fields.pop("notebook", "/nowhere/n.ipynb"),
        backend=fields.pop("backend", "local"),
        backend_kind="local",
        state=state,
        created=now,
        updated=now,
        job_dir=str(service.manager.settings.jobs_dir / job_id),
        spec={"owner": {"pid": os.getpid(), "host": "elsewhere"}},
    )
    return service.manager.store.create(record)


# --- the OpenAPI description ---------------------------------------------------------------------


def test_openapi_documents_exactly_the_registered_routes_and_methods(jp_serverapp: Any) -> None:
    spec = yaml.safe_load(OPENAPI.read_text())
    documented = {
        path: {m for m in ops if m in ("get", "post", "put", "patch", "delete")}
        for path, ops in spec["paths"].items()
    }
    # What the running extension registered (patterns) -> OpenAPI paths.
    extension = jp_serverapp.web_app.settings["jupyter_cloudpromote"]
    registered = {}
    for pattern, handler, *_ in extension.handlers:
        path = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern)
        assert path.startswith("cloudpromote/"), pattern
        registered[path[len("cloudpromote") :]] = handler_methods(handler)
    assert documented == registered
    assert registered == {path: handler_methods(h) for path, h in ROUTES}
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if method == "parameters":
                continue
            assert op.get("responses"), f"{method} {path} documents no responses"
            assert "403" in op["responses"], f"{method} {path} must document 403"
    assert spec["security"] and spec["components"]["securitySchemes"]


# --- fast API tests over the real store ----------------------------------------------------------


def test_backends_lists_kinds_profiles_and_redacts_secrets(
    jp_fetch: Any, run: Run, shared_venv_cache: Path, jp_server_config: Config
) -> None:
    code, data = run(call(jp_fetch, "GET", "backends"))
    assert code == 200
    kinds = {b["kind"]: b for b in data["backends"]}
    assert kinds["local"]["available"] is True and "cancel" in kinds["local"]["features"]
    assert "docker" in kinds
    local_profile = next(p for p in data["profiles"] if p["configured"] and p["name"] == "local")
    assert local_profile["settings"]["venv_cache_dir"] == str(shared_venv_cache)
    assert data["default"] == "local"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"not json", "body"),
        (b"[1, 2]", "body"),
        ({}, "path"),
        ({"path": 7}, "path"),
        ({"path": "a.ipynb", "paramters": {}}, "paramters"),
        ({"path": "a.ipynb", "parameters": []}, "parameters"),
        ({"path": "a.ipynb", "parameters": {"1x": 1}}, "parameters.1x"),
        ({"path": "a.ipynb", "resources": {"cpus": "two"}}, "resources.cpus"),
        ({"path": "a.ipynb", "resources": {"gpus": 1.5}}, "resources.gpus"),
        ({"path": "a.ipynb", "resources": {"cpus": -1}}, "resources.cpus"),
        ({"path": "a.ipynb", "env": {"BAD NAME": "x"}}, "env.BAD NAME"),
        ({"path": "a.ipynb", "env": {"OK": {"x": 1}}}, "env.OK"),
        ({"path": "a.ipynb", "include": "data.csv"}, "include"),
        ({"path": "a.ipynb", "base_image": "x; rm -rf /"}, "base_image"),
        ({"path": "a.ipynb", "backend": "../../etc"}, "backend"),
        ({"path": "a.ipynb", "force": "yes"}, "force"),
    ],
)
def test_bad_submit_bodies_are_400_naming_the_field_and_create_no_job(
    jp_fetch: Any, run: Run, service: CloudPromoteService, body: Any, field: str
) -> None:
    code, reply = run(call(jp_fetch, "POST", "jobs", body=body))
    assert code == 400, reply
    assert reply["field"] == field
    assert field.split(".")[0] in reply["message"]
    assert service.manager.store.count() == 0


def test_bad_resources_and_unknown_backend_are_400_with_the_fix(
    jp_fetch: Any, run: Run, jp_root_dir: Path, service: CloudPromoteService
) -> None:
    make_notebook(jp_root_dir / "nb.ipynb", ["print(1)"])
    code, reply = run(
        call(jp_fetch, "POST", "jobs", body={"path": "nb.ipynb", "resources": {"memory": "lots"}})
    )
    assert code == 400 and "lots" in reply["message"] and "4G" in reply["fix"]
    code, reply = run(
        call(jp_fetch, "POST", "jobs", body={"path": "nb.ipynb", "backend": "nowhere"})
    )
    assert code == 400 and "nowhere" in reply["message"] and "local" in reply["fix"]
    code, reply = run(call(jp_fetch, "POST", "jobs", body={"path": "missing.ipynb"}))
    assert code == 404 and "missing.ipynb" in reply["message"]
    assert service.manager.store.count() == 0


def test_error_findings_refuse_with_422_and_no_job(
    jp_fetch: Any, run: Run, jp_root_dir: Path, service: CloudPromoteService
) -> None:
    nb = make_notebook(jp_root_dir / "asks.ipynb", ["name = input('who? ')"])
    before = digest(nb)
    code, reply = run(call(jp_fetch, "POST", "jobs", body={"path": "asks.ipynb"}))
    assert code == 422 and "input" in reply["message"].lower() and "force" in reply["fix"]
    assert service.manager.store.count() == 0
    assert digest(nb) == before


def test_preview_returns_script_requirements_findings_and_parameters(
    jp_fetch: Any, run: Run, jp_root_dir: Path
) -> None:
    nb = make_notebook(
        jp_root_dir / "sub" / "report.ipynb",
        [
            ("alpha = 0.5\nname = 'x'\nsteps = 3", ["parameters"]),
            "%matplotlib inline\nimport json\nprint(alpha * steps)",
        ],
    )
    before = digest(nb)
    code, data = run(
        call(
            jp_fetch,
            "POST",
            "preview",
            body={"path": "sub/report.ipynb", "parameters": {"steps": 5, "alpha": 0.25}},
        )
    )
    assert code == 200, data
    assert "print(alpha * steps)" in data["script"]
    assert {p["name"]: p["type"] for p in data["parameters"]} == {
        "alpha": "float",
        "name": "str",
        "steps": "int",
    }
    assert data["parameter_values"] == {"steps": 5, "alpha": 0.25}
    assert "FROM " in data["dockerfile"]
    assert isinstance(data["requirement_details"], list) and isinstance(data["findings"], list)
    assert data["notebook_path"] == "sub/report.ipynb"
    assert digest(nb) == before

    code, reply = run(
        call(
            jp_fetch,
            "POST",
            "preview",
            body={"path": "sub/report.ipynb", "parameters": {"steps": "many"}},
        )
    )
    assert code == 400 and "steps" in reply["message"]


def test_list_jobs_pages_filters_and_sorts(
    jp_fetch: Any, run: Run, service: CloudPromoteService, jp_root_dir: Path
) -> None:
    base = time.time() - 1000
    notebook = str((jp_root_dir / "a" / "x.ipynb").resolve())
    for index in range(7):
        insert_job(
            service,
            f"{index:012x}",
            created=base + index,
            state=JobState.FAILED if index % 2 else JobState.SUCCEEDED,
            backend="docker" if index == 6 else "local",
            notebook=notebook if index < 3 else "/else/y.ipynb",
        )
    code, page = run(call(jp_fetch, "GET", "jobs", params={"limit": 3}))
    assert code == 200 and page["total"] == 7 and page["next_offset"] == 3
    assert [j["id"] for j in page["jobs"]] == [f"{i:012x}" for i in (6, 5, 4)]
    code, page = run(call(jp_fetch, "GET", "jobs", params={"limit": 3, "offset": 6}))
    assert [j["id"] for j in page["jobs"]] == [f"{0:012x}"] and page["next_offset"] is None
    code, page = run(call(jp_fetch, "GET", "jobs", params={"sort": "created-asc", "limit": 2}))
    assert [j["id"] for j in page["jobs"]] == [f"{0:012x}", f"{1:012x}"]
    code, page = run(call(jp_fetch, "GET", "jobs", params={"status": "failed"}))
    assert page["total"] == 3 and all(j["status"] == "failed" for j in page["jobs"])
    code, page = run(call(jp_fetch, "GET", "jobs", params={"backend": "docker"}))
    assert [j["id"] for j in page["jobs"]] == [f"{6:012x}"]
    code, page = run(call(jp_fetch, "GET", "jobs", params={"notebook": "a/x.ipynb"}))
    assert page["total"] == 3 and page["jobs"][0]["notebook_path"] == "a/x.ipynb"
    for params, field in (
        ({"status": "finished"}, "status"),
        ({"limit": "0"}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"sort": "name"}, "sort"),
        ({"colour": "red"}, "colour"),
    ):
        code, reply = run(call(jp_fetch, "GET", "jobs", params=params))
        assert code == 400 and reply["field"] == field, reply


def test_job_detail_history_and_delete_rules(
    jp_fetch: Any, run: Run, service: CloudPromoteService
) -> None:
    done = insert_job(service, "aaaaaaaaaaaa")
    Path(done.job_dir, "context").mkdir(parents=True)
    Path(done.job_dir, "context", "job.py").write_text("print('hi')\n")
    Path(done.job_dir, "context", "cloudpromote-ca.pem").write_text("SECRET CA\n")
    running = insert_job(service, "bbbbbbbbbbbb", state=JobState.RUNNING)
    code, data = run(call(jp_fetch, "GET", "jobs", "aaaaaaaaaaaa"))
    assert code == 200 and data["history"][0]["state"] == "succeeded"
    assert [a["name"] for a in data["artifacts"]] == ["script"]
    assert data["artifacts"][0]["text"] == "print('hi')\n"
    assert "SECRET" not in json.dumps(data)
    code, reply = run(call(jp_fetch, "DELETE", "jobs", running.id))
    assert code == 409 and "Cancel" in reply["fix"]
    code, _ = run(call(jp_fetch, "DELETE", "jobs", done.id))
    assert code == 204 and not Path(done.job_dir).exists()
    code, _ = run(call(jp_fetch, "GET", "jobs", done.id))
    assert code == 404
    code, reply = run(call(jp_fetch, "GET", "jobs", "not-a-job"))
    assert code == 404 and "hexadecimal" in reply["message"]


# --- real jobs on the local backend --------------------------------------------------------------


@pytest.mark.slow
def test_submit_through_the_api_runs_to_succeeded_with_outputs_and_logs(
    jp_fetch: Any, run: Run, jp_root_dir: Path, service: CloudPromoteService
) -> None:
    nb = make_notebook(
        jp_root_dir / "work" / "report.ipynb",
        [
            ("greeting = 'hello'\nrepeat = 2", ["parameters"]),
            "import os, pathlib\nout = pathlib.Path(os.environ['CLOUDPROMOTE_OUTPUT_DIR'])",
            "(out / 'sub').mkdir()\n(out / 'sub' / 'result.txt').write_text(greeting * repeat)\n"
            "print('wrote', greeting * repeat)",
        ],
    )
    before = digest(nb)
    code, job = run(
        call(
            jp_fetch,
            "POST",
            "jobs",
            body={"path": "work/report.ipynb", "parameters": {"repeat": 3}, "env": {"MODE": "api"}},
        )
    )
    assert code == 201, job
    assert job["status"] == "pending" and job["notebook_path"] == "work/report.ipynb"
    assert job["spec"]["owner"]["pid"] == os.getpid() and job["spec"]["env_keys"] == ["MODE"]
    final = run(wait_status(jp_fetch, job["id"], terminal))
    assert final["status"] == "succeeded", final
    assert [h["state"] for h in final["history"]][-1] == "succeeded"
    assert "queued" in [h["state"] for h in final["history"]]
    assert {a["name"] for a in final["artifacts"]} >= {"script", "requirements"}
    assert final["outputs"] == [{"path": "sub/result.txt", "size": 15}]

    code, listing = run(call(jp_fetch, "GET", "jobs", job["id"], "outputs"))
    assert code == 200 and listing["outputs"] == [{"path": "sub/result.txt", "size": 15}]
    response = run(jp_fetch("cloudpromote", "jobs", job["id"], "outputs", "sub/result.txt"))
    assert response.body == b"hellohellohello"
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert "attachment" in response.headers["Content-Disposition"]

    code, logs = run(call(jp_fetch, "GET", "jobs", job["id"], "logs", params={"phase": "run"}))
    assert code == 200 and "wrote hellohellohello" in logs["text"] and logs["complete"]
    offset = logs["text"].index("wrote")
    code, tail = run(
        call(jp_fetch, "GET", "jobs", job["id"], "logs", params={"phase": "run", "offset": offset})
    )
    assert tail["text"].startswith("wrote hellohellohello")
    code, build = run(call(jp_fetch, "GET", "jobs", job["id"], "logs", params={"phase": "build"}))
    assert "packaging" in build["text"]
    assert digest(nb) == before, "the user's notebook must never be modified"


WAITING_CELLS = [
    ("release = ''\nfail = False", ["parameters"]),
    "import os, pathlib, time\nprint('tick 1', flush=True)\n"
    "while not pathlib.Path(release).exists():\n    time.sleep(0.2)\n"
    "print('tick 2', flush=True)",
    "if fail:\n    raise RuntimeError('asked to fail')",
]


@pytest.mark.slow
def test_log_stream_delivers_lines_while_the_job_runs(
    jp_fetch: Any,
    run: Run,
    jp_root_dir: Path,
    jp_serverapp: Any,
    jp_base_url: str,
    service: CloudPromoteService,
    tmp_path: Path,
) -> None:
    make_notebook(jp_root_dir / "ticks.ipynb", WAITING_CELLS)
    release = tmp_path / "release"
    code, job = run(
        call(
            jp_fetch,
            "POST",
            "jobs",
            body={"path": "ticks.ipynb", "parameters": {"release": str(release)}},
        )
    )
    assert code == 201, job
    reader = SSEReader(
        sse_url(jp_serverapp, jp_base_url, "jobs", job["id"], "logs", "stream"),
        auth_headers(jp_serverapp),
    )
    states_at_first_line: list[str] = []

    def on_event(kind: str, payload: Any) -> None:
        if kind == "log" and "tick 1" in payload["text"] and not states_at_first_line:
            states_at_first_line.append(service.manager.store.get(job["id"]).state.value)
            release.write_text("go")  # only now may the job finish

    reader.on_event = on_event

    async def follow() -> HTTPResponse:
        return await reader.start()

    response = run(follow())
    assert response.code == 200
    assert states_at_first_line and not JobState(states_at_first_line[0]).terminal
    kinds = [kind for kind, _ in reader.events]
    assert kinds[0] == "status" and kinds[-1] == "end"
    run_text = "".join(p["text"] for k, p in reader.events if k == "log" and p["phase"] == "run")
    assert run_text.index("tick 1") < run_text.index("tick 2")
    build_text = "".join(
        p["text"] for k, p in reader.events if k == "log" and p["phase"] == "build"
    )
    assert "packaging" in build_text
    assert reader.events[-1][1]["status"] == "succeeded"


@pytest.mark.slow
def test_cancel_and_rerun_through_the_api(
    jp_fetch: Any, run: Run, jp_root_dir: Path, tmp_path: Path, service: CloudPromoteService
) -> None:
    make_notebook(jp_root_dir / "wait.ipynb", WAITING_CELLS)
    release = tmp_path / "never"
    code, job = run(
        call(
            jp_fetch,
            "POST",
            "jobs",
            body={"path": "wait.ipynb", "parameters": {"release": str(release)}},
        )
    )
    assert code == 201
    run(wait_status(jp_fetch, job["id"], lambda j: j["status"] == "running"))
    code, cancelled = run(call(jp_fetch, "POST", "jobs", job["id"], "cancel"))
    assert code == 200 and cancelled["status"] in ("cancelling", "cancelled")
    final = run(wait_status(jp_fetch, job["id"], terminal))
    assert final["status"] == "cancelled" and "cancel" in final["reason"]

    release.write_text("go")  # the rerun finds the release file and finishes
    code, again = run(call(jp_fetch, "POST", "jobs", job["id"], "rerun"))
    assert code == 201 and again["id"] != job["id"] and again["spec"]["rerun_of"] == job["id"]
    second = run(wait_status(jp_fetch, again["id"], terminal))
    assert second["status"] == "succeeded", second
    assert second["content_hash"] == final["content_hash"]
    code, _reply = run(call(jp_fetch, "POST", "jobs", "0123456789ab", "rerun"))
    assert code == 404


@pytest.mark.slow
def test_events_stream_reports_api_and_cli_jobs_without_polling(
    jp_fetch: Any,
    run: Run,
    jp_root_dir: Path,
    jp_serverapp: Any,
    jp_base_url: str,
    service: CloudPromoteService,
) -> None:
    make_notebook(jp_root_dir / "quick.ipynb", ["print('quick')"])
    reader = SSEReader(sse_url(jp_serverapp, jp_base_url, "events"), auth_headers(jp_serverapp))

    async def scenario() -> tuple[dict[str, Any], str]:
        reader.start()
        await reader.wait_connected()
        code, job = await call(jp_fetch, "POST", "jobs", body={"path": "quick.ipynb"})
        assert code == 201
        # A job submitted by another process (the CLI) into the same store.
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "jupyter_cloudpromote",
            "submit",
            str(jp_root_dir / "quick.ipynb"),
            "--json",
            "--option",
            f"venv_cache_dir={service.manager.settings.profiles['local']['venv_cache_dir']}",
            stdout=subprocess.PIPE,
            env=os.environ.copy(),
        )
        out, _ = await proc.communicate()
        cli_id = json.loads(out)["id"]
        for job_id in (job["id"], cli_id):
            await reader.wait_for(lambda k, p, i=job_id: k == "job-created" and p["job"]["id"] == i)
            # A quick job may already have finished when the watcher first sees it: then
            # its creation event already carries the final status.
            await reader.wait_for(
                lambda k, p, i=job_id: (
                    k in ("job-created", "job-updated")
                    and p["job"]["id"] == i
                    and p["job"]["status"] == "succeeded"
                )
            )
        code, _ = await call(jp_fetch, "DELETE", "jobs", cli_id)
        assert code == 204
        await reader.wait_for(lambda k, p: k == "job-deleted" and p["job"]["id"] == cli_id)
        return job, cli_id

    run(scenario())
    ids = [p["id"] for _k, p in reader.events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), "event ids increase"


@pytest.mark.slow
@pytest.mark.docker
def test_docker_backend_through_the_api_runs_to_succeeded(
    docker_client: Any,
    base_image: str,
    jp_fetch: Any,
    run: Run,
    jp_root_dir: Path,
) -> None:
    make_notebook(
        jp_root_dir / "boxed.ipynb",
        [
            "import os, pathlib\nout = pathlib.Path(os.environ['CLOUDPROMOTE_OUTPUT_DIR'])\n"
            "(out / 'where.txt').write_text('in a container')\nprint('docker job ran')",
        ],
    )
    code, job = run(
        call(
            jp_fetch,
            "POST",
            "jobs",
            body={"path": "boxed.ipynb", "backend": "docker", "base_image": base_image},
        )
    )
    assert code == 201, job
    final = run(wait_status(jp_fetch, job["id"], terminal, timeout=600))
    assert final["status"] == "succeeded", final
    assert "building" in [h["state"] for h in final["history"]] and final["image"]
    assert any(a["name"] == "dockerfile" and base_image in a["text"] for a in final["artifacts"])
    code, logs = run(call(jp_fetch, "GET", "jobs", job["id"], "logs", params={"phase": "run"}))
    assert "docker job ran" in logs["text"]
    response = run(jp_fetch("cloudpromote", "jobs", job["id"], "outputs", "where.txt"))
    assert response.body == b"in a container"


def test_http_client_error_is_not_raised_by_call_helper(jp_fetch: Any, run: Run) -> None:
    code, _ = run(call(jp_fetch, "GET", "no-such-route"))
    assert code == 404
    with pytest.raises(HTTPClientError):
        run(jp_fetch("cloudpromote", "no-such-route"))
