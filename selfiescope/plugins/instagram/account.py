"""One account's login, shared by every job of a run.

A session can end at any moment (the site logs the account out, a session times out). The
first job that notices logs in again; jobs that notice while it does wait for it and then take
its cookies, so the site sees one login per lost session, however many jobs run. A login
the site refuses (wrong password, a challenge, a security code) is never tried again in this
run: a real site locks an account that retries.

Each saved state is a *generation*: a job remembers the generation its cookies came from, and
asks for a login only if no newer generation exists.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

from ...api import SiteError
from ...api.web import credential, save_session, within
from .login import submit_login
from .outcomes import PASSWORD_ENV, USERNAME_ENV, LoginFormUnknown, challenge, join_sentences

log = logging.getLogger("selfiescope.instagram")

MAX_LOGINS = 12  # logins per run: a session that keeps ending is the site's verdict, not bad luck
MAX_BARREN_LOGINS = 2  # logins in a row after which not a single post came through: the site refuses us


class LoginRefused(SiteError, RuntimeError):
    """No login is possible in this run (no credentials, refused, challenge); the message says what to do."""


def challenge_message(site_says: str = "") -> str:
    shown = challenge(site_says)
    return join_sentences(f"{shown.what}" + (f": {shown.found}" if shown.found else "") + "; stopping this source",
                          shown.todo)


def no_credentials_message(why: str) -> str:
    return (f"{why}, and there are no credentials to log in again. Run `selfiescope login` once (or set "
            f"{USERNAME_ENV} and {PASSWORD_ENV}), then rerun: the run resumes, nothing stored is lost.")


class Account:
    """The login state of one account for one run: its session, its generation, its verdict."""

    def __init__(self, base_url: str, session_file: Path, state: dict[str, Any] | None, *, allow_login: bool,
                 dismiss: list[str], timeout_s: float) -> None:
        self.base_url = base_url
        self.session_file = session_file
        self.allow_login = allow_login
        self.dismiss = dismiss
        self.timeout_s = timeout_s
        self.states: list[dict[str, Any] | None] = [state]  # index: generation
        self.logins = 0  # credentials submitted in this run
        self.refused: str | None = None  # set once a login is impossible: no job tries again
        self.barren = 0  # logins in a row with no post coming through after them
        self._lock = asyncio.Lock()

    @property
    def state(self) -> dict[str, Any] | None:
        return self.states[-1]

    @property
    def generation(self) -> int:
        return len(self.states) - 1

    def generation_of(self, state: dict[str, Any] | None) -> int:
        """The generation a context made from ``state`` has (0 when unknown)."""
        for generation in range(len(self.states) - 1, -1, -1):
            if self.states[generation] is state:
                return generation
        return 0

    def may_log_in(self) -> bool:
        """Whether a login can still be tried (logging in on, credentials set, not refused)."""
        return self.refused is None and self.allow_login and bool(credential(USERNAME_ENV) and credential(PASSWORD_ENV))

    def note_progress(self) -> None:
        self.barren = 0

    async def log_in(self, lease: Any, had: int, why: str, on_status: Callable[[str], None]) -> int:
        """Make ``lease``'s context logged in, after its session (of generation ``had``) ended.

        Takes a newer session when another job logged in meanwhile; else submits the credentials
        once. Returns the context's new generation; :class:`LoginRefused` when no login is possible.
        """
        async with self._lock:
            if self.refused is not None:
                raise LoginRefused(self.refused)
            if self.generation > had and self.state is not None:
                await within(self.timeout_s, lease.context.add_cookies(self.state.get("cookies", [])),
                             "adding the new session's cookies")
                lease.storage_state = self.state
                return self.generation
            username, password = credential(USERNAME_ENV), credential(PASSWORD_ENV)
            if not self.allow_login:
                self.refused = (f"{why}, and logging in is off (plugins.instagram.login = false). Run "
                                "`selfiescope login` once, then rerun: the run resumes, nothing stored is lost.")
                raise LoginRefused(self.refused)
            if not (username and password):
                self.refused = no_credentials_message(why)
                raise LoginRefused(self.refused)
            if self.logins >= MAX_LOGINS or self.barren >= MAX_BARREN_LOGINS:
                self.refused = (f"{why} again, " + (f"after {self.logins} logins in this run" if self.logins >= MAX_LOGINS
                                                     else f"and no post came through after the last {self.barren} logins")
                                + "; stopping rather than logging in over and over. Rerun later to resume")
                raise LoginRefused(self.refused)
            on_status("logging in")
            log.info("%s; logging in again", why)
            self.logins += 1
            page = await within(self.timeout_s, lease.page(), "opening a page")
            try:
                outcome = await submit_login(page, self.base_url, username, password, self.dismiss,
                                             timeout_s=self.timeout_s)
            except LoginFormUnknown as exc:  # the page's fields, named: the source cannot read this form
                self.refused = str(exc)
                raise LoginRefused(self.refused) from None
            except Exception:
                self.refused = ("the login form could not be used (see the log); run `selfiescope doctor`, "
                                "or `selfiescope login` to save a session, then rerun")
                raise
            if outcome != "ok":
                self.refused = self._refusal(outcome)
                raise LoginRefused(self.refused)
            state = await within(self.timeout_s, lease.context.storage_state(), "reading the session")
            self.states.append(state)
            self.barren += 1
            lease.storage_state = state
            try:
                await asyncio.to_thread(save_session, self.session_file, state, self.base_url)
                log.info("logged in; session saved to %s", self.session_file)
            except OSError as exc:  # the run goes on with the session in memory; the next one logs in again
                log.warning("logged in, but the session could not be saved to %s (%s); this run goes on with it",
                            self.session_file, exc.strerror or type(exc).__name__)
            return self.generation

    @staticmethod
    def _refusal(outcome: str) -> str:
        if outcome == "two_factor":
            return ("Instagram asks for a security code: run `selfiescope login` once to pass it and save a "
                    "session, then rerun to resume")
        if outcome == "challenge":
            return challenge_message()
        return join_sentences(f"login failed: {outcome}",
                              "Not trying again in this run (a site locks accounts that retry); "
                              f"check {USERNAME_ENV} / {PASSWORD_ENV} or run `selfiescope login`, then rerun")


class SessionEnded(SiteError):
    """The site no longer takes this context's session (401, its login page, a login form)."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


async def session_lost(feed: Any, timeout_s: float, *, settle: bool = False) -> str | None:
    """Why a job's session looks lost (a 401 on the feed, the login page, a login form), or None.

    ``feed`` is the job's :class:`~.feed.FeedReader`. ``settle``: a navigation may be under way
    (the page's script going to the login page): let it land first.
    """
    if feed.login_lost:
        return "the session ended (the feed answered 401: login required)"
    page = feed.page
    if page is None or page.is_closed():
        return None
    if settle:
        try:
            await page.wait_for_load_state("domcontentloaded", timeout=min(3.0, timeout_s) * 1000)
        except Exception:  # noqa: BLE001 - still loading, or gone: look at what is there
            pass
    if urlparse(page.url).path.startswith("/accounts/login"):
        return "the session ended (the page went to the login page)"
    try:
        if await within(min(5.0, timeout_s), page.locator("input[type=password]").count(), "looking for a login form"):
            return "the session ended (a login form appeared)"
    except Exception:  # noqa: BLE001 - the page is gone or busy: not evidence of a lost session
        return None
    return None
