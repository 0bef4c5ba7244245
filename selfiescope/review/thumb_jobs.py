"""Thumbnails made ahead of the grid, each at most once at a time.

A 4000 px JPEG takes 25-40 ms to thumbnail even with libjpeg's 1/8 decode (the Huffman
decoding of the whole file bounds it; libjpeg-turbo through Pillow, OpenCV and simplejpeg
measure alike: ``benchmarks/bench_review.py``), and several times that on a loaded machine.
So the review app makes thumbnails before the browser asks: one background thread works
through a short queue of images in the order the grid shows them: the default grid's first
page when the app starts, then each page the grid is served and the page after it. It runs at
the requests' own CPU priority: a request may wait on its job, and a lowered priority made that
wait several times longer on a loaded machine. Only what the reviewer is about to see is made:
thumbnails are derived personal data, kept no longer than needed and not for the whole dataset.

A request for a thumbnail that is being made waits on that job instead of decoding the
image a second time. :meth:`ThumbnailJobs.close` stops the background work (its queue is
dropped, and no job that began before writes a thumbnail from then on) before ``forget``
removes images and their thumbnails, so no thumbnail of a forgotten image outlives it.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

log = logging.getLogger("selfiescope.review")

MAX_QUEUED = 1000  # images waiting; the oldest wishes are dropped first (the grid has moved on)
WAIT_S = 60.0  # the longest a request waits on another thread's job before making the thumbnail itself
STOP_WAIT_S = 10.0  # how long closing waits for a job under way (each read has its own deadline)

Wish = str | Callable[[], Iterable[str]]  # an image, or a way to find images (a page computed when its turn comes)


class ThumbnailJobs:
    """``make(content_hash)`` builds one thumbnail from checked bytes (None: none can be made),
    ``keep(content_hash, data)`` stores it (False: it cannot, the root is read-only or full),
    ``kept(content_hash)`` reads a stored one (None: none), ``is_kept(content_hash)`` only looks."""

    def __init__(self, make: Callable[[str], bytes | None], keep: Callable[[str, bytes], bool],
                 kept: Callable[[str], bytes | None], is_kept: Callable[[str], bool] | None = None) -> None:
        self._make, self._keep, self._kept = make, keep, kept
        self._is_kept = is_kept or (lambda content_hash: self._kept_or_none(content_hash) is not None)
        self._lock = threading.Condition()
        self._running: dict[str, Future[bytes | None]] = {}
        self._queue: deque[Wish] = deque()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._in_hand = 0  # wishes the worker took from the queue and has not yet run or queued again
        self._epoch = 0  # grows at each close: a job begun in an earlier epoch keeps nothing
        self._storable = True  # False once a thumbnail could not be kept: made ahead, it would be made twice

    # --- asking ---------------------------------------------------------------------------
    def get(self, content_hash: str) -> bytes | None:
        """The thumbnail as kept, else made now on this thread, or by the job already making it.
        A job keeps its thumbnail and leaves the running set in one step under the lock, so
        an image is either running (wait on it) or read from where it was kept: never made twice."""
        with self._lock:
            running = self._running.get(content_hash)
            if running is None:
                mine: Future[bytes | None] = Future()
                self._running[content_hash] = mine
                epoch = self._epoch
        if running is not None:
            try:
                return running.result(timeout=WAIT_S)
            except FutureTimeout:
                pass  # a job stuck on a slow read: this request makes its own
            except Exception:  # noqa: BLE001 - the job failed; this request tries once itself
                pass
            return self._make_here(content_hash)
        return self._run(content_hash, mine, epoch)

    def _kept_or_none(self, content_hash: str) -> bytes | None:
        try:
            return self._kept(content_hash)
        except Exception:  # noqa: BLE001 - an unreadable kept thumbnail is made again
            return None

    def want(self, wishes: Iterable[Wish]) -> None:
        """Put these images (or ways to find them) first in the queue, in the order given."""
        wishes = list(wishes)
        if not wishes:
            return
        with self._lock:
            if self._closed or not self._storable:
                return
            self._push(wishes)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="review-thumbnails", daemon=True)
                self._thread.start()
            self._lock.notify_all()

    def idle(self, timeout: float) -> bool:
        """Wait until nothing is queued or running (a benchmark's and a test's way to know the
        background work is done); False if it is not done within ``timeout`` seconds."""
        with self._lock:
            return self._lock.wait_for(lambda: not self._queue and not self._in_hand and not self._busy(), timeout)

    # --- stopping -------------------------------------------------------------------------
    def close(self) -> None:
        """Drop the queue and let the worker end: a job under way finishes but keeps nothing, nor
        does a request's job begun before, so no thumbnail of an image read before is written
        after this returns (what ``forget`` needs before it removes images and their thumbnails).
        Requests still get thumbnails; nothing is made ahead until :meth:`reopen`."""
        with self._lock:
            self._closed = True
            self._epoch += 1
            self._queue.clear()
            self._lock.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(STOP_WAIT_S)

    def reopen(self) -> None:
        with self._lock:
            self._closed = False

    # --- working --------------------------------------------------------------------------
    def _push(self, wishes: list[Wish] | list[str]) -> None:
        self._queue.extendleft(reversed(wishes))
        while len(self._queue) > MAX_QUEUED:
            self._queue.pop()

    def _busy(self) -> bool:
        return any(not f.done() for f in self._running.values())

    def _run(self, content_hash: str, future: Future[bytes | None], epoch: int) -> bytes | None:
        if (hit := self._kept_or_none(content_hash)) is not None:
            with self._lock:
                future.set_result(hit)
                self._running.pop(content_hash, None)
                self._lock.notify_all()
            return hit
        try:
            data = self._make(content_hash)
        except BaseException as exc:
            future.set_exception(exc)
            with self._lock:
                self._running.pop(content_hash, None)
                self._lock.notify_all()
            raise
        with self._lock:
            current = epoch == self._epoch
            if data is not None and current:
                self._store(content_hash, data)  # under the lock: a close cannot slip between the check and the write
            future.set_result(data if current else None)
            self._running.pop(content_hash, None)
            self._lock.notify_all()
        return data if current else None

    def _make_here(self, content_hash: str) -> bytes | None:
        with self._lock:
            epoch = self._epoch
        data = self._make(content_hash)
        with self._lock:
            if data is None or epoch != self._epoch:
                return None
            self._store(content_hash, data)
        return data

    def _store(self, content_hash: str, data: bytes) -> None:
        if not self._keep(content_hash, data) and self._storable:
            self._storable = False  # nothing is made ahead any more; requests still get theirs
            self._queue.clear()
            log.info("review: thumbnails cannot be kept under this root (read-only or full): none is made ahead")

    def _next(self) -> tuple[str, Future[bytes | None], int] | None:
        """The next image to make, or None when the worker should end."""
        while True:
            with self._lock:
                if self._closed or not self._storable or not self._queue:
                    self._thread = None if self._thread is threading.current_thread() else self._thread
                    self._lock.notify_all()
                    return None
                wish = self._queue.popleft()
                self._in_hand += 1
            if isinstance(wish, str):
                try:  # a look at the file, outside the lock: most wishes are kept already
                    kept = self._is_kept(wish)
                except Exception:  # noqa: BLE001 - no answer: the job itself reads what is kept
                    kept = False
                with self._lock:
                    self._in_hand -= 1
                    if kept or wish in self._running or self._closed:
                        self._lock.notify_all()
                        continue
                    future: Future[bytes | None] = Future()
                    self._running[wish] = future
                    return wish, future, self._epoch
            found: list[str] = []
            try:  # a page to find, outside the lock (it reads the snapshot's columns)
                found = list(wish())
            except Exception as exc:  # noqa: BLE001 - a page that cannot be found costs only its prefetch
                log.debug("review: no thumbnails ahead: %s", exc)
            finally:
                with self._lock:
                    self._in_hand -= 1
                    if not self._closed:
                        self._push(found)
                    self._lock.notify_all()

    def _work(self) -> None:
        while (job := self._next()) is not None:
            content_hash, future, epoch = job
            try:
                self._run(content_hash, future, epoch)
            except Exception as exc:  # noqa: BLE001 - one image without a thumbnail; the grid asks again
                log.debug("review: no thumbnail made ahead for %s: %s", content_hash[:16], type(exc).__name__)

