"""What a run reports is true and safe to keep: a job's final line counts every image it kept
(in-flight ones included), and no credential in a URL reaches the manifest, the stats or a log."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl, urlsplit

from hypothesis import given, settings
from hypothesis import strategies as st

from selfiescope.core.app import App
from selfiescope import hookimpl
from selfiescope.core.components import Job, Options, Source, Step
from selfiescope.core.events import ImageEvent, Origin
from selfiescope.core.manifest import Manifest
from selfiescope.core.settings import ScrapePipeline, settings_from_dict
from selfiescope.core.text import REDACTED, RedactingFilter, is_secret_param, redact_text, redact_url
from selfiescope.pipelines.collecting.collect import collect

SECRET = "s3cr3tTOKENvalue"


class BurstOptions(Options):
    count: int = 40
    base_url: str = "http://127.0.0.1:9/"
    fail_job: bool = False


class Burst(Source):
    """Yields every event at once (the queue and workers hold many when it ends)."""

    name = "burst"
    Options = BurstOptions

    async def events(self, job: Job) -> AsyncIterator[ImageEvent]:
        for i in range(self.options.count):
            yield ImageEvent(origin=Origin(source=self.name, job=job.target, post_id=f"{job.target}-{i}",
                                           post_url=f"{self.options.base_url}p/{i}/"),
                             label=job.label, data=f"{job.target}-{i}".encode())
        if self.options.fail_job:
            raise RuntimeError(f"cannot open {self.options.base_url}explore/tags/{job.target}/")


class Settle(Step):
    """Slow enough that images are still in the chain when the source ends."""

    name = "settle"

    def process(self, event: ImageEvent) -> None:
        time.sleep(0.02)


class Download(Step):
    """Fails every 4th image with the image URL in its reason, as a download error would."""

    name = "download"

    def process(self, event: ImageEvent) -> None:
        n = int(event.origin.post_id.rsplit("-", 1)[1])
        if n % 4 == 0:
            raise OSError(f"HTTP 403 for {event.origin.post_url}")


class Plugin:
    @hookimpl
    def selfiescope_sources(self):
        return [Burst]

    @hookimpl
    def selfiescope_steps(self):
        return [Settle, Download]


class States:
    """Records each job state with the job's kept count at that moment, as the progress line does."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, int]] = []

    @hookimpl
    def selfiescope_run_started(self, run):
        run.stats.state_listeners.append(
            lambda job, state: self.seen.append((job, state, run.stats.per_job.get(job, {}).get("accepted", 0))))


def _run(tmp_path, chain, options, targets=("a", "b")):
    settings = settings_from_dict({"storage": {"root": str(tmp_path / "data")}, "engine": {"workers": 4, "queue_size": 16}})
    pipeline = ScrapePipeline(kind="scrape", source="burst", urls=list(targets), label="selfie", chain=chain,
                              options={"burst": options})
    pipeline._report_only = True  # test steps that store nothing
    states = States()
    stats = asyncio.run(collect(App.create(settings, plugins=[Plugin(), states]), "t", pipeline=pipeline))
    return stats, states, tmp_path / "data"


def test_a_jobs_done_line_counts_every_image_it_kept(tmp_path):
    stats, states, _ = _run(tmp_path, ["settle"], {"count": 40})
    final = {job: state_kept for job, state, state_kept in states.seen if state == "done"}
    assert set(final) == {"a", "b"}
    assert final == {job: counts["accepted"] for job, counts in stats.per_job.items()} == {"a": 40, "b": 40}


def test_no_credential_in_a_url_reaches_the_manifest_or_the_stats(tmp_path):
    base = f"http://127.0.0.1:9/?access_token={SECRET}&lang=en&sig={SECRET}x"
    stats, _, root = _run(tmp_path, ["download"], {"count": 8, "base_url": base, "fail_job": True})
    assert stats.failed == 4 and stats.errors  # the failures and the job's error both name the URL
    manifest = Manifest.at_root(root)
    try:
        dumped = json.dumps([[list(r) for r in manifest.query(f"SELECT * FROM {table}")]
                             for table in ("runs", "images", "failures")])
    finally:
        manifest.close()
    assert SECRET not in dumped
    assert "lang=en" in dumped and f"access_token={REDACTED}" in dumped  # the URL stays useful
    assert SECRET not in json.dumps(stats.as_dict())


def test_log_lines_are_redacted_by_the_handler_filter():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("selfiescope.test_redact")
    logger.addHandler(handler)
    try:
        logger.warning("fetch failed for %s", f"https://cdn.example/x.jpg?oe=1&signature={SECRET}")
    finally:
        logger.removeHandler(handler)
    assert SECRET not in stream.getvalue() and "oe=1" in stream.getvalue()


_names = st.sampled_from(["token", "access_token", "Access_Token", "sig", "signature", "key", "password",
                          "session", "api_key", "X-Amz-Signature", "client_secret", "refresh_token"])
_plain = st.sampled_from(["lang", "page", "max_id", "oe", "oh", "q", "tag"])
_value = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_.~", min_size=6, max_size=30)


@settings(max_examples=200, deadline=None)
@given(scheme=st.sampled_from(["http", "https", "s3", "gs"]), host=st.sampled_from(["127.0.0.1:8000", "example.com"]),
       params=st.lists(st.tuples(st.one_of(_names, _plain), _value), min_size=1, max_size=6),
       in_text=st.booleans())
def test_secret_query_values_never_survive_and_the_rest_is_kept(scheme, host, params, in_text):
    query = "&".join(f"{k}={v}" for k, v in params)
    url = f"{scheme}://{host}/explore/tags/x/?{query}"
    out = redact_text(f"error: cannot open {url} (timeout)") if in_text else redact_url(url)
    assert out is not None
    secrets = {v for k, v in params if is_secret_param(k)}
    kept = {v for k, v in params if not is_secret_param(k)}
    for value in secrets - kept:
        assert value not in out
    if not in_text:
        got = parse_qsl(urlsplit(out).query, keep_blank_values=True)
        assert [(k, v if not is_secret_param(k) else REDACTED) for k, v in params] == got


def test_the_card_shows_no_credential_from_a_job_or_an_option(tmp_path):
    from selfiescope.pipelines.dataset_care.card import build_card

    base = f"http://127.0.0.1:9/?access_token={SECRET}"
    target = f"http://127.0.0.1:9/gallery?session={SECRET}"
    _, _, root = _run(tmp_path, ["settle"], {"count": 2, "base_url": base}, targets=(target,))
    settings = settings_from_dict({"storage": {"root": str(root)},
                                   "plugins": {"instagram": {"base_url": base}}})
    manifest = Manifest.at_root(root)
    try:
        card = json.dumps(build_card(App.create(settings), manifest))
    finally:
        manifest.close()
    assert SECRET not in card and "session=REDACTED" in card
