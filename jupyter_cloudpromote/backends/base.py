"""The small abstract base every backend implements.

A backend only translates: submit a packaged job, report its status, read its logs, cancel
it, fetch its outputs. States, retries, recording and recovery live in `jobs.py`, once.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

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
            time.sleep(0.5)

    @abc.abstractmethod
    def cancel(self, backend_id: str, job_dir: Path) -> None:
        """Ask the backend to stop the job. Returns once the request is accepted."""

    def cost_estimate(self, resources: Resources) -> CostEstimate | None:
        """What the job may cost, for the guide; None where running it costs nothing extra."""
        return None

    def collect_outputs(self, backend_id: str, job_dir: Path) -> None:  # noqa: B027
        """Bring outputs back into job_dir/outputs (no-op when written there directly)."""
