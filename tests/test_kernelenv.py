"""kernelenv: find the kernel's interpreter and probe its environment, for real."""

from __future__ import annotations

import importlib.metadata
import json
import platform
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from packaging.utils import canonicalize_name

from jupyter_cloudpromote import kernelenv
from jupyter_cloudpromote.errors import KernelNotFoundError
from jupyter_cloudpromote.kernelenv import find_kernel_environment, kernel_name_of


def _install_kernelspec(data_dir: Path, name: str, argv0: str, language: str = "python") -> Path:
    spec_dir = data_dir / "kernels" / name
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [argv0, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": name,
        "language": language,
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    return spec_dir


def _fake_distribution(site: Path, name: str, version: str, files: dict[str, str]) -> None:
    """Install a distribution by hand: a dist-info folder with METADATA and RECORD."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    records = [f"{info.name}/METADATA,,", f"{info.name}/RECORD,,"]
    for relative, text in files.items():
        target = site / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        records.append(f"{relative},,")
    (info / "RECORD").write_text("\n".join(records) + "\n")


def test_kernel_name_of_reads_kernelspec_name() -> None:
    nb = nbformat.v4.new_notebook()
    assert kernel_name_of(nb) is None
    nb.metadata["kernelspec"] = {"name": "py311-ml", "display_name": "ML", "language": "python"}
    assert kernel_name_of(nb) == "py311-ml"


def test_current_interpreter_matches_importlib_metadata() -> None:
    env = find_kernel_environment(None)
    assert env.kernel_name == "python3"
    assert env.python == sys.executable
    assert env.python_version == platform.python_version()
    expected = {}
    for dist in importlib.metadata.distributions():
        expected.setdefault(canonicalize_name(dist.metadata["Name"]), dist.version)
    assert env.versions == expected
    assert "nbformat" in env.packages_distributions["nbformat"]
    assert {"json", "asyncio", "sys"} <= env.stdlib
    assert "nbformat" not in env.stdlib


def test_native_python3_kernel_is_this_interpreter(isolated_jupyter: Path) -> None:
    env = find_kernel_environment("python3")
    assert env.kernel_name == "python3"
    assert env.python == sys.executable


def test_unknown_kernel_names_it_and_lists_installed(isolated_jupyter: Path) -> None:
    _install_kernelspec(isolated_jupyter / "data", "other-env", sys.executable)
    with pytest.raises(KernelNotFoundError) as caught:
        find_kernel_environment("no-such-kernel")
    message = str(caught.value)
    assert "'no-such-kernel' is not installed" in message
    assert "other-env" in message
    assert "python -m ipykernel install --user --name no-such-kernel" in message
    assert "--kernel NAME" in message


def test_non_python_kernel_is_refused(isolated_jupyter: Path) -> None:
    _install_kernelspec(isolated_jupyter / "data", "ir", "R", language="R")
    with pytest.raises(KernelNotFoundError, match="only Python kernels are supported"):
        find_kernel_environment("ir")


def test_probe_failure_reports_interpreter_stderr(isolated_jupyter: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken-python"
    broken.write_text("#!/bin/sh\necho 'fatal: environment is corrupt' >&2\nexit 3\n")
    broken.chmod(0o755)
    _install_kernelspec(isolated_jupyter / "data", "broken", str(broken))
    with pytest.raises(KernelNotFoundError) as caught:
        find_kernel_environment("broken")
    assert "fatal: environment is corrupt" in str(caught.value)
    assert "exit code 3" in str(caught.value)


def test_missing_interpreter_path_is_reported(isolated_jupyter: Path, tmp_path: Path) -> None:
    _install_kernelspec(isolated_jupyter / "data", "gone", str(tmp_path / "gone" / "python"))
    with pytest.raises(KernelNotFoundError, match="does not exist"):
        find_kernel_environment("gone")


@pytest.mark.slow
def test_second_kernel_in_another_venv(isolated_jupyter: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    _fake_distribution(site, "demo-pkg", "1.2.3", {"demo_pkg/__init__.py": ""})
    # Two distributions sharing the namespace package "acme" (no acme/__init__.py).
    _fake_distribution(site, "acme-widgets", "0.4.0", {"acme/widgets/__init__.py": ""})
    _fake_distribution(site, "acme-gadgets", "2.0.0", {"acme/gadgets/core.py": ""})
    _install_kernelspec(isolated_jupyter / "data", "venv-kernel", str(python))
    kernelenv.clear_cache()

    env = find_kernel_environment("venv-kernel")
    assert env.kernel_name == "venv-kernel"
    assert env.python == str(python)
    assert env.versions["demo-pkg"] == "1.2.3"
    assert "nbformat" not in env.versions  # the other environment, not this one
    assert env.packages_distributions["demo_pkg"] == ["demo-pkg"]
    assert sorted(env.packages_distributions["acme"]) == ["acme-gadgets", "acme-widgets"]
    assert env.namespace_modules["acme.widgets"] == ["acme-widgets"]
    assert env.namespace_modules["acme.gadgets"] == ["acme-gadgets"]

    # Installing another distribution changes site-packages: the cache notices.
    _fake_distribution(site, "late-pkg", "9.9", {"late_pkg.py": ""})
    assert find_kernel_environment("venv-kernel").versions["late-pkg"] == "9.9"

    # And resolve maps namespace sub-packages through that real environment.
    from jupyter_cloudpromote.models import ConvertedNotebook
    from jupyter_cloudpromote.resolve import resolve_requirements

    converted = ConvertedNotebook(
        script="",
        parameters=[],
        parameters_cell=None,
        findings=[],
        pip_requirements=[],
        referenced_files=[],
        cell_sources={0: "import acme.gadgets.core\nfrom acme import widgets\nimport demo_pkg"},
    )
    resolved = resolve_requirements(converted, tmp_path, env)
    assert resolved.lines() == ["acme-gadgets==2.0.0", "acme-widgets==0.4.0", "demo-pkg==1.2.3"]
    assert resolved.python_version == env.python_version
