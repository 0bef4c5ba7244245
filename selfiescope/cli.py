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
        return load_settings(settings_path)
    except SettingsError as exc:
        console.print(exc.render(), highlight=False, markup=False)
        raise typer.Exit(EXIT_USAGE) from None


def emit_json(data: Any) -> None:
    out.print_json(json.dumps(data, default=str))


class ProgressObserver:
    """A plugin object the CLI registers for the duration of a run, to draw progress."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task = progress.add_task("images", total=None)

    @hookimpl
    def selfiescope_image_accepted(self, event: Any, run: Any) -> None:
        self._advance(run)

    @hookimpl
    def selfiescope_image_rejected(self, event: Any, run: Any) -> None:
        self._advance(run)

    def _advance(self, run: Any) -> None:
        s = run.stats
        self.progress.update(
            self.task, advance=1,
            description=f"accepted {s.accepted}  rejected {s.rejected}",
        )


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
        observer = ProgressObserver(progress)
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
) -> None:
    """Run pipelines defined in settings.toml (several scrape pipelines with the same source
    and chain run together, concurrently, in one run)."""
    settings = load(settings_path)
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
        from .pipelines.train import train

        result = train(settings, pipelines[0])
        emit_json(result) if as_json else out.print(result)
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
) -> None:
    """Run every image under FOLDER through the chain into the dataset."""
    settings = load(settings_path)
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


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
