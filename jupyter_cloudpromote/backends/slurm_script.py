"""Batch scripts for the `slurm` backend: directives, runtimes, and the rules that keep them safe.

The one rule: nothing a user types is ever read by a shell as code. Concretely,
- `#SBATCH` values are validated against what sbatch's own line parser treats as plain text
  (no whitespace, quotes, backslashes, control characters; `%` is refused in paths because
  Slurm expands `%j` and friends there);
- every value in the script body is passed through `shlex.quote`;
- the job's environment variables and its parameters never appear in the script at all: they
  are written to a separate file of NUL-separated `NAME=value` records (`write_env_file`)
  which the script reads with `read -d ''` and `export "$entry"`, so a value is stored as the
  bytes it is, never expanded or evaluated. That file is private (0600), so credentials given
  as environment variables do not end up in Slurm's saved copy of the batch script either.
"""

from __future__ import annotations

import math
import os
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError

RUNTIMES = ("venv", "docker", "apptainer", "singularity", "pyxis")
CONTAINER_RUNTIMES = frozenset({"docker", "apptainer", "singularity", "pyxis"})
GPU_DIRECTIVES = ("gpus", "gres")

ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Partition, account, QOS, GPU type: Slurm names. Commas allowed (a list of partitions).
_SLURM_NAME_RE = re.compile(r"^[A-Za-z0-9_.+-]+(?:,[A-Za-z0-9_.+-]+)*$")
_JOB_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_DIRECTIVE_NAME_RE = re.compile(r"^--[a-z][a-z0-9-]*$")
# What sbatch's #SBATCH tokenizer would split or unquote, and what bash reads as a new line.
_DIRECTIVE_VALUE_UNSAFE = re.compile(r"[\s\"'\\\x00-\x1f\x7f]")
# Paths used in directives and in mount lists: absolute, no shell or Slurm specials.
_PATH_UNSAFE = re.compile(r"[\s\"'\\`$%*?\[\]{}()<>|&;,:!#~\x00-\x1f\x7f]")
_IMAGE_UNSAFE = re.compile(r"[\s\"'\\`$*?{}()<>|&;!\x00-\x1f\x7f]")
# Directives the backend sets itself: letting a profile override them would break tracking.
RESERVED_DIRECTIVES = frozenset(
    {
        "--output",
        "--error",
        "--input",
        "--chdir",
        "--export",
        "--export-file",
        "--wrap",
        "--parsable",
        "--job-name",
        "--time",
        "--cpus-per-task",
        "--mem",
        "--gpus",
        "--gres",
        "--partition",
        "--account",
        "--qos",
        "--array",
        "--wait",
    }
)
# Variables of the submitting process that would make the job see something other than its
# own environment (a Jupyter server's virtualenv, a kernel's settings).
DROPPED_ENV = (
    "VIRTUAL_ENV",
    "VIRTUAL_ENV_PROMPT",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "CONDA_PREFIX",
    "CONDA_DEFAULT_ENV",
    "CONDA_PROMPT_MODIFIER",
)
DROPPED_ENV_PREFIXES = ("JPY_", "CLOUDPROMOTE_")
SCRIPT_NAME = "job.py"
RUNNER_NAME = "_cloudpromote_runner.py"
CONTAINER_NAME_PREFIX = "cloudpromote-"
JOB_LABEL = "io.cloudpromote.job"


# ---------------------------------------------------------------------------- values


def slurm_time(seconds: float) -> str:
    """A time limit as sbatch's D-HH:MM:SS, rounded up to whole minutes (Slurm's granularity)."""
    if seconds <= 0:
        raise ConfigError("The time limit must be positive.", "Give e.g. --time 30m.")
    minutes = max(1, math.ceil(seconds / 60))
    days, rest = divmod(minutes * 60, 86400)
    hours, rest = divmod(rest, 3600)
    return f"{days}-{hours:02d}:{rest // 60:02d}:00"


def slurm_memory(size_bytes: int) -> str:
    """Memory for --mem in whole mebibytes, rounded up (sbatch's M is 1024**2)."""
    return f"{max(1, math.ceil(size_bytes / 1024**2))}M"


def validate_slurm_name(value: str, setting: str) -> str:
    text = str(value).strip()
    if not _SLURM_NAME_RE.match(text):
        raise ConfigError(
            f"The slurm setting {setting}={value!r} is not a valid Slurm name.",
            f"Give {setting} as letters, digits, '_', '.', '+', '-' (a comma between "
            "several), as `sinfo`/`sacctmgr` show them.",
        )
    return text


def job_name_for(text: str) -> str:
    """A job name Slurm and a shell show as typed: unsafe characters become '-', max 64."""
    name = re.sub(r"-{2,}", "-", _JOB_NAME_UNSAFE.sub("-", str(text))).strip("-.")
    return (name or "cloudpromote-job")[:64]


def validate_path(value: str, setting: str) -> str:
    """An absolute POSIX path that is plain text in a directive, a mount list or a shell word."""
    text = str(value)
    if not text.startswith("/") or _PATH_UNSAFE.search(text) or "/../" in f"{text}/":
        raise ConfigError(
            f"The path {value!r} ({setting}) cannot be used in a Slurm batch script.",
            "Use an absolute path of letters, digits, '/', '.', '_', '-', '+', '=' or '@' "
            "(no spaces, quotes, '%', ',' or ':'): Slurm and container runtimes read these "
            "paths without quoting.",
        )
    return text.rstrip("/") or "/"


def validate_image(value: str, setting: str = "image") -> str:
    text = str(value).strip()
    if not text or _IMAGE_UNSAFE.search(text):
        raise ConfigError(
            f"The slurm setting {setting}={value!r} is not an image reference.",
            "Give a registry image (docker://registry/name:tag), a .sif or squashfs path, or "
            "leave it empty to use the image built for the job.",
        )
    return text


def parse_extra_directives(value: object) -> list[str]:
    """Extra sbatch options from a profile: a list, or one string split on whitespace.

    Each must be `--name=value` or a bare `--flag`, outside the options the backend owns.
    """
    if value is None or value == "":
        return []
    if isinstance(value, str):
        items = value.split()
    elif isinstance(value, (list, tuple)):
        items = [str(item) for item in value]
    else:
        raise ConfigError(
            f"extra_directives={value!r} is neither a list nor a string.",
            "Give a list like ['--constraint=skylake', '--exclusive'].",
        )
    directives = []
    for item in items:
        name, sep, option_value = item.partition("=")
        bad_value = bool(_DIRECTIVE_VALUE_UNSAFE.search(option_value)) or (sep and not option_value)
        if not _DIRECTIVE_NAME_RE.match(name) or bad_value:
            raise ConfigError(
                f"The extra sbatch directive {item!r} is not of the form --name=value.",
                "Write each as --name=value (or a bare --flag) with no spaces, quotes, "
                "backslashes or line breaks, e.g. --constraint=skylake.",
            )
        if name in RESERVED_DIRECTIVES:
            raise ConfigError(
                f"The extra sbatch directive {item!r} sets {name}, which the backend owns.",
                "Use the profile's own settings (partition, account, qos, job_name, the "
                "job's resources) instead of an extra directive.",
            )
        directives.append(item)
    return directives


def pyxis_image(reference: str) -> str:
    """A Docker-style reference as pyxis/enroot spell it: 'host:5000/a/b:t' -> 'host:5000#a/b:t'."""
    if reference.startswith(("docker://", "/", "./")) or "#" in reference:
        return reference.removeprefix("docker://")
    first, slash, rest = reference.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return f"{first}#{rest}"
    return reference


# ---------------------------------------------------------------------------- env file


def write_env_file(path: Path, env: Mapping[str, str]) -> None:
    """NUL-separated NAME=value records, private (0600). Values are any text without NUL."""
    records = []
    for name, value in env.items():
        if not ENV_NAME_RE.match(name):
            raise ConfigError(
                f"{name!r} is not a valid environment variable name.",
                "Use letters, digits and underscores, not starting with a digit.",
            )
        text = str(value)
        if "\0" in text:
            raise ConfigError(
                f"The environment variable {name} holds a NUL character.",
                "Environment values cannot contain NUL; remove it.",
            )
        records.append(f"{name}={text}\0")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("".join(records))
    os.chmod(path, 0o600)  # O_CREAT's mode does not apply to an existing file


def read_env_file(data: bytes) -> dict[str, str]:
    """The inverse of write_env_file (for tests and diagnostics)."""
    env = {}
    for record in data.decode("utf-8").split("\0"):
        if record:
            name, _, value = record.partition("=")
            env[name] = value
    return env


# ---------------------------------------------------------------------------- the script


@dataclass(frozen=True)
class StagePaths:
    """Where one job's files live on the cluster (POSIX paths there)."""

    root: str

    @property
    def work(self) -> str:
        return f"{self.root}/work"

    @property
    def outputs(self) -> str:
        return f"{self.root}/outputs"

    @property
    def log(self) -> str:
        return f"{self.root}/logs/run.log"

    @property
    def slurm(self) -> str:
        return f"{self.root}/slurm"

    @property
    def script(self) -> str:
        return f"{self.slurm}/job.sbatch"

    @property
    def env_file(self) -> str:
        return f"{self.slurm}/job.env"

    @property
    def exit_code_file(self) -> str:
        return f"{self.slurm}/exit-code"


@dataclass(frozen=True)
class BatchPlan:
    """Everything a batch script says, validated. Built by SlurmBackend, rendered here."""

    job_id: str
    job_name: str
    stage: StagePaths
    runtime: str = "venv"
    time_seconds: float | None = None
    cpus: float | None = None
    memory_bytes: int | None = None
    gpus: int = 0
    gpu_directive: str = "gpus"
    gpu_type: str = ""
    partition: str = ""
    account: str = ""
    qos: str = ""
    extra_directives: tuple[str, ...] = ()
    venv: str = ""  # venv runtime: the virtualenv's folder
    image: str = ""  # container runtimes
    container_python: str = "python3"
    docker_network: str = "bridge"
    container_outputs: str = ""  # docker: where the outputs folder is mounted in the image
    dropped_env: tuple[str, ...] = field(default=DROPPED_ENV)

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise ConfigError(
                f"Unknown slurm runtime {self.runtime!r}.", f"Use one of: {', '.join(RUNTIMES)}."
            )
        if self.gpu_directive not in GPU_DIRECTIVES:
            raise ConfigError(
                f"gpu_directive={self.gpu_directive!r} is not 'gpus' or 'gres'.",
                "Use 'gpus' (--gpus=N) or 'gres' (--gres=gpu:N), as your cluster expects.",
            )
        if not re.match(r"^[A-Za-z0-9_-]+$", self.job_id):
            raise ConfigError(f"Job id {self.job_id!r} cannot be used in a batch script.", "")
        if self.job_name != job_name_for(self.job_name):
            raise ConfigError(f"Job name {self.job_name!r} is not a safe Slurm job name.", "")
        validate_path(self.stage.root, "staging folder")
        for setting in ("partition", "account", "qos", "gpu_type"):
            value = getattr(self, setting)
            if value:
                validate_slurm_name(value, setting)
        parse_extra_directives(list(self.extra_directives))
        if self.runtime == "venv":
            validate_path(self.venv, "venv")
        else:
            validate_image(self.image)
        if self.runtime == "docker" and not self.container_outputs:
            raise ConfigError("The docker runtime needs the image's outputs folder.", "")
        if not re.match(r"^[A-Za-z0-9_./-]+$", self.container_python):
            raise ConfigError(
                f"container_python={self.container_python!r} is not a command name or path.",
                "Give e.g. python3 or /opt/venv/bin/python.",
            )
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", self.docker_network):
            raise ConfigError(f"docker_network={self.docker_network!r} is not valid.", "")
        for name in self.dropped_env:
            if not ENV_NAME_RE.match(name):
                raise ConfigError(f"{name!r} is not an environment variable name.", "")

    @property
    def container_name(self) -> str:
        return f"{CONTAINER_NAME_PREFIX}{self.job_id}"

    def directives(self) -> list[str]:
        stage = self.stage
        lines = [
            f"--job-name={self.job_name}",
            f"--output={stage.log}",
            f"--error={stage.log}",
            f"--chdir={stage.work}",
        ]
        if self.partition:
            lines.append(f"--partition={self.partition}")
        if self.account:
            lines.append(f"--account={self.account}")
        if self.qos:
            lines.append(f"--qos={self.qos}")
        if self.time_seconds is not None:
            lines.append(f"--time={slurm_time(self.time_seconds)}")
        if self.cpus is not None:
            lines.append(f"--cpus-per-task={max(1, math.ceil(self.cpus))}")
        if self.memory_bytes is not None:
            lines.append(f"--mem={slurm_memory(self.memory_bytes)}")
        if self.gpus > 0:
            typed = f"{self.gpu_type}:{self.gpus}" if self.gpu_type else str(self.gpus)
            if self.gpu_directive == "gres":
                lines.append(f"--gres=gpu:{typed}")
            else:
                lines.append(f"--gpus={typed}")
        lines.extend(self.extra_directives)
        return lines


def _q(value: object) -> str:
    return shlex.quote(str(value))


def _runtime_block(plan: BatchPlan) -> list[str]:
    stage = plan.stage
    runner = [_q(RUNNER_NAME), _q(SCRIPT_NAME)]
    if plan.runtime == "venv":
        python = f"{plan.venv}/bin/python"
        return [
            f"export VIRTUAL_ENV={_q(plan.venv)}",
            f'export PATH={_q(plan.venv + "/bin")}:"$PATH"',
            "export PYTHONUNBUFFERED=1",
            " ".join([_q(python), "-u", *runner]),
            "status=$?",
        ]
    if plan.runtime == "docker":
        run = [
            "docker",
            "run",
            "--rm",
            "--init",
            "--name",
            '"$container"',
            "--label",
            _q(f"{JOB_LABEL}={plan.job_id}"),
            "--network",
            _q(plan.docker_network),
            "--volume",
            _q(f"{stage.outputs}:{plan.container_outputs}"),
        ]
        if plan.cpus is not None:
            run += ["--cpus", _q(f"{plan.cpus:g}")]
        if plan.memory_bytes is not None:
            run += ["--memory", _q(f"{plan.memory_bytes}b")]
        if plan.gpus > 0:
            run += ["--gpus", _q(str(plan.gpus))]
        run += ['"${docker_env[@]}"', _q(plan.image)]
        return [
            f"container={_q(plan.container_name)}",
            "# The job's variables reach the container by name only: values stay off argv.",
            "docker_env=()",
            'for name in "${job_env_names[@]}"; do docker_env+=(--env "$name"); done',
            "# The image runs as an unprivileged user, which must be able to write outputs.",
            f"chmod a+rwx {_q(stage.outputs)}",
            "# scancel and the time limit send SIGTERM: stop the container, not just the client.",
            'stop_container() { docker stop --time 10 "$container" >/dev/null 2>&1; }',
            "trap 'stop_container; exit 143' TERM INT",
            "# A requeued job reuses the container name.",
            'docker rm --force "$container" >/dev/null 2>&1',
            " ".join(run) + " &",
            'wait "$!"',
            "status=$?",
            "trap - TERM INT",
        ]
    if plan.runtime in ("apptainer", "singularity"):
        command = [plan.runtime, "exec"]
        if plan.gpus > 0:
            command.append("--nv")
        command += [
            "--bind",
            _q(stage.work),
            "--bind",
            _q(stage.outputs),
            "--pwd",
            _q(stage.work),
            _q(plan.image),
            _q(plan.container_python),
            "-u",
            *runner,
        ]
        return ["export PYTHONUNBUFFERED=1", " ".join(command), "status=$?"]
    # pyxis: srun starts the step inside the container (enroot), sharing the job's env.
    mounts = f"{stage.work}:{stage.work},{stage.outputs}:{stage.outputs}"
    command = [
        "srun",
        "--ntasks=1",
        "--export=ALL",
        _q(f"--container-image={pyxis_image(plan.image)}"),
        _q(f"--container-mounts={mounts}"),
        _q(f"--container-workdir={stage.work}"),
        _q(plan.container_python),
        "-u",
        *runner,
    ]
    return ["export PYTHONUNBUFFERED=1", " ".join(command), "status=$?"]


def render_batch_script(plan: BatchPlan) -> str:
    """The complete batch script for `plan` (validated again here)."""
    stage = plan.stage
    lines = ["#!/bin/bash"]
    lines += [f"#SBATCH {directive}" for directive in plan.directives()]
    lines += [
        f"# Generated by jupyter-cloudpromote for job {plan.job_id} (runtime: {plan.runtime}).",
        "# No value typed by a user is written below: the job's environment and parameters",
        "# are read from the env file as NUL-separated NAME=value records, never evaluated.",
        "unset " + " ".join(plan.dropped_env),
        "for name in " + " ".join(f"${{!{p}@}}" for p in DROPPED_ENV_PREFIXES) + "; do",
        '  unset "$name"',
        "done",
        "job_env_names=()",
        "while IFS= read -r -d '' entry; do",
        '  export "$entry"',
        '  job_env_names+=("${entry%%=*}")',
        f"done < {_q(stage.env_file)}",
        f"cd {_q(stage.work)} || exit 1",
    ]
    lines += _runtime_block(plan)
    lines += [
        "# Kept for when Slurm has forgotten the job (no accounting, MinJobAge passed).",
        f"printf '%s\\n' \"$status\" > {_q(stage.exit_code_file)}",
        'exit "$status"',
    ]
    return "\n".join(lines) + "\n"


def job_environment(
    user_env: Mapping[str, str], fixed: Mapping[str, str], dropped: Iterable[str] = ()
) -> dict[str, str]:
    """The job's variables: the user's, then the ones the product sets (which win)."""
    env = {name: str(value) for name, value in user_env.items() if name not in set(dropped)}
    env.update(fixed)
    return env
