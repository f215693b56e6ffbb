"""jupyter-cloudpromote: promote a notebook into a batch job, from JupyterLab, a cell or a shell."""

from ._version import __version__

__all__ = ["__version__"]
