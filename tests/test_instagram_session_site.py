"""A saved session belongs to the site it was saved for: another site's session is ignored (never
deleted), and the doctor, with the credential variables set, judges logging in with them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from selfiescope.cli import app
from selfiescope.core.session_store import SESSION_ORIGIN_KEY, load_session, save_session, site_origin
from selfiescope.plugins.instagram import PASSWORD_ENV, USERNAME_ENV
from selfiescope.testing.site import MockInstagram, TagSpec

TAGS = {"alpha": TagSpec(6, "selfie", noface=0, small_face=0)}
COOKIE = {"name": "sessionid", "value": "v", "domain": "127.0.0.1", "path": "/", "expires": -1,
          "httpOnly": True, "secure": False, "sameSite": "Lax"}


def _settings(tmp_path: Path, name: str, base_url: str) -> Path:
    settings = tmp_path / f"{name}.toml"
    settings.write_text(f'[storage]\nroot = "{tmp_path / name}"\n[browser]\nsession_file = "{tmp_path / "s.json"}"\n'
                        f'timeout_s = 8\n[plugins.instagram]\nbase_url = "{base_url}"\nstall_s = 30\n')
    return settings


@settings(deadline=None, max_examples=40)  # file writes on a loaded machine: no per-example deadline
@given(st.sampled_from(["http", "https"]), st.sampled_from(["127.0.0.1", "Example.COM", "localhost"]),
       st.one_of(st.none(), st.integers(1, 65535)), st.sampled_from(["", "/", "/explore/tags/x/"]))
def test_a_session_is_returned_for_its_own_site_only(scheme: str, host: str, port: int | None, path: str) -> None:
    import tempfile

    base = f"{scheme}://{host}{f':{port}' if port else ''}"
    other = f"{scheme}://{host}:{(port or 80) % 65535 + 1}"
    with tempfile.TemporaryDirectory() as folder:
        file = Path(folder) / "s.json"
        save_session(file, {"cookies": [COOKIE], "origins": []}, base + path)
        assert load_session(file, base) == {"cookies": [COOKIE], "origins": []}
        assert load_session(file, other) is None
        assert file.is_file() and json.loads(file.read_text())[SESSION_ORIGIN_KEY] == site_origin(base)
        assert SESSION_ORIGIN_KEY not in (load_session(file) or {})  # Playwright never sees the key


def test_a_session_that_names_no_site_is_used_only_where_its_cookies_belong(tmp_path: Path) -> None:
    file = tmp_path / "s.json"
    save_session(file, {"cookies": [{**COOKIE, "domain": ".instagram.com"}], "origins": []})
    assert load_session(file, "https://www.instagram.com") is not None
    assert load_session(file, "http://127.0.0.1:8000") is None and file.is_file()


@pytest.mark.browser
def test_another_sites_session_is_ignored_and_the_doctor_names_the_wrong_password(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(USERNAME_ENV, "demo")
    monkeypatch.setenv(PASSWORD_ENV, "demo")
    runner = CliRunner()
    with MockInstagram(tags=TAGS, page_size=4) as site_a, \
            MockInstagram(tags=TAGS, page_size=4, password="secret") as site_b:
        login = runner.invoke(app, ["login", "-s", str(_settings(tmp_path, "a", site_a.base_url))])
        assert login.exit_code == 0, login.output
        saved = (tmp_path / "s.json").read_text()
        monkeypatch.setenv(PASSWORD_ENV, "wrong")
        settings_b = _settings(tmp_path, "b", site_b.base_url)
        doctor = runner.invoke(app, ["doctor", "--tag", "alpha", "-s", str(settings_b), "--json"])
        scrape = runner.invoke(app, ["scrape", "alpha", "--label", "x", "--chain", "decode,store", "-s",
                                     str(settings_b)])
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert doctor.exit_code == 1
    assert checks["login"]["status"] == "fail" and "rejected" in checks["login"]["detail"]
    assert "set the credential" not in doctor.stdout and f"set {USERNAME_ENV}" not in doctor.stdout
    assert scrape.exit_code == 1 and "rejected" in scrape.output
    assert (tmp_path / "s.json").read_text() == saved  # site A's session is left as it was


@pytest.mark.browser
def test_the_doctor_logs_in_when_its_own_sites_saved_session_has_expired(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(USERNAME_ENV, "demo")
    monkeypatch.setenv(PASSWORD_ENV, "demo")
    with MockInstagram(tags=TAGS, page_size=4) as site:
        save_session(tmp_path / "s.json", {"cookies": [{**COOKIE, "value": "expired"}], "origins": []}, site.base_url)
        doctor = CliRunner().invoke(app, ["doctor", "--tag", "alpha", "--json", "-s",
                                          str(_settings(tmp_path, "a", site.base_url))])
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert checks["login"]["status"] == "pass" and "saved session did not get past" in checks["login"]["detail"]
    assert checks["tag_page"]["status"] == "pass", doctor.stdout


@pytest.mark.browser
def test_the_doctor_never_asks_to_set_credential_variables_that_are_set(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from selfiescope.testing.chaos import Chaos

    monkeypatch.setenv(USERNAME_ENV, "demo")
    monkeypatch.setenv(PASSWORD_ENV, "demo")
    with MockInstagram(tags=TAGS, page_size=4, chaos=Chaos(login_variant="unknown")) as site:
        doctor = CliRunner().invoke(app, ["doctor", "--tag", "alpha", "--json", "-s",
                                          str(_settings(tmp_path, "a", site.base_url))])
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert doctor.exit_code == 1 and checks["login_form"]["status"] == "fail"
    assert checks["tag_page"]["status"] == "fail" and "login" in checks["tag_page"]["detail"]
    assert "set the credential" not in doctor.output and f"set {USERNAME_ENV}" not in doctor.output
