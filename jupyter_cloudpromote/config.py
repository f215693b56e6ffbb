"""Configuration, read through Jupyter's own config system (traitlets).

The CLI, the server extension and the magic all build a `CloudPromote` configurable from the
same files (`jupyter_cloudpromote_config.py` or `.json` on `jupyter --paths` config dirs), so
a profile defined once works everywhere, and they all share one job store.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from jupyter_core.paths import jupyter_config_path, jupyter_data_dir
from traitlets import Bool, Dict, Float, Unicode, default
from traitlets.config import Config, Configurable
from traitlets.config.loader import JSONFileConfigLoader, PyFileConfigLoader

from .errors import BackendError

CONFIG_FILE_STEM = "jupyter_cloudpromote_config"
_CA_ENV_VARS = ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")


class CloudPromote(Configurable):
    """Settings shared by the CLI, the server extension and the %cloud_submit magic."""

    default_backend = Unicode(
        "local", help="Profile name or backend kind used when none is given."
    ).tag(config=True)

    profiles = Dict(
        {},
        help=(
            "Named backend profiles: {name: {'kind': <backend kind>, <setting>: <value>}}. "
            "A backend kind can also be used directly as a profile with its defaults."
        ),
    ).tag(config=True)

    base_image = Unicode(
        "",
        help=(
            "Base image for container builds. Empty means the official python image matching "
            "the kernel's Python, python:<X.Y>-slim. Any image with python3 and venv works."
        ),
    ).tag(config=True)

    registry = Unicode(
        "", help="Registry prefix images are pushed to (e.g. 'registry.example.com/team')."
    ).tag(config=True)

    push = Bool(False, help="Push built images to `registry` even for local backends.").tag(
        config=True
    )

    extra_ca_bundle = Unicode(
        help=(
            "A PEM CA bundle trusted while installing packages (corporate TLS proxies). "
            "Defaults to $PIP_CERT, $SSL_CERT_FILE or $REQUESTS_CA_BUNDLE when one is set. "
            "Used during the build only, never left in the final image unless "
            "keep_ca_bundle is set."
        )
    ).tag(config=True)

    keep_ca_bundle = Bool(
        False, help="Also install extra_ca_bundle into the final image, for jobs that need it."
    ).tag(config=True)

    pip_index_url = Unicode("", help="Package index used for job environments.").tag(config=True)

    data_dir = Unicode(help="Where the job store, job folders and cached environments live.").tag(
        config=True
    )

    store_path = Unicode(help="SQLite job store. Default: <data_dir>/jobs.sqlite.").tag(config=True)

    watch_interval = Float(2.0, help="Seconds between status refreshes of active jobs.").tag(
        config=True
    )

    @default("extra_ca_bundle")
    def _default_ca(self) -> str:
        for var in _CA_ENV_VARS:
            value = os.environ.get(var, "")
            if value and Path(value).is_file():
                return value
        return ""

    @default("data_dir")
    def _default_data_dir(self) -> str:
        return str(Path(jupyter_data_dir()) / "cloudpromote")

    @default("store_path")
    def _default_store_path(self) -> str:
        return str(Path(self.data_dir) / "jobs.sqlite")

    @property
    def jobs_dir(self) -> Path:
        return Path(self.data_dir) / "jobs"

    @property
    def venv_cache_dir(self) -> Path:
        return Path(self.data_dir) / "venvs"

    def resolve_profile(
        self, name: str | None, overrides: dict[str, str] | None = None
    ) -> tuple[str, str, dict[str, Any]]:
        """Return (profile name, backend kind, settings) for a profile name or a bare kind."""
        from .backends.registry import known_kinds

        name = name or self.default_backend
        if name in self.profiles:
            settings = dict(self.profiles[name])
            kind = str(settings.pop("kind", name))
        elif name in known_kinds():
            kind, settings = name, {}
        else:
            choices = sorted(set(self.profiles) | set(known_kinds()))
            raise BackendError(
                f"Unknown backend {name!r}.",
                f"Use one of: {', '.join(choices)}; or define a profile named {name!r} in "
                f"c.CloudPromote.profiles in {CONFIG_FILE_STEM}.py.",
            )
        settings.update(overrides or {})
        return name, kind, settings


def load_config(extra: Config | None = None) -> Config:
    """Read jupyter_cloudpromote_config.{json,py} from every Jupyter config dir, lowest first."""
    config = Config()
    for directory in reversed(jupyter_config_path()):
        for loader_cls, suffix in ((JSONFileConfigLoader, ".json"), (PyFileConfigLoader, ".py")):
            path = Path(directory) / f"{CONFIG_FILE_STEM}{suffix}"
            if path.is_file():
                loader = loader_cls(path.name, path=str(directory))
                config.merge(loader.load_config())
    if extra is not None:
        config.merge(extra)
    return config


def load_settings(extra: Config | None = None) -> CloudPromote:
    return CloudPromote(config=load_config(extra))
