"""Build stage: a build context -> a container image, through the Docker engine's classic builder.

The image tag is derived from the context's content hash, so an unchanged promotion finds
its image already built and builds nothing. The context is sent as an in-memory tar with
fixed file metadata, so the builder's cache keys depend only on file contents.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors

from .errors import BuildError, ConfigError
from .models import BuildContext
from .package import _HOST_COMPONENT

# A fixed timestamp for every tar entry (1980-01-01): the builder's cache then only sees content.
_TAR_MTIME = 315532800
_TAIL_LINES = 15
_STEP_RE = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
_PIP_MISSING_RES = (
    re.compile(r"No matching distribution found for (\S+)"),
    re.compile(r"Could not find a version that satisfies the requirement (\S+)"),
    re.compile(r"ERROR: Invalid requirement: '?([^'\s]+)"),
    re.compile(r"Failed to build (\S+)"),
    re.compile(r"Failed building wheel for (\S+)"),
)
_CERT_MARKERS = ("CERTIFICATE_VERIFY_FAILED", "SSLError", "certificate verify failed")
_REGISTRY_RE = re.compile(
    rf"^{_HOST_COMPONENT}(?:\.{_HOST_COMPONENT})*(?::[0-9]{{1,5}})?"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"
)


@dataclass
class BuildResult:
    image: str  # the tag to run: the local tag, or the pushed reference when pushed
    built: bool  # False: an image with this content hash existed, nothing was built
    log: list[str] = field(default_factory=list)


def _engine(client: docker.DockerClient | None) -> docker.DockerClient:
    if client is not None:
        return client
    try:
        return docker.from_env()
    except docker.errors.DockerException as exc:
        raise BuildError(
            f"Cannot reach the Docker engine to build the job image ({exc}).",
            "Start Docker (e.g. `sudo systemctl start docker`, or `dockerd &`) and make sure "
            "your user may use /var/run/docker.sock, or choose a backend without images.",
        ) from exc


def context_tar(context: BuildContext) -> bytes:
    """The build context as a tar with fixed metadata (mtime, owner, sorted order)."""
    root = Path(context.directory)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in _walk(root):
            rel = path.relative_to(root).as_posix()
            info = tarfile.TarInfo(rel)
            info.mtime = _TAR_MTIME
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if path.is_dir():
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                data = path.read_bytes()
                info.size = len(data)
                info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _walk(root: Path) -> Iterator[Path]:
    for child in sorted(root.iterdir(), key=lambda p: p.name):
        if child.is_symlink():
            continue  # package.py writes real files only; never follow a stray link
        yield child
        if child.is_dir():
            yield from _walk(child)


def _image_exists(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    except docker.errors.APIError as exc:
        raise BuildError(f"The Docker engine could not look up image {tag}: {exc}.", "") from exc
    return True


_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _lines(text: str) -> Iterable[str]:
    for line in _ANSI_RE.sub("", text).splitlines():
        line = line.rstrip()
        if line:
            yield line


def _shorten(line: str, limit: int = 200) -> str:
    return line if len(line) <= limit else line[: limit - 3] + "..."


def explain_build_failure(error: str, log: list[str], context: BuildContext) -> BuildError:
    """Turn the builder's error and log into a message naming the failing step and the fix."""
    step = ""
    instruction = ""
    for line in reversed(log):
        match = _STEP_RE.match(line)
        if match:
            instruction = match.group(3)
            # The dependency RUN line is long and mostly CA plumbing: name it by what it does.
            shown = (
                "the dependency install: pip install -r requirements.txt"
                if "pip install" in instruction
                else _shorten(instruction, 120)
            )
            step = f"step {match.group(1)}/{match.group(2)} ({shown})"
            break
    step_text = step or "an early step"
    tail = "\n".join(_shorten(line) for line in log[-_TAIL_LINES:])
    full = "\n".join(log)
    tail_text = f"\nLast lines of the build output:\n{tail}" if tail else ""
    if "pip install" in instruction:
        packages: list[str] = []
        for pattern in _PIP_MISSING_RES:
            for match in pattern.finditer(full):
                name = match.group(1).rstrip(".'\"")
                if name not in packages:
                    packages.append(name)
        what = f"pip could not install {', '.join(packages)}" if packages else "pip failed"
        fix = (
            "Check the requirement: the name and version must exist on the package index for "
            f"Python {context.python_version} (pin a version that exists, or drop the import "
            "if it is not needed)."
        )
        if any(marker in full for marker in _CERT_MARKERS):
            what = "pip could not verify the package index's TLS certificate"
            fix = (
                "Set c.CloudPromote.extra_ca_bundle to the CA bundle of your TLS proxy "
                "(e.g. /etc/ssl/certs/ca-certificates.crt); it is used during the build only."
            )
        else:
            fix += (
                " If the log shows network or certificate errors, set the extra CA bundle "
                "(c.CloudPromote.extra_ca_bundle) or the package index "
                "(c.CloudPromote.pip_index_url)."
            )
        return BuildError(f"Image build failed at {step_text}: {what}.{tail_text}", fix)
    if instruction.startswith("FROM"):
        return BuildError(
            f"Image build failed at {step_text}: the base image {context.base_image} is not "
            f"on this Docker engine and could not be pulled ({error.strip()}).",
            "Pull or load the base image on this engine first (docker pull / docker load), "
            "or set c.CloudPromote.base_image to an image that is present.",
        )
    if "venv" in instruction and ("No module named venv" in full or "ensurepip" in full):
        return BuildError(
            f"Image build failed at {step_text}: the base image has no working venv module "
            f"({error.strip()}).{tail_text}",
            "Use a base image with python3-venv installed (the official python images have it).",
        )
    return BuildError(
        f"Image build failed at {step_text}: {_shorten(error.strip())}{tail_text}", ""
    )


def build_image(
    context: BuildContext,
    *,
    client: docker.DockerClient | None = None,
    progress: Callable[[str], None] | None = None,
    push_to: str | None = None,
) -> BuildResult:
    """Build (or reuse) the image for a context, optionally pushing it to `push_to`."""
    engine = _engine(client)
    tag = context.image_tag
    log: list[str] = []

    def emit(line: str) -> None:
        log.append(line)
        if progress is not None:
            progress(line)

    if push_to:
        _validate_registry(push_to)
    built = False
    if _image_exists(engine, tag):
        emit(f"Image {tag} already built for this content; nothing to build.")
    else:
        _run_build(engine, context, tag, emit, log)
        built = True
    image = tag
    if push_to:
        image = _push(engine, tag, push_to, emit)
    return BuildResult(image=image, built=built, log=log)


def _run_build(
    engine: docker.DockerClient,
    context: BuildContext,
    tag: str,
    emit: Callable[[str], None],
    log: list[str],
) -> None:
    # Build-time labels are appended after the last Dockerfile line (one builder step each,
    # unexpanded), so they never invalidate the cached layers above. Kept to the two that
    # vary: each costs a step on every code-only rebuild.
    labels = {
        "io.cloudpromote.notebook": context.notebook_name,
        "io.cloudpromote.content-hash": context.content_hash,
    }
    emit(f"Building image {tag} from {context.base_image} ...")
    try:
        stream: Iterator[dict[str, Any]] = engine.api.build(
            fileobj=io.BytesIO(context_tar(context)),
            custom_context=True,
            tag=tag,
            decode=True,
            rm=True,
            forcerm=True,
            labels=labels,
            pull=False,
        )
        for chunk in stream:
            if "stream" in chunk:
                for line in _lines(str(chunk["stream"])):
                    emit(line)
            elif "error" in chunk:
                error = str(chunk.get("error") or chunk.get("errorDetail", {}).get("message", ""))
                for line in _lines(error):
                    emit(line)
                raise explain_build_failure(error, log, context)
            elif "status" in chunk:  # pull progress for FROM when the image is missing
                emit(str(chunk["status"]))
    except docker.errors.APIError as exc:
        raise explain_build_failure(str(exc.explanation or exc), log, context) from exc
    except docker.errors.DockerException as exc:
        raise BuildError(
            f"The Docker engine stopped answering during the build ({exc}).",
            "Check that dockerd is running, then promote again.",
        ) from exc
    if not _image_exists(engine, tag):
        raise explain_build_failure(
            "the builder finished without producing the image", log, context
        )


def _validate_registry(push_to: str) -> None:
    if not _REGISTRY_RE.match(push_to.rstrip("/")):
        raise ConfigError(
            f"{push_to!r} is not a valid registry prefix.",
            "Use a form like 'registry.example.com/team' or 'localhost:5000'.",
        )


def _push(engine: docker.DockerClient, tag: str, push_to: str, emit: Callable[[str], None]) -> str:
    repository, version = tag.rsplit(":", 1)
    remote = f"{push_to.rstrip('/')}/{repository}"
    emit(f"Pushing {remote}:{version} ...")
    try:
        engine.images.get(tag).tag(remote, tag=version)
        last_status = ""
        for chunk in engine.api.push(remote, tag=version, stream=True, decode=True):
            if "error" in chunk:
                error = str(chunk["error"])
                emit(error)
                raise BuildError(
                    f"Pushing {remote}:{version} failed: {error}",
                    "Check that the registry is reachable and that you are logged in "
                    "(`docker login`).",
                )
            status = str(chunk.get("status", ""))
            line = f"{chunk['id']}: {status}" if "id" in chunk else status
            # Progress-bar chunks (non-empty progressDetail) repeat; report each change once.
            if line and line != last_status and not chunk.get("progressDetail"):
                emit(line)
                last_status = line
    except docker.errors.APIError as exc:
        raise BuildError(
            f"Pushing {remote}:{version} failed: {exc.explanation or exc}",
            "Check that the registry is reachable and that you are logged in (`docker login`).",
        ) from exc
    return f"{remote}:{version}"
