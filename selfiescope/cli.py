"""The command line: parses, calls a pipeline, prints. No logic of its own.

Exit codes: 0 done; 1 the run failed or finished with errors; 2 bad usage or settings;
130 interrupted (rerun the same command to resume).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import __version__
from .core.hookspecs import hookimpl
from .core.settings import ScrapePipeline, Settings, SettingsError, check_components, load_settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

app = typer.Typer(
    name="selfiescope",
    help="Collect face photos and learn to tell selfies from other portraits.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
settings_app = typer.Typer(help="Inspect and check settings.toml.", no_args_is_help=True)
app.add_typer(settings_app, name="settings")

console = Console(stderr=True)
out = Console()

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

    def _advance(self, run: Any, event: Any) -> None:
        s = run.stats
        self.progress.update(
            self.task, advance=1,
            description=f"accepted {s.accepted}  rejected {s.rejected}",
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
    for key in ("status", "seen", "accepted", "rejected", "images_per_s", "elapsed_s", "bytes_stored"):
        table.add_row(key, str(stats.get(key)))
    for reason, n in sorted(stats.get("rejected_by_reason", {}).items()):
        table.add_row(f"  rejected: {reason}", str(n))
    for job, counts in stats.get("per_job", {}).items():
        table.add_row(f"  job {job}", ", ".join(f"{k} {v}" for k, v in counts.items()))
    for err in stats.get("errors", []):
        table.add_row("[red]error[/red]", err)
    out.print(table)


def run_collect(
    settings: Settings, name: str, pipeline: ScrapePipeline | None, as_json: bool,
    together: list[ScrapePipeline] | None = None,
) -> None:
    from .pipelines.collect import collect

    with _progress(not as_json) as progress:
        observer = ProgressObserver(progress, plain=not as_json and not console.is_terminal)
        try:
            stats = asyncio.run(collect(settings, name, pipeline=pipeline, together=together, extra_plugins=[observer]))
        except SettingsError as exc:
            console.print(exc.render(), highlight=False, markup=False)
            raise typer.Exit(EXIT_USAGE) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/yellow]: what was done is saved; run the same command again to resume")
            raise typer.Exit(EXIT_INTERRUPTED) from None
    data = stats.as_dict()
    data["storage_root"] = str(settings.storage.root)
    if as_json:
        emit_json(data)
    else:
        print_stats(data, f"{name}: stored under {settings.storage.root}")
    if stats.errors:
        raise typer.Exit(EXIT_FAILED)


# --- run, pipelines ------------------------------------------------------------------
@app.command()
def run(
    pipelines: list[str] = typer.Argument(..., help="one or more pipeline names from settings.toml"),
    settings_path: Optional[Path] = SettingsOpt,
    as_json: bool = JsonOpt,
    scheduler: Optional[str] = SchedulerOpt,
) -> None:
    """Run pipelines defined in settings.toml (several scrape pipelines with the same source
    and chain run together, concurrently, in one run)."""
    settings = with_scheduler(load(settings_path), scheduler)
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
    problems = check_components(settings, load_registry())
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
) -> None:
    """Run every image under FOLDER through the chain into the dataset."""
    settings = with_scheduler(load(settings_path), scheduler)
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
) -> None:
    """Run decode + face filter (+ dedup) over FOLDER and report kept/rejected by reason."""
    from .pipelines.clean import clean

    settings = with_scheduler(load(settings_path), scheduler)
    try:
        result = clean(
            settings, folder, output=output, dedup=not no_dedup, move_rejected_to=move_rejected_to,
            delete_rejected=delete_rejected, label=label,
        )
    except SettingsError as exc:
        raise fail(exc.render()) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]: nothing of yours was moved or deleted")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if as_json:
        emit_json(result)
    else:
        table = Table(title=f"clean {folder}" + (f" -> {output}" if output else " (report only)"), show_header=False)
        for key in ("seen", "kept", "rejected", "moved", "deleted"):
            table.add_row(key, str(result[key]))
        for reason, n in result["rejected_by_reason"].items():
            table.add_row(f"  rejected: {reason}", str(n))
        out.print(table)
    if result["errors"]:
        raise typer.Exit(EXIT_FAILED)


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
    settings_path: Optional[Path] = SettingsOpt,
    as_json: bool = JsonOpt,
    scheduler: Optional[str] = SchedulerOpt,
) -> None:
    """Collect the images of HASHTAGS into the dataset (rerun the same command to resume)."""
    from pydantic import ValidationError

    from .core.settings import format_validation_error
    from .pipelines.scrape import scrape_pipeline

    settings = with_scheduler(load(settings_path), scheduler)
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


# --- train, predict (issue 5) ------------------------------------------------------------
def run_train(settings: Settings, name: str, as_json: bool) -> None:
    """Train pipeline NAME, print its summary; shared by `train` and `run` (kind = "train")."""
    from .pipelines.dataset import DatasetError
    from .pipelines.train import train

    with _progress(not as_json) as progress:
        task = progress.add_task("features", total=None)
        try:
            result = train(settings, name, progress=lambda done, total: progress.update(task, completed=done, total=total))
        except SettingsError as exc:
            console.print(exc.render(), highlight=False, markup=False)
            raise typer.Exit(EXIT_USAGE) from None
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
        if key != "model_dir":
            table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    out.print(table)


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
        emit_json({"model": str(model), "positive": loaded.labels[0], "counts": counts,
                   "predictions": [r.as_dict() for r in results]})
    else:
        table = Table(title=f"{len(results)} images, model {model}")
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


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
