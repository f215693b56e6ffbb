"""The `docker` backend: runs the job's image in a container on the local Docker engine.

The job's outputs folder on the host is bind-mounted into the container, so outputs need no
copying back; the container's log is saved to the job folder whenever it is read, so it
survives the container's removal.
"""

from __future__ import annotations

import codecs
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import docker
import docker.errors
from docker.types import DeviceRequest

from ..errors import BackendError, ConfigError
from ..models import JOB_ID_ENV, OUTPUT_DIR_ENV, PARAMETERS_ENV, BackendStatus, JobState
from ..package import JOB_OUTPUT_DIR, JOB_UID
from ..resources import format_duration, parse_duration_seconds, parse_memory_bytes
from ..runner import TIME_LIMIT_ENV, TIME_LIMIT_EXIT_CODE
from .base import Backend, SubmitRequest, option_bool

CONTAINER_PREFIX = "cloudpromote-"
JOB_LABEL = "io.cloudpromote.job"
STOP_TIMEOUT = 10  # seconds between SIGTERM and SIGKILL on cancel
_TAIL_LINES = 10
_STATE_FILE = "docker-state.json"  # final status, kept for when the container is gone
_LOG_SETTLE_TRIES = 8
_LOG_SETTLE_SECONDS = 0.25

_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CONTAINER_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_NETWORK_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


def info_env(container: Any) -> list[str]:
    return list(container.attrs.get("Config", {}).get("Env") or [])


def parse_memory(value: str | int) -> int:
    """Bytes for a memory limit, as the shared parser reads it, at least Docker's minimum."""
    size = parse_memory_bytes(str(value))
    if size < 6 * 1024**2:  # Docker's own minimum
        raise ConfigError(f"Memory limit {value!r} is too small.", "Docker needs at least 6M.")
    return size


def _bool(value: Any, setting: str) -> bool:
    return option_bool(value, "docker", setting)


def _format_bytes(size: int) -> str:
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor:
            return f"{size / factor:g}{unit}"
    return f"{size}B"


def _tail(text: str, count: int = _TAIL_LINES) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-count:])


class DockerBackend(Backend):
    kind = "docker"
    description = "Runs the job's image in a container on this machine's Docker engine."
    features = frozenset(
        {"cpus", "memory", "gpus", "time_limit", "cancel", "logs-follow", "outputs", "image"}
    )
    needs_image = True
    install_hint = "apt-get install docker.io (or Docker Engine), then start dockerd"
    default_options: ClassVar[dict[str, Any]] = {
        "network": "bridge",  # "none" cuts the job off the network
        "remove_container": False,  # remove the container once its final status is saved
        "init": True,  # run under docker-init, so cancel's SIGTERM reaches the job
    }

    def __init__(self, profile: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(profile, options)
        self._client: docker.DockerClient | None = None

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        try:
            client = docker.from_env(timeout=2)
            try:
                client.ping()
            finally:
                client.close()
        except Exception as exc:  # any failure means the engine cannot be used
            return False, (
                f"Docker engine not reachable ({exc}). Install Docker (apt-get install "
                "docker.io) and start it (systemctl start docker, or dockerd &); your user "
                "needs access to /var/run/docker.sock."
            )
        return True, "Docker engine reachable."

    def validate_options(self) -> None:
        network = str(self.options.get("network") or "bridge")
        if not _NETWORK_RE.match(network):
            raise ConfigError(
                f"The docker option 'network' has an invalid value {network!r}.",
                "Use 'bridge' (default), 'none', 'host' or the name of a Docker network.",
            )
        self.options["network"] = network
        self.options["remove_container"] = _bool(
            self.options.get("remove_container", False), "remove_container"
        )
        self.options["init"] = _bool(self.options.get("init", True), "init")

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            try:
                self._client = docker.from_env()
            except docker.errors.DockerException as exc:
                raise BackendError(
                    f"Cannot reach the Docker engine ({exc}).",
                    "Start Docker (systemctl start docker, or dockerd &) and try again.",
                ) from exc
        return self._client

    # --- submit ---------------------------------------------------------------------------

    def _run_kwargs(self, request: SubmitRequest) -> dict[str, Any]:
        resources = request.resources
        kwargs: dict[str, Any] = {}
        if resources.cpus is not None:
            cpus = float(resources.cpus)
            if cpus <= 0:
                raise ConfigError(f"CPU count must be positive, got {resources.cpus}.", "")
            kwargs["nano_cpus"] = int(cpus * 1e9)
        if resources.memory:
            kwargs["mem_limit"] = parse_memory(resources.memory)
        if resources.gpus and resources.gpus > 0:
            kwargs["device_requests"] = [
                DeviceRequest(count=int(resources.gpus), capabilities=[["gpu"]])
            ]
        return kwargs

    def _environment(self, request: SubmitRequest) -> dict[str, str]:
        env: dict[str, str] = {}
        for key, value in request.env.items():
            if not _ENV_NAME_RE.match(key):
                raise ConfigError(
                    f"{key!r} is not a valid environment variable name.",
                    "Use letters, digits and underscores, not starting with a digit.",
                )
            env[key] = str(value)
        env[OUTPUT_DIR_ENV] = JOB_OUTPUT_DIR
        env[PARAMETERS_ENV] = json.dumps(request.parameters)
        env[JOB_ID_ENV] = request.job_id
        if request.resources.time_limit:
            # The engine has no run-time limit: the runner inside the image enforces it.
            seconds = parse_duration_seconds(request.resources.time_limit)
            env[TIME_LIMIT_ENV] = f"{seconds:g}"
        return env

    @staticmethod
    def _prepare_outputs(outputs: Path) -> None:
        outputs.mkdir(parents=True, exist_ok=True)
        # The job runs as uid JOB_UID inside the image and must be able to write here.
        if os.geteuid() == 0:
            os.chown(outputs, JOB_UID, JOB_UID)
        else:
            outputs.chmod(0o777)

    def submit(self, request: SubmitRequest) -> str:
        image = request.image or request.context.image_tag
        name = f"{CONTAINER_PREFIX}{request.job_id}"
        if not _CONTAINER_NAME_RE.match(name):
            raise BackendError(f"Job id {request.job_id!r} cannot name a container.", "")
        kwargs = self._run_kwargs(request)
        environment = self._environment(request)
        self._prepare_outputs(request.outputs_dir)
        request.log_path.parent.mkdir(parents=True, exist_ok=True)
        (request.job_dir / _STATE_FILE).unlink(missing_ok=True)
        self._remove_stale(name)
        self._require_image(image)
        try:
            container = self.client.containers.run(
                image,
                detach=True,
                name=name,
                labels={JOB_LABEL: request.job_id},
                environment=environment,
                volumes={
                    str(request.outputs_dir.resolve()): {"bind": JOB_OUTPUT_DIR, "mode": "rw"}
                },
                network_mode=str(self.options.get("network") or "bridge"),
                init=bool(self.options.get("init", True)),
                auto_remove=False,
                **kwargs,
            )
        except docker.errors.APIError as exc:
            self._remove_failed_start(name)
            explanation = str(exc.explanation or exc)
            fix = ""
            if "capabilities: [[gpu]]" in explanation or "device driver" in explanation:
                fix = (
                    "GPUs were requested but this engine has no GPU runtime: install the "
                    "NVIDIA Container Toolkit, or submit with gpus=0."
                )
            elif "docker-init" in explanation:
                fix = "This engine has no docker-init: set the profile option init to false."
            elif "network" in explanation and "not found" in explanation:
                fix = "Create the Docker network first, or set the profile's network to 'bridge'."
            raise BackendError(f"Docker could not start the job: {explanation}", fix) from exc
        return str(container.id)

    def _require_image(self, image: str) -> None:
        """Use the local image, or pull it once (remote backends push first); say so if neither."""
        try:
            self.client.images.get(image)
            return
        except docker.errors.ImageNotFound:
            pass
        try:
            self.client.images.pull(image)
        except docker.errors.APIError as exc:
            raise BackendError(
                f"The job image {image} is not on this Docker engine and could not be pulled "
                f"({exc.explanation or exc}).",
                "Build it on this engine first (promote again with the docker backend), or "
                "push it to a registry this engine can reach.",
            ) from exc

    def _remove_failed_start(self, name: str) -> None:
        """run() creates the container before starting it: drop one that could not start."""
        try:
            self.client.containers.get(name).remove(force=True)
        except docker.errors.APIError:
            pass  # never created, or already gone

    def _remove_stale(self, name: str) -> None:
        """A retried job reuses its container name: drop a finished container of that name."""
        try:
            old = self.client.containers.get(name)
        except docker.errors.NotFound:
            return
        if old.status in ("running", "restarting", "paused"):
            raise BackendError(
                f"A container named {name} is still running.",
                "Cancel that job first, or wait for it to end.",
            )
        old.remove(force=True)

    # --- status and logs --------------------------------------------------------------------

    def _container(self, backend_id: str) -> Any | None:
        try:
            return self.client.containers.get(backend_id)
        except docker.errors.NotFound:
            return None
        except docker.errors.APIError as exc:
            raise BackendError(
                f"Docker could not report on container {backend_id[:12]}: {exc}", ""
            ) from exc

    def status(self, backend_id: str, job_dir: Path) -> BackendStatus:
        state_file = Path(job_dir) / _STATE_FILE
        saved = self._saved_status(state_file, backend_id)
        if saved is not None:
            return saved  # final: the container's end was already seen and recorded
        container = self._container(backend_id)
        if container is None:
            return BackendStatus(
                JobState.FAILED,
                f"The job's container ({backend_id[:12]}) no longer exists: it was removed "
                "outside cloudpromote (docker rm, or a Docker engine reset) before it finished.",
            )
        info = container.attrs.get("State", {})
        status = str(info.get("Status", ""))
        if status == "created":
            return BackendStatus(JobState.QUEUED, "container created, not started yet")
        if status in ("running", "restarting"):
            return BackendStatus(JobState.RUNNING)
        if status == "paused":
            return BackendStatus(JobState.RUNNING, "container paused (docker unpause to resume)")
        if status == "removing":
            return BackendStatus(JobState.RUNNING, "container being removed")
        # exited or dead: final
        exit_code = int(info.get("ExitCode", -1))
        log_text = self._final_logs(backend_id, job_dir)
        tail = _tail(log_text)
        # The engine copies stdout and stderr separately, so a traceback printed last can
        # land earlier in the combined log: make sure the end of stderr is in the reason.
        error_tail = _tail(
            container.logs(stdout=False, stderr=True).decode("utf-8", errors="replace")
        )
        if error_tail and error_tail not in tail:
            tail += f"\n--- last error output ---\n{error_tail}"
        if info.get("OOMKilled"):
            limit = container.attrs.get("HostConfig", {}).get("Memory") or 0
            limit_text = _format_bytes(int(limit)) if limit else "the machine's memory"
            result = BackendStatus(
                JobState.FAILED,
                f"ran out of memory (limit {limit_text}); raise the memory resource. "
                f"Last log lines:\n{tail}",
                exit_code,
            )
        elif status == "dead" or info.get("Error"):
            result = BackendStatus(
                JobState.FAILED,
                f"the container could not run: {info.get('Error') or 'dead'}",
                exit_code,
            )
        elif exit_code == 0:
            result = BackendStatus(JobState.SUCCEEDED, "exited with code 0", 0)
        elif exit_code == TIME_LIMIT_EXIT_CODE and "hit its time limit" in log_text:
            env = dict(e.split("=", 1) for e in info_env(container) if "=" in e)
            limit = float(env.get(TIME_LIMIT_ENV, "0") or 0)
            result = BackendStatus(
                JobState.FAILED,
                f"hit its time limit of {format_duration(limit)}; raise the time limit "
                f"(--time) or make the job faster. Last log lines:\n{tail}",
                exit_code,
            )
        else:
            result = BackendStatus(
                JobState.FAILED,
                f"exited with code {exit_code}; last log lines:\n{tail}"
                if tail
                else f"exited with code {exit_code}; the job printed nothing",
                exit_code,
            )
        state_file.parent.mkdir(parents=True, exist_ok=True)
        state_file.write_text(
            json.dumps(
                {
                    "backend_id": backend_id,
                    "state": result.state.value,
                    "reason": result.reason,
                    "exit_code": exit_code,
                }
            ),
            encoding="utf-8",
        )
        if self.options.get("remove_container"):
            try:
                container.remove()
            except docker.errors.APIError:
                pass  # already being removed; the saved state answers from now on
        return result

    @staticmethod
    def _saved_status(state_file: Path, backend_id: str) -> BackendStatus | None:
        try:
            saved = json.loads(state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if saved.get("backend_id") != backend_id:
            return None
        return BackendStatus(JobState(saved["state"]), saved["reason"], saved["exit_code"])

    def _final_logs(self, backend_id: str, job_dir: Path) -> str:
        """The log of an exited container, once the engine has finished writing it.

        The engine marks a container exited while its log copier may still be writing the
        last lines (often the traceback on stderr): read until two reads agree.
        """
        text = self.logs(backend_id, job_dir)
        for _ in range(_LOG_SETTLE_TRIES):
            time.sleep(_LOG_SETTLE_SECONDS)
            again = self.logs(backend_id, job_dir)
            if again == text:
                break
            text = again
        return text

    def _persist_log(self, job_dir: Path, text: str) -> None:
        path = Path(job_dir) / "logs" / "run.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")

    def logs(self, backend_id: str, job_dir: Path) -> str:
        container = self._container(backend_id)
        saved = Path(job_dir) / "logs" / "run.log"
        if container is None:
            return saved.read_text(encoding="utf-8", errors="replace") if saved.is_file() else ""
        raw = container.logs(stdout=True, stderr=True, timestamps=False)
        text = raw.decode("utf-8", errors="replace")
        self._persist_log(job_dir, text)
        return text

    def follow_logs(self, backend_id: str, job_dir: Path) -> Iterator[str]:
        container = self._container(backend_id)
        if container is None:
            text = self.logs(backend_id, job_dir)
            if text:
                yield text
            return
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        for chunk in container.logs(stdout=True, stderr=True, stream=True, follow=True):
            text = decoder.decode(chunk)
            if text:
                yield text
        rest = decoder.decode(b"", final=True)
        if rest:
            yield rest
        self.logs(backend_id, job_dir)  # save the complete log

    def cancel(self, backend_id: str, job_dir: Path) -> None:
        container = self._container(backend_id)
        if container is None:
            return  # nothing left to stop
        try:
            container.stop(timeout=STOP_TIMEOUT)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            raise BackendError(f"Docker could not stop the job's container: {exc}", "") from exc

    def collect_outputs(self, backend_id: str, job_dir: Path) -> None:
        """Outputs are bind-mounted into job_dir/outputs; only the log needs saving."""
        if self._container(backend_id) is not None:
            self.logs(backend_id, job_dir)
