"""The privacy and provenance commands: ``forget``, ``card``, ``export``.

Registered on :data:`selfiescope.cli.common.core_app` when imported; like
the rest of the CLI they parse, call a pipeline and print, with no logic of their own.
"""

from __future__ import annotations

import asyncio
import errno
import json
import sqlite3
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ..exits import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, os_error
from .common import JsonOpt, SettingsOpt, WaitOpt, console, core_app, emit_json, fail, load_app, out, tagged, with_wait
from ..core.text import printable

SHOWN = 50  # matched images listed on the terminal (--json lists them all)


def _print_forget(result, verb: str, to=out) -> None:  # noqa: ANN001 - ForgetResult, Console
    if result.resumed:
        done = "would finish" if result.dry_run else "finished"
        console.print(f"{done} an interrupted forget first ({result.resumed} entries)")
    if result.stale_runs:
        console.print(f"{result.stale_runs} earlier run(s) were killed before they finished: marked interrupted")
    if result.unknown_owner:
        console.print(tagged("note", "yellow", f": {result.unknown_owner} stored images have no known owner "
                      "(their source did not record one): --owner cannot find them; use --post or --image"))
    if not result.removed_anything:
        return
    table = Table(title=f"{verb}: {len(result.images)} images, {result.posts} posts")
    for col in ("id", "label", "location", "decision"):
        table.add_column(col)
    for m in result.images[:SHOWN]:
        table.add_row(*(printable(cell) for cell in (m.id or m.content_hash[:16], m.label or "", m.location or "", m.decision)))
    if len(result.images) > SHOWN:
        table.add_row(f"... and {len(result.images) - SHOWN} more", "", "", "")
    to.print(table)
    if result.quarantined:
        to.print(f"quarantined copies (fsck's quarantine folder) that would go: {len(result.quarantined)}")
        for path in result.quarantined[:SHOWN]:
            to.print(f"  {printable(path)}", highlight=False)
    if not result.dry_run:
        removed = ", ".join(f"{k} {v}" for k, v in result.removed.items() if v)
        to.print(f"removed: {removed or 'nothing more'}; tombstones added: {result.tombstones}")
    for use in result.models:
        to.print(tagged("model", "yellow", f" {use.path} was trained on {use.images} of these images: "
                  f"retrain it (`{use.retrain}`) so it no longer includes them"), highlight=False)


def _forget_failed(settings, exc: OSError) -> str:  # noqa: ANN001 - Settings
    """What a forget that hit a filesystem error did: "saved" only when the manifest, read back
    now, holds the to-do list the next forget (or run) finishes."""
    from ..core.manifest import Manifest
    from ..pipelines.dataset_care.forget import pending_count

    line = os_error(exc)[1]
    try:
        manifest = Manifest.for_reading(settings.storage.root)
        try:
            pending = pending_count(manifest)
        finally:
            manifest.close()
    except Exception:  # noqa: BLE001 - cannot even read it back: claim nothing
        pending = 0
    if pending:
        return f"{line}; the removal is recorded ({pending} entries to finish): run the same command again to finish it"
    return f"{line}; nothing was forgotten (nothing was removed)"


@core_app.command("forget")
def forget_command(
    post: list[str] = typer.Option([], "--post", help="a post's shortcode or URL (repeatable)"),
    owner: list[str] = typer.Option([], "--owner", help="an owner's user name (matched through its pseudonym)"),
    image: list[str] = typer.Option([], "--image", help="an image id, content hash, stored file or original file"),
    label: list[str] = typer.Option([], "--label", help="every image of a label"),
    yes: bool = typer.Option(False, "--yes", "-y", help="do not ask for confirmation"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list what would be removed; change nothing"),
    wait: bool = WaitOpt,
    settings_path: Optional[Path] = SettingsOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Remove images everywhere (files, manifest, dedup index, features) and never collect them again.

    Exit code 0 when something was removed (or would be, with --dry-run), 1 when nothing matched.
    """
    from ..pipelines.dataset_care.forget import ForgetRequest, forget

    request = ForgetRequest(list(post), list(owner), list(image), list(label))
    if request.empty():
        raise fail("say what to forget: --post, --owner, --image or --label")
    app = load_app(settings_path, lambda s: with_wait(s, wait))
    settings = app.settings
    try:
        if not (yes or dry_run):
            preview = asyncio.run(forget(app, request, dry_run=True))
            if preview.images or preview.posts:
                _print_forget(preview, "would forget", console if as_json else out)  # stdout stays JSON
                if not typer.confirm(f"Forget these {len(preview.images)} images for good?", default=False, err=True):
                    console.print("nothing removed")
                    raise typer.Exit(EXIT_FAILED)
        result = asyncio.run(forget(app, request, dry_run=dry_run))
    except typer.Abort:
        console.print("nothing removed (no answer: pass --yes to confirm without a prompt)")
        raise typer.Exit(EXIT_FAILED) from None
    except KeyboardInterrupt:
        console.print(tagged("interrupted", "yellow", ": run the same command again to finish the forget"))
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except sqlite3.Error as exc:  # the manifest itself failed: say only what a read-back shows
        raise fail(_forget_failed(settings, OSError(str(exc))), EXIT_FAILED) from None
    except OSError as exc:
        if dry_run:
            raise fail(printable(f"cannot read the dataset: {exc}")) from None
        raise fail(_forget_failed(settings, exc), os_error(exc)[0]) from None
    if as_json:
        emit_json(result.as_dict())
    else:
        _print_forget(result, "would forget" if dry_run else "forgot")
        if not result.removed_anything:
            note = " (a tombstone was recorded: future scrapes skip it)" if result.tombstones else ""
            console.print(f"nothing matched{note}")
    raise typer.Exit(EXIT_OK if result.removed_anything else EXIT_FAILED)


@core_app.command("card")
def card_command(settings_path: Optional[Path] = SettingsOpt, as_json: bool = JsonOpt) -> None:
    """Write the dataset card (DATASET.md and datacard.json) in the storage root.

    On a root that cannot be written (a read-only mount) the card is printed instead and the
    exit code is 1: it was not written."""
    from ..core.manifest import Manifest
    from ..pipelines.dataset_care.card import build_card, render_markdown, write_card

    app = load_app(settings_path)
    settings = app.settings
    root = Path(settings.storage.root)
    if not (root / "manifest.sqlite").exists():
        raise fail(f"no dataset at {root}: {root / 'manifest.sqlite'} does not exist")
    manifest = Manifest.for_reading(root)
    unwritten: OSError | None = None
    try:
        try:
            md, js = write_card(app, manifest)
            card = json.loads(js.read_text())  # what was written, not a second build (its timestamp would differ)
        except OSError as exc:
            unwritten, card = exc, build_card(app, manifest)
    finally:
        manifest.close()
    if unwritten is not None:
        if as_json:
            emit_json(card)
        else:
            out.print(render_markdown(card), markup=False, highlight=False)
        why = f"{root} is read-only" if unwritten.errno in (errno.EROFS, errno.EACCES) else os_error(unwritten)[1]
        raise fail(f"the card above was not written: {why}", EXIT_FAILED)
    if as_json:
        emit_json(card)
    else:
        out.print(f"wrote {md} and {js}: {card['images']} images, {card['rejections']['total']} rejections", markup=False)


@core_app.command("export")
def export_command(
    directory: Path = typer.Argument(..., help="a new (or empty) folder"),
    fmt: str = typer.Option("imagefolder", "--format", "-f", help="imagefolder, csv or parquet"),
    include_urls: bool = typer.Option(False, "--include-urls", help="also export post/image URLs and original paths"),
    settings_path: Optional[Path] = SettingsOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Export the dataset: an imagefolder with metadata.csv, or a CSV/Parquet table. Never forgotten images."""
    from ..pipelines.dataset_care.export import export

    app = load_app(settings_path)
    result = asyncio.run(export(app, directory, fmt, include_urls=include_urls))  # type: ignore[arg-type]
    if as_json:
        emit_json(result.as_dict())
    else:
        out.print(f"exported {result.images} images to {printable(result.directory)} "
                  f"({result.format}: {', '.join(result.files)})")
    if result.skipped:
        first = printable(result.skipped[0])
        raise fail(f"{len(result.skipped)} stored files could not be read and are not in the export (first: {first}); "
                   "the rest is complete", EXIT_FAILED)
