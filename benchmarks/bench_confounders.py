"""Confounder baselines on ../shared/faces: does the model beat the camera and the file?

Imports the real selfies (306x306 Instagram shots) and Caltech portraits (448x296) into a
temporary dataset through the ordinary chain (decode, face_area at a 5% rule so most
306 px selfies pass, dedup, store), trains ``selfiescope train`` on it as stored and
again with ``normalize = true``, and prints the model's cross-validated AUC next to
every baseline's, with bootstrap-over-groups intervals, the calibration figures and the
warnings. The photos' sources differ, so the warning is the expected outcome.

    .venv/bin/python benchmarks/bench_confounders.py [--features geometry,landmarks,embedding,image]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selfiescope.core.app import App
from selfiescope.core.settings import ScrapePipeline, settings_from_dict  # noqa: E402
from selfiescope.pipelines.collecting.collect import collect  # noqa: E402
from selfiescope.pipelines.model.train import train  # noqa: E402

FACES = Path(__file__).resolve().parents[2] / "shared" / "faces"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--features", default="geometry,landmarks,embedding,image")
    ap.add_argument("--folds", type=int, default=5)
    args = ap.parse_args()
    if not FACES.is_dir():
        sys.exit(f"{FACES} absent: nothing to measure")
    features = args.features.split(",")
    with tempfile.TemporaryDirectory(prefix="bench-confounders-") as tmp:
        root = Path(tmp) / "data"
        base = {"storage": {"root": str(root)}, "plugins": {"face_area": {"min_face_area": 0.05}}}
        for label, files in (("selfie", sorted((FACES / "selfie").glob("*.jpg"))),
                             ("portrait", sorted((FACES / "portrait").glob("caltech_*.jpg")))):
            folder = Path(tmp) / label
            folder.mkdir()
            for f in files:
                (folder / f.name).symlink_to(f)
            pipeline = ScrapePipeline(kind="import", source="folder", paths=[folder], label=label,
                                      chain=["decode", "face_area", "dedup", "store"])
            stats = asyncio.run(collect(App.create(settings_from_dict(base)), "import", pipeline=pipeline))
            print(f"{label}: {stats.accepted} of {stats.seen} accepted ({stats.rejected_by_reason})")
        for normalize in (False, True):
            pipe = {"kind": "train", "labels": ["selfie", "portrait"], "features": features, "folds": args.folds,
                    "model_dir": str(Path(tmp) / f"model-{normalize}"), "normalize": normalize, "workers": 2}
            t0 = time.perf_counter()
            result = train(App.create(settings_from_dict({**base, "pipelines": {"t": pipe}})), "t")
            cv = result.metrics["cv"]
            ci = cv["roc_auc_ci95"]
            print(f"\nnormalize = {str(normalize).lower()} ({time.perf_counter() - t0:.0f} s; features {', '.join(features)})")
            print(f"  {'model':<46} {'ROC AUC':>8} {'95% CI (groups)':>16} {'Brier':>7}")

            def row(name: str, m: dict, key: str | None) -> None:
                c = ci.get(key) if key else None
                print(f"  {name:<46} {m['roc_auc']:8.3f} {(f'{c[0]:.3f}-{c[1]:.3f}' if c else 'n/a'):>16} {m['brier']:7.3f}")

            row("LightGBM", cv["lightgbm"], "lightgbm")
            row(f"LightGBM calibrated ({cv['calibration']['method']})", cv["lightgbm_calibrated"], "lightgbm_calibrated")
            if "without_normalize" in cv:
                row("LightGBM on the files as stored", cv["without_normalize"], None)
            for name, m in cv["baselines"].items():
                row(f"baseline: {name}", m, name)
            for w in result.metrics["warnings"]:
                print(f"  WARNING: {w}")


if __name__ == "__main__":
    main()
