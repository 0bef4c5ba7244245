"""Import chain CPU per image against the decode + detect + hash bound, side by side, one thread.

The real photos in ../shared/faces are upsampled to ``--side`` px JPEGs in a temporary folder.
For each photo, in one pass (so the shared machine's noise falls on every column alike):

- **bound**: the bare library calls the import cannot avoid: a reduced JPEG decode (Pillow
  ``draft``) at the chain's working size, one grey conversion, the Haar detection at its size,
  and the four perceptual hashes dedup needs (whole, centre, and their mirrors);
- **steps**: the real ``decode``, ``face_area`` and ``dedup`` step classes of a collect run
  (a real RunContext, registry and manifest), the event's content hash included;
- **old**: the way before one decode per image: full decode, detection and hashes from the
  full-size array (``detect_faces``, ``compute_phashes``), and its own bare bound.

Then the whole engine on the folder (``collect``, chain decode,face_area,dedup,store, one worker
thread), CPU per image, once with the working-size decode and once forced to full resolution.
Last, what the reduced decode changes: keep/reject decisions of face_area and the pHash bit
distances against the full decode.

    .venv/bin/python benchmarks/bench_import_cpu.py [--limit N] [--side 2000]

CPU times are process CPU (``time.process_time``); the machine is shared, so figures vary by run.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sys
import tempfile
import time
from dataclasses import replace
from collections.abc import Callable
from pathlib import Path
from statistics import mean

import cv2
import imagehash
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from large_photos import write_large_jpegs  # noqa: E402
from selfiescope.core.app import App  # noqa: E402
from selfiescope.core.context import RunContext  # noqa: E402
from selfiescope.core.events import ImageEvent, Origin, Reject  # noqa: E402
from selfiescope.core.manifest import Manifest, phash_to_int  # noqa: E402
from selfiescope.core.settings import ScrapePipeline, settings_from_dict  # noqa: E402
from selfiescope.pipelines.collecting.collect import collect  # noqa: E402
from selfiescope.plugins import decode as decode_plugin  # noqa: E402
from selfiescope.plugins.decode import DecodeOptions, decode_image  # noqa: E402
from selfiescope.plugins.dedup import centre_crop, compute_mirror_phashes, compute_phashes  # noqa: E402
from selfiescope.plugins.face_area import (  # noqa: E402
    FaceAreaOptions, _classifier, detect_faces, detection_size, face_area_fraction, threshold_side,
)

CHAIN = ["decode", "face_area", "dedup"]


def bare_hashes(grey: np.ndarray) -> None:
    for view in (grey, centre_crop(grey)):
        for im in (view, view[:, ::-1]):
            imagehash.phash(Image.fromarray(cv2.resize(np.ascontiguousarray(im), (32, 32), interpolation=cv2.INTER_AREA)))


def bare_detect(grey: np.ndarray, width: int, height: int, opts: FaceAreaOptions) -> None:
    size = detection_size(width, height, opts)
    small = grey
    if small.shape[1] > 2 * size[0]:  # the cheap bilinear pre-shrink detect_faces does on a full-size array
        small = cv2.resize(small, (2 * size[0], 2 * size[1]), interpolation=cv2.INTER_LINEAR)
    if small.shape[1] > size[0]:
        small = cv2.resize(small, size, interpolation=cv2.INTER_AREA)
    side = max(24, int(threshold_side(*size, opts) * opts.min_size_ratio))
    _classifier(opts.cascade).detectMultiScale(small, scaleFactor=opts.scale_factor, minNeighbors=opts.min_neighbors,
                                               minSize=(side, side))


def bound(data: bytes, working_for: Callable[[int, int], int | None] | None, opts: FaceAreaOptions) -> float:
    """CPU seconds of the unavoidable work on one photo (decode at what the chain needs for it, detect, hash)."""
    t = time.process_time()
    im = Image.open(io.BytesIO(data))
    width, height = im.size
    working = working_for(width, height) if working_for else None
    if working and max(width, height) > 2 * working:
        im.draft("RGB", decode_plugin._draft_size(width, height, working))
    rgb = np.asarray(im.convert("RGB"))
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    bare_detect(grey, width, height, opts)
    bare_hashes(grey)
    return time.process_time() - t


def old_chain(data: bytes, opts: FaceAreaOptions) -> tuple[float, bool, tuple[str, ...]]:
    """The chain's work as it was before: everything from the full-size decode."""
    t = time.process_time()
    event = ImageEvent(origin=Origin("bench"), label="x", data=data)
    decoded = decode_image(data)
    faces = detect_faces(decoded.image, opts)
    area = face_area_fraction(faces, decoded.width, decoded.height)
    hashes = (*compute_phashes(decoded.image), *compute_mirror_phashes(decoded.image))
    assert event.content_hash
    return time.process_time() - t, area, hashes


def new_chain(data: bytes, steps: list, path: Path) -> tuple[float, bool, tuple[str, ...]]:
    """The real step classes of a collect run on one photo."""
    t = time.process_time()
    event = ImageEvent(origin=Origin("folder", path=str(path)), label="x", data=data)
    rejected_by = None
    for step in steps:
        try:
            step.process(event)
        except Reject:
            rejected_by = step.name
            break
    dt = time.process_time() - t
    area = event.face_area or 0.0
    if event.phash is None:  # rejected before dedup: hash it anyway for the comparison (not timed)
        from selfiescope.plugins.dedup import annotate_phashes

        annotate_phashes(event)
    n = event.notes
    return dt, area, (event.phash, n["phash_centre"], n["phash_mirror"], n["phash_mirror_centre"])


async def open_steps(root: Path, folder: Path) -> tuple[list, Manifest]:
    settings = settings_from_dict({"storage": {"root": str(root)}})
    pipeline = ScrapePipeline(kind="import", source="folder", paths=[folder], label="x", chain=CHAIN)
    manifest = Manifest.at_root(root)
    run = App.create(settings).run_context("bench", pipeline, manifest)
    steps = [run.component("steps", name) for name in CHAIN]
    for step in steps:
        await step.open()
    return steps, manifest


def timed_registry(registry, spent: list[float]):  # noqa: ANN001
    """``registry``, with the chain's synchronous steps adding their thread CPU time to ``spent``."""
    for name in CHAIN:
        cls = registry.steps[name]

        def process(self, event, _process=cls.process):  # noqa: ANN001
            t = time.thread_time()
            try:
                return _process(self, event)
            finally:
                spent[0] += time.thread_time() - t

        registry.steps[name] = type(cls.__name__, (cls,), {"process": process})
    return registry


def engine_cpu(root: Path, folder: Path, full: bool) -> tuple[float, float, object]:
    """CPU of a whole import run (collect) and the part of it spent in the chain's sync steps."""
    settings = settings_from_dict({"storage": {"root": str(root)}, "engine": {"workers": 1, "threads": 1}})
    pipeline = ScrapePipeline(kind="import", source="folder", paths=[folder], label="x", chain=[*CHAIN, "store"])
    original = decode_plugin.chain_working_side, decode_plugin.chain_working_side_for
    if full:  # as before: decode at full resolution
        decode_plugin.chain_working_side = decode_plugin.chain_working_side_for = lambda run, after: None
    spent = [0.0]
    try:
        t = time.process_time()
        app = App.create(settings)
        app = replace(app, registry=timed_registry(app.registry, spent))
        stats = asyncio.run(collect(app, "import", pipeline=pipeline))
        cpu = time.process_time() - t
    finally:
        decode_plugin.chain_working_side, decode_plugin.chain_working_side_for = original
    return cpu, spent[0], stats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=None, help="use only the first N photos")
    ap.add_argument("--sample", type=int, default=None, help="N photos evenly spaced over all")
    ap.add_argument("--side", type=int, default=2000, help="long side of the upsampled JPEGs")
    ap.add_argument("--no-engine", action="store_true", help="skip the whole-engine runs")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    opts = FaceAreaOptions()
    with tempfile.TemporaryDirectory(prefix="bench_import_") as tmp:
        folder = Path(tmp) / "photos"
        paths = write_large_jpegs(folder, args.side, args.limit, sample=args.sample)
        steps, manifest = asyncio.run(open_steps(Path(tmp) / "steps_root", folder))
        working, working_for = steps[0].working, steps[0].working_for
        print(f"{len(paths)} photos from ../shared/faces upsampled to {args.side} px JPEGs (q90); chain {CHAIN}; "
              f"working side at most {working} (face_area detect_side {opts.detect_side}, "
              f"min_face_px {opts.min_face_px}, dedup hash side "
              f"{steps[2].working_side(steps[2].options)}); cv2 threads 1; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} shared cores")
        warm = paths[0].read_bytes()  # load the cascade, imagehash and scipy before timing anything
        bound(warm, working_for, opts), old_chain(warm, opts)
        cols: dict[str, list[float]] = {k: [] for k in ("bound", "steps", "old_bound", "old")}
        changed, dists = [], []
        for path in paths:
            data = path.read_bytes()
            cols["bound"].append(bound(data, working_for, opts))
            dt, area_new, h_new = new_chain(data, steps, path)
            cols["steps"].append(dt)
            cols["old_bound"].append(bound(data, None, opts))
            dt, area_old, h_old = old_chain(data, opts)
            cols["old"].append(dt)
            if (area_new > opts.min_face_area) != (area_old > opts.min_face_area):
                changed.append(f"{path.name}: largest face {area_new:.3f} of the image (full decode {area_old:.3f}), "
                               f"threshold {opts.min_face_area}")
            dists.append([bin(phash_to_int(a) ^ phash_to_int(b)).count("1") for a, b in zip(h_new, h_old)])
        manifest.close()
        ms = {k: 1000 * mean(v) for k, v in cols.items()}
        print(f"\nCPU per image, ms (n={len(paths)}, one pass, interleaved):")
        print(f"  {'':34} {'chain':>8} {'bound':>8} {'ratio':>7}")
        print(f"  {'working-size decode (now), steps':34} {ms['steps']:8.1f} {ms['bound']:8.1f} {ms['steps'] / ms['bound']:6.2f}x")
        print(f"  {'full decode (before)':34} {ms['old']:8.1f} {ms['old_bound']:8.1f} {ms['old'] / ms['old_bound']:6.2f}x")
        print(f"  speed-up of the chain: {ms['old'] / ms['steps']:.2f}x")
        if not args.no_engine:
            empty = Path(tmp) / "empty"
            empty.mkdir()
            engine_cpu(Path(tmp) / "warm", empty, False)  # imports and first-use costs, not timed
            fixed, _, _ = engine_cpu(Path(tmp) / "fixed", empty, False)  # a run's start and finish, no image
            print(f"\nwhole engine on the folder (collect, +store, 1 worker thread), CPU per image, ms "
                  f"(a run's own start and finish, {1000 * fixed:.0f} ms, left out; 'steps' = decode+face_area+dedup "
                  f"inside it, the rest is the source, store, manifest and engine):")
            print(f"  {'':34} {'engine':>8} {'steps':>8} {'bound':>8} {'ratio':>7} {'steps/bound':>12}")
            for full in (False, True):
                root = Path(tmp) / ("engine_full" if full else "engine_now")
                cpu, in_steps, stats = engine_cpu(root, folder, full)
                b = ms["old_bound"] if full else ms["bound"]
                what = "full-size decode forced" if full else "working-size decode (now)"
                per, steps_ms = 1000 * (cpu - fixed) / len(paths), 1000 * in_steps / len(paths)
                print(f"  {what:34} {per:8.1f} {steps_ms:8.1f} {b:8.1f} {per / b:6.2f}x {steps_ms / b:11.2f}x"
                      f"   ({stats.seen} seen, {stats.accepted} stored, {dict(stats.rejected_by_reason)})")
        d = np.array(dists)
        print(f"\nwhat the working-size decode changes against the full decode (n={len(paths)}):")
        print(f"  face_area keep/reject decisions changed: {len(changed)} of {len(paths)}")
        for c in changed:
            print(f"    {c}")
        names = ("whole", "centre", "mirror", "mirror centre")
        for i, name in enumerate(names):
            hist = np.bincount(d[:, i], minlength=int(d.max()) + 1)
            print(f"  pHash {name:<14} bits: max {d[:, i].max()}, mean {d[:, i].mean():.2f}, "
                  f"histogram 0..{len(hist) - 1}: {hist.tolist()}")


if __name__ == "__main__":
    main()
