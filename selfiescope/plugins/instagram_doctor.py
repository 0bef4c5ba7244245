"""``selfiescope doctor``: does the site still offer what the instagram source relies on?

Each check drives a real browser the way the source does and says what it found when
it fails, so a redesign shows up as "the feed JSON has no image_versions2; its media
have keys [...]" rather than as a scrape that quietly stores nothing. The facts checked
are the ones docs/instagram.md documents, with their sources:

``login_form``      username and password fields and a submit button, found by label,
                    placeholder or aria-label (several languages) or by the field names
``login``           with credentials in the environment: the form logs in (session cookie)
``tag_page``        ``/explore/tags/TAG/`` answers 200 with post links, no login wall
``popups``          every pop-up has a button the source knows how to press
``feed_json``       scrolling loads JSON whose media have ``code``, ``pk``,
                    ``image_versions2``, ``original_width/height``, ``user``, ``taken_at``,
                    with ``more_available`` and ``next_max_id`` for paging
``image_candidates`` media carry non-empty ``image_versions2.candidates`` (url, width,
                    height) and the largest one downloads as an image
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import quote, urlparse

from ..core.secrets import credential
from ..core.browser import BrowserPool, load_session, session_path
from ..core.settings import Settings
from ..core.web import scroll_and_wait
from .instagram import CHALLENGE_PATHS, DISMISS_BUTTONS, PASSWORD_ENV, USERNAME_ENV, find_medias

log = logging.getLogger("selfiescope.doctor")

# Documented in docs/instagram.md ("The feed JSON"): what the source reads from a media object.
MEDIA_FIELDS = ("code", "pk", "image_versions2", "original_width", "original_height", "user", "taken_at")
PAGE_FIELDS = ("more_available", "next_max_id")
CANDIDATE_FIELDS = ("url", "width", "height")
FEED_MARKERS = ("/api/v1/", "/graphql")
# Accessible names of the login form's parts, in the languages the source supports.
USERNAME_NAMES = ["Phone number, username, or email", "Phone number, username or email address", "Username",
                  "Mobile number, username or email", "Numéro de téléphone, nom d’utilisateur ou adresse e-mail",
                  "Nom d’utilisateur", "Nom d'utilisateur", "Telefonnummer, Benutzername oder E-Mail-Adresse",
                  "Benutzername", "Teléfono, usuario o correo electrónico", "Nombre de usuario",
                  "Numero di telefono, nome utente o e-mail", "Nome utente",
                  "Telefone, nome de usuário ou email", "Nome de usuário"]
PASSWORD_NAMES = ["Password", "Mot de passe", "Passwort", "Contraseña", "Palavra-passe", "Senha"]
SUBMIT_NAMES = ["Log in", "Log In", "Se connecter", "Connexion", "Anmelden", "Iniciar sesión", "Entrar",
                "Accedi"]
USERNAME_CSS = "input[name=username], input[autocomplete=username]"
PASSWORD_CSS = "input[name=password]"
_INPUTS = """() => Array.from(document.querySelectorAll('input')).filter(i => i.type !== 'hidden').map(i => {
  const label = i.labels && i.labels.length ? i.labels[0].innerText : '';
  return `name=${i.name || '-'} type=${i.type} label=${label || '-'} aria-label=${i.getAttribute('aria-label') || '-'}`
    + ` placeholder=${i.placeholder || '-'}`;
})"""
_DIALOGS = """() => Array.from(document.querySelectorAll('[role=dialog]')).map(d => ({
  label: d.getAttribute('aria-label') || d.innerText.slice(0, 60),
  buttons: Array.from(d.querySelectorAll('button, [role=button]')).map(b => b.innerText.trim()),
}))"""


class DoctorError(ValueError):
    """Bad input (a base URL that is not http(s)); a usage error."""


@dataclass
class Check:
    name: str
    status: str  # pass | fail | skip
    detail: str
    found: str = ""  # what the site offers instead, on failure


@dataclass
class Report:
    base_url: str
    tag: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(c.status == "fail" for c in self.checks)

    def status(self, name: str) -> str | None:
        return next((c.status for c in self.checks if c.name == name), None)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "base_url": self.base_url, "tag": self.tag,
                "checks": [asdict(c) for c in self.checks]}


def _names(names: list[str]) -> re.Pattern[str]:
    return re.compile("^(" + "|".join(re.escape(n) for n in names) + ")$", re.IGNORECASE)


async def run_doctor(settings: Settings, base_url: str, tag: str) -> Report:
    """Run every check against ``base_url`` with hashtag ``tag``; never raises for a site problem."""
    parsed = urlparse(base_url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise DoctorError(f"--base-url must be an http(s) URL, not {base_url!r}")
    if not tag or "/" in tag:
        raise DoctorError(f"--tag must be a hashtag, not {tag!r}")
    doctor = _Doctor(settings, base_url.rstrip("/"), tag)
    budget = settings.browser.timeout_s * 12  # every step has its own deadline; this bounds the sum
    try:
        await asyncio.wait_for(doctor.run(), budget)
    except asyncio.TimeoutError:
        doctor.add("doctor", "fail", f"the checks did not finish within {budget:.0f} s")
    return doctor.report


class _Doctor:
    def __init__(self, settings: Settings, base_url: str, tag: str) -> None:
        self.settings = settings
        self.base_url = base_url
        self.tag = tag
        self.timeout_s = settings.browser.timeout_s
        self.report = Report(base_url, tag)
        self.dismiss = [n for names in DISMISS_BUTTONS.values() for n in names]
        self._dismiss_pattern = _names(self.dismiss)
        self.closed: list[str] = []
        self.unclosable: list[str] = []
        self.feed: list[list[Any]] = []  # [url, status, json or None], in the order they came
        self._reads: set[asyncio.Task[None]] = set()

    def add(self, name: str, status: str, detail: str, found: str = "") -> None:
        self.report.checks.append(Check(name, status, detail, found))

    async def run(self) -> None:
        from playwright.async_api import Error as PlaywrightError

        pool = BrowserPool(self.settings.browser)
        self.saved = await asyncio.to_thread(load_session, session_path(self.settings.browser))
        try:
            # no saved session at first: the login form is checked as a logged-out visitor sees it
            async with pool.lease(block=["image"]) as lease:
                page = await lease.page()
                page.on("response", self._on_response)
                steps = [("login_form", self.check_login_form), ("login", self.check_login),
                         ("tag_page", self.check_tag_page), ("feed_json", self.check_feed),
                         ("image_candidates", self.check_candidates)]
                for name, step in steps:
                    try:
                        await step(lease, page)
                    except (PlaywrightError, asyncio.TimeoutError) as exc:
                        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                        self.add(name, "fail", f"the browser failed: {reason}")
                self.check_popups()
        except PlaywrightError as exc:
            self.add("browser", "fail", f"could not drive the browser: {str(exc).splitlines()[0]}")
        finally:
            for task in list(self._reads):
                task.cancel()
            await pool.close()

    # --- helpers -----------------------------------------------------------------------------
    async def _goto(self, page: Any, path: str) -> Any:
        return await page.goto(self.base_url + path, wait_until="domcontentloaded", timeout=self.timeout_s * 1000)

    async def _close_popups(self, page: Any) -> None:
        """Press known buttons in pop-ups (like the source); note the dialogs none of them closes."""
        from playwright.async_api import TimeoutError as PlaywrightTimeout

        buttons = page.get_by_role("dialog").get_by_role("button", name=self._dismiss_pattern)
        for _ in range(5):
            if not await buttons.count():
                break
            button = buttons.last
            name = (await button.inner_text(timeout=self.timeout_s * 1000)).strip()
            try:
                await button.click(timeout=self.timeout_s * 1000)
            except PlaywrightTimeout:  # covered by a pop-up no known button closes: noted below
                break
            self.closed.append(name)
            await page.wait_for_timeout(50)
        for dialog in await page.evaluate(_DIALOGS):
            text = f"{dialog['label']!r} with buttons {dialog['buttons']}"
            if text not in self.unclosable:
                self.unclosable.append(text)

    def _on_response(self, response: Any) -> None:
        if not any(marker in response.url for marker in FEED_MARKERS):
            return
        if response.request.resource_type not in ("fetch", "xhr"):
            return
        answer = [response.url, response.status, None]  # the body comes later, if ever
        self.feed.append(answer)
        task = asyncio.ensure_future(self._read(response, answer))
        self._reads.add(task)
        task.add_done_callback(self._reads.discard)

    async def _read(self, response: Any, answer: list[Any]) -> None:
        try:  # a body the page never read (a 429 it gave up on) may never come: bounded
            answer[2] = await asyncio.wait_for(response.json(), self.timeout_s)
        except Exception:  # noqa: BLE001 - not JSON, cancelled or hung: stays None
            pass

    async def _settle(self) -> None:
        if self._reads:
            await asyncio.wait(list(self._reads), timeout=self.timeout_s)

    # --- checks ------------------------------------------------------------------------------
    async def check_login_form(self, lease: Any, page: Any) -> None:
        response = await self._goto(page, "/accounts/login/")
        if urlparse(page.url).path.rstrip("/") != "/accounts/login" or (response is not None and response.status >= 400):
            status = response.status if response is not None else "no answer"
            self.add("login_form", "fail", "the login page is gone",
                     f"HTTP {status} at {urlparse(page.url).path}")
            return
        try:  # a form rendered by JavaScript may come late
            await page.locator("input:not([type=hidden])").first.wait_for(timeout=self.timeout_s * 1000)
        except Exception:  # noqa: BLE001 - reported below as "no inputs"
            pass
        await self._close_popups(page)
        self.username_field, how_user = await self._find_field(page, USERNAME_NAMES, USERNAME_CSS)
        self.password_field, how_pass = await self._find_field(page, PASSWORD_NAMES, PASSWORD_CSS)
        submit = page.get_by_role("button", name=_names(SUBMIT_NAMES))
        submit_found = await submit.count() > 0
        if self.username_field is not None and self.password_field is not None and submit_found:
            self.add("login_form", "pass", f"username field by {how_user}, password field by {how_pass}, "
                                           "submit button by name")
            return
        missing = [n for n, ok in (("username field", self.username_field is not None),
                                   ("password field", self.password_field is not None),
                                   ("submit button", submit_found)) if not ok]
        buttons = await page.get_by_role("button").all_inner_texts()
        inputs = await page.evaluate(_INPUTS)
        self.add("login_form", "fail", f"no {', no '.join(missing)} the source can find",
                 f"inputs: {'; '.join(inputs) or 'none'}; buttons: {buttons}")

    async def _find_field(self, page: Any, names: list[str], css: str) -> tuple[Any, str]:
        pattern = _names(names)
        for how, locator in (("label", page.get_by_label(pattern)), ("placeholder", page.get_by_placeholder(pattern)),
                             ("field name", page.locator(css))):
            if await locator.count():
                return locator.first, how
        return None, ""

    async def check_login(self, lease: Any, page: Any) -> None:
        username, password = credential(USERNAME_ENV), credential(PASSWORD_ENV)
        if self.saved and self.saved.get("cookies"):
            await lease.context.add_cookies(self.saved["cookies"])
            self.add("login", "skip", "the session saved by `selfiescope login` is used instead")
            return
        if not (username and password):
            self.add("login", "skip", f"no credentials: set {USERNAME_ENV} and {PASSWORD_ENV} to check logging in")
            return
        if getattr(self, "username_field", None) is None or getattr(self, "password_field", None) is None:
            self.add("login", "skip", "the login form's fields were not found (see login_form)")
            return
        await self.username_field.fill(username)
        await self.password_field.fill(password)
        try:
            async with page.expect_navigation(wait_until="domcontentloaded", timeout=self.timeout_s * 1000):
                await self.password_field.press("Enter")
        except Exception as exc:  # noqa: BLE001 - the message may quote the form's values
            first = str(exc).splitlines()[0].replace(password, "***").replace(username, "***")
            self.add("login", "fail", f"submitting the form did not navigate: {first}")
            return
        path = urlparse(page.url).path
        cookies = {c["name"] for c in await lease.context.cookies()}
        if path.startswith(CHALLENGE_PATHS) or "two_factor" in path:
            self.add("login", "fail", "the site asks for a person (challenge or security code): run "
                                      "`selfiescope login` once", f"page {path}")
        elif "sessionid" not in cookies:
            self.add("login", "fail", "no sessionid cookie after logging in",
                     f"page {path}; cookies: {sorted(cookies)}")
        else:
            self.add("login", "pass", "logged in: sessionid cookie set")
        await self._close_popups(page)

    async def check_tag_page(self, lease: Any, page: Any) -> None:
        self.tag_ok = False
        response = await self._goto(page, f"/explore/tags/{quote(self.tag)}/")
        status = response.status if response is not None else 0
        path = urlparse(page.url).path
        await self._close_popups(page)
        if path.startswith("/accounts/login"):
            self.add("tag_page", "fail", "a login wall: set the credential variables or run `selfiescope login`",
                     f"redirected to {path}")
        elif path.startswith(CHALLENGE_PATHS):
            self.add("tag_page", "fail", "the site shows a challenge: run `selfiescope login --show-browser`",
                     f"redirected to {path}")
        elif status != 200:
            self.add("tag_page", "fail", f"/explore/tags/{self.tag}/ answered HTTP {status}",
                     f"title {await page.title()!r}")
        else:
            links = page.locator('a[href*="/p/"], a[href*="/reel/"]')
            with_images = page.locator('a[href*="/p/"] img, a[href*="/reel/"] img')
            n_links, n_images = await links.count(), await with_images.count()
            if n_links and n_images:
                self.tag_ok = True
                self.add("tag_page", "pass", f"{n_links} post links, {n_images} with an image")
            else:
                self.add("tag_page", "fail", "no post links with images on the tag page",
                         f"{n_links} links to /p/, {n_images} images in them; title {await page.title()!r}")

    async def check_feed(self, lease: Any, page: Any) -> None:
        self.medias: list[dict[str, Any]] = []
        if not getattr(self, "tag_ok", False):
            self.add("feed_json", "skip", "the tag page did not load (see tag_page)")
            return
        for _ in range(6):
            if self.feed:
                break
            await self._close_popups(page)
            await scroll_and_wait(page, min(2.0, self.timeout_s))
        await self._settle()
        answers = [(url, status, data) for url, status, data in self.feed]
        if not answers:
            hint = ("pop-ups that stay open block the feed (see popups)" if self.unclosable
                    else "a tag with one page of posts loads none: try a bigger --tag")
            self.add("feed_json", "fail", "scrolling the tag page loaded no JSON from /api/v1/ or /graphql",
                     f"no feed request seen ({hint})")
            return
        good = [(url, data) for url, status, data in answers if status == 200 and isinstance(data, dict)]
        if not good:
            url, status, data = answers[-1]
            message = data.get("message") if isinstance(data, dict) else None
            self.add("feed_json", "fail", f"the feed answered HTTP {status}" + (f" {message!r}" if message else ""),
                     f"{urlparse(url).path}")
            return
        url, data = good[-1]
        self.medias = [m for _, d in good for m in _media_objects(d)]
        problems = []
        if not self.medias:
            problems.append("no media objects (with code or shortcode)")
        missing_media = sorted({f for m in self.medias for f in MEDIA_FIELDS if f not in m})
        if missing_media:
            problems.append(f"media without {', '.join(missing_media)}")
        missing_page = [f for f in PAGE_FIELDS if f not in data]
        if missing_page:
            problems.append(f"page without {', '.join(missing_page)}")
        if problems:
            media_keys = f"; media keys {sorted(self.medias[0])}" if self.medias else ""
            self.add("feed_json", "fail", "; ".join(problems),
                     f"{urlparse(url).path}: top-level keys {sorted(data)}{media_keys}")
        else:
            self.add("feed_json", "pass", f"{len(self.medias)} media in {len(good)} feed pages from {urlparse(url).path}")

    async def check_candidates(self, lease: Any, page: Any) -> None:
        if not getattr(self, "medias", None):
            self.add("image_candidates", "skip", "no media in the feed JSON (see feed_json)")
            return
        usable = [c for m in self.medias for c in [_largest(m)] if c is not None]
        bad = len(self.medias) - len(usable)
        if not usable:
            sample = self.medias[0].get("image_versions2", "missing")
            self.add("image_candidates", "fail", f"none of {len(self.medias)} media has image candidates "
                                                 f"with {', '.join(CANDIDATE_FIELDS)}",
                     f"image_versions2: {str(sample)[:200]}")
            return
        url = usable[0]["url"]
        resp = await lease.request.get(url, timeout=self.timeout_s * 1000, fail_on_status_code=False)
        ctype = resp.headers.get("content-type", "")
        await resp.dispose()
        if resp.status != 200 or not ctype.startswith("image/"):
            self.add("image_candidates", "fail", "the largest candidate does not download as an image",
                     f"HTTP {resp.status}, content-type {ctype or 'none'} for {urlparse(url).path}")
        elif bad:
            self.add("image_candidates", "fail", f"{bad} of {len(self.medias)} media have no usable candidate")
        else:
            self.add("image_candidates", "pass", f"every media has candidates; the largest ({usable[0]['width']} px) "
                                                 f"downloads as {ctype.split(';')[0]}")

    def check_popups(self) -> None:
        if self.unclosable:
            self.add("popups", "fail", "pop-ups with no button the source knows how to press",
                     "; ".join(self.unclosable))
        elif self.closed:
            self.add("popups", "pass", f"closed with {sorted(set(self.closed))}")
        else:
            self.add("popups", "pass", "no pop-up was shown")


def _media_objects(data: Any) -> list[dict[str, Any]]:
    """Post-like objects: those with ``image_versions2`` and, when it is missing (a changed
    shape), those with a shortcode and an id."""
    found = find_medias(data)
    if found:
        return found
    stack, out = [data], []
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if ("code" in node or "shortcode" in node) and ("pk" in node or "id" in node):
                out.append(node)
                continue
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return out


def _largest(media: dict[str, Any]) -> dict[str, Any] | None:
    candidates = (media.get("image_versions2") or {}).get("candidates") or []
    complete = [c for c in candidates if isinstance(c, dict) and all(c.get(f) for f in CANDIDATE_FIELDS)]
    return max(complete, key=lambda c: c["width"] * c["height"]) if complete else None
