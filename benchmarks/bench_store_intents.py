"""What noting a store intent before every write costs: an import with intents (as shipped)
against the same import with the intent a no-op, on the files backend.

Each image costs one more small manifest commit (WAL, synchronous=NORMAL) before its write.

    .venv/bin/python benchmarks/bench_store_intents.py [--images 300] [--repeat 3]

The 2 cores are shared with whatever else runs on the machine: figures vary by run.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from selfiescope.core.app import App
from selfiescope.core.settings import ScrapePipeline, settings_from_dict  # noqa: E402
from selfiescope.pipelines.collecting.collect import collect  # noqa: E402
from selfiescope.plugins import store  # noqa: E402


def photos(folder: Path, n: int) -> None:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(buf, "JPEG", quality=85)
        (folder / f"{i:05d}.jpg").write_bytes(buf.getvalue())


def one_import(folder: Path, root: Path) -> float:
    settings = settings_from_dict({"storage": {"root": str(root)}})
    pipeline = ScrapePipeline(kind="import", source="folder", paths=[folder], label="selfie", chain=["decode", "store"])
    start = time.perf_counter()
    stats = asyncio.run(collect(App.create(settings), "import", pipeline=pipeline))
    assert stats.accepted == len(list(folder.iterdir())), stats.as_dict()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        photos(folder, args.images)
        real = store.note_intent
        with_intent, without = [], []
        for i in range(args.repeat):
            with_intent.append(one_import(folder, Path(tmp) / f"a{i}"))
            store.note_intent = lambda *a: None  # type: ignore[assignment]
            try:
                without.append(one_import(folder, Path(tmp) / f"b{i}"))
            finally:
                store.note_intent = real
    a, b = statistics.median(with_intent), statistics.median(without)
    print(f"{args.images} images, median of {args.repeat}: with intents {a:.2f} s ({args.images / a:.0f}/s), "
          f"without {b:.2f} s ({args.images / b:.0f}/s); ratio {a / b:.2f}")


if __name__ == "__main__":
    main()
