"""The Instagram plugin's commands, added through ``selfiescope_commands``: ``login`` and
``doctor``. Disable the plugin and they are gone from the CLI."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Optional

import typer

from ...api.cli import EXIT_FAILED, EXIT_INTERRUPTED, JsonOpt, SettingsOpt, checked_base_url, console, emit_json, fail, load_app, out, tagged


def register(app: typer.Typer) -> None:
    """Register the commands on ``app`` (the CLI's guarded application)."""
    app.command()(login)
    app.command()(doctor)


def login(
    base_url: Optional[str] = typer.Option(None, "--base-url", callback=checked_base_url, help="default: plugins.instagram.base_url"),
    show_browser: Optional[bool] = typer.Option(
        None, "--show-browser/--headless",
        help="open a browser window to pass two-factor or a challenge (default: when a display exists)",
    ),
    timeout: float = typer.Option(300.0, help="seconds to wait for you to finish in the browser window"),
    from_browser: Optional[str] = typer.Option(
        None, "--from-browser", metavar="BROWSER",
        help="take the session of your own browser instead: chrome, chromium or firefox (needs the 'browser' extra)"),
    profile: Optional[Path] = typer.Option(
        None, "--profile", help="with --from-browser: the profile folder or cookie file (default: the browser's own)"),
    settings_path: Optional[Path] = SettingsOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Log in to Instagram once and save the session (mode 600) for later scrapes.

    Credentials come from SELFIESCOPE_INSTAGRAM_USERNAME / SELFIESCOPE_INSTAGRAM_PASSWORD
    or are asked for here; they are never written anywhere. --from-browser takes the
    session you already have in Chrome, Chromium or Firefox, with no password at all.
    """
    if from_browser is not None or profile is not None:
        return login_from_browser(from_browser, profile, base_url, settings_path, as_json)
    from .session import has_display
    from .session import login as do_login

    settings = load_app(settings_path).settings
    headed = has_display() if show_browser is None else show_browser

    def ask(prompt: str, secret: bool) -> str:
        if not sys.stdin.isatty():
            return ""
        return typer.prompt(prompt, hide_input=secret, default="", show_default=False)

    try:
        path = asyncio.run(do_login(settings, base_url=base_url, headless=not headed, ask=ask, timeout_s=timeout))
    except KeyboardInterrupt:  # quietly: the prompt may have been what was interrupted, nothing was saved
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if as_json:
        emit_json({"ok": True, "session_file": str(path)})
    else:
        out.print(f"logged in; session saved to {path} (readable by you only)", markup=False)


def login_from_browser(browser: Optional[str], profile: Optional[Path], base_url: Optional[str],
                       settings_path: Optional[Path], as_json: bool) -> None:
    from .browser_import import BROWSERS, import_session
    from .session import instagram_base_url

    if browser is None:
        raise fail(f"--profile needs --from-browser ({', '.join(BROWSERS)})")
    if browser.lower() not in BROWSERS:
        raise fail(f"--from-browser {browser}: use one of {', '.join(BROWSERS)}")
    settings = load_app(settings_path).settings
    path, n = import_session(settings, browser.lower(), profile, base_url or instagram_base_url(settings))
    if as_json:
        emit_json({"ok": True, "session_file": str(path), "cookies": n, "browser": browser.lower()})
    else:
        out.print(f"imported the {browser.lower()} session ({n} cookies); saved to {path} "
                  "(readable by you only)", highlight=False)


def doctor(
    base_url: Optional[str] = typer.Option(None, "--base-url", callback=checked_base_url, help="the site (default: plugins.instagram.base_url)"),
    tag: str = typer.Option("selfie", "--tag", help="a hashtag with more than one page of posts"),
    settings_path: Optional[Path] = SettingsOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Check that the site still offers what the instagram source relies on: login form, tag page,
    feed JSON, image candidates, pop-up buttons. Exit 1 when any check fails."""
    from .doctor import Check, check_target, doctor_options, run_doctor
    from .session import instagram_base_url

    settings = load_app(settings_path).settings
    url, name = (base_url or instagram_base_url(settings)).rstrip("/"), tag.lstrip("#")
    colour = {"pass": "green", "fail": "red", "skip": "yellow"}

    def show(check: Check) -> None:  # one line per check as it completes (and what was found instead): greppable
        if as_json:  # stdout is the report; progress goes to stderr
            console.print(f"{check.status:4} {check.name}", highlight=False, markup=False)
            return
        out.print(tagged(f"{check.status:4}", colour.get(check.status, "red"), f" {check.name:16} {check.detail}"),
                  soft_wrap=True, highlight=False)
        if check.found:
            out.print(f"     {'':16} found instead: {check.found}", soft_wrap=True, highlight=False)

    check_target(url, name)
    doctor_options(settings, url)
    if not as_json:
        out.print(f"doctor {url} #{name}", highlight=False)
    try:
        report = asyncio.run(run_doctor(settings, url, name, on_check=show))
    except KeyboardInterrupt:  # quietly: the checks shown so far are the report
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if as_json:
        emit_json(report.as_dict())
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)
