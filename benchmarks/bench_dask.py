"""Local engine vs. Dask LocalCluster on this machine, side by side; per-image costs; 5M estimate.

The same folder (the photos in ../shared/faces, each also re-encoded at 1080 px on the
long side, the size Instagram serves) is imported with the chain decode -> face_area ->
dedup -> store, once by the local engine and once on a LocalCluster; then features are
extracted for the kept images, locally and on the cluster. It prints images/s for each,
whether both engines kept the same images, and the per-image costs that docs/scaling.md
uses to estimate a 5M-image run on N workers.

    .venv/bin/python benchmarks/bench_dask.py [--workers 2] [--threads 1] [--limit N]

The CPU is shared with whatever else runs on the machine: figures vary by run. On one
machine a LocalCluster can only lose to the local engine (same cores plus task and
transfer overhead); the point of Dask is more machines.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selfiescope.core.app import App  # noqa: E402
from selfiescope.core.compute import start_local_cluster  # noqa: E402
from selfiescope.core.events import Origin  # noqa: E402
from selfiescope.core.manifest import Manifest  # noqa: E402
from selfiescope.core.plugins import build_registry  # noqa: E402
from selfiescope.core.settings import ComputeSettings, ScrapePipeline, settings_from_dict  # noqa: E402
from selfiescope.pipelines.collecting.collect import collect  # noqa: E402
from selfiescope.core.components import Job  # noqa: E402
from selfiescope.pipelines.collecting.dask_collect import (  # noqa: E402
    ChainSpec, DaskCollector, WorkerChain, WorkItem, _Batch, _JobProgress, collect_on_dask, make_spec, split_chain,
)

FACES = Path(__file__).resolve().parents[2] / "shared" / "faces"
GROUPS = ["geometry", "landmarks", "embedding", "image"]
IMAGES_TOTAL, KEPT_TOTAL = 5_000_000, 2_000_000


def make_inputs(folder: Path, limit: int | None) -> int:
    from PIL import Image

    files = sorted(p for p in FACES.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})[:limit]
    for src in files:
        shutil.copyfile(src, folder / f"{src.parent.name}_{src.name}")
        with Image.open(src) as im:
            im = im.convert("RGB")
            f = 1080 / max(im.size)
            buf = io.BytesIO()
            im.resize((round(im.width * f), round(im.height * f)), Image.LANCZOS).save(buf, "JPEG", quality=88)
        (folder / f"{src.parent.name}_{src.stem}_1080.jpg").write_bytes(buf.getvalue())
    return 2 * len(files)


def settings_for(root: Path, args: argparse.Namespace, engine: str):  # noqa: ANN201
    return settings_from_dict({
        "storage": {"root": str(root)},
        "compute": {"engine": engine, "workers": args.workers, "threads_per_worker": args.threads,
                    "batch_size": args.batch_size},
        "pipelines": {"t": {"kind": "train", "features": GROUPS, "model_dir": str(root / "model"), "workers": 0}},
    })


def decisions(root: Path) -> dict[str, str]:
    db = sqlite3.connect(root / "manifest.sqlite")
    out = dict(db.execute("SELECT content_hash, decision || ':' || COALESCE(reject_code, '') FROM images"))
    db.close()
    return out


def split(pipeline: ScrapePipeline) -> tuple[list[str], list[str]]:
    """The chain's worker half and client half, as the Dask executor splits it (by capability)."""
    return split_chain(pipeline.chain, build_registry().steps)


def worker_cost(settings, pipeline: ScrapePipeline, folder: Path) -> float:  # noqa: ANN001
    """CPU seconds per image of the worker half (decode, face_area, pHash), in this process."""
    spec: ChainSpec = make_spec(App.create(settings), "bench", pipeline, *split(pipeline))
    chain = WorkerChain(spec)
    items = [WorkItem(Origin("folder", str(folder), path=str(p)), "selfie", path=str(p)) for p in sorted(folder.iterdir())]
    started = time.process_time()
    chain.process(items)
    return (time.process_time() - started) / len(items)


async def _client_half(settings, pipeline: ScrapePipeline, items: list[WorkItem], results: list) -> float:  # noqa: ANN001
    manifest = Manifest.at_root(settings.storage.root)
    executor = ThreadPoolExecutor(2)
    run = App.create(settings).run_context("bench", pipeline, manifest, executor=executor)
    run.storage = run.component("storage", settings.storage.backend)
    await run.storage.open()
    steps = [run.component("steps", name) for name in split(pipeline)[1]]
    for step in steps:
        await step.open()
    collector = DaskCollector(run, None, None, None, steps, batch_size=8, window=1)  # type: ignore[arg-type]
    job = Job("folder", pipeline.targets()[0], pipeline.label)
    collector.progress[collector._key(job)] = _JobProgress(job)
    started = time.process_time()
    for i in range(0, len(items), 8):
        await collector._finish(_Batch(job, items[i:i + 8]), results[i:i + 8])
    cost = (time.process_time() - started) / len(items)
    executor.shutdown()
    manifest.close()
    return cost


def client_half_cost(settings, pipeline: ScrapePipeline, folder: Path) -> float:  # noqa: ANN001
    """CPU seconds per image of the client half alone (dedup, store, manifest write), from
    results computed beforehand: what bounds one client, whatever the number of workers."""
    spec = make_spec(App.create(settings), "bench", pipeline, *split(pipeline))
    items = [WorkItem(Origin("folder", str(folder), path=str(p)), "selfie", path=str(p)) for p in sorted(folder.iterdir())]
    results = WorkerChain(spec).process(items)
    return asyncio.run(_client_half(settings, pipeline, items, results))


def feature_cost(settings, n: int) -> float:  # noqa: ANN001
    """CPU seconds per image of all feature groups, computed in this process (no cache)."""
    from selfiescope.pipelines.model import dataset, feature_tasks

    app = App.create(settings)
    registry = app.registry
    pipeline = settings.pipelines["t"]
    extractors = dataset.make_extractors(registry, settings, pipeline)
    manifest = Manifest.at_root(settings.storage.root)
    rows = dataset.load_rows(manifest, pipeline.labels)[:n]
    manifest.close()
    from selfiescope.pipelines.dataset_care.stored import StoredReader

    with StoredReader(app) as reader:  # read first: the figure is the features' CPU alone
        tasks = [feature_tasks.Task(r.content_hash, r.stored, dataset.face_dict(r.box, r.face_area, r.n_faces, None),
                              [e.name for e in extractors], data=reader.read(r.stored)) for r in rows]
    step = dataset.image_step(registry, settings)
    decode = [(registry.steps[step], settings.component_options(step))]
    started = time.process_time()
    feature_tasks.run_tasks(tasks, decode, extractors, 1, lambda *result: None)
    return (time.process_time() - started) / max(len(tasks), 1)


def feature_table(settings, runner=None):  # noqa: ANN001, ANN201
    from selfiescope.pipelines.model.dataset import build_feature_table

    pipeline = settings.pipelines["t"]
    started = time.perf_counter()
    table = build_feature_table(App.create(settings), pipeline, runner=runner)
    return table, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N photos")
    parser.add_argument("--feature-sample", type=int, default=20, help="kept images timed for the feature cost")
    args = parser.parse_args()
    if not FACES.is_dir():
        sys.exit(f"{FACES} (../shared/faces) is absent: nothing to benchmark")
    tmp = Path(tempfile.mkdtemp(prefix="bench-dask-"))
    try:
        inputs = tmp / "in"
        inputs.mkdir()
        n = make_inputs(inputs, args.limit)
        pipeline = ScrapePipeline(kind="import", source="folder", paths=[inputs], label="selfie")
        print(f"{n} images ({n // 2} photos from ../shared/faces + 1080 px copies); {os.cpu_count()} cores, shared")

        local_root, dask_root = tmp / "local", tmp / "dask"
        local_settings = settings_for(local_root, args, "local")
        started = time.perf_counter()
        local = asyncio.run(collect(App.create(local_settings), "bench", pipeline=pipeline))
        local_s = time.perf_counter() - started
        serial_root = tmp / "serial"  # one image at a time: the order dedup sees is the input order
        serial_settings = settings_for(serial_root, args, "local")
        serial_settings = serial_settings.model_copy(update={"engine": serial_settings.engine.model_copy(update={"workers": 1})})
        asyncio.run(collect(App.create(serial_settings), "bench", pipeline=pipeline))

        dask_settings = settings_for(dask_root, args, "dask")
        me = psutil.Process()
        started = time.perf_counter()
        cluster = start_local_cluster(ComputeSettings(workers=args.workers, threads_per_worker=args.threads))
        from distributed import Client

        client = Client(cluster)
        client.run(lambda: __import__("selfiescope.plugins.face_area"))  # imports, not counted as work
        startup_s = time.perf_counter() - started
        try:
            started, cpu = time.perf_counter(), sum(me.cpu_times()[:2])
            remote = asyncio.run(collect_on_dask(App.create(dask_settings), "bench", pipeline=pipeline, client=client))
            dask_s = time.perf_counter() - started
            client_cpu = sum(me.cpu_times()[:2]) - cpu  # this process only: the workers are other processes

            from selfiescope.pipelines.model.dask_train import feature_runner

            table_local, feat_local_s = feature_table(local_settings)
            table_dask, feat_dask_s = feature_table(dask_settings, feature_runner(client, args.batch_size))
        finally:
            client.close()
            cluster.close()

        local_d, serial_d, dask_d = decisions(local_root), decisions(serial_root), decisions(dask_root)
        differ = sum(local_d.get(h) != dask_d.get(h) for h in set(local_d) | set(dask_d))
        differ_serial = sum(serial_d.get(h) != dask_d.get(h) for h in set(serial_d) | set(dask_d))
        cluster_desc = f"LocalCluster {args.workers}x{args.threads}"
        print("\nimport (decode -> face_area -> dedup -> store)")
        print(f"  {'engine':<26}{'images':>8}{'kept':>6}{'seconds':>9}{'images/s':>10}")
        print(f"  {'local (threads=cores)':<26}{local.seen:>8}{local.accepted:>6}{local_s:>9.2f}{local.seen / local_s:>10.1f}")
        print(f"  {cluster_desc:<26}{remote.seen:>8}{remote.accepted:>6}{dask_s:>9.2f}{remote.seen / dask_s:>10.1f}")
        print(f"  dask / local speed: {local_s / dask_s:.2f}x; cluster start-up {startup_s:.1f} s (not counted)")
        print(f"  images decided differently from the local run: {differ} of {len(local_d)}"
              + (" (the local engine runs several images at once, so which copy of a near-duplicate pair"
                 " reaches dedup first varies)" if differ else ""))
        print(f"  ... from a local run with engine.workers = 1 (input order): {differ_serial} of {len(serial_d)}")

        rows = len(table_local.rows)
        print("\nfeatures (" + ", ".join(GROUPS) + f") for the {rows} kept images")
        print(f"  {'local (process pool)':<26}{rows:>8}{'':>6}{feat_local_s:>9.2f}{rows / feat_local_s:>10.1f}")
        print(f"  {cluster_desc:<26}{len(table_dask.rows):>8}{'':>6}{feat_dask_s:>9.2f}{len(table_dask.rows) / feat_dask_s:>10.1f}")

        w = worker_cost(local_settings, pipeline, inputs)
        c = client_half_cost(settings_for(tmp / "client-half", args, "dask"), pipeline, inputs)
        f = feature_cost(local_settings, args.feature_sample)
        print("\nper-image costs, CPU time (less sensitive to the shared CPU than wall time)")
        print(f"  worker half of the chain (decode, face_area, pHash): {w * 1000:7.1f} ms")
        print(f"  client half alone (dedup, store, manifest write):    {c * 1000:7.1f} ms")
        print(f"  client process in the Dask run, per image:           {client_cpu / remote.seen * 1000:7.1f} ms"
              f"  (+ the LocalCluster scheduler and task traffic; batches of {args.batch_size})")
        print(f"  features, all groups, per kept image:                {f * 1000:7.1f} ms")
        print(f"\nestimate for {IMAGES_TOTAL:,} images ({KEPT_TOTAL:,} kept), one core per worker, perfect scaling")
        print(f"  {'workers':>8}{'import h':>10}{'features h':>12}{'total h':>9}   (import bound: client >= {IMAGES_TOTAL * c / 3600:.1f} h)")
        for workers in (2, 8, 32, 128, 512):
            imp = max(IMAGES_TOTAL * w / workers, IMAGES_TOTAL * c) / 3600
            feat = KEPT_TOTAL * f / workers / 3600
            print(f"  {workers:>8}{imp:>10.1f}{feat:>12.1f}{imp + feat:>9.1f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
