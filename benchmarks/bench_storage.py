"""Import and train throughput: the fsspec backend on S3 (moto's server on loopback) vs the files backend.

Both runs import the same real photos (../shared/faces/{selfie,portrait}, the default chain
decode -> face_area -> dedup -> store) into a fresh root, then train once (features
computed, every image read back through the backend) and once more (features cached).
moto answers on 127.0.0.1, so the S3 figures show the cost of the protocol (a PUT per
image, a GET per image read, s3fs's event loop) without network latency: a real bucket
adds its round trips on top, hidden partly by the read-ahead (dataset.READ_AHEAD).

    .venv/bin/python benchmarks/bench_storage.py [--per-label 40] [--features geometry,image] [--repeat 2]

The 2 cores are shared with whatever else runs on the machine: figures vary by run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the moto fixture's helper, shared with the tests

from selfiescope.core.app import App
from selfiescope.core.settings import ScrapePipeline, Settings, settings_from_dict  # noqa: E402
from selfiescope.pipelines.collecting.collect import collect  # noqa: E402
from selfiescope.pipelines.model.train import train  # noqa: E402

FACES = REPO.parent / "shared" / "faces"


class Environ:
    """``setenv`` on os.environ (what s3_helpers.moto_s3 expects from pytest's monkeypatch)."""

    def setenv(self, key: str, value: str) -> None:
        os.environ[key] = value


def settings_for(root: Path, model_dir: Path, features: list[str], fsspec: dict | None) -> Settings:
    data = {
        "storage": {"root": str(root), **({"backend": "fsspec"} if fsspec else {})},
        "plugins": {"fsspec": fsspec} if fsspec else {},
        "pipelines": {"t": {"kind": "train", "labels": ["selfie", "portrait"], "features": features,
                            "model_dir": str(model_dir), "folds": 3, "report": False}},
    }
    return settings_from_dict(data)


def run(name: str, base: Path, inputs: dict[str, Path], features: list[str], fsspec: dict | None) -> dict[str, float]:
    root = base / name / "root"
    settings = settings_for(root, base / name / "model", features, fsspec)
    started, cpu = time.perf_counter(), time.process_time()
    accepted = 0
    for label, folder in inputs.items():
        pipeline = ScrapePipeline(kind="import", source="folder", paths=[folder], label=label)
        stats = asyncio.run(collect(App.create(settings), "import", pipeline=pipeline))
        if stats.errors or stats.failed:
            raise SystemExit(f"{name}: import failed: {stats.as_dict()}")
        accepted += stats.accepted
    import_s, import_cpu = time.perf_counter() - started, time.process_time() - cpu
    started, cpu = time.perf_counter(), time.process_time()
    first = train(App.create(settings), "t")
    train_s, train_cpu = time.perf_counter() - started, time.process_time() - cpu
    started = time.perf_counter()
    train(App.create(settings.model_copy(update={"pipelines": {"t": settings.pipelines["t"].model_copy(
        update={"model_dir": base / name / "model2"})}})), "t")
    cached_s = time.perf_counter() - started
    return {"seen": sum(len(list(f.glob("*.jpg"))) for f in inputs.values()), "stored": accepted,
            "rows": len(first.table.rows), "import_s": import_s, "train_s": train_s, "cached_s": cached_s,
            "import_cpu": import_cpu, "train_cpu": train_cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-label", type=int, default=40)
    parser.add_argument("--features", default="geometry,image")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    if not FACES.is_dir():
        raise SystemExit(f"{FACES} is absent: the benchmark needs the shared face photos")
    from s3_helpers import moto_s3

    features = args.features.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        inputs = {}
        for label in ("selfie", "portrait"):  # links, not copies: the photos stay where they are
            folder = base / "in" / label
            folder.mkdir(parents=True)
            for src in sorted((FACES / label).glob("*.jpg"))[:args.per_label]:
                (folder / src.name).symlink_to(src)
            inputs[label] = folder
        runs: dict[str, list[dict[str, float]]] = {"files": [], "fsspec s3 (moto)": []}
        with moto_s3(Environ()) as s3:
            for i in range(args.repeat):  # interleaved, each from a fresh root: one-time costs (imports,
                # model loading) and other load on the shared cores fall on both; the fastest run counts
                runs["files"].append(run(f"files{i}", base, inputs, features, None))
                runs["fsspec s3 (moto)"].append(run(f"s3{i}", base, inputs, features, s3.options(f"bench{i}")))
        results = {name: {k: min(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
    print(f"{args.per_label} photos per label from {FACES}, features {args.features}, {os.cpu_count()} CPUs shared, "
          f"best of {args.repeat} interleaved runs")
    print("wall seconds and images/s; 'cpu s' = CPU of this process, moto's server threads included")
    print(f"{'backend':<18} {'stored':>6} {'import s':>9} {'img/s':>7} {'cpu s':>6} {'train s':>8} {'img/s':>7} {'cpu s':>6} "
          f"{'cached train s':>15}")
    for name, r in results.items():
        print(f"{name:<18} {r['stored']:>6} {r['import_s']:>9.2f} {r['seen'] / r['import_s']:>7.1f} {r['import_cpu']:>6.2f} "
              f"{r['train_s']:>8.2f} {r['rows'] / r['train_s']:>7.1f} {r['train_cpu']:>6.2f} {r['cached_s']:>15.2f}")
    files, s3r = results["files"], results["fsspec s3 (moto)"]
    print(f"ratio s3/files, wall: import {s3r['import_s'] / files['import_s']:.2f}x, train {s3r['train_s'] / files['train_s']:.2f}x, "
          f"cached train {s3r['cached_s'] / files['cached_s']:.2f}x; cpu: import {s3r['import_cpu'] / files['import_cpu']:.2f}x, "
          f"train {s3r['train_cpu'] / files['train_cpu']:.2f}x")


if __name__ == "__main__":
    main()
