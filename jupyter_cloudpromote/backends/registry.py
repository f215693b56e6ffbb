"""Backends registered by name through the `jupyter_cloudpromote.backends` entry-point group.

Third parties add a backend by declaring an entry point in that group. A backend whose module
fails to import (its SDK is missing) is listed as unavailable with an install hint instead of
breaking the others.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any

from ..errors import BackendError
from .base import Backend

ENTRY_POINT_GROUP = "jupyter_cloudpromote.backends"

# Kinds this project plans or documents but that live in optional extras or other packages:
# shown by `backends` with what to install, even when no entry point is present.
INSTALL_HINTS: dict[str, str] = {
    "aws-batch": "pip install 'jupyter-cloudpromote[aws]'",
    "sagemaker": "pip install 'jupyter-cloudpromote[aws]'",
}


@dataclass(frozen=True)
class BackendInfo:
    kind: str
    available: bool
    message: str
    description: str = ""
    features: tuple[str, ...] = ()
    install_hint: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "available": self.available,
            "message": self.message,
            "description": self.description,
            "features": list(self.features),
            "install_hint": self.install_hint,
        }


@lru_cache(maxsize=1)
def _entry_points() -> dict[str, Any]:
    found: dict[str, Any] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep)
    return found


def known_kinds() -> list[str]:
    return sorted(_entry_points())


def load_backend_class(kind: str) -> type[Backend]:
    eps = _entry_points()
    if kind not in eps:
        hint = INSTALL_HINTS.get(kind)
        if hint:
            raise BackendError(f"The {kind!r} backend is not installed.", f"Install it: {hint}")
        raise BackendError(
            f"Unknown backend kind {kind!r}.", f"Known kinds: {', '.join(known_kinds())}."
        )
    try:
        cls = eps[kind].load()
    except ImportError as exc:
        hint = INSTALL_HINTS.get(kind, f"install the package providing {eps[kind].value}")
        raise BackendError(
            f"The {kind!r} backend cannot be loaded ({exc}).", f"Install it: {hint}"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise BackendError(f"Entry point {kind!r} is not a Backend subclass.", "")
    return cls


def backend_info(kind: str) -> BackendInfo:
    try:
        cls = load_backend_class(kind)
    except BackendError as exc:
        return BackendInfo(kind, False, str(exc), install_hint=INSTALL_HINTS.get(kind, ""))
    available, message = cls.availability()
    return BackendInfo(
        kind,
        available,
        message,
        cls.description,
        tuple(sorted(cls.features)),
        cls.install_hint,
    )


def create_backend(kind: str, profile: str, options: dict[str, Any]) -> Backend:
    cls = load_backend_class(kind)
    backend = cls(profile, options)
    backend.validate_options()
    return backend


_SECRET_SETTING = re.compile(r"token|secret|password|passwd|credential|key", re.IGNORECASE)


def backends_report(
    default: str, profiles: dict[str, dict[str, Any]], *, redact: bool = False
) -> dict[str, Any]:
    """Every backend kind with its availability, and the configured profiles (what the CLI's
    `backends` and the server's GET backends show). `redact` hides secret-looking settings."""

    def shown(settings: dict[str, Any]) -> dict[str, Any]:
        plain = {k: v for k, v in settings.items() if k != "kind"}
        if redact:
            return {k: ("***" if _SECRET_SETTING.search(k) else v) for k, v in plain.items()}
        return plain

    kinds = sorted(set(known_kinds()) | {p.get("kind", n) for n, p in profiles.items()})
    return {
        "default": default,
        "profiles": [
            {"name": kind, "kind": kind, "configured": False, "settings": {}}
            for kind in known_kinds()
        ]
        + [
            {
                "name": name,
                "kind": profile.get("kind", name),
                "configured": True,
                "settings": shown(profile),
            }
            for name, profile in sorted(profiles.items())
        ],
        "backends": [backend_info(kind).to_dict() for kind in kinds],
    }
