"""REST handlers under <base_url>cloudpromote/ (described in openapi.yaml, kept in sync by a test).

Every handler is a jupyter_server APIHandler, authenticated (`@web.authenticated`) and
authorized (`@authorized`) on its own resource name, "cloudpromote", so a deployment's
authorizer can grant or refuse it separately. XSRF is jupyter_server's own. Bad input is a
4xx with a JSON body {message, reason, field?, fix?}; nothing a request sends produces a 500.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import functools
import json
import os
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web
from tornado.iostream import StreamClosedError

from ..backends.registry import backends_report as report_backends
from ..errors import CloudPromoteError, FindingsError, JobNotFoundError
from ..models import JobRecord
from ..resources import validate_resources
from . import schemas
from .paths import PathRefused, check_includes, confine, confine_file, resolve_notebook

if TYPE_CHECKING:
    from .app import CloudPromoteService

AUTH_RESOURCE = "cloudpromote"
ROUTE_PREFIX = "cloudpromote"
STREAM_POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0
STREAM_CHUNK = 256 * 1024
ARTIFACT_LIMIT = 512 * 1024
# What GET jobs/{id} shows of the build context: never the CA bundle or pip config.
ARTIFACTS = (
    ("script", "job.py"),
    ("requirements", "requirements.txt"),
    ("dockerfile", "Dockerfile"),
)

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


class ApiError(web.HTTPError):
    """An HTTP error whose JSON body says what is wrong, which field, and the fix."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        field: str | None = None,
        fix: str = "",
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(status, log_message=message.replace("%", "%%"))
        self.message = message
        self.field = field
        self.fix = fix
        self.extra = extra or {}


def api_errors(method: F) -> F:
    """Turn the pipeline's and the validators' exceptions into 4xx answers."""

    @functools.wraps(method)
    async def wrapper(self: CloudPromoteHandler, *args: Any, **kwargs: Any) -> Any:
        try:
            return await method(self, *args, **kwargs)
        except web.HTTPError:
            raise
        except schemas.BodyError as exc:
            raise ApiError(400, exc.message, field=exc.field) from None
        except PathRefused as exc:
            raise ApiError(exc.status, exc.message, field=exc.field) from None
        except JobNotFoundError as exc:
            raise ApiError(404, exc.message, fix=exc.fix) from None
        except FindingsError as exc:
            raise ApiError(422, exc.message, fix=exc.fix) from None
        except CloudPromoteError as exc:
            raise ApiError(400, exc.message, fix=exc.fix) from None
        except PipelineInputError as exc:
            raise ApiError(
                400,
                f"This notebook cannot be promoted: reading it failed ({exc}).",
                fix="Open and save it in JupyterLab, which repairs most structural problems; "
                "if it still fails, report it with the server log.",
            ) from None

    return wrapper  # type: ignore[return-value]


class PipelineInputError(Exception):
    """The pipeline failed on a request's notebook in a way it did not foresee."""


def guarded(fn: Callable[..., Any], log: Any) -> Callable[..., Any]:
    """Run a pipeline call on user input; an unforeseen exception becomes a 400, logged.

    The notebook is the user's input, and odd notebooks reach corners of nbformat and the
    pipeline that raise plain Python errors: the answer is still "this input cannot be
    promoted", never a 500. The traceback goes to the server log for a bug report.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CloudPromoteError:
            raise
        except Exception as exc:
            log.exception("cloudpromote: the pipeline failed on a request's input")
            raise PipelineInputError(f"{type(exc).__name__}: {exc}") from exc

    return wrapper


class CloudPromoteHandler(ExtensionHandlerMixin, APIHandler):
    auth_resource = AUTH_RESOURCE

    @property
    def service(self) -> CloudPromoteService:
        return self.settings["cloudpromote_service"]

    async def prepare(self) -> None:  # type: ignore[override]
        await super().prepare()
        if self.current_user:
            await self.service.ensure_started()

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc_info = kwargs.get("exc_info")
        error = exc_info[1] if exc_info else None
        if not isinstance(error, ApiError):
            super().write_error(status_code, **kwargs)
            return
        reply: dict[str, Any] = {"message": error.message, "reason": error.reason}
        if error.field:
            reply["field"] = error.field
        if error.fix:
            reply["fix"] = error.fix
        reply.update(error.extra)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(reply))

    def json_body(self) -> dict[str, Any]:
        return schemas.parse_json_object(self.request.body or b"")

    def reply(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(data, default=str))

    async def job(self, job_id: str) -> JobRecord:
        if not schemas.JOB_ID.match(job_id):
            raise ApiError(404, f"No job {job_id!r}: job ids are hexadecimal.")
        store = self.service.manager.store

        def lookup() -> JobRecord:
            try:
                return store.get(job_id.lower())  # exact id: a primary-key lookup
            except JobNotFoundError:
                return store.find(job_id.lower())  # a unique prefix, as users type them

        return await self.service.run(lookup)

    async def notebook(self, api_path: str, includes: list[str]) -> Path:
        service = self.service
        notebook = await resolve_notebook(service.contents_manager, service.root_dir, api_path)
        check_includes(service.root_dir, notebook, includes)
        return notebook


# --- backends and preview ----------------------------------------------------------------------


def backends_report(service: CloudPromoteService) -> dict[str, Any]:
    settings = service.manager.settings
    return report_backends(settings.default_backend, settings.profiles, redact=True)


class BackendsHandler(CloudPromoteHandler):
    @web.authenticated
    @authorized
    @api_errors
    async def get(self) -> None:
        self.reply(await self.service.run(backends_report, self.service))


class PreviewHandler(CloudPromoteHandler):
    @web.authenticated
    @authorized
    @api_errors
    async def post(self) -> None:
        body = schemas.preview_body(self.json_body())
        validate_resources(body.options.resources)
        notebook = await self.notebook(body.path, body.options.include)
        preview = guarded(self.service.manager.preview, self.log)
        promotion = await self.service.run(preview, notebook, body.options)
        data = promotion.to_preview()
        data["notebook_path"] = body.path
        self.reply(data)


# --- jobs ----------------------------------------------------------------------------------------


class JobsHandler(CloudPromoteHandler):
    @web.authenticated
    @authorized
    @api_errors
    async def get(self) -> None:
        query = schemas.list_query(self.request.arguments)
        notebook = None
        if query.notebook is not None:
            try:
                notebook = str(confine(self.service.root_dir, query.notebook, "notebook"))
            except PathRefused as exc:
                raise ApiError(exc.status, exc.message, field="notebook") from None
        store = self.service.manager.store

        def page() -> tuple[list[JobRecord], int]:
            records = store.list(
                states=query.states,
                backend=query.backend,
                notebook=notebook,
                limit=query.limit,
                offset=query.offset,
                newest_first=query.newest_first,
            )
            total = store.count(states=query.states, backend=query.backend, notebook=notebook)
            return records, total

        records, total = await self.service.run(page)
        following = query.offset + len(records)
        self.reply(
            {
                "jobs": [self.service.job_view(r, with_history=False) for r in records],
                "total": total,
                "limit": query.limit,
                "offset": query.offset,
                "next_offset": following if following < total else None,
            }
        )

    @web.authenticated
    @authorized
    @api_errors
    async def post(self) -> None:
        body = schemas.submit_body(self.json_body())
        validate_resources(body.options.resources)
        notebook = await self.notebook(body.path, body.options.include)
        service = self.service
        record, launch = await service.run(
            guarded(service.manager.start, self.log), notebook, body.options
        )
        service.launch(record, launch)
        self.set_header("Location", self.request.path.rstrip("/") + "/" + record.id)
        self.reply(service.job_view(record), status=201)


def _artifacts(record: JobRecord) -> list[dict[str, Any]]:
    job_dir = Path(record.job_dir)
    context = job_dir / "context"
    found: list[dict[str, Any]] = []
    if context.is_symlink() or not context.is_dir():
        return found
    for name, filename in ARTIFACTS:
        try:
            path = confine_file(context, filename)
        except PathRefused:
            continue
        size = path.stat().st_size
        with path.open("rb") as handle:
            data = handle.read(ARTIFACT_LIMIT)
        found.append(
            {
                "name": name,
                "file": filename,
                "size": size,
                "truncated": size > ARTIFACT_LIMIT,
                "text": data.decode("utf-8", errors="replace"),
            }
        )
    return found


class JobHandler(CloudPromoteHandler):
    @web.authenticated
    @authorized
    @api_errors
    async def get(self, job_id: str) -> None:
        record = await self.job(job_id)
        data = self.service.job_view(record)
        data["artifacts"] = await self.service.run(_artifacts, record)
        data["outputs"] = await self.service.run(self.service.manager.outputs, record.id)
        self.reply(data)

    @web.authenticated
    @authorized
    @api_errors
    async def delete(self, job_id: str) -> None:
        record = await self.job(job_id)
        if not record.state.terminal:
            raise ApiError(
                409,
                f"Job {record.id} is still {record.state.value}.",
                fix="Cancel it first, then delete it.",
            )
        await self.service.run(self.service.manager.delete, record.id)
        self.service.hub.publish("job-deleted", {"id": record.id})
        self.set_status(204)
        self.finish()


class CancelHandler(CloudPromoteHandler):
    @web.authenticated
    @authorized
    @api_errors
    async def post(self, job_id: str) -> None:
        record = await self.job(job_id)
        updated = await self.service.run(self.service.manager.cancel, record.id)
        self.service.watcher.poke()
        self.reply(self.service.job_view(updated))


class RerunHandler(CloudPromoteHandler):
    @web.authenticated
    @authorized
    @api_errors
    async def post(self, job_id: str) -> None:
        record = await self.job(job_id)
        service = self.service
        new, launch = await service.run(service.manager.start_rerun, record.id)
        service.launch(new, launch)
        base = self.request.path.rsplit("/", 2)[0]
        self.set_header("Location", f"{base}/{new.id}")
        self.reply(service.job_view(new), status=201)


# --- logs ----------------------------------------------------------------------------------------


def complete_utf8(data: bytes) -> int:
    """Length of the longest prefix of `data` that does not end inside a UTF-8 character."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:
            continue  # a continuation byte: keep looking for the lead byte
        if byte & 0x80 == 0:
            return len(data)
        need = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else 4
        return len(data) if back >= need else len(data) - back
    return len(data)


def read_log(
    service: CloudPromoteService, record: JobRecord, phase: str, offset: int, limit: int
) -> tuple[bytes, int]:
    """(bytes from offset, up to limit; total size so far) of a job's build or run log."""
    logs = Path(record.job_dir) / "logs"
    if phase == "build" or record.backend_kind == "local":
        path = logs / ("build.log" if phase == "build" else "run.log")
        if path.is_symlink() or not path.is_file():
            return b"", 0
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            handle.seek(min(offset, size))
            return handle.read(limit), size
    # Other backends: their own log call (a container's logs, a cloud log service).
    whole = service.manager.run_logs(record.id).encode("utf-8")
    return whole[offset : offset + limit], len(whole)


class LogsHandler(CloudPromoteHandler):
    @web.authenticated
    @authorized
    @api_errors
    async def get(self, job_id: str) -> None:
        query = schemas.log_query(self.request.arguments)
        record = await self.job(job_id)
        data, size = await self.service.run(
            read_log, self.service, record, query.phase, query.offset, query.limit
        )
        cut = complete_utf8(data) if not record.state.terminal else len(data)
        data = data[:cut]
        following = min(query.offset, size) + len(data)
        self.reply(
            {
                "id": record.id,
                "phase": query.phase,
                "offset": query.offset,
                "next_offset": following,
                "size": size,
                "text": data.decode("utf-8", errors="replace"),
                "status": record.state.value,
                "complete": record.state.terminal and following >= size,
            }
        )


class _StreamHandler(CloudPromoteHandler):
    """Server-sent events: text/event-stream, written as things happen."""

    _closed: asyncio.Event

    def start_stream(self) -> None:
        self._closed = asyncio.Event()
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")  # proxies must not buffer the stream

    def on_connection_close(self) -> None:
        if hasattr(self, "_closed"):
            self._closed.set()

    async def send(self, event: str, data: Any, event_id: str | None = None) -> None:
        lines = []
        if event_id is not None:
            lines.append(f"id: {event_id}")
        lines.append(f"event: {event}")
        lines.append("data: " + json.dumps(data, default=str))
        self.write("\n".join(lines) + "\n\n")
        await self.flush()

    async def pause(self, seconds: float) -> bool:
        """Sleep unless the client goes away; True when it is still there."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._closed.wait(), timeout=seconds)
        return not self._closed.is_set() and not self.service.stopping

    def finish_stream(self) -> None:
        if not self._finished:
            with contextlib.suppress(Exception):
                self.finish(set_content_type="text/event-stream; charset=utf-8")


def _stream_offsets(text: str | None, phases: list[str]) -> dict[str, int]:
    offsets = dict.fromkeys(phases, 0)
    for part in (text or "").split(","):
        name, _, value = part.partition("=")
        if name in offsets and value.isdigit():
            offsets[name] = int(value)
    return offsets


class LogStreamHandler(_StreamHandler):
    """Build and run log lines as they are written, then `end` once the job is over."""

    @web.authenticated
    @authorized
    @api_errors
    async def get(self, job_id: str) -> None:
        phases = schemas.stream_phases(self.request.arguments)
        record = await self.job(job_id)
        resume = self.request.headers.get("Last-Event-ID") or self.get_argument("resume", None)
        offsets = _stream_offsets(resume, phases)
        decoders = {p: codecs.getincrementaldecoder("utf-8")(errors="replace") for p in phases}
        service = self.service
        self.start_stream()
        service.watcher.follow(record.id)
        last_state = None
        try:
            await self.send("status", service.job_view(record, with_history=False))
            last_state = record.state
            while True:
                record = await service.run(service.manager.store.get, record.id)
                terminal = record.state.terminal  # read before the logs: nothing is missed
                for phase in phases:
                    while True:
                        data, _size = await service.run(
                            read_log, service, record, phase, offsets[phase], STREAM_CHUNK
                        )
                        if not data:
                            break
                        offsets[phase] += len(data)
                        text = decoders[phase].decode(data, final=False)
                        if text:
                            event_id = ",".join(f"{p}={offsets[p]}" for p in phases)
                            await self.send(
                                "log",
                                {"phase": phase, "text": text, "offset": offsets[phase]},
                                event_id,
                            )
                        if len(data) < STREAM_CHUNK:
                            break
                if record.state is not last_state:
                    await self.send("status", service.job_view(record, with_history=False))
                    last_state = record.state
                if terminal:
                    for phase in phases:
                        rest = decoders[phase].decode(b"", final=True)
                        if rest:
                            await self.send(
                                "log", {"phase": phase, "text": rest, "offset": offsets[phase]}
                            )
                    await self.send("end", service.job_view(record, with_history=False))
                    break
                if not await self.pause(STREAM_POLL_SECONDS):
                    break
        except StreamClosedError:
            pass
        finally:
            service.watcher.unfollow(record.id)
            self.finish_stream()


class EventsHandler(_StreamHandler):
    """job-created / job-updated / job-deleted for every job, as they happen."""

    @web.authenticated
    @authorized
    @api_errors
    async def get(self) -> None:
        resume = self.request.headers.get("Last-Event-ID") or self.get_argument("since", None)
        last_id = int(resume) if resume and resume.isdigit() and len(resume) < 18 else None
        hub = self.service.hub
        self.start_stream()
        queue = hub.subscribe(last_id)
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            # A first comment line so clients (and proxies) see the stream is open.
            self.write(f": cloudpromote events; last id {hub.last_id}\n\n")
            await self.flush()
            while True:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait(
                    {getter, closed}, timeout=KEEPALIVE_SECONDS, return_when=asyncio.FIRST_COMPLETED
                )
                if getter not in done:
                    getter.cancel()
                    if closed in done or self.service.stopping:
                        break
                    self.write(f": keepalive {int(time.time())}\n\n")
                    await self.flush()
                    continue
                event = getter.result()
                if event is None:
                    break
                await self.send(event.type, event.to_dict(), str(event.id))
        except StreamClosedError:
            pass
        finally:
            closed.cancel()
            hub.unsubscribe(queue)
            self.finish_stream()


# --- outputs -------------------------------------------------------------------------------------


def _outputs_root(record: JobRecord) -> Path:
    root = Path(record.job_dir) / "outputs"
    if root.is_symlink():
        raise ApiError(403, f"The outputs folder of job {record.id} is a symbolic link: refused.")
    return root


class OutputsHandler(CloudPromoteHandler):
    @web.authenticated
    @authorized
    @api_errors
    async def get(self, job_id: str) -> None:
        record = await self.job(job_id)
        _outputs_root(record)
        outputs = await self.service.run(self.service.manager.outputs, record.id)
        self.reply({"id": record.id, "status": record.state.value, "outputs": outputs})


class OutputFileHandler(CloudPromoteHandler):
    @web.authenticated
    @authorized
    @api_errors
    async def get(self, job_id: str, path: str) -> None:
        record = await self.job(job_id)
        # tornado has already percent-decoded `path`: decoding again would let %252e%252e in.
        target = confine_file(_outputs_root(record), path)
        name = target.name
        # Always a download: a job's HTML output must never run as this server's page.
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header(
            "Content-Disposition", f"attachment; filename*=UTF-8''{urllib.parse.quote(name)}"
        )
        with target.open("rb") as handle:
            self.set_header("Content-Length", str(os.fstat(handle.fileno()).st_size))
            while True:
                chunk = await self.service.run(handle.read, STREAM_CHUNK)
                if not chunk:
                    break
                self.write(chunk)
                await self.flush()
        self.finish(set_content_type="application/octet-stream")


# --- routes --------------------------------------------------------------------------------------

_PARAMS = {"job_id": r"(?P<job_id>[^/]+)", "path": r"(?P<path>.+)"}

#: (OpenAPI path under /cloudpromote, handler). openapi.yaml documents exactly these.
ROUTES: list[tuple[str, type[CloudPromoteHandler]]] = [
    ("/backends", BackendsHandler),
    ("/preview", PreviewHandler),
    ("/jobs", JobsHandler),
    ("/jobs/{job_id}", JobHandler),
    ("/jobs/{job_id}/logs", LogsHandler),
    ("/jobs/{job_id}/logs/stream", LogStreamHandler),
    ("/jobs/{job_id}/cancel", CancelHandler),
    ("/jobs/{job_id}/rerun", RerunHandler),
    ("/jobs/{job_id}/outputs", OutputsHandler),
    ("/jobs/{job_id}/outputs/{path}", OutputFileHandler),
    ("/events", EventsHandler),
]


def route_pattern(openapi_path: str) -> str:
    pattern = re.sub(r"\{(\w+)\}", lambda m: _PARAMS[m.group(1)], openapi_path)
    return f"{ROUTE_PREFIX}{pattern}"


def handler_methods(handler: type[CloudPromoteHandler]) -> set[str]:
    """HTTP methods a handler implements itself (what openapi.yaml must document)."""
    return {
        name
        for name in ("get", "post", "put", "patch", "delete")
        if any(name in vars(cls) for cls in handler.__mro__ if issubclass(cls, CloudPromoteHandler))
    }


def handler_list() -> list[tuple[str, type[CloudPromoteHandler]]]:
    return [(route_pattern(path), handler) for path, handler in ROUTES]
