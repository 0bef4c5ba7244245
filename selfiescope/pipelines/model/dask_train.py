"""Features and LightGBM training on a Dask cluster.

Two pieces plug into the local train pipeline (:mod:`.train`, :mod:`.dataset`), which
stays in charge of everything else (dataset listing, the feature cache, grouped CV,
metrics, the artifacts folder):

- :func:`feature_runner`: runs the feature tasks on the workers, in batches, with the
  local per-image function (:mod:`.feature_tasks`), so the values are the local ones; the client
  stays the only writer of the feature cache.
- :func:`dask_fit`: fits ``lightgbm.dask.DaskLGBMClassifier`` on the cluster and returns
  its local twin (``to_local()``), so the saved model is the usual ``model.txt`` and
  ``predict`` needs no cluster. Distributed LightGBM has no early stopping (workers would
  stop at different rounds), so the best round is chosen afterwards on the validation
  set, with the same rule as LightGBM's early-stopping callback.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ...core.app import App
from ...core.components import FeatureExtractor
from ...core.compute import dask_client, worker_count
from . import dataset, feature_tasks
from .dataset import Progress
from .feature_tasks import Task
from .train import Fitted, TrainResult, _balance, train

if TYPE_CHECKING:  # pragma: no cover
    from distributed import Client

log = logging.getLogger("selfiescope.dask")
OnResult = Callable[[str, "dict[str, dict[str, float]] | None", "str | None"], None]

# --- features ----------------------------------------------------------------------------
_init_lock = threading.Lock()
_initialised: dict[str, Any] = {}


def feature_batch(key: str, steps: feature_tasks.StepSpecs, extractors: list[FeatureExtractor],
                  tasks: Sequence[Task]) -> list[tuple[str, dict[str, dict[str, float]] | None, str | None]]:
    """The task Dask runs: the local per-image function (:mod:`.feature_tasks`) over one batch."""
    with _init_lock:  # one set of steps and extractors per worker process and run
        if _initialised.get("key") != key:
            feature_tasks._init_worker(steps, extractors)
            _initialised["key"] = key
    return [feature_tasks._run_task(task) for task in tasks]


def config_key(steps: feature_tasks.StepSpecs, extractors: Sequence[FeatureExtractor]) -> str:
    """Identifies the steps and extractors a worker process has set up."""
    blob = [[(f"{cls.__module__}.{cls.__qualname__}", options) for cls, options in steps],
            [(type(e).__module__, e.name, e.version, dataset.extractor_options(e)) for e in extractors]]
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def feature_runner(client: "Client", batch_size: int) -> Callable[..., None]:
    """A drop-in for :func:`selfiescope.pipelines.model.feature_tasks.run_tasks` that runs on the cluster."""
    from distributed import as_completed

    def run(tasks: list[Task], steps: feature_tasks.StepSpecs, extractors: list[FeatureExtractor],
            workers: int, on_result: OnResult, fetch: feature_tasks.Fetch | None = None) -> None:
        if not tasks:
            return
        key = config_key(steps, extractors)
        [steps_f, extractors_f] = client.scatter([list(steps), extractors], broadcast=True)
        # The client reads the stored bytes through its storage backend and they travel with the
        # batch (dataset.py says why workers never open a backend); batches are filled lazily,
        # a window at a time, so only the batches in flight are held in memory.
        filled = fetch(tasks) if fetch else iter(tasks)
        batches = iter(lambda: list(itertools.islice(filled, batch_size)), [])
        window = 2 * worker_count(client)
        todo = batches
        by_future: dict[Any, list[Task]] = {}

        def submit(batch: list[Task]) -> Any:
            fut = client.submit(feature_batch, key, steps_f, extractors_f, batch, pure=False, retries=2)
            by_future[fut] = batch
            return fut

        running = as_completed([submit(b) for b in itertools.islice(todo, window)])
        for fut in running:
            batch = by_future.pop(fut)
            try:
                results = fut.result()
            except Exception as exc:  # the cluster gave up on it: compute it here, lose nothing
                log.warning("a feature batch failed on the cluster (%s: %s); running it here", type(exc).__name__, exc)
                feature_tasks.run_tasks(batch, steps, extractors, 1, on_result)
            else:
                for result in results:
                    on_result(*result)
            nxt = next(todo, None)
            if nxt is not None:
                running.add(submit(nxt))

    return run


# --- LightGBM ----------------------------------------------------------------------------
def _to_dask(client: "Client", X: np.ndarray, y: np.ndarray, min_rows: int) -> tuple[Any, Any]:
    """One row partition per worker, each of at least ``min_rows`` rows: data-parallel LightGBM
    on a few dozen rows per worker scores far below a local fit, so a small table is one
    partition (docs/scaling.md)."""
    import dask.array as da

    parts = max(1, min(len(client.nthreads()), len(y) // min_rows))
    rows = math.ceil(len(y) / parts)
    dX = da.from_array(X, chunks=(rows, X.shape[1]))
    dy = da.from_array(y, chunks=(rows,))
    dX, dy = client.persist([dX, dy])
    return dX, dy


def best_round(model: Any, X_valid: np.ndarray, y_valid: np.ndarray, patience: int) -> int:
    """The round LightGBM's early stopping would keep: lowest validation log-loss, stopping
    at the first ``patience`` rounds without improvement."""
    booster = model.booster_
    raw = np.zeros(len(y_valid))
    best, best_loss = 1, math.inf
    for i in range(booster.num_trees()):
        raw += booster.predict(X_valid, raw_score=True, start_iteration=i, num_iteration=1)
        p = np.clip(1.0 / (1.0 + np.exp(-raw)), 1e-15, 1 - 1e-15)
        loss = float(-np.mean(y_valid * np.log(p) + (1 - y_valid) * np.log(1 - p)))
        if loss < best_loss:
            best, best_loss = i + 1, loss
        elif i + 1 - best >= patience:
            break
    return best


def dask_fit(client: "Client", min_rows_per_worker: int = 1000) -> Callable[..., Fitted]:
    """A drop-in for :func:`selfiescope.pipelines.model.train.fit_model` that trains on the cluster."""

    def fit(X: np.ndarray, y: np.ndarray, params: dict[str, Any], *, columns: list[str],
            X_valid: np.ndarray | None = None, y_valid: np.ndarray | None = None,
            early_stopping_rounds: int = 50) -> Fitted:
        from lightgbm.dask import DaskLGBMClassifier

        opts = {k: v for k, v in _balance(params, y).items() if k != "n_jobs"}  # a worker uses its own threads
        estimator = DaskLGBMClassifier(client=client, **opts)
        dX, dy = _to_dask(client, X, y, min_rows_per_worker)
        with warnings.catch_warnings():  # lightgbm.dask sets the threads itself and says so
            warnings.filterwarnings("ignore", "Parameter n_jobs will be ignored")
            estimator.fit(dX, dy, feature_name=[c.replace(" ", "_") for c in columns])
        model = estimator.to_local()
        if X_valid is not None and y_valid is not None and len(np.unique(y_valid)) == 2:
            return Fitted(model, best_round(model, X_valid, y_valid, early_stopping_rounds))
        return Fitted(model, int(model.n_estimators_))

    return fit


# --- the pipeline ------------------------------------------------------------------------
def train_on_dask(
    app: App,
    pipeline_name: str,
    *,
    client: "Client | None" = None,
    progress: Progress | None = None,
) -> TrainResult:
    """:func:`selfiescope.pipelines.model.train.train` with features and fits on the cluster."""
    settings = app.settings
    if client is None:
        with dask_client(settings.compute) as own:
            return train_on_dask(app, pipeline_name, client=own, progress=progress)
    return train(
        app, pipeline_name, progress=progress,
        runner=feature_runner(client, settings.compute.batch_size),
        fit=dask_fit(client, settings.compute.min_rows_per_worker),
    )
