"""What a run hands to its components: settings, manifest, storage, executor, services."""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from .manifest import Manifest
from .plugins import Registry, make_component
from .settings import PipelineBase, Settings
from .stats import RunStats


@dataclass
class RunContext:
    settings: Settings
    registry: Registry
    pipeline_name: str
    pipeline: PipelineBase | None
    manifest: Manifest
    stats: RunStats = field(default_factory=RunStats)
    run_id: int | None = None
    storage: Any = None  # the Storage backend chosen by storage.backend
    executor: ThreadPoolExecutor | None = None
    services: dict[str, Any] = field(default_factory=dict)
    closers: list[Callable[[], Any]] = field(default_factory=list)  # run at the end, last first

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

    def settings_hash(self) -> str:
        blob = json.dumps(self.settings.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_threads(settings: Settings) -> int:
    return settings.engine.threads or os.cpu_count() or 2
