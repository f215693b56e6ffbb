"""Package stage: turn a converted notebook into a content-hashed build context.

The context folder holds the job's script, its requirements, the runner, the local modules
and included files (at their notebook-relative paths) and a Dockerfile. The same folder is
what the local backend runs from, so the code sits flat at its top level; the Dockerfile
copies only the code files into the final image, by name.

The Dockerfile is a two-stage classic-builder file: a `deps` stage makes /opt/venv and
pip-installs the requirements (with the extra CA bundle and index settings visible only to
that one RUN), and the final stage copies the venv, then the code last. A code-only edit
therefore reuses every dependency layer, and the CA bundle and index credentials never reach
the final image's layers unless `keep_ca_bundle` asks for the CA to stay.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from .errors import CloudPromoteError, ConfigError
from .models import BuildContext

RUNNER_NAME = "_cloudpromote_runner.py"
SCRIPT_NAME = "job.py"
DOCKERFILE_NAME = "Dockerfile"
REQUIREMENTS_NAME = "requirements.txt"
CA_BUNDLE_NAME = "cloudpromote-ca.pem"
PIP_CONFIG_NAME = "cloudpromote-pip.conf"

# Files that exist only for the build (never copied into the final image as code).
BUILD_ONLY_FILES = frozenset({DOCKERFILE_NAME, REQUIREMENTS_NAME, CA_BUNDLE_NAME, PIP_CONFIG_NAME})
RESERVED_NAMES = BUILD_ONLY_FILES | {RUNNER_NAME, SCRIPT_NAME, ".dockerignore"}

# Inside the image.
JOB_USER = "cloudpromote"
JOB_UID = 10001
JOB_HOME = "/home/cloudpromote"
JOB_WORKDIR = f"{JOB_HOME}/job"
JOB_OUTPUT_DIR = f"{JOB_HOME}/outputs"
VENV_DIR = "/opt/venv"
BUILD_TMP = "/tmp/cloudpromote-build"  # noqa: S108 - a path inside the deps stage only
KEPT_CA_PATH = "/usr/local/share/cloudpromote/ca-bundle.pem"
# Fixed PATH: images made by `docker import` carry no ENV at all, so "$PATH" would be empty.
IMAGE_PATH = f"{VENV_DIR}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Folders and files never packed from a module or included folder: caches that change on
# every run would make the content hash (and so the image tag) unstable.
SKIPPED_DIRS = frozenset({"__pycache__", ".ipynb_checkpoints", ".git", ".hg", ".svn"})
SKIPPED_SUFFIXES = (".pyc", ".pyo")

# A docker image reference: [registry[:port]/]path[:tag][@sha256:digest]. Strict on purpose:
# the base image is written into the Dockerfile's FROM lines.
_HOST_COMPONENT = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
# As in docker itself, a first component is a registry host only when it has a dot or a port
# or is "localhost"; otherwise it is part of the (lowercase) repository path.
_REGISTRY_HOST = (
    rf"(?:(?:localhost|{_HOST_COMPONENT}(?:\.{_HOST_COMPONENT})+)(?::[0-9]{{1,5}})?"
    rf"|{_HOST_COMPONENT}:[0-9]{{1,5}})"
)
IMAGE_REFERENCE_RE = re.compile(
    rf"^(?:{_REGISTRY_HOST}/)?"
    rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
    r"(?:@sha256:[a-f0-9]{64})?$"
)
_PYTHON_VERSION_RE = re.compile(r"^(\d+)\.(\d+)(?:\.\d+)?(?:[a-z]+\d*)?\+?$")
_HASH_RE = re.compile(r"^[a-f0-9]{16,128}$")
# Characters the Dockerfile's COPY would interpret (variables, globs, escapes, quoting).
_UNSAFE_PATH_CHARS = re.compile(r"[$*?\[\]\\\"'`\x00-\x1f\x7f]")
_INDEX_URL_RE = re.compile(r"^https?://[^\s\x00-\x1f\x7f]+$")


def validate_base_image(base_image: str) -> str:
    """Return the name unchanged when it is a plain image reference; raise ConfigError else."""
    if len(base_image) > 255 or not IMAGE_REFERENCE_RE.match(base_image):
        raise ConfigError(
            f"{base_image!r} is not a valid container image name.",
            "Set c.CloudPromote.base_image (or --base-image) to a name like "
            "'python:3.11-slim' or 'registry.example.com/team/python:3.11'.",
        )
    return base_image


def default_base_image(python_version: str) -> str:
    """The official slim Python image matching the kernel's X.Y, e.g. python:3.11-slim."""
    match = _PYTHON_VERSION_RE.match(python_version.strip())
    if not match:
        raise ConfigError(
            f"Cannot derive a base image from Python version {python_version!r}.",
            "Set c.CloudPromote.base_image to an image with python3 and venv.",
        )
    return f"python:{match.group(1)}.{match.group(2)}-slim"


def _slug(notebook_name: str) -> str:
    stem = notebook_name.rsplit("/", 1)[-1]
    if stem.lower().endswith(".ipynb"):
        stem = stem[: -len(".ipynb")]
    slug = re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")
    slug = slug[:64].strip("-")
    return slug or "notebook"


def image_repository_for(notebook_name: str) -> str:
    """A valid docker repository name for a notebook: cloudpromote/<slug of its name>."""
    return f"cloudpromote/{_slug(notebook_name)}"


def _validate_index_url(pip_index_url: str) -> None:
    if pip_index_url and not _INDEX_URL_RE.match(pip_index_url):
        raise ConfigError(
            "The package index URL must be a single http(s) URL without spaces.",
            "Fix c.CloudPromote.pip_index_url, e.g. 'https://pypi.example.com/simple'.",
        )


def _json_args(*args: str) -> str:
    return json.dumps(list(args))


def render_dockerfile(
    *,
    base_image: str,
    notebook_name: str,
    content_hash_label: str | None,
    has_requirements: bool,
    ca_bundle: bool,
    keep_ca_bundle: bool,
    pip_index_url: str = "",
    code_paths: Iterable[str] = (),
) -> str:
    """The job's Dockerfile.

    `code_paths` lists the notebook-relative files and folders (local modules, included
    paths) copied, each to the same relative path, before the runner and the script.
    The notebook name appears only as its slug (letters, digits, dashes); the exact name and
    the content hash are best passed as build-time labels, which keep the layer cache intact.
    """
    validate_base_image(base_image)
    _validate_index_url(pip_index_url)
    if content_hash_label is not None and not _HASH_RE.match(content_hash_label):
        raise ConfigError(f"Invalid content hash {content_hash_label!r}.", "")
    slug = _slug(notebook_name)
    lines = [
        "# syntax: classic builder. Made by jupyter-cloudpromote; rebuilt on every promotion.",
        "# Stage 1: the dependency environment. Nothing from this stage reaches the job image",
        "# except /opt/venv, so the CA bundle and index settings used by pip stay out of it.",
        f"FROM {base_image} AS deps",
    ]
    pip_env: list[str] = []
    prepare: list[str] = ["set -e", f"python3 -m venv {VENV_DIR}"]
    if has_requirements:
        lines.append(f"COPY {REQUIREMENTS_NAME} {BUILD_TMP}/{REQUIREMENTS_NAME}")
        if ca_bundle:
            lines.append(f"COPY {CA_BUNDLE_NAME} {BUILD_TMP}/{CA_BUNDLE_NAME}")
            # The extra bundle is added to the image's own trust store (when it has one), so
            # a bundle holding only a proxy's CA still lets pip reach public hosts.
            prepare.append(
                f"{{ cat /etc/ssl/certs/ca-certificates.crt 2>/dev/null || true; "
                f"cat {BUILD_TMP}/{CA_BUNDLE_NAME}; }} > {BUILD_TMP}/ca-all.pem"
            )
            ca_all = f"{BUILD_TMP}/ca-all.pem"
            pip_env += [
                f"PIP_CERT={ca_all}",
                f"SSL_CERT_FILE={ca_all}",
                f"REQUESTS_CA_BUNDLE={ca_all}",
            ]
        if pip_index_url:
            lines.append(f"COPY {PIP_CONFIG_NAME} {BUILD_TMP}/pip.conf")
            pip_env.append(f"PIP_CONFIG_FILE={BUILD_TMP}/pip.conf")
        pip_env += ["PIP_DISABLE_PIP_VERSION_CHECK=1", "PIP_NO_INPUT=1"]
        prepare.append(
            " ".join(pip_env)
            + f" {VENV_DIR}/bin/pip install --no-cache-dir -r {BUILD_TMP}/{REQUIREMENTS_NAME}"
        )
    elif ca_bundle and keep_ca_bundle:
        lines.append(f"COPY {CA_BUNDLE_NAME} {BUILD_TMP}/{CA_BUNDLE_NAME}")
        prepare.append(
            f"{{ cat /etc/ssl/certs/ca-certificates.crt 2>/dev/null || true; "
            f"cat {BUILD_TMP}/{CA_BUNDLE_NAME}; }} > {BUILD_TMP}/ca-all.pem"
        )
    lines.append("RUN " + "; ".join(prepare))
    lines += [
        "",
        "# Stage 2: the job image. Dependencies first, code last, so code-only edits reuse",
        "# every layer above the code.",
        f"FROM {base_image}",
        # groupadd/useradd exist on Debian-based images; adduser covers Alpine-like ones.
        f"RUN (groupadd --gid {JOB_UID} {JOB_USER} && useradd --uid {JOB_UID} --gid {JOB_UID} "
        f"--create-home --home-dir {JOB_HOME} --shell /bin/sh {JOB_USER}) "
        f"|| adduser -D -u {JOB_UID} -h {JOB_HOME} {JOB_USER}; "
        f"mkdir -p {JOB_WORKDIR} {JOB_OUTPUT_DIR} && chown -R {JOB_UID}:{JOB_UID} {JOB_HOME}",
        f"COPY --from=deps {VENV_DIR} {VENV_DIR}",
        f"ENV PATH={IMAGE_PATH} VIRTUAL_ENV={VENV_DIR} PYTHONUNBUFFERED=1 "
        "PIP_NO_CACHE_DIR=1 MPLBACKEND=Agg",
    ]
    if ca_bundle and keep_ca_bundle:
        lines += [
            f"COPY --from=deps {BUILD_TMP}/ca-all.pem {KEPT_CA_PATH}",
            f"ENV PIP_CERT={KEPT_CA_PATH} SSL_CERT_FILE={KEPT_CA_PATH} "
            f"REQUESTS_CA_BUNDLE={KEPT_CA_PATH}",
        ]
    lines += [
        f"WORKDIR {JOB_WORKDIR}",
        # Per-notebook labels only here, below the dependency layers; per-content labels
        # (the hashes, the exact notebook name) are added at build time by build.py.
        f'LABEL org.opencontainers.image.title="{slug}" '
        f'org.opencontainers.image.description="Batch job made from notebook {slug} by '
        f'jupyter-cloudpromote"',
    ]
    if content_hash_label is not None:
        lines.append(f'LABEL io.cloudpromote.content-hash="{content_hash_label}"')
    # USER and CMD sit above the code: in the classic builder every instruction after a
    # changed COPY is re-run (a container each), so the code COPY lines come last of all.
    lines += [f"USER {JOB_UID}:{JOB_UID}", f'CMD ["python", "{RUNNER_NAME}", "{SCRIPT_NAME}"]']
    chown = f"--chown={JOB_UID}:{JOB_UID}"
    for rel in code_paths:
        _check_dockerfile_path(rel)
        # No trailing slash: a folder's contents land in ./rel, a file becomes ./rel.
        lines.append(f"COPY {chown} {_json_args(rel, f'./{rel}')}")
    lines += [f"COPY {chown} {RUNNER_NAME} {SCRIPT_NAME} ./", ""]
    return "\n".join(lines)


def _check_dockerfile_path(rel: str) -> None:
    if _UNSAFE_PATH_CHARS.search(rel):
        raise CloudPromoteError(
            f"The file name {rel!r} contains characters a Dockerfile COPY would interpret "
            "($, *, ?, [, ], quotes, backslashes or control characters).",
            "Rename the file or folder, or leave it out of the job.",
        )


# --- the build context ---------------------------------------------------------------------


def _confined_source(notebook_dir: Path, rel: str, what: str) -> tuple[Path, str]:
    """Resolve a notebook-relative path, refusing anything that leaves the notebook folder."""
    fix_outside = (
        f"Only files inside the notebook's folder ({notebook_dir}) can be packed with the job: "
        "copy the file into that folder (not a symlink to it) and give its relative path."
    )
    if not rel or rel.strip() != rel:
        raise CloudPromoteError(f"Empty or blank-padded {what} path {rel!r}.", fix_outside)
    pure = PurePosixPath(rel.replace(os.sep, "/"))
    if pure.is_absolute() or Path(rel).is_absolute() or re.match(r"^[A-Za-z]:", rel):
        raise CloudPromoteError(
            f"The {what} {rel!r} is an absolute path.",
            f"Give it relative to the notebook's folder. {fix_outside}",
        )
    if ".." in pure.parts:
        raise CloudPromoteError(
            f"The {what} {rel!r} goes outside the notebook's folder.", fix_outside
        )
    normalized = "/".join(part for part in pure.parts if part not in ("", "."))
    if not normalized:
        raise CloudPromoteError(
            f"The {what} {rel!r} names the notebook's whole folder.",
            "Name the files or sub-folders the job needs instead.",
        )
    source = notebook_dir / normalized
    if not source.exists() and not source.is_symlink():
        raise CloudPromoteError(
            f"The {what} {rel!r} does not exist in {notebook_dir}.",
            "Check the spelling; paths are relative to the notebook's folder.",
        )
    real = source.resolve()
    if not real.is_relative_to(notebook_dir):
        raise CloudPromoteError(
            f"The {what} {rel!r} is a symlink to {real}, outside the notebook's folder.",
            fix_outside,
        )
    if not real.exists():
        raise CloudPromoteError(
            f"The {what} {rel!r} is a broken symlink.", "Fix or remove the link."
        )
    if normalized.split("/", 1)[0] in RESERVED_NAMES:
        raise CloudPromoteError(
            f"The {what} {rel!r} has a name the job package uses itself "
            f"({', '.join(sorted(RESERVED_NAMES))}).",
            "Rename it, or leave it out of the job.",
        )
    _check_dockerfile_path(normalized)
    return source, normalized


def _write(dest: Path, rel: str, data: bytes, executable: bool = False) -> None:
    target = dest / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    target.chmod(0o755 if executable else 0o644)


def _plan_tree(
    notebook_dir: Path, source: Path, rel: str, what: str, seen: frozenset[Path]
) -> list[tuple[str, Path | None]]:
    """List (relative path, real file) to copy for a file or folder; None marks a folder.

    Symlinks are followed only while they stay inside the notebook's folder. Everything is
    checked before anything is written, so a refused include leaves no half-made context.
    """
    real = source.resolve()
    if not real.is_relative_to(notebook_dir):
        raise CloudPromoteError(
            f"{rel!r} (inside the {what}) is a symlink to {real}, outside the notebook's folder.",
            "Replace the link with a copy of the file, or leave it out of the job.",
        )
    _check_dockerfile_path(rel)
    if real.is_file():
        return [(rel, real)]
    if not real.is_dir() or real in seen:  # fifos, sockets; or a symlink loop
        return []
    planned: list[tuple[str, Path | None]] = [(rel, None)]
    for child in sorted(source.iterdir(), key=lambda p: p.name):
        if child.name in SKIPPED_DIRS or child.name.endswith(SKIPPED_SUFFIXES):
            continue
        planned += _plan_tree(notebook_dir, child, f"{rel}/{child.name}", what, seen | {real})
    return planned


def _requirement_lines(requirements: list[str], needs_ipython: bool) -> list[str]:
    lines: list[str] = []
    names: set[str] = set()
    for raw in requirements:
        line = raw.strip()
        if not line:
            continue
        if "\n" in line or "\r" in line or line.startswith("-"):
            raise CloudPromoteError(
                f"Requirement {raw!r} is not a single requirement (pip options and line "
                "breaks are not accepted here).",
                "Give requirements as PEP 508 strings such as 'pandas==2.1.3'; configure "
                "the package index with c.CloudPromote.pip_index_url.",
            )
        try:
            names.add(canonicalize_name(Requirement(line).name))
        except InvalidRequirement:
            pass  # URLs and other pip-accepted forms are passed through unchanged
        lines.append(line)
    if needs_ipython and "ipython" not in names:
        lines.append("ipython")
    return lines


def _hash_files(dest: Path, files: list[str], base_image: str) -> str:
    digest = hashlib.sha256()
    digest.update(b"base-image\0" + base_image.encode() + b"\0")
    for rel in sorted(files):
        path = dest / rel
        data = path.read_bytes()
        executable = b"x" if path.stat().st_mode & stat.S_IXUSR else b"-"
        digest.update(rel.encode() + b"\0" + executable + str(len(data)).encode() + b"\0")
        digest.update(data)
    return digest.hexdigest()


def _hash_dependencies(
    requirements_bytes: bytes, base_image: str, ca_bytes: bytes, pip_index_url: str
) -> str:
    digest = hashlib.sha256()
    for part in (requirements_bytes, base_image.encode(), ca_bytes, pip_index_url.encode()):
        digest.update(str(len(part)).encode() + b"\0" + part)
    return digest.hexdigest()


def _read_ca_bundle(ca_bundle: str) -> bytes:
    path = Path(ca_bundle).expanduser()
    fix = (
        "Point c.CloudPromote.extra_ca_bundle (or $PIP_CERT / $SSL_CERT_FILE) at a PEM file "
        "of CA certificates, or set it to '' to use none."
    )
    if not path.is_file():
        raise ConfigError(f"The extra CA bundle {path} does not exist.", fix)
    data = path.read_bytes()
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise ConfigError(f"The extra CA bundle {path} holds no PEM certificate.", fix)
    return data


def make_build_context(
    *,
    dest: Path,
    notebook_path: Path,
    script: str,
    requirements: list[str],
    local_modules: list[str],
    include: list[str],
    base_image: str,
    python_version: str,
    ca_bundle: str | None,
    keep_ca_bundle: bool = False,
    pip_index_url: str = "",
    needs_ipython: bool = False,
) -> BuildContext:
    """Write the build context into `dest` (a fresh folder) and hash it."""
    validate_base_image(base_image)
    _validate_index_url(pip_index_url)
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise CloudPromoteError(
            f"The build context folder {dest} is not empty.",
            "Give a new folder for each build context.",
        )
    notebook_dir = Path(notebook_path).resolve().parent
    notebook_name = Path(notebook_path).name
    ca_bytes = _read_ca_bundle(ca_bundle) if ca_bundle else b""
    lines = _requirement_lines(requirements, needs_ipython)

    # Validate every path before writing anything.
    entries: dict[str, tuple[Path, str]] = {}
    for what, items in (("included path", include), ("local module", local_modules)):
        for rel in items:
            source, normalized = _confined_source(notebook_dir, rel, what)
            entries.setdefault(normalized, (source, what))
    # Drop entries inside another entry (an included folder already holds them).
    top = sorted(
        rel for rel in entries if not any(rel.startswith(other + "/") for other in entries)
    )

    # Included data first, then local modules: the order of the COPY lines, least likely to
    # change first, so an edited module does not invalidate the data layers.
    ordered = sorted(top, key=lambda rel: (entries[rel][1] != "included path", rel))
    planned: list[tuple[str, Path | None]] = []
    code_paths: list[str] = []
    for rel in ordered:
        source, what = entries[rel]
        planned += _plan_tree(notebook_dir, source, rel, what, frozenset())
        code_paths.append(rel)

    dest.mkdir(parents=True, exist_ok=True)
    files: list[str] = []
    for rel, real in planned:
        if real is None:
            (dest / rel).mkdir(parents=True, exist_ok=True)
        else:
            _write(dest, rel, real.read_bytes(), bool(real.stat().st_mode & stat.S_IXUSR))
            files.append(rel)

    runner_source = Path(__file__).with_name("runner.py").read_bytes()
    _write(dest, RUNNER_NAME, runner_source)
    _write(dest, SCRIPT_NAME, script.encode("utf-8"))
    requirements_bytes = "".join(f"{line}\n" for line in lines).encode("utf-8")
    _write(dest, REQUIREMENTS_NAME, requirements_bytes)
    files += [RUNNER_NAME, SCRIPT_NAME, REQUIREMENTS_NAME]
    if ca_bytes:
        _write(dest, CA_BUNDLE_NAME, ca_bytes)
        files.append(CA_BUNDLE_NAME)
    if pip_index_url:
        _write(dest, PIP_CONFIG_NAME, f"[global]\nindex-url = {pip_index_url}\n".encode())
        files.append(PIP_CONFIG_NAME)
    dockerfile = render_dockerfile(
        base_image=base_image,
        notebook_name=notebook_name,
        content_hash_label=None,  # the hash covers the Dockerfile itself; label set at build
        has_requirements=bool(lines),
        ca_bundle=bool(ca_bytes),
        keep_ca_bundle=keep_ca_bundle,
        pip_index_url=pip_index_url,
        code_paths=code_paths,
    )
    _write(dest, DOCKERFILE_NAME, dockerfile.encode("utf-8"))
    files.append(DOCKERFILE_NAME)
    files = sorted(set(files))
    return BuildContext(
        directory=dest,
        files=files,
        content_hash=_hash_files(dest, files, base_image),
        dependency_hash=_hash_dependencies(requirements_bytes, base_image, ca_bytes, pip_index_url),
        dockerfile=dockerfile,
        requirements=lines,
        base_image=base_image,
        python_version=python_version,
        notebook_name=notebook_name,
        needs_ipython=needs_ipython,
    )
