"""Per-run statistics, and the run's error lines (what the summary prints and the exit code reads)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from .text import redact_text, redact_values

# How a failure code reads in the summary ("3 images failed to store: ...").
FAILURE_PHRASES = {
    "store_failed": "failed to store",
    "read_failed": "could not be read",
    "record_failed": "could not be recorded in the manifest",
    "download_failed": "could not be downloaded (not marked done; the errors say what to do)",
}


@dataclass
class RunStats:
    seen: int = 0
    accepted: int = 0
    rejected: int = 0
    failed: int = 0  # images that could not be processed (a write, a read, a plugin bug): errors, not decisions
    bytes_in: int = 0
    bytes_stored: int = 0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    failed_by_reason: Counter[str] = field(default_factory=Counter)
    failure_examples: dict[str, str] = field(default_factory=dict)  # code -> first reason met
    per_job: dict[str, Counter[str]] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    status: str = "running"
    queue_peak: int = 0
    errors: list[str] = field(default_factory=list)  # run-level errors (a job that failed, ...)
    extra: dict[str, Any] = field(default_factory=dict)  # engine-specific figures
    job_states: dict[str, str] = field(default_factory=dict)  # what each job is doing now, in words
    settled_jobs: set[str] = field(default_factory=set)  # jobs whose every image has its outcome
    # called with (job, state) on every change: the CLI draws them; sources never know who listens
    state_listeners: list[Callable[[str, str], None]] = field(default_factory=list, repr=False, compare=False)

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def images_per_s(self) -> float:
        return self.seen / self.elapsed if self.elapsed > 0 else 0.0

    def count(self, job: str, outcome: str, code: str | None = None, size: int = 0, reason: str | None = None,
              stored: bool = True) -> None:
        """Count one image's outcome: ``accepted``, ``rejected`` or ``failed``; ``stored`` says
        whether an accepted image's bytes were written (only those count in ``bytes_stored``)."""
        self.seen += 1
        self.bytes_in += size
        jc = self.per_job.setdefault(job, Counter())
        jc[outcome] += 1
        if outcome == "accepted":
            self.accepted += 1
            if stored:
                self.bytes_stored += size
        elif outcome == "failed":
            self.failed += 1
            key = code or "error"
            self.failed_by_reason[key] += 1
            self.failure_examples.setdefault(key, redact_text(reason) if reason else key)
        else:
            self.rejected += 1
            self.rejected_by_reason[code or "unknown"] += 1

    def error_lines(self) -> list[str]:
        """Every error of the run, one line each: image failures grouped by kind, then run errors."""
        lines = []
        for code, n in sorted(self.failed_by_reason.items()):
            what = FAILURE_PHRASES.get(code, f"failed ({code})")
            noun = "image" if n == 1 else "images"
            lines.append(f"{n} {noun} {what}: {self.failure_examples.get(code, code)}")
        return [redact_text(line) for line in lines + list(self.errors)]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.errors

    def set_state(self, job: str, state: str, *, settled: bool = False) -> None:
        """A job's progress in words ("logging in", "12 posts found", "failed: ...").

        ``settled``: every image of the job has its outcome (only the executor knows: a
        source's own "feed done" comes while its last images are still in the chain), so
        the counts shown with this state are final; until then they are counts so far."""
        state = redact_text(state)  # job states are logged and drawn: never a credential
        if settled:
            self.settled_jobs.add(job)
        if self.job_states.get(job) == state:
            return
        self.job_states[job] = state
        logging.getLogger("selfiescope.progress").info("%s: %s", redact_text(job), state)
        for listener in list(self.state_listeners):
            listener(job, state)

    def as_dict(self) -> dict[str, Any]:
        """The figures as stored in the manifest's ``runs.stats`` and printed: URLs redacted."""
        return redact_values({
            "status": self.status,
            "seen": self.seen,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "failed": self.failed,
            "rejected_by_reason": dict(self.rejected_by_reason),
            "failed_by_reason": dict(self.failed_by_reason),
            "per_job": {redact_text(k): dict(v) for k, v in self.per_job.items()},
            "bytes_in": self.bytes_in,
            "bytes_stored": self.bytes_stored,
            "elapsed_s": round(self.elapsed, 3),
            "images_per_s": round(self.images_per_s, 2),
            "queue_peak": self.queue_peak,
            "errors": self.error_lines(),
            **self.extra,
        })
