"""The small abstract base every backend implements.

A backend only translates: submit a packaged job, report its status, read its logs, cancel
it, fetch its outputs. States, retries, recording and recovery live in `jobs.py`, once.
"""

from __future__ import annotations

import abc
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..errors import BackendError, ConfigError
from ..models import BackendStatus, BuildContext, Resources
from ..pricing import CostEstimate


@dataclass
class SubmitRequest:
    """Everything a backend needs to start one job. Plain data, built by jobs.py."""

    job_id: str
    job_dir: Path  # per-job folder in the store: logs/, outputs/, context/
    context: BuildContext
    image: str | None  # built image tag when the backend needs an image
    resources: Resources
    parameters: dict[str, Any]  # typed, already validated against the parameters cell
    env: dict[str, str]
    options: dict[str, Any] = field(default_factory=dict)  # the profile's settings

    @property
    def log_path(self) -> Path:
        return self.job_dir / "logs" / "run.log"

    @property
    def outputs_dir(self) -> Path:
        return self.job_dir / "outputs"


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def option_bool(value: Any, kind: str, setting: str) -> bool:
    """A profile setting that is true or false, as typed in config or with --option."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(
        f"The {kind} setting {setting!r} must be true or false, got {value!r}.",
        f"Write --option {setting}=true or --option {setting}=false.",
    )


def stage_working_copy(request: SubmitRequest, root: Path) -> str:
    """Copy the build context to root/work for a job to run in; return the parameters JSON.

    Build-only files (the CA bundle, a pip config that may hold index credentials, the
    Dockerfile) are for installing, not for the job to read, so they stay behind.
    """
    from ..package import (
        CA_BUNDLE_NAME,
        DOCKERFILE_NAME,
        PIP_CONFIG_NAME,
        RUNNER_NAME,
        SCRIPT_NAME,
    )

    context_dir = Path(request.context.directory)
    for name in (SCRIPT_NAME, RUNNER_NAME):
        if not (context_dir / name).is_file():
            raise BackendError(
                f"The build context {context_dir} has no {name}.",
                "Package the notebook again (the context is incomplete).",
            )
    try:
        parameters_json = json.dumps(request.parameters)
    except (TypeError, ValueError) as exc:
        raise BackendError(
            f"The job's parameters cannot be passed as JSON ({exc}).",
            "Give parameters as numbers, strings, booleans, lists or dicts.",
        ) from exc
    build_only = shutil.ignore_patterns(CA_BUNDLE_NAME, PIP_CONFIG_NAME, DOCKERFILE_NAME)
    shutil.copytree(
        context_dir, root / "work", dirs_exist_ok=True, symlinks=True, ignore=build_only
    )
    return parameters_json


class Backend(abc.ABC):
    """One place jobs can run. Instances are cheap; make one per profile."""

    #: the backend kind, as registered in the entry-point group
    kind: ClassVar[str] = ""
    #: one-line description for `jupyter cloudpromote backends`
    description: ClassVar[str] = ""
    #: features this backend honours: "cpus", "memory", "gpus", "time_limit", "cancel",
    #: "logs-follow", "outputs", "image"
    features: ClassVar[frozenset[str]] = frozenset()
    #: whether jobs need a container image built before submit
    needs_image: ClassVar[bool] = False
    #: pip requirement that makes this backend available, shown when it is not
    install_hint: ClassVar[str] = ""
    #: seconds between polls when following logs (each poll may cost remote API calls)
    log_poll_seconds: ClassVar[float] = 0.5
    #: default settings of a profile of this kind; profiles and --option override them
    default_options: ClassVar[dict[str, Any]] = {}

    def __init__(self, profile: str, options: dict[str, Any] | None = None) -> None:
        self.profile = profile
        self.options: dict[str, Any] = {**self.default_options, **(options or {})}

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        """(available, message). Cheap: no network calls; say what to install when not."""
        return True, ""

    def validate_options(self) -> None:  # noqa: B027 - optional hook
        """Raise ConfigError naming the setting when the profile cannot work."""

    @abc.abstractmethod
    def submit(self, request: SubmitRequest) -> str:
        """Start the job; return the backend's id for it. Must not block until it ends."""

    @abc.abstractmethod
    def status(self, backend_id: str, job_dir: Path) -> BackendStatus:
        """Report the job's current state (queued, running or a terminal one)."""

    @abc.abstractmethod
    def logs(self, backend_id: str, job_dir: Path) -> str:
        """The run log so far (everything the job printed)."""

    def follow_logs(self, backend_id: str, job_dir: Path) -> Iterator[str]:
        """Yield log text as it arrives until the job ends. Default: poll `logs`."""
        import time

        sent = 0
        while True:
            text = self.logs(backend_id, job_dir)
            if len(text) > sent:
                yield text[sent:]
                sent = len(text)
            if self.status(backend_id, job_dir).state.terminal:
                text = self.logs(backend_id, job_dir)
                if len(text) > sent:
                    yield text[sent:]
                return
            time.sleep(self.log_poll_seconds)

    @abc.abstractmethod
    def cancel(self, backend_id: str, job_dir: Path) -> None:
        """Ask the backend to stop the job. Returns once the request is accepted."""

    def cost_estimate(self, resources: Resources) -> CostEstimate | None:
        """What the job may cost, for the guide; None where running it costs nothing extra."""
        return None

    def collect_outputs(self, backend_id: str, job_dir: Path) -> None:  # noqa: B027
        """Bring outputs back into job_dir/outputs (no-op when written there directly)."""
