"""One truth for the doctor and the source: each site misbehaviour the doctor names, a scrape of the
same site names with the same words, the site's own message, and exit code 1."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from selfiescope.cli import app
from selfiescope.core.browser_lookup import BrowserNotFound, find_chromium
from selfiescope.plugins.instagram import PASSWORD_ENV, USERNAME_ENV
from selfiescope.plugins.instagram.login import REJECTED
from selfiescope.plugins.instagram.outcomes import (
    MAX_QUOTE, challenge, empty, humanize_wait, join_sentences, printable, rate_limited,
)
from selfiescope.plugins.instagram.watchdog import JobRun
from selfiescope.testing.chaos import Chaos
from selfiescope.testing.site import MockInstagram, TagSpec
from test_instagram import seed_session

USERNAME, PASSWORD = "one_truth", "pw-Truth-4410"
TAGS = {"alpha": TagSpec(6, "selfie", noface=0, small_face=0)}
SITE_429 = "Please wait a few minutes before you try again."


# --- the words ------------------------------------------------------------------------------------
@given(st.text(max_size=400))
def test_a_quoted_message_is_one_short_printable_line(text: str) -> None:
    line = printable(text)
    assert len(line) <= MAX_QUOTE and line == line.strip() and "  " not in line
    assert line.isprintable()


@given(st.lists(st.text(st.characters(codec="ascii"), min_size=1, max_size=40).filter(str.strip),
                min_size=1, max_size=4))
def test_joined_sentences_end_each_part_once_and_never_double_a_mark(parts: list[str]) -> None:
    """A part that ends with its own mark (the site's "incorrect.") keeps it alone; one without gets a period."""
    joined = join_sentences(*parts)
    marks = sum(p.count(m) for p in parts for m in ".!?")
    unended = sum(1 for p in parts if not p.rstrip().endswith((".", "!", "?")))
    assert sum(joined.count(m) for m in ".!?") == marks + unended
    assert joined.endswith((".", "!", "?"))


def test_the_sites_password_message_is_quoted_with_one_period() -> None:
    from selfiescope.plugins.instagram.account import Account

    said = Account._refusal(f"{REJECTED}: Sorry, your password was incorrect.")
    assert "incorrect. Not trying again" in said and ".." not in said


@pytest.mark.parametrize(("seconds", "words"), [(5, "5 s"), (120, "about 2 minutes"), (7200, "about 2 hours"),
                                                (86400, "about 1 day"), (3 * 86400, "about 3 days")])
def test_a_wait_is_said_in_human_units_with_when_it_ends(seconds: float, words: str) -> None:
    said = humanize_wait(seconds, now=datetime(2026, 1, 1, tzinfo=timezone.utc))
    assert said.startswith(words)
    if seconds >= 120:
        assert "UTC" in said


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_any_retry_after_a_site_sends_is_said_without_error(seconds: float) -> None:
    said = humanize_wait(seconds)
    assert said and "\n" not in said
    assert rate_limited("", seconds).message()  # a 429 with a wild Retry-After is still named


def test_downloads_missing_from_a_recording_are_not_offered_a_rerun() -> None:
    state = JobRun("alpha")
    state.seen |= {"a", "b"}
    state.failed["a"] = "not in the recording (offline replay)"
    with pytest.raises(Exception) as raised:
        state.verdict()
    said = str(raised.value)
    assert "not in the recording" in said and "rerun to retry" not in said


# --- the same cause from the doctor and from a scrape -----------------------------------------------
try:
    find_chromium("auto")
    HAVE_CHROMIUM = True
except BrowserNotFound:
    HAVE_CHROMIUM = False

# case: (site keywords, chaos knobs, credentials, saved session, the doctor's check, the cause, the site's words)
CASES: dict[str, dict[str, Any]] = {
    "tag_page_429": dict(site={"require_login": False}, chaos={"tag_page_429_s": 86400}, creds=None, session=False,
                         check="tag_page", cause=rate_limited("", 1).what, says=[SITE_429, "about 1 day"]),
    "unknown_login_form": dict(site={}, chaos={"login_variant": "unknown"}, creds=PASSWORD, session=False,
                               check="login_form", cause="the login form was not recognised",
                               says=["name=em", "name=pw", "selfiescope login --show-browser", "--from-browser"]),
    "challenge": dict(site={"trigger_challenge": True}, chaos={}, creds=None, session=True, check="tag_page",
                      cause=challenge().what, says=["We detected an unusual login attempt"]),
    "no_such_tag": dict(site={"tags": {"beta": TagSpec(3, "selfie", noface=0, small_face=0)}}, chaos={}, creds=None,
                        session=True, check="tag_page", cause="no such hashtag", says=["HTTP 404"]),
    "empty_tag": dict(site={"require_login": False, "tags": {"alpha": TagSpec(0, "selfie", noface=0, small_face=0)}},
                      chaos={}, creds=None, session=False, check="tag_page", cause=empty().what,
                      says=["selfiescope doctor"]),
    "wrong_password": dict(site={}, chaos={}, creds="not-the-password", session=False, check="login", cause=REJECTED,
                           says=["Sorry, your password was incorrect."]),
}


def write_settings(root: Path) -> Path:
    settings = root / "settings.toml"
    # a generous timeout: a cause must be named from what the site says, never by waiting this out
    settings.write_text(f'[storage]\nroot = "{root / "data"}"\n[browser]\nsession_file = "{root / "session.json"}"\n'
                        "timeout_s = 40\n[plugins.instagram]\nstall_s = 120\nscroll_pause_s = 0.5\n"
                        "max_idle_scrolls = 2\nrequests_per_minute = 6000\njitter_s = 0\n")
    return settings


@pytest.mark.browser
@pytest.mark.skipif(not HAVE_CHROMIUM, reason="no Chromium (see scripts/ensure-chromium.sh)")
@pytest.mark.parametrize("case", sorted(CASES))
def test_doctor_and_scrape_name_the_same_cause(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    spec = CASES[case]
    if spec["creds"]:
        monkeypatch.setenv(USERNAME_ENV, USERNAME)
        monkeypatch.setenv(PASSWORD_ENV, spec["creds"])
    knobs = dict(spec["site"])
    trigger = knobs.pop("trigger_challenge", False)
    site = MockInstagram(**{"tags": TAGS, "page_size": 4, "username": USERNAME, "password": PASSWORD, **knobs},
                         chaos=Chaos(**spec["chaos"]))
    with site:
        site.trigger_challenge = trigger
        if spec["session"]:
            seed_session(site, tmp_path)
        settings = write_settings(tmp_path)
        runner = CliRunner()
        doctor = runner.invoke(app, ["doctor", "--base-url", site.base_url, "--settings", str(settings),
                                     "--tag", "alpha", "--json"])
        scrape = runner.invoke(app, ["scrape", "alpha", "--label", "selfie", "--chain", "decode,store",
                                     "--base-url", site.base_url, "-s", str(settings)])
    check = next(c for c in json.loads(doctor.stdout)["checks"] if c["name"] == spec["check"])
    named = f"{check['detail']} {check['found']}"
    said = " ".join(scrape.output.split())  # the terminal wraps long lines
    assert doctor.exit_code == 1 and check["status"] == "fail", check
    assert spec["cause"] in named, named
    assert scrape.exit_code == 1, scrape.output
    assert spec["cause"] in said, said
    for words in spec["says"]:
        assert words in said, (words, said)
    for wrong in ("no posts found" if case != "empty_tag" else "HTTP 429", "did not answer in time", "Call log",
                  "Page.goto", "Locator.", ".. "):
        assert wrong not in said, (wrong, said)
        assert wrong not in named, (wrong, named)
    if spec["creds"]:
        assert spec["creds"] not in scrape.output and spec["creds"] not in doctor.output


def scrape_cli(site: MockInstagram, root: Path) -> tuple[int, str]:
    settings = write_settings(root)
    result = CliRunner().invoke(app, ["scrape", "alpha", "--label", "selfie", "--chain", "decode,store",
                                      "--base-url", site.base_url, "-s", str(settings)])
    return result.exit_code, " ".join(result.output.split())


@pytest.mark.browser
@pytest.mark.skipif(not HAVE_CHROMIUM, reason="no Chromium (see scripts/ensure-chromium.sh)")
def test_a_tag_page_that_hangs_half_way_counts_the_tiles_it_showed(tmp_path: Path) -> None:
    site = MockInstagram(tags={"alpha": TagSpec(8, "selfie", noface=0, small_face=0)}, page_size=6,
                         require_login=False, chaos=Chaos(tag_page_hangs_after_tiles=3))
    with site:
        settings = write_settings(tmp_path)
        settings.write_text(settings.read_text().replace("stall_s = 120", "stall_s = 8")
                            .replace("timeout_s = 40", "timeout_s = 30"))
        result = CliRunner().invoke(app, ["scrape", "alpha", "--label", "selfie", "--chain", "decode,store",
                                          "--base-url", site.base_url, "-s", str(settings)])
    said = " ".join(result.output.split())
    assert result.exit_code == 1, said
    assert "(3 posts found)" in said and "0 posts found" not in said, said


@pytest.mark.browser
@pytest.mark.skipif(not HAVE_CHROMIUM, reason="no Chromium (see scripts/ensure-chromium.sh)")
def test_a_short_tag_page_429_is_waited_out_then_named_with_the_sites_message(tmp_path: Path) -> None:
    site = MockInstagram(tags=TAGS, page_size=4, require_login=False,
                         chaos=Chaos(tag_page_429_s=1, tag_page_429_message="Slow down\x07, friend.\n" + "x" * 500))
    with site:
        code, said = scrape_cli(site, tmp_path)
        loads = sum(1 for _, path, status in site.requests if path.startswith("/explore/tags/") and status == 429)
    assert code == 1, said
    assert rate_limited("", 1).what in said and "Slow down, friend." in said and "\x07" not in said
    assert "x" * (MAX_QUOTE + 1) not in said  # the site's text is quoted short
    assert loads > 1  # waited as asked and tried again before giving up
    assert "no posts found" not in said
