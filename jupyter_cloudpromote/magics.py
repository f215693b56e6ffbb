"""IPython magics: `%cloud_submit` and friends, a thin shell over JobManager like the CLI.

Load them with ``%load_ext jupyter_cloudpromote``. To load them in every IPython session and
kernel, opt in once in ``~/.ipython/profile_default/ipython_config.py``::

    c.InteractiveShellApp.extensions = ["jupyter_cloudpromote"]

Magics (``%cloud_submit --help`` etc. print the full options):

    %cloud_submit [--backend NAME] [--param K=V]... [--cpus N] [--memory SIZE] [--gpus N]
                  [--time LIMIT] [--include PATH]... [--env K=V]... [--option K=V]...
                  [--notebook PATH] [--wait] [--force] [--display auto|widget|text]
    %cloud_jobs [--limit N] [--status STATE]... [--backend NAME]
    %cloud_status ID      %cloud_logs ID [--tail N]      %cloud_cancel ID

The submitted notebook is the one on disk that this kernel runs (``__session__`` or
``$JPY_SESSION_NAME``, set by Jupyter Server), or ``--notebook``. The cell holding
``%cloud_submit`` is left out of the job. Settings and the job store are the same as the
CLI's and the server's, so a job submitted here shows up in the lab panel and in
``jupyter cloudpromote list``.

Display: in JupyterLab (and other frontends that send the cell id with each execution) a live
ipywidgets view; elsewhere (terminal IPython, nbclient/papermill runs, no ipywidgets) plain
text lines. ``--display`` or the environment variable CLOUDPROMOTE_DISPLAY overrides the choice.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from IPython.core.magic import Magics, line_magic, magics_class
from IPython.display import display

from .cli import add_promotion_arguments, promotion_options, record_text
from .errors import CloudPromoteError, NotebookError
from .models import JobState
from .notebook import read_notebook
from .widget import (
    JobMonitor,
    JobTable,
    JobView,
    StatusWidget,
    TextReporter,
    summary_line,
    tail_lines,
)

DISPLAY_ENV = "CLOUDPROMOTE_DISPLAY"
SESSION_ENV = "JPY_SESSION_NAME"
_NOT_FOUND_FIX = (
    "Pass --notebook PATH with the saved .ipynb (relative to the kernel's working folder)."
)


class CloudMagicError(Exception):
    """Shown by IPython as our own few lines instead of a traceback (`_render_traceback_`),
    while still marking the cell as failed, so "Run All" and nbclient stop there."""

    def __init__(self, magic: str, message: str, fix: str = "") -> None:
        super().__init__(f"{message} {fix}".strip())
        self.magic, self.message, self.fix = magic, message, fix

    def _render_traceback_(self) -> list[str]:
        lines = [f"%{self.magic}: {self.message}"]
        if self.fix:
            lines.append(f"fix: {self.fix}")
        return lines


class _ShowedHelp(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting the kernel."""

    def error(self, message: str) -> NoReturn:
        raise CloudPromoteError(f"{message}.", f"See %{self.prog} --help.")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            print(message, file=sys.stderr)
        raise _ShowedHelp()


def submit_parser() -> argparse.ArgumentParser:
    """The options of %cloud_submit: the CLI's `submit` options, with --notebook optional."""
    parser = _Parser(prog="cloud_submit", description="Submit this notebook as a batch job.")
    add_promotion_arguments(parser, submit=True, notebook_argument=False)
    parser.add_argument("--notebook", help="the .ipynb to submit (default: this kernel's)")
    parser.add_argument(
        "--display",
        choices=("auto", "widget", "text"),
        help=f"status display (default: ${DISPLAY_ENV} or auto)",
    )
    return parser


def _id_parser(prog: str) -> argparse.ArgumentParser:
    parser = _Parser(prog=prog)
    parser.add_argument("job_id", help="job id (a unique prefix is enough)")
    return parser


def _parse(parser: argparse.ArgumentParser, line: str) -> argparse.Namespace:
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise CloudPromoteError(f"Cannot read the options: {exc}.", "Check the quotes.") from exc
    return parser.parse_args(words)


# --------------------------------------------------------------------------- discovery


def find_notebook(
    explicit: str | None,
    user_ns: Mapping[str, Any],
    environ: Mapping[str, str],
    cwd: Path,
) -> tuple[Path, bool]:
    """The notebook to submit, and whether it was found from the kernel's own session.

    Order: --notebook; `__session__` (ipykernel sets it from $JPY_SESSION_NAME at start);
    $JPY_SESSION_NAME. A relative session path is tried against the kernel's working
    folder, which Jupyter Server sets to the notebook's folder.
    """
    if explicit:
        path = Path(explicit).expanduser()
        path = path if path.is_absolute() else cwd / path
        if not path.is_file():
            raise NotebookError(
                f"Notebook {explicit!r} not found (looked at {path}).", _NOT_FOUND_FIX
            )
        return path.resolve(), False
    session = str(user_ns.get("__session__") or environ.get(SESSION_ENV) or "")
    if not session:
        raise NotebookError(
            "Cannot tell which notebook this kernel runs: neither __session__ nor "
            f"${SESSION_ENV} is set (terminal IPython, nbclient or papermill runs, some "
            "editors).",
            _NOT_FOUND_FIX,
        )
    if not session.endswith(".ipynb"):
        raise NotebookError(
            f"This kernel belongs to {session!r}, not to a notebook.", _NOT_FOUND_FIX
        )
    given = Path(session).expanduser()
    candidates = [given] if given.is_absolute() else [cwd / given, cwd / given.name]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve(), True
    raise NotebookError(
        f"The kernel was started for {session!r}, which is not on disk any more "
        "(renamed or moved since the kernel started?).",
        _NOT_FOUND_FIX,
    )


def _normalized(source: str) -> str:
    return "\n".join(line.rstrip() for line in source.strip().splitlines())


def check_saved(notebook: Path, cell_source: str, cell_id: str | None = None) -> None:
    """Refuse when the cell running the magic is not in the notebook file as it is now.

    The job is built from the file on disk, so a cell that is not there (new, or edited since
    the last save) means the job would run something other than what the user sees. With the
    cell's id (sent by JupyterLab) an edit of this very cell is caught; without it, the cell's
    text must appear as some code cell of the file.
    """
    wanted = _normalized(cell_source)
    if not wanted:
        return  # nothing to compare with (not run from a cell)
    nb = read_notebook(notebook)
    code_cells = [cell for cell in nb.cells if cell.get("cell_type") == "code"]
    by_id = {cell.get("id"): cell for cell in code_cells if cell.get("id")}
    if cell_id and cell_id in by_id:
        saved = _normalized(by_id[cell_id].get("source", ""))
        present = saved == wanted
    else:
        present = any(_normalized(cell.get("source", "")) == wanted for cell in code_cells)
    if not present:
        raise NotebookError(
            f"{notebook.name} has changes not saved to disk: this cell, as it is now, is not "
            "in the file, and the job is built from the file.",
            "Save the notebook (Ctrl+S, or Cmd+S on a Mac) and run this cell again.",
        )


def _current_cell(shell: Any) -> tuple[str, str | None]:
    """The raw source of the cell being executed, and its id when the frontend sent one."""
    kernel = getattr(shell, "kernel", None)
    if kernel is not None and hasattr(kernel, "get_parent"):
        parent = kernel.get_parent("shell") or {}
        code = (parent.get("content") or {}).get("code")
        if isinstance(code, str):
            cell_id = (parent.get("metadata") or {}).get("cellId")
            return code, cell_id if isinstance(cell_id, str) else None
    history = getattr(getattr(shell, "history_manager", None), "input_hist_raw", None)
    return (history[-1] if history else ""), None


def choose_display(shell: Any, requested: str | None, environ: Mapping[str, str]) -> str:
    """ "widget" or "text".

    Widgets need ipywidgets, a kernel (not terminal IPython) and a frontend that renders them.
    No protocol message says whether a frontend renders widgets; interactive notebook
    frontends (JupyterLab, Notebook 7, VS Code) send the cell id with each execute request,
    and headless executors (nbclient, nbconvert, papermill) do not, so that is the signal.
    """
    choice = requested or environ.get(DISPLAY_ENV, "").strip().lower() or "auto"
    if choice == "text":
        return "text"
    kernel = getattr(shell, "kernel", None)
    if kernel is None or importlib.util.find_spec("ipywidgets") is None:
        return "text"
    if choice == "widget":
        return "widget"
    parent = kernel.get_parent("shell") if hasattr(kernel, "get_parent") else {}
    return "widget" if (parent or {}).get("metadata", {}).get("cellId") else "text"


# --------------------------------------------------------------------------- magics


@magics_class
class CloudPromoteMagics(Magics):
    """%cloud_submit, %cloud_jobs, %cloud_status, %cloud_logs, %cloud_cancel."""

    def __init__(self, shell: Any = None) -> None:
        super().__init__(shell)
        self._manager: Any = None
        self.monitors: list[JobMonitor] = []

    @property
    def manager(self) -> Any:
        if self._manager is None:
            from .jobs import JobManager

            self._manager = JobManager()
        return self._manager

    def _user_ns(self) -> Mapping[str, Any]:
        return self.shell.user_ns if self.shell is not None else {}

    def _fail(self, magic: str, exc: CloudPromoteError) -> NoReturn:
        raise CloudMagicError(magic, exc.message, exc.fix) from None

    # --- %cloud_submit -----------------------------------------------------------------

    @line_magic
    def cloud_submit(self, line: str = "") -> None:
        """Submit the notebook this kernel runs as a batch job and show its live status.

        %cloud_submit [--backend NAME] [--param K=V]... [--cpus N] [--memory SIZE]
                      [--gpus N] [--time LIMIT] [--include PATH]... [--env K=V]...
                      [--option K=V]... [--notebook PATH] [--wait] [--force]
                      [--display auto|widget|text]

        The notebook must be saved: the job is built from the file on disk. This cell is
        left out of the job. Without --wait the cell returns at once and the display keeps
        updating; with --wait it blocks until the job ends. See %cloud_submit --help.
        """
        try:
            args = _parse(submit_parser(), line)
        except _ShowedHelp:
            return
        except CloudPromoteError as exc:
            self._fail("cloud_submit", exc)
        try:
            options = promotion_options(args)
            notebook, from_session = find_notebook(
                args.notebook, self._user_ns(), os.environ, Path.cwd()
            )
            source, cell_id = _current_cell(self.shell)
            if from_session or notebook == self._session_notebook():
                check_saved(notebook, source, cell_id)
            # Unknown backend or bad profile fails here, in the cell, not in the display.
            backend = self.manager.backend(options.backend, options.options)
        except CloudPromoteError as exc:
            self._fail("cloud_submit", exc)
        mode = choose_display(self.shell, args.display, os.environ)
        monitor = JobMonitor(self.manager, backend=backend.profile, notebook=notebook.name)
        self.monitors = [m for m in self.monitors if m.thread is None or m.thread.is_alive()]
        if mode == "widget":
            view = StatusWidget(on_cancel=monitor.cancel)
            monitor.add_listener(view.update)
            monitor.publish()  # draw "checking" before displaying: no empty box
            display(view)
            if not args.wait:
                monitor.start(notebook, options)
                self.monitors.append(monitor)
                return
            final = self._wait(monitor, notebook, options, widget_shown=True)
        else:
            monitor.add_listener(TextReporter(print))
            if args.wait:
                final = self._wait(monitor, notebook, options, widget_shown=False)
            else:
                submitted = monitor.submit(notebook, options)
                assert monitor.view is not None
                final = monitor.view
                if submitted is not None and not final.terminal:
                    print(
                        f"job {final.job_id}: {final.status}. Follow it with "
                        f"%cloud_status {final.job_id} or %cloud_logs {final.job_id}."
                    )
                    return
        self._finish(final, monitor.refusal)

    def _session_notebook(self) -> Path | None:
        try:
            return find_notebook(None, self._user_ns(), os.environ, Path.cwd())[0]
        except CloudPromoteError:
            return None

    def _wait(
        self, monitor: JobMonitor, notebook: Path, options: Any, *, widget_shown: bool
    ) -> JobView:
        try:
            return monitor.run(notebook, options)
        except KeyboardInterrupt:
            job = monitor.job_id
            if widget_shown and job is not None:
                monitor.start()  # keep the display live, without blocking any more
                self.monitors.append(monitor)
            where = f"%cloud_status {job} / %cloud_cancel {job}" if job else "%cloud_jobs"
            print(f"interrupted: the job (if any) keeps running; see {where}", file=sys.stderr)
            raise

    def _finish(self, final: JobView, refusal: CloudPromoteError | None) -> None:
        """The final status line; a refused or failed job fails the cell, in a few lines."""
        if refusal is not None:
            raise CloudMagicError("cloud_submit", f"not submitted: {refusal.message}", refusal.fix)
        if final.job_id is None:
            raise CloudMagicError("cloud_submit", f"not submitted: {final.reason}")
        line = summary_line(final)
        if final.outcome in ("failed", "cancelled"):
            raise CloudMagicError("cloud_submit", line)
        print(line)

    # --- the others --------------------------------------------------------------------

    @line_magic
    def cloud_jobs(self, line: str = "") -> None:
        """List recent jobs: %cloud_jobs [--limit N] [--status STATE]... [--backend NAME]"""
        parser = _Parser(prog="cloud_jobs")
        parser.add_argument("--limit", type=int, default=20)
        parser.add_argument("--status", action="append", choices=[s.value for s in JobState])
        parser.add_argument("--backend")
        try:
            args = _parse(parser, line)
            states = [JobState(s) for s in args.status or []] or None
            records = [
                self.manager.refresh(r.id)
                for r in self.manager.list(states=states, backend=args.backend, limit=args.limit)
            ]
        except _ShowedHelp:
            return
        except CloudPromoteError as exc:
            self._fail("cloud_jobs", exc)
        display(JobTable(records))

    @line_magic
    def cloud_status(self, line: str = "") -> None:
        """Show a job: %cloud_status ID [--display auto|widget|text]. Live while it runs."""
        parser = _id_parser("cloud_status")
        parser.add_argument("--display", choices=("auto", "widget", "text"))
        try:
            args = _parse(parser, line)
            record = self.manager.refresh(args.job_id)
        except _ShowedHelp:
            return
        except CloudPromoteError as exc:
            self._fail("cloud_status", exc)
        if choose_display(self.shell, args.display, os.environ) == "text":
            print(record_text(record))
            return
        monitor = JobMonitor(
            self.manager, backend=record.backend, notebook=Path(record.notebook).name
        )
        monitor.attach(record.id)
        view = StatusWidget(on_cancel=monitor.cancel)
        monitor.add_listener(view.update)
        display(view)
        if record.state.terminal:
            monitor.publish()
        else:
            monitor.start()
            self.monitors.append(monitor)

    @line_magic
    def cloud_logs(self, line: str = "") -> None:
        """Print a job's build and run logs: %cloud_logs ID [--tail N]"""
        parser = _id_parser("cloud_logs")
        parser.add_argument("--tail", type=int, help="only the last N lines")
        try:
            args = _parse(parser, line)
            record = self.manager.get(args.job_id)
            text = self.manager.build_logs(record.id) + self.manager.run_logs(record.id)
        except _ShowedHelp:
            return
        except CloudPromoteError as exc:
            self._fail("cloud_logs", exc)
        if args.tail is not None:
            lines, hidden = tail_lines(text, args.tail, width=10_000)
            text = (f"[{hidden} earlier lines]\n" if hidden else "") + "\n".join(lines)
        print(text.rstrip("\n") or f"job {record.id}: no logs yet ({record.state.value})")

    @line_magic
    def cloud_cancel(self, line: str = "") -> None:
        """Cancel a job: %cloud_cancel ID"""
        try:
            args = _parse(_id_parser("cloud_cancel"), line)
            record = self.manager.cancel(args.job_id)
        except _ShowedHelp:
            return
        except CloudPromoteError as exc:
            self._fail("cloud_cancel", exc)
        print(f"job {record.id}: {record.state.value}")

    def stop_monitors(self) -> None:
        for monitor in self.monitors:
            monitor.stop()
        self.monitors = []


_loaded: dict[int, CloudPromoteMagics] = {}


def load_ipython_extension(ipython: Any) -> None:
    magics = CloudPromoteMagics(ipython)
    _loaded[id(ipython)] = magics
    ipython.register_magics(magics)


def unload_ipython_extension(ipython: Any) -> None:
    magics = _loaded.pop(id(ipython), None)
    if magics is None:
        return
    magics.stop_monitors()
    line_magics = ipython.magics_manager.magics["line"]
    for name in ("cloud_submit", "cloud_jobs", "cloud_status", "cloud_logs", "cloud_cancel"):
        line_magics.pop(name, None)
