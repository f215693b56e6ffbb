"""A cache of job virtualenvs, one per (requirements, interpreter, index), built with uv.

The local backend runs each job in a fresh virtualenv holding exactly the job's resolved
requirements, never the user's own environment. Building one is the slow part of a local job,
so finished environments are kept in a cache folder under the hash of what went into them:
the next job with the same requirements starts at once.

Safety rules of the cache:
- an environment is built in a temporary folder inside the cache and renamed into place
  atomically once complete, with a marker file inside: a half-built folder is never used;
- a per-hash file lock (fcntl.flock) makes concurrent jobs with the same requirements wait for
  one build instead of building twice;
- uv environments are made `--relocatable`, so the rename does not break their scripts; the
  plain `venv` + pip fallback rewrites the absolute paths in bin/ before the rename.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import BuildError

# Bump when the layout of a cached environment changes, so old entries are not reused.
_LAYOUT_VERSION = "cloudpromote-venv-1"
MARKER_NAME = ".cloudpromote-venv.json"
REQUIREMENTS_NAME = "cloudpromote-requirements.txt"
_BUILD_PREFIX = ".build-"
_TAIL_LINES = 25

Progress = Callable[[str], None]


def normalize_requirements(requirements: list[str]) -> list[str]:
    """Requirement lines without blanks, comments or duplicates, in a stable order.

    Each requirement must be one line: a newline would smuggle extra lines (options such as
    --index-url) into the requirements file handed to uv or pip.
    """
    lines: set[str] = set()
    for raw in requirements:
        if "\n" in raw or "\r" in raw:
            raise BuildError(
                f"The requirement {raw!r} spans several lines.",
                "Give each requirement as one PEP 508 line, e.g. 'pandas==2.2.2'.",
            )
        line = " ".join(raw.split())
        if line and not line.startswith("#"):
            lines.add(line)
    return sorted(lines)


def requirements_hash(requirements: list[str], python: str, index_url: str = "") -> str:
    """Cache key of an environment: order-insensitive over requirements, sha256 hex.

    `python` identifies the interpreter (ensure_venv passes its real path and version).
    """
    payload = json.dumps(
        {
            "layout": _LAYOUT_VERSION,
            "python": python,
            "index_url": index_url,
            "requirements": normalize_requirements(requirements),
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def inspect_interpreter(python: str) -> tuple[str, str]:
    """(real path of the interpreter binary, its version "X.Y.Z"); BuildError when unusable.

    Running it both validates it (a pyenv shim for an uninstalled version exists on PATH but
    fails) and identifies it: a virtualenv's python resolves to the base interpreter it links
    to, which is what a new environment is really built on.
    """
    code = (
        "import os, platform, sys; print(os.path.realpath(sys.executable)); "
        "print(platform.python_version())"
    )
    try:
        proc = subprocess.run(
            [python, "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildError(
            f"The Python interpreter {python!r} cannot be run ({exc}).",
            "Install that Python, or set the local profile's option python=/path/to/python.",
        ) from exc
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or len(lines) < 2:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise BuildError(
            f"The Python interpreter {python!r} does not work "
            f"(exit code {proc.returncode}: {' '.join(detail)}).",
            "Install that Python, or set the local profile's option python=/path/to/python.",
        )
    return lines[-2], lines[-1]


def find_uv() -> str | None:
    """The uv binary shipped with the `uv` Python package, or one on PATH; None if neither."""
    try:
        import uv

        return str(uv.find_uv_bin())
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


def is_complete(venv_dir: Path) -> bool:
    return (venv_dir / MARKER_NAME).is_file()


def ensure_venv(
    requirements: list[str],
    *,
    python: str,
    cache_dir: Path,
    progress: Callable[[str], None] | None = None,
    index_url: str = "",
    ca_bundle: str | None = None,
) -> Path:
    """Return a virtualenv with exactly `requirements` on `python`, building it if needed.

    Raises BuildError naming the failing requirement and the tail of the installer's output.
    """
    say: Progress = progress or (lambda _message: None)
    lines = normalize_requirements(requirements)
    executable, version = inspect_interpreter(python)
    key = requirements_hash(lines, f"{executable} {version}", index_url)
    cache_dir = Path(cache_dir).absolute()  # the installers run with another cwd
    cache_dir.mkdir(parents=True, exist_ok=True)
    final = cache_dir / key
    if is_complete(final):
        say(f"Using cached environment {final} (Python {version}, {len(lines)} requirements).")
        return final
    with _locked(cache_dir / f"{key}.lock", say):
        if is_complete(final):
            say(f"Using cached environment {final}, built meanwhile by another job.")
            return final
        _remove_leftovers(cache_dir, key, final)
        build_root = Path(tempfile.mkdtemp(prefix=f"{_BUILD_PREFIX}{key}-", dir=cache_dir))
        try:
            venv = build_root / "venv"
            started = time.monotonic()
            uv = find_uv()
            tool = "uv" if uv else "pip"
            say(
                f"Building environment for Python {version} with {tool}: "
                f"{len(lines)} requirements{': ' + ', '.join(lines) if lines else ''}."
            )
            requirements_file = build_root / REQUIREMENTS_NAME
            requirements_file.write_text("".join(f"{line}\n" for line in lines), "utf-8")
            if uv:
                _build_with_uv(
                    uv,
                    venv,
                    executable,
                    requirements_file,
                    lines,
                    say,
                    index_url=index_url,
                    ca_bundle=ca_bundle,
                )
            else:
                _build_with_pip(
                    venv,
                    executable,
                    requirements_file,
                    lines,
                    say,
                    index_url=index_url,
                    ca_bundle=ca_bundle,
                )
                _rewrite_bin_paths(venv / "bin", str(venv), str(final))
            shutil.copyfile(requirements_file, venv / REQUIREMENTS_NAME)
            marker = {
                "requirements": lines,
                "python": executable,
                "python_version": version,
                "index_url": index_url,
                "tool": tool,
                "built": time.time(),
                "build_seconds": round(time.monotonic() - started, 3),
            }
            (venv / MARKER_NAME).write_text(json.dumps(marker, indent=1), "utf-8")
            # The marker is inside before the rename, so the final name only ever appears
            # complete.
            os.rename(venv, final)
            say(f"Environment ready in {time.monotonic() - started:.1f}s: {final}")
        finally:
            shutil.rmtree(build_root, ignore_errors=True)
    return final


@contextlib.contextmanager
def _locked(lock_path: Path, say: Progress) -> Iterator[None]:
    # Lock files are left in place: deleting one would race with a process about to lock it.
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            say("Waiting for another job that is building the same environment...")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _remove_leftovers(cache_dir: Path, key: str, final: Path) -> None:
    """Under the lock, any build folder for this key is from a build that died midway."""
    for stale in cache_dir.glob(f"{_BUILD_PREFIX}{key}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if final.exists() and not is_complete(final):
        shutil.rmtree(final, ignore_errors=True)


def _installer_env(ca_bundle: str | None) -> dict[str, str]:
    env = dict(os.environ)
    # The caller's own virtualenv must not leak into the job's environment.
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    env["UV_PYTHON_DOWNLOADS"] = "never"  # use the interpreter we chose, never fetch one
    env["NO_COLOR"] = "1"
    env["COLUMNS"] = "1000"  # uv wraps its error messages at COLUMNS; keep them one line each
    if ca_bundle:
        # uv and pip both trust SSL_CERT_FILE; pip also reads PIP_CERT.
        env["SSL_CERT_FILE"] = ca_bundle
        env["PIP_CERT"] = ca_bundle
    return env


def _run_step(
    argv: list[str], env: dict[str, str], say: Progress, cwd: Path
) -> tuple[int, list[str]]:
    """Run one installer step, passing each output line to `say`; (exit code, output tail)."""
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
    try:
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            text=True,
            errors="replace",
        )
    except OSError as exc:
        return 127, [f"cannot run {argv[0]}: {exc}"]
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        if line:
            tail.append(line)
            say(line)
    return proc.wait(), list(tail)


def _build_with_uv(
    uv: str,
    venv: Path,
    python: str,
    requirements_file: Path,
    lines: list[str],
    say: Progress,
    *,
    index_url: str,
    ca_bundle: str | None,
) -> None:
    env = _installer_env(ca_bundle)
    cwd = venv.parent
    code, tail = _run_step(
        [uv, "venv", "--relocatable", "--python", python, str(venv)], env, say, cwd
    )
    if code != 0:
        _fail_creating(python, "uv venv", code, tail)
    if not lines:
        return
    argv = [
        uv,
        "pip",
        "install",
        "--python",
        str(venv / "bin" / "python"),
        "-r",
        str(requirements_file),
    ]
    if index_url:
        argv += ["--index-url", index_url]
    code, tail = _run_step(argv, env, say, cwd)
    if code != 0:
        _fail_installing(lines, "uv pip install", code, tail, index_url)


def _build_with_pip(
    venv: Path,
    python: str,
    requirements_file: Path,
    lines: list[str],
    say: Progress,
    *,
    index_url: str,
    ca_bundle: str | None,
) -> None:
    """Fallback when uv is not installed: the standard library's venv, then pip."""
    env = _installer_env(ca_bundle)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    if index_url:
        env["PIP_INDEX_URL"] = index_url
    cwd = venv.parent
    code, tail = _run_step([python, "-m", "venv", str(venv)], env, say, cwd)
    if code != 0:
        _fail_creating(python, "python -m venv", code, tail)
    if not lines:
        return
    argv = [
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "--no-input",
        "-r",
        str(requirements_file),
    ]
    code, tail = _run_step(argv, env, say, cwd)
    if code != 0:
        _fail_installing(lines, "pip install", code, tail, index_url)


def _rewrite_bin_paths(bin_dir: Path, old: str, new: str) -> None:
    """Point the scripts pip wrote (absolute shebangs, activate) at the venv's final path."""
    old_bytes, new_bytes = old.encode(), new.encode()
    for path in bin_dir.iterdir():
        if path.is_symlink() or not path.is_file() or path.stat().st_size > 1_000_000:
            continue
        data = path.read_bytes()
        if old_bytes in data and b"\0" not in data:
            path.write_bytes(data.replace(old_bytes, new_bytes))


def _fail_creating(python: str, step: str, code: int, tail: list[str]) -> None:
    output = "\n".join(tail[-10:])
    raise BuildError(
        f"Creating the job's virtualenv on {python} failed ({step} exited with {code}):\n{output}",
        "Check that this Python can make virtualenvs (on Debian/Ubuntu install python3-venv), "
        "or set the local profile's option python=/path/to/another/python.",
    )


def requirement_name(line: str) -> str:
    """The distribution name at the start of a requirement line ('' when there is none)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line)
    return match.group(1) if match else ""


def failing_requirements(lines: list[str], output: str) -> list[str]:
    """The requirement lines whose package name the installer's output mentions."""
    named = []
    for line in lines:
        name = requirement_name(line)
        if not name:
            continue
        # Package names compare with -, _ and . as equals, case-insensitively (PEP 503).
        pattern = "[-_.]".join(re.escape(part) for part in re.split(r"[-_.]+", name))
        if re.search(rf"(?<![\w.-]){pattern}(?![\w-])", output, re.IGNORECASE):
            named.append(line)
    return named


def _fail_installing(
    lines: list[str], step: str, code: int, tail: list[str], index_url: str
) -> None:
    output = "\n".join(tail)
    culprits = failing_requirements(lines, output)
    index = index_url or "the default package index"
    if culprits:
        which = f"The failing requirement: {', '.join(culprits)}."
    else:
        which = f"Requirements: {', '.join(lines)}."
    subject = ", ".join(culprits) if culprits else "each requirement"
    raise BuildError(
        f"Installing the job's requirements failed ({step} exited with {code}). {which}\n"
        f"Last installer output:\n{output}",
        f"Check that {subject} exists on {index} in that version for this Python; correct or "
        "remove it where it comes from (an import, a %pip line or requirements.txt beside "
        "the notebook), or point pip_index_url at an index that has it; then submit again.",
    )
