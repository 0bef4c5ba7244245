"""A server whose every answer is a 302 back to itself: scrape and doctor name the redirect loop, and
the doctor judges nothing that needs a loaded page."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from selfiescope.cli import app

pytestmark = pytest.mark.browser


class _Loop(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(302)
        self.send_header("Location", "/explore/tags/selfie/?x=1")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_GET  # noqa: N815

    def log_message(self, *_: object) -> None:
        return


@pytest.fixture
def loop_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Loop)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _settings(tmp_path: Path, base_url: str, timeout_s: int = 8, stall_s: int = 20) -> Path:
    settings = tmp_path / "settings.toml"
    settings.write_text(f'[storage]\nroot = "{tmp_path / "data"}"\n[browser]\nsession_file = "{tmp_path / "s.json"}"\n'
                        f'timeout_s = {timeout_s}\n[plugins.instagram]\nbase_url = "{base_url}"\nstall_s = {stall_s}\n')
    return settings


def test_the_doctor_names_a_redirect_loop_and_skips_the_pop_up_check(tmp_path: Path, loop_url: str) -> None:
    result = CliRunner().invoke(app, ["doctor", "--settings", str(_settings(tmp_path, loop_url)), "--json"])
    report = json.loads(result.stdout)
    status = {c["name"]: c for c in report["checks"]}
    assert result.exit_code == 1
    assert "redirect" in status["login_form"]["detail"] and "unexpected" not in result.stdout
    assert status["popups"]["status"] == "skip"


def test_a_scrape_names_a_redirect_loop(tmp_path: Path, loop_url: str) -> None:
    result = CliRunner().invoke(app, ["scrape", "selfie", "--label", "x", "--chain", "decode,store",
                                      "-s", str(_settings(tmp_path, loop_url))])
    assert result.exit_code == 1, result.output
    assert "redirect loop" in result.output and "unexpected" not in result.output
    assert "Traceback" not in result.output and "net::" not in result.output


def test_a_site_that_never_answers_fails_the_job_naming_the_real_stall_time(tmp_path: Path, silent_site: str) -> None:
    """Takes connections, never answers: the job ends after the stall and one reload, and says stall_s."""
    result = CliRunner().invoke(app, ["scrape", "selfie", "--label", "x", "--chain", "decode,store",
                                      "-s", str(_settings(tmp_path, silent_site, timeout_s=30, stall_s=6))])
    assert result.exit_code == 1, result.output
    assert "no new post for 6 s" in result.output and "also after reloading the tag page" in result.output
