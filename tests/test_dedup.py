"""Dedup: transformed copies, label conflicts, same-run races, persistence, and the index itself."""

from __future__ import annotations

import asyncio

import io
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings as hsettings, strategies as st
from PIL import Image

from selfiescope.core.app import App
from selfiescope.core.manifest import Manifest
from selfiescope.core.settings import ScrapePipeline, settings_from_dict
from selfiescope.pipelines.collecting.collect import collect
from selfiescope.plugins.dedup import DedupIndex, HammingIndex, compute_phash


def jpeg(im: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def pattern(seed: int, size: int = 256) -> Image.Image:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((size, size), Image.BICUBIC)


def copies(im: Image.Image) -> dict[str, bytes]:
    w, h = im.size
    return {
        "resized": jpeg(im.resize((w * 6 // 10, h * 6 // 10), Image.LANCZOS)),
        "reencoded": jpeg(im, 35),
        "cropped": jpeg(im.crop((w * 5 // 100, h * 5 // 100, w - w * 5 // 100, h - h * 5 // 100))),
    }


def settings_for(root: Path, **plugins):
    return settings_from_dict({"storage": {"root": str(root)}, "plugins": plugins})


async def run_folder(root: Path, folder: Path, label: str, chain=("decode", "dedup", "store"), workers: int = 4, **plugins):
    settings = settings_for(root, **plugins)
    settings.engine.workers = workers
    pipeline = ScrapePipeline(kind="import", source="folder", paths=[folder], label=label, chain=list(chain))
    return await collect(App.create(settings), "import", pipeline=pipeline)


def rows(root: Path, sql: str) -> list:
    m = Manifest.at_root(root)
    try:
        return m.query(sql)
    finally:
        m.close()


@pytest.mark.faces
async def test_transformed_copies_of_real_photos_are_dropped_different_people_kept(faces_dir: Path, tmp_path: Path) -> None:
    originals = sorted((faces_dir / "selfie").glob("*.jpg"))[:6]
    folder = tmp_path / "in"
    folder.mkdir()
    for i, path in enumerate(originals):
        (folder / f"{i}-original.jpg").write_bytes(path.read_bytes())
        for kind, data in copies(Image.open(path)).items():
            (folder / f"{i}-{kind}.jpg").write_bytes(data)
    stats = await run_folder(tmp_path / "data", folder, "selfie")
    assert stats.accepted == len(originals), stats.as_dict()
    assert set(stats.rejected_by_reason) <= {"near_duplicate", "duplicate"}
    accepted = rows(tmp_path / "data", "SELECT origin_path FROM images WHERE decision='accepted'")
    assert sorted(Path(r[0]).name.split("-")[0] for r in accepted) == [str(i) for i in range(len(originals))]


async def test_synthetic_copies_and_exact_copies(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for seed in range(4):
        im = pattern(seed)
        (folder / f"{seed}-a.jpg").write_bytes(jpeg(im))
        (folder / f"{seed}-b.jpg").write_bytes(jpeg(im))  # same bytes
        for kind, data in copies(im).items():
            (folder / f"{seed}-{kind}.jpg").write_bytes(data)
    stats = await run_folder(tmp_path / "data", folder, "selfie", workers=8)
    # which copy of a group wins depends on the order the 8 workers reach dedup; one per group does
    assert stats.accepted == 4 and stats.rejected == 16
    assert set(stats.rejected_by_reason) <= {"duplicate", "near_duplicate"}
    accepted = rows(tmp_path / "data", "SELECT origin_path FROM images WHERE decision='accepted'")
    assert sorted(Path(r[0]).name.split("-")[0] for r in accepted) == ["0", "1", "2", "3"]
    assert len(list((tmp_path / "data" / "selfie").iterdir())) == 4


async def test_same_photo_under_two_labels_is_a_recorded_conflict(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x.jpg").write_bytes(jpeg(pattern(1)))
    (b / "x-small.jpg").write_bytes(copies(pattern(1))["resized"])
    (b / "other.jpg").write_bytes(jpeg(pattern(2)))
    root = tmp_path / "data"
    first = await run_folder(root, a, "selfie")
    second = await run_folder(root, b, "portrait")  # a new run: the index comes from SQLite
    assert first.accepted == 1
    assert second.accepted == 1 and second.rejected_by_reason == {"label_conflict": 1}
    conflicts = rows(root, "SELECT label, other_label, distance FROM dedup__conflicts")
    assert [(r[0], r[1]) for r in conflicts] == [("portrait", "selfie")]
    assert len(list((root / "portrait").iterdir())) == 1  # only the other photo landed in portrait
    again = await run_folder(root, a, "selfie")  # rerun: the stored file is skipped by the source
    assert again.seen == 0 and again.accepted == 0
    b_again = await run_folder(root, b, "portrait")  # the conflicting copy is met again
    assert b_again.rejected_by_reason == {"label_conflict": 1}


async def test_a_reservation_is_released_when_a_later_step_rejects(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    blank = Image.new("RGB", (300, 300), (120, 120, 120))
    (folder / "1.png").write_bytes(jpeg(blank, 95))
    (folder / "2.jpg").write_bytes(jpeg(blank, 60))
    stats = await run_folder(tmp_path / "data", folder, "selfie", chain=("decode", "dedup", "face_area", "store"), workers=1)
    # both reach face_area: the first one's reservation was released when it had no face
    assert stats.rejected_by_reason == {"no_face": 2}
    assert rows(tmp_path / "data", "SELECT COUNT(*) FROM dedup__phashes")[0][0] == 0


def test_concurrent_copies_only_one_passes(tmp_path: Path) -> None:
    manifest = Manifest(tmp_path / "m.sqlite")
    index = DedupIndex(manifest, 10)
    results: list[object] = []
    barrier = threading.Barrier(8)

    def attempt(i: int) -> None:
        barrier.wait()
        results.append(index.check_and_reserve(f"{i:064x}", 0x0F0F_F0F0_1234_5678 ^ (1 << i), "selfie"))

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r is None for r in results) == 1
    assert all(r[0] == "near" and r[1] <= 2 for r in results if r is not None)
    manifest.close()


def test_committed_hashes_persist_and_reload(tmp_path: Path) -> None:
    manifest = Manifest(tmp_path / "m.sqlite")
    index = DedupIndex(manifest, 10)
    assert index.check_and_reserve("a" * 64, 0xFFFF_0000_FFFF_0000, "selfie") is None
    index.commit("a" * 64)
    manifest.close()
    manifest = Manifest(tmp_path / "m.sqlite")
    reloaded = DedupIndex(manifest, 10)
    kind, distance, match = reloaded.check_and_reserve("b" * 64, 0xFFFF_0000_FFFF_0007, "portrait")
    assert (kind, distance, match.content_hash, match.label) == ("near", 3, "a" * 64, "selfie")
    assert reloaded.check_and_reserve("a" * 64, 0, "selfie")[0] == "exact"
    manifest.close()


@pytest.mark.parametrize("max_distance", [0, 3, 8, 14, 20])
def test_index_matches_brute_force(max_distance: int) -> None:
    rng = np.random.default_rng(max_distance)
    values = [int(v) for v in rng.integers(0, 2**63, size=6000)]
    index = HammingIndex(max_distance)
    index.add_many(np.array(values[:3000], dtype=np.uint64), np.arange(3000))
    for i, v in enumerate(values[3000:], start=3000):
        index.add(v, i)  # crosses a rebuild
    index.remove(5)
    stored = np.array(values, dtype=np.uint64)
    alive = np.ones(len(values), bool)
    alive[5] = False
    for q in range(300):
        base = values[int(rng.integers(len(values)))]
        flips = rng.choice(64, size=int(rng.integers(0, max_distance + 3)), replace=False)
        query = base ^ sum(1 << int(b) for b in flips) if q % 3 else int(rng.integers(0, 2**63))
        dist = np.bitwise_count(stored ^ np.uint64(query))
        dist[~alive] = 99
        best = int(dist.min())
        found = index.nearest(query)
        if best <= max_distance:
            assert found is not None and found[0] == best
        else:
            assert found is None


def test_phash_is_stable_under_resize() -> None:
    im = pattern(3, 512)
    a = int(compute_phash(np.asarray(im)), 16)
    b = int(compute_phash(np.asarray(im.resize((200, 200)))), 16)
    assert (a ^ b).bit_count() <= 4
    c = int(compute_phash(np.asarray(pattern(4, 512))), 16)
    assert (a ^ c).bit_count() > 10


async def test_a_hash_computed_elsewhere_is_used_without_pixels(tmp_path: Path) -> None:
    """On Dask the workers hash the pixels and the client runs dedup on the record alone."""
    from types import SimpleNamespace

    from selfiescope.core.events import ImageEvent, Origin, Reject
    from selfiescope.plugins.dedup import DedupOptions, DedupStep

    manifest = Manifest(tmp_path / "m.sqlite")
    run = SimpleNamespace(manifest=manifest, executor=None, services={"dedup.index": DedupIndex(manifest, 10)})
    step = DedupStep(DedupOptions(), run)  # type: ignore[arg-type]
    step.index = run.services["dedup.index"]
    first = ImageEvent(origin=Origin("folder"), label="selfie", data=b"a")
    first.phash = "ffff0000ffff0000"
    await step.process(first)
    step.index.commit(first.content_hash)  # accepted and stored
    second = ImageEvent(origin=Origin("folder"), label="selfie", data=b"b")
    second.phash = "ffff0000ffff0001"
    with pytest.raises(Reject) as info:
        await step.process(second)
    assert info.value.code == "near_duplicate" and "distance 1" in info.value.reason
    manifest.close()


async def test_a_copy_met_while_its_twin_is_reserved_is_judged_by_the_twins_fate(tmp_path: Path) -> None:
    """A match against a reservation of this run waits for it: a twin that a later step turns
    away frees the photo (the copy is reserved instead), a twin that is kept makes it a duplicate."""
    from types import SimpleNamespace

    from selfiescope.core.events import ImageEvent, Origin, Reject
    from selfiescope.plugins.dedup import DedupOptions, DedupStep

    manifest = Manifest(tmp_path / "m.sqlite")
    run = SimpleNamespace(manifest=manifest, executor=None, services={"dedup.index": DedupIndex(manifest, 10)})
    step = DedupStep(DedupOptions(), run)  # type: ignore[arg-type]
    step.index = run.services["dedup.index"]

    def event(data: bytes, phash: str) -> ImageEvent:
        made = ImageEvent(origin=Origin("folder"), label="selfie", data=data)
        made.phash = phash
        return made

    twin, copy = event(b"a", "ffff0000ffff0000"), event(b"b", "ffff0000ffff0001")
    await step.process(twin)
    waiting = asyncio.ensure_future(step.process(copy))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # it waits for the twin's fate
    step.index.release(twin.content_hash)  # the twin is rejected later in the chain
    await asyncio.wait_for(waiting, 30)
    assert copy.notes.get("dedup_reserved") is True  # judged again: now it holds the photo's slot

    third = event(b"c", "ffff0000ffff0003")
    waiting = asyncio.ensure_future(step.process(third))
    await asyncio.sleep(0.05)
    step.index.commit(copy.content_hash)  # the copy is kept
    with pytest.raises(Reject) as info:
        await asyncio.wait_for(waiting, 30)
    assert info.value.code == "near_duplicate"

    late = DedupStep(DedupOptions(settle_wait_s=0.2), run)  # type: ignore[arg-type]
    late.index = step.index
    fourth, fifth = event(b"d", "0000ffff0000ffff"), event(b"e", "0000ffff0000fffe")
    await late.process(fourth)
    with pytest.raises(Reject):  # never settled: judged against it as it stands, after the deadline
        await asyncio.wait_for(late.process(fifth), 30)
    manifest.close()


def mirrored(im: Image.Image) -> Image.Image:
    return im.transpose(Image.FLIP_LEFT_RIGHT)


async def test_mirrored_copies_are_caught_distinct_photos_kept(tmp_path: Path) -> None:
    """Front cameras mirror selfies: a flipped (and re-encoded, resized) copy is a near duplicate."""
    stored, new = tmp_path / "a", tmp_path / "b"
    stored.mkdir()
    new.mkdir()
    for seed in range(6):
        im = pattern(seed)
        # the flip alone defeats a plain pHash: the test would pass vacuously otherwise
        far = (int(compute_phash(np.asarray(im)), 16) ^ int(compute_phash(np.asarray(mirrored(im))), 16)).bit_count()
        assert far > 10, far
        (stored / f"{seed}.jpg").write_bytes(jpeg(im))
        (new / f"{seed}-mirror.jpg").write_bytes(jpeg(mirrored(im), 70))
        (new / f"{seed}-mirror-small.jpg").write_bytes(jpeg(mirrored(im).resize((150, 150), Image.LANCZOS)))
    for seed in range(100, 103):
        (new / f"{seed}-new.jpg").write_bytes(jpeg(pattern(seed)))
    root = tmp_path / "data"
    assert (await run_folder(root, stored, "selfie")).accepted == 6
    second = await run_folder(root, new, "selfie")  # a new run: stored hashes come from SQLite
    assert second.accepted == 3 and second.rejected_by_reason == {"near_duplicate": 12}, second.as_dict()
    accepted = rows(root, "SELECT origin_path FROM images WHERE decision='accepted'")
    assert sorted(Path(r[0]).name for r in accepted if "new" in r[0]) == ["100-new.jpg", "101-new.jpg", "102-new.jpg"]


@pytest.mark.faces
async def test_mirrored_real_selfies_are_caught(faces_dir: Path, tmp_path: Path) -> None:
    originals = sorted((faces_dir / "selfie").glob("*.jpg"))[:8]
    folder = tmp_path / "in"
    folder.mkdir()
    for i, path in enumerate(originals):
        (folder / f"{i}-a.jpg").write_bytes(path.read_bytes())
        (folder / f"{i}-b-mirror.jpg").write_bytes(jpeg(mirrored(Image.open(path)), 80))
    stats = await run_folder(tmp_path / "data", folder, "selfie", workers=1)
    assert stats.accepted == len(originals) and stats.rejected_by_reason == {"near_duplicate": len(originals)}


@hsettings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), quality=st.integers(40, 95), scale=st.floats(0.4, 1.0))
def test_any_mirrored_copy_is_found_and_an_unrelated_photo_is_not(tmp_path_factory, seed, quality, scale):
    from selfiescope.plugins.dedup import compute_mirror_phashes, compute_phashes

    def keys(im: Image.Image) -> tuple[int, int, tuple[int, int]]:
        arr = np.asarray(im.convert("RGB"))
        whole, centre = (int(h, 16) for h in compute_phashes(arr))
        return whole, centre, tuple(int(h, 16) for h in compute_mirror_phashes(arr))

    manifest = Manifest(tmp_path_factory.mktemp("prop") / "m.sqlite")
    index = DedupIndex(manifest, 8)
    original = pattern(seed)
    whole, centre, mirror = keys(original)
    assert index.check_and_reserve("a", whole, "selfie", centre, mirror=mirror) is None
    copy = Image.open(io.BytesIO(jpeg(mirrored(original).resize((int(256 * scale),) * 2, Image.LANCZOS), quality)))
    whole, centre, mirror = keys(copy)
    found = index.check_and_reserve("b", whole, "selfie", centre, mirror=mirror)
    assert found is not None and found[0] == "near" and found[2].content_hash == "a"
    whole, centre, mirror = keys(pattern(seed + 20_000))
    assert index.check_and_reserve("c", whole, "selfie", centre, mirror=mirror) is None
    manifest.close()
