"""Docker backend: submit-to-running time, cold, unchanged resubmit, and after a code-only edit.

    python bench/docker_submit.py [--base-image cloudpromote-base:test] [--repeat 3]

Cold means the notebook's images are removed first, so both the dependency stage and the
code layer are built; "unchanged" resubmits the same notebook (no build at all); "code edit"
changes one line of code (the dependency layers come from the cache). Each figure is the wall
time from JobManager.submit() being called to the job being reported `running`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import docker
import nbformat

from jupyter_cloudpromote.config import CloudPromote
from jupyter_cloudpromote.jobs import JobManager
from jupyter_cloudpromote.models import JobState, PromotionOptions

RESULTS = Path(__file__).resolve().parent / "results" / "docker_submit.json"


def write_notebook(path: Path, message: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [
        nbformat.v4.new_code_cell("import time\nimport packaging.version"),
        nbformat.v4.new_code_cell(f"print({message!r}, flush=True)\ntime.sleep(5)"),
    ]
    nbformat.write(nb, str(path))


def submit_to_running(manager: JobManager, notebook: Path, options: PromotionOptions) -> float:
    started = time.perf_counter()
    record = manager.submit(notebook, options)
    while True:
        record = manager.refresh(record.id)
        if record.state is JobState.RUNNING or record.state.terminal:
            break
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    if record.state is not JobState.RUNNING and record.state is not JobState.SUCCEEDED:
        raise SystemExit(f"job {record.id} ended {record.state.value}: {record.reason}")
    manager.cancel(record.id)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-image", default="cloudpromote-base:test")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    client = docker.from_env()
    figures: dict[str, list[float]] = {"cold": [], "unchanged": [], "code edit": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manager = JobManager(CloudPromote(data_dir=str(root / "data")))
        notebook = root / "bench_docker.ipynb"
        options = PromotionOptions(backend="docker", base_image=args.base_image)
        for round_ in range(args.repeat):
            for image in client.images.list(name="cloudpromote/bench-docker"):
                client.images.remove(image.id, force=True)
            client.images.prune(filters={"dangling": True})
            write_notebook(notebook, f"round {round_}")
            figures["cold"].append(submit_to_running(manager, notebook, options))
            figures["unchanged"].append(submit_to_running(manager, notebook, options))
            write_notebook(notebook, f"round {round_}, edited")
            figures["code edit"].append(submit_to_running(manager, notebook, options))
    summary = {
        name: {"median_s": statistics.median(values), "max_s": max(values), "runs": values}
        for name, values in figures.items()
    }
    print(f"{'case':<12} {'median s':>9} {'max s':>7}")
    for name, row in summary.items():
        print(f"{name:<12} {row['median_s']:>9.2f} {row['max_s']:>7.2f}")
    cold = summary["cold"]["median_s"]
    for name in ("unchanged", "code edit"):
        print(f"{name} / cold = {summary[name]['median_s'] / cold:.3f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
