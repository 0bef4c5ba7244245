"""Base classes for the things plugins provide: sources, chain steps, storage, features.

Each component has a unique ``name`` (what settings refer to) and an ``Options``
pydantic model; options come from ``[plugins.NAME]`` and can be overridden per pipeline
in ``[pipelines.P.options.NAME]``. Unknown option keys are errors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from .context import RunContext
    from .events import ImageEvent
    from .settings import ScrapePipeline


class Options(BaseModel):
    """Base for component options: strict about unknown keys."""

    model_config = ConfigDict(extra="forbid")


class Component:
    name: ClassVar[str] = ""
    Options: ClassVar[type[Options]] = Options

    def __init__(self, options: Options, run: "RunContext") -> None:
        self.options = options
        self.run = run

    async def open(self) -> None:
        """Acquire resources before the first event (models, connections)."""

    async def close(self) -> None:
        """Release resources; called once, also after a cancelled run."""


@dataclass(frozen=True)
class Job:
    """One unit of work of a source: a hashtag, a folder, a gallery URL."""

    source: str
    target: str
    label: str
    limit: int | None = None


class Source(Component):
    """Yields image events for a job. Jobs of one run run concurrently."""

    def jobs(self, pipeline: "ScrapePipeline") -> list[Job]:
        return [
            Job(self.name, target, pipeline.label, pipeline.limit) for target in pipeline.targets()
        ]

    def events(self, job: Job) -> AsyncIterator["ImageEvent"]:  # pragma: no cover - abstract
        raise NotImplementedError


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

    # --- capability: the decoded image's size a step needs (issue 11, one decode per image) ---
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


@dataclass
class StoredImage:
    id: str
    label: str
    location: str
    content_hash: str | None = None


class StorageError(Exception):
    """Writing to storage failed (disk full, no permission, a network error): a failure of
    the run, never a rejection of the image. The engine reads ``code``."""

    code = "store_failed"


class Storage(Component):
    """Where accepted images go. Any exception from ``write`` is a failure to store: the
    image is not counted as decided, the run ends with errors, and a rerun retries it."""

    async def write(self, event: "ImageEvent") -> str:  # pragma: no cover - abstract
        """Store ``event.data`` under ``event.label``/``event.id``; return its location."""
        raise NotImplementedError

    async def exists(self, image_id: str, label: str) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def iterate(self, label: str | None = None) -> Iterator[StoredImage]:  # pragma: no cover
        raise NotImplementedError

    async def read(self, stored: StoredImage) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    async def delete(self, stored: StoredImage) -> bool:  # pragma: no cover - abstract
        """Remove a stored image (``selfiescope forget``); True if it was there.

        Must be idempotent: an interrupted forget calls it again for the same image.
        """
        raise NotImplementedError


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
