"""`selfiescope forget`: every key, every table, tombstones on import, crash resume, models listed."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from privacy_helpers import (
    CHAIN, FakePost, accepted_locations, collect_posts, import_folder, jpeg, settings_for, stored_files, table_hashes,
    write_settings,
)
from typer.testing import CliRunner

from selfiescope.core.app import App
from selfiescope.cli import app
from selfiescope.core.manifest import Manifest
from selfiescope.core.settings import ScrapePipeline
from selfiescope.pipelines.collecting.collect import collect
from selfiescope.plugins.files_storage import FilesStorage

runner = CliRunner()
N = 9


def posts(prefix: str = "C", n: int = N, seed: int = 0) -> list[FakePost]:
    return [FakePost(f"{prefix}{i}", f"User_{i % 3}", f"caption {i} of user {i % 3}", jpeg(seed + i)) for i in range(n)]


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """9 posts by 3 owners under `selfie`, with cached features, a rejection and a label conflict."""
    root = tmp_path / "data"
    settings = settings_for(root)
    stats = collect_posts(settings, "tagA", "selfie", posts())
    assert stats.accepted == N, stats.as_dict()
    # The same photo as post C0, re-encoded, met under `portrait`: a label conflict (dedup), a rejection.
    from PIL import Image
    import io

    im = Image.open(io.BytesIO(posts()[0].data))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=60)
    stats = collect_posts(settings, "tagB", "portrait", [FakePost("D0", "someone_else", "x", buf.getvalue())])
    assert stats.rejected_by_reason.get("label_conflict") == 1, stats.as_dict()
    m = Manifest.at_root(root)
    for r in m.query("SELECT content_hash FROM images WHERE decision='accepted'"):
        m.put_features([(r[0], "geometry", "1", {"geometry.x": 1.0})])
    m.close()
    return root


def forget_cli(root: Path, *args: str, input: str | None = None):
    settings = write_settings(root)
    return runner.invoke(app, ["forget", "--settings", str(settings), *args], input=input)


def row(root: Path, where: str, params: tuple) -> dict:
    m = Manifest.at_root(root)
    try:
        rows = m.query(f"SELECT * FROM images WHERE {where}", params)
        return dict(rows[0]) if rows else {}
    finally:
        m.close()


def assert_gone(root: Path, hashes: set[str], before: dict[str, set[str]]) -> None:
    after = table_hashes(root)
    for table, present in after.items():
        assert not present & hashes, f"{table} still holds a forgotten image"
        if table != "conflicts":  # a conflict row names a pair: it goes with either image
            assert present == before[table] - hashes, f"{table}: something else was removed"
    assert stored_files(root) == accepted_locations(root)


@pytest.mark.parametrize("key", ["post", "post_url", "owner", "image_id", "image_stored_path", "image_hash"])
def test_forget_by_each_key_removes_everything_and_records_tombstones(dataset: Path, key: str) -> None:
    root = dataset
    target = row(root, "post_id=?", ("C4",))
    value = {
        "post": "C4", "post_url": "https://www.instagram.com/p/C4/?img_index=1", "owner": "@user_1",
        "image_id": target["id"], "image_stored_path": str(root / target["location"]),
        "image_hash": target["content_hash"][:20],
    }[key]
    option = "--" + key.split("_")[0]
    expected = {target["content_hash"]}
    if key == "owner":  # User_1 owns C1, C4, C7 (names match case-insensitively, with or without @)
        expected = {row(root, "post_id=?", (c,))["content_hash"] for c in ("C1", "C4", "C7")}
    before = table_hashes(root)
    files_before = stored_files(root)

    result = forget_cli(root, option, value, "--yes", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["removed"]["files"] == len(expected) == report["removed"]["images"]
    assert report["removed"]["dedup__phashes"] == len(expected) and report["removed"]["features"] == len(expected)
    assert_gone(root, expected, before)
    assert len(stored_files(root)) == len(files_before) - len(expected)
    m = Manifest.at_root(root)
    try:
        assert not m.query("SELECT 1 FROM posts_seen WHERE post_id='C4'")
        kinds = {r[0]: r[1] for r in m.query("SELECT kind, COUNT(*) FROM tombstones GROUP BY kind")}
        assert kinds["content"] == len(expected) and kinds["post"] == len(expected)
        assert kinds.get("owner", 0) == (key == "owner")
        # Tombstones are keyed hashes: no content hash, post id or owner name is kept in the clear.
        keys = " ".join(r[0] for r in m.query("SELECT key FROM tombstones"))
        assert not any(h in keys for h in expected) and "C4" not in keys and "user_1" not in keys.lower()
        assert m.query("SELECT COUNT(*) FROM forget_pending")[0][0] == 0
    finally:
        m.close()
    # Again: nothing left to match, exit 1, and it says so.
    again = forget_cli(root, option, value, "--yes")
    assert again.exit_code == 1 and "nothing matched" in again.output


def test_forgotten_rows_are_gone_from_the_files_on_disk_while_another_reader_stays_open(dataset: Path) -> None:
    """SQLite keeps a deleted row's older page versions in the main file and the write-ahead log
    until a checkpoint: forget leaves no byte of the row in any manifest file, even while another
    process (the review app, a second shell) holds the manifest open."""
    root = dataset
    target = row(root, "post_id=?", ("C4",))
    traces = [target["content_hash"].encode(), target["location"].encode()]
    assert any(t in p.read_bytes() for p in root.glob("manifest.sqlite*") for t in traces)
    reader = Manifest.at_root(root)
    try:
        reader.query("SELECT COUNT(*) FROM images")  # open and idle, as a review app between requests
        result = forget_cli(root, "--post", "C4", "--yes")
        assert result.exit_code == 0, result.output
        for part in sorted(root.glob("manifest.sqlite*")):
            data = part.read_bytes()
            assert not any(t in data for t in traces), f"{part.name} still holds the forgotten row"
    finally:
        reader.close()


def test_forget_the_conflicting_copy_removes_the_conflict_and_its_rejection(dataset: Path) -> None:
    before = table_hashes(root := dataset)
    assert before["conflicts"] and before["rejections"]
    copy = row(root, "post_id=?", ("D0",))
    assert copy["decision"] == "rejected" and not copy["location"]
    result = forget_cli(root, "--post", "D0", "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["removed"]["dedup__conflicts"] >= 1
    assert_gone(root, {copy["content_hash"]}, before)
    assert not table_hashes(root)["conflicts"]


def test_forget_label_and_original_file_path(dataset: Path, tmp_path: Path) -> None:
    root = dataset
    before = table_hashes(root)
    result = forget_cli(root, "--label", "portrait", "--yes")
    assert result.exit_code == 0, result.output
    assert not row(root, "label='portrait'", ())
    assert len(stored_files(root)) == N  # the selfies stay
    # An original file on disk (not in the storage root) is found by its content.
    original = tmp_path / "mine.jpg"
    original.write_bytes(posts()[2].data)
    result = forget_cli(root, "--image", str(original), "--yes")
    assert result.exit_code == 0, result.output
    assert len(stored_files(root)) == N - 1 and stored_files(root) == accepted_locations(root)
    assert before["images"] - table_hashes(root)["images"]


def test_nothing_matches_says_so_and_exits_1(dataset: Path) -> None:
    files = stored_files(dataset)
    for args in (["--post", "NOPE"], ["--image", "0123456789abcdef"], ["--label", "cats"], ["--owner", "nobody"]):
        result = forget_cli(dataset, *args, "--yes", "--json")
        assert result.exit_code == 1, (args, result.output)
        assert json.loads(result.stdout)["matched"]["images"] == 0
    assert stored_files(dataset) == files
    assert forget_cli(dataset).exit_code == 2  # no key given: usage error


def test_dry_run_and_prompt_change_nothing_until_confirmed(dataset: Path) -> None:
    files, hashes = stored_files(dataset), table_hashes(dataset)
    dry = forget_cli(dataset, "--owner", "user_0", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    report = json.loads(dry.stdout)
    # user_0's three posts, and the row of D0: C0's copy that dedup turned away (the same photo).
    assert report["dry_run"] and report["matched"]["images"] == 4 and report["removed"]["files"] == 0
    assert report["matched"]["stored_files"] == 3
    assert {i["location"] for i in report["images"]} - {None} <= files
    declined = forget_cli(dataset, "--owner", "user_0", input="n\n")
    assert declined.exit_code == 1 and "nothing removed" in declined.output
    no_answer = forget_cli(dataset, "--owner", "user_0", input="")
    assert no_answer.exit_code == 1
    assert stored_files(dataset) == files and table_hashes(dataset) == hashes
    m = Manifest.at_root(dataset)
    assert m.query("SELECT COUNT(*) FROM tombstones")[0][0] == 0
    m.close()
    confirmed = forget_cli(dataset, "--owner", "user_0", "--json", input="y\n")
    assert confirmed.exit_code == 0, confirmed.output
    # The preview and prompt go to stderr (CliRunner echoes the typed answer into stdout, a terminal does not).
    assert json.loads(confirmed.stdout.removeprefix(" y\n"))["removed"]["files"] == 3
    assert len(stored_files(dataset)) == len(files) - 3


def test_tombstones_are_honoured_by_a_later_import(tmp_path: Path) -> None:
    root, folder = tmp_path / "data", tmp_path / "photos"
    folder.mkdir()
    for i in range(4):
        (folder / f"p{i}.jpg").write_bytes(jpeg(100 + i))
    settings = settings_for(root)
    assert import_folder(settings, folder, "selfie").accepted == 4
    result = forget_cli(root, "--image", str(folder / "p1.jpg"), "--yes")
    assert result.exit_code == 0, result.output
    # The same bytes again, under another name and another label: skipped, and no new trace.
    (folder / "copy-of-p1.jpg").write_bytes((folder / "p1.jpg").read_bytes())
    again = import_folder(settings, folder, "selfie")
    other = import_folder(settings, folder, "portrait")
    assert again.accepted == 0 and again.rejected_by_reason == {"forgotten": 2}
    assert other.rejected_by_reason.get("forgotten") == 2
    forgotten = hashlib.sha256((folder / "p1.jpg").read_bytes()).hexdigest()
    assert all(forgotten not in hashes for hashes in table_hashes(root).values())
    assert len(stored_files(root)) == 3 and stored_files(root) == accepted_locations(root)


def test_tombstones_are_honoured_by_a_source_and_skip_the_download(tmp_path: Path) -> None:
    root = tmp_path / "data"
    settings = settings_for(root)
    collect_posts(settings, "t", "selfie", posts())
    assert forget_cli(root, "--owner", "user_2", "--yes").exit_code == 0
    # A new post by the forgotten owner, and the old posts again (their posts_seen rows are gone).
    fresh = [*posts(), FakePost("NEW", "USER_2", "new one", jpeg(500)), FakePost("OK", "user_9", "other", jpeg(501))]
    stats = collect_posts(settings, "t", "selfie", fresh)
    assert stats.accepted == 1  # only the other owner's new post
    assert stats.seen == 1 + 1  # the old posts of user_2 were skipped by post_seen: no download at all
    assert stats.rejected_by_reason == {"forgotten": 1}
    assert not row(root, "post_id IN ('C2','C5','C8','NEW')", ())


def test_interrupted_forget_resumes_and_files_and_rows_agree(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_delete = FilesStorage.delete
    calls = {"n": 0}

    async def dies_on_second(self, stored):  # noqa: ANN001
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # like Ctrl-C between two files
        return await real_delete(self, stored)

    monkeypatch.setattr(FilesStorage, "delete", dies_on_second)
    result = forget_cli(dataset, "--owner", "user_0", "--yes")
    assert result.exit_code == 130, result.output
    m = Manifest.at_root(dataset)
    assert m.query("SELECT COUNT(*) FROM forget_pending WHERE kind='content'")[0][0] == 3 + 1  # + C0's copy D0
    assert m.query("SELECT COUNT(*) FROM tombstones WHERE kind='owner'")[0][0] == 1  # already protected
    m.close()
    assert len(stored_files(dataset)) == N - 1  # one file went before the interruption
    monkeypatch.setattr(FilesStorage, "delete", real_delete)
    # The next run of any kind finishes it first (here: a collect), then files and rows agree.
    collect_posts(settings_for(dataset), "tagA", "selfie", posts())
    assert stored_files(dataset) == accepted_locations(dataset)
    assert len(stored_files(dataset)) == N - 3
    rerun = forget_cli(dataset, "--owner", "user_0", "--yes")
    assert rerun.exit_code == 1  # all done already


def test_rerunning_the_same_forget_after_a_crash_completes_it(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def boom(self, stored):  # noqa: ANN001
        raise OSError("disk went away")

    monkeypatch.setattr(FilesStorage, "delete", boom)
    with pytest.raises(OSError):
        from selfiescope.pipelines.dataset_care.forget import ForgetRequest, forget

        asyncio.run(forget(App.create(settings_for(dataset)), ForgetRequest(posts=["C3"])))
    monkeypatch.undo()
    result = forget_cli(dataset, "--post", "C3", "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["resumed"] == 2  # the image and the post of the first try
    assert stored_files(dataset) == accepted_locations(dataset) and len(stored_files(dataset)) == N - 1


def test_old_manifest_opens_and_gains_the_new_columns(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "manifest.sqlite"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE images (content_hash TEXT PRIMARY KEY, id TEXT, source TEXT, job TEXT, post_id TEXT,
            post_url TEXT, image_url TEXT, origin_path TEXT, label TEXT, phash TEXT, format TEXT, width INTEGER,
            height INTEGER, size INTEGER, face_box TEXT, face_area REAL, n_faces INTEGER, decision TEXT NOT NULL,
            rejected_by TEXT, reject_code TEXT, reason TEXT, location TEXT, run_id INTEGER, first_seen REAL, updated REAL);
        INSERT INTO images(content_hash, id, label, decision) VALUES ('ab', 'ab', 'selfie', 'accepted');
    """)
    db.commit()
    db.close()
    m = Manifest(path)
    cols = {r[1] for r in m.query("PRAGMA table_info(images)")}
    assert {"owner", "owner_id", "caption", "taken_at"} <= cols
    assert m.get_image("ab")["label"] == "selfie" and not m.has_tombstones()
    m.close()
    Manifest(path).close()  # a second open is a no-op


def test_models_that_included_the_image_are_listed(tmp_path: Path) -> None:
    from train_helpers import train_settings, write_pictures

    from selfiescope.pipelines.model.train import train

    root = tmp_path / "data"
    for label, kind, seed in (("selfie", "selfie", 1), ("portrait", "portrait", 2)):
        folder = tmp_path / "in" / label
        write_pictures(folder, kind, 8, seed=seed)
        pipeline = ScrapePipeline(kind="import", source="folder", paths=[folder], label=label,
                                  chain=["decode", "face_area", "store"])
        stats = asyncio.run(collect(App.create(settings_for(root)), "import", pipeline=pipeline))
        assert stats.accepted >= 5, stats.as_dict()
    settings = train_settings(root, tmp_path / "models" / "m1", ["geometry"], folds=2, report=False)
    model = train(App.create(settings), "t").model_dir
    trained_on = (model / "trained_on.txt").read_text().split()
    victim = row(root, "label='selfie'", ())
    assert victim["content_hash"] in trained_on
    assert table_hashes(root)["features"] >= {victim["content_hash"]}  # training cached its features

    toml = write_settings(root)
    result = runner.invoke(app, ["forget", "--settings", str(toml), "--image", victim["id"], "--yes", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    # the geometry group's, the header facts', the likeness hashes' and the person descriptor's rows
    assert report["removed"]["features"] == 4
    assert report["models"] == [{"path": str(model.resolve()), "pipeline": "t", "images": 1,
                                 "retrain": "selfiescope train t"}]
    human = forget_cli(root, "--image", row(root, "label='portrait'", ())["id"], "--yes")
    assert human.exit_code == 0 and "selfiescope train t" in human.output
    shutil.rmtree(model)  # a model deleted since: not listed, no error
    third = forget_cli(root, "--label", "portrait", "--yes", "--json")
    assert third.exit_code == 0 and json.loads(third.stdout)["models"] == []


@hsettings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(crash=st.integers(0, 4), key=st.sampled_from(["--owner", "--label"]))
def test_a_crash_anywhere_in_forget_is_finished_by_a_rerun(tmp_path_factory, crash: int, key: str) -> None:
    """crash 0-2: on the n-th file; 3: in the rows' transaction; 4: in the tombstones' transaction."""
    root = tmp_path_factory.mktemp("crash") / "data"
    collect_posts(settings_for(root), "tagA", "selfie", posts())
    value = {"--owner": "user_1", "--label": "selfie"}[key]
    expected_left = N - (3 if key == "--owner" else N)
    real_delete, real_tx = FilesStorage.delete, Manifest.transaction
    calls = {"delete": 0, "tx": 0}

    async def delete(self, stored):  # noqa: ANN001
        calls["delete"] += 1
        if calls["delete"] == crash + 1 and crash <= 2:
            raise OSError(5, "I/O error")
        return await real_delete(self, stored)

    def transaction(self):  # noqa: ANN001
        calls["tx"] += 1
        if (crash == 4 and calls["tx"] == 1) or (crash == 3 and calls["tx"] == 2):
            raise KeyboardInterrupt
        return real_tx(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(FilesStorage, "delete", delete)
        mp.setattr(Manifest, "transaction", transaction)
        first = forget_cli(root, key, value, "--yes")
    assert first.exit_code in (1, 130), first.output
    if crash <= 3:  # the tombstones were committed: nothing can come back meanwhile
        again = collect_posts(settings_for(root), "tagA", "selfie", posts())
        assert again.accepted == 0
    rerun = forget_cli(root, key, value, "--yes")
    assert rerun.exit_code in (0, 1), rerun.output
    assert stored_files(root) == accepted_locations(root)
    assert len(stored_files(root)) == expected_left
    m = Manifest.at_root(root)
    assert m.query("SELECT COUNT(*) FROM forget_pending")[0][0] == 0
    m.close()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_tombstones_are_honoured_on_dask_too(tmp_path: Path) -> None:
    """The Dask engine calls the same gate: forgotten photos and owners are not stored, names never travel."""
    pytest.importorskip("distributed")
    from privacy_helpers import POSTS, PostsPlugin

    from selfiescope.core.settings import ComputeSettings, settings_from_dict
    from selfiescope.pipelines.collecting.dask_collect import collect_on_dask

    root, folder = tmp_path / "data", tmp_path / "photos"
    folder.mkdir()
    for i in range(4):
        (folder / f"p{i}.jpg").write_bytes(jpeg(300 + i))
    local = settings_for(root)
    import_folder(local, folder, "selfie")
    collect_posts(local, "tagA", "selfie", posts())
    assert forget_cli(root, "--image", str(folder / "p2.jpg"), "--owner", "user_1", "--yes").exit_code == 0
    shutil.rmtree(root / "selfie")  # start the files over; the manifest keeps resume rows, so drop those too
    # A mirrored, re-encoded copy of the forgotten photo: the gate uses the hashes the workers computed.
    from PIL import Image, ImageOps
    import io

    buf = io.BytesIO()
    ImageOps.mirror(Image.open(folder / "p2.jpg")).save(buf, "JPEG", quality=70)
    (folder / "p2-mirrored.jpg").write_bytes(buf.getvalue())
    m = Manifest.at_root(root)
    m.execute("DELETE FROM images")
    m.execute("DELETE FROM posts_seen")
    m.execute("DELETE FROM dedup__phashes")
    m.close()

    settings = settings_from_dict({"storage": {"root": str(root)}, "engine": {"workers": 1},
                                   "compute": {"engine": "dask", "workers": 1, "batch_size": 2}})
    from selfiescope.core.compute import start_local_cluster

    import distributed

    cluster = start_local_cluster(ComputeSettings(engine="dask", workers=1, threads_per_worker=1))
    try:
        with distributed.Client(cluster) as client:
            pipeline = ScrapePipeline(kind="import", source="folder", paths=[folder], label="selfie", chain=CHAIN)
            stats = asyncio.run(collect_on_dask(App.create(settings), "import", pipeline=pipeline, client=client))
            assert stats.accepted == 3 and stats.rejected_by_reason == {"forgotten": 2}, stats.as_dict()
            POSTS["tagA"] = posts()
            pipeline = ScrapePipeline(kind="scrape", source="posts", hashtags=["tagA"], label="selfie", chain=CHAIN)
            stats = asyncio.run(collect_on_dask(App.create(settings, plugins=[PostsPlugin()]), "s", pipeline=pipeline, client=client))
    finally:
        cluster.close()
    assert stats.accepted == N - 3, stats.as_dict()  # user_1's three posts: skipped before any download
    assert stored_files(root) == accepted_locations(root) and len(stored_files(root)) == 3 + N - 3
    assert b"user_1" not in (root / "manifest.sqlite").read_bytes().lower()
