"""Fast checks of the AWS plumbing: names, errors, redaction, settings, request shapes,
pricing and the in-job S3 signer. No server: requests are checked against botocore's own
service models, and the signer against botocore's own SigV4 signer."""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
from botocore.validate import ParamValidator

from jupyter_cloudpromote import job_stager
from jupyter_cloudpromote.aws import (
    batch_name,
    check_job_env,
    ecr_repository_name,
    redact,
    sagemaker_name,
    storage_options,
    translate_error,
)
from jupyter_cloudpromote.backends.aws_batch import (
    AwsBatchBackend,
    resource_requirements,
    stager_command,
)
from jupyter_cloudpromote.backends.base import SubmitRequest
from jupyter_cloudpromote.backends.sagemaker import SageMakerBackend, validate_request
from jupyter_cloudpromote.errors import BackendError, ConfigError
from jupyter_cloudpromote.models import BuildContext, Resources
from jupyter_cloudpromote.pricing import (
    PRICE_TABLE_DATE,
    SAGEMAKER_TRAINING_INSTANCES,
    estimate,
    instance_for,
)

ROLE = "arn:aws:iam::123456789012:role/cloudpromote-job"
_MODELS: dict[str, Any] = {}


def service_model(name: str) -> Any:
    if name not in _MODELS:
        _MODELS[name] = botocore.session.get_session().get_service_model(name)
    return _MODELS[name]


def assert_valid(service: str, operation: str, params: dict[str, Any]) -> None:
    shape = service_model(service).operation_model(operation).input_shape
    report = ParamValidator().validate(params, shape)
    assert not report.has_errors(), report.generate_report()


def model_pattern(service: str, operation: str, member: str) -> re.Pattern[str]:
    shape = service_model(service).operation_model(operation).input_shape.members[member]
    return re.compile(f"^(?:{shape.metadata['pattern']})$")


def context(tmp_path: Path, notebook: str = "My Analysis (final).ipynb") -> BuildContext:
    return BuildContext(
        directory=tmp_path,
        files=[],
        content_hash="ab" * 32,
        dependency_hash="cd" * 32,
        dockerfile="",
        requirements=[],
        base_image="python:3.11-slim",
        python_version="3.11.2",
        notebook_name=notebook,
    )


def request(tmp_path: Path, **overrides: Any) -> SubmitRequest:
    args: dict[str, Any] = {
        "job_id": "0123456789ab",
        "job_dir": tmp_path / "job",
        "context": context(tmp_path),
        "image": "cloudpromote/my-analysis-final:abababababababab",
        "resources": Resources(cpus=2, memory="3G", gpus=1, time_limit="30m"),
        "parameters": {"n": 5, "label": "x"},
        "env": {"MODE": "full"},
    }
    args.update(overrides)
    return SubmitRequest(**args)


def batch_backend(**options: Any) -> AwsBatchBackend:
    backend = AwsBatchBackend(
        "batch",
        {
            "region": "eu-west-1",
            "job_queue": "q1",
            "bucket": "my-bucket",
            "job_role_arn": ROLE,
            **options,
        },
    )
    backend.validate_options()
    return backend


def sagemaker_backend(**options: Any) -> SageMakerBackend:
    backend = SageMakerBackend(
        "sm", {"region": "eu-west-1", "bucket": "my-bucket", "role_arn": ROLE, **options}
    )
    backend.validate_options()
    return backend


# --- names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "cloudpromote-my analysis (final)-0123",
        "ünïcödé/name:with*stars",
        "-leading-dash",
        "x" * 300,
        "!!!",
        "a.b.c",
    ],
)
def test_names_aws_refuses_are_made_valid(raw: str) -> None:
    batch = batch_name(raw)
    assert re.match(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$", batch), batch
    sagemaker = sagemaker_name(raw)
    assert model_pattern("sagemaker", "CreateTrainingJob", "TrainingJobName").match(sagemaker)
    assert len(sagemaker) <= 63
    repository = ecr_repository_name(f"cloudpromote/{raw}")
    assert model_pattern("ecr", "CreateRepository", "repositoryName").match(repository)


def test_valid_names_are_kept_and_different_inputs_stay_different() -> None:
    assert batch_name("cloudpromote-report-abc123") == "cloudpromote-report-abc123"
    assert sagemaker_name("cp-report-abc123") == "cp-report-abc123"
    assert batch_name("a b") != batch_name("a/b")  # both become "a-b" plus their own hash
    assert sagemaker_name("x" * 80) != sagemaker_name("x" * 81)


# --- errors and redaction ---------------------------------------------------------------


def client_error(code: str, message: str, operation: str = "SubmitJob") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


def test_access_denied_becomes_a_clear_reason() -> None:
    error = translate_error(
        client_error("AccessDeniedException", "User: arn:aws:iam::1:user/x is not authorized"),
        "submit the job",
        service="batch",
        options={"region": "eu-west-1"},
    )
    assert "AWS denied access to batch:SubmitJob" in error.message
    assert "eu-west-1" in error.message
    assert "permission for batch:SubmitJob" in error.fix


def test_missing_queue_becomes_a_clear_reason() -> None:
    error = translate_error(
        client_error("ClientException", "Job queue nope does not exist"),
        "submit the job to queue nope",
        service="batch",
        options={"region": "eu-west-1"},
        missing="job queue 'nope'",
        missing_fix="Check the profile's 'job_queue'.",
    )
    assert "the job queue 'nope' does not exist in eu-west-1" in error.message
    assert error.fix == "Check the profile's 'job_queue'."


def test_no_credentials_and_unreachable_endpoint_say_what_to_do() -> None:
    none = translate_error(NoCredentialsError(), "submit", service="batch", options={})
    assert "No AWS credentials" in none.message and "aws configure" in none.fix
    down = translate_error(
        EndpointConnectionError(endpoint_url="http://127.0.0.1:9"),
        "submit",
        service="batch",
        options={"endpoint_url": "http://127.0.0.1:9"},
    )
    assert "Cannot reach AWS batch" in down.message and "endpoint_url" in down.fix


def test_redact_removes_credentials_from_log_lines() -> None:
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    line = (
        f"key AKIAIOSFODNN7EXAMPLE secret {secret} "
        "aws_session_token=FwoGZXIvYXdzEJr token; password: hunter2"
    )
    cleaned = redact(line, [secret])
    for leaked in ("AKIAIOSFODNN7EXAMPLE", secret, "FwoGZXIvYXdzEJr", "hunter2"):
        assert leaked not in cleaned
    assert cleaned.count("[redacted]") == 4


def test_credentials_are_refused_as_job_environment() -> None:
    with pytest.raises(ConfigError) as info:
        check_job_env({"AWS_SECRET_ACCESS_KEY": "x", "OK": "1"}, "aws-batch")
    assert "AWS_SECRET_ACCESS_KEY" in info.value.message and "role" in info.value.fix


# --- settings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("missing", "setting"),
    [("job_queue", "job_queue"), ("bucket", "bucket"), ("job_role_arn", "job_role_arn")],
)
def test_batch_missing_settings_are_named(missing: str, setting: str) -> None:
    options = {"job_queue": "q", "bucket": "my-bucket", "job_role_arn": ROLE}
    options[missing] = ""
    with pytest.raises(ConfigError) as info:
        AwsBatchBackend("b", options).validate_options()
    assert f"setting {setting!r}" in info.value.message
    assert f"--option {setting}=" in info.value.fix


def test_sagemaker_missing_role_and_bucket_are_named() -> None:
    with pytest.raises(ConfigError, match="'role_arn'"):
        SageMakerBackend("s", {"bucket": "my-bucket"}).validate_options()
    with pytest.raises(ConfigError, match="'bucket'"):
        SageMakerBackend("s", {"role_arn": ROLE}).validate_options()


@pytest.mark.parametrize(
    ("name", "value"),
    [("region", "Mars"), ("endpoint_url", "not a url"), ("bucket", "s3://b/x")],
)
def test_bad_common_settings_are_refused(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        batch_backend(**{name: value})


def test_region_and_endpoint_reach_clients_and_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "dummy")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "dummy")
    backend = batch_backend(region="eu-central-1", endpoint_url="http://127.0.0.1:4566")
    client = backend._client("batch")
    assert client.meta.region_name == "eu-central-1"
    assert client.meta.endpoint_url == "http://127.0.0.1:4566"
    fs_options = storage_options({**backend.options, "s3_endpoint_url": "http://s3.local:9"})
    assert fs_options["client_kwargs"] == {
        "region_name": "eu-central-1",
        "endpoint_url": "http://s3.local:9",
    }


# --- request shapes ---------------------------------------------------------------------


def test_batch_requests_match_the_service_model(tmp_path: Path) -> None:
    backend = batch_backend()
    definition = backend.job_definition_request("123.dkr.ecr.eu-west-1.amazonaws.com/r:t")
    assert_valid("batch", "RegisterJobDefinition", definition)
    job = request(tmp_path)
    env = backend.job_environment(job, "s3://my-bucket/p/j/outputs/", "s3://my-bucket/in/")
    arguments = backend.submit_request(job, "arn:aws:batch:eu-west-1:1:job-definition/d:1", env)
    assert_valid("batch", "SubmitJob", arguments)
    assert arguments["containerOverrides"]["resourceRequirements"] == [
        {"type": "VCPU", "value": "2"},
        {"type": "MEMORY", "value": "3072"},
        {"type": "GPU", "value": "1"},
    ]
    assert arguments["timeout"]["attemptDurationSeconds"] == 1800 + 300
    values = {e["name"]: e["value"] for e in arguments["containerOverrides"]["environment"]}
    assert json.loads(values["CLOUDPROMOTE_PARAMETERS"]) == {"n": 5, "label": "x"}
    assert values["CLOUDPROMOTE_INPUT_URI"] == "s3://my-bucket/in/"
    assert values["CLOUDPROMOTE_TIME_LIMIT"] == "1800"
    assert values["MODE"] == "full"


def test_batch_timeout_has_aws_minimum_and_retries_become_attempts(tmp_path: Path) -> None:
    backend = batch_backend(retries="2")
    job = request(tmp_path, resources=Resources(time_limit="5s"))
    arguments = backend.submit_request(job, "jd", {})
    assert arguments["timeout"]["attemptDurationSeconds"] >= 60
    assert arguments["retryStrategy"] == {"attempts": 3}
    with pytest.raises(ConfigError):
        batch_backend(retries="11")


def test_job_definition_is_named_by_its_content() -> None:
    backend = batch_backend()
    first = backend.job_definition_request("repo/nb:aaaa")["jobDefinitionName"]
    assert first == backend.job_definition_request("repo/nb:aaaa")["jobDefinitionName"]
    assert first != backend.job_definition_request("repo/nb:bbbb")["jobDefinitionName"]
    other_role = batch_backend(job_role_arn="arn:aws:iam::123456789012:role/other")
    assert first != other_role.job_definition_request("repo/nb:aaaa")["jobDefinitionName"]


def test_job_definition_and_job_hold_no_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNITTESTKEY12345")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "unit-test-secret-value")
    backend = batch_backend()
    job = request(tmp_path)
    text = json.dumps(
        [
            backend.job_definition_request("repo/nb:aaaa"),
            backend.submit_request(job, "jd", backend.job_environment(job, "s3://b/o/", "")),
        ]
    )
    assert "AKIAUNITTESTKEY12345" not in text and "unit-test-secret-value" not in text


def test_resource_defaults_and_limits() -> None:
    assert resource_requirements(Resources(), {"cpus": 1, "memory": "2G"}) == [
        {"type": "VCPU", "value": "1"},
        {"type": "MEMORY", "value": "2048"},
    ]
    assert resource_requirements(Resources(cpus=0.5, memory="1G"), {})[0]["value"] == "0.5"


def test_stager_command_is_compact_and_runs_the_runner() -> None:
    command = stager_command()
    assert command[0] == "python" and command[1] == "-c"
    assert command[3:] == ["python", "_cloudpromote_runner.py", "job.py"]
    assert len(command[2]) < 8000  # stays far below Batch's request size limits
    assert "Ref::" not in command[2]  # Batch substitutes Ref::name in commands


def test_sagemaker_request_matches_the_service_model(tmp_path: Path) -> None:
    backend = sagemaker_backend(spot="true")
    params = backend.training_job_request(
        request(tmp_path), "123.dkr.ecr.eu-west-1.amazonaws.com/r:t", "s3://b/in/", "s3://b/o/"
    )
    assert_valid("sagemaker", "CreateTrainingJob", params)
    assert params["ResourceConfig"]["InstanceType"] == "ml.g4dn.xlarge"
    assert params["StoppingCondition"] == {
        "MaxRuntimeInSeconds": 1800,
        "MaxWaitTimeInSeconds": 3600,
    }
    assert params["EnableManagedSpotTraining"] is True
    channel = params["InputDataConfig"][0]
    assert channel["DataSource"]["S3DataSource"]["S3Uri"] == "s3://b/in/"
    assert params["Environment"]["CLOUDPROMOTE_OUTPUT_DIR"] == "/opt/ml/model"
    assert params["Environment"]["CLOUDPROMOTE_INPUT_DIR"] == "/opt/ml/input/data/input"


def test_sagemaker_refuses_parameters_over_its_environment_limit(tmp_path: Path) -> None:
    big = request(tmp_path, parameters={"text": "x" * 600})
    with pytest.raises(ConfigError, match="512 characters"):
        sagemaker_backend().training_job_request(big, "r:t", "", "s3://b/o/")


def test_sagemaker_invalid_request_is_caught_before_sending() -> None:
    with pytest.raises(BackendError) as info:
        validate_request("CreateTrainingJob", {"TrainingJobName": "x", "RoleArn": 7})
    assert "invalid SageMaker CreateTrainingJob request" in info.value.message
    assert "OutputDataConfig" in info.value.message  # a missing required member
    assert "RoleArn" in info.value.message  # a wrong type


# --- pricing ----------------------------------------------------------------------------


def test_every_sagemaker_table_type_is_one_sagemaker_accepts() -> None:
    accepted = set(service_model("sagemaker").shape_for("TrainingInstanceType").enum)
    for instance in SAGEMAKER_TRAINING_INSTANCES:
        assert instance.name in accepted, instance.name


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        (Resources(), "ml.m5.large"),
        (Resources(cpus=4, memory="12G"), "ml.m5.xlarge"),
        (Resources(cpus=4, memory="8G"), "ml.c5.xlarge"),
        (Resources(gpus=1), "ml.g4dn.xlarge"),
        (Resources(gpus=4, memory="200G"), "ml.p3.8xlarge"),
    ],
)
def test_resources_map_to_the_cheapest_fitting_instance(
    resources: Resources, expected: str
) -> None:
    assert instance_for(resources, "sagemaker").name == expected


def test_estimate_is_price_times_time_limit_and_says_it_is_an_estimate() -> None:
    cost = estimate(Resources(cpus=4, memory="12G", time_limit="2h"), table="sagemaker")
    assert cost.instance_type == "ml.m5.xlarge"
    assert cost.usd_total == pytest.approx(0.23 * 2)
    data = cost.to_dict()
    assert data["estimate"] is True and data["table_date"] == PRICE_TABLE_DATE
    assert "Estimate" in cost.summary() and PRICE_TABLE_DATE in cost.summary()
    open_ended = estimate(Resources(cpus=2), table="ec2")
    assert open_ended.usd_total is None and "/hour" in open_ended.summary()


def test_impossible_resources_name_the_largest_listed_type() -> None:
    with pytest.raises(ConfigError, match="largest listed"):
        instance_for(Resources(cpus=500), "ec2")


def test_backends_give_cost_estimates() -> None:
    batch = batch_backend().cost_estimate(Resources(cpus=2, memory="4G", time_limit="1h"))
    assert batch.instance_type == "c5.large" and batch.usd_total == pytest.approx(0.085)
    two = sagemaker_backend(instance_count=2).cost_estimate(Resources(time_limit="1h"))
    assert two.usd_total == pytest.approx(2 * 0.115)


# --- the in-job S3 signer ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("GET", "https://bucket.s3.eu-west-1.amazonaws.com/?list-type=2&prefix=a%20b%2F"),
        ("PUT", "https://bucket.s3.eu-west-1.amazonaws.com/dir/file%20name%2B%C3%A9.txt"),
        ("GET", "http://127.0.0.1:5000/bucket/key/with~tilde"),
    ],
)
@pytest.mark.parametrize("token", ["", "session-token-value"])
def test_in_job_signer_matches_botocore_sigv4(method: str, url: str, token: str) -> None:
    from botocore.auth import S3SigV4Auth

    now = datetime.datetime(2025, 5, 24, 12, 30, 0, tzinfo=datetime.timezone.utc)
    credentials = {"access_key": "AKIDEXAMPLE", "secret_key": "secret/key+value", "token": token}
    payload = "UNSIGNED-PAYLOAD" if method == "PUT" else hashlib.sha256(b"").hexdigest()
    ours = job_stager.sign_v4(method, url, {}, credentials, "eu-west-1", now, payload)
    # botocore's own SigV4 steps (as in SigV4Auth.add_auth), at the same fixed time.
    aws_request = AWSRequest(method=method, url=url, headers={})
    aws_request.context["timestamp"] = now.strftime("%Y%m%dT%H%M%SZ")
    # As the stager does: uploads are streamed with an unsigned payload.
    aws_request.context["client_config"] = Config(s3={"payload_signing_enabled": method != "PUT"})
    signer = S3SigV4Auth(
        Credentials("AKIDEXAMPLE", "secret/key+value", token or None), "s3", "eu-west-1"
    )
    signer._modify_request_before_signing(aws_request)
    canonical = signer.canonical_request(aws_request)
    signature = signer.signature(signer.string_to_sign(aws_request, canonical), aws_request)
    assert ours["authorization"].endswith(f"Signature={signature}")
    assert ours["x-amz-date"] == aws_request.headers["X-Amz-Date"]


def test_in_job_credentials_anonymous_and_from_environment() -> None:
    assert job_stager.find_credentials({"CLOUDPROMOTE_S3_AUTH": "anonymous"}) is None
    found = job_stager.find_credentials(
        {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_SESSION_TOKEN": "t"}
    )
    assert found == {"access_key": "k", "secret_key": "s", "token": "t"}


def test_in_job_paths_never_leave_their_folder(tmp_path: Path) -> None:
    root = str(tmp_path)
    assert job_stager.safe_target(root, "a/b.txt") == str(tmp_path / "a" / "b.txt")
    assert job_stager.safe_target(root, "../evil") is None
    assert job_stager.safe_target(root, "a/../../evil") is None
    assert job_stager.safe_target(root, "/etc/passwd") is None
