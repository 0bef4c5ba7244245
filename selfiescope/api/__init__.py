"""The public plugin API: everything a plugin author imports, from one place.

::

    from selfiescope.api import ImageEvent, Options, Reject, Step, hookimpl

Names here are stable across releases; modules under :mod:`selfiescope.core` may move.
The hooks themselves are documented in :mod:`selfiescope.core.hookspecs` (and
docs/plugins.md). Beside the component classes, four submodules group what some plugins need,
imported only by the plugins that use them (so a chain step loads no browser and no CLI):

- :mod:`selfiescope.api.web`: the shared browser pool, the request budget, image downloads
  and deadlines, for sources that browse a site;
- :mod:`selfiescope.api.dataset`: the manifest, storage helpers, metadata stripping and the
  perceptual hashes, for steps and backends that keep state;
- :mod:`selfiescope.api.recording`: recording and replaying a browser session;
- :mod:`selfiescope.api.cli`: the helpers a ``selfiescope_commands`` hook's commands use.
"""

from __future__ import annotations

from ..core.app import App
from ..core.components import Component, FeatureExtractor, Job, Options, Source, Step, Storage, StoredImage
from ..core.errors import (
    BrowserError, DeadlineExceeded, RunFailed, SelfiescopeError, SettingsError, SiteError, StorageError, UsageError,
)
from ..core.context import RunContext
from ..core.events import Decision, FaceBox, ImageEvent, Origin, Reject
from ..core.hookspecs import hookimpl
from ..core.review_facets import ReviewFacet
from ..core.plugin_state import PluginState, StateError, StateHandle, StateTable, declare
from ..core.settings import Settings
from ..core.text import printable
from ..core.work import WorkItem

__all__ = [
    "App",
    "BrowserError",
    "Component",
    "DeadlineExceeded",
    "Decision",
    "FaceBox",
    "FeatureExtractor",
    "ImageEvent",
    "Job",
    "Options",
    "Origin",
    "PluginState",
    "Reject",
    "RunContext",
    "ReviewFacet",
    "RunFailed",
    "SelfiescopeError",
    "Settings",
    "SettingsError",
    "SiteError",
    "Source",
    "StateError",
    "StateHandle",
    "StateTable",
    "Step",
    "Storage",
    "StorageError",
    "StoredImage",
    "UsageError",
    "WorkItem",
    "declare",
    "hookimpl",
    "printable",
]
