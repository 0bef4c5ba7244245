"""The application object: one per command (as datasette has one ``Datasette``, pytest one
``Config``, Scrapy one ``Crawler``).

An :class:`App` is made once, where a command starts (the CLI, a test, an embedding program),
from the settings. It holds them, the plugin registry (built by
:func:`~selfiescope.core.plugins.build_registry`, the one place plugins are loaded, with
``[plugins] disable`` applied before anything is imported) and the services every run of the
command shares: the storage root's lock and the storage backend. Pipelines take the app;
a run's :class:`~selfiescope.core.context.RunContext` is made from it, and components reach
it as ``run.app``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .lock import RootLock
from .plugins import Registry, build_registry
from .settings import PipelineBase, Settings, SettingsError

if TYPE_CHECKING:  # pragma: no cover
    from .context import RunContext
    from .manifest import Manifest


@dataclass(frozen=True)
class App:
    """Settings, the plugins they enable, and the services shared by a command's runs."""

    settings: Settings
    registry: Registry
    plugins: tuple[Any, ...] = ()  # plugin objects given besides the installed ones (tests, embedding)
    entrypoints: bool | None = None  # None: load entry points unless $SELFIESCOPE_NO_ENTRYPOINTS

    @classmethod
    def create(cls, settings: Settings, *, plugins: Iterable[Any] | None = (), entrypoints: bool | None = None) -> "App":
        """The application for ``settings``: plugins loaded with ``[plugins] disable`` applied
        (an unknown name there, or an enabled plugin that fails to import, is a
        :class:`~selfiescope.core.settings.SettingsError`), plus the ``plugins`` objects."""
        plugins = tuple(plugins or ())
        try:
            registry = build_registry(settings.disabled_plugins, plugins, entrypoints)
        except SettingsError as exc:
            if exc.source != "settings" or settings.source == "settings":
                raise
            renamed = type(exc)(exc.problems, settings.source)  # name the file the settings came from
            renamed.__dict__.update(exc.__dict__ | {"source": settings.source})
            raise renamed from exc
        return cls(settings, registry, plugins, entrypoints)

    def with_settings(self, settings: Settings) -> "App":
        """The same application under settings derived from its own (a command's overrides, a
        recording's settings): the registry is kept when they disable the same plugins."""
        if list(settings.disabled_plugins) == list(self.settings.disabled_plugins):
            return App(settings, self.registry, self.plugins, self.entrypoints)
        return App.create(settings, plugins=self.plugins, entrypoints=self.entrypoints)

    def register(self, plugin: Any) -> None:
        """Add a plugin object for the rest of this command (the CLI's progress display): its
        observer hooks see every run; components come only from the plugins loaded at creation."""
        self.registry.pm.register(plugin)

    @property
    def hook(self) -> Any:
        return self.registry.pm.hook

    def root_lock(self) -> RootLock:
        """The storage root's one-writer lock (not yet taken), waiting as settings say."""
        storage = self.settings.storage
        return RootLock(storage.root, wait_s=storage.lock_timeout_s if storage.wait_for_lock else 0.0)

    def run_context(self, pipeline_name: str, pipeline: PipelineBase | None, manifest: "Manifest",
                    **fields: Any) -> "RunContext":
        """A run of this application (``fields``: the other :class:`RunContext` fields)."""
        from .context import RunContext

        return RunContext(self, pipeline_name, pipeline, manifest, **fields)

    def storage_backend(self, manifest: "Manifest", purpose: str) -> Any:
        """The storage backend ``storage.backend`` names, made (not opened) for a run ``purpose``."""
        return self.run_context(purpose, None, manifest).component("storage", self.settings.storage.backend)
