"""The `sagemaker` backend: the job's image as a SageMaker training job.

SageMaker stages data itself, so the image runs as built: the `input` setting becomes the S3
channel "input" (downloaded by SageMaker to /opt/ml/input/data/input, named by
CLOUDPROMOTE_INPUT_DIR), and the job's outputs folder is /opt/ml/model, which SageMaker
uploads as model.tar.gz under s3://<bucket>/<prefix>/<job id>/ when the job ends; collecting
outputs downloads and unpacks it into the job's outputs folder. The instance type comes from
the `instance_type` setting or from the resources through the price table in pricing.py.
Requests are checked against botocore's service model before they are sent.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any, ClassVar

from botocore.validate import ParamValidator

from ..aws import (
    INSTALL_HINT,
    ROLE_ARN_RE,
    check_job_env,
    client_for,
    credential_values,
    option_text,
    redact,
    require_option,
    s3_join,
    sagemaker_name,
    stage_job_input,
    storage_options,
    translate_error,
    validate_common_options,
)
from ..errors import BackendError, ConfigError
from ..models import JOB_ID_ENV, OUTPUT_DIR_ENV, PARAMETERS_ENV, BackendStatus, JobState, Resources
from ..package import RUNNER_NAME, SCRIPT_NAME, _slug
from ..pricing import SAGEMAKER_TRAINING_INSTANCES, CostEstimate, estimate, instance_for
from ..resources import parse_duration_seconds
from ..staging import INPUT_DIR_ENV
from .base import Backend, SubmitRequest, option_bool

INPUT_CHANNEL = "input"
SAGEMAKER_INPUT_DIR = f"/opt/ml/input/data/{INPUT_CHANNEL}"
SAGEMAKER_OUTPUT_DIR = "/opt/ml/model"  # uploaded by SageMaker as model.tar.gz
STATE_FILE = "sagemaker.json"
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
MAX_RUNTIME_SECONDS = 28 * 86400  # SageMaker's own ceiling
ENV_VALUE_LIMIT = 512  # SageMaker's limit per environment value
_TAIL_LINES = 10
_QUEUED_SECONDARY = {
    "Starting",
    "Pending",
    "LaunchingMLInstances",
    "PreparingTrainingStack",
    "Downloading",
    "DownloadingTrainingImage",
}


def _bool(value: Any, setting: str) -> bool:
    return option_bool(value, "sagemaker", setting)


def _tail(text: str, count: int = _TAIL_LINES) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-count:])


def validate_request(operation: str, params: dict[str, Any]) -> None:
    """Check request parameters against botocore's SageMaker service model (types,
    required members, minimums), raising a BackendError listing what is wrong."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    shape = model.operation_model(operation).input_shape
    report = ParamValidator().validate(params, shape)
    if report.has_errors():
        raise BackendError(
            f"cloudpromote built an invalid SageMaker {operation} request: "
            f"{report.generate_report()}",
            "This is a bug in the sagemaker backend; please report it.",
        )


class SageMakerBackend(Backend):
    kind = "sagemaker"
    description = "Runs the job's image as a SageMaker training job; data staged through S3."
    features = frozenset(
        {"cpus", "memory", "gpus", "time_limit", "cancel", "outputs", "image", "input"}
    )
    needs_image = True
    install_hint = INSTALL_HINT
    default_options: ClassVar[dict[str, Any]] = {
        "region": "",
        "endpoint_url": "",
        "aws_profile": "",
        "role_arn": "",  # required: the SageMaker execution role
        "bucket": "",  # required: inputs and outputs are staged here
        "prefix": "cloudpromote",
        "instance_type": "",  # empty: from the resources, through pricing.py's table
        "instance_count": 1,
        "volume_size_gb": 30,
        "spot": False,  # managed spot training
        "max_wait": "",  # spot only: how long to wait for capacity, in total (default 2x)
        "max_runtime": "1d",  # used when the job has no time limit
        "registry": "ecr",
        "ecr_repository_prefix": "",
        "input": "",
    }

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        return True, "boto3 installed; credentials come from the standard AWS chain."

    def validate_options(self) -> None:
        options = self.options
        validate_common_options(options, self.kind)
        role = require_option(
            options,
            "role_arn",
            self.kind,
            "the SageMaker execution role the training job runs as",
            "arn:aws:iam::123456789012:role/SageMakerExecution",
        )
        if not ROLE_ARN_RE.match(role):
            raise ConfigError(
                f"The sagemaker setting 'role_arn' is not an IAM role ARN: {role!r}.",
                "Use the form arn:aws:iam::<account>:role/<name>.",
            )
        require_option(
            options, "bucket", self.kind, "the S3 bucket for inputs and outputs", "my-bucket"
        )
        try:
            count = int(str(options.get("instance_count") or 1))
            volume = int(str(options.get("volume_size_gb") or 30))
        except ValueError as exc:
            raise ConfigError(
                "The sagemaker settings instance_count and volume_size_gb are whole numbers.", ""
            ) from exc
        if count < 1 or volume < 1:
            raise ConfigError("instance_count and volume_size_gb must be at least 1.", "")
        options["instance_count"] = count
        options["volume_size_gb"] = volume
        options["spot"] = _bool(options.get("spot", False), "spot")
        instance_type = option_text(options, "instance_type")
        if instance_type and not instance_type.startswith("ml."):
            raise ConfigError(
                f"The sagemaker setting 'instance_type' must be a SageMaker type such as "
                f"ml.m5.xlarge, not {instance_type!r}.",
                "",
            )

    def _fail(self, exc: BaseException, action: str, **kwargs: str) -> BackendError:
        error = translate_error(
            exc, action, service=kwargs.pop("service", "sagemaker"), options=self.options, **kwargs
        )
        return BackendError(redact(error.message, credential_values(self.options)), error.fix)

    # --- submit -----------------------------------------------------------------------

    def instance_type(self, resources: Resources) -> str:
        return option_text(self.options, "instance_type") or instance_for(resources).name

    def runtime_seconds(self, resources: Resources) -> int:
        limit = resources.time_limit or option_text(self.options, "max_runtime") or "1d"
        seconds = math.ceil(parse_duration_seconds(limit))
        if seconds > MAX_RUNTIME_SECONDS:
            raise ConfigError(
                f"SageMaker training jobs run at most 28 days; the time limit is {limit}.",
                "Lower the time limit, or checkpoint and resume in several jobs.",
            )
        return seconds

    def environment(self, request: SubmitRequest) -> dict[str, str]:
        check_job_env(request.env, self.kind)
        env = {str(k): str(v) for k, v in request.env.items()}
        env[OUTPUT_DIR_ENV] = SAGEMAKER_OUTPUT_DIR
        env[PARAMETERS_ENV] = json.dumps(request.parameters)
        env[JOB_ID_ENV] = request.job_id
        env[INPUT_DIR_ENV] = SAGEMAKER_INPUT_DIR
        for key, value in env.items():
            if len(value) > ENV_VALUE_LIMIT:
                what = "the parameters" if key == PARAMETERS_ENV else f"the variable {key}"
                raise ConfigError(
                    f"SageMaker limits environment values to {ENV_VALUE_LIMIT} characters, "
                    f"and {what} take {len(value)}.",
                    "Pass large values as an input file (the 'input' setting) instead.",
                )
        if len(env) > 100:
            raise ConfigError("SageMaker allows at most 100 environment variables.", "")
        return env

    def training_job_request(
        self, request: SubmitRequest, image: str, input_uri: str, output_uri: str
    ) -> dict[str, Any]:
        """CreateTrainingJob arguments for one job."""
        slug = _slug(request.context.notebook_name)
        runtime = self.runtime_seconds(request.resources)
        stopping: dict[str, int] = {"MaxRuntimeInSeconds": runtime}
        spot = bool(self.options.get("spot"))
        if spot:
            wait_text = option_text(self.options, "max_wait")
            wait = math.ceil(parse_duration_seconds(wait_text)) if wait_text else 2 * runtime
            if wait < runtime:
                raise ConfigError(
                    "For managed spot training, max_wait must be at least the time limit.",
                    f"Set max_wait to {runtime}s or more.",
                )
            stopping["MaxWaitTimeInSeconds"] = min(wait, MAX_RUNTIME_SECONDS * 2)
        params: dict[str, Any] = {
            "TrainingJobName": sagemaker_name(f"cp-{slug}-{request.job_id}"),
            "AlgorithmSpecification": {
                "TrainingImage": image,
                "TrainingInputMode": "File",
                # The image's own command, explicitly: SageMaker would otherwise append "train".
                "ContainerEntrypoint": ["python", RUNNER_NAME, SCRIPT_NAME],
            },
            "RoleArn": option_text(self.options, "role_arn"),
            "OutputDataConfig": {"S3OutputPath": output_uri.rstrip("/")},
            "ResourceConfig": {
                "InstanceType": self.instance_type(request.resources),
                "InstanceCount": int(self.options.get("instance_count") or 1),
                "VolumeSizeInGB": int(self.options.get("volume_size_gb") or 30),
            },
            "StoppingCondition": stopping,
            "EnableManagedSpotTraining": spot,
            "Environment": self.environment(request),
            "Tags": [
                {"Key": "created-by", "Value": "jupyter-cloudpromote"},
                {"Key": "cloudpromote-job", "Value": request.job_id},
            ],
        }
        if input_uri:
            params["InputDataConfig"] = [
                {
                    "ChannelName": INPUT_CHANNEL,
                    "DataSource": {
                        "S3DataSource": {
                            "S3DataType": "S3Prefix",
                            "S3Uri": input_uri,
                            "S3DataDistributionType": "FullyReplicated",
                        }
                    },
                    "InputMode": "File",
                }
            ]
        validate_request("CreateTrainingJob", params)
        return params

    def submit(self, request: SubmitRequest) -> str:
        from ..registry_push import push_for_backend

        bucket = option_text(self.options, "bucket")
        prefix = option_text(self.options, "prefix")
        job_root = [prefix, request.job_id] if prefix else [request.job_id]
        (request.job_dir / STATE_FILE).unlink(missing_ok=True)
        image = push_for_backend(request.image or request.context.image_tag, self.options)
        input_uri = stage_job_input(self.options, bucket, job_root)
        output_uri = s3_join(bucket, *job_root)
        params = self.training_job_request(request, image, input_uri, output_uri)
        name = params["TrainingJobName"]
        try:
            client_for("sagemaker", self.options).create_training_job(**params)
        except Exception as exc:
            raise self._fail(exc, f"create training job {name}") from exc
        state = {
            "backend_id": name,
            "image": image,
            "input_uri": input_uri,
            "model_uri": f"{output_uri}{name}/output/model.tar.gz",
            "output_data_uri": f"{output_uri}{name}/output/output.tar.gz",
        }
        Path(request.job_dir).mkdir(parents=True, exist_ok=True)
        (Path(request.job_dir) / STATE_FILE).write_text(json.dumps(state, indent=1))
        return name

    # --- status, logs, stop -------------------------------------------------------------

    def _describe(self, name: str) -> dict[str, Any]:
        try:
            return dict(
                client_for("sagemaker", self.options).describe_training_job(TrainingJobName=name)
            )
        except Exception as exc:
            raise self._fail(
                exc,
                f"read the status of training job {name}",
                missing=f"training job {name!r}",
                missing_fix="It was deleted, or belongs to another region or account.",
            ) from exc

    def status(self, backend_id: str, job_dir: Path) -> BackendStatus:
        job = self._describe(backend_id)
        status = str(job.get("TrainingJobStatus", ""))
        secondary = str(job.get("SecondaryStatus", ""))
        if status == "InProgress":
            if secondary in _QUEUED_SECONDARY:
                return BackendStatus(JobState.QUEUED, f"SageMaker: {secondary}")
            return BackendStatus(JobState.RUNNING, f"SageMaker: {secondary or 'Training'}")
        if status == "Stopping":
            return BackendStatus(JobState.RUNNING, "SageMaker is stopping the job")
        if status == "Completed":
            return BackendStatus(JobState.SUCCEEDED, "SageMaker training job completed", 0)
        if status == "Stopped":
            if secondary == "MaxRuntimeExceeded":
                return BackendStatus(JobState.FAILED, "hit its time limit (MaxRuntimeExceeded)")
            if secondary == "MaxWaitTimeExceeded":
                return BackendStatus(
                    JobState.FAILED, "no spot capacity before max_wait (MaxWaitTimeExceeded)"
                )
            return BackendStatus(JobState.CANCELLED, "stopped")
        failure = str(job.get("FailureReason", "") or "no reason given")
        try:
            tail = _tail(self.logs(backend_id, job_dir))
        except BackendError:
            tail = ""
        tail_text = f"; last log lines:\n{tail}" if tail else ""
        return BackendStatus(
            JobState.FAILED,
            redact(f"SageMaker: {failure}{tail_text}", credential_values(self.options)),
        )

    def logs(self, backend_id: str, job_dir: Path) -> str:
        logs = client_for("logs", self.options)
        saved = Path(job_dir) / "logs" / "run.log"
        try:
            streams = logs.describe_log_streams(
                logGroupName=LOG_GROUP, logStreamNamePrefix=f"{backend_id}/"
            ).get("logStreams", [])
        except logs.exceptions.ResourceNotFoundException:
            return saved.read_text(encoding="utf-8", errors="replace") if saved.is_file() else ""
        except Exception as exc:
            raise self._fail(exc, "read the training job's logs", service="logs") from exc
        lines: list[str] = []
        for stream in sorted(streams, key=lambda s: str(s.get("logStreamName", ""))):
            name = str(stream["logStreamName"])
            if len(streams) > 1:
                lines.append(f"--- {name} ---")
            token = None
            for _ in range(1000):
                kwargs: dict[str, Any] = {
                    "logGroupName": LOG_GROUP,
                    "logStreamName": name,
                    "startFromHead": True,
                }
                if token:
                    kwargs["nextToken"] = token
                page = logs.get_log_events(**kwargs)
                lines += [str(e.get("message", "")).rstrip("\n") for e in page.get("events", [])]
                if not page.get("events") or page.get("nextForwardToken") == token:
                    break
                token = page.get("nextForwardToken")
        text = redact("\n".join(lines) + ("\n" if lines else ""), credential_values(self.options))
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(text, encoding="utf-8")
        return text

    def cancel(self, backend_id: str, job_dir: Path) -> None:
        # Few retries: a stop that fails should say so quickly.
        client = client_for("sagemaker", self.options, attempts=2)
        try:
            client.stop_training_job(TrainingJobName=backend_id)
        except Exception as exc:
            error = self._fail(exc, f"stop training job {backend_id}")
            raise BackendError(
                error.message,
                error.fix
                or "Try again; if the endpoint is an emulator, it may not implement "
                "StopTrainingJob (moto does not).",
            ) from exc

    def collect_outputs(self, backend_id: str, job_dir: Path) -> None:
        """Download model.tar.gz (and output.tar.gz, if any) and unpack them into outputs/."""
        from ..staging import extract_archive, filesystem

        try:
            state = json.loads((Path(job_dir) / STATE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if state.get("backend_id") != backend_id:
            return
        try:
            self.logs(backend_id, job_dir)
        except BackendError:
            pass  # outputs matter more than a log copy
        options = storage_options(self.options)
        outputs = Path(job_dir) / "outputs"
        for key in ("model_uri", "output_data_uri"):
            uri = state.get(key)
            if not uri:
                continue
            fs = filesystem(uri, options)
            if not fs.exists(uri):
                continue
            with tempfile.TemporaryDirectory() as tmp:
                archive = Path(tmp) / "archive.tar.gz"
                fs.get_file(uri, str(archive))
                extract_archive(archive, outputs)

    # --- cost -------------------------------------------------------------------------

    def cost_estimate(self, resources: Resources) -> CostEstimate:
        return estimate(
            resources,
            table="sagemaker",
            instance_type=option_text(self.options, "instance_type"),
            instance_count=int(self.options.get("instance_count") or 1),
            spot=bool(self.options.get("spot")),
        )


__all__ = ["SAGEMAKER_TRAINING_INSTANCES", "SageMakerBackend", "validate_request"]
