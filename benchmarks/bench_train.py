"""Training time for 1k, 10k and 100k feature rows: grouping, grouped 5-fold CV with early stopping, final fit.

Rows are synthetic, shaped like the real table (190 columns as from geometry +
landmarks + embedding + image, 5 % missing values, a label that depends on a few columns
plus noise, near-duplicate clusters of 1-3 rows), so only sizes matter here, not
accuracy. Each size runs the code ``selfiescope train`` runs after the features are
ready: ``near_duplicate_groups``, ``cross_validate`` (with the face-area baseline) and
the final ``fit_model``.

    .venv/bin/python benchmarks/bench_train.py [--sizes 1000,10000,100000] [--folds 5]

With ``--faces ../shared/faces`` it instead prints the CV AUC on those real photos
(selfie/ vs portrait/) grouped the old way (pHash within dedup's distance 8: every photo
its own group) beside the way train groups now (person clusters of the dlib face
descriptor within 0.6, plus near copies within pHash 16), for the face descriptor alone,
the image shape alone, and both: how much of the score came from recognising people.

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
from selfiescope.pipelines.model.dataset import DatasetRow, FeatureTable  # noqa: E402
from selfiescope.pipelines.model.groups import near_duplicate_groups  # noqa: E402
from selfiescope.pipelines.model.leak_groups import leak_groups  # noqa: E402
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


def face_table(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(descriptors, shape features [width, height, aspect], labels, pHashes) of the photos with a face."""
    import cv2
    import dlib
    import imagehash
    from PIL import Image

    from selfiescope.plugins.landmarks import model_file

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(model_file("shape_predictor_68_face_landmarks.dat")))
    recogniser = dlib.face_recognition_model_v1(str(model_file("dlib_face_recognition_resnet_model_v1.dat")))
    descriptors, shapes, labels, hashes = [], [], [], []
    for label, sub in ((1, "selfie"), (0, "portrait")):
        for path in sorted((folder / sub).iterdir()):
            image = cv2.imread(str(path))
            if image is None:
                continue
            rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
            found = detector(rgb, 1)
            if not found:
                continue
            face = max(found, key=lambda r: r.area())
            descriptors.append(np.array(recogniser.compute_face_descriptor(rgb, predictor(rgb, face))))
            h, w = rgb.shape[:2]
            shapes.append([w, h, w / h])
            labels.append(label)
            hashes.append(str(imagehash.phash(Image.fromarray(rgb))))
    return np.array(descriptors), np.array(shapes, float), np.array(labels, np.int64), hashes


def faces_report(folder: Path, folds: int) -> None:
    descriptors, shapes, y, hashes = face_table(folder)
    old = near_duplicate_groups(hashes, 8)
    new = leak_groups(descriptors=descriptors, posts=[None] * len(y), owners=[None] * len(y), phashes=hashes,
                      phash_distance=16, labels=y)
    person = new.summary["person"]
    print(f"{len(y)} photos with a face ({int(y.sum())} selfies); pHash <= 8: {len(np.unique(old))} groups;"
          f" person + pHash <= 16: {new.summary['groups']} groups, largest {new.summary['largest']}"
          f" ({person['groups']} person clusters, largest {person['largest']}; left out: {new.summary['not_grouped_by']})")
    pipeline = TrainPipeline(kind="train", folds=folds)
    print(f"{'features':>22} {'AUC pHash groups':>17} {'AUC person groups':>18}")
    for name, X in (("face descriptor", descriptors), ("image shape", shapes), ("both", np.hstack([descriptors, shapes]))):
        rows = [DatasetRow(str(i), None, "selfie" if y[i] else "portrait", "#faces", ".", None, None, 1, hashes[i])
                for i in range(len(y))]
        aucs = []
        for groups in (old, new.ids):
            table = FeatureTable(X, y, groups, rows, [f"c{i}" for i in range(X.shape[1])])
            cv = cross_validate(table, training_params(pipeline, len(y)), pipeline)
            aucs.append(score(y, cv.oof)["roc_auc"])
        print(f"{name:>22} {aucs[0]:>17.3f} {aucs[1]:>18.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--faces", type=Path, help="a folder with selfie/ and portrait/: grouped CV AUC side by side")
    args = parser.parse_args()
    if args.faces:
        faces_report(args.faces, args.folds)
        return
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
