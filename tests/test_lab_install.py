"""Installing the package gives a working JupyterLab extension without node.

Each test builds a fresh virtualenv (slow: it downloads JupyterLab from the package index).
1. The built wheel, installed with no node on PATH: `jupyter labextension list` and
   `jupyter server extension list` report the extension enabled and OK.
2. What binder/ names (requirements.txt, then postBuild as repo2docker runs it): the server
   and lab extensions load. repo2docker itself needs an image registry, which is missing here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, require

pytestmark = pytest.mark.slow

LABEXTENSION = REPO_ROOT / "jupyter_cloudpromote" / "labextension"
BINDER = REPO_ROOT / "binder"
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def _run(args: list[str], env: dict[str, str], cwd: Path | None = None) -> str:
    result = subprocess.run(
        args, env=env, cwd=cwd, capture_output=True, text=True, timeout=1200, check=False
    )
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return ANSI_ESCAPE.sub("", result.stdout + result.stderr)


def _fresh_venv(where: Path) -> tuple[Path, dict[str, str]]:
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, timeout=300)
    bindir = where / "bin"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("JUPYTER", "VIRTUAL_ENV", "PYTHON"))
    }
    # Only the venv's own tools: node must not be reachable.
    env["PATH"] = str(bindir)
    env["HOME"] = str(where / "home")
    (where / "home").mkdir()
    env["JUPYTER_CONFIG_DIR"] = str(where / "home" / "config")
    env["JUPYTER_DATA_DIR"] = str(where / "home" / "data")
    return bindir, env


def _assert_extensions_enabled(bindir: Path, env: dict[str, str]) -> None:
    labext = _run([str(bindir / "jupyter"), "labextension", "list"], env)
    line = next((ln for ln in labext.splitlines() if "jupyter-cloudpromote" in ln), "")
    assert re.search(r"jupyter-cloudpromote v\S+ enabled .*OK", line), labext
    server = _run([str(bindir / "jupyter"), "server", "extension", "list"], env)
    assert re.search(r"jupyter_cloudpromote enabled", server), server
    # "OK" is printed on the line after the enabled line, with the version found.
    assert re.search(r"jupyter_cloudpromote \S+ OK", server), server


def test_wheel_installs_lab_and_server_extension_without_node(tmp_path: Path) -> None:
    require(
        (LABEXTENSION / "static" / "style.js").is_file(),
        "lab extension not built; run .ci/build-labextension.sh",
    )
    dist = tmp_path / "dist"
    # The hook skips the npm build when the built extension exists (as on PyPI's wheel).
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(dist), str(REPO_ROOT)],
        dict(os.environ),
    )
    wheel = next(dist.glob("jupyter_cloudpromote-*.whl"))
    bindir, env = _fresh_venv(tmp_path / "venv")
    assert shutil.which("node", path=env["PATH"]) is None
    assert shutil.which("npm", path=env["PATH"]) is None
    _run([str(bindir / "python"), "-m", "pip", "install", "-q", str(wheel), "jupyterlab"], env)
    installed = tmp_path / "venv" / "share" / "jupyter" / "labextensions" / "jupyter-cloudpromote"
    assert (installed / "package.json").is_file()
    assert (installed / "install.json").is_file()
    _assert_extensions_enabled(bindir, env)


def test_binder_environment_loads_server_and_lab_extension(tmp_path: Path) -> None:
    require(
        (LABEXTENSION / "static" / "style.js").is_file(),
        "lab extension not built; run .ci/build-labextension.sh",
    )
    bindir, env = _fresh_venv(tmp_path / "venv")
    # What environment.yml's pip section installs, then postBuild from the repository root.
    _run(
        [
            str(bindir / "python"),
            "-m",
            "pip",
            "install",
            "-q",
            "-r",
            str(BINDER / "requirements.txt"),
        ],
        env,
    )
    env["PATH"] = f"{bindir}:/usr/bin:/bin"  # postBuild is a bash script
    _run(["bash", str(BINDER / "postBuild")], env, cwd=REPO_ROOT)
    config = Path(env["HOME"]) / ".jupyter" / "jupyter_server_config.py"
    assert "examples/hello_report.ipynb" in config.read_text()
    assert (REPO_ROOT / "examples" / "hello_report.ipynb").is_file()
    _assert_extensions_enabled(bindir, env)
