"""Forget: time to forget one owner (and one post, one image) in a 100k-row manifest.

Builds a manifest the shape collection leaves it: N accepted images by N/25 owners
(pseudonymised), each with its pHash row, two cached feature rows and its posts_seen row,
plus N/10 rejections and N/100 label conflicts. Only the forgotten owner's images get
real files (the others' files are never touched by a forget). Then times, on a fresh
copy each:

* ``--dry-run`` (the plan: matching by pseudonym, post, id),
* the whole forget (tombstones + to-do list, files through the storage backend, the rows
  of six tables in one transaction, the dataset card refreshed), and the card alone,
* the ingest gate afterwards (the tombstone check each incoming image pays), per event.

    .venv/bin/python benchmarks/bench_forget.py [--rows 100000] [--owner-images 25] [--repeat 3]

Times are wall-clock medians on a shared machine: they vary by run. No assertion.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selfiescope.core.app import App  # noqa: E402
from selfiescope.core.events import ImageEvent, Origin  # noqa: E402
from selfiescope.core.manifest import Manifest  # noqa: E402
from selfiescope.plugins import dedup_state  # noqa: E402,F401 - declares dedup's tables
from selfiescope.core.privacy import forgotten  # noqa: E402
from selfiescope.core.settings import settings_from_dict  # noqa: E402
from selfiescope.pipelines.dataset_care.card import write_card  # noqa: E402
from selfiescope.pipelines.dataset_care.forget import ForgetRequest, forget, forget_with  # noqa: E402


def build(root: Path, rows: int, per_owner: int) -> dict[str, str]:
    """A manifest of ``rows`` accepted images; returns the names of the targets to forget."""
    m = Manifest.at_root(root)
    ring = m.keyring
    owners = [ring.owner(f"owner_{i}") for i in range(rows // per_owner + 1)]
    now = time.time()
    images, phashes, features, posts, rejections, conflicts = [], [], [], [], [], []
    for i in range(rows):
        h = hashlib.sha256(i.to_bytes(8, "little")).hexdigest()
        owner = owners[i % len(owners)]  # owner_k owns images k, k + n_owners, ...
        loc = f"selfie/{h[:16]}.jpg"
        images.append((h, h[:16], "instagram", "selfie", f"P{i}", f"https://x/p/P{i}/", "selfie", f"{i:016x}",
                       "jpeg", 1080, 1080, 150_000, "[1,2,300,300]", 0.2, 1, "accepted", loc, 1, now, now, owner))
        phashes.append((h, (i * 2654435761) % (1 << 62), "selfie", now, None))
        features += [(h, "geometry", "1", "{}"), (h, "image", "1", "{}")]
        posts.append(("instagram", f"P{i}", "selfie", "selfie", now))
        if i % 10 == 0:
            rejections.append((h, "instagram", "selfie", f"P{i}", "selfie", "dedup", "duplicate", "dup", 1, now))
        if i % 100 == 0:
            other = hashlib.sha256((i + 1).to_bytes(8, "little")).hexdigest()
            conflicts.append((h, other, "selfie", "portrait", 3, now))
    with m.transaction() as db:
        db.executemany(
            "INSERT INTO images(content_hash, id, source, job, post_id, post_url, label, phash, format, width, height,"
            " size, face_box, face_area, n_faces, decision, location, run_id, first_seen, updated, owner)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", images)
        db.executemany("INSERT INTO dedup__phashes(content_hash, phash, label, added, centre) VALUES (?,?,?,?,?)", phashes)
        db.executemany("INSERT INTO features(content_hash, extractor, version, data) VALUES (?,?,?,?)", features)
        db.executemany("INSERT INTO posts_seen(source, post_id, job, label, at) VALUES (?,?,?,?,?)", posts)
        db.executemany("INSERT INTO rejections(content_hash, source, job, post_id, label, rejected_by, reject_code,"
                       " reason, run_id, at) VALUES (?,?,?,?,?,?,?,?,?,?)", rejections)
        db.executemany("INSERT INTO dedup__conflicts(content_hash, other_hash, label, other_label, distance, at)"
                       " VALUES (?,?,?,?,?,?)", conflicts)
    # Real files for the owner to forget (owner_7) and for the post/image targets.
    (root / "selfie").mkdir(exist_ok=True)
    for r in m.query("SELECT location FROM images WHERE owner=? OR post_id IN ('P5', 'P6')", (owners[7],)):
        (root / r[0]).write_bytes(b"\xff\xd8" + b"x" * 150_000)
    image_id = m.query("SELECT id FROM images WHERE post_id='P6'")[0][0]
    m.close()
    return {"owner": "owner_7", "post": "P5", "image": image_id}


def timed(fn) -> float:  # noqa: ANN001
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def core_forget(base: Path, root: Path, app, request) -> float:  # noqa: ANN001
    """The forget proper on an open dataset: plan, tombstones, files, rows (no card, no start-up)."""
    shutil.copytree(base, root)
    m = Manifest.at_root(root)
    storage = app.run_context("bench", None, m).component("storage", "files")
    seconds = timed(lambda: asyncio.run(forget_with(m, storage, request)))
    m.close()
    shutil.rmtree(root)
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--owner-images", type=int, default=25, help="images per owner")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        t0 = time.perf_counter()
        targets = build(base, args.rows, args.owner_images)
        size = sum(p.stat().st_size for p in base.glob("manifest.sqlite*")) / 1e6
        print(f"manifest: {args.rows} images, {args.rows // args.owner_images + 1} owners, {size:.0f} MB,"
              f" built in {time.perf_counter() - t0:.1f} s")
        plugins = App.create(settings_from_dict({}))  # plugins imported once, as in a CLI process before it forgets
        results: dict[str, dict[str, float]] = {}
        for kind in ("owner", "post", "image"):
            request = ForgetRequest(**{f"{kind}s": [targets[kind]]})
            plans, runs, core = [], [], []
            removed = {}
            for i in range(args.repeat):
                root = Path(tmp) / f"{kind}-{i}"
                shutil.copytree(base, root)
                app = plugins.with_settings(settings_from_dict({"storage": {"root": str(root)}}))
                plans.append(timed(lambda: asyncio.run(forget(app, request, dry_run=True))))
                out = {}
                runs.append(timed(lambda: out.setdefault("r", asyncio.run(forget(app, request)))))
                removed = out["r"].removed
                if i < args.repeat - 1:
                    shutil.rmtree(root)
                core.append(core_forget(base, Path(tmp) / f"{kind}-core-{i}", app, request))
            results[kind] = {"plan_s": statistics.median(plans), "forget_s": statistics.median(runs),
                             "core_s": statistics.median(core)}
            print(f"forget one {kind:5s}: dry run {results[kind]['plan_s'] * 1000:6.1f} ms,"
                  f" forget {results[kind]['forget_s'] * 1000:6.1f} ms (files and rows alone"
                  f" {results[kind]['core_s'] * 1000:5.1f} ms)   removed {json.dumps(removed)}")
        m = Manifest.at_root(base)
        app = plugins.with_settings(settings_from_dict({"storage": {"root": str(base)}}))
        card_s = statistics.median(timed(lambda: write_card(app, m)) for _ in range(args.repeat))
        m.close()
        print(f"of which the dataset card refresh (every forget and run): {card_s * 1000:.1f} ms")
        # The file rewrite that leaves no fragment of a forgotten row (VACUUM, then the WAL emptied).
        rewrites = []
        for i in range(args.repeat):
            copy = Path(tmp) / f"rewrite-{i}"
            shutil.copytree(base, copy)
            m = Manifest.at_root(copy)
            rewrites.append(timed(lambda: m.vacuum() and m.checkpoint()))
            m.close()
            shutil.rmtree(copy)
        rewrite_s = statistics.median(rewrites)
        print(f"of which the file rewrite (VACUUM + WAL checkpoint): {rewrite_s * 1000:.1f} ms,"
              f" {rewrite_s / results['owner']['forget_s']:.0%} of one owner's forget")
        # The gate each later image pays, with this dataset's tombstones.
        m = Manifest.at_root(Path(tmp) / f"owner-{args.repeat - 1}")
        n = 5000
        events = [ImageEvent(Origin("instagram", post_id=f"N{i}", extra={"owner": f"someone_{i}"}), "selfie",
                             data=(10**9 + i).to_bytes(8, "little")) for i in range(n)]
        t = time.perf_counter()
        dropped = sum(forgotten(e, m) for e in events)
        gate_us = (time.perf_counter() - t) / n * 1e6
        tombs = m.query("SELECT COUNT(*) FROM tombstones")[0][0]
        m.close()
        print(f"ingest gate: {gate_us:.0f} us per image ({tombs} tombstones, {dropped} dropped of {n})")
        perceptual_gate(Path(tmp) / f"owner-{args.repeat - 1}")
        o = results["owner"]
        print(f"ratio: one owner's forget proper is {o['core_s'] / o['plan_s']:.1f}x its dry run;"
              f" the whole command is {o['forget_s'] / o['core_s']:.0f}x the forget proper (card, opening)")

def perceptual_gate(root: Path, n: int = 40) -> None:
    """What the perceptual tombstones add per incoming image (a small second decode and four
    hashes, compared with every forgotten pair), next to the chain's own decode of it."""
    import io

    import numpy as np
    from PIL import Image

    from selfiescope.core.likeness import load_likeness
    from selfiescope.plugins.decode import decode_image

    rng = np.random.default_rng(0)
    photos = []
    for _ in range(n):
        small = Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).resize((1080, 1350), Image.BICUBIC)
        buf = io.BytesIO()
        small.save(buf, "JPEG", quality=90)
        photos.append(buf.getvalue())
    m = Manifest.at_root(root)
    likeness = load_likeness(m, 8)
    m.close()
    events = [ImageEvent(Origin("folder"), "selfie", data=d) for d in photos]
    likeness.matches_event(ImageEvent(Origin("folder"), "selfie", data=photos[0]))  # imports, first-call set-up
    decode_image(photos[0], working_side=640)
    t = time.perf_counter()
    dropped = sum(likeness.matches_event(e) for e in events)
    gate_ms = (time.perf_counter() - t) / n * 1000
    t = time.perf_counter()
    for d in photos:
        decode_image(d, working_side=640)
    decode_ms = (time.perf_counter() - t) / n * 1000
    print(f"perceptual gate: {gate_ms:.1f} ms per 1080x1350 JPEG ({len(likeness)} forgotten photos,"
          f" {dropped} dropped of {n}); the chain's own decode at 640 px: {decode_ms:.1f} ms;"
          f" ratio {gate_ms / decode_ms:.2f}")


if __name__ == "__main__":
    main()
