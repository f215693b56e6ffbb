"""The status display of `%cloud_submit`: a pure view-model, a text renderer, an ipywidgets view.

What the user sees is computed by plain functions from a `JobSnapshot` (the job record, its
log text, the clock) into a `JobView`; nothing there touches a kernel or a browser, so every
stage is tested as data. `render_text` draws a JobView as plain text (terminal IPython,
nbclient runs), `StatusWidget` draws the same JobView with ipywidgets, and `JobMonitor`
drives either one: it submits through JobManager and then polls `JobManager.refresh`, from
the caller's thread (`--wait`) or from a background thread, so the kernel stays free.
"""

from __future__ import annotations

import enum
import html
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import CloudPromoteError
from .models import JobRecord, JobState, PromotionOptions

if TYPE_CHECKING:
    from .jobs import JobManager

LOG_TAIL_LINES = 20
LOG_LINE_CHARS = 300
POLL_SECONDS = 1.0


class Stage(str, enum.Enum):
    """The steps the display shows, in order; several job states can share one step."""

    CHECKING = "checking"
    BUILDING = "building"
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"

    @property
    def position(self) -> int:
        return STAGES.index(self)


STAGES: tuple[Stage, ...] = tuple(Stage)

_STAGE_OF_STATE = {
    JobState.PENDING: Stage.CHECKING,  # record exists, being packaged: still preparing
    JobState.BUILDING: Stage.BUILDING,
    JobState.QUEUED: Stage.QUEUED,
    JobState.RUNNING: Stage.RUNNING,
    JobState.CANCELLING: Stage.RUNNING,
    JobState.SUCCEEDED: Stage.FINISHED,
    JobState.FAILED: Stage.FINISHED,
    JobState.CANCELLED: Stage.FINISHED,
}


def stage_for(state: JobState | None) -> Stage:
    """The display step for a job state; None means no record yet (the check is running)."""
    return Stage.CHECKING if state is None else _STAGE_OF_STATE[state]


# Step statuses, as drawn by both renderers.
DONE, CURRENT, TODO, FAILED, SKIPPED, CANCELLED = (
    "done",
    "current",
    "todo",
    "failed",
    "skipped",
    "cancelled",
)
_TEXT_MARK = {DONE: "x", CURRENT: ">", TODO: " ", FAILED: "!", SKIPPED: "-", CANCELLED: "/"}
_HTML_MARK = {DONE: "✔", CURRENT: "●", TODO: "○", FAILED: "✖", SKIPPED: "-", CANCELLED: "■"}
_MUTED = "color:var(--jp-ui-font-color2, #757575)"  # theme-aware, with a light fallback
_HTML_COLOR = {
    DONE: "var(--jp-success-color1, #2e7d32)",
    CURRENT: "var(--jp-brand-color1, #1565c0)",
    TODO: "var(--jp-ui-font-color3, #9e9e9e)",
    FAILED: "var(--jp-error-color1, #c62828)",
    SKIPPED: "var(--jp-ui-font-color3, #9e9e9e)",
    CANCELLED: "var(--jp-warn-color1, #ef6c00)",
}
_BAR_STYLE = {"active": "info", "succeeded": "success", "failed": "danger", "cancelled": "warning"}


@dataclass(frozen=True)
class JobSnapshot:
    """Everything the display knows at one moment."""

    backend: str
    notebook: str  # file name, for the header
    started: float  # when the submission began (the job's clock before a record exists)
    now: float
    record: JobRecord | None = None
    log_text: str = ""  # build log then run log
    error: str = ""  # why submission failed before a job record existed
    cancel_requested: bool = False
    notice: str = ""  # a note for the user that is not a failure, e.g. a cancel error


@dataclass(frozen=True)
class StepView:
    stage: Stage
    status: str  # DONE, CURRENT, TODO, FAILED, SKIPPED or CANCELLED


@dataclass(frozen=True)
class JobView:
    """What to draw: the same data for the widget and the text renderer."""

    job_id: str | None
    backend: str
    notebook: str
    stage: Stage
    steps: tuple[StepView, ...]
    progress: int  # steps completed, 0..progress_max
    progress_max: int
    outcome: str  # "active", "succeeded", "failed" or "cancelled"
    status: str  # the job state's value, "checking", or "not submitted"
    elapsed: str
    reason: str  # failure or cancellation reason ("" while all is well)
    exit_code: int | None
    log_tail: tuple[str, ...]
    hidden_log_lines: int
    can_cancel: bool
    notice: str = ""

    @property
    def terminal(self) -> bool:
        return self.outcome != "active"

    @property
    def title(self) -> str:
        who = f"job {self.job_id}" if self.job_id else "new job"
        return f"{who} on {self.backend} ({self.notebook})"

    @property
    def bar_style(self) -> str:
        return _BAR_STYLE[self.outcome]


def format_elapsed(seconds: float) -> str:
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def tail_lines(
    text: str, limit: int = LOG_TAIL_LINES, width: int = LOG_LINE_CHARS
) -> tuple[tuple[str, ...], int]:
    """The last `limit` lines of a log as a terminal would show them, and how many were hidden.

    Colour codes are removed, and of a line rewritten with carriage returns (pip's progress
    bars) only the last version is kept.
    """
    # split on "\n" only: str.splitlines would also split at the carriage returns
    lines = [_ANSI.sub("", line.rstrip("\r")).rsplit("\r", 1)[-1] for line in text.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    hidden = max(0, len(lines) - limit)
    kept = lines[hidden:] if limit > 0 else []
    return tuple(line if len(line) <= width else line[: width - 1] + "…" for line in kept), hidden


def _failed_stage(record: JobRecord) -> Stage:
    """The step the job was in when it ended: the last non-terminal state of its history
    (running, whatever the polls saw, if the job has an exit code)."""
    if record.exit_code is not None:
        return Stage.RUNNING
    for step in reversed(record.history):
        if not step.state.terminal:
            return stage_for(step.state)
    return Stage.CHECKING


def _steps(
    current: Stage, outcome: str, stopped_at: Stage | None, visited: frozenset[Stage] | None
) -> tuple[StepView, ...]:
    """Each step's status. A step the job passed without entering (a backend that builds
    nothing goes from checking to queued) is shown skipped rather than done."""

    def passed(stage: Stage) -> str:
        # Only the build can really be skipped; queued/running may just fall between polls.
        skipped = stage is Stage.BUILDING and visited is not None and stage not in visited
        return SKIPPED if skipped else DONE

    steps = []
    for stage in STAGES:
        if outcome == "active":
            if stage is current:
                status = CURRENT
            else:
                status = passed(stage) if stage.position < current.position else TODO
        elif outcome == "succeeded":
            status = DONE if stage is Stage.FINISHED else passed(stage)
        else:
            end = FAILED if outcome == "failed" else CANCELLED
            assert stopped_at is not None
            if stage is Stage.FINISHED or stage is stopped_at:
                status = end
            else:
                status = passed(stage) if stage.position < stopped_at.position else SKIPPED
        steps.append(StepView(stage, status))
    return tuple(steps)


def job_view(snapshot: JobSnapshot, tail: int = LOG_TAIL_LINES) -> JobView:
    """The state machine: a snapshot of the job -> what the display shows."""
    record = snapshot.record
    log_tail, hidden = tail_lines(snapshot.log_text, tail)
    if record is None and snapshot.error:
        # Refused before any record existed (bad parameter, findings, unknown backend...).
        return JobView(
            job_id=None,
            backend=snapshot.backend,
            notebook=snapshot.notebook,
            stage=Stage.FINISHED,
            steps=_steps(Stage.FINISHED, "failed", Stage.CHECKING, None),
            progress=0,
            progress_max=len(STAGES),
            outcome="failed",
            status="not submitted",
            elapsed=format_elapsed(snapshot.now - snapshot.started),
            reason=snapshot.error,
            exit_code=None,
            log_tail=log_tail,
            hidden_log_lines=hidden,
            can_cancel=False,
            notice=snapshot.notice,
        )
    state = record.state if record is not None else None
    stage = stage_for(state)
    outcome = state.value if state is not None and state.terminal else "active"
    stopped_at = (
        _failed_stage(record)
        if record is not None
        and state is not None
        and (state in (JobState.FAILED, JobState.CANCELLED))
        else None
    )
    visited = (
        frozenset(stage_for(step.state) for step in record.history)
        if record is not None and record.history
        else None
    )
    if record is None:
        elapsed = snapshot.now - snapshot.started
    else:
        end = record.updated if record.state.terminal else snapshot.now
        elapsed = end - record.created
    progress = (
        len(STAGES)
        if outcome == "succeeded"
        else (stopped_at.position if stopped_at is not None else stage.position)
    )
    cancelling = state is JobState.CANCELLING or snapshot.cancel_requested
    reason = ""
    if record is not None and (outcome in ("failed", "cancelled") or cancelling):
        reason = record.reason
    return JobView(
        job_id=record.id if record is not None else None,
        backend=record.backend if record is not None else snapshot.backend,
        notebook=snapshot.notebook,
        stage=stage,
        steps=_steps(stage, outcome, stopped_at, visited),
        progress=progress,
        progress_max=len(STAGES),
        outcome=outcome,
        status="checking" if state is None else state.value,
        elapsed=format_elapsed(elapsed),
        reason=reason,
        exit_code=record.exit_code if record is not None and outcome != "active" else None,
        log_tail=log_tail,
        hidden_log_lines=hidden,
        can_cancel=outcome == "active" and not cancelling,
        notice=snapshot.notice,
    )


# --------------------------------------------------------------------------- text


def summary_line(view: JobView) -> str:
    """One line for the end of a cell: `job <id>: succeeded`, or the failure and its reason."""
    who = f"job {view.job_id}" if view.job_id else f"{view.notebook}"
    line = f"{who}: {view.status}"
    if view.exit_code not in (None, 0) and f"exit code {view.exit_code}" not in view.reason:
        line += f" (exit code {view.exit_code})"
    if view.reason and view.outcome in ("failed", "cancelled"):
        line += f": {view.reason}"
    return line


def steps_text(view: JobView) -> str:
    return "  ".join(f"[{_TEXT_MARK[s.status]}] {s.stage.value}" for s in view.steps)


def render_text(view: JobView) -> str:
    """The whole display as plain text, for terminals and non-widget frontends."""
    lines = [view.title, f"stage:   {steps_text(view)}"]
    lines.append(f"status:  {view.status}   elapsed {view.elapsed}")
    if view.reason:
        lines.append(f"reason:  {view.reason}")
    if view.exit_code is not None:
        lines.append(f"exit code: {view.exit_code}")
    if view.notice:
        lines.append(f"note:    {view.notice}")
    if view.log_tail:
        hidden = f", {view.hidden_log_lines} earlier lines hidden" if view.hidden_log_lines else ""
        lines.append(f"--- log (last {len(view.log_tail)} lines{hidden}) ---")
        lines.extend(view.log_tail)
    return "\n".join(lines)


# --------------------------------------------------------------------------- html


def steps_html(view: JobView) -> str:
    parts = []
    for step in view.steps:
        weight = "bold" if step.status in (CURRENT, FAILED) else "normal"
        parts.append(
            f'<span class="cloudpromote-step cloudpromote-step-{step.status}" '
            f'style="color:{_HTML_COLOR[step.status]};font-weight:{weight}">'
            f"{_HTML_MARK[step.status]} {step.stage.value}</span>"
        )
    return '<span style="color:var(--jp-ui-font-color3, #9e9e9e)"> → </span>'.join(parts)


def header_html(view: JobView) -> str:
    who = f"job <code>{html.escape(view.job_id)}</code>" if view.job_id else "new job"
    return (
        f"<b>{who}</b> on <b>{html.escape(view.backend)}</b> "
        f'<span style="{_MUTED}">({html.escape(view.notebook)})</span>'
    )


def reason_html(view: JobView) -> str:
    parts = []
    if view.reason:
        color = _HTML_COLOR[FAILED] if view.outcome == "failed" else _HTML_COLOR[CANCELLED]
        parts.append(f'<div style="color:{color}">{html.escape(view.reason)}</div>')
    if view.exit_code is not None and view.exit_code != 0:
        parts.append(f"<div>exit code {view.exit_code}</div>")
    if view.notice:
        parts.append(f'<div style="{_MUTED}">{html.escape(view.notice)}</div>')
    return "".join(parts)


def log_html(view: JobView) -> str:
    if not view.log_tail:
        return ""
    hidden = (
        f'<div style="{_MUTED}">… {view.hidden_log_lines} earlier lines '
        f"(<code>%cloud_logs {html.escape(view.job_id or '')}</code>)</div>"
        if view.hidden_log_lines
        else ""
    )
    body = html.escape("\n".join(view.log_tail))
    return (
        f'{hidden}<pre style="max-height:22em;overflow:auto;margin:0;font-size:85%;'
        f'background:var(--jp-layout-color2,#f5f5f5);padding:4px">{body}</pre>'
    )


class StatusWidget:
    """The live display: header, step indicator with progress bar, elapsed time, reason,
    log tail, Cancel button. Built from ipywidgets; `update` only sets traits, which ipykernel
    sends to the browser from any thread."""

    def __init__(self, on_cancel: Callable[[], None]) -> None:
        import ipywidgets as w

        self._on_cancel = on_cancel
        self.header = w.HTML()
        self.steps = w.HTML()
        self.bar = w.IntProgress(min=0, max=len(STAGES), value=0, bar_style="info")
        self.elapsed = w.Label()
        self.reason = w.HTML()
        self.logs = w.HTML()
        self.cancel_button = w.Button(description="Cancel", icon="stop", button_style="warning")
        self.cancel_button.on_click(self._clicked)
        self.box = w.VBox(
            [
                self.header,
                self.steps,
                w.HBox([self.bar, self.elapsed, self.cancel_button]),
                self.reason,
                self.logs,
            ]
        )
        self.view: JobView | None = None

    def _clicked(self, _button: Any) -> None:
        self.cancel_button.disabled = True
        self.cancel_button.description = "Cancelling…"
        self._on_cancel()

    def update(self, view: JobView) -> None:
        self.view = view
        self.header.value = header_html(view)
        self.steps.value = steps_html(view)
        self.bar.max = view.progress_max
        self.bar.value = view.progress
        self.bar.bar_style = view.bar_style
        self.elapsed.value = f"{view.status} · {view.elapsed}"
        self.reason.value = reason_html(view)
        self.logs.value = log_html(view)
        self.cancel_button.disabled = not view.can_cancel
        if view.terminal:
            self.cancel_button.layout.display = "none"
        elif not view.can_cancel:
            self.cancel_button.description = "Cancelling…"

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = self.box._repr_mimebundle_(**kwargs)
        if isinstance(bundle, dict) and self.view is not None:
            # What viewers without widget support (nbconvert, GitHub) show instead.
            bundle["text/plain"] = render_text(self.view)
        return bundle


# --------------------------------------------------------------------------- job table


class JobTable:
    """Recent jobs; shown as HTML by rich frontends and as text elsewhere."""

    def __init__(self, records: Sequence[JobRecord], now: float | None = None) -> None:
        self.records = list(records)
        self.now = now

    def _duration(self, record: JobRecord) -> str:
        end = record.updated if record.state.terminal else (self.now or time.time())
        return format_elapsed(end - record.created)

    def rows(self) -> list[tuple[str, str, str, str, str, str, str]]:
        return [
            (
                r.id,
                r.state.value,
                r.backend,
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.created)),
                self._duration(r),
                Path(r.notebook).name,
                r.reason if r.state in (JobState.FAILED, JobState.CANCELLED) else "",
            )
            for r in self.records
        ]

    def text(self) -> str:
        if not self.records:
            return "No jobs yet: run %cloud_submit in a notebook."
        lines = []
        for job_id, state, backend, created, took, notebook, reason in self.rows():
            line = f"{job_id}  {state:<10} {backend:<12} {created}  {took:>9}  {notebook}"
            lines.append(f"{line}  {reason[:80]}".rstrip())
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.text()

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(self.text())

    def _repr_html_(self) -> str:
        if not self.records:
            return "<p>No jobs yet: run <code>%cloud_submit</code> in a notebook.</p>"
        colors = {"succeeded": DONE, "failed": FAILED, "cancelled": CANCELLED}
        head = "".join(
            f"<th style='text-align:left'>{h}</th>"
            for h in ("job", "status", "backend", "created", "duration", "notebook", "reason")
        )
        body = []
        for row in self.rows():
            color = _HTML_COLOR[colors.get(row[1], CURRENT)]
            cells = [f"<td><code>{html.escape(row[0])}</code></td>"]
            cells.append(f"<td style='color:{color}'>{html.escape(row[1])}</td>")
            cells += [f"<td style='text-align:left'>{html.escape(v)}</td>" for v in row[2:]]
            body.append(f"<tr>{''.join(cells)}</tr>")
        return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


# --------------------------------------------------------------------------- monitor

Listener = Callable[[JobView], None]


class JobMonitor:
    """Submits through JobManager and follows the job, telling listeners each new JobView.

    `run()` works in the caller's thread (for --wait); `start()` does the same in a daemon
    thread and returns at once. Polling stops when the job reaches a terminal state.
    """

    def __init__(
        self,
        manager: JobManager,
        *,
        backend: str,
        notebook: str,
        interval: float = POLL_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.manager = manager
        self.backend = backend
        self.notebook = notebook
        self.interval = interval
        self.clock = clock
        self.started = clock()
        self.job_id: str | None = None
        self.record: JobRecord | None = None
        self.error = ""
        self.refusal: CloudPromoteError | None = None  # why submit() refused, if it did
        self.notice = ""
        self.view: JobView | None = None
        self.thread: threading.Thread | None = None
        self._listeners: list[Listener] = []
        self._progress_lines: list[str] = []
        self._cancel_requested = False
        self._stop = threading.Event()
        self._lock = threading.RLock()

    # --- listeners ---------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _log_text(self) -> str:
        if self.job_id is None:
            return "".join(f"{line}\n" for line in self._progress_lines)
        return self.manager.build_logs(self.job_id) + self.manager.run_logs(self.job_id)

    def publish(self) -> JobView:
        with self._lock:
            snapshot = JobSnapshot(
                backend=self.backend,
                notebook=self.notebook,
                started=self.started,
                now=self.clock(),
                record=self.record,
                log_text=self._log_text(),
                error=self.error,
                cancel_requested=self._cancel_requested,
                notice=self.notice,
            )
            view = job_view(snapshot)
            self.view = view
        for listener in list(self._listeners):
            try:
                listener(view)
            except Exception as exc:  # a broken display must not stop the polling
                self.notice = f"display error: {type(exc).__name__}: {exc}"
        return view

    # --- the work ----------------------------------------------------------------------

    def _progress(self, message: str) -> None:
        with self._lock:
            if self.job_id is None:
                self._progress_lines.append(message)
            else:
                self.record = self.manager.get(self.job_id)
        self.publish()

    def submit(self, notebook: str | Path, options: PromotionOptions) -> JobRecord | None:
        """Promote and submit; a refusal becomes the view's reason instead of an exception."""
        self.publish()
        try:
            record, launch = self.manager.start(notebook, options, self._progress)
        except CloudPromoteError as exc:
            with self._lock:
                self.error, self.refusal = str(exc), exc
            self.publish()
            return None
        with self._lock:
            self.job_id, self.record = record.id, record
            cancel_first = self._cancel_requested
        self.publish()
        if cancel_first:  # clicked while checking: stop before the build
            record = self.manager.cancel(record.id)
        record = launch()
        with self._lock:
            self.record = record
        self.publish()
        return record

    def attach(self, job_id: str) -> JobRecord:
        """Follow an existing job instead of submitting one."""
        record = self.manager.refresh(job_id)
        with self._lock:
            self.job_id, self.record = record.id, record
            self.backend = record.backend
            self.started = record.created
        return record

    def watch(self) -> JobView:
        """Refresh until the job ends (or stop() is called); returns the last view."""
        while True:
            if self.job_id is None:
                return self.publish()
            try:
                record = self.manager.refresh(self.job_id)
            except CloudPromoteError as exc:
                self.notice = f"stopped watching: {exc}"
                return self.publish()
            with self._lock:
                self.record = record
            view = self.publish()
            if view.terminal or self._stop.wait(self.interval):
                return view

    def run(
        self, notebook: str | Path | None = None, options: PromotionOptions | None = None
    ) -> JobView:
        try:
            if notebook is not None:
                assert options is not None
                if self.submit(notebook, options) is None:
                    assert self.view is not None
                    return self.view
            return self.watch()
        except Exception as exc:  # in a thread nobody would see it: show it in the display
            self.notice = f"internal error: {type(exc).__name__}: {exc}"
            return self.publish()

    def start(
        self, notebook: str | Path | None = None, options: PromotionOptions | None = None
    ) -> threading.Thread:
        self.thread = threading.Thread(
            target=self.run, args=(notebook, options), name="cloudpromote-monitor", daemon=True
        )
        self.thread.start()
        return self.thread

    def stop(self) -> None:
        self._stop.set()

    def cancel(self) -> None:
        """The Cancel button: cancel now if the job exists, else as soon as it is created."""
        with self._lock:
            self._cancel_requested = True
            job_id = self.job_id
        if job_id is not None:
            try:
                record = self.manager.cancel(job_id)
            except CloudPromoteError as exc:
                self.notice = f"cancel failed: {exc}"
            else:
                with self._lock:
                    self.record = record
        self.publish()


class TextReporter:
    """A listener printing one line per change of status: the text fallback of the widget."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self.write = write
        self.last: tuple[str | None, str] | None = None

    def __call__(self, view: JobView) -> None:
        key = (view.job_id, view.status)
        if key == self.last or view.terminal:
            return  # the final line is written once by the caller, with the reason
        self.last = key
        who = f"job {view.job_id}" if view.job_id else view.notebook
        self.write(f"{who}: {view.status} ({view.elapsed})")
