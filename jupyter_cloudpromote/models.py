"""Plain data passed between the pipeline stages.

Every stage (check, convert, resolve, package, build, submit, watch) takes and returns
these dataclasses, so each stage is usable on its own, without a Jupyter server, and the
server, the magic and the CLI only translate them to and from JSON.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Environment variables the job sees at run time, whatever the backend.
OUTPUT_DIR_ENV = "CLOUDPROMOTE_OUTPUT_DIR"
PARAMETERS_ENV = "CLOUDPROMOTE_PARAMETERS"
JOB_ID_ENV = "CLOUDPROMOTE_JOB_ID"

# Cell tags understood by convert.
SKIP_TAG = "skip-job"
PARAMETERS_TAG = "parameters"


class Severity(str, enum.Enum):
    ERROR = "error"  # the job would fail or do the wrong thing; submit refuses without --force
    WARNING = "warning"  # likely to misbehave unattended
    INFO = "info"  # worth knowing: something was changed or dropped on the way

    @property
    def rank(self) -> int:
        return {"error": 2, "warning": 1, "info": 0}[self.value]


@dataclass(frozen=True)
class Finding:
    """One readiness finding: what will break when the notebook runs unattended, and the fix."""

    severity: Severity
    code: str  # stable identifier, e.g. "input-call", "local-file", "syntax-error"
    message: str
    fix: str
    cell: int | None = None  # index into nb.cells (all cells, not just code cells)
    line: int | None = None  # 1-based line inside the cell
    path: str | None = None  # a file the finding is about, relative to the notebook's folder

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["severity"] = self.severity.value
        return data


@dataclass(frozen=True)
class Parameter:
    """A variable assigned in the notebook's `parameters`-tagged cell."""

    name: str
    default: Any  # the literal default, JSON-compatible, or None when not a literal
    default_source: str  # the right-hand side as written
    type: str  # "int", "float", "bool", "str", "list", "dict", "none" or "any"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ConvertedNotebook:
    """Output of convert: the script and what was learnt while making it."""

    script: str
    parameters: list[Parameter]
    parameters_cell: int | None
    findings: list[Finding]
    # Packages named on %pip / !pip install lines, as written (PEP 508 strings).
    pip_requirements: list[str]
    # Files the script runs or reads through magics (%run x.py, %load y.py), relative paths.
    referenced_files: list[str]
    # True when the script still calls get_ipython(): the runner then provides an IPython shell.
    needs_ipython: bool = False
    # Per code cell, the Python source after IPython syntax was handled (for resolve/check).
    cell_sources: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Requirement:
    """One resolved dependency."""

    name: str  # distribution name as installed (or as mapped)
    specifier: str  # e.g. "==2.1.3", or "" when unpinned
    source: str  # "import", "pip-line", "requirements.txt", "environment.yml", "pyproject.toml"
    imports: tuple[str, ...] = ()  # import names that led here
    optional: bool = False  # imported only inside try/except ImportError
    extras: tuple[str, ...] = ()
    marker: str = ""  # PEP 508 environment marker, without the ';'

    @property
    def pep508(self) -> str:
        extras = f"[{','.join(self.extras)}]" if self.extras else ""
        marker = f"; {self.marker}" if self.marker else ""
        return f"{self.name}{extras}{self.specifier}{marker}"

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["imports"] = list(self.imports)
        data["extras"] = list(self.extras)
        data["requirement"] = self.pep508
        return data


@dataclass(frozen=True)
class KernelEnvironment:
    """What the notebook's own kernel has installed (read by running its Python)."""

    kernel_name: str
    python: str  # absolute path of the kernel's interpreter
    python_version: str  # "3.11.7"
    # import name -> distribution names providing it (importlib.metadata.packages_distributions)
    packages_distributions: dict[str, list[str]]
    # canonical distribution name -> installed version
    versions: dict[str, str]
    stdlib: frozenset[str]
    # Dotted sub-packages of namespace packages -> distributions providing them, e.g.
    # "google.cloud.storage" -> ["google-cloud-storage"] (the top level "google" is shared).
    namespace_modules: dict[str, list[str]] = field(default_factory=dict)

    @property
    def python_major_minor(self) -> str:
        return ".".join(self.python_version.split(".")[:2])


@dataclass
class ResolvedRequirements:
    requirements: list[Requirement]
    findings: list[Finding]
    local_modules: list[str]  # paths relative to the notebook folder (files or package dirs)
    python_version: str  # the kernel's "X.Y.Z"
    environment: KernelEnvironment | None = None

    def lines(self) -> list[str]:
        return [r.pep508 for r in self.requirements]


@dataclass(frozen=True)
class Resources:
    cpus: float | None = None
    memory: str | None = None  # "4G", "512M"
    gpus: int = 0
    time_limit: str | None = None  # "2h", "30m", "01:30:00"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Resources:
        data = data or {}
        return cls(
            cpus=data.get("cpus"),
            memory=data.get("memory"),
            gpus=int(data.get("gpus") or 0),
            time_limit=data.get("time_limit"),
        )


@dataclass
class PromotionOptions:
    """Everything a user can choose for one promotion; shared by preview and submit."""

    backend: str | None = None  # profile name or backend kind; None = configured default
    options: dict[str, str] = field(default_factory=dict)  # per-run profile overrides
    parameters: dict[str, str] = field(default_factory=dict)  # raw "K=V" values, typed later
    resources: Resources = field(default_factory=Resources)
    include: list[str] = field(default_factory=list)  # extra files/folders, notebook-relative
    env: dict[str, str] = field(default_factory=dict)
    base_image: str | None = None
    kernel: str | None = None  # override the notebook's kernelspec name
    force: bool = False  # submit despite error findings
    # Requirement lines edited by the user: used exactly, instead of the resolved ones.
    requirements: list[str] | None = None


@dataclass
class BuildContext:
    """A folder ready for `docker build` (and for the local backend), content-hashed."""

    directory: Path
    files: list[str]  # relative paths inside directory
    content_hash: str  # sha256 hex of every file's path and bytes, plus the base image
    dependency_hash: str  # sha256 hex of what the dependency layer depends on
    dockerfile: str
    requirements: list[str]
    base_image: str
    python_version: str
    notebook_name: str
    needs_ipython: bool = False

    @property
    def image_repository(self) -> str:
        from .package import image_repository_for

        return image_repository_for(self.notebook_name)

    @property
    def image_tag(self) -> str:
        return f"{self.image_repository}:{self.content_hash[:16]}"


@dataclass
class Promotion:
    """Output of the whole front half of the pipeline: what preview shows and submit runs."""

    notebook_path: Path
    converted: ConvertedNotebook
    resolved: ResolvedRequirements
    findings: list[Finding]  # check + convert + resolve, sorted by severity then cell
    dockerfile: str
    parameters: dict[str, Any]  # typed overrides, validated against the parameters cell
    base_image: str
    cost_estimate: dict[str, Any] | None = None  # from the chosen backend, when it costs money

    @property
    def blocking_findings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.ERROR]

    def to_preview(self) -> dict[str, Any]:
        return {
            "notebook": str(self.notebook_path),
            "script": self.converted.script,
            "requirements": self.resolved.lines(),
            "requirement_details": [r.to_dict() for r in self.resolved.requirements],
            "local_modules": self.resolved.local_modules,
            "python_version": self.resolved.python_version,
            "dockerfile": self.dockerfile,
            "base_image": self.base_image,
            "findings": [f.to_dict() for f in self.findings],
            "parameters": [p.to_dict() for p in self.converted.parameters],
            "parameter_values": self.parameters,
            "cost_estimate": self.cost_estimate,
        }


class JobState(str, enum.Enum):
    PENDING = "pending"
    BUILDING = "building"
    QUEUED = "queued"
    RUNNING = "running"
    CANCELLING = "cancelling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


@dataclass(frozen=True)
class Transition:
    time: float
    state: JobState
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"time": self.time, "state": self.state.value, "reason": self.reason}


@dataclass
class JobRecord:
    """A job as the store keeps it."""

    id: str
    notebook: str  # absolute path of the source notebook
    backend: str  # profile name used
    backend_kind: str
    state: JobState
    created: float
    updated: float
    job_dir: str
    reason: str = ""
    backend_id: str | None = None
    exit_code: int | None = None
    image: str | None = None
    content_hash: str | None = None
    spec: dict[str, Any] = field(default_factory=dict)  # options, parameters, resources, env keys
    history: list[Transition] = field(default_factory=list)

    def to_dict(self, with_history: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "notebook": self.notebook,
            "backend": self.backend,
            "backend_kind": self.backend_kind,
            "status": self.state.value,
            "created": self.created,
            "updated": self.updated,
            "job_dir": self.job_dir,
            "reason": self.reason,
            "backend_id": self.backend_id,
            "exit_code": self.exit_code,
            "image": self.image,
            "content_hash": self.content_hash,
            "spec": self.spec,
        }
        if with_history:
            data["history"] = [t.to_dict() for t in self.history]
        return data


@dataclass(frozen=True)
class BackendStatus:
    """What a backend reports about one submitted job."""

    state: JobState
    reason: str = ""
    exit_code: int | None = None
