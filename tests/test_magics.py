"""The %cloud_ magics: notebook discovery and the unsaved-change check as units, then real
kernels (nbclient, and a JupyterLab-like client over jupyter_client) running real jobs on the
local backend, sharing the job store with JobManager in this process."""

from __future__ import annotations

import json
import os
import queue
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from jupyter_cloudpromote.errors import CloudPromoteError
from jupyter_cloudpromote.magics import check_saved, choose_display, find_notebook, submit_parser

from .conftest import make_notebook

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


# --------------------------------------------------------------------------- discovery


def test_explicit_notebook_relative_to_the_kernel_folder(tmp_path: Path) -> None:
    nb = make_notebook(tmp_path / "sub" / "a.ipynb", ["x = 1"])
    assert find_notebook("sub/a.ipynb", {}, {}, tmp_path) == (nb.resolve(), False)
    assert find_notebook(str(nb), {"__session__": "/elsewhere/b.ipynb"}, {}, tmp_path)[0] == nb
    with pytest.raises(CloudPromoteError) as missing:
        find_notebook("nope.ipynb", {}, {}, tmp_path)
    assert "nope.ipynb" in missing.value.message and "--notebook" in missing.value.fix


def test_session_path_from_the_kernel_namespace_or_the_environment(tmp_path: Path) -> None:
    nb = make_notebook(tmp_path / "work" / "report.ipynb", ["x = 1"])
    assert find_notebook(None, {"__session__": str(nb)}, {}, tmp_path) == (nb, True)
    assert find_notebook(None, {}, {"JPY_SESSION_NAME": str(nb)}, tmp_path) == (nb, True)
    # A server-relative session path ("work/report.ipynb"): the kernel runs in the notebook's
    # folder, so its file name is found there.
    assert find_notebook(None, {"__session__": "work/report.ipynb"}, {}, nb.parent)[0] == nb
    # __session__ wins over the environment (it is what ipykernel set for this kernel).
    other = make_notebook(tmp_path / "other.ipynb", ["y = 2"])
    environ = {"JPY_SESSION_NAME": str(other)}
    found = find_notebook(None, {"__session__": str(nb)}, environ, tmp_path)
    assert found[0] == nb


def test_no_session_or_a_stale_or_non_notebook_one_asks_for_notebook(tmp_path: Path) -> None:
    cases = [
        ({}, {}, "Cannot tell which notebook"),
        ({"__session__": "Console-1"}, {}, "not to a notebook"),
        ({"__session__": str(tmp_path / "renamed.ipynb")}, {}, "not on disk any more"),
    ]
    for user_ns, environ, words in cases:
        with pytest.raises(CloudPromoteError) as error:
            find_notebook(None, user_ns, environ, tmp_path)
        assert words in error.value.message
        assert "Pass --notebook" in error.value.fix


# --------------------------------------------------------------------------- unsaved check


def test_a_saved_cell_passes_whatever_the_trailing_whitespace(tmp_path: Path) -> None:
    nb = make_notebook(tmp_path / "n.ipynb", ["x = 1", "%cloud_submit --backend local"])
    check_saved(nb, "%cloud_submit --backend local  \n\n")


def test_a_cell_not_in_the_file_is_refused_with_save_and_run_again(tmp_path: Path) -> None:
    nb = make_notebook(tmp_path / "n.ipynb", ["x = 1", "%cloud_submit --backend local"])
    before = nb.read_bytes()
    with pytest.raises(CloudPromoteError) as error:
        check_saved(nb, "%cloud_submit --backend local --wait")  # edited, not saved
    assert "not saved" in error.value.message
    assert "Save the notebook (Ctrl+S" in error.value.fix
    assert "run this cell again" in error.value.fix
    assert nb.read_bytes() == before  # only read


def test_with_the_cell_id_an_edit_of_this_cell_is_caught_even_if_the_text_is_elsewhere(
    tmp_path: Path,
) -> None:
    nb = make_notebook(tmp_path / "n.ipynb", ["%cloud_submit", "%cloud_submit --wait"])
    ids = [cell["id"] for cell in nbformat.read(nb, as_version=4).cells]
    check_saved(nb, "%cloud_submit --wait", ids[1])
    with pytest.raises(CloudPromoteError):
        # Cell 0 now reads like cell 1 in the editor, but on disk it does not.
        check_saved(nb, "%cloud_submit --wait", ids[0])
    # An id the file does not know (a frontend with its own ids): fall back to the text.
    check_saved(nb, "%cloud_submit --wait", "vscode-notebook-cell:abc")


def test_display_choice_text_without_a_kernel_or_when_asked() -> None:
    class TerminalShell:  # terminal IPython has no .kernel
        pass

    assert choose_display(TerminalShell(), None, {}) == "text"
    assert choose_display(TerminalShell(), "widget", {}) == "text"
    assert choose_display(TerminalShell(), None, {"CLOUDPROMOTE_DISPLAY": "text"}) == "text"


def test_submit_options_mirror_the_cli() -> None:
    args = submit_parser().parse_args(
        "--backend b --param a=1 --param b=2 --cpus 2 --memory 1G --gpus 1 --time 2h "
        "--include data --env K=V --option partition=x --notebook n.ipynb --wait --force".split()
    )
    assert (args.backend, args.param, args.cpus, args.memory, args.gpus) == (
        "b",
        ["a=1", "b=2"],
        2.0,
        "1G",
        1,
    )
    assert (args.time_limit, args.include, args.env, args.option) == (
        "2h",
        ["data"],
        ["K=V"],
        ["partition=x"],
    )
    assert args.notebook == "n.ipynb" and args.wait and args.force
    with pytest.raises(CloudPromoteError) as error:
        submit_parser().parse_args(["--bogus"])
    assert "--bogus" in error.value.message and "--help" in error.value.fix


# --------------------------------------------------------------------------- real kernels


def _kernel_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)  # carries JUPYTER_DATA_DIR/CONFIG_DIR from isolated_jupyter
    env.pop("JPY_SESSION_NAME", None)
    env.pop("CLOUDPROMOTE_DISPLAY", None)
    env.update(extra or {})
    return env


def run_notebook(path: Path, env: dict[str, str], nb: Any = None) -> Any:
    """Execute with nbclient (no frontend: no cell ids, no widget rendering)."""
    from nbclient import NotebookClient

    nb = nb if nb is not None else nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=600, allow_errors=True, resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute(env=env)
    return nb


def texts(cell: Any) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream":
            parts.append(output["text"])
        elif output["output_type"] == "error":
            parts.append("\n".join(output["traceback"]))
            parts.append(f"{output['ename']}: {output['evalue']}")
        else:
            parts.append(str(output.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


@pytest.fixture()
def job_notebook(isolated_jupyter: Path, tmp_path: Path) -> Path:
    return make_notebook(
        tmp_path / "nb" / "job.ipynb",
        [
            "%load_ext jupyter_cloudpromote",
            ("size = 3\npause = 0", ["parameters"]),
            "import os, time\nprint('size is', size)\ntime.sleep(pause)\n"
            "open(os.path.join(os.environ.get('CLOUDPROMOTE_OUTPUT_DIR', '.'), 'size.txt'), 'w')"
            ".write(str(size))",
            "%cloud_submit --backend local --param size=5 --wait --notebook job.ipynb",
        ],
    )


@pytest.mark.slow
def test_nbclient_submit_wait_runs_the_job_and_leaves_the_magic_cell_out(
    job_notebook: Path,
) -> None:
    from jupyter_cloudpromote.jobs import JobManager
    from jupyter_cloudpromote.models import JobState

    before = job_notebook.read_bytes()
    nb = run_notebook(job_notebook, _kernel_env())
    out = texts(nb.cells[3])
    jobs = JobManager().list()  # the same store the kernel wrote
    assert len(jobs) == 1, out
    job = jobs[0]
    assert job.state is JobState.SUCCEEDED, (out, job.reason)
    assert f"job {job.id}: succeeded" in out
    assert f"job {job.id}: queued" in out  # a text line per stage change under nbclient
    assert "Traceback" not in out
    assert not any(WIDGET_VIEW in o.get("data", {}) for o in nb.cells[3].outputs)  # text mode
    manager = JobManager()
    assert "size is 5" in manager.run_logs(job.id)
    assert (Path(job.job_dir) / "outputs" / "size.txt").read_text() == "5"
    script = (Path(job.job_dir) / "context" / "job.py").read_text()
    assert "print('size is', size)" in script
    assert "cloud_submit" not in script.replace("%cloud_ magic", "")  # the cell is left out
    assert job_notebook.read_bytes() == before


@pytest.mark.slow
def test_nbclient_finds_the_notebook_from_the_session_and_draws_the_widget(
    job_notebook: Path,
) -> None:
    from jupyter_cloudpromote.jobs import JobManager
    from jupyter_cloudpromote.models import JobState

    nb = nbformat.read(job_notebook, as_version=4)
    nb.cells[3].source = "%cloud_submit --backend local --wait --display widget"
    nbformat.write(nb, str(job_notebook))  # saved, as a user would before running it
    nb = run_notebook(job_notebook, _kernel_env({"JPY_SESSION_NAME": str(job_notebook)}))
    out = texts(nb.cells[3])
    [job] = JobManager().list()
    assert job.state is JobState.SUCCEEDED and job.notebook == str(job_notebook.resolve())
    assert f"job {job.id}: succeeded" in out and "Traceback" not in out
    views = [o for o in nb.cells[3].outputs if WIDGET_VIEW in o.get("data", {})]
    assert len(views) == 1
    assert views[0]["data"]["text/plain"].startswith("new job on local (job.ipynb)")
    # nbclient keeps the last state of every widget model: the live updates reached it.
    states = [m["state"] for m in nb.metadata["widgets"][WIDGET_STATE]["state"].values()]
    bars = [s for s in states if s.get("_model_name") == "IntProgressModel"]
    assert [(b["value"], b["max"], b["bar_style"]) for b in bars] == [(5, 5, "success")]
    labels = [s["value"] for s in states if s.get("_model_name") == "LabelModel"]
    assert any(label.startswith("succeeded · ") for label in labels)
    headers = [s["value"] for s in states if s.get("_model_name") == "HTMLModel"]
    assert any(job.id in h for h in headers)
    assert any("size is 3" in h for h in headers)  # the log tail
    [button] = [s for s in states if s.get("_model_name") == "ButtonModel"]
    assert button["disabled"] is True


@pytest.mark.slow
def test_errors_are_a_few_readable_lines_with_the_fix_not_a_traceback(
    job_notebook: Path,
) -> None:
    nb = nbformat.read(job_notebook, as_version=4)
    nb.cells[3].source = "%cloud_submit --backend nowhere --notebook job.ipynb"
    extra = [
        "%cloud_submit --backend local",  # nbclient sets no session: where is the notebook?
        "%cloud_submit --backend local --param nosuch=1 --notebook job.ipynb",
        "%cloud_submit --memory lots --notebook job.ipynb",
        "%cloud_status doesnotexist",
    ]
    nb.cells.extend(nbformat.v4.new_code_cell(source) for source in extra)
    nbformat.write(nb, str(job_notebook))
    nb = run_notebook(job_notebook, _kernel_env())
    outs = [texts(cell) for cell in nb.cells[3:]]
    for out in outs:
        assert "Traceback" not in out and "File " not in out, out
        assert "fix:" in out, out
    assert "Unknown backend 'nowhere'" in outs[0] and "local" in outs[0]
    assert "Pass --notebook" in outs[1]
    assert "nosuch" in outs[2] and "size" in outs[2]
    assert "512M" in outs[3]
    assert "doesnotexist" in outs[4]
    # Each refusal fails its cell (so "Run All" stops) with one short error output.
    for cell in nb.cells[3:]:
        kinds = [o["output_type"] for o in cell.outputs]
        assert kinds.count("error") == 1 and kinds[-1] == "error", kinds
    from jupyter_cloudpromote.jobs import JobManager

    assert JobManager().list() == []  # nothing was submitted


@pytest.mark.slow
def test_an_unsaved_cell_is_refused_with_save_and_run_again(job_notebook: Path) -> None:
    nb = nbformat.read(job_notebook, as_version=4)
    nb.cells[3].source = "%cloud_submit --backend local --wait"  # on disk: the --notebook text
    env = _kernel_env({"JPY_SESSION_NAME": str(job_notebook)})
    out = texts(run_notebook(job_notebook, env, nb).cells[3])
    assert "Save the notebook (Ctrl+S" in out and "not saved" in out and "Traceback" not in out
    from jupyter_cloudpromote.jobs import JobManager

    assert JobManager().list() == []


@pytest.mark.slow
def test_jobs_status_logs_cancel_magics_on_a_running_job(job_notebook: Path) -> None:
    nb = nbformat.read(job_notebook, as_version=4)
    nb.cells[3].source = "%cloud_submit --backend local --notebook job.ipynb --param pause=600"
    # Cells after the submit are not part of the job anyway; tagged so the job does not
    # need jupyter_cloudpromote installed.
    nb.cells.extend(
        nbformat.v4.new_code_cell(source, metadata={"tags": ["skip-job"]})
        for source in [
            "from jupyter_cloudpromote.jobs import JobManager\n"
            "jid = JobManager().list()[0].id\n"
            "for _ in range(600):\n"
            "    if JobManager().refresh(jid).state.value == 'running': break\n"
            "    time.sleep(0.2)",
            "%cloud_jobs",
            "%cloud_status {jid}",
            "%cloud_cancel {jid}",
            "%cloud_logs {jid} --tail 5",
        ]
    )
    nbformat.write(nb, str(job_notebook))
    nb = run_notebook(job_notebook, _kernel_env())
    from jupyter_cloudpromote.jobs import JobManager
    from jupyter_cloudpromote.models import JobState

    [job] = JobManager().list()
    submitted, _, jobs, status, cancel, logs = (texts(c) for c in nb.cells[3:])
    # Without --wait the cell returned while the job still had 600 s to sleep.
    assert f"job {job.id}: queued. Follow it with %cloud_status {job.id}" in submitted
    assert job.id in jobs and "job.ipynb" in jobs and "running" in jobs
    html = [o for o in nb.cells[5].outputs if "text/html" in o.get("data", {})]
    assert html and "<table>" in html[0]["data"]["text/html"]
    assert f"job       {job.id}" in status and "running" in status
    assert f"job {job.id}: cancel" in cancel  # cancelling or cancelled
    assert logs.rstrip().endswith("size is 3")  # the tail: the job's own output is last
    assert logs.startswith("[") and "earlier lines]" in logs and len(logs.splitlines()) == 6
    final = JobManager().refresh(job.id)
    for _ in range(100):
        if final.state.terminal:
            break
        time.sleep(0.2)
        final = JobManager().refresh(job.id)
    assert final.state is JobState.CANCELLED


# --------------------------------------------------------------------------- lab-like client


class LabLikeKernel:
    """A kernel driven the way JupyterLab drives it: execute requests carry the cell id, and
    widget events (a button click) arrive as comm messages."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        from jupyter_client.manager import KernelManager

        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(cwd=str(cwd), env=env)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.iopub: list[dict[str, Any]] = []

    def execute(self, code: str, cell_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        msg = self.kc.session.msg(
            "execute_request",
            {
                "code": code,
                "silent": False,
                "store_history": True,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": True,
            },
            metadata={"cellId": cell_id},
        )
        self.kc.shell_channel.send(msg)
        msg_id = msg["header"]["msg_id"]
        reply = self.kc.get_shell_msg(timeout=120)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = self.kc.get_shell_msg(timeout=120)
        outputs = []
        while True:  # drain this request's iopub up to idle
            message = self.kc.get_iopub_msg(timeout=120)
            self.iopub.append(message)
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            if message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
                break
            if message["msg_type"] in ("stream", "display_data", "error", "execute_result"):
                outputs.append(message)
        return reply, outputs

    def pump(self) -> None:
        try:
            while True:
                self.iopub.append(self.kc.get_iopub_msg(timeout=0.2))
        except queue.Empty:
            pass

    def click(self, model_id: str) -> None:
        """What the browser sends when a Button view is clicked."""
        msg = self.kc.session.msg(
            "comm_msg",
            {"comm_id": model_id, "data": {"method": "custom", "content": {"event": "click"}}},
        )
        self.kc.shell_channel.send(msg)

    def model_ids(self, model_name: str) -> list[str]:
        return [
            m["content"]["comm_id"]
            for m in self.iopub
            if m["msg_type"] == "comm_open"
            and m["content"]["data"].get("state", {}).get("_model_name") == model_name
        ]

    def states_of(self, model_id: str) -> list[dict[str, Any]]:
        return [
            m["content"]["data"].get("state", {})
            for m in self.iopub
            if m["msg_type"] in ("comm_open", "comm_msg")
            and m["content"].get("comm_id") == model_id
        ]

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


@pytest.fixture()
def lab_kernel(job_notebook: Path) -> Iterator[LabLikeKernel]:
    kernel = LabLikeKernel(
        job_notebook.parent, _kernel_env({"JPY_SESSION_NAME": str(job_notebook)})
    )
    yield kernel
    kernel.close()


@pytest.mark.slow
def test_lab_like_frontend_gets_a_live_widget_and_its_cancel_button_cancels(
    job_notebook: Path, lab_kernel: LabLikeKernel
) -> None:
    from jupyter_cloudpromote.jobs import JobManager
    from jupyter_cloudpromote.models import JobState

    nb = nbformat.read(job_notebook, as_version=4)
    cell = nb.cells[3]
    cell.source = "%cloud_submit --backend local --param pause=600"
    nbformat.write(nb, str(job_notebook))
    reply, _ = lab_kernel.execute(nb.cells[0].source, nb.cells[0].id)
    assert reply["content"]["status"] == "ok"

    # This cell, edited in the "editor" but not saved: refused, by its id.
    reply, outputs = lab_kernel.execute(cell.source + " --wait", cell.id)
    assert reply["content"]["status"] == "error"
    assert "Save the notebook" in json.dumps([o["content"] for o in outputs])

    reply, outputs = lab_kernel.execute(cell.source, cell.id)
    assert reply["content"]["status"] == "ok"  # returned at once: the job sleeps 600 s
    assert any(WIDGET_VIEW in o["content"].get("data", {}) for o in outputs)  # auto: widget
    [button] = lab_kernel.model_ids("ButtonModel")
    [bar] = lab_kernel.model_ids("IntProgressModel")

    def bar_values() -> list[int]:
        return [s["value"] for s in lab_kernel.states_of(bar) if "value" in s]

    for _ in range(1500):  # the background thread moves the display along; the kernel is idle
        lab_kernel.pump()
        if 3 in bar_values():  # 3 steps done: "running"
            break
    manager = JobManager()
    [job] = manager.list()
    assert manager.get(job.id).state is JobState.RUNNING

    lab_kernel.click(button)
    for _ in range(300):
        lab_kernel.pump()
        if any(s.get("bar_style") == "warning" for s in lab_kernel.states_of(bar)):
            break
    assert manager.refresh(job.id).state is JobState.CANCELLED
    assert 3 in bar_values()  # it showed "running" before the end
    assert any(s.get("bar_style") == "warning" for s in lab_kernel.states_of(bar))
    assert any(s.get("disabled") is True for s in lab_kernel.states_of(button))


@pytest.mark.slow
def test_a_failed_job_fails_the_cell_with_its_exit_code_and_no_traceback(
    isolated_jupyter: Path, tmp_path: Path
) -> None:
    path = make_notebook(
        tmp_path / "nb" / "fails.ipynb",
        [
            "%load_ext jupyter_cloudpromote",
            ("fail = False", ["parameters"]),
            "import sys\nif fail:\n    print('giving up')\n    sys.exit(4)",
            "%cloud_submit --backend local --param fail=True --wait --notebook fails.ipynb",
        ],
    )
    nb = run_notebook(path, _kernel_env())
    from jupyter_cloudpromote.jobs import JobManager

    [job] = JobManager().list()
    assert job.exit_code == 4
    out = texts(nb.cells[3])
    assert f"job {job.id}: failed" in out and "4" in out and "Traceback" not in out
    assert [o["output_type"] for o in nb.cells[3].outputs][-1] == "error"
