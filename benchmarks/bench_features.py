"""Feature extraction speed: images/s per feature group, then the whole table on 1 vs 2 processes, then from cache.

Uses the real photos in ../shared/faces (selfie + portrait, faces found by the face_area
step's detector; each also re-encoded twice, so that the process pool has enough work to
pay for its start); without them, synthetic renderings. Part 1 times each group alone in
this process (decode and detection excluded). Part 2 runs ``build_feature_table`` (decode
+ all default groups, manifest cache) with ``workers`` 1 (in this process) and 2 (a
spawned process pool; its start and the dlib model loading in each process included)
on fresh caches, side by side, and a third time with everything cached.

    .venv/bin/python benchmarks/bench_features.py [--limit N]

The 2 cores are shared with whatever else runs on the machine: figures vary by run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selfiescope.core.app import App  # noqa: E402
from selfiescope.core.engine import run_chain  # noqa: E402
from selfiescope.core.events import Decision, ImageEvent, Origin  # noqa: E402
from selfiescope.core.manifest import Manifest  # noqa: E402
from selfiescope.core.plugins import build_registry  # noqa: E402
from selfiescope.core.settings import settings_from_dict  # noqa: E402
from selfiescope.pipelines.model import feature_tasks  # noqa: E402
from selfiescope.pipelines.model.dataset import build_feature_table, event_face_dict  # noqa: E402
from selfiescope.plugins.features import exif_block  # noqa: E402

FACES = Path(__file__).resolve().parents[2] / "shared" / "faces"
GROUPS = ["geometry", "landmarks", "embedding", "image"]


def photo_files(limit: int, tmp: Path, copies: int) -> list[tuple[Path, str]]:
    if FACES.is_dir():
        from PIL import Image

        files = [(p, "selfie") for p in sorted((FACES / "selfie").glob("*.jpg"))]
        files += [(p, "portrait") for p in sorted((FACES / "portrait").glob("*.*"))]
        more = []
        for k in range(1, copies):  # re-encoded copies: new bytes, so new cache entries
            for path, label in files:
                copy = tmp / f"{path.stem}_q{k}.jpg"
                with Image.open(path) as im:
                    im.convert("RGB").save(copy, "JPEG", quality=95 - 5 * k)
                more.append((copy, label))
        return (files + more)[:limit]
    from PIL import Image

    from selfiescope.testing import synth

    rng = np.random.default_rng(0)
    out = []
    for i in range(limit):
        kind = "selfie" if i % 2 else "portrait"
        path = tmp / f"{kind}_{i}.jpg"
        Image.fromarray(synth.render(kind, rng, 480)).save(path)
        out.append((path, kind))
    return out


async def annotate(files: list[tuple[Path, str]], root: Path, settings) -> list[ImageEvent]:  # noqa: ANN001
    """decode + face_area (with a low area threshold, to keep most photos) -> manifest rows."""
    import imagehash
    from PIL import Image

    registry = build_registry()
    manifest = Manifest.at_root(root)
    run = App.create(settings).run_context("bench", None, manifest, executor=ThreadPoolExecutor(2))
    steps = [run.component("steps", n) for n in ("decode", "face_area")]
    kept = []
    for path, label in files:
        event = ImageEvent(origin=Origin(source="folder", job=f"#{label}", path=str(path)), label=label, data=path.read_bytes())
        await run_chain(event, steps, run)
        if event.decision is Decision.ACCEPTED:
            event.phash = str(imagehash.phash(Image.fromarray(event.image)))
            event.location = str(path)
            kept.append(event)
        manifest.record(event)
    manifest.close()
    run.executor.shutdown()
    return kept


def per_group(events: list[ImageEvent], registry) -> None:  # noqa: ANN001
    names = [*GROUPS, *(["scene"] if "scene" in registry.features else [])]
    print(f"\n1) one group at a time, this process, {len(events)} decoded images (decode/detect excluded)")
    print(f"{'group':<10} {'features':>8} {'ms/image':>9} {'images/s':>9} {'cpu ms/image':>13}")
    for name in names:
        extractor = registry.features[name]()
        face = event_face_dict(events[0], None)
        extractor.extract(events[0].image, face)  # load models outside the timing
        start, cpu = time.perf_counter(), time.thread_time()
        for event in events:
            extractor.extract(event.image, event_face_dict(event, exif_block(event.data)))
        took, cpu = time.perf_counter() - start, time.thread_time() - cpu
        print(f"{name:<10} {len(extractor.feature_names()):>8} {1000 * took / len(events):>9.1f} "
              f"{len(events) / took:>9.1f} {1000 * cpu / len(events):>13.1f}")


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the pool's workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def table_runs(root: Path, base: dict, n: int) -> None:
    print(f"\n2) build_feature_table, groups {'+'.join(GROUPS)}, {n} images (decode included, process pool)")
    print(f"{'run':<28} {'seconds':>8} {'images/s':>9} {'cpu s':>7} {'computed':>9} {'cached':>7}")
    feature_tasks.MIN_POOL_TASKS = 0  # always use the pool for workers=2, however few images
    for label, workers, fresh in (("workers=1, empty cache", 1, True), ("workers=2, empty cache", 2, True),
                                  ("workers=2, all cached", 2, False)):
        if fresh:
            Manifest.at_root(root).execute("DELETE FROM features")
        data = {**base, "pipelines": {"t": {"kind": "train", "features": GROUPS, "workers": workers}}}
        settings = settings_from_dict(data)
        start, cpu = time.perf_counter(), cpu_seconds()
        table = build_feature_table(App.create(settings), settings.pipelines["t"])
        took, cpu = time.perf_counter() - start, cpu_seconds() - cpu
        print(f"{label:<28} {took:>8.2f} {len(table.rows) / took:>9.1f} {cpu:>7.2f} {table.computed:>9} {table.cached:>7}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=400, help="images to use")
    parser.add_argument("--copies", type=int, default=3, help="each photo also re-encoded this many times - 1")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = photo_files(args.limit, root, args.copies)
        base = {"storage": {"root": str(root)}, "plugins": {"face_area": {"min_face_area": 0.02}}}
        events = asyncio.run(annotate(files, root, settings_from_dict(base)))
        print(f"{len(files)} files ({'../shared/faces' if FACES.is_dir() else 'synthetic'}), {len(events)} with a face; "
              f"{os.cpu_count()} CPUs (shared with other work)")
        with ThreadPoolExecutor(1) as side:  # own thread: its loaded dlib models stay out of part 2
            side.submit(per_group, events, build_registry()).result()
        table_runs(root, base, len(events))


if __name__ == "__main__":
    main()
