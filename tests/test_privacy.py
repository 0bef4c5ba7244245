"""Pseudonymised owners, captions, the dataset key, metadata stripping, the card and export."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from PIL import Image
from privacy_helpers import (
    FakePost, PostsSource, accepted_locations, collect_posts, import_folder, jpeg, settings_for, stored_files, write_settings,
)
from typer.testing import CliRunner

from selfiescope.core.app import App
from selfiescope.cli import app
from selfiescope.core.manifest import Manifest
from selfiescope.core.metadata import GPS_IFD, has_location, strip_metadata
from selfiescope.core.privacy import KEY_FILE, Keyring, PrivacyError, load_or_create_key
from selfiescope.pipelines.dataset_care.forget import ForgetRequest, forget

runner = CliRunner()
OWNERS = ["Zoe.Marchetti", "kwame_o", "li_na88"]


def people(n: int = 6, seed: int = 0) -> list[FakePost]:
    return [FakePost(f"P{seed}_{i}", OWNERS[i % 3], f"beach day with {OWNERS[i % 3]} #selfie", jpeg(seed * 100 + i))
            for i in range(n)]


def every_byte_under(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.name != KEY_FILE)


def key_text(root: Path) -> str:
    return (root / KEY_FILE).read_text().strip()


# --- owners, captions, the key --------------------------------------------------------------
def test_owners_are_pseudonymised_captions_dropped_and_the_key_is_private(tmp_path: Path) -> None:
    root = tmp_path / "data"
    collect_posts(settings_for(root), "t", "selfie", people())
    key = root / KEY_FILE
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    m = Manifest.at_root(root)
    rows = m.query("SELECT owner, caption, taken_at FROM images")
    ring = Keyring(root)
    assert {r["owner"] for r in rows} == {ring.owner(o) for o in OWNERS}
    assert ring.owner("@ZOE.MARCHETTI ") == ring.owner("Zoe.Marchetti")  # one person, one pseudonym
    assert all(r["caption"] is None and r["taken_at"] == 1_767_225_600 for r in rows)
    m.close()
    blob = every_byte_under(root)  # manifest (and WAL), card, images
    for secret in [*OWNERS, "beach day", key_text(root)]:
        assert secret.encode() not in blob and secret.lower().encode() not in blob
    assert "Keyring" in repr(ring) and key_text(root) not in repr(ring)


def test_captions_are_kept_only_when_settings_say_so(tmp_path: Path) -> None:
    root = tmp_path / "data"
    collect_posts(settings_for(root, store_captions=True), "t", "selfie", people(3))
    m = Manifest.at_root(root)
    assert {r[0] for r in m.query("SELECT caption FROM images")} == {p.caption for p in people(3)}
    ring = Keyring(root)  # owners stay pseudonymised (the captions, kept on request, may name them)
    assert {r[0] for r in m.query("SELECT owner FROM images")} == {ring.owner(o) for o in OWNERS}
    m.close()


def test_a_different_dataset_has_different_pseudonyms(tmp_path: Path) -> None:
    a, b = Keyring(tmp_path / "a"), Keyring(tmp_path / "b")
    assert a.owner("kwame_o") != b.owner("kwame_o")
    assert Keyring(tmp_path / "a").owner("kwame_o") == a.owner("kwame_o")  # stable across opens


def test_a_widened_key_is_narrowed_and_a_damaged_or_unwritable_one_is_a_clear_error(tmp_path: Path) -> None:
    load_or_create_key(tmp_path)
    os.chmod(tmp_path / KEY_FILE, 0o644)
    load_or_create_key(tmp_path)
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600
    (tmp_path / KEY_FILE).write_text("not hex")
    with pytest.raises(PrivacyError, match="damaged"):
        load_or_create_key(tmp_path)
    # A root where the key cannot be created (read-only disk, wrong owner): a clear error, no key half-made.
    ro = tmp_path / "ro"
    ro.mkdir()

    def refuse(*a, **k):  # noqa: ANN002, ANN003 - root may write anywhere: refuse like a read-only disk
        raise OSError(30, "Read-only file system")

    real_open = os.open
    os.open = refuse
    try:
        with pytest.raises(PrivacyError, match="cannot create the dataset key .*Read-only.*writable"):
            load_or_create_key(ro)
    finally:
        os.open = real_open
    assert not (ro / KEY_FILE).exists()


def test_unwritable_key_is_a_clear_cli_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "data"
    collect_posts(settings_for(root), "t", "selfie", people(3))
    (root / KEY_FILE).unlink()

    def refuse(*a, **k):  # noqa: ANN002, ANN003
        raise PermissionError(13, "Permission denied")

    import types

    only_here = types.SimpleNamespace(**{n: getattr(os, n) for n in dir(os) if not n.startswith("__")})
    only_here.open = refuse  # the key's file only: the storage root's lock still opens its own
    monkeypatch.setattr("selfiescope.core.privacy.os", only_here)
    result = runner.invoke(app, ["forget", "--settings", str(write_settings(root)), "--owner", "kwame_o", "--yes"])
    assert result.exit_code == 2
    assert "cannot create the dataset key" in result.output and "Permission denied" in result.output


def test_the_key_never_appears_in_output_card_or_export(tmp_path: Path) -> None:
    root = tmp_path / "data"
    collect_posts(settings_for(root), "t", "selfie", people())
    toml = str(write_settings(root))
    outputs = [
        runner.invoke(app, ["forget", "--settings", toml, "--owner", OWNERS[0], "--yes", "--json"]).output,
        runner.invoke(app, ["forget", "--settings", toml, "--owner", OWNERS[1], "--yes"]).output,
        runner.invoke(app, ["forget", "--settings", toml, "--post", "P0_2", "--dry-run"]).output,
        runner.invoke(app, ["card", "--settings", toml, "--json"]).output,
        runner.invoke(app, ["settings", "show", "--settings", toml]).output,
    ]
    for fmt in ("imagefolder", "csv", "parquet"):
        res = runner.invoke(app, ["export", str(tmp_path / f"out-{fmt}"), "--format", fmt, "--settings", toml, "--include-urls"])
        assert res.exit_code == 0, res.output
        outputs.append(res.output)
    secret = key_text(root)
    assert all(secret not in o for o in outputs)
    exported = b"".join(p.read_bytes() for p in tmp_path.rglob("out-*/**/*") if p.is_file())
    assert secret.encode() not in exported and secret.encode() not in every_byte_under(root)
    for name in OWNERS:
        assert name.encode() not in exported and all(name not in o for o in outputs)


# --- metadata ---------------------------------------------------------------------------------
def gps_exif(orientation: int = 1) -> bytes:
    ex = Image.Exif()
    ex[0x010F] = "PhoneMaker"
    ex[0x0112] = orientation
    ex.get_ifd(0x8769)[0x9003] = "2025:06:01 12:00:00"
    ex[GPS_IFD] = {1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)}
    return ex.tobytes()


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_location_is_stripped_without_touching_pixels(fmt: str) -> None:
    rng = np.random.default_rng(3)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(buf, fmt, exif=gps_exif(6), **(
        {"lossless": True} if fmt == "WEBP" else {}))
    data = buf.getvalue()
    assert has_location(data)
    for mode in ("location", "all"):
        out = strip_metadata(data, fmt.lower(), mode)
        assert not has_location(out) and np.array_equal(pixels(out), pixels(data))
        exif = Image.open(io.BytesIO(out)).getexif()
        assert exif.get(0x0112) == 6  # which way up: kept
        assert (exif.get(0x010F) == "PhoneMaker") == (mode == "location")  # camera tags are features
    assert strip_metadata(data, fmt.lower(), "none") == data


def test_stored_copies_lose_gps_but_keep_their_ids_across_runs(tmp_path: Path) -> None:
    folder, root = tmp_path / "photos", tmp_path / "data"
    folder.mkdir()
    originals = {f"g{i}.jpg": jpeg(900 + i, exif=gps_exif()) for i in range(3)}
    for name, data in originals.items():
        (folder / name).write_bytes(data)
    settings = settings_for(root)
    assert import_folder(settings, folder, "selfie").accepted == 3
    m = Manifest.at_root(root)
    rows = {r["origin_path"]: dict(r) for r in m.query("SELECT * FROM images")}
    m.close()
    for name, data in originals.items():
        r = rows[str(folder / name)]
        import hashlib

        assert r["content_hash"] == hashlib.sha256(data).hexdigest() and r["id"] == r["content_hash"][:16]
        stored = (root / r["location"]).read_bytes()
        assert has_location(data) and not has_location(stored)
        assert np.array_equal(pixels(stored), pixels(data)) and r["size"] == len(stored)
    again = import_folder(settings, folder, "selfie")  # ids stable: nothing stored twice
    assert again.seen == 0 and len(stored_files(root)) == 3
    # With strip_metadata = "none" the bytes are stored as they came.
    root2 = tmp_path / "raw"
    import_folder(settings_for(root2, strip_metadata="none"), folder, "selfie")
    assert all(has_location((root2 / loc).read_bytes()) for loc in accepted_locations(root2))


# --- card and export -------------------------------------------------------------------------
def test_card_is_refreshed_by_every_run_and_by_forget(tmp_path: Path) -> None:
    root = tmp_path / "data"
    settings = settings_for(root)
    collect_posts(settings, "sunsets", "selfie", people(6))
    card = json.loads((root / "datacard.json").read_text())
    assert card["images"] == 6 and card["per_label"] == {"selfie": 6} and card["per_source"] == {"posts": 6}
    assert card["sources"][0]["jobs"] == [{"job": "sunsets", "label": "selfie", "images": 6}]
    options = card["filters"]["options"]
    assert options["face_area"]["min_face_area"] == 0.10 and options["face_area"]["detector"] == "hog"  # its own default
    assert options["dedup"]["max_distance"] == 8
    assert any("frontal HOG" in b for b in card["known_biases"]) and any("10%" in b for b in card["known_biases"])
    assert PostsSource.BIAS in card["known_biases"]  # a third-party source speaks for itself on the card
    assert "personal data" in card["licence"] and card["privacy"]["captions_stored"] is False
    assert {p["component"] for p in card["plugins"]} >= {"decode", "dedup", "store", "files", "posts"}
    md = (root / "DATASET.md").read_text()
    assert "## Known biases" in md and "| posts | sunsets | selfie | 6 |" in md
    collect_posts(settings, "dupes", "portrait", [FakePost("X1", "a", "b", people(1)[0].data)])
    card = json.loads((root / "datacard.json").read_text())
    assert card["rejections"]["total"] == 1 and card["collection"]["runs"] == 2
    asyncio_run(forget(App.create(settings), ForgetRequest(owners=[OWNERS[0]])))
    card = json.loads((root / "datacard.json").read_text())
    assert card["images"] == 4 and card["privacy"]["forgotten_tombstones"] > 0
    res = runner.invoke(app, ["card", "--settings", str(write_settings(root))])
    assert res.exit_code == 0 and "DATASET.md" in res.output


def asyncio_run(coro):  # noqa: ANN001, ANN201
    import asyncio

    return asyncio.run(coro)


def test_export_imagefolder_csv_parquet_never_the_forgotten(tmp_path: Path) -> None:
    root = tmp_path / "data"
    settings = settings_for(root)
    collect_posts(settings, "t", "selfie", people(6))
    collect_posts(settings, "u", "portrait", people(3, seed=7))
    asyncio_run(forget(App.create(settings), ForgetRequest(posts=["P0_1"])))
    toml = str(write_settings(root))

    res = runner.invoke(app, ["export", str(tmp_path / "hf"), "--settings", toml, "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["images"] == 8
    rows = list(csv.DictReader((tmp_path / "hf" / "metadata.csv").open()))
    assert len(rows) == 8 and {r["label"] for r in rows} == {"selfie", "portrait"}
    for r in rows:
        file = tmp_path / "hf" / r["file_name"]
        assert file.is_file() and file.parent.name == r["label"]
        assert len(r["owner"]) == 64 and r["collected_at"] and r["taken_at"].startswith("2026-01-01")
        assert "post_url" not in r and "caption" not in r
    assert json.loads(Path(root / "datacard.json").read_text())["images"] == 8

    res = runner.invoke(app, ["export", str(tmp_path / "t.csv"), "--format", "csv", "--settings", toml, "--include-urls"])
    assert res.exit_code == 0, res.output
    table = list(csv.DictReader((tmp_path / "t.csv" / "images.csv").open()))
    assert len(table) == 8 and "P0_1" not in {r["post_id"] for r in table}

    import pyarrow.parquet as pq

    res = runner.invoke(app, ["export", str(tmp_path / "pq"), "--format", "parquet", "--settings", toml])
    assert res.exit_code == 0, res.output
    t = pq.read_table(tmp_path / "pq" / "images.parquet")
    assert t.num_rows == 8 and "owner" in t.column_names and "post_url" not in t.column_names

    # Never over what exists; never inside the dataset; a clear word when pyarrow is missing.
    res = runner.invoke(app, ["export", str(tmp_path / "hf"), "--settings", toml])
    assert res.exit_code == 2 and "not an empty folder" in res.output
    res = runner.invoke(app, ["export", str(root / "x"), "--settings", toml])
    assert res.exit_code == 2 and "inside the storage root" in res.output
    res = runner.invoke(app, ["export", str(tmp_path / "o"), "--format", "xml", "--settings", toml])
    assert res.exit_code == 2 and "unknown format" in res.output


def test_parquet_without_pyarrow_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "data"
    collect_posts(settings_for(root), "t", "selfie", people(2))
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    res = runner.invoke(app, ["export", str(tmp_path / "pq"), "--format", "parquet", "--settings", str(write_settings(root))])
    assert res.exit_code == 2 and "selfiescope[dask]" in res.output
    assert not (tmp_path / "pq").exists()  # nothing half-written


# --- property: files and manifest always agree -------------------------------------------------
POOL = [FakePost(f"Q{i}", OWNERS[i % 3], "c", jpeg(7000 + i)) for i in range(8)]
Op = st.one_of(
    st.tuples(st.just("import"), st.sets(st.integers(0, 7), min_size=1, max_size=5), st.sampled_from(["selfie", "portrait"])),
    st.tuples(st.just("forget_owner"), st.integers(0, 2)),
    st.tuples(st.just("forget_post"), st.integers(0, 7)),
    st.tuples(st.just("forget_image"), st.integers(0, 7)),
    st.tuples(st.just("forget_label"), st.sampled_from(["selfie", "portrait"])),
)


@hsettings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(Op, min_size=1, max_size=5))
def test_after_any_sequence_of_import_and_forget_files_and_manifest_agree(ops: list[tuple]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        settings = settings_for(root)
        forgotten: set[int] = set()
        for n, op in enumerate(ops):
            if op[0] == "import":
                collect_posts(settings, f"job{n}", op[2], [POOL[i] for i in sorted(op[1])])
                continue
            m = Manifest.at_root(root) if (root / "manifest.sqlite").exists() else None
            stored = {r["post_id"]: r for r in m.query("SELECT * FROM images")} if m else {}
            if m:
                m.close()
            if op[0] == "forget_owner":
                req, hit = ForgetRequest(owners=[OWNERS[op[1]]]), {i for i in range(8) if i % 3 == op[1]}
            elif op[0] == "forget_post":
                req, hit = ForgetRequest(posts=[POOL[op[1]].code]), {op[1]}
            elif op[0] == "forget_image":
                r = stored.get(POOL[op[1]].code)
                req, hit = ForgetRequest(images=[r["id"] if r else "0" * 16]), ({op[1]} if r else set())
            else:
                req = ForgetRequest(labels=[op[1]])
                hit = {i for i in range(8) if (r := stored.get(POOL[i].code)) and r["label"] == op[1]}
            if m:
                asyncio_run(forget(App.create(settings), req))
                forgotten |= hit
        if not (root / "manifest.sqlite").exists():
            return
        assert stored_files(root) == accepted_locations(root)  # no file without a row, no row without a file
        m = Manifest.at_root(root)
        present = {r["post_id"] for r in m.query("SELECT post_id FROM images")}
        assert not present & {POOL[i].code for i in forgotten}  # forgotten never comes back
        assert m.query("SELECT COUNT(*) FROM forget_pending")[0][0] == 0
        phashes = {r[0] for r in m.query("SELECT content_hash FROM dedup__phashes")}
        assert phashes <= {r[0] for r in m.query("SELECT content_hash FROM images WHERE decision='accepted'")}
        m.close()


def test_a_file_whose_location_cannot_be_removed_is_not_stored(tmp_path: Path) -> None:
    folder, root = tmp_path / "photos", tmp_path / "data"
    folder.mkdir()
    rng = np.random.default_rng(5)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        folder / "geo.tif", exif=gps_exif(), big_tiff=True)  # BigTIFF is not rewritten
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        folder / "place.tif", tiffinfo={700: PLACE_XMP}, big_tiff=True)  # nor is its XMP
    (folder / "ok.jpg").write_bytes(jpeg(42, exif=gps_exif()))
    stats = import_folder(settings_for(root), folder, "selfie")
    assert stats.accepted == 1 and stats.rejected_by_reason == {"location_metadata": 2}, stats.as_dict()
    m = Manifest.at_root(root)
    reason = m.query("SELECT reason FROM images WHERE reject_code='location_metadata'")[0][0]
    m.close()
    assert "strip_metadata" in reason
    assert import_folder(settings_for(tmp_path / "raw", strip_metadata="none"), folder, "selfie").accepted == 3


@hsettings(max_examples=60, deadline=None)
@given(fmt=st.sampled_from(["JPEG", "PNG", "WEBP", "TIFF"]), cuts=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)),
                                                                   max_size=4))
def test_stripping_damaged_containers_never_raises_nor_changes_pixels(fmt: str, cuts: list[tuple[int, int]]) -> None:
    """Random bytes overwritten in the metadata area (lengths, chunk sizes, markers)."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(
        buf, fmt, exif=gps_exif(), **({"lossless": True} if fmt == "WEBP" else {}))
    data = bytearray(buf.getvalue())
    for pos, value in cuts:
        data[pos % min(len(data), 400)] = value
    data = bytes(data)
    out = strip_metadata(data, fmt.lower(), "location")
    try:
        before = pixels(data)
    except Exception:
        return  # decode would have rejected it: never stored
    try:
        after = pixels(out)
    except Exception:
        after = None
    assert after is not None and np.array_equal(before, after), "stripping broke an image that decodes"


def test_a_real_phone_photo_loses_its_gps_and_keeps_its_id(faces_dir: Path, tmp_path: Path) -> None:
    src = faces_dir / "portrait" / "knn_examples__test__alex_lacamoire1.jpg"
    if not src.is_file() or not has_location(src.read_bytes()):
        pytest.skip(f"{src} (a real photo with GPS EXIF) is not available")
    import hashlib

    folder, root = tmp_path / "in", tmp_path / "data"
    folder.mkdir()
    (folder / src.name).write_bytes(src.read_bytes())
    settings = settings_for(root)
    pipeline_chain = ["decode", "dedup", "store"]  # its face is small: the face filter is not the point here
    from selfiescope.core.settings import ScrapePipeline
    from selfiescope.pipelines.collecting.collect import collect
    import asyncio

    pipeline = ScrapePipeline(kind="import", source="folder", paths=[folder], label="portrait", chain=pipeline_chain)
    stats = asyncio.run(collect(App.create(settings), "import", pipeline=pipeline))
    assert stats.accepted == 1, stats.as_dict()
    m = Manifest.at_root(root)
    r = dict(m.query("SELECT * FROM images")[0])
    m.close()
    stored = (root / r["location"]).read_bytes()
    assert r["id"] == hashlib.sha256(src.read_bytes()).hexdigest()[:16]
    assert not has_location(stored) and np.array_equal(pixels(stored), pixels(src.read_bytes()))
    assert Image.open(io.BytesIO(stored)).getexif().get(0x010F)  # the camera make is still there (a feature)


@pytest.mark.parametrize("given", ["some.user", "@Some.User", "  some.user ", "https://www.instagram.com/some.user/",
                                   "instagram.com/some.user", "http://instagram.com/@some.user?hl=en"])
def test_an_owner_is_matched_however_the_request_writes_it(given: str) -> None:
    from selfiescope.core.privacy import normalise_owner

    assert normalise_owner(given) == "some.user"


# --- every carrier of a place, in every format rewritten --------------------------------------
PLACE_XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
             b'<rdf:Description xmlns:exif="http://ns.adobe.com/exif/1.0/" xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/"'
             b' exif:GPSLatitude="48,51.48N" exif:GPSLongitude="2,17.67E" photoshop:City="Paris"/></rdf:RDF></x:xmpmeta>')
PLACE_TEXT = "taken at home, 12 Rue X, Paris (48.8582 N, 2.2945 E)"
PLACE_STRINGS = [b"GPS", b"48,51.48N", b"2,17.67E", b"48.8582", b"2.2945", b"Paris", b"PARIS", b"Rue X"]


def place_exif() -> bytes:
    ex = Image.Exif()
    ex[0x010F] = "PhoneMaker"
    ex[0x010E] = PLACE_TEXT  # ImageDescription
    ex.get_ifd(0x8769)[0x9286] = b"ASCII\x00\x00\x00" + PLACE_TEXT.encode()  # UserComment
    ex[GPS_IFD] = {1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)}
    return ex.tobytes()


def with_carrier(fmt: str, carrier: str, size: tuple[int, int] = (40, 50)) -> bytes:
    from PIL.PngImagePlugin import PngInfo

    im = Image.fromarray(np.random.default_rng(11).integers(0, 255, (*size, 3), dtype=np.uint8))
    kw: dict = {"lossless": True} if fmt == "WEBP" else {}
    if carrier == "exif":
        kw["exif"] = place_exif()
    elif carrier == "xmp":
        kw.update({"TIFF": {"tiffinfo": {700: PLACE_XMP}}, "PNG": {"pnginfo": PngInfo()}}.get(fmt, {"xmp": PLACE_XMP}))
        if fmt == "PNG":
            kw["pnginfo"].add_itxt("XML:com.adobe.xmp", PLACE_XMP.decode())
    elif carrier == "text":
        if fmt == "PNG":
            info = PngInfo()
            info.add_text("Location", "48.8582 N, 2.2945 E")
            info.add_itxt("Comment", PLACE_TEXT)
            info.add_text("Raw profile type xmp", PLACE_XMP.decode(), zip=True)
            kw["pnginfo"] = info
        elif fmt == "TIFF":
            kw["tiffinfo"] = {270: PLACE_TEXT, 33432: "Paris", 65000: PLACE_TEXT}  # description, copyright, private
        elif fmt == "JPEG":
            kw["comment"] = PLACE_TEXT
        else:
            pytest.skip("WebP has no text chunk of its own (its EXIF text is the exif carrier)")
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("carrier", ["exif", "xmp", "text"])
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "TIFF", "WEBP"])
def test_no_carrier_of_a_place_survives_in_any_format(fmt: str, carrier: str) -> None:
    data = with_carrier(fmt, carrier)
    assert any(s in data for s in PLACE_STRINGS) or has_location(data), "the carrier was not written"
    for mode in ("location", "all"):
        out = strip_metadata(data, fmt.lower(), mode)
        assert [s for s in PLACE_STRINGS if s in out] == [] and not has_location(out), mode
        assert np.array_equal(pixels(out), pixels(data)), mode
        with Image.open(io.BytesIO(out)) as im:
            assert im.format == fmt
            assert (im.getexif().get(0x010F) == "PhoneMaker") == (mode == "location" and carrier == "exif")
    assert strip_metadata(data, fmt.lower(), "none") == data


@pytest.mark.parametrize("name", ["geo.tif", "geo.png"])
def test_stored_tiff_and_png_keep_no_place(tmp_path: Path, name: str) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / name).write_bytes(with_carrier("TIFF" if name.endswith(".tif") else "PNG",
                                             "xmp" if name.endswith(".tif") else "text", (96, 96)))
    for mode in ("location", "all"):
        root = tmp_path / mode
        stats = import_folder(settings_for(root, strip_metadata=mode), folder, "selfie")
        assert stats.accepted == 1, stats.as_dict()
        stored = (root / next(iter(accepted_locations(root)))).read_bytes()
        assert [s for s in PLACE_STRINGS if s in stored] == []
        assert np.array_equal(pixels(stored), pixels((folder / name).read_bytes()))
