"""What every command shares: the guard, the consoles, the common options, settings loading.

A plugin's ``selfiescope_commands`` hook may use these too (``load_app``, ``fail``,
``emit_json``, ``SettingsOpt``, ``JsonOpt``); commands registered on the ``app`` the hook
receives are guarded already.
"""

from __future__ import annotations

import functools
import inspect
import io
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from typer.models import OptionInfo
from rich.console import Console
from rich.text import Text

from ..core.app import App
from ..core.settings import Settings, SettingsError, load_settings
from ..core.checks import check_paths
from ..core.text import RedactingFilter, path_text_problem, printable, printable_tree
from ..exits import EXIT_INTERRUPTED, EXIT_USAGE, classify

def make_console(stderr: bool = False, **options: Any) -> Console:
    """A console; one that writes to a file, a pipe or a CI log never wraps a line (rich would at
    80 columns): whatever reads it wraps, and a message stays one line for ``grep``. ``COLUMNS``,
    when set, still decides.

    Rich markup is off: every string printed, a table's cells and title included, shows as it
    is, so a path or a message naming ``[plugins.decode] min_side`` keeps its brackets. Colour
    comes from :func:`tagged` (or a ``rich.text.Text``), never from markup in a string."""
    options.pop("markup", None)
    console = Console(stderr=stderr, markup=False, **options)
    if console.is_terminal or os.environ.get("COLUMNS"):
        return console
    return Console(stderr=stderr, soft_wrap=True, width=UNWRAPPED_WIDTH, markup=False, **options)


def tagged(tag: str, style: str, message: object = "") -> Text:
    """``tag`` in ``style``, then ``message`` exactly as given (no markup read in either)."""
    return Text.assemble((tag, style), printable(message))


UNWRAPPED_WIDTH = 100_000
console = make_console(stderr=True)
out = make_console()


def guarded(command):  # noqa: ANN001, ANN201 - wraps any typer command function
    """Every command ends through :func:`selfiescope.exits.classify`: a known problem prints one
    clear line (no traceback) and exits with its code; only a bug keeps its traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        safe_streams()
        try:
            refuse_unusable_paths(command, kwargs)
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except BaseException as exc:  # noqa: BLE001 - classified below, re-raised when unknown
            known = classify(exc)
            if known is None:
                raise
            code, message = known
            logging.getLogger("selfiescope.cli").debug("the command ended with %s", type(exc).__name__, exc_info=exc)
            style = "yellow" if code == EXIT_INTERRUPTED else "red"
            # settings problems come as a titled list ("Invalid settings in FILE:"), never prefixed
            prefix = "" if code == EXIT_INTERRUPTED or isinstance(exc, SettingsError) else "error: "
            console.print(Text(prefix + printable(message), style=style), highlight=False, soft_wrap=True)
            raise typer.Exit(code) from None

    wrapper.selfiescope_guarded = True  # type: ignore[attr-defined]
    return wrapper


def safe_streams() -> None:
    """Let stdout and stderr show any text: a file name's undecodable bytes (lone surrogates)
    come out as escapes instead of a UnicodeEncodeError in whatever prints them."""
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors="backslashreplace")
            except (ValueError, io.UnsupportedOperation):  # a closed or foreign stream: leave it
                pass


def refuse_unusable_paths(command: Any, arguments: dict[str, Any]) -> None:
    """A path argument that cannot name a file at all (a NUL, an unknown ``~user``) ends the
    command here, naming the option, before any work; every other check stays with the command."""
    for name, value in arguments.items():
        for item in value if isinstance(value, list | tuple) else [value]:
            if isinstance(item, Path) and (problem := path_text_problem(item)):
                raise fail(f"{_option_name(command, name)}: {problem}")


def _option_name(command: Any, parameter: str) -> str:
    """How the user types ``command``'s parameter ``parameter`` (``--model-dir``, or ``FOLDER``)."""
    try:
        default = inspect.signature(command).parameters[parameter].default
    except (KeyError, TypeError, ValueError):
        return parameter
    if isinstance(default, OptionInfo):
        return next((d for d in default.param_decls if d.startswith("--")), "--" + parameter.replace("_", "-"))
    return parameter.upper()


def guard_all(app: typer.Typer) -> None:
    """Put every command of ``app`` and of its groups, however registered, behind :func:`guarded`
    (a plugin's sub-app may be a plain ``typer.Typer``)."""
    for info in app.registered_commands:
        if info.callback is not None and not getattr(info.callback, "selfiescope_guarded", False):
            info.callback = guarded(info.callback)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            guard_all(group.typer_instance)


class GuardedTyper(typer.Typer):
    """A Typer whose commands all end through :func:`guarded`."""

    def command(self, *args: Any, **kwargs: Any):  # noqa: ANN201 - typer's decorator type
        register = super().command(*args, **kwargs)

        def decorator(fn):  # noqa: ANN001, ANN202
            register(guarded(fn))
            return fn

        return decorator


SettingsOpt = typer.Option(None, "--settings", "-s", help="settings file (default: ./settings.toml or $SELFIESCOPE_SETTINGS)")
JsonOpt = typer.Option(False, "--json", help="print a JSON result on stdout (for scripts)")

# --- dask: the --scheduler option (docs/scaling.md) ----------------------------------------
SchedulerOpt = typer.Option(
    None, "--scheduler",
    help="run the CPU work on Dask: a scheduler address (tcp://host:8786) or 'local' to start a "
    "LocalCluster here; implies compute.engine = 'dask'",
)


def with_scheduler(settings: Settings, scheduler: Optional[str]) -> Settings:
    from ..core.compute import with_scheduler as apply
    from ..core.settings import check_scheduler

    if scheduler:
        try:
            check_scheduler(scheduler)
        except ValueError as exc:
            raise fail(f"--scheduler: {exc}") from None
    return apply(settings, scheduler)
# --- end dask ----------------------------------------------------------------------------

WaitOpt = typer.Option(
    False, "--wait", help="if another run writes to the same storage root, wait for it (up to "
    "storage.lock_timeout_s) instead of exiting with code 2",
)


def with_wait(settings: Settings, wait: bool) -> Settings:
    if not wait:
        return settings
    return settings.model_copy(update={"storage": settings.storage.model_copy(update={"wait_for_lock": True})})


def checked_base_url(value: str | None) -> str | None:
    """A ``--base-url`` option's callback: a site URL, or a usage error naming the option."""
    from ..core.text import site_url_problem

    if value is not None and (problem := site_url_problem(value)):
        raise fail(f"--base-url: {problem}")
    return value


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    console.print(tagged("error:", "red", " " + printable(message)), highlight=False)
    return typer.Exit(code)


def load(settings_path: Optional[Path]) -> Settings:
    settings = load_settings(settings_path)  # a SettingsError ends the command through guarded()
    configure_logging(settings)
    return settings


def load_app(settings_path: Optional[Path], adjust: Callable[[Settings], Settings] | None = None) -> App:
    """The command's application: its settings (``adjust`` applies the command's options to
    them) and the plugins they enable. Every command makes it once, first, so a plugin that
    is broken and not disabled is one line and exit 2 for every command alike."""
    settings = load(settings_path)
    return app_for(adjust(settings) if adjust else settings)


def app_for(settings: Settings) -> App:
    """The application for ``settings`` (exit 2 with one line when settings or a plugin are unusable)."""
    if (reused := startup_app()) is not None and reused.settings == settings:
        return reused
    try:
        return App.create(settings)
    except SettingsError as exc:
        console.print(exc.render(), highlight=False, markup=False)
        raise typer.Exit(EXIT_USAGE) from None


_startup: list[App] = []


def startup_app() -> App | None:
    """The application the console entry point built to list the plugins' commands, if any."""
    return _startup[0] if _startup else None


def remember_startup(app: App) -> None:
    """Keep the console entry point's application: the command reuses it for the same settings."""
    _startup[:] = [app]


def configure_logging(settings: Settings) -> None:
    """``[logging] level`` applies to selfiescope's loggers; ``file`` adds a log file."""
    logger = logging.getLogger("selfiescope")
    if logging.getLogger().level > logging.INFO:  # no -v given: the settings decide
        logger.setLevel(settings.logging.level)
        for handler in logging.getLogger().handlers:
            handler.setLevel(max(logging.WARNING, logging.getLevelName(settings.logging.level)))
    if settings.logging.file:
        if problems := [p for p in check_paths(settings) if p.startswith("logging.")]:
            raise SettingsError(problems)
        settings.logging.file.parent.mkdir(parents=True, exist_ok=True)
        fh = LogFile(settings.logging.file)
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        fh.setLevel(settings.logging.level)
        logger.addHandler(fh)
    for handler in [*logging.getLogger().handlers, *logger.handlers]:  # no credential in a URL reaches a log
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


class LogFile(logging.FileHandler):
    """``[logging] file``: any text goes in (undecodable file-name bytes as escapes), and when
    the file cannot be written (a full disk) one warning says so and the log file stops,
    instead of a traceback per record."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, encoding="utf-8", errors="backslashreplace")

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        why = sys.exc_info()[1]
        reason = getattr(why, "strerror", None) or why or "write failed"
        logging.getLogger("selfiescope").removeHandler(self)
        console.print(f"warning: cannot write the log file {printable(self.baseFilename)}: {printable(reason)}; "
                      "no more log lines go there", highlight=False, markup=False, soft_wrap=True)
        try:
            self.close()
        except (OSError, ValueError):  # the same full disk refuses the final flush too
            pass


def emit_json(data: Any) -> None:
    out.print_json(json.dumps(printable_tree(data), default=printable))


# The built-in commands register on ``core_app`` (and ``settings_app``) when their modules are
# imported; :func:`selfiescope.cli.app.build_app` copies them into the application it builds
# and adds the loaded plugins' commands.
core_app = GuardedTyper(
    name="selfiescope",
    help="Collect face photos and learn to tell selfies from other portraits.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
settings_app = GuardedTyper(help="Inspect and check settings.toml.", no_args_is_help=True)
core_app.add_typer(settings_app, name="settings")
