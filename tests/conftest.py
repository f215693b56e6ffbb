"""Shared fixtures. Real services only: under CI=true a missing one is a failure, not a skip."""

from __future__ import annotations

import os
import platform
import textwrap
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

import jupyter_cloudpromote.runner
from jupyter_cloudpromote.models import BuildContext

REPO_ROOT = Path(__file__).resolve().parents[1]
CORPUS_DIR = REPO_ROOT.parent / "shared" / "corpus"
IN_CI = os.environ.get("CI", "").lower() == "true"
# The locally made base image (see .ci/setup-docker.sh); no registry is reachable in tests.
BASE_IMAGE = os.environ.get("CLOUDPROMOTE_TEST_BASE_IMAGE", "cloudpromote-base:test")


def require(condition: bool, why: str) -> None:
    """Skip on a developer machine without the service; fail under CI=true."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required service missing under CI=true: {why}")
    pytest.skip(why)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[object]:
    try:
        import docker

        client = docker.from_env()
        client.ping()
    except Exception as exc:  # any failure means: no usable engine
        require(False, f"no Docker engine reachable ({exc}); run .ci/setup-docker.sh")
        raise
    yield client
    client.close()


@pytest.fixture(scope="session")
def base_image(docker_client: object) -> str:
    import docker.errors

    try:
        docker_client.images.get(BASE_IMAGE)  # type: ignore[attr-defined]
    except docker.errors.ImageNotFound:
        require(False, f"base image {BASE_IMAGE} missing; run .ci/setup-docker.sh")
    return BASE_IMAGE


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    require((CORPUS_DIR / "labels.json").is_file(), f"corpus not found at {CORPUS_DIR}")
    return CORPUS_DIR


@pytest.fixture()
def isolated_jupyter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point Jupyter's config and data dirs at a temp folder: own job store, own config."""
    home = tmp_path / "jupyter"
    (home / "config").mkdir(parents=True)
    (home / "data").mkdir(parents=True)
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(home / "config"))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(home / "data"))
    monkeypatch.setenv("JUPYTER_CONFIG_PATH", str(home / "config"))
    return home


def make_notebook(
    path: Path,
    cells: list[str | tuple[str, list[str]]],
    *,
    kernel: str = "python3",
    markdown: list[int] | None = None,
) -> Path:
    """Write a small notebook. A cell is source text, or (source, tags)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for index, cell in enumerate(cells):
        source, tags = (cell, []) if isinstance(cell, str) else cell
        if markdown and index in markdown:
            new = nbformat.v4.new_markdown_cell(source)
        else:
            new = nbformat.v4.new_code_cell(source)
        if tags:
            new.metadata["tags"] = tags
        nb.cells.append(new)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


def make_job_context(
    root: Path,
    script: str,
    requirements: list[str] | None = None,
    *,
    python_version: str = platform.python_version(),
    notebook_name: str = "example",
) -> BuildContext:
    """A build context made by hand (script, requirements, runner, one data file), for
    backend tests that should not depend on the package stage."""
    directory = root / "context"
    directory.mkdir(parents=True)
    (directory / "job.py").write_text(textwrap.dedent(script), "utf-8")
    requirements = requirements or []
    (directory / "requirements.txt").write_text("".join(f"{r}\n" for r in requirements))
    runner = Path(jupyter_cloudpromote.runner.__file__).read_text("utf-8")
    (directory / "_cloudpromote_runner.py").write_text(runner, "utf-8")
    (directory / "data.txt").write_text("included file\n")
    return BuildContext(
        directory=directory,
        files=sorted(p.name for p in directory.iterdir()),
        content_hash="0" * 64,
        dependency_hash="1" * 64,
        dockerfile="",
        requirements=requirements,
        base_image="",
        python_version=python_version,
        notebook_name=notebook_name,
    )
