"""Forgotten photos stay forgotten: re-encoded, resized, mirrored, converted or cropped copies
of a forgotten photo are refused by imports and scrapes (whatever dedup would call the same
photo), a different photo is not, and the tombstone table says nothing about the photo."""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from PIL import Image, ImageOps
from privacy_helpers import FakePost, accepted_locations, collect_posts, import_folder, settings_for, stored_files
from test_forget import forget_cli

from selfiescope.core.events import ImageEvent, Origin
from selfiescope.core.likeness import ForgottenLikeness, KIND, event_hashes, seal, unseal
from selfiescope.core.manifest import Manifest
from selfiescope.core.privacy import Keyring

PHOTO = "caltech_image_0001.jpg"
OTHER = "caltech_image_0011.jpg"


def _encode(im: Image.Image, fmt: str = "JPEG", quality: int = 90) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _crop(im: Image.Image, share: float) -> Image.Image:
    dx, dy = int(im.width * share / 2), int(im.height * share / 2)
    return im.crop((dx, dy, im.width - dx, im.height - dy))


VARIANTS: dict[str, Callable[[Image.Image], tuple[str, bytes]]] = {
    "quality70": lambda im: ("jpg", _encode(im, quality=70)),
    "resize80": lambda im: ("jpg", _encode(im.resize((int(im.width * 0.8), int(im.height * 0.8))))),
    "mirror": lambda im: ("jpg", _encode(ImageOps.mirror(im))),
    "png": lambda im: ("png", _encode(im, "PNG")),
    "crop4": lambda im: ("jpg", _encode(_crop(im, 0.04))),
}


def _photo(faces_dir: Path, name: str) -> Path:
    path = faces_dir / "portrait" / name
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


def _dataset(tmp_path: Path, faces_dir: Path, names: list[str]) -> tuple[Path, Path]:
    root, originals = tmp_path / "data", tmp_path / "originals"
    originals.mkdir()
    for name in names:
        (originals / name).write_bytes(_photo(faces_dir, name).read_bytes())
    stats = import_folder(settings_for(root), originals, "portrait")
    assert stats.accepted == len(names), stats.as_dict()
    return root, originals


def test_copies_of_a_forgotten_photo_are_not_imported_again(tmp_path: Path, faces_dir: Path) -> None:
    root, originals = _dataset(tmp_path, faces_dir, [PHOTO, "biden.jpg"])
    result = forget_cli(root, "--image", str(originals / PHOTO), "--yes")
    assert result.exit_code == 0, result.output
    copies = tmp_path / "copies"
    copies.mkdir()
    with Image.open(originals / PHOTO) as im:
        for name, make in VARIANTS.items():
            ext, data = make(im)
            (copies / f"{name}.{ext}").write_bytes(data)
    stats = import_folder(settings_for(root), copies, "portrait")
    assert stats.accepted == 0 and stats.rejected_by_reason == {"forgotten": len(VARIANTS)}, stats.as_dict()
    assert len(stored_files(root)) == 1 and stored_files(root) == accepted_locations(root)
    # A forgotten image leaves no new trace: none of the copies got a row.
    m = Manifest.at_root(root)
    assert m.query("SELECT COUNT(*) FROM images")[0][0] == 1
    m.close()
    # A different photo is still welcome.
    other = tmp_path / "other"
    other.mkdir()
    (other / OTHER).write_bytes(_photo(faces_dir, OTHER).read_bytes())
    assert import_folder(settings_for(root), other, "portrait").accepted == 1


def test_a_copy_reposted_by_someone_else_is_not_scraped(tmp_path: Path, faces_dir: Path) -> None:
    root = tmp_path / "data"
    settings = settings_for(root)
    with Image.open(_photo(faces_dir, PHOTO)) as im:
        original, repost = _encode(im), _encode(ImageOps.mirror(im.resize((im.width * 3 // 4, im.height * 3 // 4))), quality=75)
    other = _photo(faces_dir, OTHER).read_bytes()
    assert collect_posts(settings, "t", "selfie", [FakePost("A1", "alice", "", original)]).accepted == 1
    assert forget_cli(root, "--post", "A1", "--yes").exit_code == 0
    stats = collect_posts(settings, "t2", "selfie", [FakePost("B1", "bob", "", repost), FakePost("B2", "bob", "", other)])
    assert stats.accepted == 1 and stats.rejected_by_reason == {"forgotten": 1}, stats.as_dict()


def test_tombstones_hold_sealed_hashes_only(tmp_path: Path, faces_dir: Path) -> None:
    root, originals = _dataset(tmp_path, faces_dir, [PHOTO, OTHER])
    m = Manifest.at_root(root)
    raw = {tuple(v & 0xFFFFFFFFFFFFFFFF for v in r) for r in m.query("SELECT phash, centre FROM dedup__phashes")}
    m.close()
    assert forget_cli(root, "--label", "portrait", "--yes").exit_code == 0
    m = Manifest.at_root(root)
    try:
        keys = [r[0] for r in m.query("SELECT key FROM tombstones WHERE kind=?", (KIND,))]
        assert len(keys) == 2
        sealed_bytes = b"".join(bytes.fromhex(k.removeprefix("phash:")) for k in keys)
        for whole, centre in raw:
            for value in (whole, centre):
                assert struct.pack(">Q", value) not in sealed_bytes and f"{value:016x}" not in "".join(keys)
        # The dataset key opens them (that is how imports match), another key does not.
        assert {unseal(m.keyring, k) for k in keys} == raw
        stranger = Keyring(tmp_path / "elsewhere")
        assert {unseal(stranger, k) for k in keys} == {None}  # the tag tells another key
    finally:
        m.close()
    # The same pair sealed twice looks unrelated (a fresh nonce each time).
    ring = Keyring(root)
    assert seal(ring, 1, 2) != seal(ring, 1, 2)


def test_dask_workers_hashes_are_used_when_present() -> None:
    """The Dask client's events carry the workers' hashes and no bytes: the gate uses those."""
    event = ImageEvent(origin=Origin("folder"), label="x", data=b"", content_hash="0" * 64)
    assert event_hashes(event) == []
    event.phash = "00000000000000ff"
    event.phash_centre, event.phash_mirror, event.phash_mirror_centre = "0" * 16, "f" * 16, "0" * 15 + "1"
    assert event_hashes(event) == [0xFF, 0, 2**64 - 1, 1]
    likeness = ForgottenLikeness([(0xFFFF_0000_0000_0000, 0xFFFF_FFFF_0000_0000)], max_distance=8)
    assert not likeness.matches([0, 0xFF])
    assert likeness.matches([0x0FFF_0000_0000_0000])


# --- the property: tombstones catch exactly what dedup catches -------------------------------
TRANSFORMS = st.fixed_dictionaries({
    "photo": st.sampled_from([PHOTO, "caltech_image_0011.jpg", "biden.jpg"]),
    "quality": st.integers(40, 95),
    "scale": st.floats(0.5, 1.0),
    "mirror": st.booleans(),
    "png": st.booleans(),
    "crop": st.floats(0.0, 0.05),
})


def _transformed(path: Path, t: dict) -> tuple[str, bytes]:
    with Image.open(path) as im:
        im = _crop(ImageOps.exif_transpose(im), t["crop"])
        if t["scale"] < 1.0:
            im = im.resize((max(64, int(im.width * t["scale"])), max(64, int(im.height * t["scale"]))))
        if t["mirror"]:
            im = ImageOps.mirror(im)
        return ("png", _encode(im, "PNG")) if t["png"] else ("jpg", _encode(im, quality=t["quality"]))


@pytest.mark.timeout(900)
@hsettings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(t=TRANSFORMS)
def test_after_forget_no_copy_dedup_would_match_is_stored(tmp_path_factory, faces_dir: Path, t: dict) -> None:
    base = tmp_path_factory.mktemp("likeness")
    original = _photo(faces_dir, t["photo"])
    ext, data = _transformed(original, t)
    root, originals = _dataset(base, faces_dir, [t["photo"]])
    # What dedup says of the copy while the original is stored: the oracle.
    copies = base / "copies"
    copies.mkdir()
    (copies / f"copy.{ext}").write_bytes(data)
    assert import_folder(settings_for(base / "oracle"), originals, "portrait").accepted == 1
    oracle = import_folder(settings_for(base / "oracle"), copies, "portrait")
    duplicate = bool({"duplicate", "near_duplicate"} & set(oracle.rejected_by_reason))
    assert forget_cli(root, "--image", str(originals / t["photo"]), "--yes").exit_code == 0
    stats = import_folder(settings_for(root), copies, "portrait")
    if duplicate:
        assert stats.accepted == 0 and stats.rejected_by_reason == {"forgotten": 1}, (t, stats.as_dict())
    assert stored_files(root) == accepted_locations(root)
    # Any other photo of the set (one dedup keeps apart) is still imported.
    others = base / "others"
    others.mkdir()
    name = OTHER if t["photo"] != OTHER else PHOTO
    (others / name).write_bytes(_photo(faces_dir, name).read_bytes())
    assert import_folder(settings_for(root), others, "portrait").accepted == 1


def test_forgotten_hashes_are_matched_with_the_mirror_and_centre() -> None:
    """A unit check of the gate's rule against a random picture: the mirror of a forgotten
    picture matches, an unrelated one does not."""
    rng = np.random.default_rng(7)
    picture = (rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    picture = np.array(Image.fromarray(picture).resize((256, 256), Image.BICUBIC))
    from selfiescope.core.likeness import compute_mirror_phashes, compute_phashes

    whole, centre = (int(h, 16) for h in compute_phashes(picture))
    likeness = ForgottenLikeness([(whole, centre)], max_distance=8)
    mirrored = np.ascontiguousarray(picture[:, ::-1])
    assert likeness.matches([int(h, 16) for h in (*compute_phashes(mirrored), *compute_mirror_phashes(mirrored))])
    other = np.array(Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).resize((256, 256), Image.BICUBIC))
    assert not likeness.matches([int(h, 16) for h in (*compute_phashes(other), *compute_mirror_phashes(other))])


def test_copies_dedup_turned_away_go_with_the_photo(tmp_path: Path, faces_dir: Path) -> None:
    """A resized copy rejected as a near-duplicate of the photo keeps a row (with its pHash):
    forgetting the photo removes it too, so the manifest keeps nothing of the photo."""
    root, originals = _dataset(tmp_path, faces_dir, [PHOTO, OTHER])
    copies = tmp_path / "copies"
    copies.mkdir()
    with Image.open(originals / PHOTO) as im:
        (copies / "small.jpg").write_bytes(VARIANTS["resize80"](im)[1])
        (copies / "mirror.jpg").write_bytes(VARIANTS["mirror"](im)[1])
    stats = import_folder(settings_for(root), copies, "selfie")
    assert stats.rejected_by_reason == {"label_conflict": 2}, stats.as_dict()
    result = forget_cli(root, "--image", str(originals / PHOTO), "--yes", "--json")
    assert result.exit_code == 0, result.output
    m = Manifest.at_root(root)
    try:
        assert m.query("SELECT COUNT(*) FROM images")[0][0] == 1  # OTHER only
        assert m.query("SELECT COUNT(*) FROM rejections")[0][0] == 0
        assert m.query("SELECT COUNT(*) FROM dedup__conflicts")[0][0] == 0
    finally:
        m.close()


def test_core_reads_no_plugins_notes() -> None:
    """Invariant: what core needs of an image is a public ImageEvent field or its own column;
    core never reads a key of ``notes`` (a step's private annotations) except those core writes."""
    import ast
    from pathlib import Path as _Path

    import selfiescope.core as core

    owned = {"oversize"}  # written by core itself (core/work.py)
    reads = []
    for path in sorted(_Path(core.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            target = key = None
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
                target, key = node.func.value, node.args[0] if node.args else None
            elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
                target, key = node.value, node.slice
            named = isinstance(target, ast.Attribute) and target.attr == "notes" or (
                isinstance(target, ast.Name) and target.id == "notes")
            if named and not (isinstance(key, ast.Constant) and key.value in owned):
                reads.append(f"{path.name}:{node.lineno}")
    assert reads == []


def test_an_older_manifests_centre_hash_note_becomes_the_column(tmp_path: Path) -> None:
    import sqlite3

    m = Manifest.at_root(tmp_path)
    m.execute("INSERT INTO images(content_hash, decision, phash, notes) VALUES ('a', 'accepted', ?, ?)",
              ("00000000000000ff", '{"phash_centre": "000000000000ff00"}'))
    m.close()
    db = sqlite3.connect(tmp_path / "manifest.sqlite")
    db.execute("ALTER TABLE images DROP COLUMN phash_centre")  # as the version before wrote it
    db.commit(), db.close()
    m = Manifest.at_root(tmp_path)
    assert m.query("SELECT phash_centre FROM images")[0][0] == "000000000000ff00"
    m.close()
