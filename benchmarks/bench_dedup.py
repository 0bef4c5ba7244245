"""Dedup: the distance threshold on real photos, and index speed at 10k, 100k and 1M hashes.

Part 1 (needs ../shared/faces) prints the share of transformed copies (resized, re-encoded,
cropped on all or one side, mirrored, rotated, brighter/darker) caught at the default
distance, with the whole-image pHash alone, with the whole + centre pair, and with the
mirror's hashes looked up too (what dedup does), next to imagededup's PHash in the same
run when imagededup is installed; and how many pairs of different photos each would merge:
this is how the default ``max_distance`` was chosen.

Part 2 inserts N images' random 64-bit hash pairs into dedup's ``dedup__phashes`` table
and the in-memory multi-index (3 bands of ~21 bits at the default distance), reloads them the way a new run does, and times
lookups (half near copies of stored hashes, half unrelated) against a brute-force numpy
scan over the same hashes, checking that both find the same matches.

    .venv/bin/python benchmarks/bench_dedup.py [--sizes 10000,100000,1000000] [--queries 1000]

Random hashes are uniformly spread; real pHashes cluster more, so real buckets are fuller.
Times are CPU seconds of this process (time.process_time): the machine's CPU is shared
with other work while this runs, which inflates wall-clock figures; they still vary by run.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selfiescope.core.manifest import Manifest  # noqa: E402
from selfiescope.plugins.decode import DecodeOptions, decode_image  # noqa: E402
from selfiescope.plugins.dedup_state import STATE as DEDUP_STATE, add_phashes  # noqa: E402
from selfiescope.plugins.dedup import (  # noqa: E402
    DedupIndex, DedupOptions, HammingIndex, compute_mirror_phashes, compute_phashes,
)

FACES = Path(__file__).resolve().parents[2] / "shared" / "faces"


def _jpeg(im: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(im).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"))


def _crop(im: np.ndarray, f: float) -> np.ndarray:
    h, w = im.shape[:2]
    dy, dx = int(h * f), int(w * f)
    return im[dy : h - dy, dx : w - dx]


def _crop_left(im: np.ndarray, f: float) -> np.ndarray:
    return im[:, int(im.shape[1] * f) :]


def _half(im: np.ndarray) -> np.ndarray:
    return cv2.resize(im, (im.shape[1] // 2, im.shape[0] // 2), interpolation=cv2.INTER_AREA)


def _rotate(im: np.ndarray, degrees: float) -> np.ndarray:
    h, w = im.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(im, m, (w, h), borderMode=cv2.BORDER_REFLECT)


def _brightness(im: np.ndarray, factor: float) -> np.ndarray:
    return np.clip(im.astype(np.float32) * factor, 0, 255).astype(np.uint8)


TRANSFORMS = {
    "resized to 50%": _half,
    "JPEG quality 60": lambda im: _jpeg(im, 60),
    "JPEG quality 30": lambda im: _jpeg(im, 30),
    "cropped 3% each side": lambda im: _crop(im, 0.03),
    "cropped 5% each side": lambda im: _crop(im, 0.05),
    "resized+cropped 3%+JPEG 75": lambda im: _jpeg(_crop(_half(im), 0.03), 75),
    "mirrored (horizontal flip)": lambda im: np.ascontiguousarray(im[:, ::-1]),
    "mirrored + JPEG 75": lambda im: _jpeg(np.ascontiguousarray(im[:, ::-1]), 75),
    "rotated 3 degrees": lambda im: _rotate(im, 3),
    "rotated 8 degrees": lambda im: _rotate(im, 8),
    "cropped 10% off the left only": lambda im: _crop_left(im, 0.10),
    "cropped 20% off the left only": lambda im: _crop_left(im, 0.20),
    "brightness +20%": lambda im: _brightness(im, 1.2),
    "brightness -30%": lambda im: _brightness(im, 0.7),
}


def imagededup_phash() -> Any | None:
    """imagededup's own PHash, or None when it is not installed.

    imagededup declares torch as a dependency, for its CNN method only; install it for this
    benchmark with ``pip install --no-deps imagededup && pip install PyWavelets tqdm``. Its
    package ``__init__`` files import the CNN code (and so torch): they are bypassed, and
    the hashing module is imported from the installed package as it is.
    """
    import importlib.util
    import types

    spec = importlib.util.find_spec("imagededup")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    for name in ("imagededup.utils", "imagededup.methods", "imagededup.handlers", "imagededup.handlers.search"):
        if name not in sys.modules:
            module = types.ModuleType(name)
            module.__path__ = [str(root.joinpath(*name.split(".")[1:]))]
            sys.modules[name] = module
    try:
        from imagededup.methods.hashing import PHash
    except ImportError as exc:
        print(f"  imagededup present but unusable ({exc}): compared without it")
        return None
    import logging

    logging.getLogger("imagededup").setLevel(logging.ERROR)
    return PHash(verbose=False)


Hashes = tuple[int, ...]  # whole, centre[, mirror whole, mirror centre]


def our_hashes(im: np.ndarray) -> Hashes:
    return tuple(int(h, 16) for h in (*compute_phashes(im), *compute_mirror_phashes(im)))


def _dist(stored: Hashes, query: Hashes, mode: str) -> int:
    """Distance dedup sees between a stored image and a new one, per method."""
    if mode == "alone":
        return (stored[0] ^ query[0]).bit_count()
    if mode == "centre":  # whole + centre (dedup before mirror lookups)
        return min((x ^ y).bit_count() for x in stored[:2] for y in query[:2])
    return min((x ^ y).bit_count() for x in stored[:2] for y in query)  # + the query's mirror hashes


MODES = ("alone", "centre", "mirror")


def threshold_report(threshold: int) -> None:
    paths = sorted(p for p in FACES.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    images = [decode_image(p.read_bytes(), DecodeOptions(min_side=1)).image for p in paths]
    hashes = [our_hashes(im) for im in images]
    idd = imagededup_phash()
    idd_threshold = 10  # imagededup's default max_distance_threshold
    idd_hashes = [int(idd.encode_image(image_array=im), 16) for im in images] if idd else []
    print(f"Part 1: {len(images)} photos from {FACES}; default max_distance = {threshold}")
    print(f"  share of copies caught at distance <= {threshold} (imagededup PHash at its default <= {idd_threshold} and at {threshold})")
    head = f"  {'transform':<30} {'pHash alone':>11} {'+centre':>8} {'+mirror (dedup)':>16}"
    print(head + (f" {'imagededup<=10':>15} {'imagededup<=8':>14}" if idd else "   imagededup: not installed"))
    for name, fn in TRANSFORMS.items():
        d = {m: [] for m in MODES}
        di = []
        for k, (im, h) in enumerate(zip(images, hashes)):
            copy = fn(im)
            q = our_hashes(copy)
            for m in MODES:
                d[m].append(_dist(h, q, m))
            if idd:
                di.append((idd_hashes[k] ^ int(idd.encode_image(image_array=copy), 16)).bit_count())
        caught = [f"{np.mean(np.array(d[m]) <= threshold):>{w}.1%}" for m, w in zip(MODES, (11, 8, 16))]
        extra = f" {np.mean(np.array(di) <= idd_threshold):>15.1%} {np.mean(np.array(di) <= threshold):>14.1%}" if idd else ""
        print(f"  {name:<30} {' '.join(caught)}{extra}")
    n = len(hashes)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    same = {(i, j) for i, j in pairs if (hashes[i][0] ^ hashes[j][0]).bit_count() == 0}
    different = [p for p in pairs if p not in same]
    print(f"  {len(pairs)} pairs of files; {len(same)} are the same photo at other sizes (distance 0)")
    for t in (6, 8, 10):
        merged = {m: [p for p in different if min(_dist(hashes[p[0]], hashes[p[1]], m), _dist(hashes[p[1]], hashes[p[0]], m)) <= t]
                  for m in MODES}
        extra = f", imagededup {sum((idd_hashes[i] ^ idd_hashes[j]).bit_count() <= t for i, j in different)}" if idd else ""
        print(f"  pairs of different photos merged at <= {t}: alone {len(merged['alone'])}, with centre "
              f"{len(merged['centre'])}, with centre + mirror {len(merged['mirror'])}{extra}")
        if t == threshold:
            print("    merged with centre + mirror:", ", ".join(f"{paths[i].name}~{paths[j].name}" for i, j in merged["mirror"]))


def flip_bits(value: int, n: int, rng: np.random.Generator) -> int:
    for bit in rng.choice(64, size=n, replace=False):
        value ^= 1 << int(bit)
    return value


def scale_report(sizes: list[int], n_queries: int, threshold: int) -> None:
    print(f"Part 2: index of random hashes (2 per image: whole + centre), max_distance {threshold}, {n_queries} lookups")
    rng = np.random.default_rng(0)
    for n in sizes:
        whole = rng.integers(0, 2**64 - 1, size=n, dtype=np.uint64, endpoint=True)
        centre = rng.integers(0, 2**64 - 1, size=n, dtype=np.uint64, endpoint=True)
        rows = [(f"{i:064x}", int(v), "selfie", int(c)) for i, (v, c) in enumerate(zip(whole, centre))]
        with tempfile.TemporaryDirectory() as tmp:
            manifest = Manifest(Path(tmp) / "manifest.sqlite")
            t0 = time.process_time()
            add_phashes(manifest.state(DEDUP_STATE), rows)
            t_sql = time.process_time() - t0
            t0 = time.process_time()
            mem = HammingIndex(threshold)
            for i, (v, c) in enumerate(zip(whole.tolist(), centre.tolist())):  # one by one, as images arrive
                mem.add(v, i)
                mem.add(c, i)
            t_mem = time.process_time() - t0
            t0 = time.process_time()
            index = DedupIndex(manifest, threshold)  # what a new run does: load from SQLite
            t_load = time.process_time() - t0
            queries = [
                (flip_bits(int(whole[k := rng.integers(n)]), int(rng.integers(0, threshold + 1)), rng), int(centre[k]) ^ 0xFF)
                if q % 2 == 0 else (int(rng.integers(0, 2**63)) * 2, int(rng.integers(0, 2**63)) * 2)
                for q in range(n_queries)
            ]
            t0 = time.process_time()
            found = [[mem.nearest(v) for v in pair] for pair in queries]
            t_look = (time.process_time() - t0) / n_queries
            stored = np.concatenate([whole, centre])
            k = min(n_queries, 200)
            t0 = time.process_time()
            brute = [[int(np.bitwise_count(stored ^ np.uint64(v)).min()) for v in pair] for pair in queries[:k]]
            t_brute = (time.process_time() - t0) / k
            agree = sum(
                all((f is not None) == (b <= threshold) and (f is None or f[0] == b) for f, b in zip(fs, bs))
                for fs, bs in zip(found[:k], brute)
            )
            hits = sum(any(f is not None for f in fs) for fs in found)
            print(
                f"  N={n:>9,} images: insert SQLite {t_sql:6.2f} s + memory {t_mem:6.2f} s "
                f"({(t_sql + t_mem) / n * 1e6:5.1f} us/image); reload (new run) {t_load:5.2f} s; "
                f"lookup {t_look * 1e6:6.1f} us/image (brute force {t_brute * 1e6:8.1f} us, {t_brute / t_look:5.1f}x); "
                f"hits {hits}/{n_queries}; same answers as brute force {agree}/{k}"
            )
            del index
            manifest.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--no-photos", action="store_true", help="skip part 1")
    args = ap.parse_args()
    threshold = DedupOptions().max_distance
    if args.no_photos:
        pass
    elif FACES.is_dir():
        threshold_report(threshold)
    else:
        print(f"Part 1 skipped: {FACES} absent")
    scale_report([int(s) for s in args.sizes.split(",")], args.queries, threshold)


if __name__ == "__main__":
    main()
