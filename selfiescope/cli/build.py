"""Builds the ``selfiescope`` command line: the built-in commands plus the commands that the
loaded plugins add through the ``selfiescope_commands`` hook (datasette's
``register_commands``), from the plugins of an :class:`~selfiescope.core.app.App`. A plugin
disabled in settings (``[plugins] disable``) is not loaded, so its commands are not there.
A command gets its own application with :func:`selfiescope.cli.common.load_app`."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from typing import Any, Optional

import typer

from .. import __version__
from . import collect, info, maintenance, model, privacy, record, review
from ..core.app import App
from .common import GuardedTyper, console, core_app, guard_all, out, remember_startup, tagged

# Imported for their side effect: each registers its built-in commands on ``core_app``.
BUILT_IN_COMMAND_MODULES = (collect, info, maintenance, model, privacy, record, review)

log = logging.getLogger("selfiescope.cli")


def _version(value: bool) -> None:
    if value:
        out.print(f"selfiescope {__version__}")
        raise typer.Exit()


@core_app.callback()
def main_callback(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="show the version and exit"),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="more log output (-vv for debug)"),
) -> None:
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


@dataclass
class CommandsInfo:
    """What the plugins added to the application (for ``selfiescope plugins``)."""

    by_plugin: dict[str, list[str]] = field(default_factory=dict)
    disabled: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def entry_name(entry: Any) -> str | None:
    """The name a user types for a registered command (``CommandInfo``) or group (``TyperInfo``),
    as typer derives it when none was given."""
    if getattr(entry, "typer_instance", None) is not None:
        return entry.name or entry.typer_instance.info.name
    if entry.name:
        return entry.name
    return entry.callback.__name__.lower().replace("_", "-") if entry.callback else None


def command_names(app: typer.Typer) -> list[str]:
    """The names of the commands and command groups registered on ``app``, as typed."""
    names = [entry_name(e) for e in [*app.registered_commands, *app.registered_groups]]
    return [n for n in names if isinstance(n, str)]


def build_app(application: App | None) -> tuple[GuardedTyper, CommandsInfo]:
    """A fresh command line: the built-in commands, then each plugin's of ``application``, in
    registration order (none without it). A name that is already taken is not replaced: the later plugin's
    command is left out and the problem is reported (``selfiescope plugins``, and a warning when
    the CLI starts)."""
    app = GuardedTyper(**{k: getattr(core_app.info, k) for k in ("name", "help", "no_args_is_help")},
                       pretty_exceptions_enable=False, add_completion=False)
    app.registered_callback = core_app.registered_callback
    app.registered_commands = list(core_app.registered_commands)
    app.registered_groups = list(core_app.registered_groups)
    result = CommandsInfo(disabled=list(application.registry.disabled) if application else [])
    owner = {name: "selfiescope" for name in command_names(app)}
    if application is None:
        return app, result
    pm = application.registry.pm
    hook = pm.hook.selfiescope_commands
    for impl in hook.get_hookimpls():
        commands, groups = len(app.registered_commands), len(app.registered_groups)
        others = [p for p in pm.get_plugins() if p is not impl.plugin]
        pm.subset_hook_caller(hook.name, others)(app=app)  # through pluggy: traced like every hook
        new_commands = app.registered_commands[commands:]
        new_groups = app.registered_groups[groups:]
        kept_commands = [c for c in new_commands if _claim(c, owner, impl.plugin_name, result)]
        kept_groups = [g for g in new_groups if _claim(g, owner, impl.plugin_name, result)]
        app.registered_commands[commands:] = kept_commands
        app.registered_groups[groups:] = kept_groups
        for group in kept_groups:  # a plugin's sub-app may be a plain Typer: its commands end guarded too
            guard_all(group.typer_instance)
        added = [owner_name for owner_name, who in owner.items() if who == impl.plugin_name]
        if added:
            result.by_plugin[impl.plugin_name] = added
    return app, result


def _claim(entry: Any, owner: dict[str, str], plugin: str, result: CommandsInfo) -> bool:
    """Record ``plugin`` as the owner of ``entry``'s name; False (and a problem) if it is taken."""
    name = entry_name(entry) or "?"
    if name in owner:
        result.problems.append(f"plugin {plugin} adds the command {name!r}, which {owner[name]} already provides: left out")
        return False
    owner[name] = plugin
    return True


def startup_settings_path(argv: list[str]) -> Optional[str]:
    """``--settings``/``-s`` from the command line, to know the disabled plugins before parsing."""
    for i, arg in enumerate(argv):
        if arg in ("--settings", "-s") and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--settings="):
            return arg.split("=", 1)[1]
    return None


def startup_application(settings_path: Optional[str] = None) -> App:
    """The application for the settings the command will read (built-in defaults when they
    cannot be read: the command itself then reports that, with exit code 2). Raises
    :class:`~selfiescope.core.settings.SettingsError` when its plugins cannot be loaded (an
    unknown name in ``[plugins] disable``, a plugin that fails to import)."""
    from ..core.settings import Settings, SettingsError, load_settings

    try:
        settings = load_settings(settings_path)
    except (SettingsError, OSError):
        settings = Settings()
    return App.create(settings)


def help_application(settings_path: Optional[str]) -> tuple[App | None, list[str]]:
    """For ``--help``: the application without the enabled plugins that fail to import (help
    must work to find out how to turn them off), and the problems to warn of."""
    from ..core.plugins import PluginImportError
    from ..core.settings import Settings, SettingsError, load_settings

    try:
        settings = load_settings(settings_path)
    except (SettingsError, OSError):
        settings = Settings()
    problems: list[str] = []
    skipped: list[str] = []
    while True:
        plugins = {**settings.plugins, "disable": [*settings.disabled_plugins, *skipped]}
        try:
            return App.create(settings.model_copy(update={"plugins": plugins})), problems
        except PluginImportError as exc:
            problems += exc.problems
            if not exc.plugin or exc.plugin in skipped:
                return None, problems
            skipped.append(exc.plugin)
        except SettingsError as exc:
            return None, problems + exc.problems


def make_app(settings_path: Optional[str] = None) -> tuple[GuardedTyper, CommandsInfo]:
    """The command line for the settings at ``settings_path`` (default: as every command finds them)."""
    from ..core.settings import SettingsError

    try:
        return build_app(startup_application(settings_path))
    except SettingsError:  # each command says so when it loads its application
        return build_app(None)


_built: tuple[GuardedTyper, CommandsInfo] | None = None


def current(settings_path: Optional[str] = None) -> tuple[GuardedTyper, CommandsInfo]:
    """The application, built once per process (on first use: importing the CLI loads no plugin)."""
    global _built
    if _built is None:
        _built = make_app(settings_path)
    return _built


def __getattr__(name: str) -> Any:  # PEP 562: ``app`` and ``commands_info`` are built on first use
    if name == "app":
        return current()[0]
    if name == "commands_info":
        return current()[1]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def needs_plugin_commands(argv: list[str]) -> bool:
    """Whether this command line can reach a plugin's command: the top-level help (which lists
    them) or a command that is not built in. A built-in command (or ``--version``) is served
    without importing any plugin module here (the pipeline it calls loads what it needs)."""
    command = next((a for a in argv if not a.startswith("-")), None)  # top-level options take no value
    if command is None:
        return not argv or "--help" in argv
    return command not in command_names(core_app)


def main() -> None:
    argv = sys.argv[1:]
    wants_help = "--help" in argv
    if not needs_plugin_commands(argv) and not wants_help:
        build_app(None)[0]()
        return
    from ..core.settings import SettingsError
    from ..exits import EXIT_USAGE

    try:
        application = startup_application(startup_settings_path(argv))
    except SettingsError as exc:  # a plugin's command cannot be found without its plugins
        if not wants_help:
            console.print(exc.render(), highlight=False, markup=False)
            raise SystemExit(EXIT_USAGE) from None
        # Help always works (it is how one learns to turn a plugin off); each problem is one line.
        maybe, problems = help_application(startup_settings_path(argv))
        for problem in problems:
            console.print(tagged("warning:", "yellow", f" {problem}"), highlight=False, soft_wrap=True)
        build_app(maybe)[0]()
        return
    app, built = build_app(application)
    remember_startup(application)
    for problem in built.problems:
        console.print(tagged("warning:", "yellow", f" {problem}"), highlight=False)
    app()
