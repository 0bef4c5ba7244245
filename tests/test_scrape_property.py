"""A property over random seeds of mixed misbehaviour of the local site:

the run ends within a bound; every reachable post is stored exactly once or reported
(an error naming its tag); the manifest agrees with the files; the exit code (errors or
none) tells the truth. Few, small examples: each one is a real Chromium run (PROPERTY_EXAMPLES=n for more).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selfiescope.core.manifest import Manifest
from selfiescope.plugins.instagram import PASSWORD_ENV, USERNAME_ENV
from selfiescope.testing.chaos import Chaos
from selfiescope.testing.site import MockInstagram, TagSpec
from test_instagram import scrape, seed_session
from test_instagram_chaos import settings_for


pytestmark = [pytest.mark.browser, pytest.mark.slow]

TAGS = {"north": TagSpec(7, "selfie", noface=1, small_face=1), "south": TagSpec(6, "portrait", noface=1, small_face=1)}
BOUND_S = 150.0


@st.composite
def chaos(draw: Any) -> dict[str, Any]:
    ttl = draw(st.sampled_from([None, 60.0]))
    return {
        "seed": draw(st.integers(0, 2**16)),
        "hung_beacons": draw(st.booleans()),
        "client_feed": draw(st.booleans()),
        "virtual_grid": draw(st.sampled_from([0, 2])),
        "late_dialog_ms": draw(st.sampled_from([0, 600])),
        "late_dialog_language": draw(st.sampled_from(["en", "fr", "de"])),
        "unknown_consent": draw(st.booleans()),
        "js_login": draw(st.booleans()),
        "login_variant": draw(st.sampled_from(["classic", "labels"])),
        "require_api_headers": draw(st.booleans()),
        "hung_feed_every": draw(st.sampled_from([0, 2, 3])),
        "slow_first_byte_ms": draw(st.sampled_from([0, 300])),
        "drop_image_every": draw(st.sampled_from([0, 3, 5])),
        "wrong_type_every": draw(st.sampled_from([0, 4])),
        "url_ttl_s": ttl,
        "stale_url_share": draw(st.sampled_from([0.0, 0.3])) if ttl else 0.0,
        "account_block_after": draw(st.sampled_from([None, 0, 2])),
        "account_block_s": draw(st.sampled_from([1.0, 2.0])),
    }


def stored_rows(root: Path) -> list[Any]:
    m = Manifest.at_root(root)
    try:
        return m.query("SELECT job, post_id, location, content_hash FROM images "
                       "WHERE source='instagram' AND decision='accepted'")
    finally:
        m.close()


def marked_done(root: Path) -> set[str]:
    m = Manifest.at_root(root)
    try:
        return {r["post_id"] for r in m.query("SELECT post_id FROM posts_seen WHERE source='instagram'")}
    finally:
        m.close()


@settings(max_examples=int(os.environ.get("PROPERTY_EXAMPLES", "4")), deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(knobs=chaos(), log_in=st.booleans(), language=st.sampled_from(["en", "fr", "de"]))
def test_every_reachable_post_is_stored_once_or_reported(
    tmp_path_factory: pytest.TempPathFactory, knobs: dict[str, Any], log_in: bool, language: str,
) -> None:
    root = tmp_path_factory.mktemp("prop")
    with MockInstagram(tags=TAGS, page_size=3, consent_language=language, chaos=Chaos(**knobs)) as site:
        if log_in:
            os.environ[USERNAME_ENV], os.environ[PASSWORD_ENV] = site.username, site.password
        else:
            seed_session(site, root)
        try:
            settings_ = settings_for(site, root, timeout_s=4, stall_s=10)
            stats = asyncio.run(asyncio.wait_for(scrape(settings_, list(TAGS)), BOUND_S))  # ends within the bound
        finally:
            os.environ.pop(USERNAME_ENV, None)
            os.environ.pop(PASSWORD_ENV, None)

        rows = stored_rows(root)
        stored = [(r["job"], r["post_id"]) for r in rows]
        reachable = {(t, p.shortcode) for t in TAGS for p in site.posts(t)}
        assert len(stored) == len(set(stored)), "a post stored twice"
        assert set(stored) <= reachable
        missing = reachable - set(stored)
        # exit code tells the truth: errors (exit 1) exactly when something reachable was not stored,
        # and each tag with a missing post is named in an error
        assert bool(stats.errors) == bool(missing), (sorted(missing), stats.errors)
        for tag in {t for t, _ in missing}:
            assert any(f" {tag}:" in e for e in stats.errors), (tag, stats.errors)
        # nothing is marked done that was not stored (a rerun retries it)
        assert marked_done(root) <= {p for _, p in stored}
        # the manifest agrees with the files
        label_dir = root / "x"
        files = {p.relative_to(root).as_posix() for p in label_dir.iterdir()} if label_dir.is_dir() else set()
        assert files == {r["location"] for r in rows}
        for r in rows:
            assert hashlib.sha256((root / r["location"]).read_bytes()).hexdigest() == r["content_hash"]
