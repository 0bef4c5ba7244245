"""`selfiescope review`'s data layer on a synthetic 100k-image manifest: server-side times and memory.

Rows are written directly into SQLite (random labels, jobs, decisions, rejection reasons,
detectors, face areas, pHashes with near-duplicate pairs) and a model's out-of-fold
probabilities are registered for every stored image. Measured in this process, the way the
web layer calls the data layer:

- open + first grid page (reads the manifest into its in-memory columns: what the first
  request after a start, or after a scrape added images, pays), then a warm first page;
- a facet change: the facets (counts under the other filters) and the page for a new filter;
- the thumbnail of a 4000 px JPEG, cold (reduced decode + cache write) and cached;
- the reduced decode by Pillow (``draft``), OpenCV (``IMREAD_REDUCED_COLOR_8``) and simplejpeg
  (when installed), side by side: all three are libjpeg-turbo, bounded by its Huffman decoding;
- a grid page of 4000 px JPEGs: its thumbnails requested as soon as the page answered, and the
  next page's after a scroll, with and without the thumbnails made ahead in the background;
- peak RSS of the process;
- with ``--s3``, the cold thumbnail read through the fsspec backend on moto's S3 server.

    .venv/bin/python benchmarks/bench_review.py [--images 100000] [--s3]

Times are wall-clock medians on a shared machine (they vary by run; the CPU time of the cold
read is steadier). No assertion.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from selfiescope.core.app import App  # noqa: E402
from selfiescope.core.settings import settings_from_dict  # noqa: E402
from selfiescope.review.data import Filters, ReviewData  # noqa: E402
from selfiescope.testing.review_manifest import build, write_model  # noqa: E402

GOALS = {"page_ms": 300.0, "facet_ms": 300.0, "thumb_ms": 50.0, "rss_mb": 250.0}


def big_jpeg() -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(small).resize((4000, 3000), Image.Resampling.BILINEAR).save(out, "JPEG", quality=90)
    return out.getvalue()


def ms(fn, repeat: int = 1) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), result


def line(name: str, value: float, goal: float | None, unit: str = "ms") -> None:
    verdict = "" if goal is None else f"  goal <= {goal:g} {unit}: {'met' if value <= goal else 'MISSED'} ({value / goal:.2f}x)"
    print(f"{name:58s} {value:9.1f} {unit}{verdict}")


def note_stored_digest(root: Path, content_hash: str, data: bytes) -> str:
    """Record ``data`` as the image's stored copy (the digest the store step notes for a stripped
    copy), so the review app, which serves only recorded bytes, serves it; returns its location."""
    import hashlib
    import json

    db = sqlite3.connect(root / "manifest.sqlite")
    with db:
        db.execute("UPDATE images SET notes=? WHERE content_hash=?",
                   (json.dumps({"stored_sha256": hashlib.sha256(data).hexdigest()}), content_hash))
    location = db.execute("SELECT location FROM images WHERE content_hash=?", (content_hash,)).fetchone()[0]
    db.close()
    return location


def set_stored_file(root: Path, content_hash: str, data: bytes) -> str:
    location = note_stored_digest(root, content_hash, data)
    (root / location).parent.mkdir(parents=True, exist_ok=True)
    (root / location).write_bytes(data)
    return location


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--s3", action="store_true", help="also read the thumbnail's image through moto's S3 server")
    ap.add_argument("--write", type=Path, help=argparse.SUPPRESS)  # the child that writes the manifest
    args = ap.parse_args()
    if args.write:
        build(args.write, args.images, seed=1)
        db = sqlite3.connect(args.write / "manifest.sqlite")
        stored = dict(db.execute("SELECT content_hash, label FROM images WHERE decision='accepted'"))
        db.close()
        write_model(args.write.parent / "model", args.write,
                    {h: (label, (i % 97) / 97) for i, (h, label) in enumerate(stored.items())})
        return
    with tempfile.TemporaryDirectory(prefix="bench-review-") as tmp:
        root = Path(tmp) / "data"
        started = time.perf_counter()
        # Written by a child process, so that this one's peak memory is the data layer's alone.
        subprocess.run([sys.executable, __file__, "--write", str(root), "--images", str(args.images)], check=True)
        db = sqlite3.connect(root / "manifest.sqlite")
        hashes = [r[0] for r in db.execute("SELECT content_hash FROM images")]
        stored = dict(db.execute("SELECT content_hash, label FROM images WHERE decision='accepted'"))
        db.close()
        print(f"{args.images} images ({len(stored)} stored) written in {time.perf_counter() - started:.1f} s\n")
        settings = settings_from_dict({"storage": {"root": str(root)}})
        data = ReviewData(App.create(settings))
        cpu = time.process_time()
        cold, page = ms(lambda: (data.facets(Filters()), data.page(Filters(), "mislabeled", None, 60))[1])
        line("open + first page + facets (cold)", cold, None)
        line("  its CPU time (the manifest's columns read once)", (time.process_time() - cpu) * 1000, None)
        warm, page = ms(lambda: data.page(Filters(), "mislabeled", None, 60), repeat=5)
        line("first page, sort: most likely mislabeled", warm, GOALS["page_ms"])
        change = Filters(label=("selfie",), reason=("face_area:no_face", "blurcheck:blurry"), decision=("rejected",))
        facet, _ = ms(lambda: (data.facets(change), data.page(change, "newest", None, 60)), repeat=5)
        line("facet change (facets + page)", facet, GOALS["facet_ms"])
        deep = Filters(label=("portrait",), area_min=0.1, area_max=0.5, reviewed=False)
        page2, _ = ms(lambda: data.page(deep, "face_area", data.page(deep, "face_area", None, 60).next_cursor, 60), repeat=5)
        line("next page by cursor (two pages)", page2, GOALS["page_ms"])
        ids = [t.id for t in page.tiles[:50]]
        act, _ = ms(lambda: data.apply("reviewed", ids))
        line("mark 50 reviewed (one transaction)", act, None)
        after, _ = ms(lambda: data.page(Filters(), "mislabeled", None, 60))
        line("first page after an edit (columns updated in place)", after, None)

        photo = big_jpeg()
        target, other, *more = [h for h in hashes if h in stored][:7]
        for h in (target, other, *more):
            set_stored_file(root, h, photo)
        opened, _ = ms(lambda: data.thumbnail(other))
        line("first thumbnail (opens the storage backend)", opened, None)
        colds = sorted(ms(lambda h=h: data.thumbnail(h))[0] for h in (target, *more))
        thumb_cold = statistics.median(colds)
        line("thumbnail of a 4000x3000 JPEG, cold (median of 6)", thumb_cold, GOALS["thumb_ms"])
        thumb_hot, _ = ms(lambda: data.thumbnail(target), repeat=20)
        line("thumbnail, cached", thumb_hot, GOALS["thumb_ms"])
        data.close()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        line("peak RSS of this process (benchmark's own lists included)", rss, GOALS["rss_mb"], "MB")
        decoders(photo)
        pages_of_thumbnails(root, settings, photo)

        if args.s3:
            s3_thumbnail(root, target, photo)


def decoders(photo: bytes, rounds: int = 15) -> None:
    """The reduced decode (a 320 px thumbnail: 1/8 scale) by each libjpeg-turbo binding, interleaved."""
    import cv2
    import numpy as np
    from PIL import Image

    def pillow() -> object:
        with Image.open(io.BytesIO(photo)) as im:
            im.draft("RGB", (320, 320))
            im.load()
            return im.size

    ways = {"Pillow draft (what thumbs.py uses)": pillow,
            "OpenCV IMREAD_REDUCED_COLOR_8": lambda: cv2.imdecode(np.frombuffer(photo, np.uint8), cv2.IMREAD_REDUCED_COLOR_8)}
    try:
        import simplejpeg

        ways["simplejpeg min 320 px"] = lambda: simplejpeg.decode_jpeg(photo, min_height=320, min_width=320)
    except ImportError:
        print("(simplejpeg is not installed: pip install simplejpeg to compare it too)")
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, fn in ways.items():
            times[name].append(ms(fn)[0])
    base = min(times["Pillow draft (what thumbs.py uses)"])
    for name, got in times.items():
        print(f"{'reduced decode, ' + name:58s} {statistics.median(got):9.1f} ms  best {min(got):6.1f} ms"
              f" ({min(got) / base:.2f}x Pillow's best)")


def pages_of_thumbnails(root: Path, settings: object, photo: bytes, per_page: int = 12) -> None:
    """A grid page of 4000 px JPEGs: all its thumbnails asked for as soon as the page answered
    (what the browser does), then the next page's after the reviewer looked for a while."""
    import shutil

    stored = Filters(decision=("accepted",))
    with ReviewData(App.create(settings)) as data:
        first = data.page(stored, "newest", None, per_page)
        following = data.page(stored, "newest", first.next_cursor, per_page)
        third = data.page(stored, "newest", following.next_cursor, per_page)  # the one made ahead of the next
    source = root / ".bench-photo.jpg"
    source.write_bytes(photo)
    for tile in [*first.tiles, *following.tiles, *third.tiles]:
        location = note_stored_digest(root, tile.id, photo)
        (root / location).parent.mkdir(parents=True, exist_ok=True)
        (root / location).unlink(missing_ok=True)
        os.link(source, root / location)  # one file's bytes for every image: no disk filled
    results = {}
    for ahead in (False, True):
        shutil.rmtree(root / ".thumbs", ignore_errors=True)
        with ReviewData(App.create(settings), warm_thumbnails=ahead) as data:
            data.snapshot()
            started = time.perf_counter()
            page = data.page(stored, "newest", None, per_page)
            for tile in page.tiles:
                assert data.thumbnail(tile.id)
            whole = (time.perf_counter() - started) * 1000
            data.thumbnail_jobs.idle(600)  # the reviewer looks at the page; the next one is made meanwhile
            nxt = data.page(stored, "newest", page.next_cursor, per_page)
            each = [ms(lambda t=tile: data.thumbnail(t.id))[0] for tile in nxt.tiles]
            results[ahead] = (whole, statistics.median(each))
    for k, name in ((0, f"first page's {per_page} thumbnails, asked at once"), (1, "next page, one thumbnail (median)")):
        cold, ahead = results[False][k], results[True][k]
        print(f"{name:58s} {cold:9.1f} ms on request, {ahead:7.1f} ms made ahead ({ahead / cold:.2f}x)")
    if results[True][1] > GOALS["thumb_ms"]:
        print(f"  goal <= {GOALS['thumb_ms']:g} ms: MISSED")


def s3_thumbnail(root: Path, target: str, photo: bytes) -> None:
    from s3_helpers import moto_s3

    class Env:
        def setenv(self, key: str, value: str) -> None:
            os.environ[key] = value

    with moto_s3(Env()) as s3:
        location = note_stored_digest(root, target, photo)
        fs = s3.fs()
        fs.pipe(f"{s3.bucket}/ds/{location}", photo)
        settings = settings_from_dict({"storage": {"root": str(root), "backend": "fsspec"},
                                       "plugins": {"fsspec": s3.options("ds")}})
        for path in (root / ".thumbs").rglob("*.jpg"):
            path.unlink()
        data = ReviewData(App.create(settings))
        data.page(Filters(), "newest", None, 60)
        data.image(target)  # opens the backend (the S3 connection)
        cold, thumb = ms(lambda: data.thumbnail(target))
        assert thumb
        line("S3 (moto): thumbnail of a 4000 px JPEG, cold (read + make)", cold, GOALS["thumb_ms"])
        hot, _ = ms(lambda: data.thumbnail(target), repeat=20)
        line("S3 (moto): thumbnail, cached", hot, GOALS["thumb_ms"])
        image, _ = ms(lambda: data.image(target), repeat=5)
        line("S3 (moto): full image bytes", image, None)
        data.close()


if __name__ == "__main__":
    main()
