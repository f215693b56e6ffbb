"""The Jupyter server extension: one JobManager, one watcher, the REST API under /cloudpromote/.

Enabled automatically by the server config file the package ships
(etc/jupyter/jupyter_server_config.d/jupyter_cloudpromote.json). Reads the same traitlets
configuration as the CLI and the magic: the `CloudPromote` section of the
jupyter_cloudpromote_config files, overridden by a `CloudPromote` section in the server's own
config or command line (e.g. `--CloudPromote.data_dir=...`).
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from jupyter_server.extension.application import ExtensionApp
from traitlets import Float, Int

from ..config import CloudPromote, load_config
from ..jobs import JobManager
from ..models import JobRecord
from .paths import contents_root, to_api_path
from .watcher import EventHub, JobWatcher

T = TypeVar("T")
SERVICE_KEY = "cloudpromote_service"


class CloudPromoteService:
    """What the handlers share: the manager, the executors, the watcher and the event hub."""

    def __init__(
        self,
        manager: JobManager,
        root_dir: str,
        contents_manager: Any,
        *,
        build_workers: int = 2,
        request_workers: int = 4,
        max_watch_interval: float = 15.0,
        log: Any = None,
    ) -> None:
        self.manager = manager
        self.root_dir = str(Path(root_dir).resolve())
        self.contents_manager = contents_manager
        self.log = log
        # Packaging and image builds can take minutes: their own pool, so requests stay quick.
        self.build_executor = ThreadPoolExecutor(
            build_workers, thread_name_prefix="cloudpromote-build"
        )
        self.request_executor = ThreadPoolExecutor(
            request_workers, thread_name_prefix="cloudpromote-request"
        )
        self.watch_executor = ThreadPoolExecutor(1, thread_name_prefix="cloudpromote-watch")
        self.hub = EventHub()
        self.watcher = JobWatcher(
            manager,
            self.hub,
            self.watch_executor,
            functools.partial(self.job_view, with_history=False),
            interval=manager.settings.watch_interval,
            max_interval=max_watch_interval,
            log=log,
        )
        self.launches: dict[str, Future[JobRecord]] = {}
        self.recovered: list[JobRecord] = []
        self.stopping = False
        self._started: asyncio.Future[None] | None = None

    # --- lifecycle --------------------------------------------------------------------------

    def recover(self) -> list[JobRecord]:
        """Before serving: fail jobs a previous server left half-prepared."""
        self.recovered = self.manager.recover_interrupted()
        return self.recovered

    async def ensure_started(self) -> None:
        """Start the watcher once, on the server's loop (the start hook or the first request)."""
        if self._started is None:
            self._started = asyncio.ensure_future(self.watcher.start())
        await asyncio.shield(self._started)

    async def stop(self) -> None:
        self.stopping = True
        self.hub.close()
        await self.watcher.stop()
        # In-flight builds keep their threads until the process ends; their jobs stay owned
        # by this pid, so a later server marks them interrupted if they never finish.
        for executor in (self.request_executor, self.build_executor, self.watch_executor):
            executor.shutdown(wait=False, cancel_futures=True)

    # --- work -------------------------------------------------------------------------------

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking pipeline/store work off the loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self.request_executor, functools.partial(fn, *args, **kwargs)
        )

    def launch(self, record: JobRecord, launch: Callable[[], JobRecord]) -> Future[JobRecord]:
        """Package, build and submit in the background; the watcher reports the progress."""
        loop = asyncio.get_running_loop()

        def done(_future: Future[JobRecord]) -> None:
            self.launches.pop(record.id, None)
            if not loop.is_closed():
                loop.call_soon_threadsafe(self.watcher.poke)

        future = self.build_executor.submit(launch)
        self.launches[record.id] = future
        future.add_done_callback(done)
        self.watcher.poke()
        return future

    # --- presentation -----------------------------------------------------------------------

    def job_view(self, record: JobRecord, with_history: bool = True) -> dict[str, Any]:
        data = record.to_dict(with_history=with_history)
        data["notebook_path"] = to_api_path(self.root_dir, os.path.realpath(record.notebook))
        return data


class CloudPromoteExtension(ExtensionApp):
    """Jupyter server extension of jupyter-cloudpromote."""

    name = "jupyter_cloudpromote"
    description = "Promote notebooks into batch jobs and watch them."
    load_other_extensions = True

    build_workers = Int(2, help="Jobs packaged/built at the same time by this server.").tag(
        config=True
    )
    max_watch_interval = Float(
        15.0, help="Longest pause between status checks of an unchanged active job (backoff)."
    ).tag(config=True)

    service: CloudPromoteService

    def cloudpromote_settings(self) -> CloudPromote:
        config = load_config()
        assert self.serverapp is not None
        config.merge(self.serverapp.config)  # the server's own config/command line wins
        return CloudPromote(config=config)

    def initialize_settings(self) -> None:
        assert self.serverapp is not None
        contents_manager = self.serverapp.contents_manager
        manager = JobManager(self.cloudpromote_settings(), owner_role="server")
        self.service = CloudPromoteService(
            manager,
            contents_root(contents_manager, self.serverapp.root_dir),
            contents_manager,
            build_workers=self.build_workers,
            max_watch_interval=self.max_watch_interval,
            log=self.log,
        )
        recovered = self.service.recover()
        for record in recovered:
            self.log.warning("cloudpromote: job %s: %s", record.id, record.reason)
        self.log.info(
            "cloudpromote: job store %s (%d active job(s))",
            manager.store.path,
            len(manager.store.active()),
        )
        self.settings[SERVICE_KEY] = self.service

    def initialize_handlers(self) -> None:
        from .handlers import handler_list

        self.handlers.extend(handler_list())

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        await self.service.ensure_started()

    async def stop_extension(self) -> None:
        service = getattr(self, "service", None)
        if service is not None:
            await service.stop()
