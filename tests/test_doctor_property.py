"""One truth for the doctor and the source: over the local site's chaos knobs, the doctor
passes exactly when a scrape of the same site works, and when it fails it names the broken
check and what it found."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from selfiescope.core.settings import settings_from_dict
from selfiescope.plugins.instagram import PASSWORD_ENV, USERNAME_ENV
from selfiescope.plugins.instagram.doctor import run_doctor
from selfiescope.testing.chaos import Chaos
from selfiescope.testing.site import MockInstagram, TagSpec
from test_instagram import scrape


pytestmark = [pytest.mark.browser, pytest.mark.slow]

USERNAME, PASSWORD = "prop_user", "pw-Heron-3391"
TAGS = {"alpha": TagSpec(9, "selfie", noface=0, small_face=0)}

knobs = st.fixed_dictionaries({
    "seed": st.integers(0, 1000),
    "login_variant": st.sampled_from(["classic", "labels", "unknown"]),  # unknown: a form neither can read
    "js_login": st.booleans(),
    "client_feed": st.booleans(),
    "web_info": st.booleans(),
    "hung_beacons": st.booleans(),
    "unknown_consent": st.booleans(),
    "late_dialog_ms": st.sampled_from([0, 300]),
    "virtual_grid": st.sampled_from([0, 1]),
    "require_api_headers": st.booleans(),
    "slow_first_byte_ms": st.sampled_from([0, 300]),
    "hung_feed_tags": st.sampled_from([(), ("alpha",)]),  # a feed that never answers: both must fail
    "account_block_after": st.sampled_from([None, 0]),  # a short 429 block: both must wait it out
    "tag_page_429_s": st.sampled_from([0, 0, 86400]),  # a tag page rate-limited for a day: both must fail
})
languages = st.sampled_from(["en", "fr", "de", "es"])


def settings_for(root: Path, base_url: str) -> Any:
    return settings_from_dict({
        "storage": {"root": str(root / "data")},
        "browser": {"session_file": str(root / "session.json"), "timeout_s": 10},
        "engine": {"workers": 2},
        "plugins": {"instagram": {"base_url": base_url, "scroll_pause_s": 0.6, "max_idle_scrolls": 2,
                                  "requests_per_minute": 6000, "jitter_s": 0, "backoff_s": 0.05, "stall_s": 10}},
    })


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(knobs=knobs, language=languages)
def test_the_doctor_passes_exactly_when_a_scrape_works(knobs: dict[str, Any], language: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(USERNAME_ENV, USERNAME)
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    with tempfile.TemporaryDirectory() as tmp, MockInstagram(
        tags=TAGS, page_size=4, username=USERNAME, password=PASSWORD, consent_language=language,
        chaos=Chaos(account_block_s=2, **knobs),
    ) as site:
        root = Path(tmp)
        config = settings_for(root, site.base_url)
        report = asyncio.run(asyncio.wait_for(run_doctor(config, site.base_url, "alpha"), 600))
        stats = asyncio.run(asyncio.wait_for(scrape(config, ["alpha"]), 600))
    scraped = stats.status == "finished"
    summary = f"knobs {knobs} ({language}); scrape {stats.status} {stats.errors}; doctor {report.as_dict()}"
    assert report.ok == scraped, summary
    for check in report.checks:
        if check.status == "fail":  # names what broke and what it found instead
            assert check.name and check.detail and check.found, summary
