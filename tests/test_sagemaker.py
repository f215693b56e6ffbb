"""The sagemaker backend against moto's server.

moto's SageMaker is API-only: it stores a created training job and reports it Completed at
once, runs no container, writes no logs or model artifact, and does not implement
StopTrainingJob. So these tests show the requests (validated against botocore's service
model before sending), the status mapping, the input channel staged to S3, and collecting a
model.tar.gz that the test itself places where SageMaker would write it. That the image runs
on SageMaker is not shown here.
"""

from __future__ import annotations

import io
import tarfile
import uuid
from pathlib import Path

import pytest

from jupyter_cloudpromote.backends.base import SubmitRequest
from jupyter_cloudpromote.backends.sagemaker import SageMakerBackend
from jupyter_cloudpromote.errors import BackendError
from jupyter_cloudpromote.models import BuildContext, JobState, Resources

from .aws_fixtures import (  # noqa: F401 - fixtures
    AwsSetup,
    fixture_aws_credentials,
    fixture_aws_setup,
    fixture_moto_server,
)

pytestmark = [pytest.mark.aws, pytest.mark.slow]
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/cloudpromote/train:0123456789abcdef"


def submit(
    aws_setup: AwsSetup, tmp_path: Path, **options: object
) -> tuple[SageMakerBackend, str, Path]:
    backend = SageMakerBackend("sm", aws_setup.options(**options))
    backend.validate_options()
    job_id = uuid.uuid4().hex[:12]
    context = BuildContext(
        tmp_path, [], "ab" * 32, "cd" * 32, "", [], "base", "3.11.2", "Train Model.ipynb"
    )
    request = SubmitRequest(
        job_id,
        tmp_path / job_id,
        context,
        IMAGE,
        Resources(gpus=1, time_limit="2h"),
        {"epochs": 3},
        {"MODE": "full"},
    )
    return backend, backend.submit(request), tmp_path / job_id


def test_sagemaker_training_job_created_moto_completes_it_at_once(
    aws_setup: AwsSetup, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("a,b\n")
    backend, name, job_dir = submit(aws_setup, tmp_path, input=str(data), spot="true")
    assert name.startswith("cp-train-model-")
    described = aws_setup.server.client("sagemaker").describe_training_job(TrainingJobName=name)
    assert described["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert described["ResourceConfig"]["InstanceType"] == "ml.g4dn.xlarge"
    assert described["StoppingCondition"]["MaxRuntimeInSeconds"] == 7200
    assert described["EnableManagedSpotTraining"] is True
    channel = described["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"]
    assert channel == f"s3://{aws_setup.bucket}/jobs/{job_dir.name}/inputs/"
    objects = aws_setup.server.client("s3").list_objects_v2(
        Bucket=aws_setup.bucket, Prefix=f"jobs/{job_dir.name}/inputs/"
    )
    assert [o["Key"] for o in objects["Contents"]] == [f"jobs/{job_dir.name}/inputs/train.csv"]
    status = backend.status(name, job_dir)
    assert status.state is JobState.SUCCEEDED  # moto: Completed at once, nothing ran
    assert backend.logs(name, job_dir) == ""  # moto writes no training logs


def test_sagemaker_collects_model_tar_placed_where_sagemaker_writes_it(
    aws_setup: AwsSetup, tmp_path: Path
) -> None:
    backend, name, job_dir = submit(aws_setup, tmp_path)
    described = aws_setup.server.client("sagemaker").describe_training_job(TrainingJobName=name)
    artifact = described["ModelArtifacts"]["S3ModelArtifacts"]
    bucket, key = artifact[len("s3://") :].split("/", 1)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for member, data in (("metrics.json", b'{"loss": 0.1}'), ("plots/curve.txt", b"curve")):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    aws_setup.server.client("s3").put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())
    backend.collect_outputs(name, job_dir)
    assert (job_dir / "outputs" / "metrics.json").read_text() == '{"loss": 0.1}'
    assert (job_dir / "outputs" / "plots" / "curve.txt").read_text() == "curve"


def test_sagemaker_stop_not_implemented_by_moto_gives_a_clear_error(
    aws_setup: AwsSetup, tmp_path: Path
) -> None:
    backend, name, job_dir = submit(aws_setup, tmp_path)
    with pytest.raises(BackendError) as info:
        backend.cancel(name, job_dir)
    assert name in info.value.message
    assert "HTTP 500" in info.value.message  # not an HTML page pasted into the reason
    assert "moto does not" in info.value.fix
    print(f"\n[moto] StopTrainingJob answer: {info.value.message}")


def test_sagemaker_unknown_training_job_is_a_clear_error(
    aws_setup: AwsSetup, tmp_path: Path
) -> None:
    backend = SageMakerBackend("sm", aws_setup.options())
    backend.validate_options()
    with pytest.raises(BackendError) as info:
        backend.status("cp-never-created", tmp_path)
    assert "cp-never-created" in info.value.message
