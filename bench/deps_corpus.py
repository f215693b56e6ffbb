"""Dependency resolution over the notebook corpus, side by side with pipreqs.

For every notebook in ../shared/corpus/notebooks: read_notebook -> convert_notebook ->
resolve_requirements against the current interpreter's environment, then compare the
import-derived distributions with the labels' `distributions` (precision, recall, F1 per
notebook and micro-averaged). pipreqs runs on the same notebooks, one at a time, each copied
alone into a temp folder. Writes bench/results/deps_corpus.json.

Usage: python bench/deps_corpus.py [--corpus DIR] [--pipreqs PATH] [--no-pipreqs]
"""

from __future__ import annotations

import argparse
import http.server
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from jupyter_cloudpromote.convert import convert_notebook
from jupyter_cloudpromote.kernelenv import find_kernel_environment
from jupyter_cloudpromote.notebook import read_notebook
from jupyter_cloudpromote.resolve import resolve_requirements

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO_ROOT.parent / "shared" / "corpus"
RESULTS = REPO_ROOT / "bench" / "results" / "deps_corpus.json"


def scores(predicted: set[str], expected: set[str]) -> dict[str, Any]:
    true_positive = len(predicted & expected)
    precision = true_positive / len(predicted) if predicted else 1.0
    recall = true_positive / len(expected) if expected else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "tp": true_positive,
        "fp": sorted(predicted - expected),
        "fn": sorted(expected - predicted),
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
    }


def micro(rows: list[dict[str, Any]]) -> dict[str, float]:
    tp = sum(r["tp"] for r in rows)
    fp = sum(len(r["fp"]) for r in rows)
    fn = sum(len(r["fn"]) for r in rows)
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
    }


class _AnyNameIndex(http.server.BaseHTTPRequestHandler):
    """A stand-in for PyPI's JSON API that knows every name (no registry is asked).

    pipreqs asks the index only whether a mapped name exists and for its latest version; this
    answers "yes" for every name, so pipreqs is scored on its own import -> name mapping, an
    upper bound of what it would report with a reachable index.
    """

    def do_GET(self) -> None:
        name = self.path.strip("/").split("/")[0]
        body = json.dumps(
            {"info": {"name": name, "version": "0", "package_url": f"local/{name}"}, "releases": {}}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def any_name_index() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AnyNameIndex)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def run_pipreqs(pipreqs: str, notebook: Path, index_url: str) -> tuple[set[str], str]:
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(notebook, Path(tmp) / notebook.name)
        proc = subprocess.run(
            [
                pipreqs,
                "--scan-notebooks",
                "--print",
                "--mode",
                "no-pin",
                "--pypi-server",
                index_url,
                tmp,
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    names = set()
    for line in proc.stdout.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "INFO", "WARNING")):
            names.add(canonicalize_name(re.split(r"[=<>~!]", line)[0]))
    error = "" if proc.returncode == 0 else proc.stderr.strip().splitlines()[-1:][0]
    return names, error


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--pipreqs", default=str(Path(sys.executable).with_name("pipreqs")))
    parser.add_argument("--no-pipreqs", action="store_true")
    args = parser.parse_args()

    labels = json.loads((args.corpus / "labels.json").read_text(encoding="utf-8"))
    front_half = "read_notebook + convert_notebook + resolve_requirements"

    probe_started = time.perf_counter()
    env = find_kernel_environment(None)  # warm the probe cache, as a running server has it
    probe_seconds = time.perf_counter() - probe_started
    use_pipreqs = not args.no_pipreqs and Path(args.pipreqs).exists()
    rows: list[dict[str, Any]] = []
    pipreqs_rows: list[dict[str, Any]] = []
    timings: list[float] = []
    with any_name_index() as index_url:
        for name in sorted(labels):
            path = args.corpus / "notebooks" / name
            expected = set(labels[name]["distributions"])
            started = time.perf_counter()
            nb = read_notebook(path)
            converted = convert_notebook(nb, path.name)
            resolved = resolve_requirements(converted, path.parent, env)
            timings.append(time.perf_counter() - started)
            predicted = {canonicalize_name(r.name) for r in resolved.requirements if r.imports}
            no_dist = set(labels[name]["imports_without_distribution"])
            leaked = sorted(
                imp for r in resolved.requirements for imp in r.imports if imp in no_dist
            )
            row = {"notebook": name, **scores(predicted, expected)}
            rows.append({**row, "no_distribution_leaked": leaked})
            if use_pipreqs:
                found, error = run_pipreqs(args.pipreqs, path, index_url)
                pipreqs_rows.append({"notebook": name, **scores(found, expected), "error": error})

    result: dict[str, Any] = {
        "front_half": front_half,
        "python": env.python_version,
        "notebooks": len(rows),
        "cloudpromote": {"micro": micro(rows), "per_notebook": rows},
        "timing_seconds": {
            "what": "read_notebook + convert + resolve_requirements (kernel probe cached)",
            "median": round(statistics.median(timings), 4),
            "max": round(max(timings), 4),
            "kernel_probe_first_call": round(probe_seconds, 4),
        },
    }
    if use_pipreqs:
        result["pipreqs"] = {
            "how": "pipreqs --scan-notebooks --mode no-pin against a local index stand-in that "
            "knows every name (upper bound: no registry is asked)",
            "micro": micro(pipreqs_rows),
            "per_notebook": pipreqs_rows,
        }

    print(f"{'notebook':58} {'ours P/R':>12} {'pipreqs P/R':>12}")
    for index, row in enumerate(rows):
        ours = f"{row['precision']:.2f}/{row['recall']:.2f}"
        theirs = ""
        if use_pipreqs:
            other = pipreqs_rows[index]
            theirs = f"{other['precision']:.2f}/{other['recall']:.2f}"
        print(f"{row['notebook'][:58]:58} {ours:>12} {theirs:>12}")
    summary = [("jupyter-cloudpromote", result["cloudpromote"]["micro"])]
    if use_pipreqs:
        summary.append(("pipreqs", result["pipreqs"]["micro"]))
    print()
    header = ("precision", "recall", "F1", "tp", "fp", "fn")
    print(f"{'micro-averaged':24} " + " ".join(f"{h:>9}" for h in header))
    for label, m in summary:
        print(
            f"{label:24} {m['precision']:>9.3f} {m['recall']:>9.3f} {m['f1']:>9.3f} "
            f"{m['tp']:>9} {m['fp']:>9} {m['fn']:>9}"
        )
    timing = result["timing_seconds"]
    print(f"\nfront half per notebook: median {timing['median']}s, max {timing['max']}s")
    print(f"front half: {front_half}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
