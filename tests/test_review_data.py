"""The data layer of `selfiescope review`: facets, pages, detail, thumbnails, actions, the lock."""

from __future__ import annotations

import io
import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from PIL import Image

from conftest import fill_up
from review_helpers import build
from selfiescope.core.manifest import Manifest
from selfiescope.core.app import App
from selfiescope.core.settings import settings_from_dict
from selfiescope.pipelines.model.dataset import load_rows
from selfiescope.review.data import Filters, ReviewBusy, ReviewData, ReviewError
from selfiescope.review.snapshot import AREA_EDGES
from selfiescope.testing.review_manifest import write_model

REPO = Path(__file__).resolve().parents[1]
N = 240


def open_data(root: Path, plugins: list | None = None) -> ReviewData:
    settings = settings_from_dict({"storage": {"root": str(root)}})
    return ReviewData(App.create(settings, plugins=plugins))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> tuple[Path, list[str]]:
    """A read-only use: 240 images with files, a model's probabilities for the first 120."""
    root = tmp_path_factory.mktemp("review") / "data"
    hashes = build(root, N, seed=3, files=True)
    labels = dict(sqlite3.connect(root / "manifest.sqlite").execute("SELECT content_hash, label FROM images"))
    write_model(root.parent / "model", root, {h: (labels[h], (i % 10) / 10) for i, h in enumerate(hashes[:120])})
    return root, hashes


@pytest.fixture
def fresh(tmp_path: Path) -> tuple[Path, list[str]]:
    root = tmp_path / "data"
    return root, build(root, 60, seed=5, files=True)


def rows_of(root: Path) -> list[dict]:
    db = sqlite3.connect(root / "manifest.sqlite")
    db.row_factory = sqlite3.Row
    images = [dict(r) for r in db.execute("SELECT * FROM images")]
    reasons: dict[str, set[str]] = {}
    for h, step, code in db.execute("SELECT content_hash, rejected_by, reject_code FROM rejections"):
        reasons.setdefault(h, set()).add(f"{step}:{code}")
    for r in images:
        r["reasons"] = reasons.get(r["content_hash"], set()) if r["decision"] == "rejected" else set()
        r["effective"] = r["review_label"] or r["label"]
    return images


def matches(r: dict, f: Filters, skip: str = "") -> bool:
    """The meaning of a filter, written out plainly over one manifest row."""
    checks = {
        "label": not f.label or r["effective"] in f.label,
        "job": not f.job or r["job"] in f.job,
        "decision": not f.decision or r["decision"] in f.decision,
        "reason": not f.reason or bool(r["reasons"] & set(f.reason)),
        "detector": not f.detector or r["face_detector"] in f.detector,
        "face_area": (f.area_min is None and f.area_max is None) or (
            r["face_area"] is not None and (f.area_min is None or r["face_area"] >= f.area_min)
            and (f.area_max is None or r["face_area"] <= f.area_max)),
        "reviewed": f.reviewed is None or (r["reviewed"] is not None) == f.reviewed,
        "excluded": f.excluded is None or bool(r["excluded"]) == f.excluded,
    }
    return all(ok for name, ok in checks.items() if name != skip)


filters_strategy = st.builds(
    Filters,
    label=st.lists(st.sampled_from(["selfie", "portrait", "nothing"]), max_size=2).map(tuple),
    job=st.lists(st.sampled_from(["selfie", "portrait", "mirrorselfie", "headshot"]), max_size=2).map(tuple),
    decision=st.lists(st.sampled_from(["accepted", "rejected"]), max_size=1).map(tuple),
    reason=st.lists(st.sampled_from(["dedup:near_duplicate", "blurcheck:blurry", "face_area:no_face"]), max_size=2).map(tuple),
    detector=st.lists(st.sampled_from(["haar", "dnn"]), max_size=1).map(tuple),
    area_min=st.one_of(st.none(), st.sampled_from(AREA_EDGES[:-1])),
    area_max=st.one_of(st.none(), st.sampled_from(AREA_EDGES[1:])),
    reviewed=st.sampled_from([None, True, False]),
    excluded=st.sampled_from([None, False]),
).filter(lambda f: f.area_min is None or f.area_max is None or f.area_min <= f.area_max)


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(f=filters_strategy)
def test_facet_counts_are_taken_under_the_other_facets_filters(synthetic, f: Filters) -> None:
    root, _ = synthetic
    rows = rows_of(root)
    with open_data(root) as data:
        facets = {facet.name: facet for facet in data.facets(f)}
        page = data.page(f, "newest", None, 10)
    assert page.total == sum(matches(r, f) for r in rows)
    for name, column in (("label", "effective"), ("job", "job"), ("decision", "decision"), ("detector", "face_detector")):
        for value in facets[name].values:
            assert value.count == sum(matches(r, f, skip=name) and r[column] == value.value for r in rows), (name, value)
    for value in facets["reason"].values:
        assert value.count == sum(matches(r, f, skip="reason") and value.value in r["reasons"] for r in rows)
    for value in facets["face_area"].values:
        low, high = map(float, value.value.split(":"))
        inside = [r for r in rows if matches(r, f, skip="face_area") and r["face_area"] is not None]
        assert value.count == sum(low <= r["face_area"] < high or (high == 1.0 and r["face_area"] == 1.0) for r in inside)


@hsettings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(f=filters_strategy, sort=st.sampled_from(["mislabeled", "face_area", "newest"]), limit=st.integers(1, 70))
def test_paging_by_cursor_visits_each_match_once_in_sort_order(synthetic, f: Filters, sort: str, limit: int) -> None:
    root, _ = synthetic
    seen, keys, cursor = [], [], None
    with open_data(root) as data:
        snap = data.snapshot()
        key = snap.sort_key(sort)
        while True:
            page = data.page(f, sort, cursor, limit)
            seen += [t.id for t in page.tiles]
            keys += [(key[snap.index[t.id]], t.id) for t in page.tiles]
            if page.next_cursor is None:
                break
            assert len(page.tiles) == limit
            cursor = page.next_cursor
    assert len(seen) == len(set(seen)) == page.total
    assert keys == sorted(keys)


def test_mislabeled_sort_puts_the_model_s_strongest_contradictions_first(synthetic) -> None:
    root, hashes = synthetic
    with open_data(root) as data:
        tiles = data.page(Filters(), "mislabeled", None, 30).tiles
        assert data.model_note() is None
        disagree = data.page(Filters(disagrees=True), "newest", None, 500)
    scores = [abs((t.label == "selfie") - t.probability) for t in tiles]
    assert scores == sorted(scores, reverse=True) and scores[0] >= 0.9
    assert all(abs((t.label == "selfie") - t.probability) > 0.5 for t in disagree.tiles) and disagree.total > 0


def test_without_a_model_the_page_says_how_to_get_one(fresh) -> None:
    root, _ = fresh
    with open_data(root) as data:
        assert "selfiescope train" in (data.model_note() or "")
        assert all(t.probability is None for t in data.page(Filters(), "mislabeled", None, 60).tiles)


@pytest.mark.parametrize("query, message", [
    ({"reviewed": ["maybe"]}, "reviewed"), ({"area_min": ["2"]}, "area_min"), ({"face_area": ["0.1"]}, "face_area"),
    ({"colour": ["red"]}, "colour"), ({"area_min": ["0.5"], "area_max": ["0.1"]}, "above"),
])
def test_bad_queries_say_which_key(query, message) -> None:
    with pytest.raises(ValueError, match=message):
        Filters.from_query(query)


@given(f=filters_strategy)
def test_filters_survive_the_url(f: Filters) -> None:
    from urllib.parse import parse_qs, urlencode

    back = Filters.from_query(parse_qs(urlencode(f.to_query())))
    assert back == Filters(**{**f.__dict__, "label": tuple(dict.fromkeys(f.label)), "job": tuple(dict.fromkeys(f.job)),
                              "reason": tuple(dict.fromkeys(f.reason))})


def test_a_cursor_this_app_did_not_make_is_refused(synthetic) -> None:
    with open_data(synthetic[0]) as data, pytest.raises(ValueError, match="cursor"):
        data.page(Filters(), "newest", "not-a-cursor!", 10)


def test_thumbnail_is_made_once_reduced_and_kept_under_the_root(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "data"
    hashes = build(root, 3, files=True, rejected_share=0.0)
    big = io.BytesIO()
    Image.new("RGB", (4000, 3000), (200, 120, 40)).save(big, "JPEG", quality=90)
    row = sqlite3.connect(root / "manifest.sqlite").execute("SELECT location FROM images WHERE content_hash=?",
                                                            (hashes[0],)).fetchone()
    (root / row[0]).write_bytes(big.getvalue())  # the stored file, as the backend reads it
    import hashlib

    with sqlite3.connect(root / "manifest.sqlite") as db:  # its digest, as the store step notes a stripped copy's
        db.execute("UPDATE images SET notes=? WHERE content_hash=?",
                   (json.dumps({"stored_sha256": hashlib.sha256(big.getvalue()).hexdigest()}), hashes[0]))
    with open_data(root) as data:
        thumb = data.thumbnail(hashes[0])
        assert thumb is not None and max(Image.open(io.BytesIO(thumb)).size) <= 320
        assert (root / ".thumbs" / hashes[0][:2] / f"{hashes[0]}.jpg").read_bytes() == thumb
        assert data.thumbnail("../../etc/passwd") is None and data.image("../manifest.sqlite") is None
        monkeypatch.setattr(ReviewData, "image", lambda self, i: pytest.fail("read the image again"))
        assert data.thumbnail(hashes[0]) == thumb


def test_reduced_decode_is_used_for_jpeg(monkeypatch) -> None:
    from selfiescope.review import thumbs

    big = io.BytesIO()
    Image.new("RGB", (4000, 3000)).save(big, "JPEG")
    decoded = []
    real = Image.Image.thumbnail
    monkeypatch.setattr(Image.Image, "thumbnail", lambda self, *a, **k: (decoded.append(self.size), real(self, *a, **k))[1])
    thumbs.make_thumbnail(big.getvalue())
    assert decoded and max(decoded[0]) <= 1000  # decoded at 1/4 scale or less, never 4000 px


def test_relabel_exclude_and_undo_reach_training_and_dedup(fresh) -> None:
    root, _ = fresh
    with open_data(root) as data:
        selfies = [t.id for t in data.page(Filters(label=("selfie",), decision=("accepted",)), "newest", None, 500).tiles]
        result = data.apply("relabel", selfies[:3], "portrait")
        assert result.changed == 3 and result.batch > 0
        data.apply("exclude", selfies[3:5], note="a meme, not a photo")
        tiles = {t.id: t for t in data.page(Filters(), "newest", None, 500).tiles}
        assert [tiles[i].label for i in selfies[:3]] == ["portrait"] * 3 and tiles[selfies[0]].original_label == "selfie"
        assert tiles[selfies[0]].reviewed and tiles[selfies[3]].excluded
    manifest = Manifest.at_root(root)
    try:
        trained = {r.content_hash: r for r in load_rows(manifest, ["selfie", "portrait"])}
        assert {trained[i].label for i in selfies[:3]} == {"portrait"}
        assert trained[selfies[0]].stored.label == "selfie"  # the file stays where it was stored
        assert not set(selfies[3:5]) & set(trained)
        labels = dict(manifest.query("SELECT content_hash, label FROM dedup__phashes"))
        assert {labels[i] for i in selfies[:3]} == {"portrait"}
        notes = manifest.query("SELECT note FROM reviews WHERE action='exclude'")
        assert [r[0] for r in notes] == ["a meme, not a photo"] * 2
    finally:
        manifest.close()
    with open_data(root) as data:
        assert "2 images" in data.undo().message  # the exclusion
        assert "3 images" in data.undo().message  # the relabel
        assert data.undo().message == "nothing to undo"
    manifest = Manifest.at_root(root)
    try:
        trained = {r.content_hash: r for r in load_rows(manifest, ["selfie", "portrait"])}
        assert {trained[i].label for i in selfies[:5]} == {"selfie"}
        assert manifest.query("SELECT COUNT(*) FROM images WHERE review_label IS NOT NULL OR reviewed IS NOT NULL"
                              " OR excluded=1")[0][0] == 0
    finally:
        manifest.close()


@pytest.mark.parametrize("action, value, message", [
    ("relabel", "cat", "not a label"), ("delete", None, "not one of"), ("exclude", "x", "takes no value"),
])
def test_bad_actions_are_refused_and_change_nothing(fresh, action, value, message) -> None:
    root, hashes = fresh
    with open_data(root) as data:
        with pytest.raises(ValueError, match=message):
            data.apply(action, hashes[:2], value)
        with pytest.raises(ValueError, match="not an image id"):
            data.apply("reviewed", ["../../x"])
    assert sqlite3.connect(root / "manifest.sqlite").execute("SELECT COUNT(*) FROM reviews").fetchone()[0] == 0


def test_an_edit_while_another_run_holds_the_lock_is_refused_saying_which(fresh) -> None:
    root, hashes = fresh
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from selfiescope.core.lock import RootLock
        with RootLock({str(root)!r}):
            print("held", flush=True)
            time.sleep(120)
    """)], stdout=subprocess.PIPE, text=True, cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    try:
        assert holder.stdout.readline().strip() == "held"
        with open_data(root) as data:
            assert data.busy() == f"{root}/ is in use by pid {holder.pid}"
            with pytest.raises(ReviewBusy) as info:
                data.apply("reviewed", hashes[:3])
            assert str(info.value) == f"{root}/ is in use by pid {holder.pid}"
            with pytest.raises(ReviewBusy):
                data.forget(hashes[:1])
            with pytest.raises(ReviewBusy):
                data.apply("reviewed", hashes[:3], wait_s=0.5)  # waited, then refused
            assert data.page(Filters(reviewed=True), "newest", None, 10).total == 0
        import threading

        threading.Timer(1.0, holder.kill).start()  # the other run ends while the edit waits
        with open_data(root) as data:
            assert data.apply("reviewed", hashes[:3], wait_s=60).changed == 3
    finally:
        holder.kill()
        holder.wait(30)
    with open_data(root) as data:
        assert data.busy() is None
        assert data.page(Filters(reviewed=True), "newest", None, 10).total == 3


def test_a_read_only_root_is_browsable_and_an_edit_says_why_not(small_disk) -> None:
    mount = small_disk("16M", "ro")
    root = mount / "data"
    hashes = build(root, 30, files=True, rejected_share=0.0)
    Manifest.at_root(root).close()  # a clean close: no -wal file is left
    assert subprocess.run(["mount", "-o", "remount,ro", str(mount)], capture_output=True).returncode == 0
    with open_data(root) as data:
        assert data.page(Filters(), "newest", None, 5).total == 30
        assert data.thumbnail(hashes[0]) is not None  # made, not cached
        assert not (root / ".thumbs").exists()
        with pytest.raises(ReviewError, match="cannot be written"):
            data.apply("reviewed", hashes[:1])


def test_a_new_image_from_a_concurrent_run_shows_up_when_the_manifest_is_next_read(fresh) -> None:
    root, _ = fresh
    with open_data(root) as data:
        data.reload_every_s = 3600
        before, version = data.page(Filters(), "newest", None, 5).total, data.version()
        build(root, 5, seed=99, files=True)  # 5 more, written by another connection
        assert data.version() == version  # read too recently: the page keeps what it has
        assert data.page(Filters(), "newest", None, 5).total == before
        data._next_load = 0.0  # time has passed
        assert data.version() > version
        assert data.page(Filters(), "newest", None, 5).total == before + 5
        assert data.version() == data.version()  # nothing new: no further read


def test_detail_shows_the_group_and_the_copy_dedup_kept(synthetic) -> None:
    root, _ = synthetic
    with open_data(root) as data:
        copies = data.page(Filters(reason=("dedup:near_duplicate",)), "newest", None, 500).tiles
        assert copies and all(t.decision == "rejected" for t in copies)
        assert data.page(Filters(reason=("dedup:near_duplicate",), in_group=True), "newest", None, 500).total == len(copies)
        for copy in copies:
            detail = data.detail(copy.id)
            assert detail is not None and detail.kept_id is not None
            assert detail.kept_id[:16] in (copy.reason or "")  # the image dedup named is the one kept
            assert detail.kept_id in {t.id for t in detail.group}
            assert ("dedup", "near_duplicate", copy.reason) in detail.decisions
        kept = data.detail(detail.kept_id)
        assert kept is not None and kept.kept_id == detail.kept_id and copy.id in {t.id for t in kept.group}
        assert kept.faces == [(2, 2, 10, 10)] and kept.largest == 0
        assert data.detail("0" * 64) is None


def test_a_plugin_facet_counts_and_filters(fresh) -> None:
    sys.path.insert(0, str(REPO / "tests" / "example_plugin"))
    try:
        import selfiescope_sizegate
    finally:
        sys.path.pop(0)
    root, _ = fresh
    with open_data(root, [selfiescope_sizegate]) as data:
        facet = next(f for f in data.facets(Filters()) if f.name == "x.file_size")
        assert facet.title == "File size" and sum(v.count for v in facet.values) == 60
        small = next(v for v in facet.values if v.value == "under 10 kB")
        f = Filters.from_query({"x.file_size": ["under 10 kB"]})
        assert data.page(f, "newest", None, 500).total == small.count
        with pytest.raises(ValueError, match="x.nothing"):
            data.page(Filters.from_query({"x.nothing": ["a"]}), "newest", None, 5)


def test_an_old_manifest_gains_the_review_columns_and_reads_as_unreviewed(tmp_path: Path) -> None:
    root = tmp_path / "data"
    hashes = build(root, 10, files=True, rejected_share=0.0)
    db = sqlite3.connect(root / "manifest.sqlite")
    db.execute("DROP TABLE reviews")
    for column in ("review_label", "reviewed", "excluded"):
        db.execute(f"ALTER TABLE images DROP COLUMN {column}")
    db.commit()
    db.close()
    manifest = Manifest(root / "manifest.sqlite", readonly=True)
    try:
        assert len(load_rows(manifest, ["selfie", "portrait"])) == 10  # not migrated: read as "nothing reviewed"
    finally:
        manifest.close()
    with open_data(root) as data:
        assert data.apply("reviewed", hashes[:2]).changed == 2


def test_metrics_card_and_export_carry_the_review(fresh, tmp_path) -> None:
    import asyncio

    from selfiescope.pipelines.dataset_care.card import build_card, render_markdown
    from selfiescope.pipelines.dataset_care.export import export

    root, _ = fresh
    with open_data(root) as data:
        selfies = [t.id for t in data.page(Filters(label=("selfie",), decision=("accepted",)), "newest", None, 500).tiles]
        data.apply("relabel", selfies[:2], "portrait")
        data.apply("exclude", selfies[2:3])
    settings = settings_from_dict({"storage": {"root": str(root)}})
    manifest = Manifest.at_root(root)
    try:
        card = build_card(App.create(settings), manifest)
    finally:
        manifest.close()
    assert card["review"]["reviewed"] == 2 and card["review"]["relabeled"] == 2 and card["review"]["excluded"] == 1
    assert "2 of " in render_markdown(card) and "## Review" in render_markdown(card)
    asyncio.run(export(App.create(settings), tmp_path / "out", "csv"))
    import csv

    rows = {r["content_hash"]: r for r in csv.DictReader((tmp_path / "out" / "images.csv").open())}
    assert rows[selfies[0]]["label"] == "portrait" and rows[selfies[0]]["collected_label"] == "selfie"
    assert rows[selfies[0]]["reviewed"] == "True" and rows[selfies[2]]["excluded"] == "True"
    assert rows[selfies[3]]["reviewed"] == "False"
    json.dumps(card)


def test_forget_from_the_review_removes_the_file_rows_reviews_and_thumbnail_and_keeps_a_tombstone(tmp_path) -> None:
    from privacy_helpers import FakePost, collect_posts, jpeg, settings_for

    root = tmp_path / "data"
    settings = settings_for(root)
    assert collect_posts(settings, "tagA", "selfie", [FakePost(f"C{i}", f"user_{i}", "x", jpeg(i)) for i in range(4)]).accepted == 4
    with ReviewData(App.create(settings)) as data:
        ids = [t.id for t in data.page(Filters(), "newest", None, 10).tiles]
        data.apply("reviewed", ids[:2])
        assert data.thumbnail(ids[0]) is not None
        plan = data.forget_plan(ids[:1])
        assert plan.startswith("forget 1 image: 1 stored file") and "cannot be undone" in plan
        location = data.manifest.get_image(ids[0])["location"]
        left = root / ".thumbs" / ids[0][:2] / f".{ids[0]}.jpg.99999-1.tmp"  # a writer killed mid-write
        left.write_bytes(b"part of a thumbnail")
        result = data.forget(ids[:1])
        assert result.changed == 1
        assert data.detail(ids[0]) is None and data.page(Filters(), "newest", None, 10).total == 3
        assert [r.image for r in data.history(ids[1])] == [ids[1]]
    assert not (root / location).exists()
    assert not (root / ".thumbs" / ids[0][:2] / f"{ids[0]}.jpg").exists() and not left.exists()
    db = sqlite3.connect(root / "manifest.sqlite")
    assert db.execute("SELECT COUNT(*) FROM reviews WHERE content_hash=?", (ids[0],)).fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM tombstones WHERE kind='content'").fetchone()[0] == 1


def test_a_full_disk_is_one_line_and_changes_nothing(small_disk) -> None:
    mount = small_disk("2M", "small")
    root = mount / "data"
    hashes = build(root, 40, files=False, rejected_share=0.0)
    with open_data(root) as data:
        data.page(Filters(), "newest", None, 5)
        filler = mount / "filler"
        fill_up(filler)
        with pytest.raises(ReviewError) as info:
            data.apply("exclude", hashes, note="x" * 1500)
            data.apply("relabel", hashes, "portrait")
            data.apply("relabel", hashes, "selfie")
        assert ("disk is full" in str(info.value) or "No space left" in str(info.value))
        assert str(info.value).endswith("nothing was changed")
        assert "\n" not in str(info.value)
        filler.unlink()
        rows = rows_of(root)
        assert sqlite3.connect(root / "manifest.sqlite").execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        replayed = sqlite3.connect(root / "manifest.sqlite").execute("SELECT COUNT(DISTINCT batch) FROM reviews").fetchone()[0]
        assert sum(bool(r["excluded"]) for r in rows) in (0, 40) and replayed <= 2


def test_a_full_disk_at_the_first_read_says_so_and_leaves_no_side_file(small_disk) -> None:
    """SQLite reports a -shm it cannot grow as an I/O error: the user reads that the disk is
    full, and the failed open leaves no -wal or -shm behind."""
    mount = small_disk("2M", "small")
    root = mount / "data"
    build(root, 40, files=False, rejected_share=0.0)
    fill_up(mount / "filler")
    with open_data(root) as data:
        with pytest.raises(ReviewError) as info:
            data.page(Filters(), "newest", None, 5)
        assert "disk is full" in str(info.value) and "manifest.sqlite" in str(info.value), info.value
        assert sorted(p.name for p in root.iterdir()) == ["manifest.sqlite"]
        (mount / "filler").unlink()
        assert data.page(Filters(), "newest", None, 5).total == 40  # space again: the next request reads it


def test_a_failed_write_and_a_damaged_manifest_are_one_line(fresh, tmp_path, monkeypatch) -> None:
    from contextlib import contextmanager

    root, hashes = fresh
    with open_data(root) as data:
        data.page(Filters(), "newest", None, 5)

        @contextmanager
        def full():
            raise sqlite3.OperationalError("database or disk is full")
            yield

        monkeypatch.setattr(data.manifest, "transaction", full)
        with pytest.raises(ReviewError, match=r"manifest.sqlite cannot be written \(the disk is full\): nothing was changed"):
            data.apply("reviewed", hashes[:2])
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "manifest.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(ReviewError, match="cannot read .*manifest.sqlite: "):
        open_data(damaged).page(Filters(), "newest", None, 5)
    with pytest.raises(ReviewError, match="no dataset at"):
        open_data(tmp_path / "nowhere")


def test_a_rejected_import_shows_while_its_original_file_is_still_there(tmp_path: Path) -> None:
    from privacy_helpers import import_folder, jpeg, settings_for

    root, folder = tmp_path / "data", tmp_path / "in"
    folder.mkdir()
    photo = jpeg(1)
    (folder / "a.jpg").write_bytes(photo)
    (folder / "b.jpg").write_bytes(photo[:-2] + b"\xff\xd9" if photo.endswith(b"\xff\xd9") else photo + b"\0")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a photo at all")
    settings = settings_for(root)
    import_folder(settings, folder, "selfie")
    with ReviewData(App.create(settings)) as data:
        rejected = data.page(Filters(decision=("rejected",)), "newest", None, 10).tiles
        assert rejected and all(t.has_thumbnail for t in rejected)
        broken = next(t for t in rejected if data.manifest.get_image(t.id)["origin_path"].endswith("broken.jpg"))
        got = data.image(broken.id)
        assert got is not None and got[0] == (folder / "broken.jpg").read_bytes()
        (folder / "broken.jpg").write_bytes(b"other bytes now")  # the user changed the file: not this image
        assert data.image(broken.id) is None and data.thumbnail(broken.id) is None
        (folder / "broken.jpg").unlink()
        (folder / "broken.jpg").symlink_to(folder / "a.jpg")
        assert data.image(broken.id) is None  # a link is never followed


action_steps = st.lists(st.tuples(
    st.sampled_from(["relabel", "exclude", "include", "reviewed", "unreviewed", "undo"]),
    st.lists(st.integers(0, 11), min_size=1, max_size=6),
    st.sampled_from(["selfie", "portrait"]),
), min_size=1, max_size=12)


@hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=action_steps)
def test_any_sequence_of_edits_and_undos_is_what_its_rows_say(tmp_path_factory, steps) -> None:
    from test_review_kill import check_replay

    root = tmp_path_factory.mktemp("steps") / "data"
    hashes = build(root, 12, files=False, rejected_share=0.0)
    with open_data(root) as data:
        for action, picks, label in steps:
            if action == "undo":
                data.undo()
            else:
                data.apply(action, [hashes[i] for i in picks], label if action == "relabel" else None)
            tiles = {t.id: t for t in data.page(Filters(), "newest", None, 50).tiles}
            state = {r["content_hash"]: r for r in rows_of(root)}
            for h, t in tiles.items():  # the in-memory columns follow the manifest
                assert (t.label, t.reviewed, t.excluded) == (
                    state[h]["effective"], state[h]["reviewed"] is not None, bool(state[h]["excluded"]))
    check_replay(root)


def test_a_decompression_bomb_gets_no_thumbnail_and_pillow_keeps_its_limit() -> None:
    from selfiescope.review import thumbs

    before = Image.MAX_IMAGE_PIXELS
    png = io.BytesIO()
    Image.new("1", (8000, 6000)).save(png, "PNG")  # 48 MP, a few kB on disk
    with pytest.raises(thumbs.TooLarge):
        thumbs.make_thumbnail(png.getvalue())
    assert Image.MAX_IMAGE_PIXELS == before


@hsettings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(change=st.one_of(st.binary(max_size=2048), st.tuples(st.integers(0, 10_000), st.integers(1, 255))))
def test_the_data_layer_gives_stored_bytes_only_when_they_are_the_recorded_ones(fresh, change) -> None:
    """Invariant: image() returns bytes whose sha256 is what the manifest recorded for the image,
    or raises ImageMismatch; never other bytes (any replacement, or one byte flipped)."""
    import hashlib

    from selfiescope.review.data import ImageMismatch

    root, hashes = fresh
    image = hashes[0]
    location = sqlite3.connect(root / "manifest.sqlite").execute(
        "SELECT location FROM images WHERE content_hash=?", (image,)).fetchone()[0]
    path = root / location
    original = path.read_bytes()
    assert hashlib.sha256(original).hexdigest() == image  # the synthetic store keeps the bytes as collected
    if isinstance(change, bytes):
        replaced = change
    else:
        at, flip = change
        at %= len(original)
        replaced = original[:at] + bytes([original[at] ^ flip]) + original[at + 1:]
    path.write_bytes(replaced)
    try:
        with open_data(root) as data:
            try:
                got = data.image(image)
            except ImageMismatch:
                assert replaced != original
            else:
                assert got is not None and hashlib.sha256(got[0]).hexdigest() == image and replaced == original
    finally:
        path.write_bytes(original)


@pytest.mark.parametrize("pillow_format, media_type", [
    ("JPEG", "image/jpeg"), ("PNG", "image/png"), ("GIF", "image/gif"), ("WEBP", "image/webp"),
])
def test_an_image_with_no_recorded_format_is_served_as_what_its_bytes_are(pillow_format, media_type) -> None:
    """The review names an image's type from its bytes as the downloader does: one sniffer for both."""
    from selfiescope.review.data import _media_type

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "grey").save(buf, pillow_format)
    assert _media_type(None, buf.getvalue()) == media_type
    assert _media_type("", b"<svg xmlns='http://www.w3.org/2000/svg'/>") == "application/octet-stream"


def _two_face_dataset(faces_dir: Path, base: Path) -> tuple[ReviewData, dict[str, str]]:
    """Two photos of two people each, imported through the whole chain: one kept, one rejected
    as ``face_too_small``; their ids by file name."""
    from face_pairs import two_faces_kept, two_faces_too_small
    from review_helpers import import_folder, review_settings

    folder, root = base / "in", base / "data"
    folder.mkdir(parents=True)
    two_faces_kept(faces_dir, folder / "pair.jpg")
    two_faces_too_small(faces_dir, folder / "pair_small.jpg")
    settings = review_settings(root)
    import_folder(settings, folder, "selfie")
    ids = {Path(r[1]).name: r[0] for r in sqlite3.connect(root / "manifest.sqlite").execute(
        "SELECT content_hash, origin_path FROM images")}
    return ReviewData(App.create(settings)), ids


def _area(box: tuple[int, int, int, int]) -> int:
    return box[2] * box[3]


@pytest.mark.faces
def test_detail_boxes_every_face_of_kept_and_rejected_photos_the_largest_marked(faces_dir: Path, tmp_path: Path) -> None:
    data, ids = _two_face_dataset(faces_dir, tmp_path)
    with data:
        kept, small = data.detail(ids["pair.jpg"]), data.detail(ids["pair_small.jpg"])
        assert kept is not None and small is not None
        assert kept.tile.decision == "accepted" and small.tile.decision == "rejected"
        assert "face_too_small" in {code for _, code, _ in small.decisions} and small.tile.has_thumbnail
        for detail in (kept, small):
            assert len(detail.faces) == detail.n_faces == 2 and detail.faces_unboxed == 0
            assert detail.largest is not None and _area(detail.faces[detail.largest]) == max(map(_area, detail.faces))
            row = data.manifest.get_image(detail.tile.id)
            assert list(detail.faces[detail.largest]) == json.loads(row["face_box"])
        # forget takes the boxes with the row: nothing in the manifest names them any more,
        # not even the file's free pages or its write-ahead log
        boxes = data.manifest.get_image(ids["pair.jpg"])["face_boxes"].encode()
        data.forget([ids["pair.jpg"]])
        for part in data.root.glob("manifest.sqlite*"):
            assert boxes not in part.read_bytes(), part.name
        assert data.detail(ids["pair.jpg"]) is None
        assert not data.manifest.query("SELECT 1 FROM images WHERE content_hash=?", (ids["pair.jpg"],))
        left = [r[0] for r in data.manifest.query("SELECT face_boxes FROM images WHERE face_boxes IS NOT NULL")]
        assert left == [data.manifest.get_image(ids["pair_small.jpg"])["face_boxes"]]


def _as_before_the_column(root: Path) -> None:
    db = sqlite3.connect(root / "manifest.sqlite")
    db.execute("ALTER TABLE images DROP COLUMN face_boxes")
    db.commit()
    db.close()


@pytest.mark.faces
def test_an_old_manifest_shows_its_one_box_and_says_the_others_have_none(faces_dir: Path, tmp_path: Path) -> None:
    data, ids = _two_face_dataset(faces_dir, tmp_path)
    data.close()
    _as_before_the_column(tmp_path / "data")
    with data:
        detail = data.detail(ids["pair.jpg"])
        assert detail is not None
        row = data.manifest.get_image(ids["pair.jpg"])
        assert row["face_boxes"] is None  # the column was added on open, the row keeps what it had
        assert detail.faces == [tuple(json.loads(row["face_box"]))] and detail.largest == 0
        assert detail.n_faces == 2 and detail.faces_unboxed == 1


@pytest.mark.faces
def test_an_old_manifest_on_a_read_only_root_shows_its_one_box(faces_dir: Path, tmp_path: Path) -> None:
    import shutil

    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32M", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        data, ids = _two_face_dataset(faces_dir, tmp_path / "built")
        data.close()
        _as_before_the_column(tmp_path / "built" / "data")
        shutil.copytree(tmp_path / "built" / "data", mount / "data")  # nothing on the mount is held open
        assert subprocess.run(["mount", "-o", "remount,ro", str(mount)], capture_output=True).returncode == 0
        data = open_data(mount / "data")
        with data:
            assert data.manifest.readonly
            detail = data.detail(ids["pair_small.jpg"])
            assert detail is not None and len(detail.faces) == 1 and detail.faces_unboxed == 1
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
        shutil.rmtree(mount, ignore_errors=True)


def test_images_with_equal_phashes_share_a_near_duplicate_group(tmp_path: Path) -> None:
    """Two stored photos with one pHash are one group even when dedup named neither a copy of the other."""
    root = tmp_path / "data"
    hashes = build(root, 30, seed=9, rejected_share=0.0)
    with sqlite3.connect(root / "manifest.sqlite") as db:
        db.execute("UPDATE images SET phash=? WHERE content_hash IN (?, ?)", ("8f3c0a5500ff12e4", hashes[3], hashes[17]))
    with open_data(root) as data:
        grouped = {t.id for t in data.page(Filters(in_group=True), "newest", None, 100).tiles}
        assert {hashes[3], hashes[17]} <= grouped
        assert {t.id for t in data.detail(hashes[3]).group} >= {hashes[17]}


@hsettings(max_examples=25, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text("0123456789abcdef", min_size=1, max_size=20), st.sampled_from(["zz", ""])),
                min_size=1, max_size=12))
def test_phashes_are_read_whatever_their_form(values) -> None:
    """16 hex digits are one 64-bit number; a longer hash keeps its last 64 bits; what is no hex is none."""
    import numpy as np

    from selfiescope.review.snapshot_read import ImageColumns, _fill_phashes

    out = ImageColumns(len(values))
    _fill_phashes(out, np.arange(len(values)), values)
    for i, v in enumerate(values):
        try:
            expected = int(v, 16) & 0xFFFFFFFFFFFFFFFF if v else None
        except ValueError:
            expected = None
        assert bool(out.has_phash[i]) == (expected is not None)
        if expected is not None:
            assert int(out.phash[i]) == expected


def test_phashes_of_other_lengths_are_not_read_as_one_run_of_digits() -> None:
    import numpy as np

    from selfiescope.review.snapshot_read import ImageColumns, _fill_phashes

    out = ImageColumns(2)
    _fill_phashes(out, np.arange(2), ["abc", "0123456789abcdef0123456789a"])  # 32 digits together
    assert out.phash.tolist() == [0xABC, 0x89ABCDEF0123456789A & 0xFFFFFFFFFFFFFFFF]


@hsettings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["", "a1", "b2", "c3"]), st.sampled_from(["", "0.25", "0.5"]),
                          st.sampled_from(["", "0.75", "1"])), max_size=8),
       st.permutations(["content_hash", "oof_probability", "calibrated_oof_probability", "label"]))
def test_predictions_are_read_as_their_header_names_them(rows, header) -> None:
    """The calibrated probability where a row has one, else the raw one; rows without a hash or
    a probability left out; whatever order the columns come in."""
    import csv

    from selfiescope.review.probabilities import _probabilities

    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(header)
    for h, raw, calibrated in rows:
        values = {"content_hash": h, "oof_probability": raw, "calibrated_oof_probability": calibrated, "label": "x"}
        writer.writerow([values[name] for name in header])
    text.seek(0)
    expected = {}
    for row in csv.DictReader(text):
        value = row.get("calibrated_oof_probability") or row.get("oof_probability")
        if row.get("content_hash") and value:
            expected[row["content_hash"]] = float(value)
    text.seek(0)
    assert _probabilities(csv.reader(text)) == expected


def test_after_review_edits_a_forget_leaves_no_byte_of_the_forgotten_images_in_the_manifest(tmp_path: Path) -> None:
    """Review edits insert and update many rows, which makes SQLite reorganise pages; fragments of
    moved rows stay in them where ``secure_delete`` does not reach. Forget leaves none: no file of
    the manifest holds a forgotten image's hash, in any table, index or free space."""
    root = tmp_path / "data"
    hashes = build(root, 600, seed=3, rejected_share=0.2)  # found to leave a fragment without the rewrite
    with open_data(root) as data:
        labels = data.labels()
        for round_ in range(3):
            data.apply("relabel", hashes, labels[round_ % len(labels)])
        data.undo()
        for image in hashes[:50]:
            data.apply("exclude", [image], note="n")
        gone = hashes[::3]
        data.forget(gone)
        assert all(data.detail(h) is None for h in gone)
    for part in sorted(root.glob("manifest.sqlite*")):
        raw = part.read_bytes()
        left = [h for h in gone if h.encode() in raw or h[:16].encode() in raw]
        assert not left, f"{part.name} still holds {len(left)} forgotten hashes"


def test_a_thumbnail_made_while_another_process_forgets_its_image_is_not_kept(tmp_path: Path) -> None:
    """The app's snapshot still lists an image another process has just forgotten: the thumbnail
    it makes of it then is not kept, whether the forget finished before or during the write."""
    root = tmp_path / "data"
    hashes = build(root, 12, seed=5, files=True, rejected_share=0.0)
    with open_data(root) as data:
        data.page(Filters(), "newest", None, 60)  # the snapshot holds every image
        image = data.thumbnail(hashes[0])
        assert image is not None
        target = hashes[1]
        other = Manifest.at_root(root)  # "another process": its own connection
        try:
            with other.transaction() as db:
                db.execute("DELETE FROM images WHERE content_hash=?", (target,))
        finally:
            other.close()
        data.thumbnail(target)  # made from what the snapshot said; must not stay
        assert not list((root / ".thumbs").rglob(f"{target}*")), "a thumbnail of a forgotten image was kept"
        # the row goes between the check before writing and the write: the check after removes it
        answers = iter([True, False])
        data._still_held = lambda h: next(answers)  # type: ignore[method-assign]
        assert data._keep_thumbnail(hashes[2], image)
        assert not list((root / ".thumbs").rglob(f"{hashes[2]}*"))


def test_a_forget_killed_midway_is_finished_before_the_app_shows_anything(tmp_path: Path) -> None:
    """The forget's intent is committed (tombstones and to-do list), then the process dies before
    the rows go: the next review finishes it, so no half-forgotten image is shown or editable."""
    from selfiescope.pipelines.dataset_care.forget import ForgetRequest, _commit_intent, plan_forget

    root = tmp_path / "data"
    hashes = build(root, 12, seed=6, files=True, rejected_share=0.0)
    gone = hashes[:4]
    manifest = Manifest.at_root(root)
    try:
        _commit_intent(manifest, plan_forget(manifest, ForgetRequest(images=gone)))
    finally:
        manifest.close()
    with open_data(root) as data:
        assert data.finish_interrupted_forget() == 4
        assert all(data.detail(h) is None for h in gone)
        assert data.page(Filters(), "newest", None, 60).total == len(hashes) - len(gone)
        assert data.finish_interrupted_forget() == 0
        left = data.manifest.query("SELECT COUNT(*) FROM forget_pending")[0][0]
    assert left == 0


def test_a_rejected_import_from_a_relative_folder_is_shown_from_any_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The manifest names an imported file absolutely, so a review started elsewhere still finds
    a rejected import's original (and ``forget --image`` finds it by a relative name)."""
    from review_helpers import import_folder, review_settings

    folder = tmp_path / "work" / "bulk"
    folder.mkdir(parents=True)
    Image.new("RGB", (200, 160), (90, 140, 60)).save(folder / "no_face.jpg", "JPEG")  # rejected: no face
    settings = review_settings(tmp_path / "data")
    monkeypatch.chdir(tmp_path / "work")
    import_folder(settings, Path("bulk"), "selfie")
    monkeypatch.chdir(tmp_path)  # elsewhere
    with ReviewData(App.create(settings)) as data:
        row = data.manifest.query("SELECT content_hash, origin_path, decision FROM images")[0]
        assert row["decision"] == "rejected" and Path(row["origin_path"]).is_absolute()
        assert data.thumbnail(row["content_hash"]) is not None
