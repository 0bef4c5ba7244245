"""``selfiescope fsck``: do storage and the manifest agree; ``--repair`` mends them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Optional

import typer

from ..exits import EXIT_FAILED, EXIT_OK
from .common import JsonOpt, SettingsOpt, WaitOpt, console, core_app, emit_json, load_app, out, with_wait

SHOWN = 50  # findings listed on the terminal (--json lists them all)


@core_app.command("fsck")
def fsck_command(
    repair: bool = typer.Option(False, "--repair", help="mend what is found: orphan files to the quarantine folder, "
                                "rows without their file removed so a rerun fetches them again"),
    wait: bool = WaitOpt,
    settings_path: Optional[Path] = SettingsOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Check that every stored image has its manifest row and every row its stored bytes.

    Exit code 0 when they agree (or --repair mended everything), 1 when something is wrong.
    """
    from ..pipelines.dataset_care.fsck import QUARANTINE, fsck

    app = load_app(settings_path, lambda s: with_wait(s, wait))
    result = asyncio.run(fsck(app, repair=repair))
    if as_json:
        emit_json(result.as_dict())
    else:
        for name, n in result.finished.items():
            if n:
                out.print(f"finished first: {name.replace('_', ' ')}: {n}")
        for f in result.findings[:SHOWN]:
            done = f" -> {f.repaired}" if f.repaired else ""
            out.print(f"{f.kind}: {f.location}: {f.detail}{done}", highlight=False)
        if len(result.findings) > SHOWN:
            out.print(f"... and {len(result.findings) - SHOWN} more (--json lists them all)")
        for name, n in result.pending.items():
            if n:
                out.print(f"left by a killed run: {name.replace('_', ' ')}: {n} (fsck --repair or the next run "
                          "finishes them)")
        note = f", {result.unverifiable} stored before their hash was kept (present, bytes not checked)" \
            if result.unverifiable else ""
        if links := sum(1 for f in result.findings if f.kind == "link"):
            note += f"; {links} link(s) in the storage layout left alone"
        if result.quarantined:
            note += (f"; the quarantine holds {result.quarantined} file(s) fsck --repair moved out "
                     f"({Path(result.root) / QUARANTINE}: forget removes the copies of what it forgets)")
        wrong = [f"{len(result.problems)} problem(s)"] if result.problems else []
        wrong += ["unfinished work left by a killed run"] if any(result.pending.values()) else []
        verdict = "storage and manifest agree" if result.ok else ", ".join(wrong) + (
            "" if repair else ": run selfiescope fsck --repair to mend them")
        (out if result.ok else console).print(
            f"{result.rows} rows, {result.stored} stored images{note}: {verdict}", highlight=False)
    raise typer.Exit(EXIT_OK if result.ok else EXIT_FAILED)
