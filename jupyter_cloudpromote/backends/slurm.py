"""The `slurm` backend: submit the job as a Slurm batch job, locally, on a login node over SSH,
or through slurmrestd (REST API v0.0.38 with a JWT token).

submit() stages the job on a folder the compute nodes can read (by default the job's own
folder, which is shared on a one-machine cluster), writes a batch script
(`slurm_script.render_batch_script`) and runs `sbatch --parsable`. The job then runs, per the
profile's `runtime`, in a cached virtualenv (`venv`), a container on the node's Docker engine
(`docker`), Apptainer/Singularity, or Pyxis (`srun --container-image`).

Status comes from `squeue` while Slurm holds the job, then `scontrol show job` (which knows
finished jobs for MinJobAge), `sacct` (when accounting runs), `sacct -c` (the jobcomp file,
when it does not) and finally the exit code file the batch script writes. While the
controller does not answer (a slurmctld restart, a network blip to the login node) the last
known state is reported, never a failure: Slurm keeps the job, so must we.

Files in the job folder (local, whatever the submission mode):
    slurm/submit.json         Slurm job id, staging folder, mode, what was asked for
    slurm/last-status.json    the last state Slurm reported (used while it is unreachable)
    slurm/final-status.json   the terminal status, once seen
Files in the staging folder (on the cluster; the job folder itself by default):
    work/ outputs/ logs/run.log slurm/job.sbatch slurm/job.env (0600) slurm/exit-code
"""

from __future__ import annotations

import contextlib
import getpass
import io
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..errors import BackendError, ConfigError
from ..models import JOB_ID_ENV, OUTPUT_DIR_ENV, PARAMETERS_ENV, BackendStatus, JobState
from ..package import (
    JOB_OUTPUT_DIR,
    VENV_DIR,
)
from ..resources import format_duration, parse_duration_seconds, parse_memory_bytes
from .base import Backend, SubmitRequest, option_bool, stage_working_copy
from .local import (
    default_venv_cache_dir,
    find_python,
    last_log_lines,
    read_json,
    write_json_atomic,
)
from .slurm_script import (
    CONTAINER_RUNTIMES,
    DROPPED_ENV,
    DROPPED_ENV_PREFIXES,
    ENV_NAME_RE,
    RUNTIMES,
    BatchPlan,
    StagePaths,
    job_name_for,
    parse_extra_directives,
    render_batch_script,
    validate_image,
    validate_path,
    validate_slurm_name,
    write_env_file,
)

COMMAND_TIMEOUT = 60.0
_TAIL_LINES = 10
_HOST_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$|^\[?[0-9a-fA-F:.]+\]?$")
_USER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_SSH_OPTION_RE = re.compile(r"^[A-Za-z]+=[^\s\"'\\]+$")
_JOB_ID_RE = re.compile(r"^\d+(?:_\d+)?$")
_UNREACHABLE_MARKERS = (
    "Unable to contact slurm controller",
    "Socket timed out",
    "Connection refused",
    "Zero Bytes were transmitted",
    "Communication connection failure",
    "Transport endpoint is not connected",
)
_MEMORY_MARKERS = ("exceeded memory limit", "exceeded job memory limit", "oom-kill", "oom_kill")
_UNKNOWN_JOB_MARKERS = ("Invalid job id", "invalid job id")
REST_API = "/slurm/v0.0.38"
# A job submitted through slurmrestd gets only the environment it is given (sbatch would
# pass the submitter's): a plain PATH, then the job's own variables.
_REST_BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}

# Slurm job states (squeue %T / scontrol JobState / sacct State) -> product states.
_ACTIVE_STATES: dict[str, tuple[JobState, str]] = {
    "PENDING": (JobState.QUEUED, "waiting in the Slurm queue"),
    "REQUEUED": (JobState.QUEUED, "requeued by Slurm"),
    "REQUEUE_HOLD": (JobState.QUEUED, "requeued and held by Slurm"),
    "REQUEUE_FED": (JobState.QUEUED, "requeued by Slurm"),
    "RESV_DEL_HOLD": (JobState.QUEUED, "held: its reservation was deleted"),
    "CONFIGURING": (JobState.QUEUED, "nodes allocated, starting up"),
    "RESIZING": (JobState.RUNNING, "running (resizing)"),
    "RUNNING": (JobState.RUNNING, "running"),
    "COMPLETING": (JobState.RUNNING, "finishing"),
    "SUSPENDED": (JobState.RUNNING, "suspended by Slurm"),
    "STOPPED": (JobState.RUNNING, "stopped by a signal (scancel --signal=STOP)"),
    "SIGNALING": (JobState.RUNNING, "running (being signalled)"),
    "STAGE_OUT": (JobState.RUNNING, "staging out"),
}
_TERMINAL_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "OUT_OF_MEMORY",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "REVOKED",
        "SPECIAL_EXIT",
    }
)


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str
    raw: bytes = b""  # stdout as bytes (a tar stream of outputs)

    @property
    def message(self) -> str:
        return (self.stderr or self.stdout).strip()


def _bool(value: Any, setting: str) -> bool:
    return option_bool(value, "slurm", setting)


def slurm_exit_code(text: str) -> tuple[int | None, int]:
    """'3:0' (exit code : signal) -> (3, 0); ('', ...) when Slurm gives none."""
    code, _, signal = str(text).strip().partition(":")
    try:
        return int(code), int(signal or 0)
    except ValueError:
        return None, 0


def parse_scontrol_record(line: str) -> dict[str, str]:
    """`scontrol show job -o` prints Key=Value words; values with spaces only at the end."""
    fields: dict[str, str] = {}
    for word in line.split():
        key, sep, value = word.partition("=")
        if sep and key and key[0].isupper():
            fields[key] = value
    return fields


# ---------------------------------------------------------------------------- commands


class LocalCommands:
    """Runs Slurm's commands on this machine (sbatch on PATH)."""

    where = "this machine"

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.env = env

    def run(
        self, argv: list[str], *, stdin: bytes | None = None, timeout: float = COMMAND_TIMEOUT
    ) -> CommandResult:
        try:
            proc = subprocess.run(
                argv,
                input=stdin,
                capture_output=True,
                timeout=timeout,
                check=False,
                env=self.env,
                stdin=None if stdin is not None else subprocess.DEVNULL,
            )
        except FileNotFoundError as exc:
            raise BackendError(
                f"{argv[0]} was not found on {self.where}.",
                "Install the Slurm client commands (apt-get install slurm-client) or put them "
                "on PATH; for a cluster you reach over SSH, set the profile's host.",
            ) from exc
        except subprocess.TimeoutExpired:
            return CommandResult(124, "", f"{argv[0]} did not answer within {timeout:g}s")
        return CommandResult(
            proc.returncode,
            proc.stdout.decode("utf-8", "replace"),
            proc.stderr.decode("utf-8", "replace"),
            proc.stdout,
        )


class SshCommands(LocalCommands):
    """Runs Slurm's commands on a login node: `ssh ... host -- <quoted argv>`.

    ssh hands the remote side one string for its shell, so each argument is shlex-quoted
    here: the remote shell splits it back into exactly the argv given, never more.
    """

    def __init__(
        self,
        host: str,
        *,
        user: str = "",
        port: int | None = None,
        key: str = "",
        options: list[str] | None = None,
        ssh: str = "ssh",
    ) -> None:
        super().__init__()
        self.host = host
        self.user = user
        self.port = port
        self.key = key
        self.options = list(options or [])
        self.ssh = ssh
        self.where = f"the login node {host}"

    def ssh_argv(self, argv: list[str]) -> list[str]:
        command = [self.ssh, "-o", "BatchMode=yes", "-o", "ConnectTimeout=15"]
        for option in self.options:
            command += ["-o", option]
        if self.port:
            command += ["-p", str(self.port)]
        if self.key:
            command += ["-i", self.key]
        if self.user:
            command += ["-l", self.user]
        return [*command, "--", self.host, " ".join(shlex.quote(arg) for arg in argv)]

    def run(
        self, argv: list[str], *, stdin: bytes | None = None, timeout: float = COMMAND_TIMEOUT
    ) -> CommandResult:
        result = super().run(self.ssh_argv(argv), stdin=stdin, timeout=timeout)
        if result.returncode == 255:  # ssh's own failure, not the remote command's
            return CommandResult(
                255, result.stdout, f"cannot reach {self.host} over ssh: {result.message}", b""
            )
        return result


class SlurmRestUnreachable(Exception):
    """slurmrestd did not answer (or answered with something that is not its JSON)."""


class SlurmRest:
    """A tiny slurmrestd client (openapi/v0.0.38). The token is read from its source on each
    call and only ever sent as a header: never logged, never stored in the job's records."""

    def __init__(self, url: str, user: str, token_env: str, token_file: str) -> None:
        self.url = url.rstrip("/")
        self.user = user
        self.token_env = token_env
        self.token_file = token_file
        self.where = f"slurmrestd at {self.url}"

    def _token(self) -> str:
        if self.token_file:
            try:
                token = Path(self.token_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise BackendError(
                    f"The slurmrestd token file {self.token_file} cannot be read ({exc}).",
                    "Write a token (`scontrol token`) there, or set rest_token_env instead.",
                ) from exc
        else:
            token = os.environ.get(self.token_env, "").strip()
        # `scontrol token` prints SLURM_JWT=...: accept it pasted as it is.
        token = token.removeprefix("SLURM_JWT=")
        if not token:
            source = f"file {self.token_file}" if self.token_file else f"${self.token_env}"
            raise BackendError(
                f"No slurmrestd token in {source}.",
                "Get one with `scontrol token lifespan=...` on the cluster and put it there.",
            )
        return token

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """The decoded JSON answer (Slurm puts its errors in it, even with HTTP 4xx/5xx)."""
        data = json.dumps(body).encode("utf-8") if body is not None else None
        # rest() accepts only http(s) URLs.
        request = urllib.request.Request(  # noqa: S310
            self.url + REST_API + path,
            data=data,
            method=method,
            headers={
                "X-SLURM-USER-NAME": self.user,
                "X-SLURM-USER-TOKEN": self._token(),
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=COMMAND_TIMEOUT) as response:  # noqa: S310
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            if exc.code in (401, 403):
                raise BackendError(
                    f"{self.where} refused the token for user {self.user} (HTTP {exc.code}).",
                    "The token may have expired: make a new one (`scontrol token`).",
                ) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise SlurmRestUnreachable(str(getattr(exc, "reason", exc))) from exc
        try:
            answer = json.loads(raw or b"{}")
        except ValueError as exc:
            raise SlurmRestUnreachable(f"not a JSON answer: {raw[:200]!r}") from exc
        return answer if isinstance(answer, dict) else {}


def rest_errors(answer: dict[str, Any]) -> str:
    """Slurm's error list as one line ('' when there is none)."""
    texts = []
    for error in answer.get("errors") or []:
        if isinstance(error, dict):
            parts = [str(error.get(k) or "") for k in ("error", "description")]
            texts.append(": ".join(part for part in parts if part))
    return "; ".join(texts)


def wait_status_code(status: Any) -> tuple[int | None, int]:
    """slurmrestd v0.0.38 reports a job's exit_code as a raw wait status: (code, signal)."""
    if not isinstance(status, int) or isinstance(status, bool):
        return None, 0
    if status & 0x7F:
        return None, status & 0x7F
    return (status >> 8) & 0xFF, 0


# ---------------------------------------------------------------------------- the backend


class SlurmBackend(Backend):
    """Runs jobs as Slurm batch jobs.

    Options (profile settings; every one can be given with --option NAME=VALUE):
      runtime            venv (default), docker, apptainer, singularity, pyxis
      partition, account, qos   the usual sbatch settings
      job_name           Slurm job name (default: cp-<notebook>-<job id>)
      gpu_directive      gpus (--gpus=N, default) or gres (--gres=gpu:N)
      gpu_type           e.g. a100: --gpus=a100:N
      extra_directives   more sbatch options, a list or a space-separated string of --name=value
      staging_dir        folder the compute nodes can read; the job's files go to
                         <staging_dir>/<job id> (default: the job's own folder)
      staging_shared     whether staging_dir is the same path on this machine (default: true
                         when submitting locally, false over ssh: files go through ssh)
      host, user, port, key, ssh_options   submit on a login node over ssh
      rest_url           submit through slurmrestd instead (e.g. http://127.0.0.1:6820);
                         rest_token_env (default SLURM_JWT) or rest_token_file holds the JWT,
                         rest_user the user it was made for (default: this user)
      image              apptainer/singularity/pyxis/docker: the image to run (default: the
                         image built for the job); docker://..., a .sif or squashfs path
      container_python   the interpreter inside the image (default: the built image's venv)
      docker_network     network of the docker runtime's container (bridge)
      venv_path          venv runtime: an existing virtualenv on the cluster to use
      python             venv runtime: interpreter the virtualenv is built on
      venv_cache_dir, pip_index_url, ca_bundle   where and how virtualenvs are built
    """

    kind = "slurm"
    description = (
        "Submit to a Slurm cluster (sbatch here or on a login node over ssh); runs in a "
        "virtualenv, Docker, Apptainer/Singularity or Pyxis."
    )
    features = frozenset(
        {"cpus", "memory", "gpus", "time_limit", "cancel", "logs-follow", "outputs", "image"}
    )
    needs_image = False  # per instance: true for the container runtimes (see __init__)
    install_hint = "apt-get install slurm-client (sbatch on PATH), or set a login node host"
    default_options: ClassVar[dict[str, Any]] = {
        "runtime": "venv",
        "gpu_directive": "gpus",
        "docker_network": "bridge",
        "staging_dir": "",
    }

    def __init__(self, profile: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(profile, options)
        runtime = str(self.options.get("runtime") or "venv").strip().lower()
        # JobManager builds an image only for backends that need one: the docker runtime
        # always runs the built image, the others only when no image is configured.
        needs = runtime == "docker" or (
            runtime in CONTAINER_RUNTIMES and not self.options.get("image")
        )
        self.__dict__["needs_image"] = needs

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        if shutil.which("sbatch"):
            return True, "sbatch found on PATH."
        return True, (
            "sbatch is not on PATH: profiles must set host to submit on a login node over ssh "
            "(or install slurm-client)."
        )

    # -- options

    @property
    def runtime(self) -> str:
        return str(self.options.get("runtime") or "venv").strip().lower()

    @property
    def over_ssh(self) -> bool:
        via = str(self.options.get("submit_via") or "").strip().lower()
        if via not in ("", "local", "ssh"):
            raise ConfigError(f"submit_via={via!r} is not 'local' or 'ssh'.", "")
        return via == "ssh" or (via == "" and bool(self.options.get("host")))

    @property
    def via_rest(self) -> bool:
        return bool(self.options.get("rest_url"))

    def rest(self) -> SlurmRest:
        options = self.options
        url = str(options.get("rest_url") or "")
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.username:
            raise ConfigError(
                f"rest_url={url!r} is not an http(s) URL of slurmrestd.",
                "Give e.g. http://127.0.0.1:6820 (no user or token in the URL).",
            )
        user = str(options.get("rest_user") or "") or getpass.getuser()
        if not _USER_RE.match(user):
            raise ConfigError(f"The slurm setting rest_user={user!r} is not a user name.", "")
        token_env = str(options.get("rest_token_env") or "SLURM_JWT")
        if not ENV_NAME_RE.match(token_env):
            raise ConfigError(f"rest_token_env={token_env!r} is not a variable name.", "")
        token_file = os.path.expanduser(str(options.get("rest_token_file") or ""))
        return SlurmRest(url, user, token_env, token_file)

    @property
    def staging_shared(self) -> bool:
        value = self.options.get("staging_shared")
        if value is None or value == "" or str(value).lower() == "auto":
            return not self.over_ssh
        return _bool(value, "staging_shared")

    def validate_options(self) -> None:
        options = self.options
        if self.runtime not in RUNTIMES:
            raise ConfigError(
                f"The slurm setting runtime={self.runtime!r} is not known.",
                f"Use one of: {', '.join(RUNTIMES)}.",
            )
        for setting in ("partition", "account", "qos", "gpu_type"):
            if options.get(setting):
                options[setting] = validate_slurm_name(str(options[setting]), setting)
        gpu_directive = str(options.get("gpu_directive") or "gpus")
        if gpu_directive not in ("gpus", "gres"):
            raise ConfigError(
                f"gpu_directive={gpu_directive!r} is not 'gpus' or 'gres'.",
                "Use 'gpus' (--gpus=N) or 'gres' (--gres=gpu:N), as your cluster expects.",
            )
        parse_extra_directives(options.get("extra_directives"))
        if options.get("staging_dir"):
            validate_path(str(options["staging_dir"]), "staging_dir")
        if options.get("image"):
            validate_image(str(options["image"]))
        if options.get("venv_path"):
            validate_path(str(options["venv_path"]), "venv_path")
        self.staging_shared  # noqa: B018 - validates staging_shared
        if self.via_rest:
            self.rest()
            if self.over_ssh or not self.staging_shared:
                raise ConfigError(
                    "Submitting through slurmrestd needs a staging folder this machine shares "
                    "with the cluster (files cannot be copied through the REST API).",
                    "Drop host/submit_via=ssh and set staging_dir to a shared folder.",
                )
            if parse_extra_directives(options.get("extra_directives")):
                raise ConfigError(
                    "extra_directives cannot be sent through slurmrestd (its API takes job "
                    "properties, not #SBATCH lines).",
                    "Drop extra_directives, or submit with sbatch (leave rest_url empty).",
                )
        if self.over_ssh:
            self._ssh_settings()
            if not options.get("staging_dir"):
                raise ConfigError(
                    "Submitting over ssh needs staging_dir: a folder on the cluster the "
                    "compute nodes can read.",
                    "Set the profile's staging_dir, e.g. /scratch/<you>/cloudpromote.",
                )
            if self.runtime == "venv" and not options.get("venv_path"):
                raise ConfigError(
                    "The venv runtime over ssh needs venv_path: an existing virtualenv on the "
                    "cluster with the job's requirements.",
                    "Set venv_path, or use runtime=apptainer, pyxis or docker (the image "
                    "carries the requirements).",
                )

    def _ssh_settings(self) -> SshCommands:
        options = self.options
        host = str(options.get("host") or "")
        if not _HOST_RE.match(host):
            raise ConfigError(
                f"The slurm setting host={host!r} is not a host name.",
                "Give the login node's host name or address, e.g. login.cluster.example.org.",
            )
        user = str(options.get("user") or "")
        if user and not _USER_RE.match(user):
            raise ConfigError(f"The slurm setting user={user!r} is not a user name.", "")
        port: int | None = None
        if options.get("port"):
            try:
                port = int(options["port"])
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"port={options['port']!r} is not a number.", "") from exc
        key = str(options.get("key") or "")
        if key:
            key = os.path.expanduser(key)
            if not Path(key).is_file():
                raise ConfigError(
                    f"The ssh key {key} does not exist.", "Give the path of a private key file."
                )
        raw = options.get("ssh_options") or []
        ssh_options = raw.split() if isinstance(raw, str) else [str(item) for item in raw]
        for option in ssh_options:
            if not _SSH_OPTION_RE.match(option):
                raise ConfigError(
                    f"The ssh option {option!r} is not of the form Name=value.",
                    "Give ssh -o options like StrictHostKeyChecking=accept-new.",
                )
        return SshCommands(host, user=user, port=port, key=key, options=ssh_options)

    def commands(self) -> LocalCommands:
        if self.over_ssh:
            return self._ssh_settings()
        return LocalCommands(_submitter_env())

    # -- submit

    def stage_for(self, job_id: str, job_dir: Path) -> StagePaths:
        staging = str(self.options.get("staging_dir") or "")
        if staging:
            return StagePaths(f"{validate_path(staging, 'staging_dir')}/{job_id}")
        return StagePaths(validate_path(str(Path(job_dir).absolute()), "job folder"))

    def submit(self, request: SubmitRequest) -> str:
        self.validate_options()
        job_dir = Path(request.job_dir).absolute()
        stage = self.stage_for(request.job_id, job_dir)
        runtime = self.runtime
        records = job_dir / "slurm"
        records.mkdir(parents=True, exist_ok=True)
        for stale in ("final-status.json", "last-status.json", "submit.json"):
            (records / stale).unlink(missing_ok=True)
        # Files are written here, then either are the staging folder, or are copied there.
        local_root = Path(stage.root) if self.staging_shared else records / "upload"
        if not self.staging_shared:
            shutil.rmtree(local_root, ignore_errors=True)
        job_env = self._write_stage(request, local_root, stage, runtime)
        plan = self._plan(request, stage, runtime, job_dir)
        script = render_batch_script(plan)
        script_path = local_root / "slurm" / "job.sbatch"
        script_path.write_text(script, encoding="utf-8")
        if self.via_rest:
            started = time.monotonic()
            slurm_id = self._rest_submit(script, plan, job_env)
            self._write_submit_record(records, slurm_id, stage, plan, time.monotonic() - started)
            return slurm_id
        commands = self.commands()
        if not self.staging_shared:
            self._upload(commands, local_root, stage)
        started = time.monotonic()
        result = commands.run(["sbatch", "--parsable", stage.script])
        sbatch_seconds = time.monotonic() - started
        if result.returncode != 0:
            raise BackendError(
                f"sbatch refused the job on {commands.where}: {result.message}",
                _sbatch_fix(result.message),
            )
        slurm_id = result.stdout.strip().splitlines()[-1].split(";")[0] if result.stdout else ""
        if not _JOB_ID_RE.match(slurm_id):
            raise BackendError(f"sbatch printed no job id: {result.stdout!r}", "")
        self._write_submit_record(records, slurm_id, stage, plan, sbatch_seconds)
        return slurm_id

    def _write_submit_record(
        self, records: Path, slurm_id: str, stage: StagePaths, plan: BatchPlan, seconds: float
    ) -> None:
        write_json_atomic(
            records / "submit.json",
            {
                "slurm_job_id": slurm_id,
                "stage": stage.root,
                "staging_shared": self.staging_shared,
                "over_ssh": self.over_ssh,
                "rest_url": str(self.options.get("rest_url") or ""),  # never the token
                "runtime": plan.runtime,
                "time_limit_seconds": plan.time_seconds,
                "memory_bytes": plan.memory_bytes,
                "submitted": time.time(),
                "sbatch_seconds": round(seconds, 3),
            },
        )

    def _rest_submit(self, script: str, plan: BatchPlan, job_env: dict[str, str]) -> str:
        """POST the script with the job's settings as properties: the #SBATCH lines in the
        script are sbatch's business, slurmrestd does not read them."""
        stage = plan.stage
        job: dict[str, Any] = {
            "name": plan.job_name,
            "current_working_directory": stage.work,
            "standard_output": stage.log,
            "standard_error": stage.log,
            # The values travel as JSON data, never as script text.
            "environment": {**_REST_BASE_ENV, **job_env},
        }
        for setting in ("partition", "account", "qos"):
            if getattr(plan, setting):
                job[setting] = getattr(plan, setting)
        if plan.time_seconds is not None:
            job["time_limit"] = max(1, math.ceil(plan.time_seconds / 60))
        if plan.cpus is not None:
            job["cpus_per_task"] = max(1, math.ceil(plan.cpus))
        if plan.memory_bytes is not None:
            job["memory_per_node"] = max(1, math.ceil(plan.memory_bytes / 1024**2))
        if plan.gpus > 0:
            typed = f"{plan.gpu_type}:{plan.gpus}" if plan.gpu_type else str(plan.gpus)
            job["gpus"] = typed
        rest = self.rest()
        try:
            answer = rest.call("POST", "/job/submit", {"script": script, "job": job})
        except SlurmRestUnreachable as exc:
            raise BackendError(
                f"{rest.where} did not answer: {exc}", "Check that slurmrestd is running."
            ) from exc
        slurm_id = str(answer.get("job_id") or "")
        if not _JOB_ID_RE.match(slurm_id):
            message = rest_errors(answer) or f"no job id in its answer {answer!r}"
            raise BackendError(f"{rest.where} refused the job: {message}", _sbatch_fix(message))
        return slurm_id

    def _write_stage(
        self, request: SubmitRequest, root: Path, stage: StagePaths, runtime: str
    ) -> dict[str, str]:
        parameters_json = stage_working_copy(request, root)
        for folder in ("outputs", "logs", "slurm"):
            (root / folder).mkdir(parents=True, exist_ok=True)
        (root / "slurm" / "exit-code").unlink(missing_ok=True)
        outputs = JOB_OUTPUT_DIR if runtime == "docker" else stage.outputs
        env = {
            name: str(value)
            for name, value in request.env.items()
            if name not in DROPPED_ENV and not name.startswith(DROPPED_ENV_PREFIXES)
        }
        env.update(
            {
                OUTPUT_DIR_ENV: outputs,
                PARAMETERS_ENV: parameters_json,
                JOB_ID_ENV: request.job_id,
            }
        )
        write_env_file(root / "slurm" / "job.env", env)
        return env

    def _plan(
        self, request: SubmitRequest, stage: StagePaths, runtime: str, job_dir: Path
    ) -> BatchPlan:
        options = self.options
        resources = request.resources
        time_seconds = (
            parse_duration_seconds(resources.time_limit) if resources.time_limit else None
        )
        memory = parse_memory_bytes(str(resources.memory)) if resources.memory else None
        name = str(options.get("job_name") or "")
        job_name = (
            job_name_for(name)
            if name
            else job_name_for(f"cp-{Path(request.context.notebook_name).stem}-{request.job_id}")
        )
        venv = ""
        image = ""
        container_python = str(options.get("container_python") or "")
        if runtime == "venv":
            venv = str(options.get("venv_path") or "") or str(self._build_venv(request, job_dir))
        else:
            image = str(options.get("image") or request.image or "")
            if not image:
                raise BackendError(
                    f"The {runtime} runtime has no image to run.",
                    "Set the profile's image, or let cloudpromote build one (leave image "
                    "empty; the job is then built before it is submitted).",
                )
            if runtime in ("apptainer", "singularity") and not (
                image.startswith(("docker://", "oras://", "library://", "/"))
            ):
                image = f"docker://{image}"
            if not container_python:
                # The image built for the job has its requirements in a venv at VENV_DIR.
                container_python = "python3" if options.get("image") else f"{VENV_DIR}/bin/python"
        return BatchPlan(
            job_id=request.job_id,
            job_name=job_name,
            stage=stage,
            runtime=runtime,
            time_seconds=time_seconds,
            cpus=float(resources.cpus) if resources.cpus is not None else None,
            memory_bytes=memory,
            gpus=int(resources.gpus or 0),
            gpu_directive=str(options.get("gpu_directive") or "gpus"),
            gpu_type=str(options.get("gpu_type") or ""),
            partition=str(options.get("partition") or ""),
            account=str(options.get("account") or ""),
            qos=str(options.get("qos") or ""),
            extra_directives=tuple(parse_extra_directives(options.get("extra_directives"))),
            venv=venv,
            image=image,
            container_python=container_python or "python3",
            docker_network=str(options.get("docker_network") or "bridge"),
            container_outputs=JOB_OUTPUT_DIR,
        )

    def _build_venv(self, request: SubmitRequest, job_dir: Path) -> Path:
        """Build (or reuse) the job's virtualenv here, before sbatch: the staging folder and
        the cache are on a filesystem the node shares, and login nodes have the network that
        compute nodes often lack."""
        from ..venvs import ensure_venv

        options = self.options
        build_log = job_dir / "logs" / "build.log"
        build_log.parent.mkdir(parents=True, exist_ok=True)
        with build_log.open("a", encoding="utf-8") as log:

            def progress(line: str) -> None:
                log.write(line.rstrip("\n") + "\n")
                log.flush()

            python = find_python(request.context.python_version, str(options.get("python") or ""))
            progress(f"Python for the job's virtualenv: {python}")
            return ensure_venv(
                list(request.context.requirements),
                python=python,
                cache_dir=Path(options.get("venv_cache_dir") or default_venv_cache_dir()),
                progress=progress,
                index_url=str(options.get("pip_index_url") or ""),
                ca_bundle=str(options.get("ca_bundle") or "") or None,
            )

    @staticmethod
    def _upload(commands: LocalCommands, local_root: Path, stage: StagePaths) -> None:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            tar.add(local_root, arcname=".")
        result = commands.run(
            ["sh", "-c", 'mkdir -p -- "$1" && tar -x -f - -C "$1"', "sh", stage.root],
            stdin=buffer.getvalue(),
            timeout=600,
        )
        if result.returncode != 0:
            raise BackendError(
                f"Copying the job to {stage.root} on {commands.where} failed: {result.message}",
                "Check that staging_dir exists (or can be made) and is writable there.",
            )

    # -- status

    def _records(self, job_dir: Path) -> dict[str, Any]:
        return read_json(Path(job_dir) / "slurm" / "submit.json") or {}

    def _stage(self, job_dir: Path) -> StagePaths:
        root = self._records(job_dir).get("stage") or str(Path(job_dir).absolute())
        return StagePaths(str(root))

    def _stage_is_local(self, job_dir: Path) -> bool:
        return bool(self._records(job_dir).get("staging_shared", True))

    def status(self, backend_id: str, job_dir: Path) -> BackendStatus:
        job_dir = Path(job_dir)
        records = job_dir / "slurm"
        final = read_json(records / "final-status.json")
        if final is not None and final.get("backend_id") == backend_id:
            return BackendStatus(JobState(final["state"]), final["reason"], final["exit_code"])
        commands = self.commands()
        slurm_state, slurm_reason = "", ""
        rest_found: tuple[str, int | None, int] | None = None
        if self.via_rest:
            rest = self.rest()
            try:
                answer = rest.call("GET", f"/job/{backend_id}")
            except SlurmRestUnreachable as exc:
                return self._unreachable(job_dir, rest.where, str(exc))
            jobs = [job for job in answer.get("jobs") or [] if isinstance(job, dict)]
            errors = rest_errors(answer)
            if jobs:
                slurm_state = str(jobs[0].get("job_state") or "").split()[0].rstrip("+")
                slurm_reason = str(jobs[0].get("state_reason") or "")
                if slurm_state in _TERMINAL_STATES:
                    code, signal = wait_status_code(jobs[0].get("exit_code"))
                    rest_found = (slurm_state, code, signal)
            elif errors and not any(marker in errors for marker in _UNKNOWN_JOB_MARKERS):
                return self._unreachable(job_dir, rest.where, errors)
        else:
            queue = commands.run(["squeue", "--noheader", "--states=all", "--jobs", backend_id,
                                  "--format=%T|%r"])  # fmt: skip
            if queue.returncode == 0 and queue.stdout.strip():
                slurm_state, _, slurm_reason = queue.stdout.strip().splitlines()[0].partition("|")
                slurm_state = slurm_state.strip().split()[0].rstrip("+")
            elif queue.returncode != 0 and not _unknown_job(queue):
                return self._unreachable(job_dir, commands.where, queue.message)
        if slurm_state in _ACTIVE_STATES:
            state, text = _ACTIVE_STATES[slurm_state]
            reason = text
            if slurm_state == "PENDING" and slurm_reason.strip() not in ("", "None"):
                reason = f"{text} ({slurm_reason.strip()})"
            status = BackendStatus(state, reason)
            records.mkdir(parents=True, exist_ok=True)
            write_json_atomic(
                records / "last-status.json",
                {"backend_id": backend_id, "state": state.value, "reason": reason},
            )
            return status
        found = rest_found if self.via_rest else self._finished_state(commands, backend_id)
        if found is None and slurm_state:
            found = (slurm_state, None, 0)
        if found is None:
            exit_code = self._exit_code_file(commands, job_dir)
            if exit_code is None:
                status = BackendStatus(
                    JobState.FAILED,
                    f"Slurm no longer knows job {backend_id} (it is past MinJobAge and "
                    "accounting is off) and the job left no exit code: it never ran to the "
                    "end. " + self._log_tail_text(job_dir),
                )
                return self._save_final(job_dir, backend_id, status)
            found = ("COMPLETED" if exit_code == 0 else "FAILED", exit_code, 0)
        state_name, exit_code, signal = found
        status = self._terminal_status(job_dir, backend_id, state_name, exit_code, signal)
        return self._save_final(job_dir, backend_id, status)

    def _finished_state(
        self, commands: LocalCommands, backend_id: str
    ) -> tuple[str, int | None, int] | None:
        """(state, exit code, signal) of a finished job from scontrol, sacct or sacct -c."""
        shown = commands.run(["scontrol", "show", "job", "--oneliner", backend_id])
        if shown.returncode == 0 and shown.stdout.strip():
            fields = parse_scontrol_record(shown.stdout.strip().splitlines()[0])
            state = fields.get("JobState", "")
            if state in _TERMINAL_STATES:
                code, signal = slurm_exit_code(fields.get("ExitCode", ""))
                return state, code, signal
        for argv in (
            ["sacct", "--noheader", "--parsable2", "--allocations", "--jobs", backend_id,
             "--format=JobID,State,ExitCode"],
            ["sacct", "--completion", "--noheader", "--parsable2", "--starttime=now-30days",
             "--jobs", backend_id, "--format=JobID,State,ExitCode"],
        ):  # fmt: skip
            result = commands.run(argv)
            if result.returncode != 0:
                continue  # accounting disabled, or no jobcomp file: try the next source
            for line in result.stdout.splitlines():
                parts = line.strip().split("|")
                if len(parts) >= 3 and parts[0] == backend_id:
                    state = parts[1].split()[0] if parts[1] else ""
                    if state in _TERMINAL_STATES:
                        code, signal = slurm_exit_code(parts[2])
                        return state, code, signal
        return None

    def _exit_code_file(self, commands: LocalCommands, job_dir: Path) -> int | None:
        stage = self._stage(job_dir)
        if self._stage_is_local(job_dir):
            try:
                text = Path(stage.exit_code_file).read_text(encoding="utf-8")
            except OSError:
                return None
        else:
            result = commands.run(["cat", "--", stage.exit_code_file])
            if result.returncode != 0:
                return None
            text = result.stdout
        try:
            return int(text.strip())
        except ValueError:
            return None

    def _unreachable(self, job_dir: Path, where: str, message: str) -> BackendStatus:
        last = read_json(Path(job_dir) / "slurm" / "last-status.json") or {}
        state = JobState(last.get("state") or JobState.QUEUED.value)
        first = message.splitlines()[0] if message else "no answer"
        return BackendStatus(
            state, f"Slurm on {where} is not answering ({first}); still {state.value}, retrying"
        )

    def _log_tail_text(self, job_dir: Path) -> str:
        lines = self._log_tail(job_dir)
        if not lines:
            return "The job printed nothing."
        return "Last log lines:\n" + "\n".join(lines)

    def _log_tail(self, job_dir: Path) -> list[str]:
        if self._stage_is_local(job_dir):
            return last_log_lines(Path(self._stage(job_dir).log), _TAIL_LINES)
        text = self.logs("", job_dir)
        return [line for line in text.splitlines() if line.strip()][-_TAIL_LINES:]

    def _terminal_status(
        self, job_dir: Path, backend_id: str, state: str, exit_code: int | None, signal: int
    ) -> BackendStatus:
        records = self._records(job_dir)
        tail = self._log_tail_text(job_dir)
        if state == "COMPLETED" and (exit_code or 0) == 0:
            return BackendStatus(JobState.SUCCEEDED, "exited with code 0", 0)
        if state == "CANCELLED":
            return BackendStatus(JobState.CANCELLED, "cancelled (scancel)", exit_code)
        if state == "TIMEOUT":
            limit = records.get("time_limit_seconds")
            limit_text = f"{format_duration(float(limit))} " if limit else ""
            return BackendStatus(
                JobState.FAILED,
                f"hit its {limit_text}time limit and was stopped by Slurm; raise the time "
                f"limit (--time) or make the job faster. {tail}",
                exit_code,
            )
        if state == "OUT_OF_MEMORY" or (
            state in ("FAILED", "CANCELLED") and _memory_killed(self._log_tail(job_dir))
        ):
            memory = records.get("memory_bytes")
            limit_text = f" (limit {_format_mib(int(memory))})" if memory else ""
            return BackendStatus(
                JobState.FAILED,
                f"ran out of memory{limit_text}; raise the memory resource (--memory). {tail}",
                exit_code,
            )
        if state == "NODE_FAIL":
            return BackendStatus(
                JobState.FAILED,
                "the node running it failed (Slurm NODE_FAIL); submit it again",
                exit_code,
            )
        if state == "PREEMPTED":
            return BackendStatus(
                JobState.FAILED,
                "was preempted by a higher-priority job (Slurm PREEMPTED); submit it again, "
                "or use a partition or QOS without preemption",
                exit_code,
            )
        if state in ("BOOT_FAIL", "DEADLINE", "REVOKED", "SPECIAL_EXIT"):
            return BackendStatus(
                JobState.FAILED, f"Slurm ended it with state {state}. {tail}", exit_code
            )
        if signal:
            summary = f"was killed by signal {signal}"
        elif exit_code is not None:
            summary = f"exited with code {exit_code}"
        else:
            summary = f"ended with Slurm state {state}"
        return BackendStatus(JobState.FAILED, f"{summary}; {tail[0].lower()}{tail[1:]}", exit_code)

    @staticmethod
    def _save_final(job_dir: Path, backend_id: str, status: BackendStatus) -> BackendStatus:
        records = Path(job_dir) / "slurm"
        records.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            records / "final-status.json",
            {
                "backend_id": backend_id,
                "state": status.state.value,
                "reason": status.reason,
                "exit_code": status.exit_code,
            },
        )
        return status

    # -- logs, cancel, outputs

    def logs(self, backend_id: str, job_dir: Path) -> str:
        job_dir = Path(job_dir)
        stage = self._stage(job_dir)
        if self._stage_is_local(job_dir):
            with contextlib.suppress(OSError):
                return Path(stage.log).read_text(encoding="utf-8", errors="replace")
            return ""
        result = self.commands().run(["cat", "--", stage.log])
        saved = job_dir / "logs" / "run.log"
        if result.returncode != 0:
            with contextlib.suppress(OSError):
                return saved.read_text(encoding="utf-8", errors="replace")
            return ""
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(result.stdout, encoding="utf-8")
        return result.stdout

    def cancel(self, backend_id: str, job_dir: Path) -> None:
        if self.via_rest:
            rest = self.rest()
            try:
                answer = rest.call("DELETE", f"/job/{backend_id}")
            except SlurmRestUnreachable as exc:
                raise BackendError(
                    f"{rest.where} did not answer, so Slurm job {backend_id} was not "
                    f"cancelled: {exc}",
                    "Try again once slurmrestd answers, or run scancel yourself.",
                ) from exc
            errors = rest_errors(answer)
            if errors and not any(marker in errors for marker in _UNKNOWN_JOB_MARKERS):
                raise BackendError(
                    f"{rest.where} could not cancel Slurm job {backend_id}: {errors}",
                    "Try again, or run scancel yourself.",
                )
            return
        commands = self.commands()
        result = commands.run(["scancel", backend_id])
        if result.returncode != 0 and not _unknown_job(result):
            raise BackendError(
                f"scancel could not cancel Slurm job {backend_id} on {commands.where}: "
                f"{result.message}",
                "Try again once Slurm answers, or run scancel yourself.",
            )

    def collect_outputs(self, backend_id: str, job_dir: Path) -> None:
        """Copy outputs (and the log) from the staging folder into the job folder."""
        job_dir = Path(job_dir).absolute()
        stage = self._stage(job_dir)
        target = job_dir / "outputs"
        if Path(stage.root) == job_dir and self._stage_is_local(job_dir):
            return  # the job wrote straight into the job folder
        target.mkdir(parents=True, exist_ok=True)
        if self._stage_is_local(job_dir):
            if Path(stage.outputs).is_dir():
                shutil.copytree(stage.outputs, target, dirs_exist_ok=True, symlinks=True)
            with contextlib.suppress(OSError):
                (job_dir / "logs").mkdir(exist_ok=True)
                shutil.copyfile(stage.log, job_dir / "logs" / "run.log")
            return
        self.logs(backend_id, job_dir)
        commands = self.commands()
        result = commands.run(["tar", "-c", "-f", "-", "-C", stage.outputs, "."], timeout=600)
        if result.returncode != 0:
            raise BackendError(
                f"Fetching outputs from {stage.outputs} on {commands.where} failed: "
                f"{result.message}",
                "",
            )
        with tarfile.open(fileobj=io.BytesIO(result.raw), mode="r") as tar:
            tar.extractall(target, filter="data")


def _submitter_env() -> dict[str, str]:
    """sbatch's environment: ours minus what would leak the submitter's Python into the job."""
    return {
        name: value
        for name, value in os.environ.items()
        if name not in DROPPED_ENV and not name.startswith(DROPPED_ENV_PREFIXES)
    }


def _memory_killed(log_lines: list[str]) -> bool:
    """Slurm without cgroups (jobacct_gather's OverMemoryKill) ends such a job FAILED with
    signal 9 and says why only in the job's output; with cgroups the state is OUT_OF_MEMORY."""
    text = "\n".join(log_lines).lower()
    return any(marker in text for marker in _MEMORY_MARKERS)


def _unknown_job(result: CommandResult) -> bool:
    return any(marker in result.message for marker in _UNKNOWN_JOB_MARKERS)


def _format_mib(size: int) -> str:
    mib = size / 1024**2
    return f"{mib / 1024:g}G" if mib >= 1024 and mib % 1024 == 0 else f"{mib:g}M"


def _sbatch_fix(message: str) -> str:
    lowered = message.lower()
    if "invalid partition" in lowered:
        return "Set the profile's partition to one `sinfo` lists."
    if "invalid account" in lowered or "association" in lowered:
        return "Set account (and qos) to ones `sacctmgr show assoc user=$USER` lists."
    if "qos" in lowered:
        return "Set qos to one your account may use (`sacctmgr show qos`)."
    if "time limit" in lowered:
        return "Lower the job's time limit (--time) to what the partition allows (`sinfo`)."
    if "memory" in lowered or "cpu" in lowered or "configuration is not available" in lowered:
        return "Ask for fewer CPUs, less memory or fewer GPUs than the partition's nodes have."
    if "unable to contact" in lowered:
        return "Check that slurmctld is running (`scontrol ping`)."
    return "See sbatch's message above; check the profile's Slurm settings."
