"""``selfiescope review``: serve the review web app for the storage root (selfiescope/review/)."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from .common import SettingsOpt, console, core_app, fail, load_app, tagged


def has_display() -> bool:
    """A browser can be opened here: a desktop session (X11, Wayland) or macOS / Windows."""
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) or sys.platform in ("darwin", "win32")


@core_app.command("review")
def review_command(
    settings_path: Optional[Path] = SettingsOpt,
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on; another than 127.0.0.1 lets other "
                             "machines reach the app (whoever has the link can change the dataset)"),
    port: int = typer.Option(0, "--port", min=0, max=65535, help="port to listen on (default: a free one)"),
    no_open: bool = typer.Option(False, "--no-open", help="do not open a browser, only print the address"),
) -> None:
    """Look at the dataset and fix it in a browser: grid, facets, likely mislabels, relabel/exclude/forget.

    Serves until Ctrl-C (exit code 0). The printed link carries this launch's token; without it
    the app answers nothing.
    """
    from ..review.app import bind, create_app, serve, sigterm_interrupts
    from ..review.data import ReviewData, ReviewError
    from ..review.routes import PAGE_SIZE
    from ..review.security import Gate

    app = load_app(settings_path)
    settings = app.settings
    root = settings.storage.root
    if not host.strip() or any(c.isspace() for c in host):
        raise fail(f"--host: {repr(host)} is not an address to listen on")
    try:
        address = bind(host, port)
    except OSError as exc:
        raise fail(f"--host/--port: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    with contextlib.closing(address.sock):
        try:
            data = ReviewData(app)
            data.check()
            data.finish_interrupted_forget()
            data.warm_up("newest", PAGE_SIZE)  # the first grid page's columns and thumbnails, while the link is opened
        except ReviewError as exc:
            raise fail(str(exc)) from None
        try:
            with sigterm_interrupts():  # a SIGTERM from here on ends it like a Ctrl-C
                gate = Gate.for_address(host, address.port)
                url = f"{address.url}?token={gate.token}"
                if not address.loopback:
                    console.print(tagged("warning:", "yellow", f" serving on {host}, not only this machine: "
                                  "anyone who can reach it and has the link can change the dataset"), highlight=False)
                print(f"Reviewing {root} at {url}", flush=True)
                if address.local_url:
                    print(f"  on this machine: {address.local_url}?token={gate.token}", flush=True)
                print("Ctrl-C stops it.", file=sys.stderr, flush=True)
                if not no_open and has_display():
                    _open_browser(url)
                serve(create_app(data, gate), address)
        except KeyboardInterrupt:
            pass
        finally:
            data.close()
    console.print("review stopped; every change shown as saved is in the manifest", highlight=False)


def _open_browser(url: str) -> None:
    import webbrowser

    try:
        webbrowser.open(url, new=2)
    except Exception:  # noqa: BLE001 - no usable browser: the printed link is enough
        console.print("could not open a browser: open the link above", highlight=False)
