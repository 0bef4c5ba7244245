"""The review app's web layer on a synthetic 100k-image manifest: server time of whole requests
(routing, gate, data layer, template) as the page makes them, and the server's memory.

* the first grid page (``/``: first page of tiles + facets with counts + labels, rendered),
* a facet change (``/?label=selfie&decision=rejected``), the next page (``/api/page?cursor=``),
* the poll (``/api/version``) and a detail view,

each the median of ``--repeat`` runs after one warm-up, through Starlette's TestClient (no socket).
Goals from the issue: first grid page and a facet change <= 300 ms each; server memory <= 250 MB.
The data layer's own figures (thumbnails of a 4000 px JPEG, S3) are in bench_review.py.

    .venv/bin/python benchmarks/bench_review_web.py [--rows 100000] [--repeat 5]

Times are wall-clock medians on a shared machine: they vary by run. No assertion.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from selfiescope.core.app import App  # noqa: E402
from selfiescope.core.settings import settings_from_dict  # noqa: E402
from selfiescope.review.app import create_app  # noqa: E402
from selfiescope.review.data import ReviewData  # noqa: E402
from selfiescope.review.security import Gate  # noqa: E402
from selfiescope.testing.review_manifest import build  # noqa: E402

GOAL_MS = 300
GOAL_MB = 250


def timed(client: TestClient, path: str, repeat: int) -> tuple[float, int]:
    answer = client.get(path)  # warm-up (the data layer's snapshot of the manifest is read once)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        answer = client.get(path)
        times.append(time.perf_counter() - t0)
        assert answer.status_code == 200, (path, answer.status_code, answer.text[:200])
    return statistics.median(times) * 1000, len(answer.content)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    process = psutil.Process()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        t0 = time.perf_counter()
        hashes = build(root, args.rows, seed=1)
        print(f"synthetic manifest: {args.rows} images in {time.perf_counter() - t0:.1f}s")
        rss_before = process.memory_info().rss
        settings = settings_from_dict({"storage": {"root": str(root)}})
        data = ReviewData(App.create(settings))
        gate = Gate.for_address("127.0.0.1", 8765)
        with TestClient(create_app(data, gate), base_url="http://127.0.0.1:8765") as client:
            t0 = time.perf_counter()
            first = client.get(f"/?token={gate.token}")
            print(f"first visit (token, redirect, first grid page, cold snapshot): {(time.perf_counter() - t0) * 1000:.0f} ms")
            assert first.status_code == 200
            cursor = client.get("/api/page?limit=120").json()["next_cursor"]
            rows = [
                ("first grid page", "/"),
                ("a facet change", "/?label=selfie&decision=rejected"),
                ("two facets + sort by face area", "/?job=selfie&detector=haar&sort=face_area"),
                ("next page (JSON)", f"/api/page?cursor={cursor}"),
                ("facets (JSON)", "/api/facets?label=portrait"),
                ("the poll", "/api/version"),
                ("a detail view", f"/i/{hashes[len(hashes) // 2]}"),
            ]
            print(f"{'request':34} {'median ms':>10} {'vs goal':>8} {'bytes':>9}")
            for name, path in rows:
                ms, size = timed(client, path, args.repeat)
                print(f"{name:34} {ms:10.1f} {ms / GOAL_MS:7.2f}x {size:9d}")
        rss = process.memory_info().rss
        data.close()
        print(f"server memory: {rss / 2**20:.0f} MB resident ({(rss - rss_before) / 2**20:.0f} MB for the app and its "
              f"snapshot), {rss / 2**20 / GOAL_MB:.2f}x the {GOAL_MB} MB goal")


if __name__ == "__main__":
    main()
