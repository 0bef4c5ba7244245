"""Training time for 1k, 10k and 100k feature rows: grouping, grouped 5-fold CV with early stopping, final fit.

Rows are synthetic, shaped like the real table (190 columns as from geometry +
landmarks + embedding + image, 5 % missing values, a label that depends on a few columns
plus noise, near-duplicate clusters of 1-3 rows), so only sizes matter here, not
accuracy. Each size runs the code ``selfiescope train`` runs after the features are
ready: ``near_duplicate_groups``, ``cross_validate`` (with the face-area baseline) and
the final ``fit_model``.

    .venv/bin/python benchmarks/bench_train.py [--sizes 1000,10000,100000] [--folds 5]

The 2 cores are shared with whatever else runs on the machine: figures vary by run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selfiescope.core.settings import TrainPipeline  # noqa: E402
from selfiescope.pipelines.model.dataset import DatasetRow, FeatureTable, near_duplicate_groups  # noqa: E402
from selfiescope.pipelines.model.train import cross_validate, fit_model, score, training_params  # noqa: E402

COLUMNS = 190


def synthetic(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str | None], list[DatasetRow]]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, COLUMNS))
    logit = 1.5 * X[:, 0] - 1.0 * X[:, 1] + 0.8 * X[:, 2] * X[:, 3] + rng.normal(scale=1.0, size=n)
    y = (logit > 0.3).astype(np.int64)  # a little imbalance
    X[rng.random(X.shape) < 0.05] = np.nan
    base = rng.integers(0, 2**63, n, dtype=np.uint64)
    copies = rng.random(n) < 0.2  # a fifth of the rows are near copies of the previous row
    for i in np.flatnonzero(copies[1:]) + 1:
        base[i] = base[i - 1] ^ np.uint64(1 << int(rng.integers(0, 64)))
        y[i], X[i] = y[i - 1], X[i - 1] + rng.normal(scale=0.01, size=COLUMNS)
    hashes = [f"{int(h):016x}" for h in base]
    rows = [DatasetRow(str(i), None, "selfie" if y[i] else "portrait", "#bench", ".", None,
                       float(0.2 + 0.05 * X[i, 0]) if np.isfinite(X[i, 0]) else None, 1, hashes[i]) for i in range(n)]
    return X, y, hashes, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()
    print(f"{COLUMNS} columns, {args.folds}-fold grouped CV + final fit; {os.cpu_count()} CPUs shared with other work")
    print("wall seconds per stage; 'cpu s' = CPU seconds this process used in all (less sensitive to other load)")
    print(f"{'rows':>7} {'groups':>7} {'group s':>8} {'cv s':>7} {'final s':>8} {'total s':>8} {'cpu s':>7} {'rounds':>12} {'cv auc':>7} {'threads':>7}")
    for n in (int(s) for s in args.sizes.split(",")):
        X, y, hashes, rows = synthetic(n)
        pipeline = TrainPipeline(kind="train", folds=args.folds)
        t0, c0 = time.perf_counter(), time.process_time()
        groups = near_duplicate_groups(hashes, pipeline.group_distance)
        t1 = time.perf_counter()
        table = FeatureTable(X, y, groups, rows, [f"c{i}" for i in range(COLUMNS)])
        params = training_params(pipeline, n)
        cv = cross_validate(table, params, pipeline)
        t2 = time.perf_counter()
        final = fit_model(X, y, {**params, "n_estimators": max(10, int(np.median(cv.best_iterations)))}, columns=table.columns)
        t3, c3 = time.perf_counter(), time.process_time()
        auc = score(y, cv.oof)["roc_auc"]
        rounds = f"{min(cv.best_iterations)}-{max(cv.best_iterations)}/{final.best_iteration}"
        print(f"{n:>7} {len(np.unique(groups)):>7} {t1 - t0:>8.2f} {t2 - t1:>7.2f} {t3 - t2:>8.2f} {t3 - t0:>8.2f} {c3 - c0:>7.2f} "
              f"{rounds:>12} {auc:>7.3f} {params['n_jobs']:>7}", flush=True)


if __name__ == "__main__":
    main()
