"""The %cloud_submit status display as data: the stage machine and both renderers."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from jupyter_cloudpromote.models import JobRecord, JobState, Transition
from jupyter_cloudpromote.widget import (
    CANCELLED,
    CURRENT,
    DONE,
    FAILED,
    SKIPPED,
    STAGES,
    TODO,
    JobSnapshot,
    JobTable,
    Stage,
    StatusWidget,
    TextReporter,
    format_elapsed,
    job_view,
    render_text,
    stage_for,
    steps_html,
    summary_line,
    tail_lines,
)

CREATED = 1_700_000_000.0

# The path a docker-backed job takes to each state, as its history records it.
PATHS = {
    JobState.PENDING: [JobState.PENDING],
    JobState.BUILDING: [JobState.PENDING, JobState.BUILDING],
    JobState.QUEUED: [JobState.PENDING, JobState.BUILDING, JobState.QUEUED],
    JobState.RUNNING: [JobState.PENDING, JobState.BUILDING, JobState.QUEUED, JobState.RUNNING],
    JobState.CANCELLING: [
        JobState.PENDING,
        JobState.BUILDING,
        JobState.QUEUED,
        JobState.RUNNING,
        JobState.CANCELLING,
    ],
    JobState.SUCCEEDED: [
        JobState.PENDING,
        JobState.BUILDING,
        JobState.QUEUED,
        JobState.RUNNING,
        JobState.SUCCEEDED,
    ],
    JobState.FAILED: [
        JobState.PENDING,
        JobState.BUILDING,
        JobState.QUEUED,
        JobState.RUNNING,
        JobState.FAILED,
    ],
    JobState.CANCELLED: [
        JobState.PENDING,
        JobState.BUILDING,
        JobState.QUEUED,
        JobState.RUNNING,
        JobState.CANCELLING,
        JobState.CANCELLED,
    ],
}

EXPECTED_STAGE = {
    JobState.PENDING: Stage.CHECKING,
    JobState.BUILDING: Stage.BUILDING,
    JobState.QUEUED: Stage.QUEUED,
    JobState.RUNNING: Stage.RUNNING,
    JobState.CANCELLING: Stage.RUNNING,
    JobState.SUCCEEDED: Stage.FINISHED,
    JobState.FAILED: Stage.FINISHED,
    JobState.CANCELLED: Stage.FINISHED,
}

# Step marks for each state, checking..finished; x done, > current, ' ' todo, ! failed, / cancelled.
EXPECTED_STEPS = {
    JobState.PENDING: [CURRENT, TODO, TODO, TODO, TODO],
    JobState.BUILDING: [DONE, CURRENT, TODO, TODO, TODO],
    JobState.QUEUED: [DONE, DONE, CURRENT, TODO, TODO],
    JobState.RUNNING: [DONE, DONE, DONE, CURRENT, TODO],
    JobState.CANCELLING: [DONE, DONE, DONE, CURRENT, TODO],
    JobState.SUCCEEDED: [DONE, DONE, DONE, DONE, DONE],
    JobState.FAILED: [DONE, DONE, DONE, FAILED, FAILED],
    JobState.CANCELLED: [DONE, DONE, DONE, CANCELLED, CANCELLED],
}


def record_for(
    state: JobState,
    *,
    path: list[JobState] | None = None,
    reason: str = "",
    exit_code: int | None = None,
) -> JobRecord:
    steps = path or PATHS[state]
    history = [Transition(CREATED + i, s, f"to {s.value}") for i, s in enumerate(steps)]
    return JobRecord(
        id="0123abcd4567",
        notebook="/home/u/work/report.ipynb",
        backend="gpu-box",
        backend_kind="docker",
        state=state,
        created=CREATED,
        updated=CREATED + 75 if state.terminal else CREATED + len(steps),
        job_dir="/tmp/nowhere",
        reason=reason,
        exit_code=exit_code,
        history=history,
    )


def snapshot(record: JobRecord | None, **extra: object) -> JobSnapshot:
    values: dict[str, object] = {
        "backend": "gpu-box",
        "notebook": "report.ipynb",
        "started": CREATED - 3,
        "now": CREATED + 42,
        "record": record,
    }
    values.update(extra)
    return JobSnapshot(**values)  # type: ignore[arg-type]


def test_every_job_state_maps_to_a_stage_and_no_record_means_checking() -> None:
    assert stage_for(None) is Stage.CHECKING
    for state in JobState:
        assert stage_for(state) is EXPECTED_STAGE[state]
    assert [s.value for s in STAGES] == ["checking", "building", "queued", "running", "finished"]


@pytest.mark.parametrize("state", list(JobState), ids=lambda s: s.value)
def test_each_state_renders_its_stage_in_the_view_the_text_and_the_widget(
    state: JobState,
) -> None:
    failed = state is JobState.FAILED
    record = record_for(
        state,
        reason="exit code 3; last lines: boom"
        if failed
        else ("cancelled by user" if state in (JobState.CANCELLED, JobState.CANCELLING) else ""),
        exit_code=3 if failed else (0 if state is JobState.SUCCEEDED else None),
    )
    view = job_view(snapshot(record, log_text="line one\nline two\n"))

    assert view.stage is EXPECTED_STAGE[state]
    assert [s.status for s in view.steps] == EXPECTED_STEPS[state]
    assert view.status == state.value
    assert view.terminal is state.terminal
    assert view.can_cancel is (not state.terminal and state is not JobState.CANCELLING)
    assert view.elapsed == ("1m15s" if state.terminal else "42s")

    text = render_text(view)
    assert "job 0123abcd4567 on gpu-box (report.ipynb)" in text
    assert f"status:  {state.value}" in text
    marks = {DONE: "x", CURRENT: ">", TODO: " ", FAILED: "!", CANCELLED: "/"}
    expected_line = "  ".join(
        f"[{marks[m]}] {stage.value}" for m, stage in zip(EXPECTED_STEPS[state], STAGES)
    )
    assert f"stage:   {expected_line}" in text
    assert "line two" in text

    widget = StatusWidget(on_cancel=lambda: None)
    widget.update(view)
    assert "0123abcd4567" in widget.header.value and "gpu-box" in widget.header.value
    assert widget.bar.max == len(STAGES)
    assert widget.bar.value == view.progress
    assert widget.bar.bar_style == {
        JobState.SUCCEEDED: "success",
        JobState.FAILED: "danger",
        JobState.CANCELLED: "warning",
    }.get(state, "info")
    for step, status in zip(STAGES, EXPECTED_STEPS[state]):
        assert f'cloudpromote-step-{status}" style' in widget.steps.value
        assert step.value in widget.steps.value
    assert state.value in widget.elapsed.value
    assert "line two" in widget.logs.value
    assert widget.cancel_button.disabled is not view.can_cancel
    assert (widget.cancel_button.layout.display == "none") is state.terminal
    if failed:
        assert "boom" in widget.reason.value and "exit code 3" in widget.reason.value


def test_progress_counts_steps_done_and_fills_on_success() -> None:
    progress = {s: job_view(snapshot(record_for(s))).progress for s in JobState}
    assert progress[JobState.PENDING] == 0
    assert progress[JobState.BUILDING] == 1
    assert progress[JobState.QUEUED] == 2
    assert progress[JobState.RUNNING] == 3
    assert progress[JobState.SUCCEEDED] == len(STAGES)
    assert progress[JobState.FAILED] == 3  # stopped while running


def test_before_a_record_exists_the_view_is_checking_and_cancellable() -> None:
    view = job_view(snapshot(None, log_text="checking report.ipynb\n"))
    assert view.job_id is None and view.stage is Stage.CHECKING and view.status == "checking"
    assert view.can_cancel and not view.terminal
    assert view.elapsed == "45s"  # measured from when the submission started
    assert render_text(view).startswith("new job on gpu-box (report.ipynb)")


def test_a_build_failure_marks_the_building_step_and_skips_the_rest() -> None:
    record = record_for(
        JobState.FAILED,
        path=[JobState.PENDING, JobState.BUILDING, JobState.FAILED],
        reason="build failed at step 4: pip install nosuchpkg",
    )
    view = job_view(snapshot(record))
    assert [s.status for s in view.steps] == [DONE, FAILED, SKIPPED, SKIPPED, FAILED]
    assert view.progress == 1
    assert summary_line(view) == (
        "job 0123abcd4567: failed: build failed at step 4: pip install nosuchpkg"
    )
    assert "reason:  build failed at step 4" in render_text(view)


def test_a_backend_without_a_build_shows_building_as_skipped() -> None:
    # The polls never saw "running" (a short job): it still ran, so running shows done.
    record = record_for(
        JobState.SUCCEEDED, path=[JobState.PENDING, JobState.QUEUED, JobState.SUCCEEDED]
    )
    assert [s.status for s in job_view(snapshot(record)).steps] == [DONE, SKIPPED, DONE, DONE, DONE]
    running = record_for(
        JobState.RUNNING, path=[JobState.PENDING, JobState.QUEUED, JobState.RUNNING]
    )
    assert [s.status for s in job_view(snapshot(running)).steps] == [
        DONE,
        SKIPPED,
        DONE,
        CURRENT,
        TODO,
    ]


def test_a_job_with_an_exit_code_failed_while_running_even_if_no_poll_saw_it_run() -> None:
    record = record_for(
        JobState.FAILED,
        path=[JobState.PENDING, JobState.QUEUED, JobState.FAILED],
        reason="exited with code 1",
        exit_code=1,
    )
    assert [s.status for s in job_view(snapshot(record)).steps] == [
        DONE,
        SKIPPED,
        DONE,
        FAILED,
        FAILED,
    ]
    never_ran = record_for(
        JobState.FAILED,
        path=[JobState.PENDING, JobState.QUEUED, JobState.FAILED],
        reason="the backend rejected the job",
    )
    assert [s.status for s in job_view(snapshot(never_ran)).steps] == [
        DONE,
        SKIPPED,
        FAILED,
        SKIPPED,
        FAILED,
    ]


def test_the_widget_text_fallback_is_the_text_display_not_a_widget_repr() -> None:
    widget = StatusWidget(on_cancel=lambda: None)
    view = job_view(snapshot(record_for(JobState.RUNNING)))
    widget.update(view)
    bundle = widget._repr_mimebundle_()
    assert bundle["text/plain"] == render_text(view)
    assert "application/vnd.jupyter.widget-view+json" in bundle


def test_exit_code_and_reason_reach_the_summary_line_once() -> None:
    plain = job_view(snapshot(record_for(JobState.FAILED, reason="the job failed", exit_code=2)))
    assert summary_line(plain) == "job 0123abcd4567: failed (exit code 2): the job failed"
    assert "exit code: 2" in render_text(plain)
    said = job_view(snapshot(record_for(JobState.FAILED, reason="exit code 2: x", exit_code=2)))
    assert summary_line(said) == "job 0123abcd4567: failed: exit code 2: x"
    ok = job_view(snapshot(record_for(JobState.SUCCEEDED, exit_code=0)))
    assert summary_line(ok) == "job 0123abcd4567: succeeded"
    assert "reason" not in render_text(ok)


def test_a_refused_submission_shows_the_reason_with_no_job_id() -> None:
    view = job_view(snapshot(None, error="Unknown parameter 'nosuch'. Use one of: size."))
    assert view.terminal and view.outcome == "failed" and view.status == "not submitted"
    assert [s.status for s in view.steps] == [FAILED, SKIPPED, SKIPPED, SKIPPED, FAILED]
    assert not view.can_cancel
    assert summary_line(view) == (
        "report.ipynb: not submitted: Unknown parameter 'nosuch'. Use one of: size."
    )
    assert "Use one of: size." in render_text(view)


def test_cancel_requested_disables_cancel_and_shows_the_reason() -> None:
    record = record_for(JobState.RUNNING, reason="")
    view = job_view(snapshot(record, cancel_requested=True))
    assert not view.can_cancel and not view.terminal
    widget = StatusWidget(on_cancel=lambda: None)
    widget.update(view)
    assert widget.cancel_button.disabled and widget.cancel_button.description == "Cancelling…"


def test_log_tail_keeps_the_last_lines_and_counts_the_hidden_ones() -> None:
    text = "".join(f"line {i}\n" for i in range(1, 51)) + "\n\n"
    lines, hidden = tail_lines(text, 20)
    assert lines == tuple(f"line {i}" for i in range(31, 51)) and hidden == 30
    view = job_view(snapshot(record_for(JobState.RUNNING), log_text=text))
    assert len(view.log_tail) == 20 and view.hidden_log_lines == 30
    rendered = render_text(view)
    assert "last 20 lines, 30 earlier lines hidden" in rendered
    assert "line 30\n" not in rendered and rendered.endswith("line 50")
    widget = StatusWidget(on_cancel=lambda: None)
    widget.update(view)
    assert "30 earlier lines" in widget.logs.value and "line 50" in widget.logs.value
    assert "line 30\n" not in widget.logs.value


def test_log_tail_cuts_long_lines_strips_colours_and_keeps_the_last_progress_redraw() -> None:
    text = "x" * 1000 + "\n\x1b[31mred\x1b[0m\n10%\r50%\r100% done\n"
    lines, hidden = tail_lines(text, 20, width=100)
    assert hidden == 0
    assert lines[0] == "x" * 99 + "…"
    assert lines[1:] == ("red", "100% done")


def test_log_html_escapes_what_the_job_printed() -> None:
    view = job_view(snapshot(record_for(JobState.RUNNING), log_text="<script>alert(1)</script>\n"))
    widget = StatusWidget(on_cancel=lambda: None)
    widget.update(view)
    assert "<script>" not in widget.logs.value and "&lt;script&gt;" in widget.logs.value


def test_the_cancel_button_calls_the_cancel_callback_once() -> None:
    calls: list[str] = []
    widget = StatusWidget(on_cancel=lambda: calls.append("cancel"))
    widget.update(job_view(snapshot(record_for(JobState.RUNNING))))
    assert not widget.cancel_button.disabled
    widget.cancel_button.click()
    assert calls == ["cancel"]
    assert widget.cancel_button.disabled  # no second request while the first is under way


def test_text_reporter_writes_one_line_per_status_change_and_leaves_the_end_to_the_caller() -> None:
    written: list[str] = []
    reporter = TextReporter(written.append)
    for state in (
        None,
        JobState.PENDING,
        JobState.QUEUED,
        JobState.QUEUED,
        JobState.RUNNING,
        JobState.SUCCEEDED,
    ):
        record = record_for(state) if state is not None else None
        reporter(job_view(snapshot(record)))
    assert written == [
        "report.ipynb: checking (45s)",
        "job 0123abcd4567: pending (42s)",
        "job 0123abcd4567: queued (42s)",
        "job 0123abcd4567: running (42s)",
    ]


def test_steps_html_marks_each_step() -> None:
    html = steps_html(job_view(snapshot(record_for(JobState.QUEUED))))
    assert html.count("cloudpromote-step-done") == 2
    assert html.count("cloudpromote-step-current") == 1
    assert html.count("cloudpromote-step-todo") == 2


def test_elapsed_format() -> None:
    assert [format_elapsed(s) for s in (0, 9.9, 60, 75, 3600, 3725)] == [
        "0s",
        "9s",
        "1m00s",
        "1m15s",
        "1h00m00s",
        "1h02m05s",
    ]


def test_job_table_text_and_html() -> None:
    records = [
        record_for(JobState.FAILED, reason="exit code 1: <oops>", exit_code=1),
        record_for(JobState.RUNNING),
    ]
    table = JobTable(records, now=CREATED + 10)
    text = repr(table)
    assert text.count("0123abcd4567") == 2 and "failed" in text and "report.ipynb" in text
    assert "1m15s" in text and "10s" in text
    html = table._repr_html_()
    assert html.count("<tr>") == 3 and "&lt;oops&gt;" in html and "<oops>" not in html
    assert "No jobs yet" in repr(JobTable([])) and "No jobs yet" in JobTable([])._repr_html_()


def test_monitor_cancel_from_the_button_cancels_the_job_in_the_store(
    isolated_jupyter: Path,
) -> None:
    from jupyter_cloudpromote.config import CloudPromote
    from jupyter_cloudpromote.jobs import JobManager
    from jupyter_cloudpromote.widget import JobMonitor

    manager = JobManager(CloudPromote())
    now = time.time()
    record = manager.store.create(
        JobRecord(
            id="feedc0de0001",
            notebook="/x/report.ipynb",
            backend="local",
            backend_kind="local",
            state=JobState.PENDING,
            created=now,
            updated=now,
            job_dir=str(isolated_jupyter / "job"),
            spec={},
        )
    )
    monitor = JobMonitor(manager, backend="local", notebook="report.ipynb", interval=0.01)
    monitor.attach(record.id)
    widget = StatusWidget(on_cancel=monitor.cancel)
    monitor.add_listener(widget.update)
    monitor.publish()
    assert not widget.cancel_button.disabled
    widget.cancel_button.click()
    assert manager.get(record.id).state is JobState.CANCELLED
    final = monitor.watch()  # ends at once: the job is terminal
    assert final.outcome == "cancelled" and "cancelled by user" in final.reason
    assert widget.cancel_button.layout.display == "none"
    assert "[/] finished" in render_text(final)
