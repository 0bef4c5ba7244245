"""The public plugin API: everything a plugin author imports, from one place.

::

    from selfiescope.api import ImageEvent, Options, Reject, Step, hookimpl

Names here are stable across releases; modules under :mod:`selfiescope.core` may move.
The hooks themselves are documented in :mod:`selfiescope.core.hookspecs` (and
docs/plugins.md); the CLI helpers a ``selfiescope_commands`` hook may use live in
:mod:`selfiescope.cli.common`.
"""

from __future__ import annotations

from .core.components import (
    Component, FeatureExtractor, Job, Options, Source, Step, Storage, StorageError, StoredImage,
)
from .core.context import RunContext
from .core.events import Decision, FaceBox, ImageEvent, Origin, Reject
from .core.hookspecs import hookimpl
from .core.review_facets import ReviewFacet
from .core.work import WorkItem

__all__ = [
    "Component",
    "Decision",
    "FaceBox",
    "FeatureExtractor",
    "ImageEvent",
    "Job",
    "Options",
    "Origin",
    "Reject",
    "ReviewFacet",
    "RunContext",
    "Source",
    "Step",
    "Storage",
    "StorageError",
    "StoredImage",
    "WorkItem",
    "hookimpl",
]
