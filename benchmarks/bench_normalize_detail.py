"""Does normalize still tell how many pixels a picture had? The measurement behind ``normalize.DETAIL``.

For pictures (textures with detail at every scale, or the photos in ../shared/faces) and a
smaller copy of each (area averaging to a share of the side), both are normalized and the
ratio of their ``image.sharpness`` (the feature most tied to resolution) is printed: 1.00 means
the square does not say which was the smaller copy. Three variants: no detail step (scaled
straight to the side, as models saved before it), area averaging to DETAIL alone, and the
shipped one (area averaging, then a Gaussian of DETAIL_BLUR pixels).

    .venv/bin/python benchmarks/bench_normalize_detail.py [--photos]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selfiescope.pipelines.model import normalize  # noqa: E402
from selfiescope.plugins.features import ImageFeatures  # noqa: E402

FACES = Path(__file__).resolve().parents[2] / "shared" / "faces"
PAIRS = [(384, 0.5), (256, 0.75), (512, 0.4), (300, 0.64), (384, 0.39), (200, 0.96)]  # side, share of the copy


def texture(rng: np.random.Generator, side: int) -> np.ndarray:
    base = cv2.resize(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8), (side, side), interpolation=cv2.INTER_CUBIC)
    return np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)


def box_only(part: np.ndarray, detail: int) -> np.ndarray:
    height, width = part.shape[:2]
    factor = detail / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return np.asarray(Image.fromarray(np.ascontiguousarray(part)).resize(size, Image.Resampling.BOX)) \
        if factor < 1 else part


def ratio(picture: np.ndarray, share: float, detail: int | None) -> float:
    height, width = picture.shape[:2]
    copy = cv2.resize(picture, (round(width * share), round(height * share)), interpolation=cv2.INTER_AREA)
    features = ImageFeatures()
    a, _ = normalize.normalize_image(picture, {}, normalize.Recipe(320, 85, detail=detail))
    b, _ = normalize.normalize_image(copy, {}, normalize.Recipe(320, 85, detail=detail))
    return features.extract(a, {})["sharpness"] / features.extract(b, {})["sharpness"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", action="store_true", help="the photos of ../shared/faces, each with a copy at 70 %")
    args = parser.parse_args()
    if args.photos:
        cases = [(np.asarray(Image.open(p).convert("RGB")), 0.7) for p in sorted(FACES.glob("*/*.jpg"))[:60]]
        cases = [(pic, share) for pic, share in cases if min(pic.shape[:2]) * share >= normalize.DETAIL * 1.5]
    else:
        rng = np.random.default_rng(0)
        cases = [(texture(rng, side), share) for side, share in PAIRS]
    shipped = normalize.band_limit
    variants = [("no detail step", shipped, None), (f"area averaging to {normalize.DETAIL} only", box_only, normalize.DETAIL),
                (f"area averaging + Gaussian {normalize.DETAIL_BLUR} (shipped)", shipped, normalize.DETAIL)]
    print(f"{len(cases)} pictures; sharpness of the normalized picture / of its smaller copy (1.00: no trace)")
    try:
        for name, band_limit, detail in variants:
            normalize.band_limit = band_limit
            values = np.array([ratio(p, s, detail) for p, s in cases])
            worst = values[np.argmax(np.abs(np.log(values)))]
            print(f"{name:<45} median {np.median(values):6.2f}   worst {worst:6.2f}")
    finally:
        normalize.band_limit = shipped

if __name__ == "__main__":
    main()
