"""`jupyter cloudpromote` as a user or a CI script runs it: a real subprocess each time."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO_ROOT, make_notebook


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("jupyter-cloudpromote", path=str(Path(sys.executable).parent))
    command = [exe] if exe else [sys.executable, "-m", "jupyter_cloudpromote"]
    result = subprocess.run(
        [*command, *args], capture_output=True, text=True, env=os.environ.copy(), timeout=600
    )
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture()
def notebook(isolated_jupyter: Path, tmp_path: Path) -> Path:
    return make_notebook(
        tmp_path / "nb" / "job.ipynb",
        [
            ("size = 3", ["parameters"]),
            "import os\n%matplotlib inline\nprint('size is', size)",
            "out = os.environ['CLOUDPROMOTE_OUTPUT_DIR']\n"
            "open(os.path.join(out, 'size.txt'), 'w').write(str(size))",
        ],
    )


def test_preview_json_has_the_documented_keys(notebook: Path) -> None:
    result = cli("preview", str(notebook), "--json")
    data = json.loads(result.stdout)  # exactly one JSON document on stdout
    for key in ("script", "requirements", "dockerfile", "findings", "parameters"):
        assert key in data
    assert isinstance(data["script"], str) and "print('size is', size)" in data["script"]
    assert not any(line.lstrip().startswith("%") for line in data["script"].splitlines())
    compile(data["script"], "job.py", "exec")
    assert [p["name"] for p in data["parameters"]] == ["size"]
    assert data["parameters"][0]["type"] == "int"
    assert all(set(f) >= {"severity", "cell", "message", "fix"} for f in data["findings"])
    assert "FROM " in data["dockerfile"]


def test_preview_base_image_option_reaches_the_dockerfile(notebook: Path) -> None:
    data = json.loads(
        cli("preview", str(notebook), "--json", "--base-image", "example/py:3.11").stdout
    )
    assert "FROM example/py:3.11" in data["dockerfile"]


def test_preview_human_output_lists_findings_and_requirements(notebook: Path) -> None:
    out = cli("preview", str(notebook)).stdout
    assert "Findings:" in out and "Requirements:" in out and "size = 3" in out


@pytest.mark.slow
def test_submit_wait_list_status_logs_outputs_rerun(notebook: Path, tmp_path: Path) -> None:
    result = cli(
        "submit", str(notebook), "--backend", "local", "--param", "size=7", "--wait", "--json"
    )
    data = json.loads(result.stdout)
    assert data["status"] == "succeeded" and data["backend"] == "local"
    assert "succeeded" in result.stderr  # progress went to stderr
    job_id = data["id"]

    listed = json.loads(cli("list", "--json").stdout)["jobs"]
    assert [j["id"] for j in listed] == [job_id]
    status = json.loads(cli("status", job_id[:6], "--json").stdout)
    assert [h["state"] for h in status["history"]][-1] == "succeeded"
    logs = json.loads(cli("logs", job_id, "--json").stdout)
    assert "size is 7" in logs["run"]
    assert "size is 7" in cli("logs", job_id, "--follow").stdout

    dest = tmp_path / "fetched"
    outputs = json.loads(cli("outputs", job_id, "--dest", str(dest), "--json").stdout)
    assert [o["path"] for o in outputs["outputs"]] == ["size.txt"]
    assert (dest / "size.txt").read_text() == "7"

    rerun = json.loads(cli("rerun", job_id, "--wait", "--json").stdout)
    assert rerun["status"] == "succeeded" and rerun["id"] != job_id


@pytest.mark.slow
def test_submit_wait_exits_nonzero_when_the_job_fails(
    isolated_jupyter: Path, tmp_path: Path
) -> None:
    nb = make_notebook(tmp_path / "f.ipynb", ["import sys\nprint('about to fail')\nsys.exit(4)"])
    result = cli("submit", str(nb), "--wait", "--json", check=False)
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert data["status"] == "failed" and data["exit_code"] == 4


@pytest.mark.slow
def test_cancel_from_the_cli(isolated_jupyter: Path, tmp_path: Path) -> None:
    nb = make_notebook(tmp_path / "s.ipynb", ["import time\ntime.sleep(600)"])
    job_id = json.loads(cli("submit", str(nb), "--json").stdout)["id"]
    cancelled = json.loads(cli("cancel", job_id, "--json").stdout)
    assert cancelled["status"] in ("cancelling", "cancelled")


def test_errors_exit_2_with_the_fix_and_json_error(notebook: Path) -> None:
    result = cli("submit", str(notebook), "--backend", "nowhere", "--json", check=False)
    assert result.returncode == 2
    assert "Unknown backend 'nowhere'" in result.stderr and "local" in result.stderr
    assert json.loads(result.stdout)["error"].startswith("Unknown backend")
    bad = cli("submit", str(notebook), "--param", "nosuch=1", check=False)
    assert bad.returncode == 2 and "nosuch" in bad.stderr and "size" in bad.stderr
    mem = cli("preview", str(notebook), "--memory", "lots", check=False)
    assert mem.returncode == 2 and "512M" in mem.stderr
    missing = cli("status", "doesnotexist", check=False)
    assert missing.returncode == 2 and "list" in missing.stderr


def test_backends_lists_local_and_docker_with_availability(isolated_jupyter: Path) -> None:
    data = json.loads(cli("backends", "--json").stdout)
    kinds = {b["kind"]: b for b in data["backends"]}
    assert {"local", "docker"} <= set(kinds)
    assert kinds["local"]["available"] is True
    assert data["default"] == "local"


def test_profiles_from_jupyter_config_are_used(isolated_jupyter: Path, notebook: Path) -> None:
    (isolated_jupyter / "config" / "jupyter_cloudpromote_config.json").write_text(
        json.dumps(
            {
                "CloudPromote": {
                    "profiles": {"box": {"kind": "docker", "network": "none"}},
                    "base_image": "example/base:1",
                }
            }
        )
    )
    data = json.loads(cli("backends", "--json").stdout)
    assert {
        "name": "box",
        "kind": "docker",
        "configured": True,
        "settings": {"network": "none"},
    } in data["profiles"]
    preview = json.loads(cli("preview", str(notebook), "--backend", "box", "--json").stdout)
    assert "FROM example/base:1" in preview["dockerfile"]


def test_jupyter_subcommand_is_wired(isolated_jupyter: Path) -> None:
    jupyter = shutil.which("jupyter", path=str(Path(sys.executable).parent))
    if jupyter is None:
        pytest.skip("jupyter launcher not installed in this environment")
    result = subprocess.run([jupyter, "cloudpromote", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip()


def test_example_notebook_is_valid_and_has_parameters() -> None:
    data = json.loads((REPO_ROOT / "examples" / "hello_report.ipynb").read_text())
    tagged = [c for c in data["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1


def test_preview_shows_a_cost_estimate_for_paid_backends_only(notebook: Path) -> None:
    aws = [
        "--backend",
        "aws-batch",
        "--option",
        "job_queue=queue",
        "--option",
        "bucket=my-bucket",
        "--option",
        "job_role_arn=arn:aws:iam::123456789012:role/jobs",
        "--option",
        "region=us-east-1",
    ]
    data = json.loads(cli("preview", str(notebook), *aws, "--time", "2h", "--json").stdout)
    estimate = data["cost_estimate"]
    assert estimate["estimate"] is True and estimate["hours"] == 2
    assert estimate["usd_total"] == pytest.approx(2 * estimate["usd_per_hour"], abs=0.01)
    assert "not verified" in estimate["summary"]
    assert "Cost estimate: Estimated" in cli("preview", str(notebook), *aws).stdout
    local = json.loads(cli("preview", str(notebook), "--json").stdout)
    assert local["cost_estimate"] is None


def test_input_is_refused_by_backends_that_do_not_stage_it(notebook: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    result = cli("preview", str(notebook), "--input", str(data_dir), check=False)
    assert result.returncode == 2
    assert "takes no --input" in result.stderr and "--include" in result.stderr


def test_input_reaches_backends_that_stage_it(notebook: Path, tmp_path: Path) -> None:
    from jupyter_cloudpromote.cli import build_parser, promotion_options

    args = build_parser().parse_args(["submit", str(notebook), "--input", "data"])
    assert promotion_options(args).options["input"] == str(Path("data").resolve())
    args = build_parser().parse_args(["submit", str(notebook), "--input", "s3://bkt/in/"])
    assert promotion_options(args).options["input"] == "s3://bkt/in/"
    aws = ["--backend", "aws-batch", "--option", "job_queue=queue", "--option", "bucket=my-bucket"]
    aws += ["--option", "job_role_arn=arn:aws:iam::123456789012:role/jobs"]
    aws += ["--option", "region=us-east-1", "--input", "s3://my-bucket/in/"]
    assert cli("preview", str(notebook), *aws, "--json").returncode == 0
