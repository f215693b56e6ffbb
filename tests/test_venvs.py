"""The virtualenv cache: keys, real builds with uv (and the pip fallback), locking, failures."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jupyter_cloudpromote.errors import BuildError
from jupyter_cloudpromote.venvs import (
    MARKER_NAME,
    ensure_venv,
    failing_requirements,
    inspect_interpreter,
    normalize_requirements,
    requirements_hash,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
NO_SUCH_PACKAGE = "cloudpromote-no-such-package-zz"


def _run_in(venv: Path, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "python"), "-c", code],
        capture_output=True,
        text=True,
        check=False,
        cwd=venv,  # not the repo root, whose package `-c` would otherwise find on sys.path
        env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
    )


def _key_for(requirements: list[str], python: str = sys.executable) -> str:
    executable, version = inspect_interpreter(python)
    return requirements_hash(requirements, f"{executable} {version}")


# ------------------------------------------------------------------------- fast: keys


def test_hash_ignores_order_blanks_comments_duplicates_and_spacing() -> None:
    base = requirements_hash(["six==1.17.0", "packaging>=23"], "/usr/bin/python3 3.11.7")
    same = requirements_hash(
        ["packaging>=23", "", "# pinned by resolve", "six==1.17.0", " six==1.17.0 "],
        "/usr/bin/python3 3.11.7",
    )
    assert base == same
    assert len(base) == 64 and int(base, 16) >= 0


def test_hash_changes_with_pins_interpreter_and_index() -> None:
    base = requirements_hash(["six==1.17.0"], "/usr/bin/python3 3.11.7")
    assert requirements_hash(["six==1.16.0"], "/usr/bin/python3 3.11.7") != base
    assert requirements_hash(["six==1.17.0"], "/usr/bin/python3 3.12.1") != base
    assert requirements_hash(["six==1.17.0"], "/usr/bin/python3 3.11.7", "https://x/simple") != base
    assert requirements_hash([], "/usr/bin/python3 3.11.7") != base


def test_requirement_spanning_lines_is_refused() -> None:
    # A newline would inject options (e.g. --index-url) into the requirements file.
    with pytest.raises(BuildError, match="spans several lines"):
        normalize_requirements(["six\n--index-url http://evil.example/simple"])


def test_failing_requirement_is_picked_out_of_installer_output() -> None:
    output = (
        "error: No solution found when resolving dependencies\n"
        "  cause: Because cloudpromote-no-such-package-zz was not found in the package "
        "registry and you require cloudpromote-no-such-package-zz==1.0, we can conclude ..."
    )
    lines = ["six==1.17.0", "Cloudpromote_No.Such-Package_ZZ==1.0", "pandas==2.2.2"]
    assert failing_requirements(lines, output) == ["Cloudpromote_No.Such-Package_ZZ==1.0"]
    # A package name that only appears inside another word is not blamed.
    assert failing_requirements(["six==1"], "sixteen packages resolved") == []


def test_inspect_interpreter_identifies_the_base_python() -> None:
    executable, version = inspect_interpreter(sys.executable)
    assert Path(executable) == Path(os.path.realpath(sys.executable))
    assert version == ".".join(str(part) for part in sys.version_info[:3])


def test_broken_interpreter_gives_a_clear_error(tmp_path: Path) -> None:
    shim = tmp_path / "python3.99"  # like a pyenv shim for a version that is not installed
    shim.write_text("#!/bin/sh\necho 'pyenv: python3.99: command not found' >&2\nexit 127\n")
    shim.chmod(0o755)
    with pytest.raises(BuildError, match=r"does not work \(exit code 127.*command not found"):
        inspect_interpreter(str(shim))
    with pytest.raises(BuildError, match="cannot be run"):
        inspect_interpreter(str(tmp_path / "missing-python"))


# ------------------------------------------------------------------------- slow: real builds


@pytest.mark.slow
def test_empty_requirements_make_an_isolated_venv(tmp_path: Path) -> None:
    messages: list[str] = []
    venv = ensure_venv([], python=sys.executable, cache_dir=tmp_path, progress=messages.append)
    assert venv.parent == tmp_path and (venv / MARKER_NAME).is_file()
    probe = _run_in(
        venv,
        "import sys, importlib.util; print(sys.prefix); "
        "print(importlib.util.find_spec('jupyter_cloudpromote') is None, "
        "importlib.util.find_spec('pytest') is None)",
    )
    assert probe.returncode == 0, probe.stderr
    prefix, isolation = probe.stdout.splitlines()
    assert Path(prefix) == venv
    # Nothing from the environment running the tests leaks into the job's environment.
    assert isolation == "True True"
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()
    assert any("Building environment" in m for m in messages)


@pytest.mark.slow
def test_small_package_installs_and_second_call_is_a_cache_hit(tmp_path: Path) -> None:
    requirements = ["six==1.17.0", "wheel==0.45.1"]
    first_messages: list[str] = []
    venv = ensure_venv(
        requirements, python=sys.executable, cache_dir=tmp_path, progress=first_messages.append
    )
    probe = _run_in(venv, "import six; print(six.__version__)")
    assert probe.stdout.strip() == "1.17.0", probe.stderr
    # Built in a temp folder and renamed: console scripts must still run from the final path.
    script = subprocess.run(
        [str(venv / "bin" / "wheel"), "version"], capture_output=True, text=True, check=False
    )
    assert script.returncode == 0 and "0.45.1" in script.stdout, script.stderr
    marker = venv / MARKER_NAME
    before = (marker.stat().st_ino, marker.stat().st_mtime_ns, marker.read_text())

    second_messages: list[str] = []
    again = ensure_venv(
        list(reversed(requirements)),
        python=sys.executable,
        cache_dir=tmp_path,
        progress=second_messages.append,
    )
    assert again == venv
    assert (marker.stat().st_ino, marker.stat().st_mtime_ns, marker.read_text()) == before
    assert any("Using cached environment" in m for m in second_messages)
    assert not any("Building environment" in m for m in second_messages)
    assert json.loads(marker.read_text())["requirements"] == sorted(requirements)


@pytest.mark.slow
def test_two_processes_build_the_same_environment_once(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    code = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from jupyter_cloudpromote.venvs import ensure_venv
        venv = ensure_venv(["six==1.17.0"], python=sys.executable, cache_dir=Path(sys.argv[1]),
                           progress=lambda m: print("PROGRESS", m, flush=True))
        print("VENV", venv)
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(cache)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=300)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    builds = sum("Building environment" in out for out in outputs)
    assert builds == 1, outputs
    venvs = {
        line.split(" ", 1)[1]
        for out in outputs
        for line in out.splitlines()
        if line.startswith("VENV ")
    }
    assert len(venvs) == 1
    # One finished environment and its lock; no half-built leftovers.
    entries = sorted(p.name for p in cache.iterdir())
    key = Path(venvs.pop()).name
    assert entries == [key, f"{key}.lock"]


@pytest.mark.slow
def test_build_waits_for_a_held_lock_then_uses_the_finished_environment(tmp_path: Path) -> None:
    # The waiting side of the lock, made deterministic: this test holds the lock first.
    key = _key_for([])
    tmp_path.mkdir(exist_ok=True)
    lock = os.open(tmp_path / f"{key}.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock, fcntl.LOCK_EX)
    code = (
        "import sys; from pathlib import Path; from jupyter_cloudpromote.venvs import ensure_venv;"
        "ensure_venv([], python=sys.executable, cache_dir=Path(sys.argv[1]),"
        " progress=lambda m: print(m, flush=True))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert "Waiting for another job" in first
    # While it waits, "another job" finishes the environment.
    ours = ensure_venv([], python=sys.executable, cache_dir=tmp_path / "elsewhere")
    os.rename(ours, tmp_path / key)
    fcntl.flock(lock, fcntl.LOCK_UN)
    os.close(lock)
    rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    assert "built meanwhile by another job" in rest and "Building environment" not in rest


@pytest.mark.slow
def test_half_built_leftovers_are_never_used_and_get_cleaned(tmp_path: Path) -> None:
    key = _key_for([])
    half = tmp_path / key
    (half / "bin").mkdir(parents=True)  # a crash after the rename is impossible, but be safe
    stale_build = tmp_path / f".build-{key}-crashed"
    stale_build.mkdir()
    (stale_build / "junk").write_text("half an install")
    venv = ensure_venv([], python=sys.executable, cache_dir=tmp_path)
    assert venv == half and (venv / MARKER_NAME).is_file()
    assert (venv / "bin" / "python").exists()
    assert not stale_build.exists()


@pytest.mark.slow
def test_unknown_package_fails_naming_it_and_leaves_nothing_cached(tmp_path: Path) -> None:
    with pytest.raises(BuildError) as caught:
        ensure_venv(
            ["six==1.17.0", f"{NO_SUCH_PACKAGE}==1.0"], python=sys.executable, cache_dir=tmp_path
        )
    error = caught.value
    assert f"The failing requirement: {NO_SUCH_PACKAGE}==1.0." in error.message
    assert "uv pip install exited with" in error.message
    assert "Last installer output" in error.message and "not found" in error.message
    assert NO_SUCH_PACKAGE in error.fix and "pip_index_url" in error.fix
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


@pytest.mark.slow
def test_pip_fallback_without_uv_builds_a_working_relocated_venv(tmp_path: Path) -> None:
    # A real run without uv: no site-packages (so the `uv` package is not importable) and a
    # PATH without the uv binary; our package comes from the source tree.
    base_python = os.path.realpath(sys.executable)
    code = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from jupyter_cloudpromote.venvs import ensure_venv, find_uv
        assert find_uv() is None, find_uv()
        venv = ensure_venv(["six==1.17.0"], python=sys.argv[2], cache_dir=Path(sys.argv[1]),
                           progress=lambda m: print("PROGRESS", m, flush=True))
        print("VENV", venv)
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = "/usr/bin:/bin"
    env["PYTHONPATH"] = str(REPO_ROOT)
    proc = subprocess.run(
        [base_python, "-S", "-c", code, str(tmp_path), base_python],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "with pip" in proc.stdout
    venv = Path(proc.stdout.split("VENV ", 1)[1].strip())
    assert _run_in(venv, "import six; print(six.__version__)").stdout.strip() == "1.17.0"
    # pip's own script had an absolute shebang to the temp build folder: rewritten.
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "--version"], capture_output=True, text=True, check=False
    )
    assert pip.returncode == 0 and str(venv) in pip.stdout, pip.stderr
