"""A third party's steps for the Dask tests: the executor must treat them by capability.

``worker_mark`` declares ``worker_safe``: it notes the process that ran it. ``ahead`` is
client-side (not worker-safe) but has a ``precompute`` that notes where it ran; its
``process`` uses that note when present, and computes it itself otherwise (the local engine).
Importable by module name, so Dask workers register it too.
"""

from __future__ import annotations

import os

from selfiescope.core.components import Step
from selfiescope.core.events import ImageEvent
from selfiescope.core.hookspecs import hookimpl


class WorkerMark(Step):
    name = "worker_mark"
    worker_safe = True

    def process(self, event: ImageEvent) -> None:
        assert event.image is not None, "runs after decode"
        event.notes["worker_mark_pid"] = os.getpid()


class Ahead(Step):
    name = "ahead"

    def precompute(self, event: ImageEvent) -> None:
        assert event.image is not None, "runs where the pixels are"
        event.notes["ahead_pid"] = os.getpid()
        event.notes["ahead_mean"] = float(event.image.mean())

    def process(self, event: ImageEvent) -> None:
        assert self.run.manifest is not None, "the client half has the manifest"
        event.notes["ahead_precomputed"] = "ahead_mean" in event.notes
        event.notes["ahead_process_pid"] = os.getpid()


@hookimpl
def selfiescope_steps():
    return [WorkerMark, Ahead]
