"""Errors that carry the fix: every one says what went wrong and what to do about it."""

from __future__ import annotations


class CloudPromoteError(Exception):
    """Base class. `str(err)` is a complete, user-facing sentence including the remedy."""

    def __init__(self, message: str, fix: str = "") -> None:
        self.message = message
        self.fix = fix
        super().__init__(f"{message} {fix}".strip() if fix else message)


class NotebookError(CloudPromoteError):
    """The notebook cannot be read (missing, not JSON, not a valid nbformat document)."""


class KernelNotFoundError(CloudPromoteError):
    """The notebook's kernel is not installed, or its interpreter cannot be run."""


class ParameterError(CloudPromoteError):
    """A --param names no variable of the parameters cell, or its value has the wrong type."""


class BackendError(CloudPromoteError):
    """Unknown backend, unavailable backend (SDK missing), or a backend call failed."""


class BuildError(CloudPromoteError):
    """The image or environment could not be built; message holds the failing step."""


class FindingsError(CloudPromoteError):
    """Submission refused because readiness check found errors (override with force)."""


class JobNotFoundError(CloudPromoteError):
    """No job with that id in the store."""


class ConfigError(CloudPromoteError):
    """A configuration value is missing or invalid."""
