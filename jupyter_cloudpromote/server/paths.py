"""Confining request paths: notebooks to the server root, downloads to a job's folder.

Every path that arrives in a request is an API path: '/'-separated and relative to the
Jupyter server's root. Anything that could leave that root (`..`, an absolute path, a drive,
a NUL byte, a symlink whose real path is elsewhere) is refused with a `PathRefused` carrying
the HTTP status and a sentence saying what is wrong, never a 500.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from jupyter_core.utils import ensure_async

_DRIVE = re.compile(r"^[A-Za-z]:")
MAX_PATH_LENGTH = 4096


@dataclass
class PathRefused(Exception):
    """A path from a request that cannot be used; `status` is the HTTP status to answer."""

    status: int
    message: str
    field: str = "path"

    def __str__(self) -> str:
        return self.message


def split_api_path(api_path: str, field: str = "path") -> list[str]:
    """Check an API path's shape and return its parts; raise PathRefused (400/403)."""
    if not isinstance(api_path, str) or not api_path.strip():
        raise PathRefused(
            400, f"'{field}' must be a non-empty path relative to the server root.", field
        )
    if len(api_path) > MAX_PATH_LENGTH:
        raise PathRefused(400, f"'{field}' is longer than {MAX_PATH_LENGTH} characters.", field)
    if "\x00" in api_path:
        raise PathRefused(400, f"'{field}' contains a NUL character.", field)
    if api_path.startswith(("/", "\\")) or _DRIVE.match(api_path):
        raise PathRefused(
            400,
            f"'{field}' {api_path!r} is absolute; give a path relative to the server root, "
            "as the file browser shows it.",
            field,
        )
    parts = [part for part in re.split(r"[/\\]", api_path) if part not in ("", ".")]
    if any(part == ".." for part in parts):
        raise PathRefused(
            403, f"'{field}' {api_path!r} uses '..' to leave its folder: refused.", field
        )
    if not parts:
        raise PathRefused(400, f"'{field}' {api_path!r} names no file.", field)
    return parts


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def confine(root: str | Path, api_path: str, field: str = "path") -> Path:
    """The real path of `api_path` under `root`, which must stay under root (symlinks too).

    The file need not exist; its real path is what it would be (symlinks in the existing
    part resolved). Raises PathRefused.
    """
    parts = split_api_path(api_path, field)
    real_root = Path(os.path.realpath(root))
    candidate = Path(os.path.realpath(real_root.joinpath(*parts)))
    if not _inside(candidate, real_root):
        raise PathRefused(
            403,
            f"'{field}' {api_path!r} leads outside the server root (through a symbolic link): "
            "refused.",
            field,
        )
    return candidate


def to_api_path(root: str | Path, path: str | Path) -> str | None:
    """The API path of a real path under root, or None when it is elsewhere."""
    real_root = Path(os.path.realpath(root))
    try:
        return PurePosixPath(*Path(path).relative_to(real_root).parts).as_posix()
    except ValueError:
        return None


def contents_root(contents_manager: Any, fallback: str) -> str:
    """The folder API paths are relative to: the file-based contents manager's root_dir."""
    root = getattr(contents_manager, "root_dir", None)
    return str(root) if isinstance(root, str) and root else fallback


async def resolve_notebook(contents_manager: Any, root: str, api_path: str) -> Path:
    """Resolve a notebook API path through the contents manager; confined to the root.

    400: malformed, not .ipynb; 403: leaves the root or hidden; 404: no such file.
    """
    real = confine(root, api_path)
    if not api_path.lower().endswith(".ipynb"):
        raise PathRefused(400, f"'path' {api_path!r} is not a notebook (.ipynb).")
    clean = "/".join(split_api_path(api_path))
    try:
        exists = await ensure_async(contents_manager.file_exists(clean))
    except Exception:  # the contents manager's own refusal (e.g. outside root): not found
        exists = False
    if not exists or not real.is_file():
        raise PathRefused(404, f"No notebook at {api_path!r} under the server root.")
    allow_hidden = getattr(contents_manager, "allow_hidden", True)
    if not allow_hidden:
        try:
            hidden = await ensure_async(contents_manager.is_hidden(clean))
        except Exception:
            hidden = True
        if hidden:
            raise PathRefused(
                403,
                f"{api_path!r} is hidden, and this server does not serve hidden files "
                "(ContentsManager.allow_hidden).",
            )
    return real


def check_includes(root: str, notebook: Path, includes: list[str]) -> None:
    """Files packed with a job are notebook-relative and must stay under the server root."""
    real_root = Path(os.path.realpath(root))
    for index, item in enumerate(includes):
        field = f"include[{index}]"
        parts = split_api_path(item, field)
        target = Path(os.path.realpath(notebook.parent.joinpath(*parts)))
        if not _inside(target, real_root):
            raise PathRefused(
                403, f"'{field}' {item!r} leads outside the server root: refused.", field
            )


def confine_file(folder: str | Path, relative: str, field: str = "path") -> Path:
    """A regular file under `folder` (a job's outputs or context); PathRefused otherwise."""
    real = confine(folder, relative, field)
    if not real.is_file():
        raise PathRefused(404, f"No file {relative!r} here.", field)
    return real
