"""Restart safety: `jupyter server` as a real subprocess, SIGKILLed mid-run, started again.

Jobs running on the local backend outlive the server (their supervisor is detached) and
must be followed to their real end by the next server; a job the server was still building
(docker backend, held in `pip install` by a package index that never answers) must end
`failed` with "interrupted by server restart", not stay stuck.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import make_notebook
from .test_server_api import WAITING_CELLS

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """A `jupyter server` with its own port, token, root, config and data dirs."""

    def __init__(self, home: Path, root: Path) -> None:
        self.home = home
        self.root = root
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = home / "server.log"

    @property
    def env(self) -> dict[str, str]:
        env = os.environ.copy()
        env.update(
            JUPYTER_CONFIG_DIR=str(self.home / "config"),
            JUPYTER_DATA_DIR=str(self.home / "data"),
            JUPYTER_RUNTIME_DIR=str(self.home / "runtime"),
            JUPYTER_CONFIG_PATH=str(self.home / "config"),
        )
        return env

    def configure(self, cloudpromote: dict[str, Any]) -> None:
        config = self.home / "config"
        config.mkdir(parents=True, exist_ok=True)
        # Explicit, so the test does not depend on the shipped auto-enable file being installed.
        (config / "jupyter_server_config.json").write_text(
            json.dumps({"ServerApp": {"jpserver_extensions": {"jupyter_cloudpromote": True}}})
        )
        (config / "jupyter_cloudpromote_config.json").write_text(
            json.dumps({"CloudPromote": cloudpromote})
        )

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "jupyter_server",
                    "--no-browser",
                    "--allow-root",
                    f"--port={self.port}",
                    "--port-retries=0",
                    "--ip=127.0.0.1",
                    f"--ServerApp.root_dir={self.root}",
                    f"--IdentityProvider.token={self.token}",
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
            )
        end = time.monotonic() + 60
        while time.monotonic() < end:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                status, _ = self.api("GET", "backends")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError("server did not start:\n" + self.log.read_text()[-3000:])

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def api(self, method: str, *parts: str, body: Any = None) -> tuple[int, Any]:
        url = f"http://127.0.0.1:{self.port}/cloudpromote/" + "/".join(parts)
        data = (
            json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
        )
        request = urllib.request.Request(
            url, data=data, method=method, headers={"Authorization": f"token {self.token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            return exc.code, json.loads(raw) if raw else None

    def wait(
        self, job_id: str, done: Callable[[dict[str, Any]], bool], timeout: float = 300
    ) -> dict[str, Any]:
        end = time.monotonic() + timeout
        job: dict[str, Any] = {}
        while time.monotonic() < end:
            code, job = self.api("GET", "jobs", job_id)
            assert code == 200, job
            if done(job):
                return job
            time.sleep(0.3)
        raise AssertionError(f"job {job_id} stuck: {job}\n" + self.log.read_text()[-3000:])


class SilentIndex:
    """A package index that accepts connections and never answers: pip waits there."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("0.0.0.0", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.held: list[socket.socket] = []
        self.accepted = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)
            self.accepted.set()

    def close(self) -> None:
        for conn in self.held:
            conn.close()
        self.sock.close()


@pytest.fixture()
def server(tmp_path: Path, shared_venv_cache: Path) -> Iterator[ServerProcess]:
    root = tmp_path / "root"
    root.mkdir()
    srv = ServerProcess(tmp_path / "home", root)
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def shared_venv_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("restart-venv-cache")


@pytest.mark.parametrize("with_docker_build", [False, pytest.param(True, marks=pytest.mark.docker)])
def test_sigkill_mid_run_then_restart_every_job_reaches_its_terminal_state(
    server: ServerProcess,
    shared_venv_cache: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    with_docker_build: bool,
) -> None:
    settings: dict[str, Any] = {
        "profiles": {"local": {"kind": "local", "venv_cache_dir": str(shared_venv_cache)}},
        "watch_interval": 0.5,
    }
    index = None
    if with_docker_build:
        docker_client = request.getfixturevalue("docker_client")
        base_image = request.getfixturevalue("base_image")
        ipam = docker_client.networks.get("bridge").attrs["IPAM"]["Config"][0]
        # The bridge's gateway is the host as containers see it (first address of the subnet).
        gateway = ipam.get("Gateway") or ipam["Subnet"].split("/")[0].rsplit(".", 1)[0] + ".1"
        index = SilentIndex()
        # https: pip ignores a plain-http index on an untrusted host; over TLS it connects
        # and then waits for a handshake that never comes, so the build stays in pip.
        settings.update(
            base_image=base_image, pip_index_url=f"https://{gateway}:{index.port}/simple"
        )
    server.configure(settings)
    make_notebook(server.root / "wait.ipynb", WAITING_CELLS)
    make_notebook(server.root / "quick.ipynb", ["print('quick done')"])
    make_notebook(server.root / "needs_pkg.ipynb", ["%pip install tomli\nprint('never')"])
    release = {name: tmp_path / f"release-{name}" for name in ("ok", "fail", "never")}
    server.start()
    first_pid = server.proc.pid if server.proc else None

    def submit(path: str, **extra: Any) -> str:
        code, job = server.api("POST", "jobs", body={"path": path, **extra})
        assert code == 201, job
        assert job["spec"]["owner"]["pid"] == first_pid
        return str(job["id"])

    quick = submit("quick.ipynb")
    ok = submit("wait.ipynb", parameters={"release": str(release["ok"])})
    fail = submit("wait.ipynb", parameters={"release": str(release["fail"]), "fail": True})
    cancel_me = submit("wait.ipynb", parameters={"release": str(release["never"])})
    assert server.wait(quick, lambda j: j["status"] == "succeeded")["exit_code"] == 0
    for job_id in (ok, fail, cancel_me):
        server.wait(job_id, lambda j: j["status"] == "running")
    building = None
    if with_docker_build:
        building = submit("needs_pkg.ipynb", backend="docker", force=True)
        server.wait(building, lambda j: j["status"] == "building", timeout=120)
        assert index is not None and index.accepted.wait(120), "pip never reached the index"

    server.kill()  # SIGKILL: no shutdown hook runs
    server.start()
    assert server.proc is not None and server.proc.pid != first_pid

    if building is not None:
        code, job = server.api("GET", "jobs", building)
        assert job["status"] == "failed", job
        assert "interrupted by server restart" in job["reason"], job["reason"]
        assert str(first_pid) in job["reason"]
    # The jobs that were running keep running under the new server, which follows them.
    for job_id in (ok, fail, cancel_me):
        code, job = server.api("GET", "jobs", job_id)
        assert job["status"] == "running", job
    release["ok"].write_text("go")
    release["fail"].write_text("go")
    done_ok = server.wait(ok, lambda j: j["status"] in ("succeeded", "failed", "cancelled"))
    assert done_ok["status"] == "succeeded" and done_ok["exit_code"] == 0, done_ok
    done_fail = server.wait(fail, lambda j: j["status"] in ("succeeded", "failed", "cancelled"))
    assert done_fail["status"] == "failed" and done_fail["exit_code"] == 1, done_fail
    assert "asked to fail" in done_fail["reason"]
    code, job = server.api("POST", "jobs", cancel_me, "cancel")
    assert code == 200
    done_cancel = server.wait(
        cancel_me, lambda j: j["status"] in ("succeeded", "failed", "cancelled")
    )
    assert done_cancel["status"] == "cancelled", done_cancel
    code, page = server.api("GET", "jobs")
    statuses = {j["id"]: j["status"] for j in page["jobs"]}
    assert all(status in ("succeeded", "failed", "cancelled") for status in statuses.values()), (
        statuses
    )
    assert statuses[quick] == "succeeded"
    if index is not None:
        index.close()
