"""``selfiescope login``: log in once, interactively if need be, and save the browser session.

Logging in is the Instagram plugin's business, not a pipeline's; the
source (:mod:`.source`) logs in by itself at a login wall with the environment's credentials.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...api import Settings, SiteError
from ...api.web import BrowserPool, credential, save_session, session_path
from .errors import explain
from .login import login_outcome, submit_login
from .outcomes import LoginFormUnknown
from .source import DISMISS_BUTTONS, PASSWORD_ENV, USERNAME_ENV, InstagramOptions

log = logging.getLogger("selfiescope.instagram")

# ask(prompt, secret) -> answer; the CLI passes a terminal prompt, tests a function.
Ask = Callable[[str, bool], str]


class LoginError(SiteError, RuntimeError):
    """The login did not produce a session; the message says why (never the credentials)."""


def instagram_base_url(settings: Settings) -> str:
    """``[plugins.instagram] base_url``, else the real site."""
    return str(settings.plugins.get("instagram", {}).get("base_url") or InstagramOptions().base_url).rstrip("/")


async def login(settings: Settings, *, base_url: str | None = None, headless: bool = True, ask: Ask | None = None,
                timeout_s: float = 300.0) -> Path:
    """Log in once and save the browser session (0600) for later runs; returns its path.

    Credentials come from the environment or ``ask``. A two-factor code is asked for
    through ``ask``; in a visible browser a person may instead type it there, or pass
    a challenge, within ``timeout_s``.
    """
    base = (base_url or instagram_base_url(settings)).rstrip("/")
    dismiss = [n for names in DISMISS_BUTTONS.values() for n in names]
    username = credential(USERNAME_ENV) or (ask("Instagram username", False) if ask else "")
    password = credential(PASSWORD_ENV) or (ask("Instagram password", True) if ask and username else "")
    if headless and not (username and password):
        raise LoginError(f"no credentials: set {USERNAME_ENV} and {PASSWORD_ENV}, or log in with a visible browser")
    from playwright.async_api import Error as PlaywrightError

    pool = BrowserPool(settings.browser, headless=headless)
    try:
        async with pool.lease(block=[]) as lease:
            page = await lease.page()
            if username and password:
                try:
                    outcome = await submit_login(page, base, username, password, dismiss,
                                                 timeout_s=settings.browser.timeout_s)
                except LoginFormUnknown as exc:
                    if headless:
                        raise LoginError(str(exc)) from None
                    log.warning("%s; fill it in the browser window", exc.what)  # a person can read any form
                    outcome = "still on the login page"
            else:
                await page.goto(f"{base}/accounts/login/", wait_until="domcontentloaded")
                outcome = "still on the login page"
            deadline = time.monotonic() + timeout_s
            while outcome != "ok":
                if outcome == "two_factor" and ask is not None and headless:
                    outcome = await _send_code(page, ask("Security code", False), dismiss)
                    if outcome == "two_factor":
                        raise LoginError("the security code was not accepted")
                    continue
                if headless:
                    if outcome == "two_factor":
                        raise LoginError("Instagram asks for a security code; run `selfiescope login` in a terminal")
                    if outcome == "challenge":
                        raise LoginError("Instagram shows a challenge; run `selfiescope login --show-browser` to pass it")
                    raise LoginError(outcome)
                if time.monotonic() > deadline:
                    raise LoginError(f"not logged in after {timeout_s:.0f} s ({outcome})")
                await asyncio.sleep(1.0)  # a person is typing in the window
                outcome = await login_outcome(page, dismiss)
            path = session_path(settings.browser)
            await asyncio.to_thread(save_session, path, await lease.context.storage_state(), base)
            log.info("session saved to %s", path)
            return path
    except PlaywrightError as exc:  # what happened and what to do, never the browser's own text
        raise LoginError(explain(exc, "logging in")) from None
    finally:
        await pool.close()


async def _send_code(page: Any, code: str, dismiss: list[str]) -> str:
    field = page.get_by_label("Security Code").or_(page.locator("input[name=verificationCode]")).first
    await field.fill(code.strip())
    async with page.expect_navigation(wait_until="domcontentloaded"):
        await field.press("Enter")
    return await login_outcome(page, dismiss)


def has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) or os.name == "nt" \
        or os.uname().sysname == "Darwin"
