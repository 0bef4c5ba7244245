"""`selfiescope doctor` against the local site: clean, with each thing the source relies on broken,
and with the site's chaos knobs, where it must pass exactly when a scrape of the same site works."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from selfiescope.cli import app
from selfiescope.core.browser_lookup import find_chromium
from selfiescope.plugins.instagram import PASSWORD_ENV, USERNAME_ENV
from selfiescope.plugins.instagram.doctor import CHECKS
from selfiescope.testing.chaos import Chaos
from selfiescope.testing.site import BREAKAGES, MockInstagram, TagSpec


pytestmark = pytest.mark.browser

USERNAME, PASSWORD = "doc_user", "doc-Pass-8812"
TAGS = {"alpha": TagSpec(9, "selfie", noface=0, small_face=0)}
# The check each breakage must fail (others may fail or be skipped as a consequence).
BROKEN_CHECK = {
    "login_fields": "login_form",
    "tag_page": "tag_page",
    "feed_shape": "feed_json",
    "image_versions": "feed_json",
    "candidates": "image_candidates",
    "popup_buttons": "popups",
}


@pytest.fixture
def creds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(USERNAME_ENV, USERNAME)
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)


def doctor(tmp_path: Path, base_url: str, *args: str) -> tuple[int, str]:
    settings = tmp_path / "settings.toml"
    settings.write_text(f'[browser]\nsession_file = "{tmp_path / "session.json"}"\ntimeout_s = 6\n')
    result = CliRunner().invoke(app, ["doctor", "--base-url", base_url, "--settings", str(settings), *args])
    return result.exit_code, result.stdout


def test_every_breakage_has_a_check() -> None:
    assert set(BROKEN_CHECK) == set(BREAKAGES)


def test_a_healthy_site_passes_every_check(tmp_path: Path, creds: None) -> None:
    with MockInstagram(tags=TAGS, page_size=4, username=USERNAME, password=PASSWORD, consent_language="de") as site:
        code, out = doctor(tmp_path, site.base_url, "--tag", "alpha", "--json")
    report = json.loads(out)
    assert code == 0, out
    assert report["ok"] is True
    assert {c["name"]: c["status"] for c in report["checks"]} == {name: "pass" for name in CHECKS}
    popups = next(c for c in report["checks"] if c["name"] == "popups")
    assert "Optionale Cookies ablehnen" in popups["detail"]  # the German consent, declined
    assert PASSWORD not in out and USERNAME not in out


@pytest.mark.parametrize("breakage", sorted(BROKEN_CHECK))
def test_each_breakage_fails_its_check_and_says_what_it_found(tmp_path: Path, creds: None, breakage: str) -> None:
    # No login wall where the breakage is the login form: the other checks still run.
    with MockInstagram(tags=TAGS, page_size=4, username=USERNAME, password=PASSWORD, breakage=[breakage],
                       require_login=breakage != "login_fields") as site:
        code, out = doctor(tmp_path, site.base_url, "--tag", "alpha", "--json")
    report = json.loads(out)
    status = {c["name"]: c for c in report["checks"]}
    broken = status[BROKEN_CHECK[breakage]]
    assert code == 1 and report["ok"] is False
    assert broken["status"] == "fail", broken
    assert broken["found"], "a failure says what the site offers instead"
    if breakage == "login_fields":
        assert "f_a8x1" in broken["found"]  # the renamed field, shown to whoever updates the source
        assert status["tag_page"]["status"] == "pass" and status["feed_json"]["status"] == "pass"
    if breakage == "image_versions":
        assert "image_versions2" in broken["detail"] and "'code'" in broken["found"]
    if breakage == "popup_buttons":
        assert "Manage my choices" in broken["found"]


def test_plain_output_lists_each_check(tmp_path: Path) -> None:
    with MockInstagram(tags=TAGS, page_size=4, breakage=["tag_page"], require_login=False) as site:
        code, out = doctor(tmp_path, site.base_url, "--tag", "alpha")
    assert code == 1
    assert "tag_page" in out and "fail" in out and "HTTP 404" in out
    assert "login_form" in out and "pass" in out


@pytest.mark.parametrize("args", [["--base-url", "ftp://example.com"], ["--base-url", "127.0.0.1:80"],
                                  ["--tag", "a/b"], ["--no-such-option"]])
def test_usage_errors_exit_2(tmp_path: Path, args: list[str]) -> None:
    base = [] if "--base-url" in args else ["--base-url", "http://127.0.0.1:9"]
    settings = tmp_path / "settings.toml"
    settings.write_text("")
    result = CliRunner().invoke(app, ["doctor", *base, "--settings", str(settings), *args])
    assert result.exit_code == 2, result.output


def test_a_saved_session_is_used_and_the_login_form_still_checked(tmp_path: Path) -> None:
    from selfiescope.core.browser import save_session

    with MockInstagram(tags=TAGS, page_size=4) as site:
        cookie = {"name": "sessionid", "value": site.login_session(), "domain": "127.0.0.1", "path": "/",
                  "expires": -1, "httpOnly": True, "secure": False, "sameSite": "Lax"}
        save_session(tmp_path / "session.json", {"cookies": [cookie], "origins": []})
        code, out = doctor(tmp_path, site.base_url, "--tag", "alpha", "--json")
    status = {c["name"]: c["status"] for c in json.loads(out)["checks"]}
    assert code == 0, out
    assert status["login_form"] == "pass" and status["login"] == "skip" and status["feed_json"] == "pass"


def test_a_site_that_never_answers_fails_instead_of_hanging(tmp_path: Path, silent_site: str) -> None:
    """Accepts connections, never answers: every step hits its deadline and says so."""
    settings = tmp_path / "settings.toml"
    settings.write_text(f'[browser]\nsession_file = "{tmp_path / "session.json"}"\ntimeout_s = 2\n')
    result = CliRunner().invoke(app, ["doctor", "--base-url", silent_site, "--settings", str(settings), "--json"])
    report = json.loads(result.stdout)
    assert result.exit_code == 1 and report["ok"] is False
    first = report["checks"][0]
    assert first["name"] == "login_form" and first["status"] == "fail" and "did not answer in time" in first["detail"]
    assert "Call log" not in result.output and "Page.goto" not in result.output


def test_a_rate_limited_feed_is_reported_with_the_sites_message(tmp_path: Path) -> None:
    with MockInstagram(tags=TAGS, page_size=4, require_login=False, rate_limit_every=1) as site:
        code, out = doctor(tmp_path, site.base_url, "--tag", "alpha", "--json")
    feed = next(c for c in json.loads(out)["checks"] if c["name"] == "feed_json")
    assert code == 1 and feed["status"] == "fail"
    assert "rate-limiting" in feed["detail"] and "HTTP 429" in feed["detail"]
    assert "Please wait a few minutes before you try again." in feed["found"]  # the site's own words


# --- the site's variants: the doctor passes where the source works ---------------------------------
@pytest.mark.parametrize("knobs", [
    {"client_feed": True, "latency_ms": 400},
    {"client_feed": True, "web_info": True, "login_variant": "labels", "js_login": True, "consent_language": "de"},
    {"login_variant": "labels", "consent_language": "es", "web_info": True},
    {"js_login": True, "hung_beacons": True, "late_dialog_ms": 300, "virtual_grid": 1},
], ids=["client-grid", "web-info-german-js-form", "spanish-labels", "js-form-beacons-late-dialog"])
def test_a_healthy_variant_of_the_site_passes_every_check(tmp_path: Path, creds: None, knobs: dict) -> None:
    """A grid drawn by script, paging nested under data.recent, a form labelled in German or
    Spanish: the source scrapes all of these, so the doctor must pass them."""
    knobs = dict(knobs)  # the parameters are shared between runs: never change them
    lang, latency_ms = knobs.pop("consent_language", "en"), knobs.pop("latency_ms", 0)
    with MockInstagram(tags=TAGS, page_size=4, username=USERNAME, password=PASSWORD, consent_language=lang,
                       latency_ms=latency_ms, chaos=Chaos(**knobs)) as site:
        code, out = doctor(tmp_path, site.base_url, "--tag", "alpha", "--json")
    report = json.loads(out)
    assert {c["name"]: c["status"] for c in report["checks"]} == {name: "pass" for name in CHECKS}, out
    assert code == 0


def test_a_wrong_password_is_named_with_the_pages_message_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(USERNAME_ENV, USERNAME)
    monkeypatch.setenv(PASSWORD_ENV, "not-the-password")
    settings = tmp_path / "settings.toml"
    # a long timeout: the outcome must come from the page's message, not from waiting this out
    settings.write_text(f'[browser]\nsession_file = "{tmp_path / "session.json"}"\ntimeout_s = 60\n')
    with MockInstagram(tags=TAGS, page_size=4, username=USERNAME, password=PASSWORD,
                       chaos=Chaos(js_login=True)) as site:
        result = CliRunner().invoke(app, ["doctor", "--base-url", site.base_url, "--settings", str(settings),
                                          "--tag", "alpha", "--json"])
    login = next(c for c in json.loads(result.stdout)["checks"] if c["name"] == "login")
    assert result.exit_code == 1 and login["status"] == "fail"
    assert "wrong username or password" in login["detail"]
    assert "Sorry, your password was incorrect." in login["found"]
    assert login["elapsed_s"] < 60  # not a timeout (which would take 60 s)
    assert "not-the-password" not in result.output


def test_a_challenge_is_named_with_the_pages_message(tmp_path: Path) -> None:
    with MockInstagram(tags=TAGS, page_size=4) as site:
        site.trigger_challenge = True
        cookie = {"name": "sessionid", "value": site.login_session(), "domain": "127.0.0.1", "path": "/",
                  "expires": -1, "httpOnly": True, "secure": False, "sameSite": "Lax"}
        from selfiescope.core.browser import save_session

        save_session(tmp_path / "session.json", {"cookies": [cookie], "origins": []})
        code, out = doctor(tmp_path, site.base_url, "--tag", "alpha", "--json")
    tag_page = next(c for c in json.loads(out)["checks"] if c["name"] == "tag_page")
    assert code == 1 and tag_page["status"] == "fail"
    assert "challenge" in tag_page["detail"]
    assert "We detected an unusual login attempt" in tag_page["found"]


def test_each_check_is_printed_as_it_completes(tmp_path: Path) -> None:
    """Progress: the plain output has one line per check, and run_doctor hands each check
    over as it completes (before the next one starts), not all at the end."""
    import asyncio

    from selfiescope.core.settings import settings_from_dict
    from selfiescope.plugins.instagram.doctor import run_doctor

    seen: list[tuple[str, int]] = []
    with MockInstagram(tags=TAGS, page_size=4, require_login=False) as site:
        settings = settings_from_dict({"browser": {"session_file": str(tmp_path / "s.json"), "timeout_s": 6}})
        before = len(site.requests)

        def on_check(check) -> None:  # noqa: ANN001 - a Check
            seen.append((check.name, len(site.requests) - before))

        report = asyncio.run(run_doctor(settings, site.base_url, "alpha", on_check=on_check))
        code, out = doctor(tmp_path, site.base_url, "--tag", "alpha")
    assert [name for name, _ in seen] == [c.name for c in report.checks] == list(CHECKS)
    requests_at = dict(seen)
    assert requests_at["login_form"] < requests_at["tag_page"]  # reported before the tag page was asked for
    assert code == 0
    lines = [line.split()[1] for line in out.splitlines()[1:] if line.split() and line.split()[0] in ("pass", "fail", "skip")]
    assert lines == list(CHECKS)


def test_a_slow_chromium_start_is_not_a_site_failure(tmp_path: Path) -> None:
    with MockInstagram(tags=TAGS, page_size=4, require_login=False) as site:
        settings = tmp_path / "settings.toml"
        slow = tmp_path / "slow-chromium"  # a "Chromium" that takes 30 s to start: a very busy machine
        slow.write_text(f"#!/bin/sh\nsleep 30\nexec {find_chromium('auto')} \"$@\"\n")
        slow.chmod(0o755)
        settings.write_text(f'[browser]\nsession_file = "{tmp_path / "session.json"}"\ntimeout_s = 6\n'
                            f'launch_timeout_s = 2\nexecutable = "{slow}"\n')
        result = CliRunner().invoke(app, ["doctor", "--base-url", site.base_url, "--settings", str(settings),
                                          "--tag", "alpha", "--json"])
    checks = json.loads(result.stdout)["checks"]
    assert result.exit_code == 1
    assert [c["name"] for c in checks] == ["browser"]  # no site check is blamed
    assert "did not start within 2 s (browser.launch_timeout_s)" in checks[0]["detail"]
    assert "did not finish" not in checks[0]["detail"]


def test_a_refusal_told_in_a_pop_up_is_named_with_its_words(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The doctor reads a refused login with the source's own reader: a pop-up's words count too."""
    monkeypatch.setenv(USERNAME_ENV, USERNAME)
    monkeypatch.setenv(PASSWORD_ENV, "not-the-password")
    with MockInstagram(tags=TAGS, page_size=4, username=USERNAME, password=PASSWORD,
                       chaos=Chaos(login_error_dialog=True)) as site:
        code, out = doctor(tmp_path, site.base_url, "--tag", "alpha", "--json")
    login = next(c for c in json.loads(out)["checks"] if c["name"] == "login")
    assert code == 1 and login["status"] == "fail" and "wrong username or password" in login["detail"]
    assert "password was incorrect" in login["found"], login
    assert "not-the-password" not in out


def test_a_post_page_that_asks_to_log_in_fails_the_image_check_plainly(
        tmp_path: Path, creds: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every image URL expired (403): the fresh one comes from the post's page, which sends us to the
    login page; the check fails saying so, and the doctor goes on to its report."""
    from selfiescope.plugins.instagram import doctor as doctor_module
    from selfiescope.plugins.instagram.account import SessionEnded

    async def login_page(*_: object) -> str | None:
        raise SessionEnded("the session ended (the post's page went to the login page)")

    monkeypatch.setattr(doctor_module, "fresh_image_url", login_page)
    with MockInstagram(tags=TAGS, page_size=4, username=USERNAME, password=PASSWORD,
                       chaos=Chaos(url_ttl_s=600, stale_url_share=1.0)) as site:
        code, out = doctor(tmp_path, site.base_url, "--tag", "alpha", "--json")
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert code == 1 and checks["image_candidates"]["status"] == "fail"
    assert "post's page went to the login page" in checks["image_candidates"]["detail"]
    assert "selfiescope login" in checks["image_candidates"]["detail"]


# --- pop-ups judged the way the source closes them ----------------------------------------------
# A dialog that appears after the source's closing pass but before the doctor looks: the page
# adds it the first time anything lists the page's dialogs by query (the doctor's look does).
_APPEARS_WHEN_LOOKED_AT = """<script>
const list = Document.prototype.querySelectorAll;
let shown = false;
Document.prototype.querySelectorAll = function (sel) {
  if (!shown && sel === '[role=dialog]') {
    shown = true;
    document.body.insertAdjacentHTML('beforeend', '<div role="dialog" aria-label="Benachrichtigungen">'
      + '<button onclick="this.parentNode.remove()">Aktivieren</button>'
      + '<button onclick="this.parentNode.remove()">Jetzt nicht</button></div>');
  }
  return list.call(this, sel);
};
</script>"""


async def test_a_popup_that_appears_while_the_doctor_looks_is_closed_not_reported() -> None:
    from selfiescope.core.browser import BrowserPool
    from selfiescope.core.settings import Settings
    from selfiescope.plugins.instagram.doctor import _Doctor, doctor_options

    settings = Settings()
    doc = _Doctor(settings, doctor_options(settings, "http://127.0.0.1:9"), "alpha", None)
    pool = BrowserPool(settings.browser.model_copy(update={"block": []}))
    try:
        async with pool.lease() as lease:
            page = await lease.page()
            await page.set_content(_APPEARS_WHEN_LOOKED_AT)
            await doc._close_popups(page)
            assert doc.unclosable == [] and doc.closed == ["Jetzt nicht"]
            assert await page.get_by_role("dialog").count() == 0
            # a button the source presses that does not close its pop-up is still reported
            await page.set_content('<div role="dialog" aria-label="Stuck"><button>Not now</button></div>')
            await doc._close_popups(page)
            assert doc.unclosable == ["'Stuck' with buttons ['Not now'] stayed open after pressing"]
    finally:
        await pool.close()
    doc.check_popups()
    assert doc.report.checks[-1].status == "fail"
