"""Data staging through fsspec: local inputs up to S3 (moto's server), outputs back down,
and the in-job stager moving the same data with nothing but the standard library."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from jupyter_cloudpromote import job_stager
from jupyter_cloudpromote.aws import storage_options
from jupyter_cloudpromote.errors import ConfigError
from jupyter_cloudpromote.staging import (
    collect_outputs,
    extract_archive,
    is_remote,
    list_objects,
    stage_input,
)

from .aws_fixtures import (  # noqa: F401 - fixtures
    REGION,
    AwsSetup,
    MotoServer,
    fixture_aws_credentials,
    fixture_aws_setup,
    fixture_moto_server,
)


def make_folder(root: Path) -> Path:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a.csv").write_text("x,y\n1,2\n")
    (root / "sub" / "b.txt").write_text("bee")
    (root / "sub" / "deeper" / "c.bin").write_bytes(bytes(range(256)) * 40)
    return root


def tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# --- fast: fsspec's in-memory filesystem shows the staging is cloud-neutral ---------------


def test_round_trip_through_any_fsspec_filesystem(tmp_path: Path) -> None:
    source = make_folder(tmp_path / "data")
    staged = stage_input(str(source), "memory://cp-test/job1/inputs/")
    assert staged.uploaded == 3 and staged.uri == "memory://cp-test/job1/inputs/"
    back = tmp_path / "back"
    written = collect_outputs(staged.uri, back)
    assert len(written) == 3
    assert tree(back) == tree(source)
    listed = list_objects(staged.uri)
    assert [entry["path"] for entry in listed] == ["a.csv", "sub/b.txt", "sub/deeper/c.bin"]


def test_missing_local_input_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist on this machine"):
        stage_input(str(tmp_path / "nope"), "memory://cp-test/x/")


def test_remote_detection() -> None:
    assert is_remote("s3://bucket/x") and is_remote("gs://b/x")
    assert not is_remote("/data/x") and not is_remote("file:///data/x")


def test_archives_unpack_without_links_or_escapes(tmp_path: Path) -> None:
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in (("model.pkl", b"weights"), ("../evil.txt", b"x"), ("/abs.txt", b"y")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("passwd")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    dest = tmp_path / "out"
    written = extract_archive(archive, dest)
    assert [p.relative_to(dest).as_posix() for p in written] == ["model.pkl", "abs.txt"]
    assert not (tmp_path / "evil.txt").exists()
    assert not (dest / "passwd").exists()


# --- against moto's S3 -------------------------------------------------------------------


@pytest.mark.aws
@pytest.mark.slow
def test_s3_input_staging_and_output_collection_round_trip(
    tmp_path: Path, aws_setup: AwsSetup
) -> None:
    options = storage_options(aws_setup.options())
    source = make_folder(tmp_path / "data")
    prefix = f"s3://{aws_setup.bucket}/roundtrip/job1/inputs/"
    staged = stage_input(str(source), prefix, options)
    assert staged.uploaded == 3
    s3 = aws_setup.server.client("s3")
    keys = sorted(
        o["Key"]
        for o in s3.list_objects_v2(Bucket=aws_setup.bucket, Prefix="roundtrip/")["Contents"]
    )
    assert keys == [
        "roundtrip/job1/inputs/a.csv",
        "roundtrip/job1/inputs/sub/b.txt",
        "roundtrip/job1/inputs/sub/deeper/c.bin",
    ]
    back = tmp_path / "outputs"
    collect_outputs(prefix, back, options)
    assert tree(back) == tree(source)


@pytest.mark.aws
@pytest.mark.slow
def test_s3_uri_input_is_passed_through_and_missing_one_refused(aws_setup: AwsSetup) -> None:
    options = storage_options(aws_setup.options())
    s3 = aws_setup.server.client("s3")
    s3.put_object(Bucket=aws_setup.bucket, Key="shared/dataset/part-0.csv", Body=b"1,2\n")
    staged = stage_input(f"s3://{aws_setup.bucket}/shared/dataset", "s3://unused/x/", options)
    assert staged.uploaded == 0
    assert staged.uri == f"s3://{aws_setup.bucket}/shared/dataset/"
    with pytest.raises(ConfigError, match="does not exist"):
        stage_input(f"s3://{aws_setup.bucket}/shared/nothing-here", "s3://unused/x/", options)


@pytest.mark.aws
@pytest.mark.slow
def test_output_objects_named_outside_the_folder_are_not_downloaded(
    tmp_path: Path, aws_setup: AwsSetup
) -> None:
    options = storage_options(aws_setup.options())
    s3 = aws_setup.server.client("s3")
    s3.put_object(Bucket=aws_setup.bucket, Key="escape/job/outputs/good.txt", Body=b"ok")
    s3.put_object(Bucket=aws_setup.bucket, Key="escape/job/outputs/../../evil.txt", Body=b"no")
    back = tmp_path / "deep" / "outputs"
    collect_outputs(f"s3://{aws_setup.bucket}/escape/job/outputs/", back, options)
    assert tree(back) == {"good.txt": b"ok"}
    assert not list(tmp_path.rglob("evil.txt"))


@pytest.mark.aws
@pytest.mark.slow
def test_in_job_stager_downloads_inputs_runs_and_uploads_outputs(
    tmp_path: Path, aws_setup: AwsSetup
) -> None:
    """The stager as a job runs it (stdlib only, a subprocess), against moto's S3."""
    s3 = aws_setup.server.client("s3")
    bucket = aws_setup.bucket
    s3.put_object(Bucket=bucket, Key="stager/in/data/x y+z.txt", Body=b"input data")
    inputs, outputs = tmp_path / "inputs", tmp_path / "outputs"
    outputs.mkdir()
    script = (
        "import os, pathlib\n"
        "src = pathlib.Path(os.environ['CLOUDPROMOTE_INPUT_DIR'], 'data', 'x y+z.txt')\n"
        "out = pathlib.Path(os.environ['CLOUDPROMOTE_OUTPUT_DIR'])\n"
        "(out / 'nested').mkdir()\n"
        "(out / 'nested' / 'copy é.txt').write_bytes(src.read_bytes().upper())\n"
        "raise SystemExit(3)\n"
    )
    env = {
        "PATH": os.environ["PATH"],
        job_stager.INPUT_URI_ENV: f"s3://{bucket}/stager/in/",
        job_stager.INPUT_DIR_ENV: str(inputs),
        job_stager.OUTPUT_URI_ENV: f"s3://{bucket}/stager/out/",
        job_stager.OUTPUT_DIR_ENV: str(outputs),
        job_stager.ENDPOINT_ENV: aws_setup.server.endpoint,
        job_stager.AUTH_ENV: "anonymous",
        "AWS_REGION": REGION,
    }
    done = subprocess.run(
        [sys.executable, job_stager.__file__, sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3, done.stderr  # the job's own exit code, after the upload
    assert "staged 1 input file(s)" in done.stderr
    assert "uploaded 1 output file(s)" in done.stderr
    body = s3.get_object(Bucket=bucket, Key="stager/out/nested/copy é.txt")["Body"].read()
    assert body == b"INPUT DATA"


@pytest.mark.aws
@pytest.mark.slow
def test_in_job_stager_signs_requests_moto_verifies(
    tmp_path: Path, moto_server: MotoServer
) -> None:
    """With IAM enforcement on, moto checks each request's SigV4 signature: the stager's
    own signer (no boto3 in the job) must produce ones it accepts, and a wrong secret fails."""
    from .aws_fixtures import start_moto, stop_moto

    server = start_moto(tmp_path, {"INITIAL_NO_AUTH_ACTION_COUNT": "4"})
    try:
        iam = server.client("iam")
        iam.create_user(UserName="stager")
        policy = (
            '{"Version": "2012-10-17", "Statement": '
            '[{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}'
        )
        iam.put_user_policy(UserName="stager", PolicyName="s3", PolicyDocument=policy)
        key = iam.create_access_key(UserName="stager")["AccessKey"]
        import boto3

        s3 = boto3.client(
            "s3",
            region_name=REGION,
            endpoint_url=server.endpoint,
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
        )
        s3.create_bucket(Bucket="signed-bucket")
        s3.put_object(Bucket="signed-bucket", Key="in/a.txt", Body=b"A")
        outputs = tmp_path / "out"
        outputs.mkdir()
        (outputs / "result.txt").write_text("R")
        base_env = {
            "PATH": os.environ["PATH"],
            job_stager.INPUT_URI_ENV: "s3://signed-bucket/in/",
            job_stager.INPUT_DIR_ENV: str(tmp_path / "in"),
            job_stager.OUTPUT_URI_ENV: "s3://signed-bucket/out/",
            job_stager.OUTPUT_DIR_ENV: str(outputs),
            job_stager.ENDPOINT_ENV: server.endpoint,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
        }
        good = subprocess.run(
            [sys.executable, job_stager.__file__, sys.executable, "-c", "pass"],
            env={**base_env, "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert good.returncode == 0, good.stderr
        assert (tmp_path / "in" / "a.txt").read_text() == "A"
        got = s3.get_object(Bucket="signed-bucket", Key="out/result.txt")["Body"].read()
        assert got == b"R"
        bad = subprocess.run(
            [sys.executable, job_stager.__file__, sys.executable, "-c", "pass"],
            env={**base_env, "AWS_SECRET_ACCESS_KEY": "wrong-secret"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert bad.returncode == job_stager.STAGING_FAILED_EXIT_CODE
        assert "HTTP Error 403" in bad.stderr
        assert "wrong-secret" not in bad.stderr and key["SecretAccessKey"] not in good.stderr
    finally:
        stop_moto(server)
