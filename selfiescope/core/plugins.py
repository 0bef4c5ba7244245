"""The plugin manager.

Built-in plugins are modules listed in :data:`DEFAULT_PLUGINS` and registered exactly
like third-party ones, which load from the ``selfiescope`` entry-point group. Set
``SELFIESCOPE_TRACE_PLUGINS=1`` to log every hook call with its arguments and result.

Any plugin can be turned off, as pytest's ``-p no:NAME`` does: ``[plugins] disable`` in
settings lists built-ins by their short name (the module's last part, :func:`builtin_alias`)
or third-party plugins by their entry-point name. A disabled plugin's hooks never run and
its components are unknown; settings that use one say which plugin provides it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy
from pydantic import BaseModel

from . import hookspecs
from .plugin_state import PluginState, StateError, declare
from .components import Component, FeatureExtractor, Options, Source, Step, Storage
from .settings import SettingsError

log = logging.getLogger("selfiescope.plugins")

DEFAULT_PLUGINS: tuple[str, ...] = (
    "selfiescope.plugins.folder",
    "selfiescope.plugins.decode",
    "selfiescope.plugins.face_area",
    "selfiescope.plugins.dedup",
    "selfiescope.plugins.store",
    "selfiescope.plugins.files_storage",
    "selfiescope.plugins.fsspec_storage",
    "selfiescope.plugins.instagram",
    "selfiescope.plugins.gallery",
    "selfiescope.plugins.features",
    "selfiescope.plugins.embed",
)


def _new_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    if os.environ.get("SELFIESCOPE_TRACE_PLUGINS"):
        trace_log = logging.getLogger("selfiescope.trace")

        def before(hook_name: str, hook_impls: list[Any], kwargs: dict[str, Any]) -> None:
            names = [impl.plugin_name for impl in hook_impls]
            trace_log.warning("hook %s(%s) -> %s", hook_name, ", ".join(kwargs), names)

        def after(outcome: Any, hook_name: str, hook_impls: list[Any], kwargs: dict[str, Any]) -> None:
            trace_log.warning("hook %s returned %r", hook_name, outcome.get_result())

        pm.add_hookcall_monitoring(before, after)
    return pm


def builtin_alias(modname: str) -> str:
    """The short name of a built-in plugin module (what ``[plugins] disable`` lists)."""
    return modname.rsplit(".", 1)[-1]


BUILTIN_ALIASES: dict[str, str] = {builtin_alias(m): m for m in DEFAULT_PLUGINS}


def plugin_module_name(name: str) -> str:
    """The name a plugin is registered under: a built-in's alias -> its module; else as given."""
    return BUILTIN_ALIASES.get(name, name)


def installed_plugin_names() -> set[str]:
    """Entry-point names of the installed third-party plugins (loaded or not)."""
    return {ep.name for ep in importlib.metadata.entry_points(group=hookspecs.PROJECT)}


def load_plugin_manager(
    extra: list[Any] | None = None, entrypoints: bool | None = None, disable: Iterable[str] = ()
) -> pluggy.PluginManager:
    """Register the built-ins, then installed third-party plugins, then ``extra`` objects;
    the plugins ``disable`` names (aliases or entry-point names) are blocked, never imported."""
    pm = _new_manager()
    for name in disable:
        pm.set_blocked(plugin_module_name(name))
    for modname in DEFAULT_PLUGINS:
        if pm.is_blocked(modname):
            continue
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name == modname:  # a built-in not present in this build
                continue
            raise
        pm.register(mod, name=modname)
    if entrypoints is None:
        entrypoints = not os.environ.get("SELFIESCOPE_NO_ENTRYPOINTS")
    if entrypoints:
        pm.load_setuptools_entrypoints(hookspecs.PROJECT)
    for obj in extra or []:
        pm.register(obj)
    return pm


@dataclass
class ComponentInfo:
    name: str
    kind: str
    cls: type
    plugin: str
    dist: str | None


@dataclass
class Registry:
    """Every named component the loaded plugins provide, by kind."""

    pm: pluggy.PluginManager
    sources: dict[str, type[Source]] = field(default_factory=dict)
    steps: dict[str, type[Step]] = field(default_factory=dict)
    storage: dict[str, type[Storage]] = field(default_factory=dict)
    features: dict[str, type[FeatureExtractor]] = field(default_factory=dict)
    info: list[ComponentInfo] = field(default_factory=list)
    states: dict[str, PluginState] = field(default_factory=dict)  # namespace -> tables a component keeps
    disabled: dict[str, str] = field(default_factory=dict)  # disabled name -> registration name
    disabled_components: dict[str, tuple[str, str]] = field(default_factory=dict)  # component -> (kind, plugin)

    @classmethod
    def from_manager(cls, pm: pluggy.PluginManager) -> "Registry":
        reg = cls(pm)
        dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
        kinds = (
            ("source", pm.hook.selfiescope_sources, reg.sources),
            ("step", pm.hook.selfiescope_steps, reg.steps),
            ("storage", pm.hook.selfiescope_storage, reg.storage),
            ("features", pm.hook.selfiescope_features, reg.features),
        )
        for kind, hook, target in kinds:
            for impl in hook.get_hookimpls():  # registration order
                # Called through pluggy (one plugin at a time, to know who provides what),
                # so SELFIESCOPE_TRACE_PLUGINS sees these calls too.
                others = [p for p in pm.get_plugins() if p is not impl.plugin]
                results = pm.subset_hook_caller(hook.name, others)()
                for comp in (c for result in results for c in (result or [])):
                    if not comp.name:
                        raise TypeError(f"{comp!r} from plugin {impl.plugin_name} has no name")
                    if comp.name in target:
                        prev = next(i for i in reg.info if i.kind == kind and i.name == comp.name)
                        raise ValueError(
                            f"{kind} {comp.name!r} is provided twice: by {prev.plugin} and {impl.plugin_name}"
                        )
                    target[comp.name] = comp
                    if getattr(comp, "state", None) is not None:  # its tables are made in every manifest opened from now on
                        try:
                            reg.states[comp.state.namespace] = declare(comp.state)
                        except StateError as exc:
                            raise StateError(f"{exc} ({kind} {comp.name!r} of plugin {impl.plugin_name})") from None
                    dist = dists.get(id(impl.plugin))
                    reg.info.append(
                        ComponentInfo(
                            comp.name, kind, comp, impl.plugin_name,
                            f"{dist.project_name} {dist.version}" if dist else None,
                        )
                    )
        return reg

    _TABLES = {"source": "sources", "step": "steps", "storage": "storage", "features": "features"}

    def disable(self, names: Iterable[str]) -> list[str]:
        """Turn off the plugins ``names`` (``[plugins] disable``): unregister their hooks and
        forget their components, remembering which so :meth:`why_missing` can say so.
        Idempotent. Returns problems (unknown names) phrased for settings."""
        problems = []
        for name in names:
            if name in self.disabled:
                continue
            regname = plugin_module_name(name)
            plugin = self.pm.get_plugin(regname)
            if plugin is not None:
                self.pm.unregister(name=regname)
            elif not (self.pm.is_blocked(regname) or name in installed_plugin_names()):
                known = sorted({*BUILTIN_ALIASES, *installed_plugin_names()})
                problems.append(f"plugins.disable: unknown plugin {name!r} (known: {', '.join(known)})")
                continue
            self.pm.set_blocked(regname)
            self.disabled[name] = regname
            for info in [i for i in self.info if i.plugin == regname]:
                getattr(self, self._TABLES[info.kind]).pop(info.name, None)
                self.info.remove(info)
                self.disabled_components[info.name] = (info.kind, name)
        return problems

    def why_missing(self, name: str) -> str | None:
        """Why the component ``name`` is not available when a disabled plugin provides it, else None."""
        if name not in self.disabled_components:
            return None
        kind, plugin = self.disabled_components[name]
        return f"{kind} {name!r} is provided by plugin {plugin!r}, which [plugins] disable turns off"

    def all_names(self) -> set[str]:
        return {*self.sources, *self.steps, *self.storage, *self.features}

    def options_model(self, name: str) -> type[BaseModel]:
        for table in (self.steps, self.sources, self.storage, self.features):
            if name in table:
                return table[name].Options
        return Options

    def hooks_of(self, plugin_name: str) -> list[str]:
        plugin = self.pm.get_plugin(plugin_name)
        return sorted(impl.name for impl in self.pm.get_hookcallers(plugin) or [])


def load_registry(
    extra: list[Any] | None = None, entrypoints: bool | None = None, disable: Iterable[str] = ()
) -> Registry:
    """The loaded plugins' components, less those of the plugins ``disable`` names.

    Loaded, then disabled (their hooks unregistered), so the registry still knows which
    components a disabled plugin provides and a settings check can name it; an unknown name
    is a :class:`~selfiescope.core.settings.SettingsError`.
    """
    registry = Registry.from_manager(load_plugin_manager(extra, entrypoints))
    if problems := registry.disable(disable):
        raise SettingsError(problems)
    return registry


def registry_for(settings: Any, extra: list[Any] | None = None, entrypoints: bool | None = None) -> Registry:
    """The registry a command uses under ``settings``: its ``[plugins] disable`` applied."""
    return load_registry(extra, entrypoints, settings.disabled_plugins)


def make_component(cls: type[Component], options: dict[str, Any], run: Any) -> Component:
    return cls(cls.Options.model_validate(options), run)
