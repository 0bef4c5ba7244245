"""Every grouping link is computed from what the images are, and only the links that must go are left out.

- Near copies are found from the stored images' own hashes (whole, centre, mirror), so a
  chain without dedup (which records no pHash) still groups a mirrored, cropped, recoloured
  or resized copy with its original.
- When grouping by everything leaves a label fewer than 2 groups, the fewest links are left
  out (the loosest first), and every text that names the links says the same thing.
"""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings as hsettings, strategies as st
from PIL import Image, ImageEnhance, ImageOps
from train_helpers import build_dataset, train_settings

from selfiescope.core.app import App
from selfiescope.pipelines.model.dataset import build_feature_table
from selfiescope.pipelines.model.leak_groups import (
    _splittable, describe, fallback_warning, leak_groups, links_text,
)
from selfiescope.pipelines.model.leak_inputs import LIKENESS, image_hashes, row_hashes
from selfiescope.pipelines.model.train import train

DIMS = 128


def far_hashes(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"{int(v):016x}" for v in rng.integers(0, 2**63, n, dtype=np.uint64)]


def person_descriptors(person: np.ndarray, seed: int = 0) -> np.ndarray:
    """Descriptors per row: one unit-vector centre per person (~1.4 apart), photos within 0.2 of it."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(int(person.max()) + 1, DIMS))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    noise = rng.normal(size=(len(person), DIMS))
    noise *= 0.2 / np.linalg.norm(noise, axis=1, keepdims=True)
    return centres[person] + noise


def one_person_selfies(n_selfies: int = 8, n_portraits: int = 12):
    """Selfies all of one person (a label that is one person-group); portraits of others.
    Near copies pair up photos within each label (a burst): harmless to splitting."""
    n = n_selfies + n_portraits
    y = np.array([1] * n_selfies + [0] * n_portraits)
    person = np.array([0] * n_selfies + list(range(1, n_portraits + 1)))
    hashes = far_hashes(n, 5)
    for i in range(0, n - 1, 2):  # rows 2k and 2k+1: a copy 3 bits apart
        hashes[i + 1] = f"{int(hashes[i], 16) ^ 0b111:016x}"
    return y, person_descriptors(person), hashes


def test_only_the_link_that_must_go_is_left_out():
    """The selfies are one person: dropping person alone leaves them 4 near-copy groups, so
    near copies, which the old order dropped first, stay grouped."""
    y, descriptors, hashes = one_person_selfies()
    n = len(y)
    grouping = leak_groups(descriptors=descriptors, posts=[None] * n, owners=[None] * n, phashes=hashes,
                           phash_distance=16, labels=y)
    assert grouping.summary["not_grouped_by"] == ["person"]
    assert grouping.summary["by"] == ["near_duplicate"]
    assert grouping.summary["groups"] == n // 2  # the pairs of copies stay together
    for i in range(0, n - 1, 2):
        assert grouping.ids[i] == grouping.ids[i + 1]


links = st.sampled_from(["person", "post", "owner", "near_duplicate"])


@hsettings(max_examples=30, deadline=None)
@given(data=st.data())
def test_links_left_out_are_a_fewest_and_loosest_set(data):
    """Invariant, on random datasets: grouped CV is possible whenever any subset of links
    allows it; no link left out could be put back while keeping 2 groups per label; and no
    smaller set of links left out would do."""
    n = data.draw(st.integers(6, 24))
    y = np.array(data.draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))
    if min((y == 0).sum(), (y == 1).sum()) < 2:
        y[:2], y[2:4] = 0, 1
    person = np.array(data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)))
    posts = data.draw(st.lists(st.one_of(st.none(), st.sampled_from("ab")), min_size=n, max_size=n))
    owners = data.draw(st.lists(st.one_of(st.none(), st.sampled_from("uv")), min_size=n, max_size=n))
    hashes = far_hashes(n, 9)
    base = int(hashes[0], 16)
    for i in data.draw(st.lists(st.integers(0, n - 1), max_size=n)):
        hashes[i] = f"{base ^ (1 << (i % 60)):016x}"  # near copies of row 0
    kwargs = dict(descriptors=person_descriptors(person), posts=posts, owners=owners, phashes=hashes,
                  phash_distance=16)
    full = leak_groups(**kwargs).summary
    grouping = leak_groups(**kwargs, labels=y)
    kept, dropped = grouping.summary["by"], grouping.summary["not_grouped_by"]
    assert set(kept) | set(dropped) == set(full["by"]) and not set(kept) & set(dropped)

    def splittable_with(subset) -> bool:
        ids = leak_groups(**{**kwargs, **_only(subset, n, kwargs)}).ids
        return _splittable(ids, y)

    candidates = [c for size in range(len(full["by"]) + 1) for c in itertools.combinations(full["by"], size)]
    possible = [c for c in candidates if splittable_with(c)]
    assert _splittable(grouping.ids, y) == bool(possible)
    if possible:
        assert len(kept) == max(len(c) for c in possible)
        for link in dropped:  # none of them could come back
            assert not splittable_with([*kept, link])
    assert links_text(grouping.summary) in fallback_warning(grouping.summary) if dropped else True


def _only(subset, n: int, kwargs: dict) -> dict:
    """Arguments that switch off every link not in ``subset`` (no input for it)."""
    return {"descriptors": kwargs["descriptors"] if "person" in subset else None,
            "posts": kwargs["posts"] if "post" in subset else [None] * n,
            "owners": kwargs["owners"] if "owner" in subset else [None] * n,
            "phashes": kwargs["phashes"] if "near_duplicate" in subset else [None] * n}


def test_a_link_without_input_is_not_claimed():
    """No post ids, no owners (a folder import), no descriptors: only near copies are named,
    and the texts say the others could not be computed."""
    n = 6
    grouping = leak_groups(descriptors=None, posts=[None] * n, owners=[None] * n, phashes=far_hashes(n, 1),
                           phash_distance=16)
    s = grouping.summary
    assert s["by"] == ["near_duplicate"] and links_text(s) == "near copy"
    text = describe(s)
    assert text.startswith("near copy (") and "6 of 6 images had a hash" in text
    assert "not grouped by person" in text and "not grouped by post, owner: no image had one" in text
    partial = np.vstack([person_descriptors(np.arange(4)), np.full((2, DIMS), np.nan)])
    s2 = leak_groups(descriptors=partial, posts=[None] * n, owners=[None] * n, phashes=far_hashes(n, 1),
                     phash_distance=16).summary
    assert s2["by"] == ["person", "near_duplicate"] and "4 of 6 images had one" in describe(s2)


# --- the near-copy link computed from the stored images -------------------------------------

def edited_copies(originals: list[Path], folder: Path) -> list[tuple[Path, Path]]:
    """Mirror, crop, recolour and resize copies of ``originals``: (copy, original) pairs."""
    folder.mkdir(parents=True, exist_ok=True)
    edits = [ImageOps.mirror,
             lambda im: im.crop((int(im.width * .06), int(im.height * .06), int(im.width * .94), int(im.height * .94))),
             lambda im: ImageEnhance.Brightness(ImageEnhance.Color(im).enhance(1.6)).enhance(1.15),
             lambda im: im.resize((int(im.width * .7), int(im.height * .7)))]
    pairs = []
    for i, (original, edit) in enumerate(zip(originals, edits)):
        copy = folder / f"copy{i}_{original.name}"
        edit(Image.open(original).convert("RGB")).save(copy, "JPEG", quality=90)
        pairs.append((copy, original))
    return pairs


@pytest.fixture(scope="module")
def undeduped(tmp_path_factory) -> tuple[Path, list[tuple[Path, Path]]]:
    """Real portraits, and selfies that include edited copies of four of them, stored by a
    chain without dedup: the manifest has no pHash for any of them. (Renderings of one face
    are all within the grouping distance of one another: real photos are needed here.)"""
    faces = Path(__file__).resolve().parents[2] / "shared" / "faces"
    if not faces.is_dir():
        pytest.skip(f"real face photos not available: {faces}")
    root = tmp_path_factory.mktemp("undeduped")
    portraits = sorted(faces.glob("portrait/caltech_*.jpg"))[::4][:16]
    selfies = sorted(faces.glob("selfie/*.jpg"))[:20]
    pairs = edited_copies(portraits[:4], root / "in" / "copies")
    accepted = build_dataset(root, {"portrait": portraits, "selfie": selfies + [c for c, _ in pairs]})
    assert min(accepted.values()) >= 8, accepted
    with sqlite3.connect(root / "manifest.sqlite") as db:
        db.execute("UPDATE images SET phash = NULL, phash_centre = NULL")  # what decode,face_area,store records
    return root, pairs


def test_copies_stored_without_dedup_share_their_originals_group(undeduped, tmp_path):
    root, pairs = undeduped
    settings = train_settings(root, tmp_path / "model", ["geometry"])
    app = App.create(settings)
    table = build_feature_table(app, settings.pipeline("t"))
    group_of = {r.content_hash: g for r, g in zip(table.rows, table.groups)}
    by_origin = _origins(root)
    for copy, original in pairs:
        assert copy.name in by_origin and original.name in by_origin, "every copy and original must be in the dataset"
        assert group_of[by_origin[copy.name]] == group_of[by_origin[original.name]], copy.name
    near = table.grouping["near_duplicate"]
    assert near["rows_covered"] == len(table.rows) and "near_duplicate" in table.grouping["by"]
    # a second build reads the hashes from the cache and groups the same way
    again = build_feature_table(app, settings.pipeline("t"))
    assert np.array_equal(again.groups, table.groups)
    # a cache from before the hashes were kept (features cached, no hashes): read once more
    with sqlite3.connect(root / "manifest.sqlite") as db:
        db.execute("DELETE FROM features WHERE extractor = ?", (LIKENESS,))
    rebuilt = build_feature_table(app, settings.pipeline("t"))
    assert rebuilt.computed == 0 and np.array_equal(rebuilt.groups, table.groups)


def test_bytes_that_do_not_decode_fall_back_to_the_recorded_hash():
    assert image_hashes(b"not an image") == {}
    assert row_hashes({}, "00000000000000ff") == [0xFF]
    assert row_hashes(None, "not hex") == [] and row_hashes(None, None) == []
    assert row_hashes({"whole": 1, "centre": 2, "mirror": 3, "mirror_centre": 4}, "ff") == [1, 2, 3, 4]


def _origins(root: Path) -> dict[str, str]:
    with sqlite3.connect(root / "manifest.sqlite") as db:
        return {Path(p).name: h for h, p in db.execute(
            "SELECT content_hash, origin_path FROM images WHERE decision='accepted'")}


@pytest.mark.timeout(600)
def test_train_texts_name_the_links_applied(undeduped, tmp_path):
    """MODEL.md's grouping line, its bootstrap line and metrics.json agree: they name the links
    applied and nothing else."""
    root, _ = undeduped
    settings = train_settings(root, tmp_path / "model", ["geometry"], folds=3)
    result = train(App.create(settings), "t")
    grouping = result.metrics["dataset"]["grouping"]
    card = (result.model_dir / "MODEL.md").read_text()
    assert f"percentile bootstrap over the CV groups ({links_text(grouping)})" in card
    assert "person, post, owner, near copy" not in card  # no post, owner or descriptor here
    assert result.metrics["cv"]["grouped_by"] in card


hash64 = st.integers(0, 2**64 - 1)


@hsettings(max_examples=60, deadline=None)
@given(sets=st.lists(st.lists(hash64, min_size=0, max_size=4), min_size=1, max_size=14),
       flips=st.lists(st.tuples(st.integers(0, 13), st.integers(0, 13), st.integers(0, 3), st.integers(0, 10)),
                      max_size=10),
       distance=st.integers(0, 20))
def test_likeness_groups_follow_dedups_rule(sets, flips, distance):
    """Invariant: two images share a cluster exactly when a chain of pairs links them, each
    pair having a hash of one within ``distance`` of the other's whole or centre hash (never
    two mirror hashes against each other), as a direct pairwise check finds."""
    from selfiescope.pipelines.model.groups import likeness_groups

    for a, b, k, bits in flips:  # plant near copies: a hash of one a few bits from another's
        a, b = a % len(sets), b % len(sets)
        if sets[b] and sets[a]:
            sets[a][min(k, len(sets[a]) - 1)] = sets[b][0] ^ ((1 << bits) - 1)
    ids = likeness_groups(sets, distance)
    n = len(sets)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i in range(n):
        for j in range(i + 1, n):
            if any(bin(x ^ y).count("1") <= distance for ki, x in enumerate(sets[i]) for kj, y in enumerate(sets[j])
                   if ki < 2 or kj < 2):
                parent[find(i)] = find(j)
    for i in range(n):
        for j in range(n):
            assert (ids[i] == ids[j]) == (find(i) == find(j))
