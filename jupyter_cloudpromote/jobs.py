"""The job lifecycle, in one place: create, package, build, submit, refresh, cancel, rerun.

Backends only translate verbs; this module owns the states and their order, records every
transition with a reason, and makes sure a failure anywhere leaves a `failed` record saying
why. The CLI, the server extension and the magic all drive jobs through `JobManager`.
"""

from __future__ import annotations

import builtins
import dataclasses
import json
import os
import shutil
import socket
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .backends.base import Backend, SubmitRequest
from .backends.registry import create_backend
from .config import CloudPromote, load_settings
from .errors import BackendError, CloudPromoteError, FindingsError
from .models import (
    BuildContext,
    JobRecord,
    JobState,
    Promotion,
    PromotionOptions,
    Resources,
)
from .pipeline import promote
from .procs import process_alive, process_start_time
from .store import JobStore

Progress = Callable[[str], None]
Launch = Callable[[], JobRecord]
CONTEXT_META = "context.json"
SUBMIT_ENV = "submit-env.json"  # env values for rerun; 0600, never copied into images


def _quiet(_message: str) -> None:
    pass


def _new_job_id() -> str:
    return uuid.uuid4().hex[:12]


def _keep_env(job_dir: Path, env: dict[str, str]) -> None:
    """Env values for the job and for rerun, readable by the owner only (they may be secrets)."""
    if env:
        env_file = job_dir / SUBMIT_ENV
        env_file.touch(mode=0o600)
        env_file.write_text(json.dumps(env, sort_keys=True), encoding="utf-8")


def owner_stamp(role: str = "process") -> dict[str, Any]:
    """Who prepares a job until a backend has it: pid plus start time (pid reuse), host."""
    pid = os.getpid()
    return {
        "pid": pid,
        "host": socket.gethostname(),
        "start_time": process_start_time(pid),
        "role": role,
    }


def interrupted_reason(owner: dict[str, Any], state: JobState) -> str:
    pid = owner.get("pid")
    if owner.get("role") == "server":
        who = f"interrupted by server restart: the server preparing it (pid {pid}) stopped"
    else:
        who = f"interrupted: the process preparing it (pid {pid}) stopped"
    return f"{who} while the job was {state.value}; submit it again"


def owner_gone(owner: dict[str, Any], *, at_startup: bool = False) -> bool:
    """True when the process that was preparing a job (on this host) can no longer be.

    At a server's startup its own pid in a record means an earlier process with that pid.
    """
    pid = owner.get("pid")
    if owner.get("host") != socket.gethostname() or not isinstance(pid, int):
        return False  # another machine's job: its own process answers for it
    if pid == os.getpid():
        return at_startup
    return not process_alive(pid, owner.get("start_time"))


class JobManager:
    """Drives jobs through the pipeline and the backends, recording everything in the store."""

    def __init__(
        self,
        settings: CloudPromote | None = None,
        store: JobStore | None = None,
        *,
        owner_role: str = "process",
    ):
        self.settings = settings or load_settings()
        self.store = store or JobStore(self.settings.store_path)
        self.owner_role = owner_role  # "server" makes interruptions read as server restarts

    # --- backends -----------------------------------------------------------------------

    def backend(self, name: str | None, overrides: dict[str, str] | None = None) -> Backend:
        profile, kind, options = self.settings.resolve_profile(name, overrides)
        defaults = {
            "venv_cache_dir": str(self.settings.venv_cache_dir),
            "pip_index_url": self.settings.pip_index_url,
            "ca_bundle": self.settings.extra_ca_bundle,
        }
        backend = create_backend(kind, profile, {**defaults, **options})
        if (overrides or {}).get("input") and "input" not in backend.features:
            raise BackendError(
                f"The {kind!r} backend takes no --input.",
                "Use --include for files beside the notebook, or a backend that stages "
                "inputs (aws-batch, sagemaker).",
            )
        return backend

    def _backend_for(self, record: JobRecord) -> Backend:
        overrides = record.spec.get("options") or {}
        try:
            return self.backend(record.backend, overrides)
        except CloudPromoteError:
            # The profile was renamed or removed since: fall back to the bare kind.
            return create_backend(record.backend_kind, record.backend, overrides)

    # --- preview and submit -------------------------------------------------------------

    def preview(self, notebook: str | Path, options: PromotionOptions) -> Promotion:
        backend = self.backend(options.backend, options.options)  # unknown backend: fail early
        promotion = promote(notebook, options, self.settings)
        estimate = backend.cost_estimate(options.resources)
        if estimate is not None:
            promotion.cost_estimate = {**estimate.to_dict(), "summary": estimate.summary()}
        return promotion

    def submit(
        self, notebook: str | Path, options: PromotionOptions, progress: Progress = _quiet
    ) -> JobRecord:
        """Validate, then create a job record and carry it as far as the backend's queue.

        Bad input (unreadable notebook, unknown backend or parameter, missing kernel) raises
        before any record exists; anything failing after that leaves a `failed` record.
        """
        _record, launch = self.start(notebook, options, progress)
        return launch()

    def start(
        self, notebook: str | Path, options: PromotionOptions, progress: Progress = _quiet
    ) -> tuple[JobRecord, Launch]:
        """The first half of submit: validate and create the pending record, no building.

        Returns the record and the call that packages, builds and submits it, so a server
        can answer as soon as the record exists and launch in the background.
        """
        backend = self.backend(options.backend, options.options)
        progress(f"checking {Path(notebook).name}")
        promotion = promote(notebook, options, self.settings)
        blocking = promotion.blocking_findings
        if blocking and not options.force:
            listed = "; ".join(
                f"{'cell ' + str(f.cell) + ': ' if f.cell is not None else ''}{f.message}"
                for f in blocking
            )
            raise FindingsError(
                f"Not submitted: the readiness check found {len(blocking)} error(s): {listed}.",
                "Fix them (see the preview), or submit with force (--force) to submit anyway.",
            )
        record = self._create(promotion, options, backend)
        progress(f"job {record.id} created on backend {record.backend!r}")

        def launch() -> JobRecord:
            return self._launch(record, backend, progress, promotion=promotion, env=options.env)

        return record, launch

    def _create(
        self, promotion: Promotion, options: PromotionOptions, backend: Backend
    ) -> JobRecord:
        job_id = _new_job_id()
        job_dir = self.settings.jobs_dir / job_id
        (job_dir / "logs").mkdir(parents=True, exist_ok=True)
        (job_dir / "outputs").mkdir(exist_ok=True)
        _keep_env(job_dir, options.env)
        spec: dict[str, Any] = {
            "options": dict(options.options),
            "parameters": promotion.parameters,
            "resources": options.resources.to_dict(),
            "include": list(options.include),
            "env_keys": sorted(options.env),  # names only: values may be credentials
            "base_image": promotion.base_image,
            "kernel": options.kernel,
            "force": options.force,
            "owner": owner_stamp(self.owner_role),
        }
        return self._record_new(
            job_id, str(promotion.notebook_path), backend.profile, backend.kind, spec, "submitted"
        )

    def _record_new(
        self, job_id: str, notebook: str, profile: str, kind: str, spec: dict[str, Any], reason: str
    ) -> JobRecord:
        """A pending job in the store, with its folder under jobs_dir."""
        now = time.time()
        record = JobRecord(
            id=job_id,
            notebook=notebook,
            backend=profile,
            backend_kind=kind,
            state=JobState.PENDING,
            created=now,
            updated=now,
            job_dir=str(self.settings.jobs_dir / job_id),
            spec=spec,
        )
        return self.store.create(record, reason=reason)

    def _package(self, record: JobRecord, promotion: Promotion) -> BuildContext:
        from .package import make_build_context

        context = make_build_context(
            dest=Path(record.job_dir) / "context",
            notebook_path=promotion.notebook_path,
            script=promotion.converted.script,
            requirements=promotion.resolved.lines(),
            local_modules=promotion.resolved.local_modules,
            include=record.spec.get("include", []),
            base_image=promotion.base_image,
            python_version=promotion.resolved.python_version,
            ca_bundle=self.settings.extra_ca_bundle or None,
            keep_ca_bundle=self.settings.keep_ca_bundle,
            pip_index_url=self.settings.pip_index_url,
            needs_ipython=promotion.converted.needs_ipython,
        )
        meta = dataclasses.asdict(context)
        meta["directory"] = str(context.directory)
        (Path(record.job_dir) / CONTEXT_META).write_text(
            json.dumps(meta, indent=1, sort_keys=True), encoding="utf-8"
        )
        return context

    def _launch(
        self,
        record: JobRecord,
        backend: Backend,
        progress: Progress,
        *,
        promotion: Promotion | None = None,
        context: BuildContext | None = None,
        env: dict[str, str] | None = None,
    ) -> JobRecord:
        job_dir = Path(record.job_dir)
        build_log = job_dir / "logs" / "build.log"

        def log_progress(line: str) -> None:
            with build_log.open("a", encoding="utf-8") as handle:
                handle.write(line.rstrip("\n") + "\n")
            progress(line)

        try:
            if context is None:
                assert promotion is not None
                log_progress("packaging: script, requirements, runner, Dockerfile")
                context = self._package(record, promotion)
            self.store.update(record.id, content_hash=context.content_hash)
            image = None
            if backend.needs_image:
                from .build import build_image

                self._move(record.id, JobState.BUILDING, f"building image {context.image_tag}")
                log_progress(f"building image {context.image_tag}")
                push_to = self.settings.registry if self.settings.push else None
                result = build_image(context, progress=log_progress, push_to=push_to or None)
                image = result.image
                log_progress(
                    f"image {image} built" if result.built else f"image {image} reused: no build"
                )
                self.store.update(record.id, image=image)
            current = self.store.get(record.id)
            if current.state.terminal or current.state is JobState.CANCELLING:
                self._move(record.id, JobState.CANCELLED, "cancelled by user before submission")
                return self.store.get(record.id)
            request = SubmitRequest(
                job_id=record.id,
                job_dir=job_dir,
                context=context,
                image=image,
                resources=Resources.from_dict(record.spec.get("resources")),
                parameters=dict(record.spec.get("parameters") or {}),
                env=dict(env or {}),
                options=backend.options,
            )
            log_progress(f"submitting to {backend.profile} ({backend.kind})")
            backend_id = backend.submit(request)
            updated, changed = self.store.transition(
                record.id,
                JobState.QUEUED,
                f"submitted to {backend.profile}",
                backend_id=backend_id,
            )
            if not changed and updated.state.terminal:
                # Cancelled while we were submitting: make the backend drop it too.
                backend.cancel(backend_id, job_dir)
            progress(f"job {record.id}: {updated.state.value}")
            return updated
        except CloudPromoteError as exc:
            return self._fail(record.id, str(exc), progress)
        except Exception as exc:  # a bug or an SDK error: still never leave the job stuck
            (job_dir / "logs" / "error.log").write_text(traceback.format_exc(), encoding="utf-8")
            return self._fail(record.id, f"internal error: {type(exc).__name__}: {exc}", progress)

    def _fail(self, job_id: str, reason: str, progress: Progress) -> JobRecord:
        record, _ = self.store.transition(job_id, JobState.FAILED, reason)
        progress(f"job {job_id}: failed: {reason}")
        return record

    def _move(self, job_id: str, state: JobState, reason: str) -> JobRecord:
        return self.store.transition(job_id, state, reason)[0]

    # --- watching -----------------------------------------------------------------------

    def get(self, job_id: str) -> JobRecord:
        return self.store.find(job_id)

    def refresh(self, job_id: str) -> JobRecord:
        """Ask the backend where the job is and record any change."""
        record = self.store.find(job_id)
        if record.state.terminal:
            return record
        if record.backend_id is None:
            return self._check_owner(record)
        backend = self._backend_for(record)
        job_dir = Path(record.job_dir)
        try:
            status = backend.status(record.backend_id, job_dir)
        except CloudPromoteError as exc:
            return self._move(record.id, JobState.FAILED, f"lost track of the job: {exc}")
        state, reason = status.state, status.reason
        if record.state is JobState.CANCELLING and state in (JobState.FAILED, JobState.CANCELLED):
            state, reason = JobState.CANCELLED, "cancelled by user"
        updated, changed = self.store.transition(
            record.id, state, reason, exit_code=status.exit_code
        )
        if changed and updated.state.terminal:
            try:
                backend.collect_outputs(record.backend_id, job_dir)
            except CloudPromoteError as exc:
                (job_dir / "logs" / "error.log").write_text(str(exc), encoding="utf-8")
        return updated

    def _check_owner(self, record: JobRecord, *, at_startup: bool = False) -> JobRecord:
        """A job not yet handed to a backend belongs to the process building it: if that
        process is gone, the job will never move again, so say so instead of leaving it."""
        owner = record.spec.get("owner") or {}
        if owner_gone(owner, at_startup=at_startup):
            return self._move(record.id, JobState.FAILED, interrupted_reason(owner, record.state))
        return record

    def recover_interrupted(self) -> builtins.list[JobRecord]:
        """For a server starting up: fail jobs left half-prepared by a process now gone.

        Jobs already handed to a backend are left to refresh, which follows them to the end.
        """
        failed = []
        for record in self.store.active():
            if record.backend_id is None:
                updated = self._check_owner(record, at_startup=True)
                if updated.state is JobState.FAILED:
                    failed.append(updated)
        return failed

    def refresh_active(self) -> list[JobRecord]:
        return [self.refresh(record.id) for record in self.store.active()]

    def wait(
        self,
        job_id: str,
        progress: Progress = _quiet,
        *,
        interval: float = 1.0,
        stream_logs: Callable[[str], None] | None = None,
    ) -> JobRecord:
        """Refresh until terminal, reporting each state change (and log text, if asked)."""
        record = self.store.find(job_id)
        last_state: JobState | None = None
        sent = 0
        while True:
            record = self.refresh(record.id)
            if record.state is not last_state:
                suffix = f": {record.reason}" if record.reason else ""
                progress(f"job {record.id}: {record.state.value}{suffix}")
                last_state = record.state
            if stream_logs is not None and record.backend_id is not None:
                text = self.run_logs(record.id)
                if len(text) > sent:
                    stream_logs(text[sent:])
                    sent = len(text)
            if record.state.terminal:
                return record
            time.sleep(interval)

    # --- logs, outputs, cancel, rerun, delete -------------------------------------------

    def build_logs(self, job_id: str) -> str:
        record = self.store.find(job_id)
        path = Path(record.job_dir) / "logs" / "build.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""

    def run_logs(self, job_id: str) -> str:
        record = self.store.find(job_id)
        if record.backend_id is None:
            return ""
        try:
            return self._backend_for(record).logs(record.backend_id, Path(record.job_dir))
        except CloudPromoteError as exc:
            return f"[logs unavailable: {exc}]\n"

    def follow_logs(self, job_id: str) -> Iterator[str]:
        record = self.store.find(job_id)
        while record.backend_id is None and not record.state.terminal:
            time.sleep(0.5)
            record = self.refresh(record.id)
        if record.backend_id is None:
            return
        yield from self._backend_for(record).follow_logs(record.backend_id, Path(record.job_dir))

    def outputs(self, job_id: str) -> list[dict[str, Any]]:
        record = self.store.find(job_id)
        root = Path(record.job_dir) / "outputs"
        if not root.is_dir():
            return []
        return [
            {"path": path.relative_to(root).as_posix(), "size": path.stat().st_size}
            for path in sorted(root.rglob("*"))
            if path.is_file() and not path.is_symlink()
        ]

    def copy_outputs(self, job_id: str, dest: str | Path) -> list[Path]:
        record = self.store.find(job_id)
        root = Path(record.job_dir) / "outputs"
        dest = Path(dest)
        copied = []
        for item in self.outputs(record.id):
            target = dest / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / item["path"], target)
            copied.append(target)
        return copied

    def cancel(self, job_id: str) -> JobRecord:
        record = self.store.find(job_id)
        if record.state.terminal:
            return record
        if record.backend_id is None:
            return self._move(record.id, JobState.CANCELLED, "cancelled by user before submission")
        self._move(record.id, JobState.CANCELLING, "cancel requested by user")
        backend = self._backend_for(record)
        try:
            backend.cancel(record.backend_id, Path(record.job_dir))
        except CloudPromoteError as exc:
            return self._move(record.id, JobState.CANCELLED, f"cancel requested; backend: {exc}")
        return self.refresh(record.id)

    def rerun(self, job_id: str, progress: Progress = _quiet) -> JobRecord:
        """Run a job again exactly as it was packaged (same script, requirements, image)."""
        _record, launch = self.start_rerun(job_id, progress)
        return launch()

    def start_rerun(self, job_id: str, progress: Progress = _quiet) -> tuple[JobRecord, Launch]:
        """The first half of rerun, split like `start`."""
        old = self.store.find(job_id)
        old_dir = Path(old.job_dir)
        meta_path = old_dir / CONTEXT_META
        if not meta_path.is_file() or not (old_dir / "context").is_dir():
            raise CloudPromoteError(
                f"Job {old.id} never got as far as packaging, so there is nothing to rerun.",
                "Submit the notebook again instead.",
            )
        backend = self._backend_for(old)
        job_id_new = _new_job_id()
        job_dir = self.settings.jobs_dir / job_id_new
        (job_dir / "logs").mkdir(parents=True)
        (job_dir / "outputs").mkdir()
        shutil.copytree(old_dir / "context", job_dir / "context", symlinks=True)
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        meta["directory"] = job_dir / "context"
        meta_fields = {f.name for f in dataclasses.fields(BuildContext)}
        context = BuildContext(**{k: v for k, v in meta.items() if k in meta_fields})
        (job_dir / CONTEXT_META).write_text(
            json.dumps({**meta, "directory": str(context.directory)}, indent=1, sort_keys=True),
            encoding="utf-8",
        )
        env: dict[str, str] = {}
        if (old_dir / SUBMIT_ENV).is_file():
            env = json.loads((old_dir / SUBMIT_ENV).read_text(encoding="utf-8"))
            _keep_env(job_dir, env)
        spec = {**old.spec, "rerun_of": old.id, "owner": owner_stamp(self.owner_role)}
        record = self._record_new(
            job_id_new, old.notebook, old.backend, old.backend_kind, spec, f"rerun of {old.id}"
        )
        progress(f"job {record.id} created as a rerun of {old.id}")

        def launch() -> JobRecord:
            return self._launch(record, backend, progress, context=context, env=env)

        return record, launch

    def delete(self, job_id: str) -> None:
        """Forget a finished job and remove its folder. Active jobs must be cancelled first."""
        record = self.store.find(job_id)
        if not record.state.terminal:
            raise CloudPromoteError(
                f"Job {record.id} is still {record.state.value}.", "Cancel it first."
            )
        self.store.delete(record.id)
        shutil.rmtree(record.job_dir, ignore_errors=True)

    def list(self, **filters: Any) -> builtins.list[JobRecord]:
        return self.store.list(**filters)
