"""Face-area filter: downscaled fast path vs full-resolution detection, side by side.

Runs the ``face_area`` detection (downscaled to ``detect_side``, matching minSize) and a
full-resolution detection with the same cascade, scaleFactor and minNeighbors over the
photos in ../shared/faces and over large upscaled copies (1000-4000 px), and prints
images/s for each, the speed ratio and the share of identical keep/reject decisions:

A. against full resolution scanning every face size (the seed's way; slow, so on a
   sample of ``--slow-n`` photos per size);
B. against full resolution with the same relative minSize: this shows where the speed
   comes from (skipping small windows) and that downscaling changes few decisions.

A last section runs the fast filter with 1, 2 and 4 threads and prints how many cores
were busy, to show that several images in flight use every core.

    .venv/bin/python benchmarks/bench_face_filter.py [--limit N] [--sides 1000,2000,4000]

The machine's CPU is shared with other work while this runs: figures vary by run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selfiescope.plugins.decode import DecodeOptions, decode_image  # noqa: E402
from selfiescope.plugins.face_area import FaceAreaOptions, detect_faces, face_area_fraction  # noqa: E402

FACES = Path(__file__).resolve().parents[2] / "shared" / "faces"


def load_faces(limit: int | None) -> list[tuple[str, np.ndarray]]:
    files = sorted(p for p in FACES.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    out = []
    for path in files[:limit]:
        decoded = decode_image(path.read_bytes(), DecodeOptions(min_side=1))
        out.append((f"{path.parent.name}/{path.name}", decoded.image))
    return out


def upscale(image: np.ndarray, side: int) -> np.ndarray:
    h, w = image.shape[:2]
    f = side / max(h, w)
    return cv2.resize(image, (round(w * f), round(h * f)), interpolation=cv2.INTER_CUBIC)


def keep(image: np.ndarray, opts: FaceAreaOptions) -> tuple[bool, float, float]:
    t = time.perf_counter()
    faces = detect_faces(image, opts)
    dt = time.perf_counter() - t
    frac = face_area_fraction(faces, image.shape[1], image.shape[0])
    return frac > opts.min_face_area, frac, dt


def compare(name: str, images: list[np.ndarray], fast: FaceAreaOptions, full: FaceAreaOptions) -> None:
    same = 0
    t_fast = t_full = 0.0
    kept = 0
    diffs = []
    for i, img in enumerate(images):
        k1, f1, d1 = keep(img, fast)
        k2, f2, d2 = keep(img, full)
        t_fast += d1
        t_full += d2
        same += k1 == k2
        kept += k1
        if k1 != k2:
            diffs.append(f"#{i} {img.shape[1]}x{img.shape[0]} fast={f1:.3f} full={f2:.3f}")
    n = len(images)
    print(
        f"  {name:<24} n={n:4d}  fast {n / t_fast:7.1f} img/s  full {n / t_full:7.2f} img/s  "
        f"ratio {t_full / t_fast:6.1f}x  identical {same / n:6.1%}  kept(fast) {kept}"
    )
    for d in diffs[:6]:
        print("      differs:", d)


def throughput(images: list[np.ndarray], opts: FaceAreaOptions, threads: int) -> tuple[float, float]:
    proc = psutil.Process()
    c0 = sum(proc.cpu_times()[:2])
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda im: detect_faces(im, opts), images))
    wall = time.perf_counter() - t0
    cpu = sum(proc.cpu_times()[:2]) - c0
    return len(images) / wall, cpu / wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=None, help="use only the first N photos")
    ap.add_argument("--sides", default="1000,1600,2500,4000", help="long sides of the upscaled copies")
    ap.add_argument("--slow-n", type=int, default=16, help="photos per size for baseline A (slow)")
    ap.add_argument("--detect-side", type=int, default=FaceAreaOptions().detect_side)
    ap.add_argument("--threads-only", action="store_true", help="only the several-images-in-flight section")
    args = ap.parse_args()
    if not FACES.is_dir():
        sys.exit(f"{FACES} absent: nothing to measure")
    fast = FaceAreaOptions(detect_side=args.detect_side)
    # Baseline A: full resolution, all face sizes (minSize = the cascade's 24 px, as the seed ran it).
    seed_like = fast.model_copy(update={"detect_side": None, "min_size_ratio": 1e-9})
    # Baseline B: full resolution with the same relative minSize (only the downscaling differs).
    full = fast.model_copy(update={"detect_side": None})
    print(
        f"cascade={fast.cascade} scaleFactor={fast.scale_factor} minNeighbors={fast.min_neighbors} "
        f"min_face_area={fast.min_face_area} detect_side={fast.detect_side} min_size_ratio={fast.min_size_ratio}"
    )
    print(
        f"cv2 {cv2.__version__}, cv2 threads {cv2.getNumThreads()}, cores {os.cpu_count()}; "
        f"load average {os.getloadavg()[0]:.1f} (the CPU is shared with other work)"
    )
    faces = load_faces(args.limit)
    originals = [img for _, img in faces]
    sides = [int(s) for s in args.sides.split(",")]
    if args.threads_only:
        large = [upscale(img, sides[i % len(sides)]) for i, img in enumerate(originals)]
        for threads in (1, 2, 4):
            ips, cores = throughput(large, fast, threads)
            print(f"  {threads} thread(s): {ips:6.1f} img/s, {cores:.2f} cores busy (load {os.getloadavg()[0]:.1f})")
        return
    print("A. fast path vs full resolution, all face sizes (the seed's way):")
    compare("originals (as shot)", originals, fast, seed_like)
    step = max(1, len(originals) // args.slow_n)
    for side in sides:
        compare(f"upscaled to {side} px", [upscale(img, side) for img in originals[::step]], fast, seed_like)
    print("B. fast path vs full resolution with the same relative minSize:")
    compare("originals (as shot)", originals, fast, full)
    large_all = []
    for side in sides:
        large = [upscale(img, side) for img in originals]
        compare(f"upscaled to {side} px", large, fast, full)
        large_all.extend(large[: max(4, len(large) // len(sides))])
        del large
    print(f"fast filter on large copies, several images in flight (load average {os.getloadavg()[0]:.1f}):")
    for threads in (1, 2, 4):
        ips, cores = throughput(large_all, fast, threads)
        print(f"  {threads} thread(s): {ips:6.1f} img/s, {cores:.2f} cores busy")


if __name__ == "__main__":
    main()
