"""The command line: parses, calls a pipeline, prints. No logic of its own.

Exit codes: 0 done; 1 the run failed or finished with errors; 2 bad usage or settings;
130 interrupted (rerun the same command to resume).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape as rich_escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.markup import escape
from rich.table import Table

from . import __version__
from .core.hookspecs import hookimpl
from .core.settings import ScrapePipeline, Settings, SettingsError, check_components, check_paths, load_settings
from .core.text import printable
from .exits import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, classify, code_for

console = Console(stderr=True)
out = Console()


def guarded(command):  # noqa: ANN001, ANN201 - wraps any typer command function
    """Every command ends through :func:`selfiescope.exits.classify`: a known problem prints one
    clear line (no traceback) and exits with its code; only a bug keeps its traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except BaseException as exc:  # noqa: BLE001 - classified below, re-raised when unknown
            known = classify(exc)
            if known is None:
                raise
            code, message = known
            style = "yellow" if code == EXIT_INTERRUPTED else "red"
            prefix = "" if code == EXIT_INTERRUPTED else "error: "
            console.print(f"[{style}]{prefix}{escape(printable(message))}[/{style}]", highlight=False, soft_wrap=True)
            raise typer.Exit(code) from None

    return wrapper


class GuardedTyper(typer.Typer):
    """A Typer whose commands all end through :func:`guarded`."""

    def command(self, *args: Any, **kwargs: Any):  # noqa: ANN201 - typer's decorator type
        register = super().command(*args, **kwargs)

        def decorator(fn):  # noqa: ANN001, ANN202
            register(guarded(fn))
            return fn

        return decorator


app = GuardedTyper(
    name="selfiescope",
    help="Collect face photos and learn to tell selfies from other portraits.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
settings_app = GuardedTyper(help="Inspect and check settings.toml.", no_args_is_help=True)
app.add_typer(settings_app, name="settings")

SettingsOpt = typer.Option(None, "--settings", "-s", help="settings file (default: ./settings.toml or $SELFIESCOPE_SETTINGS)")
JsonOpt = typer.Option(False, "--json", help="print a JSON result on stdout (for scripts)")

# --- dask: the --scheduler option (docs/scaling.md) ----------------------------------------
SchedulerOpt = typer.Option(
    None, "--scheduler",
    help="run the CPU work on Dask: a scheduler address (tcp://host:8786) or 'local' to start a "
    "LocalCluster here; implies compute.engine = 'dask'",
)


def with_scheduler(settings: Settings, scheduler: Optional[str]) -> Settings:
    from .core.compute import with_scheduler as apply

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


def _version(value: bool) -> None:
    if value:
        out.print(f"selfiescope {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="show the version and exit"),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="more log output (-vv for debug)"),
) -> None:
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code)


def load(settings_path: Optional[Path]) -> Settings:
    try:
        settings = load_settings(settings_path)
    except SettingsError as exc:
        console.print(exc.render(), highlight=False, markup=False)
        raise typer.Exit(EXIT_USAGE) from None
    configure_logging(settings)
    return settings


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
        fh = logging.FileHandler(settings.logging.file)
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        fh.setLevel(settings.logging.level)
        logger.addHandler(fh)


def emit_json(data: Any) -> None:
    out.print_json(json.dumps(data, default=str))


class ProgressObserver:
    """A plugin object the CLI registers for the duration of a run, to draw progress: a line
    per job (its state, images kept) on a terminal, plain lines on stderr otherwise."""

    def __init__(self, progress: Progress, plain: bool = False) -> None:
        self.progress = progress
        self.plain = plain  # not a terminal: print each job's state changes as lines
        self.task = progress.add_task("images", total=None)
        self.job_tasks: dict[str, Any] = {}
        self.run: Any = None

    @hookimpl
    def selfiescope_run_started(self, run: Any) -> None:
        self.run = run
        run.stats.state_listeners.append(self.on_state)

    def on_state(self, job: str, state: str) -> None:
        kept = self.run.stats.per_job.get(job, {}).get("accepted", 0) if self.run else 0
        if self.plain:
            console.print(f"{job}: {state}" + (f" ({kept} images kept)" if kept else ""), highlight=False, markup=False)
            return
        if job not in self.job_tasks:
            self.job_tasks[job] = self.progress.add_task("", total=None)
        self.progress.update(self.job_tasks[job], description=f"  {job}: {state}  ·  {kept} kept")

    @hookimpl
    def selfiescope_image_accepted(self, event: Any, run: Any) -> None:
        self._advance(run, event)

    @hookimpl
    def selfiescope_image_rejected(self, event: Any, run: Any) -> None:
        self._advance(run, event)

    @hookimpl
    def selfiescope_image_failed(self, event: Any, run: Any) -> None:
        self._advance(run, event)

    def _advance(self, run: Any, event: Any) -> None:
        s = run.stats
        self.progress.update(
            self.task, advance=1,
            description=f"accepted {s.accepted}  rejected {s.rejected}" + (f"  [red]failed {s.failed}[/red]" if s.failed else ""),
        )
        job = getattr(getattr(event, "origin", None), "job", None)
        if job in self.job_tasks and not self.plain:
            self.on_state(job, s.job_states.get(job, ""))


def _progress(enabled: bool) -> Progress:
    return Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=console, transient=True, disable=not enabled or not console.is_terminal,
    )


def print_stats(stats: dict[str, Any], title: str) -> None:
    table = Table(title=title, show_header=False)
    for key in ("status", "seen", "accepted", "rejected", "failed", "images_per_s", "elapsed_s", "bytes_stored"):
        table.add_row(key, str(stats.get(key)))
    for reason, n in sorted(stats.get("rejected_by_reason", {}).items()):
        table.add_row(f"  rejected: {reason}", str(n))
    for job, counts in stats.get("per_job", {}).items():
        table.add_row(f"  job {escape(printable(job))}", ", ".join(f"{k} {v}" for k, v in counts.items()))
    for err in stats.get("errors", []):
        table.add_row("[red]error[/red]", escape(printable(err)))
    out.print(table)


def run_collect(
    settings: Settings, name: str, pipeline: ScrapePipeline | None, as_json: bool,
    together: list[ScrapePipeline] | None = None,
) -> None:
    from .pipelines.collect import collect

    with _progress(not as_json) as progress:
        observer = ProgressObserver(progress, plain=not as_json and not console.is_terminal)
        stats = asyncio.run(collect(settings, name, pipeline=pipeline, together=together, extra_plugins=[observer]))
    data = stats.as_dict()
    data["storage_root"] = printable(settings.storage.root)
    if as_json:
        emit_json(data)
    else:
        print_stats(data, f"{name}: stored under {escape(printable(settings.storage.root))}")
    raise typer.Exit(code_for(data["errors"]))


# --- run, pipelines ------------------------------------------------------------------
@app.command()
def run(
    pipelines: list[str] = typer.Argument(..., help="one or more pipeline names from settings.toml"),
    settings_path: Optional[Path] = SettingsOpt,
    as_json: bool = JsonOpt,
    scheduler: Optional[str] = SchedulerOpt,
    wait: bool = WaitOpt,
) -> None:
    """Run pipelines defined in settings.toml (several scrape pipelines with the same source
    and chain run together, concurrently, in one run)."""
    settings = with_wait(with_scheduler(load(settings_path), scheduler), wait)
    try:
        chosen = [settings.pipeline(name) for name in pipelines]
    except SettingsError as exc:
        raise fail(exc.problems[0]) from None
    first = chosen[0]
    if all(isinstance(p, ScrapePipeline) for p in chosen):
        run_collect(settings, "+".join(pipelines), first, as_json, together=chosen[1:])
        return
    if len(chosen) > 1:
        raise fail("only scrape/import pipelines can run together; run the others one by one")
    if first.kind == "train":
        run_train(settings, pipelines[0], as_json)
    elif first.kind == "demo":
        from .pipelines.demo import demo

        raise typer.Exit(demo(settings, as_json=as_json))


@app.command("pipelines")
def list_pipelines(settings_path: Optional[Path] = SettingsOpt, as_json: bool = JsonOpt) -> None:
    """List the pipelines defined in settings.toml."""
    settings = load(settings_path)
    rows = [
        {"name": name, "kind": p.kind, "description": p.description,
         **({"source": p.source, "targets": p.targets(), "label": p.label, "chain": p.chain}
            if isinstance(p, ScrapePipeline) else {})}
        for name, p in settings.pipelines.items()
    ]
    if as_json:
        emit_json(rows)
        return
    table = Table("name", "kind", "source", "targets", "label", "chain")
    for r in rows:
        table.add_row(r["name"], r["kind"], r.get("source", ""), " ".join(r.get("targets", [])),
                      r.get("label", ""), " → ".join(r.get("chain", [])))
    out.print(table)


@app.command("plugins")
def list_plugins(as_json: bool = JsonOpt) -> None:
    """List the loaded plugins, the components they provide, their hooks and where they come from."""
    from .core.plugins import load_registry

    registry = load_registry()
    rows = []
    for plugin_name, plugin in registry.pm.list_name_plugin():
        dist = next((d for p, d in registry.pm.list_plugin_distinfo() if p is plugin), None)
        rows.append({
            "plugin": plugin_name,
            "origin": f"{dist.project_name} {dist.version}" if dist else "built-in",
            "hooks": registry.hooks_of(plugin_name),
            "components": [f"{i.kind}:{i.name}" for i in registry.info if i.plugin == plugin_name],
        })
    if as_json:
        emit_json(rows)
        return
    table = Table("plugin", "from", "provides", "hooks")
    for r in rows:
        table.add_row(r["plugin"], r["origin"], ", ".join(r["components"]), ", ".join(h.removeprefix("selfiescope_") for h in r["hooks"]))
    out.print(table)


@settings_app.command("check")
def settings_check(settings_path: Optional[Path] = SettingsOpt, as_json: bool = JsonOpt) -> None:
    """Validate settings.toml, including plugin names and plugin options."""
    from .core.plugins import load_registry

    settings = load(settings_path)
    problems = check_components(settings, load_registry()) + check_paths(settings)
    if as_json:
        emit_json({"ok": not problems, "problems": problems})
    elif problems:
        console.print(SettingsError(problems, str(settings_path or "settings.toml")).render(), markup=False)
    else:
        out.print(f"settings OK: {len(settings.pipelines)} pipelines")
    if problems:
        raise typer.Exit(EXIT_USAGE)


@settings_app.command("show")
def settings_show(settings_path: Optional[Path] = SettingsOpt) -> None:
    """Print the effective settings (file + environment overrides + defaults) as JSON."""
    emit_json(load(settings_path).model_dump(mode="json"))


# --- import --------------------------------------------------------------------------
@app.command("import")
def import_folder(
    folder: list[Path] = typer.Argument(..., help="folders (or files) of images"),
    label: str = typer.Option(..., "--label", "-l", help="class label, e.g. selfie or portrait"),
    chain: Optional[str] = typer.Option(None, help="comma-separated steps (default: decode,face_area,dedup,store)"),
    limit: Optional[int] = typer.Option(None, help="stop after this many accepted images per folder"),
    settings_path: Optional[Path] = SettingsOpt,
    as_json: bool = JsonOpt,
    scheduler: Optional[str] = SchedulerOpt,
    wait: bool = WaitOpt,
) -> None:
    """Run every image under FOLDER through the chain into the dataset."""
    settings = with_wait(with_scheduler(load(settings_path), scheduler), wait)
    if missing := [printable(f) for f in folder if not f.expanduser().exists()]:
        raise fail(f"not found: {', '.join(missing)}")
    fields: dict[str, Any] = {"kind": "import", "source": "folder", "paths": folder, "label": label, "limit": limit}
    if chain:
        fields["chain"] = [c.strip() for c in chain.split(",") if c.strip()]
    try:
        pipeline = ScrapePipeline.model_validate(fields)
    except Exception as exc:  # pydantic ValidationError: show it as a usage error
        from pydantic import ValidationError

        from .core.settings import format_validation_error

        if isinstance(exc, ValidationError):
            raise fail("; ".join(format_validation_error(exc))) from None
        raise
    run_collect(settings, "import", pipeline, as_json)


# --- clean (issue 3) -------------------------------------------------------------------
@app.command("clean")
def clean_command(
    folder: Path = typer.Argument(..., help="folder of images to clean"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="store the kept images into a new dataset here"),
    no_dedup: bool = typer.Option(False, "--no-dedup", help="keep duplicates"),
    move_rejected_to: Optional[Path] = typer.Option(None, "--move-rejected-to", help="move rejected originals here, by reason"),
    delete_rejected: bool = typer.Option(False, "--delete-rejected", help="DELETE rejected originals (never done otherwise)"),
    label: Optional[str] = typer.Option(None, "--label", "-l", help="label of the new dataset (default: the folder's name)"),
    settings_path: Optional[Path] = SettingsOpt,
    as_json: bool = JsonOpt,
    scheduler: Optional[str] = SchedulerOpt,
    wait: bool = WaitOpt,
) -> None:
    """Run decode + face filter (+ dedup) over FOLDER and report kept/rejected by reason.

    Originals are moved or deleted only when asked, and only those a step rejected
    (never one that failed to be read or stored)."""
    from .pipelines.clean import clean

    settings = with_wait(with_scheduler(load(settings_path), scheduler), wait)
    try:
        result = clean(
            settings, folder, output=output, dedup=not no_dedup, move_rejected_to=move_rejected_to,
            delete_rejected=delete_rejected, label=label,
        )
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]: nothing of yours was moved or deleted")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if as_json:
        emit_json(result)
    else:
        title = f"clean {result['folder']}" + (f" -> {result['output']}" if output else " (report only)")
        table = Table(title=escape(title), show_header=False)
        for key in ("seen", "kept", "rejected", "failed", "moved", "deleted"):
            table.add_row(key, str(result[key]))
        for reason, n in result["rejected_by_reason"].items():
            table.add_row(f"  rejected: {reason}", str(n))
        for line in result["skipped"]:
            table.add_row("[yellow]left alone[/yellow]", escape(line))
        for err in result["errors"]:
            table.add_row("[red]error[/red]", escape(err))
        out.print(table)
    raise typer.Exit(code_for(result["errors"]))


# --- stats: choose the face-area threshold with data ---------------------------------------
@app.command("stats")
def stats_command(
    root: Optional[Path] = typer.Option(None, "--root", help="dataset folder holding manifest.sqlite (default: storage.root)"),
    plot: Optional[Path] = typer.Option(None, "--face-area-plot", help="PNG to write (default: ROOT/face-area-thresholds.png)"),
    settings_path: Optional[Path] = SettingsOpt,
    as_json: bool = JsonOpt,
) -> None:
    """How many images per label each face-area threshold keeps (a table and a PNG plot)."""
    from .pipelines.face_stats import face_area_stats

    settings = load(settings_path)
    root = Path(root or settings.storage.root)
    if not (root / "manifest.sqlite").is_file():
        raise fail(f"no dataset at {root}: {root / 'manifest.sqlite'} does not exist (collect or import images first)")
    current = settings.component_options("face_area").get("min_face_area", 0.15)
    result = face_area_stats(root, plot or root / "face-area-thresholds.png", float(current))
    if as_json:
        emit_json(result)
        return
    if not result["kept"]:
        out.print("no image has been through the face filter yet")
        return
    columns = list(next(iter(result["kept"].values())))
    table = Table(title=f"images kept per face-area threshold, {root}")
    for col in ("label", "judged", *columns):
        table.add_column(col)
    for key, kept in result["kept"].items():
        table.add_row(key, str(result["judged"][key]), *(str(kept[c]) for c in columns))
    out.print(table)
    out.print(f"plot: {result['plot']}")


# --- demo ------------------------------------------------------------------------------
@app.command("demo")
def demo_command(
    settings_path: Optional[Path] = SettingsOpt,
    output: Path = typer.Option(Path("demo-output"), help="where the demo dataset, model and report go"),
    per_tag: int = typer.Option(40, help="images to collect per hashtag"),
    no_train: bool = typer.Option(False, "--no-train", help="stop after scraping"),
    as_json: bool = JsonOpt,
) -> None:
    """Scrape the local Instagram-like site (synthetic photos) and train: no credentials, no internet."""
    from .pipelines.demo import demo

    raise typer.Exit(demo(load(settings_path), as_json=as_json, out_dir=output, per_tag=per_tag, train=not no_train))


# --- scrape, login (browser sources) ---------------------------------------------------
@app.command()
def scrape(
    tags: list[str] = typer.Argument(..., help="hashtags (with or without #), scraped concurrently"),
    label: str = typer.Option(..., "--label", "-l", help="class label, e.g. selfie or portrait"),
    limit: Optional[int] = typer.Option(None, help="stop after this many accepted images per hashtag"),
    source: str = typer.Option("instagram", help="source plugin: instagram, or gallery (with --base-url a URL template with {tag})"),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="the site to scrape, e.g. the local mock site's URL"),
    chain: Optional[str] = typer.Option(None, help="comma-separated steps (default: decode,face_area,dedup,store)"),
    contexts: Optional[int] = typer.Option(None, "--contexts", min=1, max=64, help="browser contexts at once (browser.max_contexts)"),
    replay: Optional[Path] = typer.Option(None, "--replay", help="run offline against a HAR saved by `selfiescope record`"),
    settings_path: Optional[Path] = SettingsOpt,
    as_json: bool = JsonOpt,
    scheduler: Optional[str] = SchedulerOpt,
    wait: bool = WaitOpt,
) -> None:
    """Collect the images of HASHTAGS into the dataset (rerun the same command to resume)."""
    from pydantic import ValidationError

    from .core.settings import format_validation_error
    from .pipelines.scrape import scrape_pipeline

    settings = with_wait(with_scheduler(load(settings_path), scheduler), wait)
    if replay is not None:
        settings, base_url = replay_options(settings, replay, source, base_url)
    if contexts:
        settings = settings.model_copy(update={"browser": settings.browser.model_copy(update={"max_contexts": contexts})})
    steps = [c.strip() for c in chain.split(",") if c.strip()] if chain else None
    try:
        pipeline = scrape_pipeline(tags, label, limit=limit, source=source, base_url=base_url, chain=steps)
    except ValidationError as exc:
        raise fail("; ".join(format_validation_error(exc))) from None
    run_collect(settings, "scrape", pipeline, as_json)


@app.command()
def login(
    base_url: Optional[str] = typer.Option(None, "--base-url", help="default: plugins.instagram.base_url"),
    show_browser: Optional[bool] = typer.Option(
        None, "--show-browser/--headless",
        help="open a browser window to pass two-factor or a challenge (default: when a display exists)",
    ),
    timeout: float = typer.Option(300.0, help="seconds to wait for you to finish in the browser window"),
    settings_path: Optional[Path] = SettingsOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Log in to Instagram once and save the session (mode 600) for later scrapes.

    Credentials come from SELFIESCOPE_INSTAGRAM_USERNAME / SELFIESCOPE_INSTAGRAM_PASSWORD
    or are asked for here; they are never written anywhere.
    """
    from .core.browser_lookup import BrowserNotFound
    from .pipelines.scrape import LoginError, has_display
    from .pipelines.scrape import login as do_login

    settings = load(settings_path)
    headed = has_display() if show_browser is None else show_browser

    def ask(prompt: str, secret: bool) -> str:
        if not sys.stdin.isatty():
            return ""
        return typer.prompt(prompt, hide_input=secret, default="", show_default=False)

    try:
        path = asyncio.run(do_login(settings, base_url=base_url, headless=not headed, ask=ask, timeout_s=timeout))
    except (LoginError, BrowserNotFound) as exc:
        raise fail(str(exc), EXIT_FAILED) from None
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if as_json:
        emit_json({"ok": True, "session_file": str(path)})
    else:
        out.print(f"logged in; session saved to {path} (readable by you only)")
# --- end scrape, login -------------------------------------------------------------------


# --- record, replay, doctor (issue 9: docs/instagram.md) -----------------------------------
def replay_options(settings: Settings, har_file: Path, source: str, base_url: Optional[str]) -> tuple[Settings, Optional[str]]:
    from .core.har import HarError
    from .pipelines.record import replay_settings

    try:
        settings, recorded_base = replay_settings(settings, har_file, source)
    except HarError as exc:
        raise fail(f"--replay: {exc}") from None
    return settings, base_url or recorded_base


@app.command()
def record(
    tags: list[str] = typer.Argument(..., help="hashtags to browse once (with or without #)"),
    har_file: Path = typer.Option(..., "--har", help="the HAR file to write (scrubbed of secrets, mode 600)"),
    limit: Optional[int] = typer.Option(30, min=1, help="stop after this many images per hashtag"),
    source: str = typer.Option("instagram", help="source plugin"),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="the site (default: plugins.instagram.base_url)"),
    settings_path: Optional[Path] = SettingsOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Save one real browsing session of HASHTAGS as a HAR, with cookies, auth headers, CSRF
    tokens and credentials scrubbed; replay it with `scrape TAG --replay FILE`."""
    from pydantic import ValidationError

    from .core.browser_lookup import BrowserNotFound
    from .core.settings import format_validation_error
    from .pipelines.record import record as do_record

    settings = load(settings_path)
    try:
        result = asyncio.run(do_record(settings, tags, har_file, source=source, base_url=base_url, limit=limit))
    except ValidationError as exc:
        raise fail("; ".join(format_validation_error(exc))) from None
    except FileExistsError as exc:
        raise fail(str(exc)) from None
    except BrowserNotFound as exc:
        raise fail(str(exc), EXIT_FAILED) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]: nothing was written")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    summary = result.summary()
    if as_json:
        emit_json(summary)
    else:
        out.print(f"recorded {summary['entries']} requests ({summary['posts']} posts) into {har_file}; "
                  f"{summary['redactions']} secret values redacted")
        for err in summary["errors"]:
            console.print(f"[red]error[/red] {err}", highlight=False)
    if summary["errors"] or not summary["posts"]:
        raise typer.Exit(EXIT_FAILED)


@app.command()
def doctor(
    base_url: Optional[str] = typer.Option(None, "--base-url", help="the site (default: plugins.instagram.base_url)"),
    tag: str = typer.Option("selfie", "--tag", help="a hashtag with more than one page of posts"),
    settings_path: Optional[Path] = SettingsOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Check that the site still offers what the instagram source relies on: login form, tag page,
    feed JSON, image candidates, pop-up buttons. Exit 1 when any check fails."""
    from rich.markup import escape

    from .core.browser_lookup import BrowserNotFound
    from .pipelines.scrape import instagram_base_url
    from .plugins.instagram_doctor import DoctorError, run_doctor

    settings = load(settings_path)
    try:
        report = asyncio.run(run_doctor(settings, base_url or instagram_base_url(settings), tag.lstrip("#")))
    except DoctorError as exc:
        raise fail(str(exc)) from None
    except BrowserNotFound as exc:
        raise fail(str(exc), EXIT_FAILED) from None
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if as_json:
        emit_json(report.as_dict())
    else:
        colour = {"pass": "green", "fail": "red", "skip": "yellow"}
        out.print(f"doctor {escape(report.base_url)} #{escape(report.tag)}", highlight=False)
        for check in report.checks:  # one line per check (and what was found instead): greppable
            out.print(f"[{colour[check.status]}]{check.status:4}[/] {check.name:16} {escape(check.detail)}",
                      soft_wrap=True, highlight=False)
            if check.found:
                out.print(f"     {'':16} found instead: {escape(check.found)}", soft_wrap=True, highlight=False)
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)
# --- end record, replay, doctor ------------------------------------------------------------


# --- train, predict (issue 5) ------------------------------------------------------------
def run_train(settings: Settings, name: str, as_json: bool) -> None:
    """Train pipeline NAME, print its summary; shared by `train` and `run` (kind = "train")."""
    from .pipelines.dataset import DatasetError
    from .pipelines.train import train

    with _progress(not as_json) as progress:
        task = progress.add_task("features", total=None)
        try:
            result = train(settings, name, progress=lambda done, total: progress.update(task, completed=done, total=total))
        except DatasetError as exc:
            raise fail(str(exc), EXIT_FAILED) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/yellow]: computed features are cached; run the same command again")
            raise typer.Exit(EXIT_INTERRUPTED) from None
    summary = result.summary()
    if as_json:
        emit_json(summary)
        return
    table = Table(title=f"{name}: model written to {summary['model_dir']}", show_header=False)
    for key, value in summary.items():
        if key not in ("model_dir", "warnings"):
            table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    out.print(table)
    for warning in summary["warnings"]:  # confounders: the figures above may describe the sources, not the photos
        console.print(f"[bold red]warning:[/bold red] {rich_escape(warning)}", highlight=False)
    out.print(f"model card: {Path(summary['model_dir']) / 'MODEL.md'}")


@app.command("train")
def train_command(
    pipeline: Optional[str] = typer.Argument(None, help="a train pipeline from settings.toml (default: the only one)"),
    features: Optional[str] = typer.Option(None, help="comma-separated feature groups, e.g. geometry,landmarks,image"),
    model_dir: Optional[Path] = typer.Option(None, "--model-dir", help="where to write the model folder"),
    settings_path: Optional[Path] = SettingsOpt,
    as_json: bool = JsonOpt,
    scheduler: Optional[str] = SchedulerOpt,
) -> None:
    """Train the selfie/portrait classifier on the collected images (cross-validated, with a report)."""
    from .core.settings import TrainPipeline

    settings = with_scheduler(load(settings_path), scheduler)
    trains = [n for n, p in settings.pipelines.items() if isinstance(p, TrainPipeline)]
    if pipeline is None:
        if len(trains) > 1:
            raise fail(f"several train pipelines are defined ({', '.join(trains)}); name one")
        pipeline = trains[0] if trains else "train"
    if pipeline in settings.pipelines and pipeline not in trains:
        raise fail(f"pipelines.{pipeline} is not a train pipeline")
    base = settings.pipelines.get(pipeline) or TrainPipeline(kind="train")
    update: dict[str, Any] = {}
    if features:
        update["features"] = [f.strip() for f in features.split(",") if f.strip()]
    if model_dir:
        update["model_dir"] = model_dir
    settings = settings.model_copy(update={"pipelines": {**settings.pipelines, pipeline: base.model_copy(update=update)}})
    run_train(settings, pipeline, as_json)


@app.command("predict")
def predict_command(
    model: Path = typer.Argument(..., help="a model folder written by `selfiescope train`"),
    paths: list[Path] = typer.Argument(..., help="image files or folders"),
    as_json: bool = JsonOpt,
) -> None:
    """Label images with a trained model. Exit code 1 if any input could not be read."""
    from .pipelines.predict import ModelError, expand_paths, load_model

    try:
        loaded = load_model(model)
    except ModelError as exc:
        raise fail(str(exc)) from None
    if not expand_paths(paths):
        raise fail("no image files found in the given paths")
    results = loaded.predict(paths)
    counts = {s: sum(r.status == s for r in results) for s in ("ok", "no_face", "error")}
    if as_json:
        emit_json({"model": str(model), "positive": loaded.labels[0], "threshold": loaded.threshold,
                   "calibration": loaded.calibrator.method, "counts": counts,
                   "predictions": [r.as_dict() for r in results]})
    else:
        table = Table(title=f"{len(results)} images, model {model}: {loaded.labels[0]} when the calibrated "
                            f"p >= {loaded.threshold:g}")
        for col in ("path", "result", f"p({loaded.labels[0]})", "detail"):
            table.add_column(col)
        for r in results:
            shown = r.label if r.status == "ok" else ("no face" if r.status == "no_face" else "[red]error[/red]")
            prob = f"{r.probability:.3f}" if r.probability is not None else ""
            table.add_row(r.path, shown, prob, r.reason or "")
        out.print(table)
    if counts["error"]:
        raise typer.Exit(EXIT_FAILED)
# --- end train, predict ------------------------------------------------------------------


# --- mock-site (the local Instagram-like site: selfiescope/testing/site.py) ------------------
@app.command("mock-site")
def mock_site_command(
    port: int = typer.Option(8000, min=0, max=65535, help="port to listen on (0: any free port)"),
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
    latency_ms: float = typer.Option(0, "--latency-ms", min=0, help="delay every response by this much"),
    no_login: bool = typer.Option(False, "--no-login", help="serve hashtag pages without the login wall"),
    rate_limit_every: int = typer.Option(0, min=0, help="answer every n-th API request 429 (0: never)"),
    retry_after: float = typer.Option(1.0, min=0, help="seconds in the 429 answers' Retry-After"),
    image_error_every: int = typer.Option(0, min=0, help="fail every n-th media request once with 500 (0: never)"),
    page_size: int = typer.Option(12, min=1, help="posts per page of a hashtag feed"),
    language: str = typer.Option("en", help="language of the pop-ups: en, fr or de"),
    two_factor_code: Optional[str] = typer.Option(None, help="ask for this security code after the password"),
    username: str = typer.Option("demo", help="the mock site's (fake) account"),
    password: str = typer.Option("demo", help="the mock site's (fake) account password"),
    seed: int = typer.Option(0, help="seed of the generated posts and photos"),
    chaos: str = typer.Option(
        "", "--chaos",
        help="misbehaviour knobs, comma-separated: e.g. hung_beacons,client_feed,url_ttl_s=30,stale_url_share=0.3,"
        "account_block_after=0,login_variant=labels (all: selfiescope/testing/chaos.py)",
    ),
    chaos_seed: int = typer.Option(0, "--chaos-seed", help="seed of the chaos knobs' random choices"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON line with the URL once serving"),
) -> None:
    """Serve the local Instagram-like site with synthetic photos until Ctrl-C (for demos and scraper tests)."""
    from .testing.chaos import Chaos
    from .testing.site import MockInstagram

    if language not in ("en", "fr", "de"):
        raise fail(f"--language: expected en, fr or de, not {language!r}")
    try:
        knobs = Chaos.parse(chaos, seed=chaos_seed)
    except (TypeError, ValueError) as exc:
        raise fail(f"--chaos: {exc}") from None
    try:
        site = MockInstagram(
            chaos=knobs, seed=seed, latency_ms=latency_ms, page_size=page_size, require_login=not no_login, username=username,
            password=password, two_factor_code=two_factor_code, rate_limit_every=rate_limit_every,
            retry_after_s=retry_after, consent_language=language, image_error_every=image_error_every,
        )
        base_url = site.start(port, host)
    except ValueError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    tags = list(site.tags)
    try:  # a Ctrl-C right after the address is printed must stop cleanly too
        if as_json:
            print(json.dumps({"base_url": base_url, "tags": tags, "require_login": not no_login}), flush=True)
        else:
            login_note = "no login needed" if no_login else f"log in as {username!r}"
            out.print(f"Mock Instagram at {base_url} ({login_note}); hashtags: {', '.join(tags)}. Ctrl-C stops it.")
            sys.stdout.flush()
        site.serve_forever()
    except KeyboardInterrupt:
        site.stop()
# --- end mock-site ---------------------------------------------------------------------------


from . import cli_privacy  # noqa: E402,F401  (registers forget, card, export on app)


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
