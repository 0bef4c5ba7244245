"""The collecting commands: ``run``, ``import``, ``clean``, ``scrape``, ``demo``, and the
progress display they share. They parse, call a pipeline and print; no logic of their own."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ..core.app import App
from ..core.hookspecs import hookimpl
from ..core.settings import SCRAPE_SOURCE, ScrapePipeline, Settings, SettingsError
from ..core.text import printable
from ..exits import EXIT_INTERRUPTED, code_for
from .common import (
    JsonOpt, SchedulerOpt, SettingsOpt, WaitOpt, checked_base_url, console, core_app, emit_json, fail, load_app, out,
    tagged, with_scheduler, with_wait,
)


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
        stats = self.run.stats if self.run else None
        kept = stats.per_job.get(job, {}).get("accepted", 0) if stats else 0
        settled = stats is not None and job in stats.settled_jobs
        if self.plain:
            # only a settled job's count is final: before that, images are still in the chain
            counted = f" ({kept} images kept)" if settled else (f" ({kept} kept so far)" if kept else "")
            console.print(f"{printable(job)}: {state}{counted}", highlight=False, markup=False)
            return
        if job not in self.job_tasks:
            self.job_tasks[job] = self.progress.add_task("", total=None)
        self.progress.update(self.job_tasks[job], description=f"  {printable(job)}: {state}  ·  {kept} kept")

    # The image hooks take the event alone: the run is the one run_started gave.
    @hookimpl
    def selfiescope_image_accepted(self, event: Any) -> None:
        self._advance(event)

    @hookimpl
    def selfiescope_image_rejected(self, event: Any) -> None:
        self._advance(event)

    @hookimpl
    def selfiescope_image_failed(self, event: Any) -> None:
        self._advance(event)

    def _advance(self, event: Any) -> None:
        if self.run is None:
            return
        s = self.run.stats
        self.progress.update(
            self.task, advance=1,
            description=f"accepted {s.accepted}  rejected {s.rejected}" + (f"  failed {s.failed}" if s.failed else ""),
        )
        job = getattr(getattr(event, "origin", None), "job", None)
        if job in self.job_tasks and not self.plain:
            self.on_state(job, s.job_states.get(job, ""))


def _progress(enabled: bool) -> Progress:
    return Progress(
        SpinnerColumn(), TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=console, transient=True, disable=not enabled or not console.is_terminal,
    )


def print_stats(stats: dict[str, Any], title: str) -> None:
    table = Table(title=title, show_header=False)
    for key in ("status", "seen", "accepted", "rejected", "failed", "images_per_s", "elapsed_s", "bytes_stored"):
        table.add_row(key, str(stats.get(key)))
    settings_of = stats.get("rejection_settings", {})
    for reason, n in sorted(stats.get("rejected_by_reason", {}).items()):
        table.add_row(f"  rejected: {reason}", f"{n}" + (f" (decided by {settings_of[reason]})" if reason in settings_of else ""))
    for job, counts in stats.get("per_job", {}).items():
        table.add_row(f"  job {printable(job)}", ", ".join(f"{k} {v}" for k, v in counts.items()))
    for job, why in stats.get("stopped", {}).items():
        table.add_row(f"  job {printable(job)}", printable(why))
    if skipped := stats.get("skipped_not_regular_files"):
        table.add_row(tagged("skipped", "yellow"), f"{skipped} entries that are not regular files (pipes, devices, links to them)")
    for err in stats.get("errors", []):
        table.add_row(tagged("error", "red"), printable(err))
    out.print(table)
    print_nothing_kept(stats.get("nothing_kept", []))


def print_nothing_kept(lines: list[str]) -> None:
    for line in lines:
        out.print(Text(line, style="bold yellow"), highlight=False)


def outcome_notes(data: dict[str, Any], settings: Settings, pipeline: tuple[str, Any] | None, *,
                  seen: str = "seen", kept: str = "accepted") -> dict[str, Any]:
    """``data`` (a run's or a clean's figures) with what a reader needs beside the counts: the
    setting that decided each rejection reason, and a plain line for a run (or a job of it) that
    saw images and kept none."""
    from ..pipelines.dataset_care.class_losses import nothing_kept_line, settings_of_reasons

    reasons = data.get("rejected_by_reason", {})
    data["rejection_settings"] = settings_of_reasons(reasons, settings, pipeline)
    lines = []
    if data.get(seen) and not data.get(kept):
        lines.append(nothing_kept_line(data[seen], reasons, data.get("failed", 0), settings, pipeline))
    jobs = data.get("per_job", {})
    if len(jobs) > 1 and not lines:  # some jobs kept images: name the ones that kept none
        for job, counts in jobs.items():
            if (n := sum(counts.values())) and not counts.get("accepted"):
                what = ", ".join(f"{k} {v}" for k, v in counts.items())
                lines.append(f"nothing kept from {printable(job)}: {n} images ({what})")
    data["nothing_kept"] = [line for line in lines if line]
    return data


def run_collect(
    app: App, name: str, pipeline: ScrapePipeline | None, as_json: bool,
    together: list[ScrapePipeline] | None = None,
) -> None:
    from ..pipelines.collecting.collect import collect

    settings = app.settings
    with _progress(not as_json) as progress:
        app.register(ProgressObserver(progress, plain=not as_json and not console.is_terminal))
        stats = asyncio.run(collect(app, name, pipeline=pipeline, together=together))
    data = stats.as_dict()
    data["storage_root"] = printable(settings.storage.root)
    own = (name, pipeline) if pipeline is not None and not together and settings.pipelines.get(name) is pipeline else None
    outcome_notes(data, settings, own)
    if as_json:
        emit_json(data)
    else:
        print_stats(data, f"{name}: stored under {printable(settings.storage.root)}")
    raise typer.Exit(code_for(data["errors"]))



# --- run, pipelines ------------------------------------------------------------------
@core_app.command()
def run(
    pipelines: list[str] = typer.Argument(..., help="one or more pipeline names from settings.toml"),
    settings_path: Optional[Path] = SettingsOpt,
    as_json: bool = JsonOpt,
    scheduler: Optional[str] = SchedulerOpt,
    wait: bool = WaitOpt,
) -> None:
    """Run pipelines defined in settings.toml (several scrape pipelines with the same source
    and chain run together, concurrently, in one run)."""
    app = load_app(settings_path, lambda s: with_wait(with_scheduler(s, scheduler), wait))
    settings = app.settings
    try:
        chosen = [settings.pipeline(name) for name in pipelines]
    except SettingsError as exc:  # a name given on the command line: its one problem, not the settings list
        raise fail(exc.problems[0]) from None
    first = chosen[0]
    if all(isinstance(p, ScrapePipeline) for p in chosen):
        run_collect(app, "+".join(pipelines), first, as_json, together=chosen[1:])
        return
    if len(chosen) > 1:
        raise fail("only scrape/import pipelines can run together; run the others one by one")
    if first.kind == "train":
        from .model import run_train

        run_train(app, pipelines[0], as_json)
    elif first.kind == "demo":
        from ..demo import demo

        raise typer.Exit(demo(app, as_json=as_json))




# --- import --------------------------------------------------------------------------
@core_app.command("import")
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
    app = load_app(settings_path, lambda s: with_wait(with_scheduler(s, scheduler), wait))
    if missing := [printable(f) for f in folder if not f.expanduser().exists()]:
        raise fail(f"not found: {', '.join(missing)}")
    from ..plugins.folder import kind_of

    if odd := [f"{printable(f)}: not a folder ({kind})" for f in folder
               if (kind := kind_of(f.expanduser())) not in ("a folder", "a file")]:
        raise fail("; ".join(odd))
    fields: dict[str, Any] = {"kind": "import", "source": "folder", "paths": folder, "label": label, "limit": limit}
    if chain:
        fields["chain"] = [c.strip() for c in chain.split(",") if c.strip()]
    try:
        pipeline = ScrapePipeline.model_validate(fields)
    except Exception as exc:  # pydantic ValidationError: show it as a usage error
        from pydantic import ValidationError

        from ..core.settings import format_validation_error

        if isinstance(exc, ValidationError):
            raise fail("; ".join(format_validation_error(exc))) from None
        raise
    run_collect(app, "import", pipeline, as_json)


# --- clean -------------------------------------------------------------------
@core_app.command("clean")
def clean_command(
    folder: Path = typer.Argument(..., help="folder of images to clean"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="store the kept images into a new dataset here"),
    no_dedup: bool = typer.Option(False, "--no-dedup", help="keep duplicates"),
    move_rejected_to: Optional[Path] = typer.Option(None, "--move-rejected-to", help="move rejected originals here, by reason"),
    delete_rejected: bool = typer.Option(
        False, "--delete-rejected",
        help="DELETE rejected originals (never done otherwise); a duplicate only while its kept copy reads back intact",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="list what would be moved or deleted, and why; move and delete nothing"),
    label: Optional[str] = typer.Option(None, "--label", "-l", help="label of the new dataset (default: the folder's name)"),
    settings_path: Optional[Path] = SettingsOpt,
    as_json: bool = JsonOpt,
    scheduler: Optional[str] = SchedulerOpt,
    wait: bool = WaitOpt,
) -> None:
    """Run decode + face filter (+ dedup) over FOLDER and report kept/rejected by reason.

    Originals are moved or deleted only when asked, after the run, and only those a step
    rejected (never one that failed to be read or stored); a duplicate only while the copy
    that was kept reads back intact. --dry-run lists the plan without acting on it."""
    from ..pipelines.collecting.clean import clean

    app = load_app(settings_path, lambda s: with_wait(with_scheduler(s, scheduler), wait))
    try:
        result = clean(
            app, folder, output=output, dedup=not no_dedup, move_rejected_to=move_rejected_to,
            delete_rejected=delete_rejected, dry_run=dry_run, label=label,
        )
    except KeyboardInterrupt:
        console.print(tagged("interrupted", "yellow", ": each file is whole where it was or whole where it was moved; "
                      "run the same command again to finish"))
        raise typer.Exit(EXIT_INTERRUPTED) from None
    outcome_notes(result, app.settings, None, kept="kept")
    if as_json:
        emit_json(result)
    else:
        title = _clean_title(result, move_rejected_to, delete_rejected)
        table = Table(title=title, show_header=False)
        for key in ("seen", "kept", "rejected", "failed", "moved", "deleted"):
            table.add_row(key, str(result[key]))
        settings_of = result["rejection_settings"]
        for reason, n in result["rejected_by_reason"].items():
            table.add_row(f"  rejected: {reason}", f"{n}" + (f" (decided by {settings_of[reason]})" if reason in settings_of else ""))
        if dry_run:
            for entry in result["plan"]:
                if entry["action"] != "keep":
                    table.add_row(tagged(f"would {entry['action']}", "cyan"), f"{entry['path']}: {entry['why']}")
        for line in result["skipped"]:
            table.add_row(tagged("left in place", "yellow"), line)
        if result["skipped_not_regular_files"]:
            table.add_row(tagged("skipped", "yellow"), f"{result['skipped_not_regular_files']} entries that are not "
                          "regular files (pipes, devices, links to them)")
        for err in result["errors"]:
            table.add_row(tagged("error", "red"), err)
        out.print(table)
        print_nothing_kept(result["nothing_kept"])
    raise typer.Exit(code_for(result["errors"]))


def _clean_title(result: dict[str, Any], move_to: Optional[Path], delete: bool) -> str:
    """What the run did (with --dry-run: would do) to the folder, in the table's title."""
    doing = []
    if result["output"]:
        doing.append(f"kept images stored into {result['output']}")
    if move_to is not None:
        doing.append(("would move" if result["dry_run"] else "moving") + f" rejected originals to {printable(move_to)}")
    elif delete:
        doing.append(("would delete" if result["dry_run"] else "deleting") + " rejected originals")
    return f"clean {result['folder']} ({'; '.join(doing) or 'report only'})"


# --- demo ------------------------------------------------------------------------------
@core_app.command("demo")
def demo_command(
    settings_path: Optional[Path] = SettingsOpt,
    output: Path = typer.Option(Path("demo-output"), help="where the demo dataset, model and report go"),
    per_tag: int = typer.Option(40, min=1, help="images to collect per hashtag"),
    no_train: bool = typer.Option(False, "--no-train", help="stop after scraping"),
    as_json: bool = JsonOpt,
) -> None:
    """Scrape the local Instagram-like site (synthetic photos) and train: no credentials, no internet."""
    from ..demo import demo

    raise typer.Exit(demo(load_app(settings_path), as_json=as_json, out_dir=output, per_tag=per_tag, train=not no_train))


# --- scrape, login (browser sources) ---------------------------------------------------
@core_app.command()
def scrape(
    tags: list[str] = typer.Argument(..., help="hashtags (with or without #), scraped concurrently"),
    label: str = typer.Option(..., "--label", "-l", help="class label, e.g. selfie or portrait"),
    limit: Optional[int] = typer.Option(None, help="stop after this many accepted images per hashtag"),
    source: str = typer.Option(SCRAPE_SOURCE, help="source plugin: instagram, or gallery (with --base-url a URL template with {tag})"),
    base_url: Optional[str] = typer.Option(None, "--base-url", callback=checked_base_url,
                                           help="the site to scrape, e.g. the local mock site's URL"),
    chain: Optional[str] = typer.Option(None, help="comma-separated steps (default: decode,face_area,dedup,store)"),
    contexts: Optional[int] = typer.Option(None, "--contexts", min=1, max=64, help="browser contexts at once (browser.max_contexts)"),
    replay: Optional[Path] = typer.Option(None, "--replay", help="run offline against a HAR saved by `selfiescope record`"),
    stop_after_known: Optional[int] = typer.Option(
        None, "--stop-after-known", metavar="N", help="end a hashtag after N posts in a row already in the dataset"),
    since: Optional[str] = typer.Option(
        None, "--since", metavar="DATE", help="fetch no post older than DATE (2026-01-01 or 2026-01-01T12:00+02:00; UTC by default)"),
    settings_path: Optional[Path] = SettingsOpt,
    as_json: bool = JsonOpt,
    scheduler: Optional[str] = SchedulerOpt,
    wait: bool = WaitOpt,
) -> None:
    """Collect the images of HASHTAGS into the dataset (rerun the same command to resume)."""
    from pydantic import ValidationError

    from ..core.settings import format_validation_error
    from ..pipelines.collecting.scrape import scrape_pipeline

    app = load_app(settings_path, lambda s: with_wait(with_scheduler(s, scheduler), wait))
    if replay is not None:
        app, base_url = replay_options(app, replay, source, base_url)
    if contexts:
        settings = app.settings
        app = app.with_settings(
            settings.model_copy(update={"browser": settings.browser.model_copy(update={"max_contexts": contexts})}))
    steps = [c.strip() for c in chain.split(",") if c.strip()] if chain else None
    try:
        pipeline = scrape_pipeline(app.registry, tags, label, limit=limit, source=source, base_url=base_url, chain=steps,
                                   stop_after_known=stop_after_known, since=since)
    except ValidationError as exc:
        raise fail("; ".join(format_validation_error(exc))) from None
    except ValueError as exc:  # a --base-url the source cannot take
        raise fail(str(exc)) from None
    run_collect(app, "scrape", pipeline, as_json)




def replay_options(app: App, har_file: Path, source: str, base_url: Optional[str]) -> tuple[App, Optional[str]]:
    from ..core.har import HarError
    from ..pipelines.collecting.record import replay_settings

    try:
        app, recorded_base = replay_settings(app, har_file, source)
    except HarError as exc:  # names the option that gave the file, which the error cannot know
        raise fail(f"--replay: {printable(exc)}") from None
    return app, base_url or recorded_base
