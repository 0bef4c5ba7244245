"""Face-area filter: downscaled fast path vs full-resolution detection, side by side.

Runs the ``face_area`` detection (downscaled to ``detect_side``, matching minSize) and a
full-resolution detection with the same cascade, scaleFactor and minNeighbors over the
photos in ../shared/faces and over large upscaled copies (1000-4000 px), and prints
images/s for each, the speed ratio and the share of identical keep/reject decisions:

A. against full resolution scanning every face size (the seed's way; slow, so on a
   sample of ``--slow-n`` photos per size);
B. against full resolution with the same relative minSize: this shows where the speed
   comes from (skipping small windows) and that downscaling changes few decisions.

C. decode included, one thread, on the photos saved as ``--decode-side`` px JPEGs (2000 by
   default): the fast filter as a collect run's steps run it (``decode`` at the size the
   image's detection needs, then ``face_area`` on the event's grey view), the same with
   ``min_face_px`` off (detection at a fixed ``detect_side``), and on a full
   decode (``detect_faces`` on the full array), against the intended full-resolution method
   (full decode, detection at full resolution over every face size, scaleFactor 1.1,
   minNeighbors 5). CPU time per image, the speed ratios, the identical decisions, and how
   well the largest face's box matches the intended method's where both keep the photo.

A last section runs the fast filter with 1, 2 and 4 threads and prints how many cores
were busy, to show that several images in flight use every core.

    .venv/bin/python benchmarks/bench_face_filter.py [--limit N] [--sides 1000,2000,4000]
    .venv/bin/python benchmarks/bench_face_filter.py --decode-only [--decode-side 2000]

The machine's CPU is shared with other work while this runs: figures vary by run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

sys.path.insert(0, str(Path(__file__).resolve().parent))

from large_photos import write_large_jpegs  # noqa: E402
from selfiescope.core.app import App  # noqa: E402
from selfiescope.core.events import FaceBox, ImageEvent, Origin, Reject  # noqa: E402
from selfiescope.core.settings import ScrapePipeline, settings_from_dict  # noqa: E402
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


def collect_steps(folder: Path, opts: FaceAreaOptions) -> list:
    """The ``decode`` and ``face_area`` steps as a collect run makes and opens them."""
    settings = settings_from_dict({"plugins": {"face_area": opts.model_dump()}})
    pipeline = ScrapePipeline(kind="import", source="folder", paths=[folder], label="x", chain=["decode", "face_area"])
    run = App.create(settings).run_context("bench", pipeline, manifest=None)  # type: ignore[arg-type]
    steps = [run.component("steps", name) for name in pipeline.chain]
    for step in steps:
        asyncio.run(step.open())
    return steps


def steps_area(data: bytes, steps: list) -> tuple[float, FaceBox | None]:
    event = ImageEvent(origin=Origin("bench"), label="x", data=data)
    try:
        for step in steps:
            step.process(event)
    except Reject:
        pass
    return event.face_area or 0.0, event.largest_face


def decoded_area(data: bytes, opts: FaceAreaOptions) -> tuple[float, FaceBox | None]:
    decoded = decode_image(data)
    faces = detect_faces(decoded.image, opts)
    return face_area_fraction(faces, decoded.width, decoded.height), (faces[0] if faces else None)


def iou(a: FaceBox, b: FaceBox) -> float:
    x0, y0 = max(a.x, b.x), max(a.y, b.y)
    x1, y1 = min(a.x + a.w, b.x + b.w), min(a.y + a.h, b.y + b.h)
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    return inter / float(a.area + b.area - inter)


def decode_included(side: int, limit: int | None, fast: FaceAreaOptions, intended: FaceAreaOptions,
                    sample: int | None = None) -> None:
    """Section C: whole filter per image, decode included, CPU time, one thread."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory(prefix="bench_face_filter_") as tmp:
        paths = write_large_jpegs(Path(tmp), side, limit, sample=sample)
        steps = collect_steps(Path(tmp), fast)
        fixed = fast.model_copy(update={"min_face_px": None})
        fixed_steps = collect_steps(Path(tmp), fixed)
        methods = {
            f"working-size decode + face_area (min_face_px {fast.min_face_px})": lambda d: steps_area(d, steps),
            f"same, fixed detect_side {fixed.detect_side}": lambda d: steps_area(d, fixed_steps),
            "full decode + detect_faces": lambda d: decoded_area(d, fast),
            "intended full-resolution method": lambda d: decoded_area(d, intended),
        }
        warm = paths[0].read_bytes()
        for run in methods.values():
            run(warm)
        cpu = dict.fromkeys(methods, 0.0)
        keep: dict[str, list[bool]] = {name: [] for name in methods}
        boxes: dict[str, list[FaceBox | None]] = {name: [] for name in methods}
        for path in paths:
            data = path.read_bytes()
            for name, run in methods.items():
                t = time.process_time()
                area, box = run(data)
                cpu[name] += time.process_time() - t
                keep[name].append(area > fast.min_face_area)
                boxes[name].append(box)
    cv2.setNumThreads(threads)
    n = len(paths)
    ref = "intended full-resolution method"
    print(f"C. decode included, {n} photos as {side} px JPEGs, one thread, CPU ms per image; "
          f"box IoU: the largest face vs the intended method's where both keep the photo:")
    for name in methods:
        same = sum(a == b for a, b in zip(keep[name], keep[ref]))
        ious = [iou(a, b) for a, b, k, kr in zip(boxes[name], boxes[ref], keep[name], keep[ref]) if k and kr]
        print(f"  {name:<46} {1000 * cpu[name] / n:8.1f} ms  ratio {cpu[ref] / cpu[name]:6.1f}x  "
              f"identical {same}/{n} ({same / n:.1%})  kept {sum(keep[name])}  "
              f"box IoU median {np.median(ious):.2f}, >= 0.7 in {sum(i >= 0.7 for i in ious)}/{len(ious)}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=None, help="use only the first N photos")
    ap.add_argument("--sides", default="1000,1600,2500,4000", help="long sides of the upscaled copies")
    ap.add_argument("--slow-n", type=int, default=16, help="photos per size for baseline A (slow)")
    ap.add_argument("--detect-side", type=int, default=FaceAreaOptions().detect_side)
    ap.add_argument("--min-face-px", type=int, default=FaceAreaOptions().min_face_px)
    ap.add_argument("--threads-only", action="store_true", help="only the several-images-in-flight section")
    ap.add_argument("--decode-side", type=int, default=2000, help="section C: long side of the JPEGs")
    ap.add_argument("--decode-only", action="store_true", help="only section C (decode included)")
    ap.add_argument("--decode-sample", type=int, default=None, help="section C: N photos evenly spaced over all")
    args = ap.parse_args()
    if not FACES.is_dir():
        sys.exit(f"{FACES} absent: nothing to measure")
    fast = FaceAreaOptions(detect_side=args.detect_side, min_face_px=args.min_face_px)
    # Baseline A: full resolution, all face sizes (minSize = the cascade's 24 px, as the seed ran it).
    seed_like = fast.model_copy(update={"detect_side": None, "min_face_px": None, "min_size_ratio": 1e-9})
    # Baseline B: full resolution with the same relative minSize (only the downscaling differs).
    full = fast.model_copy(update={"detect_side": None, "min_face_px": None})
    print(
        f"cascade={fast.cascade} scaleFactor={fast.scale_factor} minNeighbors={fast.min_neighbors} "
        f"min_face_area={fast.min_face_area} detect_side={fast.detect_side} min_size_ratio={fast.min_size_ratio} "
        f"min_face_px={fast.min_face_px}"
    )
    print(
        f"cv2 {cv2.__version__}, cv2 threads {cv2.getNumThreads()}, cores {os.cpu_count()}; "
        f"load average {os.getloadavg()[0]:.1f} (the CPU is shared with other work)"
    )
    if args.decode_only:
        decode_included(args.decode_side, args.limit, fast, seed_like, args.decode_sample)
        return
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
    decode_included(args.decode_side, args.limit, fast, seed_like, args.decode_sample)
    print(f"fast filter on large copies, several images in flight (load average {os.getloadavg()[0]:.1f}):")
    for threads in (1, 2, 4):
        ips, cores = throughput(large_all, fast, threads)
        print(f"  {threads} thread(s): {ips:6.1f} img/s, {cores:.2f} cores busy")


if __name__ == "__main__":
    main()
