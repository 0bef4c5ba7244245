"""What a run hands to its components: settings, manifest, storage, executor, services."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, TypeGuard

from .manifest import Manifest
from .plugin_state import StateError, StateHandle, declared
from .plugins import Registry, make_component
from .settings import PipelineBase, Settings
from .stats import RunStats

if TYPE_CHECKING:  # pragma: no cover
    from .app import App


def is_fatal(exc: BaseException) -> TypeGuard[OSError]:
    """Whether ``exc`` is a fault every later image would meet too (the disk is full)."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


@dataclass
class RunContext:
    """One run of an :class:`~selfiescope.core.app.App` (made by ``app.run_context``): its
    settings and plugins are the app's."""

    app: "App"
    pipeline_name: str
    pipeline: PipelineBase | None
    manifest: Manifest
    stats: RunStats = field(default_factory=RunStats)
    run_id: int | None = None
    storage: Any = None  # the Storage backend chosen by storage.backend
    executor: ThreadPoolExecutor | None = None
    services: dict[str, Any] = field(default_factory=dict)
    closers: list[Callable[[], Any]] = field(default_factory=list)  # run at the end, last first
    halted: OSError | None = None  # set by :meth:`halt`: the run stops taking images and ends with it

    def halt(self, exc: OSError) -> None:
        """Stop the run for a fault no later image can escape (a full disk): images not yet
        started are left for the rerun, and the run ends with ``exc`` (one line, exit 1)."""
        if self.halted is None:
            self.halted = exc

    @property
    def settings(self) -> Settings:
        return self.app.settings

    @property
    def registry(self) -> Registry:
        return self.app.registry

    @property
    def hook(self) -> Any:
        return self.registry.pm.hook

    @property
    def root(self):  # noqa: ANN201 - Path
        return self.settings.storage.root

    def options_for(self, name: str) -> dict[str, Any]:
        return self.settings.component_options(name, self.pipeline)

    def component(self, kind: str, name: str) -> Any:
        table = getattr(self.registry, kind)
        return make_component(table[name], self.options_for(name), self)

    def service(self, key: str, factory: Callable[[], Any]) -> Any:
        """A resource shared by all components of the run (created once, on first use)."""
        if key not in self.services:
            self.services[key] = factory()
        return self.services[key]

    def state(self, namespace: str) -> StateHandle:
        """The handle on a plugin's own tables (declared with :class:`~.plugin_state.PluginState`)."""
        for declaration in declared():
            if declaration.namespace == namespace:
                return self.manifest.state(declaration)
        raise StateError(f"no plugin declares the state namespace {namespace!r}")

    def settings_hash(self) -> str:
        blob = json.dumps(self.settings.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_threads(settings: Settings) -> int:
    return settings.engine.threads or os.cpu_count() or 2
