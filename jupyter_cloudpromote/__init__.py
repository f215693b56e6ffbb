"""jupyter-cloudpromote: promote a notebook into a batch job, from JupyterLab, a cell or a shell."""

from typing import Any

from ._version import __version__

__all__ = ["__version__", "load_ipython_extension", "unload_ipython_extension"]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    """The Jupyter server extension (REST API, job watcher), enabled on install."""
    from .server.app import CloudPromoteExtension

    return [{"module": "jupyter_cloudpromote.server.app", "app": CloudPromoteExtension}]


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext jupyter_cloudpromote`: register %cloud_submit, %cloud_jobs, %cloud_status,
    %cloud_logs and %cloud_cancel. Imported lazily so `import jupyter_cloudpromote` stays light.
    Opt in for every session with `c.InteractiveShellApp.extensions = ["jupyter_cloudpromote"]`
    in ipython_config.py."""
    from .magics import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from .magics import unload_ipython_extension as unload

    unload(ipython)
