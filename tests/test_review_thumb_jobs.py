"""Thumbnails made ahead of the grid: each served page's and the next page's are made in the
background, a request for one being made waits on that job (one decode per image), forget
leaves no thumbnail of a forgotten image behind, bytes that are not the stored ones give none."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from review_helpers import build
from selfiescope.core.app import App
from selfiescope.core.settings import settings_from_dict
from selfiescope.review import data as data_module
from selfiescope.review import thumb_jobs
from selfiescope.review.data import Filters, ReviewData
from selfiescope.review.thumb_jobs import ThumbnailJobs

IDLE_S = 120  # generous: the machine may be loaded


def open_data(root: Path, **options) -> ReviewData:
    return ReviewData(App.create(settings_from_dict({"storage": {"root": str(root)}})), **options)


def kept(root: Path) -> set[str]:
    return {p.stem for p in (root / ".thumbs").rglob("*.jpg")}


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, list[str]]:
    root = tmp_path / "data"
    return root, build(root, 40, seed=7, files=True, rejected_share=0.0)


def counting_decodes(monkeypatch, delay_s: float = 0.0) -> list[str]:
    """Every thumbnail decode, by the image's first bytes (slowed by ``delay_s`` to widen races)."""
    made: list[str] = []
    real = data_module.thumbs.make_thumbnail

    def make(data: bytes, *args, **kwargs) -> bytes:
        made.append(threading.current_thread().name)
        time.sleep(delay_s)
        return real(data, *args, **kwargs)

    monkeypatch.setattr(data_module.thumbs, "make_thumbnail", make)
    return made


def test_a_served_page_and_the_next_get_their_thumbnails_made_in_the_background(dataset, monkeypatch) -> None:
    root, _ = dataset
    with open_data(root, warm_thumbnails=True) as data:
        page = data.page(Filters(), "newest", None, 10)
        following = data.page(Filters(), "newest", page.next_cursor, 10)
        assert data.thumbnail_jobs.idle(IDLE_S)
        shown = {t.id for t in page.tiles} | {t.id for t in following.tiles}
        assert shown <= kept(root)
        assert len(kept(root)) <= 30  # the pages served and the one after the last: not the whole dataset
        monkeypatch.setattr(ReviewData, "image", lambda self, i: pytest.fail("decoded again on request"))
        for tile in page.tiles:
            assert data.thumbnail(tile.id) == (root / ".thumbs" / tile.id[:2] / f"{tile.id}.jpg").read_bytes()


def test_without_warming_nothing_is_made_before_it_is_asked_for(dataset) -> None:
    root, _ = dataset
    with open_data(root) as data:
        data.page(Filters(), "newest", None, 10)
        assert data.thumbnail_jobs.idle(IDLE_S)
        assert not kept(root)


def test_warm_up_makes_the_first_grid_page_before_any_request(dataset) -> None:
    root, _ = dataset
    with open_data(root) as data:
        data.warm_up("newest", 8)
        assert data.thumbnail_jobs.idle(IDLE_S)
        first = data.page(Filters(), "newest", None, 8)
        assert {t.id for t in first.tiles} <= kept(root)


def test_a_request_for_a_thumbnail_being_made_waits_on_it_instead_of_decoding_again(dataset, monkeypatch) -> None:
    root, hashes = dataset
    made = counting_decodes(monkeypatch, delay_s=0.5)
    with open_data(root, warm_thumbnails=True) as data:
        data.thumbnail_jobs.want([hashes[0]])
        deadline = time.monotonic() + IDLE_S
        while not made and time.monotonic() < deadline:  # the background job has begun its decode
            time.sleep(0.01)
        got = data.thumbnail(hashes[0])
        assert got is not None and got == (root / ".thumbs" / hashes[0][:2] / f"{hashes[0]}.jpg").read_bytes()
        assert made == ["review-thumbnails"]


@hsettings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.integers(0, 11), min_size=1, max_size=24), st.integers(1, 3))
def test_each_image_is_decoded_at_most_once_whoever_asks(tmp_path_factory, wanted, askers) -> None:
    """However requests and background jobs interleave, each image is decoded once and every
    asker gets the same bytes, the ones kept."""
    root = tmp_path_factory.mktemp("jobs") / "data"
    hashes = build(root, 12, seed=11, files=True, rejected_share=0.0)
    made: list[str] = []
    lock = threading.Lock()
    with open_data(root, warm_thumbnails=True) as data:
        real = data._made_thumbnail

        def make(image_id: str) -> bytes | None:
            with lock:
                made.append(image_id)
            time.sleep(0.01)
            return real(image_id)

        data.thumbnail_jobs._make = make
        data.thumbnail_jobs.want([hashes[i] for i in wanted])
        answers: dict[str, set[bytes]] = {}

        def ask() -> None:
            for i in wanted:
                got = data.thumbnail(hashes[i])
                with lock:
                    answers.setdefault(hashes[i], set()).add(got)

        threads = [threading.Thread(target=ask) for _ in range(askers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(IDLE_S)
        assert data.thumbnail_jobs.idle(IDLE_S)
    assert sorted(made) == sorted(set(made)) and set(made) <= {hashes[i] for i in wanted}
    for image, got in answers.items():
        assert got == {(root / ".thumbs" / image[:2] / f"{image}.jpg").read_bytes()}


def test_forget_leaves_no_thumbnail_of_a_forgotten_image_made_ahead(tmp_path: Path, monkeypatch) -> None:
    from privacy_helpers import FakePost, collect_posts, jpeg, settings_for

    root = tmp_path / "data"
    settings = settings_for(root)
    assert collect_posts(settings, "tagA", "selfie", [FakePost(f"C{i}", f"user_{i}", "x", jpeg(i)) for i in range(4)]).accepted == 4
    made = counting_decodes(monkeypatch, delay_s=0.5)
    with ReviewData(App.create(settings), warm_thumbnails=True) as data:
        ids = [t.id for t in data.page(Filters(), "newest", None, 10).tiles]  # the background begins on them
        deadline = time.monotonic() + IDLE_S
        while not made and time.monotonic() < deadline:
            time.sleep(0.01)
        assert data.forget(ids).changed == 4  # while a decode is under way
        assert data.thumbnail_jobs.idle(IDLE_S)
        time.sleep(0.6)  # longer than a slowed decode: one begun before forget has ended
        assert not kept(root)
        assert data.page(Filters(), "newest", None, 10).total == 0


def test_no_thumbnail_is_made_ahead_from_bytes_that_are_not_the_stored_ones(dataset) -> None:
    root, hashes = dataset
    location = sqlite3.connect(root / "manifest.sqlite").execute(
        "SELECT location FROM images WHERE content_hash=?", (hashes[0],)).fetchone()[0]
    (root / location).write_bytes((root / location).read_bytes() + b"\0")  # not the bytes recorded
    with open_data(root, warm_thumbnails=True) as data:
        data.thumbnail_jobs.want(hashes[:5])
        assert data.thumbnail_jobs.idle(IDLE_S)
    assert hashes[0] not in kept(root) and set(hashes[1:5]) <= kept(root)


def test_the_queue_is_bounded_and_newest_wishes_come_first(monkeypatch) -> None:
    monkeypatch.setattr(thumb_jobs, "MAX_QUEUED", 5)
    started = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def make(image_id: str) -> bytes:
        order.append(image_id)
        started.set()
        release.wait(IDLE_S)
        return b"x"

    jobs = ThumbnailJobs(make, lambda h, d: True, lambda h: None)
    jobs.want(["a" * 16])
    assert started.wait(IDLE_S)  # the worker is busy with the first one
    jobs.want([f"{i:016x}" for i in range(10)])
    jobs.want(["b" * 16, "c" * 16])
    release.set()
    assert jobs.idle(IDLE_S)
    jobs.close()
    assert order == ["a" * 16, "b" * 16, "c" * 16, *(f"{i:016x}" for i in range(3))]


def test_a_root_where_thumbnails_cannot_be_kept_makes_none_ahead(dataset, monkeypatch) -> None:
    """Read-only or full: a thumbnail made ahead would be thrown away and made again on request."""
    root, hashes = dataset
    made = counting_decodes(monkeypatch)
    monkeypatch.setattr(data_module.thumbs, "keep", lambda *a: False)
    with open_data(root, warm_thumbnails=True) as data:
        assert data.thumbnail(hashes[0]) is not None  # a request still gets its thumbnail
        data.page(Filters(), "newest", None, 10)
        assert data.thumbnail_jobs.idle(IDLE_S)
    assert made == [threading.current_thread().name]


def test_after_close_a_request_still_gets_and_keeps_its_thumbnail(dataset) -> None:
    """The data layer opens again what it needs after close(): so do thumbnails, on request."""
    root, hashes = dataset
    data = open_data(root, warm_thumbnails=True)
    data.page(Filters(), "newest", None, 3)
    data.close()
    try:
        assert data.thumbnail(hashes[-1]) is not None
        assert hashes[-1] in kept(root)
    finally:
        data.close()
