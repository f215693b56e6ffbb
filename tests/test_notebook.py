"""Reading notebooks: every kind of bad file gives a NotebookError that says what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from jupyter_cloudpromote.errors import NotebookError
from jupyter_cloudpromote.notebook import read_notebook

from .conftest import make_notebook


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ('{"cells": [ {"cell_type": "code", ', "JSON error at line 1"),
        ("[1, 2]", "not a Jupyter notebook"),
        ('{"metadata": {}}', "not a Jupyter notebook"),
        # Found by hypothesis: nbformat's upgrade code raised UnboundLocalError on this.
        ('{"cells":[{"cell_type":""}]}', "not a valid nbformat 4 notebook"),
        ('{"cells": [], "nbformat": 4, "nbformat_minor": 5}', "not a valid nbformat 4"),
    ],
)
def test_bad_files_give_a_notebook_error_with_a_fix(
    tmp_path: Path, content: str, words: str
) -> None:
    path = tmp_path / "bad.ipynb"
    path.write_text(content)
    with pytest.raises(NotebookError) as info:
        read_notebook(path)
    assert words in str(info.value)
    assert info.value.fix
    assert path.read_text() == content


def test_missing_path_folder_and_binary_file(tmp_path: Path) -> None:
    with pytest.raises(NotebookError, match="No notebook at"):
        read_notebook(tmp_path / "nope.ipynb")
    with pytest.raises(NotebookError, match="is a folder"):
        read_notebook(tmp_path)
    binary = tmp_path / "b.ipynb"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(NotebookError, match="not UTF-8"):
        read_notebook(binary)


def test_a_good_notebook_is_read_and_not_written(tmp_path: Path) -> None:
    path = make_notebook(tmp_path / "ok.ipynb", ["print(1)"])
    before = path.read_bytes()
    nb = read_notebook(path)
    assert nb.cells[0].source == "print(1)"
    assert path.read_bytes() == before
