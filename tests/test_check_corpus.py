"""The readiness check over the real-notebook corpus, compared with its hand-checked labels.

Measured on the 44-notebook corpus (see the figures printed with `pytest -s`):
- input-call: 0 findings, labels say 0 notebooks use input()/getpass();
- secret: 0 findings (the corpus has no hard-coded credentials);
- shell escapes: the count of `!` lines found equals the label in 44/44 notebooks;
- local-file paths vs `reads_local_files` minus `writes_local_files`: precision 7/7,
  raw recall 7/17. All 10 misses are files the notebook creates itself by means the
  labels' `writes_local_files` do not list (a shell download, an unzip, a compiler's
  package_path=, cv2.imwrite, a joblib.dump inside a function, a path built from
  os.getcwd()); NOT flagging those is the intended behaviour, so they are listed below
  with the reason, and recall over the rest is 7/7.
"""

from __future__ import annotations

import json
import posixpath
from pathlib import Path

import nbformat
import pytest

from jupyter_cloudpromote.check import check_notebook
from jupyter_cloudpromote.models import Finding

pytestmark = pytest.mark.corpus

# Labelled reads of files the notebook itself produces before reading them (checked by hand
# against each notebook), beyond what `writes_local_files` records.
PRODUCED_BY_NOTEBOOK = {
    "intro_pipeline.json": "written by compiler.Compiler().compile(package_path=...)",
    "glove-100-angular.hdf5": "downloaded by `! gcloud storage cp gs://... .`",
    "sdk_autologging_tutorial/data/car_evaluation_data.csv": "urlretrieve to an os.getcwd() path",
    "sdk_autologging_tutorial/data/car_evaluation_preprocessed.csv": "to_csv to a getcwd() path",
    "tmp.jpg": "written by cv2.imwrite just before",
    "LaMa_test_images/bench2.png": "extracted by `!unzip LaMa_test_images.zip`",
    "LaMa_test_images/bench2_mask.png": "extracted by `!unzip LaMa_test_images.zip`",
    "CANADIAN WHISKIES.sav": "joblib.dump('{}.sav'.format(category)) inside train()",
    "CANADIAN WHISKIES_weather.sav": "joblib.dump inside train_w_regressor()",
    "setup.md": "downloaded by `! wget ... -O setup.md`",
}


def _check_all(corpus_dir: Path) -> dict[str, tuple[dict, nbformat.NotebookNode, list[Finding]]]:
    labels = json.loads((corpus_dir / "labels.json").read_text())
    results = {}
    for name, label in labels.items():
        nb = nbformat.read(str(corpus_dir / "notebooks" / name), as_version=4)
        before = nbformat.writes(nb)
        findings = check_notebook(nb, corpus_dir / "notebooks")
        assert nbformat.writes(nb) == before, f"{name}: the check changed the notebook"
        results[name] = (label, nb, findings)
    return results


@pytest.fixture(scope="module")
def corpus_results(
    corpus_dir: Path,
) -> dict[str, tuple[dict, nbformat.NotebookNode, list[Finding]]]:
    return _check_all(corpus_dir)


def test_corpus_has_no_input_calls(corpus_results: dict) -> None:
    for name, (label, _, findings) in corpus_results.items():
        expected = bool(label["uses_input"] or label["uses_getpass"])
        found = any(f.code == "input-call" for f in findings)
        assert found == expected, name
    assert sum(f.code == "input-call" for _, _, fs in corpus_results.values() for f in fs) == 0


def test_corpus_has_no_secret_findings(corpus_results: dict) -> None:
    false_positives = [
        (name, f.cell, f.line)
        for name, (_, _, findings) in corpus_results.items()
        for f in findings
        if f.code == "secret"
    ]
    assert false_positives == []


def test_corpus_shell_escape_counts_agree(corpus_results: dict) -> None:
    agree = 0
    disagreements = []
    for name, (label, nb, findings) in corpus_results.items():
        # the label counts `!` lines only (not `x = !cmd`, not %%bash cells)
        bang_lines = sum(
            1
            for f in findings
            if f.code == "shell-escape"
            and nb.cells[f.cell].source.splitlines()[f.line - 1].lstrip().startswith("!")
        )
        if bang_lines == label["shell_escapes"]:
            agree += 1
        else:
            disagreements.append((name, bang_lines, label["shell_escapes"]))
    print(f"shell escapes: {agree}/{len(corpus_results)} notebooks agree; {disagreements}")
    assert agree / len(corpus_results) >= 0.95, disagreements


def test_corpus_local_file_precision_and_recall(corpus_results: dict) -> None:
    true_positive = false_positive = missed = excused = 0
    wrong: list[tuple[str, str]] = []
    unexplained_misses: list[tuple[str, str]] = []
    for name, (label, _, findings) in corpus_results.items():
        expected = {posixpath.normpath(p) for p in label["reads_local_files"]} - {
            posixpath.normpath(p) for p in label["writes_local_files"]
        }
        found = {f.path for f in findings if f.code in ("local-file", "absolute-path") and f.path}
        matched: set[str] = set()
        for path in found:
            # findings are notebook-relative (after %cd); labels are as written in the code
            hits = {e for e in expected if path == e or path.endswith("/" + e)}
            if hits:
                true_positive += 1
                matched |= hits
            else:
                false_positive += 1
                wrong.append((name, path))
        for path in expected - matched:
            missed += 1
            if path in PRODUCED_BY_NOTEBOOK:
                excused += 1
            else:
                unexplained_misses.append((name, path))
    precision = true_positive / max(true_positive + false_positive, 1)
    recall = true_positive / max(true_positive + missed, 1)
    recall_excusing_produced = true_positive / max(true_positive + missed - excused, 1)
    print(
        f"local files: tp={true_positive} fp={false_positive} missed={missed} "
        f"(produced by the notebook itself: {excused}); precision={precision:.2f} "
        f"recall={recall:.2f} recall_excluding_self_produced={recall_excusing_produced:.2f}"
    )
    assert true_positive >= 7
    assert precision >= 0.9, wrong
    assert recall >= 0.35
    assert recall_excusing_produced >= 0.85, unexplained_misses
