"""``selfiescope record``: save one browsing session of any browser source as a HAR, for
``scrape --replay``. Built in because recording asks the source class for what it needs
(``credential_env``, ``url_option``), never for a name: it works for every browser source."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Optional

import typer

from ..core.settings import SCRAPE_SOURCE
from ..exits import EXIT_FAILED, EXIT_INTERRUPTED
from .collect import ProgressObserver
from .collect import _progress as progress_bar
from .common import JsonOpt, SettingsOpt, checked_base_url, console, core_app, emit_json, fail, load_app, out, tagged


@core_app.command("record")
def record_command(
    tags: list[str] = typer.Argument(..., help="hashtags to browse once (with or without #)"),
    har_file: Path = typer.Option(..., "--har", help="the HAR file to write (scrubbed of secrets, mode 600)"),
    limit: Optional[int] = typer.Option(30, min=1, help="stop after this many images per hashtag"),
    source: str = typer.Option(SCRAPE_SOURCE, help="source plugin"),
    base_url: Optional[str] = typer.Option(
        None, "--base-url", callback=checked_base_url, help="the site (default: the source's own, e.g. plugins.instagram.base_url)"),
    settings_path: Optional[Path] = SettingsOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Save one real browsing session of HASHTAGS as a HAR, with cookies, auth headers, CSRF
    tokens and credentials scrubbed; replay it with `scrape TAG --replay FILE`."""
    from ..pipelines.collecting.record import record

    if not har_file.parent.is_dir():  # else the browser fails to start, saying only that it failed
        raise fail(f"--har {har_file}: folder {har_file.parent} does not exist")
    app = load_app(settings_path)
    try:
        with progress_bar(not as_json) as progress:  # the job state lines a scrape shows
            app.register(ProgressObserver(progress, plain=not as_json and not console.is_terminal))
            result = asyncio.run(record(app, tags, har_file, source=source, base_url=base_url, limit=limit))
    except FileExistsError as exc:  # the HAR's own message, which names it and says what to do
        raise fail(str(exc)) from None
    except KeyboardInterrupt:  # says what an interrupted recording leaves: nothing
        console.print(tagged("interrupted", "yellow", ": nothing was written"))
        raise typer.Exit(EXIT_INTERRUPTED) from None
    summary = result.summary()
    if as_json:
        emit_json(summary)
    else:
        out.print(f"recorded {summary['entries']} requests ({summary['posts']} posts) into {har_file}; "
                  f"{summary['redactions']} secret values redacted")
        for err in summary["errors"]:
            console.print(tagged("error", "red", f" {err}"), highlight=False)
    if summary["errors"] or not summary["posts"]:
        raise typer.Exit(EXIT_FAILED)
