"""Base classes for the things plugins provide: sources, chain steps, storage, features.

Each component has a unique ``name`` (what settings refer to) and an ``Options``
pydantic model; options come from ``[plugins.NAME]`` and can be overridden per pipeline
in ``[pipelines.P.options.NAME]``. Unknown option keys are errors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from .errors import RunFailed, StorageError  # noqa: F401 - StorageError: part of the storage contract

if TYPE_CHECKING:  # pragma: no cover
    from datetime import datetime

    import numpy as np

    from .context import RunContext
    from .plugin_state import PluginState
    from .events import ImageEvent
    from .settings import ScrapePipeline
    from .work import WorkItem


class Options(BaseModel):
    """Base for component options: strict about unknown keys."""

    model_config = ConfigDict(extra="forbid")


class Component:
    name: ClassVar[str] = ""
    Options: ClassVar[type[Options]] = Options
    #: The tables this component keeps in the manifest (:class:`~selfiescope.api.PluginState`),
    #: reached in a run through ``self.run.state(namespace)``; None: it keeps none.
    state: ClassVar["PluginState | None"] = None

    def __init__(self, options: Options, run: "RunContext") -> None:
        self.options = options
        self.run = run

    async def open(self) -> None:
        """Acquire resources before the first event (models, connections)."""

    async def close(self) -> None:
        """Release resources; called once, also after a cancelled run."""

    # --- capability: what the dataset card says of this component ---
    @classmethod
    def known_biases(cls, options: Options) -> list[str]:
        """Sentences for the dataset card (``DATASET.md``): how this component, with these
        options, skews what a dataset holds (a filter that drops some kinds of photo, a feed
        that ranks). The card asks every source and step of the settings' collect pipelines,
        never a component's name. Default: nothing to say."""
        return []


@dataclass(frozen=True)
class Job:
    """One unit of work of a source: a hashtag, a folder, a gallery URL."""

    source: str
    target: str
    label: str
    limit: int | None = None
    stop_after_known: int | None = None  # end after this many posts in a row already in the dataset
    since: "datetime | None" = None  # fetch no post older than this (timezone-aware)


class Source(Component):
    """Yields image events for a job. Jobs of one run run concurrently."""

    # Whether the source honours a job's ``stop_after_known`` and ``since`` (incremental runs);
    # a pipeline that sets them for a source without it is refused by the settings check.
    incremental: ClassVar[bool] = False

    def jobs(self, pipeline: "ScrapePipeline") -> list[Job]:
        return [
            Job(self.name, target, pipeline.label, pipeline.limit, pipeline.stop_after_known, pipeline.since)
            for target in pipeline.targets()
        ]

    def events(self, job: Job) -> AsyncIterator["ImageEvent"]:  # pragma: no cover - abstract
        raise NotImplementedError

    # --- capability: a web job that finds nothing is an error (README, "hashtag that ends with no posts") ---
    web: ClassVar[bool] = False
    """Collects from a site: a job that ends having found no post at all (none yielded, none
    skipped as known, none that failed to download) is an error of the run, never "finished"."""

    def found(self, job: Job, n: int = 1) -> None:
        """Note ``n`` posts a job met and did not yield (already in the dataset, skipped by an
        incremental rule, failed to download): the job found something."""
        counts = self.__dict__.setdefault("_found", {})
        counts[job.target] = counts.get(job.target, 0) + n

    def found_count(self, job: Job) -> int:
        return self.__dict__.get("_found", {}).get(job.target, 0)

    def empty_job_problem(self, job: Job) -> str:
        """The error of a web job that found nothing: names the job, why, and what to do."""
        return ("no posts found: the page showed none (a wrong address or tag, a changed page, "
                "or the site refused). Check the tag and the address (open it in a browser), then rerun")

    # --- capabilities (lifecycle): asked by executors, never a source's name ---
    def remote_items(self, job: Job) -> AsyncIterator["WorkItem"] | None:
        """The job as work items that remote workers load themselves (paths on a shared
        filesystem), or None (the default): the executor takes :meth:`events` and the bytes
        travel with the task. A source that implements it applies the same filters as its
        :meth:`events` (e.g. the resume skip of images stored by an earlier run)."""
        return None

    # --- what generic commands ask of a source ----------
    url_option: ClassVar[str | None] = None
    """The option a command's ``--base-url`` sets (``scrape``, ``record``): the site, or a URL
    template; None when the source takes no URL. Also where ``record`` finds the site to note."""

    credential_env: ClassVar[tuple[str, ...]] = ()
    """Environment variables that hold this source's credentials: ``record`` scrubs their
    values from a recording wherever they appear; ``selfiescope plugins`` lists them."""

    replay_options: ClassVar[dict[str, Any]] = {}
    """Options merged into the source's own when it replays a recorded session (nothing
    crosses the network, so e.g. no pacing)."""
    # ---------------------------------------------------------------------------------------


class Step(Component):
    """One link of the image chain.

    Implement ``process(event)``: synchronous methods run in a worker thread (for CPU
    work such as decoding and detection: OpenCV and Pillow release the GIL, so several
    images in flight use every core); ``async def process`` runs on the event loop (for
    I/O such as writing files). Raise :class:`~selfiescope.core.events.Reject` to drop
    the image.
    """

    def process(self, event: "ImageEvent") -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    # --- capabilities (lifecycle): asked by executors, never a step's name ---
    worker_safe: ClassVar[bool] = False
    """Pure: uses neither the manifest, the storage nor a run-wide service, so it may run on a
    remote (Dask) worker, in a process of its own, without :meth:`open` seeing a manifest.
    The leading worker-safe steps of a chain run on the workers."""

    def precompute(self, event: "ImageEvent") -> None:
        """Pure work on the decoded image that may run ahead wherever the pixels are (a Dask
        worker), before this step's :meth:`process` runs elsewhere; it annotates the event
        (JSON-safe notes, known fields) and must not need :meth:`open`. ``process`` then uses
        what is there. Default: nothing."""

    @classmethod
    def has_precompute(cls) -> bool:
        return cls.precompute is not Step.precompute

    # --- capability: the decoded image's size a step needs (one decode per image) ---
    @classmethod
    def working_side(cls, options: Options) -> int | None:
        """The longest side, in pixels, of ``event.image`` this step needs; ``None`` = full resolution.

        The decoding step of a collect run decodes once, at the smallest size at least as large
        as every later step of the chain asks for (JPEGs are decoded reduced, other formats are
        downscaled once), so ``event.image`` may be smaller than ``event.width`` x
        ``event.height`` (which stay the original's); ``event.image_scale`` says by how much.
        Return ``0`` when the step does not look at the pixels. The default, ``None``, is the
        safe answer for a step that does not say: it gets the image at full resolution.
        """
        return None

    @classmethod
    def working_side_for(cls, options: Options, width: int, height: int) -> int | None:
        """:meth:`working_side` for one image whose original is ``width`` x ``height`` (as stored,
        before EXIF orientation, so the two may be swapped); at most :meth:`working_side`.

        Override it when the size a step needs depends on the image's (``face_area`` detects at
        the size where the smallest face it counts is a few cascade windows, whatever the image's
        pixel count). The default is :meth:`working_side`.
        """
        return cls.working_side(options)
    # --- end of working_side ---

    # --- capabilities: annotations (storage/training) --------------------------
    #: Annotation names this step sets on the event, for later steps, training and predict
    #: (e.g. ``"image"``, ``"format"``, ``"exif"``, ``"faces"``, ``"phash"``). Training decodes
    #: stored images with the step that provides ``"image"``; predict adds the one that
    #: provides ``"faces"``: they are chosen by these sets, never by name.
    provides: ClassVar[frozenset[str]] = frozenset()
    #: Annotation names this step needs from an earlier step of the chain; settings checking
    #: reports a chain where no earlier step provides one of them.
    requires: ClassVar[frozenset[str]] = frozenset()


@dataclass
class StoredImage:
    id: str
    label: str
    location: str
    content_hash: str | None = None


class Storage(Component):
    """Where accepted images go: the one place image bytes are kept, and the only way
    anything (training, the report, predict, export, forget) reads them back.

    The contract every backend keeps (``tests/test_storage_contract.py`` checks the
    built-in ones; the storage author's guide is docs/storage.md):

    - **location**: ``write`` returns an opaque string that only this backend interprets
      (a relative path, an object key, a row id). It is saved in the manifest and handed
      back inside a :class:`StoredImage`; nobody else treats it as a path.
    - **sync vs async**: ``write``, ``read``, ``delete`` and ``locate`` are coroutines run on
      the run's event loop: blocking I/O belongs in ``asyncio.to_thread``. ``iterate`` is a
      plain generator (a listing, called from any thread).
    - **idempotent**: writing the same ``event.id`` and ``label`` twice stores one copy and
      returns the same location (a rerun retries a write whose record was lost); ``delete``
      of something already gone returns False and raises nothing.
    - **atomic**: ``read`` never sees a partial write: a crash leaves the whole image or
      nothing under its location (temp + rename, or a single PUT). Leftovers of a killed
      write are the backend's to tidy in ``open``.
    - **errors**: any exception from ``write`` is a failure to store (the image is not
      counted as decided, the run ends with errors, a rerun retries it), never a rejection.
      ``read`` raises (``FileNotFoundError`` or the backend's own error) when the location
      holds nothing.
    - **notes**: ``write`` may add to ``event.notes`` (e.g. an ETag or a version id); the
      JSON-safe part of an accepted image's notes is saved in the manifest's ``notes``
      column, so keep them small and free of secrets.
    - **settings**: options come from ``[plugins.NAME]``; credentials never do (read them
      from the environment). The manifest stays a local SQLite file under ``storage.root``.
    """

    @classmethod
    def settings_problems(cls, options: Options) -> list[str]:
        """Optional: why these options cannot hold a dataset, as ``option: problem`` lines
        (``settings check`` and every run ask before any work). A dataset outlives the process
        and its manifest says what is stored, so a backend whose images would vanish when the
        process exits (an in-memory filesystem) says so here. Default: nothing."""
        return []

    async def write(self, event: "ImageEvent") -> str:  # pragma: no cover - abstract
        """Store ``event.data`` under ``event.label``/``event.id`` atomically; return its location."""
        raise NotImplementedError

    def iterate(self, label: str | None = None) -> Iterator[StoredImage]:  # pragma: no cover
        """Every stored image (of one label), with the location ``read`` accepts."""
        raise NotImplementedError

    async def read(self, stored: StoredImage) -> bytes:  # pragma: no cover - abstract
        """The bytes at ``stored.location``, exactly as written."""
        raise NotImplementedError

    async def delete(self, stored: StoredImage) -> bool:  # pragma: no cover - abstract
        """Remove a stored image (``selfiescope forget``); True if it was there.

        Must be idempotent: an interrupted forget calls it again for the same image.
        """
        raise NotImplementedError

    async def locate(self, image_id: str, label: str) -> list[StoredImage]:
        """Optional: what is stored under this id and label (any format), for the sweep of
        writes a killed run never recorded (:mod:`selfiescope.core.intents`). The default
        scans :meth:`iterate` of the label; a backend that can look one id up overrides it."""
        import asyncio

        return await asyncio.to_thread(lambda: [s for s in self.iterate(label) if s.id == image_id])


class FeatureExtractor:
    """Computes one named group of numeric features.

    ``extract`` receives the decoded RGB image and a dict of face annotations (box,
    area fraction, number of faces) and returns ``{feature_name: float}``; features
    that cannot be computed are ``nan``. ``version`` goes into the cache key.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    Options: ClassVar[type[Options]] = Options

    def __init__(self, options: Options | None = None) -> None:
        self.options = options or self.Options()

    def feature_names(self) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def extract(self, image: "np.ndarray", face: dict[str, Any]) -> dict[str, float]:  # pragma: no cover
        raise NotImplementedError


# --- choosing steps by capability -------------------------------------------------
def steps_providing(steps: Mapping[str, type[Step]], annotation: str, prefer: Sequence[str] = ()) -> list[str]:
    """Names of the steps that provide ``annotation``: those in ``prefer`` (e.g. a configured
    chain) first, in that order, then the rest in registration order."""
    names = [n for n in prefer if n in steps] + [n for n in steps if n not in prefer]
    return [n for n in names if annotation in steps[n].provides]


def chain_providing(steps: Mapping[str, type[Step]], annotations: Sequence[str],
                    prefer: Sequence[str] = ()) -> list[str]:
    """A short chain of installed steps that together provide ``annotations``, each step's
    ``requires`` met by an earlier one. LookupError names what nothing provides."""
    chain: list[str] = []
    have: set[str] = set()
    for wanted in annotations:
        if wanted in have:
            continue
        candidates = [n for n in steps_providing(steps, wanted, prefer) if steps[n].requires <= have]
        if not candidates:
            raise LookupError(f"no installed chain step provides {wanted!r}"
                              + (f" after {', '.join(chain)}" if chain else ""))
        chain.append(candidates[0])
        have |= steps[candidates[0]].provides
    return chain


class EmptyJob(RunFailed, RuntimeError):
    """A job of a web source ended having found nothing."""


async def job_events(source: Source, job: Job) -> AsyncIterator["ImageEvent"]:
    """``source.events(job)``, and at its end :class:`EmptyJob` when a web source found nothing
    for the job (every executor takes a job's events through here)."""
    n = 0
    agen = source.events(job)
    try:
        async for event in agen:
            n += 1
            yield event
    finally:
        aclose = getattr(agen, "aclose", None)
        if aclose is not None:
            await aclose()
    if source.web and not n and not source.found_count(job):
        raise EmptyJob(source.empty_job_problem(job))


STORED = "location"
"""The annotation a storing step provides (``event.location``, where storage put the bytes): a
collect chain without a step that provides it stores nothing."""


def chain_stores(steps: Mapping[str, type[Step]], chain: Sequence[str]) -> bool:
    """Whether some step of ``chain`` stores the images it accepts (provides :data:`STORED`)."""
    return any(STORED in steps[name].provides for name in chain if name in steps)


def unmet_requirements(steps: Mapping[str, type[Step]], chain: Sequence[str]) -> list[tuple[int, str, set[str]]]:
    """``(index, step, missing)`` for each step of ``chain`` that requires what no earlier step provides."""
    have: set[str] = set()
    out = []
    for i, name in enumerate(chain):
        cls = steps.get(name)
        if cls is None:
            continue
        if missing := set(cls.requires) - have:
            out.append((i, name, missing))
        have |= cls.provides
    return out
