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


# What each built-in provides, as ``kind.name``: read (never imported) when a plugin is disabled,
# so a setting that uses one of its components can name the plugin. A third-party package
# declares the same in the ``selfiescope.components`` entry-point group (``kind.name =
# "its plugin module"``). tests/test_app.py keeps this table equal to what the modules register.
BUILTIN_PROVIDES: dict[str, tuple[str, ...]] = {
    "selfiescope.plugins.folder": ("source.folder",),
    "selfiescope.plugins.decode": ("step.decode",),
    "selfiescope.plugins.face_area": ("step.face_area",),
    "selfiescope.plugins.dedup": ("step.dedup",),
    "selfiescope.plugins.store": ("step.store",),
    "selfiescope.plugins.files_storage": ("storage.files",),
    "selfiescope.plugins.fsspec_storage": ("storage.fsspec",),
    "selfiescope.plugins.instagram": ("source.instagram",),
    "selfiescope.plugins.gallery": ("source.gallery",),
    "selfiescope.plugins.features": ("features.geometry", "features.landmarks", "features.embedding", "features.image"),
    "selfiescope.plugins.embed": ("features.scene",),
}
COMPONENTS_GROUP = f"{hookspecs.PROJECT}.components"


def declared_components(name: str) -> dict[str, str]:
    """``{component: kind}`` that the plugin ``name`` (an alias or an entry-point name) declares,
    from :data:`BUILTIN_PROVIDES` or its package's entry-point metadata: nothing is imported."""
    if name in BUILTIN_ALIASES:
        declared: Iterable[str] = BUILTIN_PROVIDES.get(BUILTIN_ALIASES[name], ())
    else:
        modules = {ep.value for ep in importlib.metadata.entry_points(group=hookspecs.PROJECT, name=name)}
        declared = [ep.name for ep in importlib.metadata.entry_points(group=COMPONENTS_GROUP) if ep.value in modules]
    return {full.split(".", 1)[1]: full.split(".", 1)[0] for full in declared if "." in full}


class PluginImportError(SettingsError):
    """An enabled plugin failed to import: one line naming it, and how to turn it off."""

    plugin: str = ""  # its name, as [plugins] disable takes it


def _import_failure(name: str, what: str, exc: BaseException) -> PluginImportError:
    log.debug("plugin %s failed to import", name, exc_info=exc)
    first = (str(exc).splitlines() or [""])[0][:200]
    error = PluginImportError([
        f"plugins: plugin {name!r} ({what}) failed to import ({type(exc).__name__}: {first}); "
        f"fix or uninstall it, or turn it off with [plugins] disable = [\"{name}\"]"
    ])
    error.plugin = name
    return error


def _unknown_disabled(disable: Iterable[str]) -> list[str]:
    known = {*BUILTIN_ALIASES, *installed_plugin_names()}
    return [
        f"plugins.disable: unknown plugin {name!r} (known: {', '.join(sorted(known))})"
        for name in disable if name not in known
    ]


def build_registry(
    disable: Iterable[str] = (), plugins: Iterable[Any] = (), entrypoints: bool | None = None
) -> "Registry":
    """The one place plugins are loaded: the built-ins, then the installed third-party plugins
    (entry points, unless ``entrypoints`` is False or ``$SELFIESCOPE_NO_ENTRYPOINTS`` is set),
    then the ``plugins`` objects. The plugins ``disable`` names (built-in aliases or entry-point
    names) are blocked first, so a disabled module is never imported and a disabled entry point
    never loaded; what they declare they provide is kept for :meth:`Registry.why_missing`.

    An unknown name in ``disable``, or an enabled plugin that fails to import, is a
    :class:`~selfiescope.core.settings.SettingsError` naming the key or the plugin."""
    disable = list(dict.fromkeys(disable))
    if problems := _unknown_disabled(disable):
        raise SettingsError(problems)
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
            raise _import_failure(builtin_alias(modname), f"built-in {modname}", exc) from exc
        except Exception as exc:  # noqa: BLE001 - named like a third party's, with how to turn it off
            raise _import_failure(builtin_alias(modname), f"built-in {modname}", exc) from exc
        pm.register(mod, name=modname)
    if entrypoints is None:
        entrypoints = not os.environ.get("SELFIESCOPE_NO_ENTRYPOINTS")
    if entrypoints:
        for ep in importlib.metadata.entry_points(group=hookspecs.PROJECT):
            if pm.is_blocked(ep.name) or pm.get_plugin(ep.name) is not None:
                continue
            try:  # one entry point at a time, so a failure names its plugin
                pm.load_setuptools_entrypoints(hookspecs.PROJECT, name=ep.name)
            except Exception as exc:  # noqa: BLE001 - a third party's import can raise anything
                raise _import_failure(ep.name, f"entry point {ep.value}", exc) from exc
    for obj in plugins:
        if not pm.is_registered(obj):  # a module also installed is loaded through its entry point
            pm.register(obj)
    registry = Registry.from_manager(pm)
    for name in disable:
        registry.disabled[name] = plugin_module_name(name)
        declared = declared_components(name)
        for component, kind in declared.items():
            registry.disabled_components[component] = (kind, name)
        if not declared:
            registry.undeclared_disabled.append(name)
    return registry


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
    undeclared_disabled: list[str] = field(default_factory=list)  # disabled plugins that declare no components

    @classmethod
    def from_manager(cls, pm: pluggy.PluginManager) -> "Registry":
        reg = cls(pm)
        dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
        owners: dict[str, str] = {}  # namespace: the plugin whose components declare it
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
                            owner = owners.setdefault(comp.state.namespace, impl.plugin_name)
                            if owner != impl.plugin_name:  # a namespace is one plugin's, even declared alike
                                raise StateError(f"plugin state namespace {comp.state.namespace!r} is declared twice, "
                                                 f"by plugin {owner} and by another: two plugins cannot share a "
                                                 "namespace")
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

    def why_missing(self, name: str) -> str | None:
        """Why the component ``name`` is not available when a disabled plugin provides it, else None."""
        if name not in self.disabled_components:
            if self.undeclared_disabled:  # they may provide it: say so rather than "unknown" alone
                names = ", ".join(repr(p) for p in self.undeclared_disabled)
                return (f"no enabled plugin provides {name!r}; [plugins] disable turns off {names}, "
                        "which may (a plugin declares its components in the selfiescope.components entry points)")
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


def make_component(cls: type[Component], options: dict[str, Any], run: Any) -> Component:
    return cls(cls.Options.model_validate(options), run)
