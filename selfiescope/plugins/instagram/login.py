"""Logging in through the web form, in a way that survives redesigns.

Fields and the button are found by role and accessible name first (label, placeholder,
aria-label, in the supported languages), CSS names only as a fallback; the button is
pressed once it is enabled; the outcome is read from the URL and the cookies, never
from page text in one language. A refusal is quoted in the page's own words (its alert, or
a pop-up that offers no choice), so the user reads what the site said.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any
from urllib.parse import urlparse

from ...api.web import ACCEPT, DECLINE, click_dialog_buttons, within
from .outcomes import CHALLENGE_PATHS, LoginFormUnknown, printable

FORM_GRACE_S = 2.0  # a form drawn by script draws its fields together: this long for the rest once one shows
USER_FIELD = re.compile(
    r"user ?name|e-?mail|phone|mobile|nom d.utilisateur|nom de profil|identifiant|t[ée]l[ée]phone|"
    r"benutzername|handynummer|telefonnummer|usuario|correo|nome utente|cellulare|usu[aá]rio|celular",
    re.IGNORECASE,
)
PASSWORD_FIELD = re.compile(r"pass ?word|mot de passe|passwort|contrase[ñn]a|senha", re.IGNORECASE)
SUBMIT = re.compile(r"^\s*(log ?in|sign in|se connecter|connexion|anmelden|einloggen|iniciar sesi[oó]n|entrar|"
                    r"accedi)\s*$", re.IGNORECASE)
REJECTED = "the site rejected the username or password"  # followed by the page's own message
_FIELDS = "input, textarea, [role=textbox], [contenteditable=true]"
# a field a person types into (a pop-up's checkbox or a search box of the page's header are not a form coming)
_ANY_FIELD = ("form input:not([type=hidden]):not([type=checkbox]):not([type=radio]):not([type=submit])"
              ":not([type=button]), form textarea, form [role=textbox], input[type=password]")
_INPUTS = """() => Array.from(document.querySelectorAll('input')).filter(i => i.type !== 'hidden').map(i => {
  const label = i.labels && i.labels.length ? i.labels[0].innerText : '';
  return `name=${i.name || '-'} type=${i.type} label=${label || '-'} aria-label=${i.getAttribute('aria-label') || '-'}`
    + ` placeholder=${i.placeholder || '-'}`;
})"""
USER_CSS = "input[name=username], input[autocomplete=username], input[type=email]"
PASSWORD_CSS = "input[type=password]"


def _field(page: Any, pattern: re.Pattern[str], css: str) -> Any:
    by_name = page.get_by_label(pattern).and_(page.locator(_FIELDS)).or_(page.get_by_placeholder(pattern))
    return by_name.or_(page.locator(css)).first


def login_fields(page: Any) -> tuple[Any, Any, Any]:
    """Locators of the username field, the password field and the submit button, found the
    way :func:`submit_login` finds them (``selfiescope doctor`` checks these very locators)."""
    user = _field(page, USER_FIELD, USER_CSS)
    secret = _field(page, PASSWORD_FIELD, PASSWORD_CSS)
    button = page.get_by_role("button", name=SUBMIT).or_(page.locator("form [type=submit]")).first
    return user, secret, button


async def find_login_form(page: Any, timeout_s: float) -> tuple[Any, Any, Any]:
    """The username field, password field and submit button as the source finds them
    (:func:`.login.login_fields`); :class:`LoginFormUnknown` at once when the page shows
    fields but not those. A form rendered by script comes late: its first field is waited for."""
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    user, secret, button = login_fields(page)
    try:
        await user.or_(page.locator(_ANY_FIELD)).first.wait_for(state="visible", timeout=timeout_s * 1000)
    except PlaywrightTimeout:
        pass  # no field at all: counted below
    deadline = time.monotonic() + min(FORM_GRACE_S, timeout_s)
    while True:
        found = {name: await within(timeout_s, locator.count(), "reading the login form")
                 for name, locator in (("username field", user), ("password field", secret), ("submit button", button))}
        if all(found.values()):
            return user, secret, button
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    buttons = await within(timeout_s, page.get_by_role("button").all_inner_texts(), "reading the login form")
    inputs = await within(timeout_s, page.evaluate(_INPUTS), "reading the login form")
    raise LoginFormUnknown([name for name, n in found.items() if not n], [printable(i, 120) for i in inputs],
                           [printable(b, 40) for b in buttons])


async def _wait_enabled(locator: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not await within(timeout_s, locator.is_enabled(), "checking the login button"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the login button stayed disabled for {timeout_s:g} s")
        await asyncio.sleep(0.1)


async def submit_login(page: Any, base_url: str, username: str, password: str,
                       dismiss: list[str], timeout_s: float = 30.0) -> str:
    """Fill and send the login form. Returns ``ok``, ``two_factor``, ``challenge`` or a reason.

    Errors are re-raised without the call details, which could quote the password.
    """
    from playwright.async_api import Error as PlaywrightError

    try:
        await within(timeout_s + 5, page.goto(f"{base_url}/accounts/login/", wait_until="domcontentloaded"),
                     "loading the login page")
        await click_dialog_buttons(page, dismiss, timeout_s=timeout_s)
        user, secret, button = await find_login_form(page, timeout_s)  # LoginFormUnknown names what it found
        await click_dialog_buttons(page, dismiss, timeout_s=timeout_s)  # and so may a pop-up
        await user.fill(username, timeout=timeout_s * 1000)
        await secret.fill(password, timeout=timeout_s * 1000)
        await _wait_enabled(button, timeout_s)
        await button.click(timeout=timeout_s * 1000)
    except (PlaywrightError, TimeoutError) as exc:
        first = str(exc).splitlines()[0].replace(password, "***").replace(username, "***")
        raise PlaywrightError(f"login form: {first}") from None
    outcome = await wait_for_outcome(page, dismiss, timeout_s)
    return outcome.replace(password, "***").replace(username, "***")  # the page's message may quote them


async def wait_for_outcome(page: Any, dismiss: list[str], timeout_s: float) -> str:
    """Poll the URL and cookies until the login settles (or ``timeout_s``)."""
    from playwright.async_api import Error as PlaywrightError

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            outcome = await login_outcome(page, dismiss, settled=False)
        except PlaywrightError as exc:
            if not _navigating(exc) or time.monotonic() > deadline:
                raise
            outcome = "pending"  # the page is navigating away from the form: read it again once it is there
        if outcome != "pending" or time.monotonic() > deadline:
            return "still on the login page" if outcome == "pending" else outcome
        await asyncio.sleep(0.2)


# The login page's own error: a line under the form (role=alert) or a pop-up over it.
_PAGE_MESSAGES = """() => Array.from(document.querySelectorAll('[role=alert], [role=alertdialog], [role=dialog]')).map(
  el => ({alert: el.getAttribute('role') !== 'dialog',
          text: (el.innerText || el.textContent || '').replace(/\\s+/g, ' ').trim(),
          buttons: Array.from(el.querySelectorAll('button, [role=button]')).map(b => (b.innerText || '').trim())}))"""


async def page_error(page: Any, timeout_s: float = 30.0) -> str:
    """The error the login page shows (its alert, or a pop-up that offers no choice), or ''.

    A pop-up with a decline or accept button is a prompt (cookies, notifications), not an error."""
    messages = await within(timeout_s, page.evaluate(_PAGE_MESSAGES), "reading the login page")
    texts = [m["text"] for m in messages if m["text"] and (
        m["alert"] or not any(DECLINE.search(b) or ACCEPT.search(b) for b in m["buttons"]))]
    return printable(" ".join(texts), 200)


def _navigating(exc: Exception) -> bool:
    text = str(exc)
    return "Execution context was destroyed" in text or "navigation" in text.lower()


async def login_outcome(page: Any, dismiss: list[str], *, settled: bool = True, timeout_s: float = 30.0) -> str:
    """``ok``, ``two_factor``, ``challenge``, a reason, or (``settled=False``) ``pending``."""
    path = urlparse(page.url).path
    if "two_factor" in path:
        return "two_factor"
    if path.startswith(CHALLENGE_PATHS):
        return "challenge"
    cookies = await within(timeout_s, page.context.cookies(), "reading cookies")
    has_session = any(c["name"] == "sessionid" and c["value"] for c in cookies)
    if path.startswith("/accounts/login"):
        if message := await page_error(page, timeout_s):
            return f"{REJECTED}: {message}"
        return "pending" if not settled else "still on the login page"
    if not has_session:
        return "pending" if not settled else "no session cookie after logging in"
    await click_dialog_buttons(page, dismiss, timeout_s=timeout_s)
    return "ok"
