"""Build stage against the real Docker engine and the local base image.

Each test module builds its images under a repository unique to the run and removes them at
the end; the dependency stage stays in the engine's build cache, as it would for a user.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tarfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_cloudpromote.build import BuildResult, build_image
from jupyter_cloudpromote.errors import BuildError
from jupyter_cloudpromote.models import BuildContext
from jupyter_cloudpromote.package import CA_BUNDLE_NAME, make_build_context

from .conftest import make_notebook, require

pytestmark = [pytest.mark.docker, pytest.mark.slow]

HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
REQUIREMENT = "six==1.16.0"
SCRIPT = (
    "import six\nimport helpers\nimport mypkg\n"
    "data = open('data/sub/in.txt').read().strip()\n"
    "print('six', six.__version__, helpers.GREETING, mypkg.NAME, data)\n"
)
EXPECTED_OUTPUT = "six 1.16.0 hello pkg from-data"


class Project:
    """A notebook folder plus helpers to make contexts and build them."""

    def __init__(self, root: Path, base_image: str, client: Any) -> None:
        self.root = root
        self.base_image = base_image
        self.client = client
        self.token = uuid.uuid4().hex[:10]
        self.notebook = make_notebook(root / f"buildtest-{self.token}.ipynb", [SCRIPT])
        (root / "helpers.py").write_text("GREETING = 'hello'\n")
        (root / "mypkg").mkdir()
        (root / "mypkg" / "__init__.py").write_text("NAME = 'pkg'\n")
        (root / "data" / "sub").mkdir(parents=True)
        (root / "data" / "sub" / "in.txt").write_text("from-data\n")
        # The extra CA bundle: the host's (the proxy's CA is in it) plus a unique marker line,
        # which PEM readers skip, so the image layers can be searched for these exact bytes.
        self.ca_marker = f"# cloudpromote-ca-marker-{self.token}".encode()
        self.ca_bundle = root.parent / "extra-ca.pem"
        self.ca_bundle.write_bytes(HOST_CA_BUNDLE.read_bytes() + b"\n" + self.ca_marker + b"\n")
        self._count = 0

    def context(self, script: str = SCRIPT, **overrides: Any) -> BuildContext:
        self._count += 1
        args: dict[str, Any] = {
            "dest": self.root.parent / f"ctx{self._count}",
            "notebook_path": self.notebook,
            "script": script,
            "requirements": [REQUIREMENT],
            "local_modules": ["helpers.py", "mypkg"],
            "include": ["data"],
            "base_image": self.base_image,
            "python_version": "3.11.2",
            "ca_bundle": str(self.ca_bundle),
        }
        args.update(overrides)
        return make_build_context(**args)

    def build(self, context: BuildContext) -> tuple[BuildResult, float, list[str]]:
        streamed: list[str] = []
        started = time.monotonic()
        result = build_image(context, client=self.client, progress=streamed.append)
        return result, time.monotonic() - started, streamed


@pytest.fixture(scope="module")
def project(
    tmp_path_factory: pytest.TempPathFactory, docker_client: Any, base_image: str
) -> Iterator[Project]:
    proj = Project(tmp_path_factory.mktemp("buildproj") / "nb", base_image, docker_client)
    yield proj
    for image in docker_client.images.list(name=f"cloudpromote/buildtest-{proj.token}"):
        docker_client.images.remove(image.id, force=True)


@pytest.fixture(scope="module")
def first_build(project: Project) -> tuple[BuildContext, BuildResult, float]:
    context = project.context()
    result, seconds, _ = project.build(context)
    print(f"\n[measure] first build of the job image (deps cached or not): {seconds:.1f}s")
    return context, result, seconds


def test_build_streams_progress_and_tags_by_content(
    project: Project, first_build: tuple[BuildContext, BuildResult, float]
) -> None:
    context, result, _ = first_build
    assert result.built is True
    assert result.image == context.image_tag
    assert any(line.startswith("Step ") for line in result.log)
    image = project.client.images.get(result.image)
    labels = image.attrs["Config"]["Labels"]
    assert labels["io.cloudpromote.content-hash"] == context.content_hash
    assert labels["io.cloudpromote.notebook"] == project.notebook.name
    out = project.client.containers.run(result.image, remove=True)
    assert out.decode().strip() == EXPECTED_OUTPUT


def test_image_runs_as_non_root(
    project: Project, first_build: tuple[BuildContext, BuildResult, float]
) -> None:
    _, result, _ = first_build
    image = project.client.images.get(result.image)
    assert image.attrs["Config"]["User"] == "10001:10001"
    uid = project.client.containers.run(result.image, ["id", "-u"], remove=True)
    assert uid.decode().strip() == "10001"


def test_unchanged_rebuild_builds_nothing(
    project: Project, first_build: tuple[BuildContext, BuildResult, float]
) -> None:
    context, first, _ = first_build
    again = project.context()  # the same inputs, written to a new folder
    assert again.content_hash == context.content_hash
    result, seconds, streamed = project.build(again)
    print(f"\n[measure] unchanged resubmit, image reused: {seconds:.2f}s")
    assert result.built is False
    assert result.image == first.image
    assert not any(line.startswith("Step ") for line in streamed)


def _layers(client: Any, tag: str) -> list[str]:
    return list(client.images.get(tag).attrs["RootFS"]["Layers"])


def test_code_only_edit_reuses_the_dependency_layers(
    project: Project, first_build: tuple[BuildContext, BuildResult, float]
) -> None:
    context, first, _ = first_build
    edited = project.context(script=SCRIPT + "print('edited')\n")
    assert edited.dependency_hash == context.dependency_hash
    assert edited.content_hash != context.content_hash
    result, seconds, streamed = project.build(edited)
    print(f"\n[measure] code-only edit rebuild: {seconds:.1f}s")
    assert result.built is True and result.image != first.image

    # The pip step was taken from the cache, not run again.
    pip_step = next(i for i, line in enumerate(streamed) if "pip install" in line)
    assert streamed[pip_step + 1].strip() == "---> Using cache"
    # Every layer up to and including the one holding /opt/venv is shared by both images.
    base_count = len(_layers(project.client, project.base_image))
    old_layers = _layers(project.client, first.image)
    new_layers = _layers(project.client, result.image)
    venv_layer = base_count + 1  # base layers, the user-creating RUN, then the venv COPY
    assert old_layers[: venv_layer + 1] == new_layers[: venv_layer + 1]
    assert old_layers[-1] != new_layers[-1]
    history = project.client.images.get(result.image).history()
    venv_entries = [h for h in history if "/opt/venv" in h.get("CreatedBy", "") and h["Size"]]
    assert venv_entries, "expected a history entry copying /opt/venv"
    ran = project.client.containers.run(result.image, remove=True).decode()
    assert ran.splitlines() == [EXPECTED_OUTPUT, "edited"]


def _scan_saved_image(client: Any, tag: str, needles: list[bytes], names: list[str]) -> list[str]:
    """Every (layer, path) in the saved image whose name or content matches."""
    found: list[str] = []
    image = client.images.get(tag)
    saved = Path(f"/tmp/cloudpromote-scan-{uuid.uuid4().hex}.tar")
    try:
        with saved.open("wb") as handle:
            for chunk in image.save(named=True):
                handle.write(chunk)
        with tarfile.open(saved) as outer:
            layer_members = [m for m in outer.getmembers() if m.name.endswith("layer.tar")]
            assert layer_members, "docker save produced no layers"
            for member in layer_members:
                layer_file = outer.extractfile(member)
                assert layer_file is not None
                with tarfile.open(fileobj=layer_file, mode="r|") as layer:
                    for entry in layer:
                        if any(name in entry.name for name in names):
                            found.append(f"{member.name}:{entry.name} (name)")
                        if entry.isfile():
                            data = layer.extractfile(entry)
                            content = data.read() if data else b""
                            if any(needle in content for needle in needles):
                                found.append(f"{member.name}:{entry.name} (content)")
    finally:
        saved.unlink(missing_ok=True)
    return found


def test_ca_bundle_is_in_no_layer_of_the_final_image(
    project: Project, first_build: tuple[BuildContext, BuildResult, float]
) -> None:
    _, result, _ = first_build
    names = [CA_BUNDLE_NAME, "ca-all.pem"]
    assert _scan_saved_image(project.client, result.image, [project.ca_marker], names) == []

    # The same scan does find the bundle when the user asks to keep it.
    kept_context = project.context(keep_ca_bundle=True)
    kept, _, _ = project.build(kept_context)
    found = _scan_saved_image(project.client, kept.image, [project.ca_marker], names)
    assert any("cloudpromote/ca-bundle.pem (content)" in item for item in found)


def test_failing_pip_install_names_the_package(project: Project) -> None:
    missing = f"cloudpromote-no-such-package-{project.token}"
    context = project.context(requirements=[f"{missing}==1.0"])
    with pytest.raises(BuildError) as info:
        project.build(context)
    message = str(info.value)
    assert f"pip could not install {missing}" in message
    assert "pip install" in message  # the failing step is named
    assert "Check the requirement" in info.value.fix
    assert "extra CA bundle" in info.value.fix


def test_without_the_extra_ca_bundle_pip_fails_with_the_ca_fix(project: Project) -> None:
    # HTTPS from containers here passes an intercepting proxy: exactly a corporate user's case.
    context = project.context(ca_bundle=None)
    with pytest.raises(BuildError) as info:
        project.build(context)
    assert "could not verify the package index's TLS certificate" in info.value.message
    assert "extra_ca_bundle" in info.value.fix


@pytest.fixture(scope="module")
def local_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's docker-registry on a free 127.0.0.1 port (the engine trusts loopback)."""
    binary = shutil.which("docker-registry")
    require(binary is not None, "docker-registry not installed; run .ci/setup-docker.sh")
    assert binary is not None
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    folder = tmp_path_factory.mktemp("registry")
    config = folder / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {folder / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    process = subprocess.Popen(
        [binary, "serve", str(config)],
        stdout=(folder / "registry.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://{address}/v2/", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert process.poll() is None, (folder / "registry.log").read_text()
            assert time.monotonic() < deadline, "registry did not start"
            time.sleep(0.2)
        yield address
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_push_to_a_registry(
    project: Project,
    first_build: tuple[BuildContext, BuildResult, float],
    local_registry: str,
) -> None:
    context, first, _ = first_build
    result = build_image(context, client=project.client, push_to=local_registry)
    assert result.built is False  # already built: only pushed
    repository, version = first.image.rsplit(":", 1)
    assert result.image == f"{local_registry}/{repository}:{version}"
    assert any(line.startswith("Pushing ") for line in result.log)
    url = f"http://{local_registry}/v2/{repository}/tags/list"
    with urllib.request.urlopen(url, timeout=10) as answer:
        tags = json.loads(answer.read())["tags"]
    assert version in tags


def test_push_to_an_unreachable_registry_is_a_build_error(
    project: Project, first_build: tuple[BuildContext, BuildResult, float]
) -> None:
    context, _, _ = first_build
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(BuildError, match=r"Pushing .* failed") as info:
        build_image(context, client=project.client, push_to=f"127.0.0.1:{port}")
    assert "registry is reachable" in info.value.fix
