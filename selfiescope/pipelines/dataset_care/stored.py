"""Reading stored images back through the storage backend, from synchronous code.

Training, its report and ``predict`` on a dataset read what collection stored, and only
through :class:`~selfiescope.core.components.Storage` (``read``/``iterate``/``exists``):
a ``location`` is the backend's own string, never a path to open. Those callers are
synchronous (a process pool, matplotlib), while the backend's methods are coroutines, so
a :class:`StoredReader` runs the backend on a private event loop in one background
thread: reads from any thread are submitted there, several at a time (an object store's
latency is hidden by reading ahead), each with a deadline.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from ...core.app import App
from ...core.components import Storage, StoredImage
from ...core.manifest import Manifest
from ...core.settings import Settings

T = TypeVar("T")
READ_TIMEOUT_S = 120.0  # one image; a hung connection becomes that image's error, not a hung training


def settings_at(settings: Settings, root: Path | str | None) -> Settings:
    """``settings`` with ``storage.root`` moved to ``root`` (a train pipeline's ``dataset_root``)."""
    if root is None or Path(root) == Path(settings.storage.root):
        return settings
    return settings.model_copy(update={"storage": settings.storage.model_copy(update={"root": Path(root)})})


class StoredReader:
    """``with StoredReader(app) as reader: reader.read(stored)``.

    Opens the configured backend (``storage.backend`` with its ``[plugins.NAME]`` options)
    on entry and closes it on exit.
    """

    def __init__(self, app: App, root: Path | str | None = None, *,
                 manifest: Manifest | None = None, timeout_s: float = READ_TIMEOUT_S) -> None:
        moved = settings_at(app.settings, root)
        self.app = app if moved is app.settings else app.with_settings(moved)
        self.settings = self.app.settings
        self.timeout_s = timeout_s
        self._manifest = manifest
        self._own_manifest: Manifest | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.storage: Storage | None = None

    def __enter__(self) -> "StoredReader":
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="selfiescope-storage", daemon=True)
        self._thread.start()
        try:
            if self._manifest is None:  # the backend gets a manifest like in a run; a reader records nothing
                self._own_manifest = self._manifest = Manifest(":memory:")
            storage = self.app.storage_backend(self._manifest, "read")
            self._call(storage.open())
            self.storage = storage
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.storage is not None:
                self._call(self.storage.close())
        finally:
            self._stop()

    def _stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=30)
            if not self._loop.is_running():
                self._loop.close()
            self._loop = None
        if self._own_manifest is not None:
            self._own_manifest.close()
            self._own_manifest = None

    def _submit(self, coro: Any) -> "Future[Any]":
        if self._loop is None:
            coro.close()
            raise RuntimeError("StoredReader used outside its with-block")
        return asyncio.run_coroutine_threadsafe(asyncio.wait_for(coro, self.timeout_s), self._loop)

    def _call(self, coro: Any) -> Any:
        return self._submit(coro).result(self.timeout_s + 5)

    def submit(self, stored: StoredImage) -> "Future[bytes]":
        """Start reading one image; the future's result is its bytes."""
        assert self.storage is not None
        return self._submit(self.storage.read(stored))

    def read(self, stored: StoredImage) -> bytes:
        return self.submit(stored).result(self.timeout_s + 5)

    def prefetch(self, items: Iterable[T], key: Callable[[T], StoredImage], ahead: int = 8,
                 ) -> Iterator[tuple[T, bytes | None, str | None]]:
        """``(item, bytes, None)`` or ``(item, None, error)`` for each item, in order, with up to
        ``ahead`` reads in flight: a slow or failing read costs its own item only."""
        window: deque[tuple[T, Future[bytes]]] = deque()

        def settle(item: T, fut: "Future[bytes]") -> tuple[T, bytes | None, str | None]:
            try:
                return item, fut.result(self.timeout_s + 5), None
            except Exception as exc:  # noqa: BLE001 - reported per image
                what = type(exc).__name__
                return item, None, f"cannot read from storage: {what}: {exc}" if str(exc) else f"cannot read from storage: {what}"

        try:
            for item in items:
                window.append((item, self.submit(key(item))))
                if len(window) >= max(1, ahead):
                    yield settle(*window.popleft())
            while window:
                yield settle(*window.popleft())
        finally:
            for _, fut in window:  # abandoned early (an error downstream): stop what is in flight
                fut.cancel()
