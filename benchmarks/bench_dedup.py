"""Dedup: the distance threshold on real photos, and index speed at 10k, 100k and 1M hashes.

Part 1 (needs ../shared/faces) prints the share of resized / re-encoded / cropped copies
caught at several distances, with the whole-image pHash alone and with the whole + centre
pHash pair that dedup uses, and how many pairs of different photos each would merge:
this is how the default ``max_distance`` was chosen.

Part 2 inserts N images' random 64-bit hash pairs into the manifest's ``phashes`` table
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

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selfiescope.core.manifest import Manifest  # noqa: E402
from selfiescope.plugins.decode import DecodeOptions, decode_image  # noqa: E402
from selfiescope.plugins.dedup import DedupIndex, DedupOptions, HammingIndex, compute_phashes  # noqa: E402

FACES = Path(__file__).resolve().parents[2] / "shared" / "faces"


def _jpeg(im: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(im).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"))


def _crop(im: np.ndarray, f: float) -> np.ndarray:
    h, w = im.shape[:2]
    dy, dx = int(h * f), int(w * f)
    return im[dy : h - dy, dx : w - dx]


def _half(im: np.ndarray) -> np.ndarray:
    return cv2.resize(im, (im.shape[1] // 2, im.shape[0] // 2), interpolation=cv2.INTER_AREA)


TRANSFORMS = {
    "resized to 50%": _half,
    "JPEG quality 60": lambda im: _jpeg(im, 60),
    "JPEG quality 30": lambda im: _jpeg(im, 30),
    "cropped 3% each side": lambda im: _crop(im, 0.03),
    "cropped 5% each side": lambda im: _crop(im, 0.05),
    "resized+cropped 3%+JPEG 75": lambda im: _jpeg(_crop(_half(im), 0.03), 75),
}


def _min_dual(a: tuple[int, int], b: tuple[int, int]) -> int:
    return min((x ^ y).bit_count() for x in a for y in b)


def threshold_report(threshold: int) -> None:
    paths = sorted(p for p in FACES.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    images = [decode_image(p.read_bytes(), DecodeOptions(min_side=1)).image for p in paths]
    hashes = [tuple(int(h, 16) for h in compute_phashes(im)) for im in images]
    print(f"Part 1: {len(images)} photos from {FACES}; default max_distance = {threshold}")
    print("  share of copies caught: whole-image pHash alone | whole + centre pHash (what dedup does)")
    for name, fn in TRANSFORMS.items():
        single, dual = [], []
        for im, h in zip(images, hashes):
            q = tuple(int(x, 16) for x in compute_phashes(fn(im)))
            single.append((q[0] ^ h[0]).bit_count())
            dual.append(_min_dual(q, h))
        s, d = np.array(single), np.array(dual)
        print(
            f"  {name:<28} alone: <=8 {np.mean(s <= 8):6.1%} <=10 {np.mean(s <= 10):6.1%}  |"
            f"  with centre: <=8 {np.mean(d <= 8):6.1%} <=10 {np.mean(d <= 10):6.1%}"
        )
    pairs = sorted(
        (_min_dual(hashes[i], hashes[j]), (hashes[i][0] ^ hashes[j][0]).bit_count(), paths[i].name, paths[j].name)
        for i in range(len(hashes)) for j in range(i + 1, len(hashes))
    )
    same_photo = [p for p in pairs if p[1] == 0]
    different = [p for p in pairs if p[1] > 0]
    print(f"  {len(pairs)} pairs of files; {len(same_photo)} are the same photo at other sizes (distance 0)")
    for t in (6, 8, 10):
        print(
            f"  pairs of different photos merged at <= {t}: alone {sum(p[1] <= t for p in different)},"
            f" with centre {sum(p[0] <= t for p in different)}"
        )
    print("  closest pairs of different photos (with centre):", ", ".join(f"{a}~{b}={d}" for d, _, a, b in different[:6]))


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
            manifest.add_phashes(rows)
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
