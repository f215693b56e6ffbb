"""Cloud-neutral data staging through fsspec: job inputs up to object storage, outputs back.

A job's input is either a local file or folder, uploaded under the job's own prefix, or a URI
already in object storage (s3://, gs://, az://, ...), passed through untouched. Outputs the
job wrote to object storage are downloaded into the job's outputs folder, so the CLI, the API
and the panel list and serve them like any other backend's. Which protocol a URI uses decides
the fsspec filesystem (s3fs for s3://); `storage_options` carry region, endpoint and profile.

Inside the job, the input sits at a documented folder, named by CLOUDPROMOTE_INPUT_DIR.
"""

from __future__ import annotations

import os
import posixpath
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import BackendError, ConfigError

INPUT_DIR_ENV = "CLOUDPROMOTE_INPUT_DIR"
_MAX_OBJECTS = 100_000  # a safety stop for runaway prefixes


@dataclass(frozen=True)
class StagedInput:
    uri: str  # the folder-like URI the job reads, ending in "/" unless a single object
    uploaded: int  # files uploaded from this machine (0 for a passed-through URI)
    source: str  # what the user gave


def is_remote(location: str) -> bool:
    """True for URIs with a protocol other than file:// (s3://bucket/x, gs://...)."""
    if "://" not in location:
        return False
    return location.split("://", 1)[0].lower() not in ("file", "local")


def protocol_of(uri: str) -> str:
    return uri.split("://", 1)[0].lower() if "://" in uri else "file"


def filesystem(uri: str, storage_options: dict[str, Any] | None = None) -> Any:
    """The fsspec filesystem for a URI, with a clear install hint when its driver is missing."""
    import fsspec

    protocol = protocol_of(uri)
    try:
        return fsspec.filesystem(protocol, **(storage_options or {}))
    except ImportError as exc:
        package = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}
        raise ConfigError(
            f"Reading {protocol}:// needs a storage driver that is not installed ({exc}).",
            f"pip install {package.get(protocol, 'the fsspec driver for ' + protocol)}",
        ) from exc


def _strip_protocol(fs: Any, uri: str) -> str:
    return str(fs._strip_protocol(uri))


def stage_input(
    source: str,
    dest_uri: str,
    storage_options: dict[str, Any] | None = None,
) -> StagedInput:
    """Make `source` available as a URI the job can read.

    A remote URI is checked to exist and passed through. A local file or folder is uploaded
    to `dest_uri` (a folder-like URI, e.g. s3://bucket/prefix/job/inputs/): a folder's
    contents keep their relative paths, a single file keeps its name.
    """
    if is_remote(source):
        fs = filesystem(source, storage_options)
        remote_path = _strip_protocol(fs, source)
        try:
            exists = fs.exists(remote_path)
        except Exception as exc:  # any driver error: say where and why
            raise BackendError(f"Cannot check the input {source}: {exc}", "") from exc
        if not exists:
            raise ConfigError(
                f"The input {source} does not exist.",
                "Check the URI (bucket and prefix), and that your credentials may read it.",
            )
        if fs.isdir(remote_path) and not source.endswith("/"):
            source += "/"
        return StagedInput(uri=source, uploaded=0, source=source)
    local = Path(source.split("://", 1)[1] if "://" in source else source).expanduser()
    if not local.exists():
        raise ConfigError(
            f"The input {source} does not exist on this machine.",
            "Give an existing file or folder (absolute, or relative to where you run), or "
            "an s3:// URI already holding the data.",
        )
    if not dest_uri.endswith("/"):
        dest_uri += "/"
    fs = filesystem(dest_uri, storage_options)
    root = _strip_protocol(fs, dest_uri).rstrip("/")
    files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
    if len(files) > _MAX_OBJECTS:
        raise ConfigError(
            f"The input {source} holds {len(files)} files.",
            "Pack them into a few archives first, or upload them yourself and pass the URI.",
        )
    count = 0
    for path in files:
        if path.is_symlink():
            continue  # never follow links out of the folder the user named
        relative = path.name if local.is_file() else path.relative_to(local).as_posix()
        try:
            fs.put_file(str(path), f"{root}/{relative}")
        except Exception as exc:
            raise BackendError(
                f"Uploading the input {path} to {dest_uri} failed: {exc}",
                "Check that the bucket exists and that your credentials may write to it.",
            ) from exc
        count += 1
    return StagedInput(uri=dest_uri, uploaded=count, source=source)


def _safe_relative(relative: str) -> str | None:
    """A relative POSIX path that stays inside its folder, or None."""
    relative = relative.lstrip("/")
    if not relative:
        return None
    normal = posixpath.normpath(relative)
    if normal.startswith("../") or normal == ".." or normal.startswith("/") or normal == ".":
        return None
    if any(part in ("", "..") for part in PurePosixPath(normal).parts):
        return None
    return normal


def collect_outputs(
    source_uri: str,
    outputs_dir: Path,
    storage_options: dict[str, Any] | None = None,
) -> list[Path]:
    """Download every object under `source_uri` into `outputs_dir`, keeping relative paths.

    Object names that would land outside outputs_dir (`../x`, absolute) are skipped.
    Returns the local files written.
    """
    fs = filesystem(source_uri, storage_options)
    root = _strip_protocol(fs, source_uri).rstrip("/")
    try:
        found = fs.find(root, detail=False) if fs.exists(root) else []
    except FileNotFoundError:
        found = []
    except Exception as exc:
        raise BackendError(f"Cannot list the job's outputs at {source_uri}: {exc}", "") from exc
    outputs_dir.mkdir(parents=True, exist_ok=True)
    base = outputs_dir.resolve()
    written: list[Path] = []
    for name in sorted(found)[:_MAX_OBJECTS]:
        relative = _safe_relative(str(name)[len(root) :])
        if relative is None:
            continue
        target = (base / relative).resolve()
        if base not in target.parents:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            fs.get_file(name, str(target))
        except Exception as exc:
            raise BackendError(
                f"Downloading the output {name} from {source_uri} failed: {exc}", ""
            ) from exc
        written.append(target)
    return written


def extract_archive(archive: Path, dest: Path) -> list[Path]:
    """Unpack a .tar.gz (e.g. SageMaker's model.tar.gz) into dest, refusing links and escapes."""
    dest.mkdir(parents=True, exist_ok=True)
    base = dest.resolve()
    written: list[Path] = []
    with tarfile.open(archive, "r:*") as tar:
        for member in tar.getmembers():
            relative = _safe_relative(member.name)
            if relative is None or not (member.isfile() or member.isdir()):
                continue  # links, devices and escaping names are never unpacked
            target = (base / relative).resolve()
            if base not in target.parents:
                continue
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            handle = tar.extractfile(member)
            if handle is None:
                continue
            with handle, open(target, "wb") as out:
                while chunk := handle.read(1 << 20):
                    out.write(chunk)
            os.chmod(target, 0o644)
            written.append(target)
    return written


def list_objects(uri: str, storage_options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """[{path, size}] for the objects under a folder-like URI, paths relative to it."""
    fs = filesystem(uri, storage_options)
    root = _strip_protocol(fs, uri).rstrip("/")
    if not fs.exists(root):
        return []
    entries = fs.find(root, detail=True)
    result = []
    for name, info in sorted(entries.items()):
        relative = _safe_relative(str(name)[len(root) :])
        if relative is not None:
            result.append({"path": relative, "size": int(info.get("size") or 0)})
    return result
