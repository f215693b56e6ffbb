"""The `aws-batch` backend: the job's image as an AWS Batch container job.

Submit pushes the image where Batch can pull it (ECR by default), stages the `input` setting
to S3, registers a job definition (or reuses the one registered for the same image and
settings: its name carries their hash), and submits to the profile's job queue with vCPU,
memory and GPU requirements, environment, time limit and retries. The job's command is a
small standard-library stager around the usual runner: it downloads the input into
/home/cloudpromote/inputs (CLOUDPROMOTE_INPUT_DIR), runs the notebook's script, and uploads
the outputs folder to s3://<bucket>/<prefix>/<job id>/outputs/, using the job role's
credentials. Status comes from DescribeJobs, logs from CloudWatch Logs, cancel is
TerminateJob, and outputs are downloaded from S3 into the job's outputs folder at the end.

AWS credentials are taken from the standard chain on this machine and never written into
the image, the job definition, the job's environment or any log.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import zlib
from pathlib import Path
from typing import Any, ClassVar

from .. import job_stager
from ..aws import (
    INSTALL_HINT,
    ROLE_ARN_RE,
    batch_name,
    check_job_env,
    client_for,
    credential_values,
    endpoint_for,
    option_text,
    redact,
    region_of,
    require_option,
    s3_join,
    stage_job_input,
    storage_options,
    translate_error,
    validate_common_options,
)
from ..errors import BackendError, ConfigError
from ..models import JOB_ID_ENV, OUTPUT_DIR_ENV, PARAMETERS_ENV, BackendStatus, JobState, Resources
from ..package import JOB_HOME, JOB_OUTPUT_DIR, RUNNER_NAME, SCRIPT_NAME, _slug
from ..pricing import CostEstimate, estimate
from ..resources import parse_duration_seconds, parse_memory_bytes
from ..runner import TIME_LIMIT_ENV, TIME_LIMIT_EXIT_CODE
from .base import Backend, SubmitRequest, option_bool

JOB_INPUT_DIR = f"{JOB_HOME}/inputs"
STATE_FILE = "aws-batch.json"
CANCEL_REASON = "Cancelled by the user through cloudpromote"
MIN_ATTEMPT_SECONDS = 60  # AWS Batch refuses shorter attempt durations
# Batch's own limit sits this far past the runner's, so a job stopped by its time limit
# still uploads its outputs before Batch would kill it.
STAGING_GRACE_SECONDS = 300
_TAIL_LINES = 10
_QUEUED_STATES = {
    "SUBMITTED": "submitted to AWS Batch",
    "PENDING": "waiting for dependencies (PENDING)",
    "RUNNABLE": "waiting for capacity in the job queue's compute environment (RUNNABLE)",
    "STARTING": "starting: pulling the image and starting the container (STARTING)",
}


def stager_command() -> list[str]:
    """The job's command: the stager's source, compressed into `python -c`, then the runner."""
    source = Path(job_stager.__file__).read_bytes()
    packed = base64.b64encode(zlib.compress(source, 9)).decode("ascii")
    code = f"import base64,zlib;exec(zlib.decompress(base64.b64decode('{packed}')))"
    return ["python", "-c", code, "python", RUNNER_NAME, SCRIPT_NAME]


def _bool(value: Any, setting: str) -> bool:
    return option_bool(value, "aws-batch", setting)


def _as_int(value: Any, name: str, low: int, high: int) -> int:
    try:
        number = int(str(value).strip())
    except ValueError as exc:
        raise ConfigError(
            f"The setting {name!r} must be a whole number, got {value!r}.", ""
        ) from exc
    if not low <= number <= high:
        raise ConfigError(f"The setting {name!r} must be between {low} and {high}.", "")
    return number


def _tail(text: str, count: int = _TAIL_LINES) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-count:])


def resource_requirements(resources: Resources, options: dict[str, Any]) -> list[dict[str, str]]:
    """Batch resourceRequirements: VCPU (count), MEMORY (MiB), GPU (count) when asked for."""
    cpus = resources.cpus if resources.cpus is not None else float(options.get("cpus") or 1)
    if cpus <= 0:
        raise ConfigError(f"CPU count must be positive, got {cpus}.", "")
    memory_text = resources.memory or str(options.get("memory") or "2G")
    memory_mib = math.ceil(parse_memory_bytes(memory_text) / 1024**2)
    if memory_mib < 4:
        raise ConfigError(f"Memory {memory_text!r} is too small.", "AWS Batch needs at least 4M.")
    requirements = [
        {"type": "VCPU", "value": f"{cpus:g}"},
        {"type": "MEMORY", "value": str(memory_mib)},
    ]
    if resources.gpus and resources.gpus > 0:
        requirements.append({"type": "GPU", "value": str(int(resources.gpus))})
    return requirements


class AwsBatchBackend(Backend):
    kind = "aws-batch"
    description = "Runs the job's image as an AWS Batch job; data staged through S3."
    features = frozenset(
        {
            "cpus",
            "memory",
            "gpus",
            "time_limit",
            "cancel",
            "logs-follow",
            "outputs",
            "image",
            "input",
        }
    )
    needs_image = True
    log_poll_seconds = 2.0  # CloudWatch: every poll is an API call
    install_hint = INSTALL_HINT
    default_options: ClassVar[dict[str, Any]] = {
        "region": "",  # empty: the standard chain's region (AWS_DEFAULT_REGION, config)
        "endpoint_url": "",  # VPC endpoint or emulator, for every AWS service used
        "aws_profile": "",  # a profile of ~/.aws/config; empty: the standard chain
        "job_queue": "",  # required
        "bucket": "",  # required: inputs and outputs are staged here
        "prefix": "cloudpromote",  # folder inside the bucket: <prefix>/<job id>/...
        "job_role_arn": "",  # required: the role the job's container runs as (S3 access)
        "execution_role_arn": "",  # Fargate only: pulls the image, writes the logs
        "platform": "EC2",  # or FARGATE
        "retries": 0,  # extra attempts after a failed one (Batch allows up to 9)
        "registry": "ecr",  # "ecr", "none" (use the local name), or a registry prefix
        "ecr_repository_prefix": "",
        "input": "",  # a local file/folder or an s3:// URI, available in the job
        "s3_auth": "role",  # "anonymous": unsigned S3 requests in the job (emulators)
        "log_group": "/aws/batch/job",
        "cpus": 1,  # defaults when the job asks for none
        "memory": "2G",
    }

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        return True, (
            "boto3 installed; credentials come from the standard AWS chain and are checked "
            "at submit."
        )

    def validate_options(self) -> None:
        options = self.options
        validate_common_options(options, self.kind)
        require_option(
            options, "job_queue", self.kind, "the AWS Batch job queue to submit to", "my-queue"
        )
        require_option(
            options,
            "bucket",
            self.kind,
            "the S3 bucket where inputs and outputs are staged",
            "my-bucket",
        )
        auth = option_text(options, "s3_auth").lower() or "role"
        if auth not in ("role", "anonymous"):
            raise ConfigError(
                f"The aws-batch setting 's3_auth' must be 'role' or 'anonymous', not {auth!r}.",
                "",
            )
        options["s3_auth"] = auth
        if auth == "role":
            require_option(
                options,
                "job_role_arn",
                self.kind,
                "the IAM role the job runs as, which may read and write the bucket",
                "arn:aws:iam::123456789012:role/cloudpromote-job",
            )
        for name in ("job_role_arn", "execution_role_arn"):
            value = option_text(options, name)
            if value and not ROLE_ARN_RE.match(value):
                raise ConfigError(
                    f"The aws-batch setting {name!r} is not an IAM role ARN: {value!r}.",
                    "Use the form arn:aws:iam::<account>:role/<name>.",
                )
        platform = option_text(options, "platform").upper() or "EC2"
        if platform not in ("EC2", "FARGATE"):
            raise ConfigError(
                f"The aws-batch setting 'platform' must be EC2 or FARGATE, not {platform!r}.", ""
            )
        if platform == "FARGATE" and not option_text(options, "execution_role_arn"):
            require_option(
                options,
                "execution_role_arn",
                self.kind,
                "Fargate jobs need an execution role to pull the image and write logs",
                "arn:aws:iam::123456789012:role/ecsTaskExecutionRole",
            )
        options["platform"] = platform
        options["retries"] = _as_int(options.get("retries", 0) or 0, "retries", 0, 9)

    # --- clients ----------------------------------------------------------------------

    def _client(self, service: str) -> Any:
        return client_for(service, self.options)

    def _fail(self, exc: BaseException, action: str, **kwargs: str) -> BackendError:
        error = translate_error(
            exc, action, service=kwargs.pop("service", "batch"), options=self.options, **kwargs
        )
        secrets = credential_values(self.options)
        return BackendError(redact(error.message, secrets), error.fix)

    # --- submit -----------------------------------------------------------------------

    def job_definition_request(self, image: str) -> dict[str, Any]:
        """RegisterJobDefinition arguments for an image: fixed parts only, no job values."""
        properties: dict[str, Any] = {
            "image": image,
            "command": stager_command(),
            "resourceRequirements": [
                {"type": "VCPU", "value": "1"},
                {"type": "MEMORY", "value": "2048"},
            ],
        }
        role = option_text(self.options, "job_role_arn")
        if role:
            properties["jobRoleArn"] = role
        execution = option_text(self.options, "execution_role_arn")
        if execution:
            properties["executionRoleArn"] = execution
        platform = option_text(self.options, "platform") or "EC2"
        if platform == "FARGATE":
            properties["networkConfiguration"] = {"assignPublicIp": "ENABLED"}
        request: dict[str, Any] = {
            "type": "container",
            "platformCapabilities": [platform],
            "containerProperties": properties,
            "tags": {"created-by": "jupyter-cloudpromote"},
            "propagateTags": True,
        }
        digest = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:12]
        repository = image.rpartition(":")[0].rsplit("/", 1)[-1] or "job"
        request["jobDefinitionName"] = batch_name(f"cloudpromote-{_slug(repository)}-{digest}")
        return request

    def ensure_job_definition(self, image: str) -> str:
        """The ARN of an active job definition for this image and settings, registering one
        only when none exists (its name carries the hash of everything in it)."""
        request = self.job_definition_request(image)
        name = request["jobDefinitionName"]
        batch = self._client("batch")
        try:
            found = batch.describe_job_definitions(jobDefinitionName=name, status="ACTIVE")
        except Exception as exc:
            raise self._fail(exc, f"look up job definition {name}") from exc
        active = [d for d in found.get("jobDefinitions", []) if d.get("status") == "ACTIVE"]
        if active:
            return str(max(active, key=lambda d: int(d.get("revision", 0)))["jobDefinitionArn"])
        try:
            return str(batch.register_job_definition(**request)["jobDefinitionArn"])
        except Exception as exc:
            raise self._fail(exc, f"register job definition {name}") from exc

    def job_environment(
        self, request: SubmitRequest, output_uri: str, input_uri: str
    ) -> dict[str, str]:
        check_job_env(request.env, self.kind)
        env = {str(k): str(v) for k, v in request.env.items()}
        env[OUTPUT_DIR_ENV] = JOB_OUTPUT_DIR
        env[PARAMETERS_ENV] = json.dumps(request.parameters)
        env[JOB_ID_ENV] = request.job_id
        env[job_stager.OUTPUT_URI_ENV] = output_uri
        env[job_stager.INPUT_DIR_ENV] = JOB_INPUT_DIR
        if input_uri:
            env[job_stager.INPUT_URI_ENV] = input_uri
        region = region_of(self.options)
        env["AWS_REGION"] = region
        env["AWS_DEFAULT_REGION"] = region
        endpoint = endpoint_for(self.options, "s3")
        if endpoint:
            env[job_stager.ENDPOINT_ENV] = endpoint
        if self.options.get("s3_auth") == "anonymous":
            env[job_stager.AUTH_ENV] = "anonymous"
        if request.resources.time_limit:
            seconds = parse_duration_seconds(request.resources.time_limit)
            env[TIME_LIMIT_ENV] = f"{seconds:g}"
        return env

    def submit_request(
        self, request: SubmitRequest, job_definition: str, env: dict[str, str]
    ) -> dict[str, Any]:
        """SubmitJob arguments: queue, definition, resources, environment, timeout, retries."""
        slug = _slug(request.context.notebook_name)
        arguments: dict[str, Any] = {
            "jobName": batch_name(f"cloudpromote-{slug}-{request.job_id}"),
            "jobQueue": option_text(self.options, "job_queue"),
            "jobDefinition": job_definition,
            "containerOverrides": {
                "environment": [{"name": k, "value": v} for k, v in sorted(env.items())],
                "resourceRequirements": resource_requirements(request.resources, self.options),
            },
            "retryStrategy": {"attempts": int(self.options.get("retries") or 0) + 1},
            "tags": {"created-by": "jupyter-cloudpromote", "cloudpromote-job": request.job_id},
            "propagateTags": True,
        }
        if request.resources.time_limit:
            seconds = parse_duration_seconds(request.resources.time_limit)
            attempt = max(MIN_ATTEMPT_SECONDS, math.ceil(seconds) + STAGING_GRACE_SECONDS)
            arguments["timeout"] = {"attemptDurationSeconds": attempt}
        return arguments

    def submit(self, request: SubmitRequest) -> str:
        from ..registry_push import push_for_backend

        bucket = option_text(self.options, "bucket")
        prefix = option_text(self.options, "prefix")
        job_root = [prefix, request.job_id] if prefix else [request.job_id]
        output_uri = s3_join(bucket, *job_root, "outputs")
        log_path = request.log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        (request.job_dir / STATE_FILE).unlink(missing_ok=True)
        image = push_for_backend(
            request.image or request.context.image_tag,
            self.options,
            progress=lambda line: None,
        )
        input_uri = stage_job_input(self.options, bucket, job_root)
        env = self.job_environment(request, output_uri, input_uri)
        definition = self.ensure_job_definition(image)
        arguments = self.submit_request(request, definition, env)
        queue = arguments["jobQueue"]
        try:
            answer = self._client("batch").submit_job(**arguments)
        except Exception as exc:
            raise self._fail(
                exc,
                f"submit the job to queue {queue}",
                missing=f"job queue {queue!r}",
                missing_fix=(
                    "Check the profile's 'job_queue' and 'region' (aws batch "
                    "describe-job-queues lists the queues), or create the queue."
                ),
            ) from exc
        backend_id = str(answer["jobId"])
        self._save_state(
            request.job_dir,
            {
                "backend_id": backend_id,
                "job_name": arguments["jobName"],
                "job_definition": definition,
                "image": image,
                "output_uri": output_uri,
                "input_uri": input_uri,
            },
        )
        return backend_id

    # --- state file -------------------------------------------------------------------

    @staticmethod
    def _load_state(job_dir: Path, backend_id: str) -> dict[str, Any]:
        try:
            data = json.loads((Path(job_dir) / STATE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if data.get("backend_id") == backend_id else {}

    @staticmethod
    def _save_state(job_dir: Path, data: dict[str, Any]) -> None:
        path = Path(job_dir) / STATE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")

    # --- status -----------------------------------------------------------------------

    def _describe(self, backend_id: str) -> dict[str, Any] | None:
        try:
            jobs = self._client("batch").describe_jobs(jobs=[backend_id]).get("jobs", [])
        except Exception as exc:
            raise self._fail(exc, f"read the status of job {backend_id}") from exc
        return jobs[0] if jobs else None

    def status(self, backend_id: str, job_dir: Path) -> BackendStatus:
        state = self._load_state(job_dir, backend_id)
        final = state.get("final")
        if final:
            return BackendStatus(JobState(final["state"]), final["reason"], final["exit_code"])
        job = self._describe(backend_id)
        if job is None:
            return BackendStatus(
                JobState.FAILED,
                f"AWS Batch no longer knows job {backend_id}: it keeps finished jobs for about "
                "a week, or the job was submitted in another region or account.",
            )
        status = str(job.get("status", ""))
        reason = str(job.get("statusReason", "") or "")
        if status in _QUEUED_STATES:
            return BackendStatus(JobState.QUEUED, _QUEUED_STATES[status])
        if status == "RUNNING":
            return BackendStatus(JobState.RUNNING, "running on AWS Batch")
        result = self._final_status(backend_id, job_dir, job, status, reason)
        if state:
            state["final"] = {
                "state": result.state.value,
                "reason": result.reason,
                "exit_code": result.exit_code,
            }
            self._save_state(job_dir, state)
        return result

    @staticmethod
    def _exit_code(job: dict[str, Any]) -> int | None:
        container = job.get("container") or {}
        if container.get("exitCode") is not None:
            return int(container["exitCode"])
        for attempt in reversed(job.get("attempts") or []):
            code = (attempt.get("container") or {}).get("exitCode")
            if code is not None:
                return int(code)
        return None

    def _final_status(
        self, backend_id: str, job_dir: Path, job: dict[str, Any], status: str, reason: str
    ) -> BackendStatus:
        exit_code = self._exit_code(job)
        if status == "SUCCEEDED":
            return BackendStatus(JobState.SUCCEEDED, "AWS Batch job succeeded", exit_code or 0)
        if reason.startswith(CANCEL_REASON):
            return BackendStatus(JobState.CANCELLED, "cancelled by user", exit_code)
        log_text = self.logs(backend_id, job_dir)
        tail = _tail(log_text)
        tail_text = f"; last log lines:\n{tail}" if tail else "; the job printed nothing"
        container_reason = str((job.get("container") or {}).get("reason", "") or "")
        for attempt in reversed(job.get("attempts") or []):
            container_reason = container_reason or str(
                (attempt.get("container") or {}).get("reason", "") or ""
            )
        parts = [p for p in (reason, container_reason) if p]
        said = f" (AWS Batch: {'; '.join(parts)})" if parts else ""
        if "OutOfMemory" in container_reason:
            text = f"ran out of memory; raise the memory resource{said}{tail_text}"
        elif exit_code == TIME_LIMIT_EXIT_CODE and "hit its time limit" in log_text:
            text = f"hit its time limit; raise it (--time) or make the job faster{tail_text}"
        elif "attempt duration exceeded" in reason.lower() or "timeout" in reason.lower():
            text = f"was stopped by AWS Batch's time limit{said}{tail_text}"
        elif exit_code == job_stager.STAGING_FAILED_EXIT_CODE:
            text = (
                "could not move its data to or from S3: check that the job role may read "
                f"the input and write s3://{option_text(self.options, 'bucket')}{said}{tail_text}"
            )
        elif "CannotPull" in container_reason or "CannotPull" in reason:
            text = (
                "AWS Batch could not pull the job image: check the image exists in the "
                f"registry and the execution role or instance role may pull it{said}"
            )
        elif exit_code is not None:
            text = f"exited with code {exit_code}{said}{tail_text}"
        else:
            text = f"failed{said}{tail_text}"
        return BackendStatus(
            JobState.FAILED, redact(text, credential_values(self.options)), exit_code
        )

    # --- logs -------------------------------------------------------------------------

    @staticmethod
    def _log_streams(job: dict[str, Any]) -> list[str]:
        streams: list[str] = []
        for attempt in job.get("attempts") or []:
            name = (attempt.get("container") or {}).get("logStreamName")
            if name and name not in streams:
                streams.append(str(name))
        current = (job.get("container") or {}).get("logStreamName")
        if current and current not in streams:
            streams.append(str(current))
        return streams

    def _read_stream(self, logs: Any, group: str, stream: str) -> list[str]:
        lines: list[str] = []
        token = None
        for _ in range(1000):  # a bounded walk over CloudWatch's pages
            kwargs: dict[str, Any] = {
                "logGroupName": group,
                "logStreamName": stream,
                "startFromHead": True,
            }
            if token:
                kwargs["nextToken"] = token
            try:
                page = logs.get_log_events(**kwargs)
            except logs.exceptions.ResourceNotFoundException:
                return lines  # the stream appears once the container writes
            lines += [str(e.get("message", "")).rstrip("\n") for e in page.get("events", [])]
            next_token = page.get("nextForwardToken")
            if not page.get("events") or next_token == token:
                break
            token = next_token
        return lines

    def logs(self, backend_id: str, job_dir: Path) -> str:
        saved = Path(job_dir) / "logs" / "run.log"
        state = self._load_state(job_dir, backend_id)
        if state.get("logs_final") and saved.is_file():
            return saved.read_text(encoding="utf-8", errors="replace")
        job = self._describe(backend_id)
        if job is None:
            return saved.read_text(encoding="utf-8", errors="replace") if saved.is_file() else ""
        streams = self._log_streams(job)
        if not streams:
            return ""
        group = option_text(self.options, "log_group") or "/aws/batch/job"
        logs = self._client("logs")
        chunks = []
        try:
            for index, stream in enumerate(streams):
                lines = self._read_stream(logs, group, stream)
                if len(streams) > 1:
                    chunks.append(f"--- attempt {index + 1} ({stream}) ---")
                chunks += lines
        except Exception as exc:
            raise self._fail(exc, f"read the job's logs from {group}", service="logs") from exc
        text = redact("\n".join(chunks) + ("\n" if chunks else ""), credential_values(self.options))
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(text, encoding="utf-8")
        if state and str(job.get("status")) in ("SUCCEEDED", "FAILED"):
            state["logs_final"] = True
            self._save_state(job_dir, state)
        return text

    # --- cancel and outputs ---------------------------------------------------------------

    def cancel(self, backend_id: str, job_dir: Path) -> None:
        try:
            self._client("batch").terminate_job(jobId=backend_id, reason=CANCEL_REASON)
        except Exception as exc:
            raise self._fail(exc, f"terminate job {backend_id}") from exc

    def collect_outputs(self, backend_id: str, job_dir: Path) -> None:
        """Download s3://.../<job id>/outputs/ into job_dir/outputs, and keep the final log."""
        from ..staging import collect_outputs

        state = self._load_state(job_dir, backend_id)
        self.logs(backend_id, job_dir)
        if state.get("output_uri"):
            collect_outputs(
                state["output_uri"], Path(job_dir) / "outputs", storage_options(self.options)
            )

    # --- cost -------------------------------------------------------------------------

    def cost_estimate(self, resources: Resources) -> CostEstimate:
        """EC2 price of the smallest listed instance fitting the job, x its time limit."""
        return estimate(resources, table="ec2")
