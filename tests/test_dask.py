"""Scaling out on Dask: a real 2-worker LocalCluster (processes), shared by the module.

The same folder goes through the local engine and through Dask; both must keep exactly the
same images for the same reasons, even when a worker is killed in the middle of the run.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import shutil
import signal
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from selfiescope.core.app import App
from selfiescope.core.components import Job, Source, Step
from selfiescope.core.compute import ComputeError, dask_client, start_local_cluster, with_scheduler
from selfiescope.core.events import ImageEvent, Origin
from selfiescope.core.hookspecs import hookimpl
from selfiescope.core.plugins import build_registry
from selfiescope.core.settings import ComputeSettings, ScrapePipeline, Settings, settings_from_dict
from selfiescope.core.checks import check_components
from selfiescope.pipelines.collecting.collect import collect
from selfiescope.pipelines.collecting.dask_collect import collect_on_dask, split_chain

distributed = pytest.importorskip("distributed")
FACES = Path(__file__).resolve().parents[2] / "shared" / "faces"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

PICKS = [
    *(f"portrait/caltech_image_{i:04d}.jpg" for i in range(1, 16)),
    "portrait/obama-240p.jpg", "portrait/obama-480p.jpg", "portrait/obama-720p.jpg",  # one photo, 3 sizes
    "portrait/biden.jpg", "portrait/two_people.jpg", "portrait/tests__test_images__32bit.png",
    "group/t1.jpg",
]
N_SELFIES = 14


# --- fixtures ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client():
    cluster = start_local_cluster(ComputeSettings(engine="dask", workers=2, threads_per_worker=1))
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real photos (copied to a temp folder), plus bad files and an exact copy, made here."""
    if not FACES.is_dir():
        pytest.skip(f"real face photos not available: {FACES} (../shared/faces) is absent")
    from PIL import Image

    folder = tmp_path_factory.mktemp("photos")
    selfies = sorted((FACES / "selfie").glob("*.jpg"))[:N_SELFIES]
    for src in [FACES / p for p in PICKS] + selfies:
        shutil.copyfile(src, folder / f"{src.parent.name}_{src.name}")
    shutil.copyfile(FACES / PICKS[0], folder / "zz_exact_copy.jpg")
    with Image.open(FACES / PICKS[0]) as im:  # the same photo, resized and re-encoded
        im.resize((im.width * 9 // 10, im.height * 9 // 10)).save(folder / "zz_resized_copy.jpg", quality=80)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "page.jpg").write_bytes(b"<!doctype html><html><body>login</body></html>")
    buf = io.BytesIO()
    Image.new("RGB", (400, 300), (120, 90, 60)).save(buf, "JPEG")
    (folder / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    Image.new("RGB", (20, 20), (0, 0, 0)).save(folder / "tiny.png")
    return folder


def settings_at(root: Path, **compute: Any) -> Settings:
    return settings_from_dict({
        "storage": {"root": str(root)},
        "engine": {"workers": 1},  # one image at a time: the local order is the input order
        "compute": {"engine": "dask", "batch_size": 4, **compute},
    })


def import_pipeline(folder: Path) -> ScrapePipeline:
    return ScrapePipeline(kind="import", source="folder", paths=[folder], label="selfie")


def decisions(root: Path) -> dict[str, tuple[Any, ...]]:
    db = sqlite3.connect(root / "manifest.sqlite")
    rows = db.execute(
        "SELECT content_hash, decision, reject_code, phash, face_box, face_boxes, face_area, n_faces, width, height,"
        " size, id, origin_path FROM images"
    ).fetchall()
    db.close()
    return {r[0]: (*r[1:-1], Path(r[-1]).name if r[-1] else None) for r in rows}


def stored_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != "manifest.sqlite"
            and not p.name.startswith("manifest.sqlite")}


@pytest.fixture(scope="module")
def local_run(photo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("local")
    settings = settings_at(root).model_copy(update={"compute": ComputeSettings()})
    stats = asyncio.run(collect(App.create(settings), "import", pipeline=import_pipeline(photo_dir)))
    assert stats.accepted > 10 and stats.rejected > 5, stats.as_dict()
    return root, stats.as_dict()


# --- settings and client -----------------------------------------------------------------
def test_split_chain_runs_the_leading_worker_safe_steps_on_workers() -> None:
    steps = build_registry(entrypoints=False).steps
    steps = {**steps, "mystep": Step}  # a step that does not declare worker_safe
    chain = ["decode", "face_area", "dedup", "store"]
    assert split_chain(chain, steps) == (["decode", "face_area"], ["dedup", "store"])
    # [compute] worker_steps narrows the worker-safe head
    assert split_chain(chain, steps, ["decode"]) == (["decode"], ["face_area", "dedup", "store"])
    # a client-only step in front keeps everything after it on the client
    assert split_chain(["mystep", "decode", "store"], steps) == ([], ["mystep", "decode", "store"])


def test_worker_steps_naming_a_step_that_is_not_worker_safe_is_a_settings_error() -> None:
    settings = settings_from_dict({"compute": {"worker_steps": ["decode", "dedup", "nosuch"]}})
    problems = check_components(settings, build_registry(entrypoints=False))
    assert any(p.startswith("compute.worker_steps[1]: step 'dedup' is not worker_safe") for p in problems), problems
    assert any(p.startswith("compute.worker_steps[2]: unknown step 'nosuch'") for p in problems), problems


def test_scheduler_option_switches_the_engine() -> None:
    s = settings_from_dict({})
    assert s.compute.engine == "local"
    d = with_scheduler(s, "tcp://10.1.2.3:8786")
    assert (d.compute.engine, d.compute.scheduler) == ("dask", "tcp://10.1.2.3:8786")
    assert with_scheduler(s, None) is s
    env = settings_from_dict({"compute": {"engine": "dask", "scheduler": "local", "workers": 3}})
    assert env.compute.workers == 3


def test_unreachable_scheduler_is_a_clear_error() -> None:
    compute = ComputeSettings(engine="dask", scheduler="tcp://127.0.0.1:9", connect_timeout_s=1)
    with pytest.raises(ComputeError, match=r"cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        with dask_client(compute):
            pass


# --- collect on Dask ---------------------------------------------------------------------
def test_import_on_dask_keeps_exactly_what_the_local_engine_keeps(
    client: Any, photo_dir: Path, local_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    local_root, local_stats = local_run
    settings = settings_at(tmp_path)
    stats = asyncio.run(collect_on_dask(App.create(settings), "import", pipeline=import_pipeline(photo_dir), client=client))

    assert decisions(tmp_path) == decisions(local_root)
    assert stored_files(tmp_path) == stored_files(local_root)
    got = stats.as_dict()
    for key in ("seen", "accepted", "rejected", "rejected_by_reason", "bytes_in", "bytes_stored"):
        assert got[key] == local_stats[key], key
    reasons = got["rejected_by_reason"]
    assert {"empty", "not_image", "truncated", "too_small", "duplicate", "near_duplicate"} <= set(reasons), reasons
    run = sqlite3.connect(tmp_path / "manifest.sqlite").execute("SELECT status, stats FROM runs").fetchone()
    assert run[0] == "finished" and json.loads(run[1])["dask"]["workers"] == 2


class _FinalStates:
    """Each job's settled states with its kept count at that moment, as the progress line shows them."""

    def __init__(self) -> None:
        self.final: list[tuple[str, str, int]] = []

    @hookimpl
    def selfiescope_run_started(self, run):
        def on_state(job: str, state: str) -> None:
            if job in run.stats.settled_jobs:
                self.final.append((job, state, run.stats.per_job.get(job, {}).get("accepted", 0)))

        run.stats.state_listeners.append(on_state)


def test_a_job_on_dask_ends_with_a_done_line_that_counts_every_image_kept(
    client: Any, photo_dir: Path, tmp_path: Path
) -> None:
    states = _FinalStates()
    app = App.create(settings_at(tmp_path), plugins=[states])
    stats = asyncio.run(collect_on_dask(app, "import", pipeline=import_pipeline(photo_dir), client=client))
    assert states.final and all(state == "done" for _, state, _ in states.final)
    assert {job: kept for job, _, kept in states.final} == {job: c["accepted"] for job, c in stats.per_job.items()}


def test_collect_dispatches_to_dask_by_settings(photo_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """``engine = "dask"`` in settings is enough: collect(app) runs the jobs with the executor
    :data:`EXECUTORS` maps it to, inside the one lifecycle (a run record, the hooks)."""
    from selfiescope.pipelines.collecting import lifecycle
    from selfiescope.pipelines.collecting.dask_collect import DaskExecutor

    assert lifecycle.executor_class("dask") is DaskExecutor
    seen: dict[str, Any] = {}

    class Recorder:
        def __init__(self, app):  # noqa: ANN001 - the executor signature
            seen["made"] = app.settings.compute.engine

        async def __aenter__(self):
            return self

        async def __aexit__(self, *exc):
            seen["exited"] = True

        def steps_here(self, registry, chain):  # noqa: ANN001
            return [name for name in chain if not registry.steps[name].worker_safe]

        async def execute(self, run, source, steps, jobs):  # noqa: ANN001
            seen.update(run_id=run.run_id, steps=[s.name for s in steps], jobs=[j.target for j in jobs])

    monkeypatch.setitem(lifecycle.EXECUTORS, "dask", Recorder)
    stats = asyncio.run(collect(App.create(settings_at(tmp_path)), "import", pipeline=import_pipeline(photo_dir)))
    assert seen == {"made": "dask", "exited": True, "run_id": 1, "steps": ["dedup", "store"], "jobs": [str(photo_dir)]}
    status = sqlite3.connect(tmp_path / "manifest.sqlite").execute("SELECT status FROM runs").fetchone()[0]
    assert stats.status == status == "finished"


class DownloadSource(Source):
    """Stands for a scraper: its bytes come from the network, so they travel with the task."""

    name = "download"

    async def events(self, job: Job) -> AsyncIterator[ImageEvent]:
        for i, path in enumerate(sorted(Path(job.target).iterdir())):
            origin = Origin(source=self.name, job=job.target, post_id=f"p{i}", image_url=f"https://cdn.example/{i}.jpg")
            yield ImageEvent(origin=origin, label=job.label, data=path.read_bytes())


class DownloadPlugin:
    @hookimpl
    def selfiescope_sources(self) -> list[type[Source]]:
        return [DownloadSource]


def test_a_downloading_source_sends_bytes_and_gets_the_same_decisions(
    client: Any, photo_dir: Path, tmp_path: Path
) -> None:
    pipeline = ScrapePipeline(kind="scrape", source="download", paths=[photo_dir], label="selfie")
    local_settings = settings_at(tmp_path / "local").model_copy(update={"compute": ComputeSettings()})
    local = asyncio.run(collect(App.create(local_settings, plugins=[DownloadPlugin()]), "s", pipeline=pipeline))
    remote = asyncio.run(collect_on_dask(App.create(settings_at(tmp_path / "dask"), plugins=[DownloadPlugin()]), "s", pipeline=pipeline, client=client))
    assert remote.as_dict()["rejected_by_reason"] == local.as_dict()["rejected_by_reason"]
    assert decisions(tmp_path / "dask") == decisions(tmp_path / "local")
    db = sqlite3.connect(tmp_path / "dask" / "manifest.sqlite")
    assert db.execute("SELECT COUNT(*) FROM posts_seen").fetchone()[0] == remote.seen  # resume works as locally


def batches_lost_with_a_worker(dask_scheduler: Any) -> int:
    # A batch is lost whether the worker was still running it or held its result ungathered:
    # which of the two a SIGKILL meets is a matter of timing, and either must be recomputed.
    return sum(1 for key, start, finish, _, stimulus, *_ in dask_scheduler.transition_log
               if "run_batch" in str(key) and start in ("processing", "memory")
               and stimulus.startswith("handle-worker-cleanup"))


class WorkerKiller:
    """Kills one worker process (SIGKILL) as soon as the first result reaches the client."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.pids = client.run(os.getpid)
        self.killed: int | None = None

    @hookimpl
    def selfiescope_image_accepted(self, event: Any, run: Any) -> None:
        self._kill()

    @hookimpl
    def selfiescope_image_rejected(self, event: Any, run: Any) -> None:
        self._kill()

    def _kill(self) -> None:
        if self.killed is None:
            self.killed = next(iter(self.pids.values()))
            os.kill(self.killed, signal.SIGKILL)


def test_a_worker_killed_mid_import_loses_and_duplicates_nothing(
    client: Any, photo_dir: Path, local_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    local_root, local_stats = local_run
    killer = WorkerKiller(client)
    settings = settings_at(tmp_path, batch_size=2)
    stats = asyncio.run(collect_on_dask(App.create(settings, plugins=[killer]), "import", pipeline=import_pipeline(photo_dir), client=client))

    assert killer.killed is not None
    assert client.run_on_scheduler(batches_lost_with_a_worker) >= 1  # it died holding a batch
    client.wait_for_workers(2, timeout=60)
    assert killer.killed not in client.run(os.getpid).values()  # the nanny replaced it
    n_files = sum(1 for _ in photo_dir.iterdir())
    assert stats.seen == n_files == local_stats["seen"]  # each image decided exactly once
    assert decisions(tmp_path) == decisions(local_root)
    assert stored_files(tmp_path) == stored_files(local_root)
    db = sqlite3.connect(tmp_path / "manifest.sqlite")
    assert db.execute("SELECT COUNT(*) FROM rejections").fetchone()[0] == local_stats["rejected"]


# --- features and training on Dask -------------------------------------------------------
GROUPS = ["geometry", "landmarks", "image"]


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A rendered dataset whose label depends on where the face sits (tests/train_helpers.py)."""
    from train_helpers import rendered_dataset

    return rendered_dataset(tmp_path_factory.mktemp("synth"), 26, 15)


def synth_settings(root: Path, model_dir: Path) -> Settings:
    from train_helpers import train_settings

    return train_settings(root, model_dir, GROUPS, workers=1, folds=3)


def feature_cache(root: Path) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(root / "manifest.sqlite")
    rows = db.execute("SELECT content_hash, extractor, version, data FROM features ORDER BY 1, 2").fetchall()
    db.close()
    return rows


def test_features_on_dask_are_identical_and_cached(client: Any, synth_root: Path, tmp_path: Path) -> None:
    import numpy as np

    from selfiescope.pipelines.model.dask_train import feature_runner
    from selfiescope.pipelines.model.dataset import build_feature_table

    settings = synth_settings(synth_root, tmp_path / "unused")
    pipeline, app = settings.pipelines["t"], App.create(settings)
    local = build_feature_table(app, pipeline)
    local_cache = feature_cache(synth_root)
    assert local.computed == len(local.rows) > 30 and local_cache
    sqlite3.connect(synth_root / "manifest.sqlite", isolation_level=None).execute("DELETE FROM features")

    runner = feature_runner(client, batch_size=5)
    remote = build_feature_table(app, pipeline, runner=runner)
    assert remote.computed == len(remote.rows) and not remote.failed
    assert remote.columns == local.columns
    assert [r.content_hash for r in remote.rows] == [r.content_hash for r in local.rows]
    assert np.array_equal(remote.X, local.X, equal_nan=True)
    assert feature_cache(synth_root) == local_cache  # same keys, same JSON, written by the client

    again = build_feature_table(app, pipeline, runner=runner)
    assert (again.computed, again.cached) == (0, len(local.rows))


def test_dask_lightgbm_scores_like_local_lightgbm(client: Any) -> None:
    import numpy as np
    from sklearn.datasets import make_classification
    from sklearn.metrics import accuracy_score, roc_auc_score

    from selfiescope.pipelines.model.dask_train import dask_fit
    from selfiescope.pipelines.model.train import default_params, fit_model, predict_proba

    X, y = make_classification(n_samples=3000, n_features=20, n_informative=8, weights=[0.6], flip_y=0.03,
                               random_state=0)
    cols = [f"f{i}" for i in range(X.shape[1])]
    fit_idx, val_idx, test_idx = np.split(np.random.default_rng(0).permutation(len(y)), [1800, 2300])
    params = {**default_params(0), "n_jobs": 1, "n_estimators": 300}
    scores = {}
    for name, fit in (("local", fit_model), ("dask", dask_fit(client))):
        fitted = fit(X[fit_idx], y[fit_idx], params, columns=cols, X_valid=X[val_idx], y_valid=y[val_idx])
        prob = predict_proba(fitted, X[test_idx])
        scores[name] = (roc_auc_score(y[test_idx], prob), accuracy_score(y[test_idx], prob >= 0.5), fitted)
    import lightgbm

    assert type(scores["dask"][2].model) is lightgbm.LGBMClassifier  # a plain local model
    assert scores["local"][0] > 0.9
    assert abs(scores["dask"][0] - scores["local"][0]) < 0.02, scores
    assert abs(scores["dask"][1] - scores["local"][1]) < 0.03, scores
    assert 10 < scores["dask"][2].best_iteration < 1000  # the validation set chose the round


def test_train_on_dask_writes_a_model_that_predicts_without_a_cluster(
    client: Any, synth_root: Path, tmp_path: Path
) -> None:
    import selfiescope
    from selfiescope.pipelines.model.dask_train import train_on_dask
    from selfiescope.pipelines.model.train import train

    local = train(App.create(synth_settings(synth_root, tmp_path / "local")), "t")
    remote = train_on_dask(App.create(synth_settings(synth_root, tmp_path / "dask")), "t", client=client)

    assert {p.name for p in (tmp_path / "dask").iterdir()} >= {"model.txt", "schema.json", "metrics.json", "versions.json"}
    schema = json.loads((tmp_path / "dask" / "schema.json").read_text())
    local_schema = json.loads((tmp_path / "local" / "schema.json").read_text())
    # the same model description; "files" records each folder's own bytes (timings, plots)
    assert schema.pop("files").keys() == local_schema.pop("files").keys()
    assert schema == local_schema
    lm, dm = local.metrics["cv"]["lightgbm"], remote.metrics["cv"]["lightgbm"]
    assert lm["roc_auc"] > 0.9 and dm["roc_auc"] > 0.9, (lm, dm)
    assert abs(dm["roc_auc"] - lm["roc_auc"]) <= 0.05 and abs(dm["accuracy"] - lm["accuracy"]) <= 0.1, (lm, dm)
    assert remote.metrics["dataset"]["features_computed"] == 0  # the cache served both trainings

    pictures = sorted((synth_root / "in" / "selfie").glob("*.jpg"))[:3] + sorted((synth_root / "in" / "portrait").glob("*.jpg"))[:3]
    predictions = selfiescope.load_model(tmp_path / "dask").predict(pictures)  # no client involved
    assert len(predictions) == 6


def test_train_dispatches_to_dask_by_settings(tmp_path: Path, monkeypatch) -> None:
    """``engine = "dask"`` (or ``--scheduler``) is enough: train(app) hands the run to the Dask pipeline."""
    from selfiescope.pipelines.model.train import train

    monkeypatch.setattr("selfiescope.pipelines.model.dask_train.train_on_dask", lambda settings, name, **kw: ("dask", name))
    settings = with_scheduler(synth_settings(tmp_path, tmp_path / "model"), "tcp://10.0.0.1:8786")
    assert train(App.create(settings), "t") == ("dask", "t")


# --- capabilities, not names ---------------------------------------------------------------
class Observed:
    def __init__(self) -> None:
        self.accepted: list[ImageEvent] = []

    @hookimpl
    def selfiescope_image_accepted(self, event: Any, run: Any) -> None:
        self.accepted.append(event)


def test_a_third_party_worker_safe_step_and_precompute_run_on_the_workers(client: Any, tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    import dask_worker_plugin

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(photos / f"{i}.png")
    pipeline = ScrapePipeline(kind="import", source="folder", paths=[photos], label="selfie",
                              chain=["decode", "worker_mark", "ahead", "store"])
    observed = Observed()
    stats = asyncio.run(collect_on_dask(App.create(settings_at(tmp_path / "data"), plugins=[dask_worker_plugin, observed]), "i", pipeline=pipeline, client=client))
    assert stats.accepted == 6, stats.as_dict()
    workers = set(client.run(os.getpid).values())
    assert os.getpid() not in workers
    for event in observed.accepted:
        assert event.notes["worker_mark_pid"] in workers  # the worker_safe step ran on a worker
        assert event.notes["ahead_pid"] in workers  # so did the client step's precompute
        assert event.notes["ahead_precomputed"] is True  # and its process used what it found
        assert event.notes["ahead_process_pid"] == os.getpid()


def test_a_rerun_on_dask_skips_stored_files_as_the_local_engine_does(
    client: Any, photo_dir: Path, local_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """The folder source's resume skip runs on Dask too (its remote_items): a rerun does not
    send stored files to the workers, nor record them again."""
    local_root, _ = local_run
    for name in ("local", "dask"):
        shutil.copytree(local_root, tmp_path / name)
    before = decisions(local_root)
    local_settings = settings_at(tmp_path / "local").model_copy(update={"compute": ComputeSettings()})
    local = asyncio.run(collect(App.create(local_settings), "import", pipeline=import_pipeline(photo_dir))).as_dict()
    remote = asyncio.run(collect_on_dask(App.create(settings_at(tmp_path / "dask")), "import", pipeline=import_pipeline(photo_dir),
                                         client=client)).as_dict()
    stored_hashes = {h for h, row in before.items() if row[0] == "accepted"}
    assert len(stored_hashes) > 10 and local["accepted"] == 0
    for key in ("seen", "accepted", "rejected", "rejected_by_reason", "failed"):
        assert remote.get(key) == local.get(key), key
    files = [p for p in photo_dir.iterdir() if p.is_file()]
    n_stored_files = sum(1 for p in files if hashlib.sha256(p.read_bytes()).hexdigest() in stored_hashes)
    assert remote["seen"] == len(files) - n_stored_files  # every stored file skipped (copies too), nothing else
    assert decisions(tmp_path / "dask") == decisions(tmp_path / "local") == before
    assert stored_files(tmp_path / "dask") == stored_files(local_root)
