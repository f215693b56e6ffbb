"""Reading notebooks, read-only: nothing in this package ever writes to the user's notebook."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat

from .errors import NotebookError


def read_notebook(path: str | Path) -> nbformat.NotebookNode:
    """Load and validate an .ipynb file, raising NotebookError with the fix on bad input."""
    path = Path(path)
    if not path.exists():
        raise NotebookError(
            f"No notebook at {path}.", "Check the path; it is relative to the current folder."
        )
    if path.is_dir():
        raise NotebookError(
            f"{path} is a folder, not a notebook.", "Give the path of an .ipynb file."
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise NotebookError(
            f"{path.name} is not UTF-8 text ({exc.reason}).", "Save it again from Jupyter."
        ) from exc
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NotebookError(
            f"{path.name} is not a valid notebook: JSON error at line {exc.lineno}, "
            f"column {exc.colno}: {exc.msg}.",
            "Open it in Jupyter to repair it, or restore it from a checkpoint or version control.",
        ) from exc
    if not isinstance(raw, dict) or ("cells" not in raw and "worksheets" not in raw):
        raise NotebookError(
            f"{path.name} is JSON but not a Jupyter notebook (no 'cells').",
            "Give the path of an .ipynb file saved by Jupyter.",
        )
    try:
        nb = nbformat.reads(text, as_version=4)
        nbformat.validate(nb)
    except Exception as exc:  # nbformat's converters raise anything on odd input (fuzzed)
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise NotebookError(
            f"{path.name} is not a valid nbformat 4 notebook: {detail}",
            "Open and save it in JupyterLab, which repairs most structural problems.",
        ) from exc
    return nb
