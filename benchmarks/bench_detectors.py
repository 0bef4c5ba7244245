"""Face detectors side by side on ../shared/faces: speed and keep/reject agreement.

For each ``[plugins.face_area] detector`` (haar, hog, cnn) with the default options
(15% rule, detection downscaled to 480 px), prints ms per image, how many photos of each
folder it keeps, the share of identical keep/reject decisions for every pair of
detectors (and Cohen's kappa), and how many photos each folder keeps at several
thresholds, since dlib's boxes are tighter than Haar's.

    .venv/bin/python benchmarks/bench_detectors.py [--limit N] [--detectors haar,hog,cnn]

Times are CPU time of this process (one OpenCV thread), which a shared machine's load inflates less than wall time.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selfiescope.plugins.decode import DecodeOptions, decode_image  # noqa: E402
from selfiescope.plugins.face_area import FaceAreaOptions, detect_faces, face_area_fraction  # noqa: E402

FACES = Path(__file__).resolve().parents[2] / "shared" / "faces"
THRESHOLDS = (0.05, 0.10, 0.15, 0.20, 0.25)


def kappa(a: np.ndarray, b: np.ndarray) -> float:
    po = np.mean(a == b)
    pe = a.mean() * b.mean() + (1 - a.mean()) * (1 - b.mean())
    return float((po - pe) / (1 - pe)) if pe < 1 else 1.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=None, help="first N photos per folder")
    ap.add_argument("--detectors", default="haar,hog,cnn")
    args = ap.parse_args()
    if not FACES.is_dir():
        sys.exit(f"{FACES} absent: nothing to measure")
    cv2.setNumThreads(1)
    folders = sorted(p for p in FACES.iterdir() if p.is_dir())
    photos = []
    for folder in folders:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})[: args.limit]
        photos += [(folder.name, decode_image(p.read_bytes(), DecodeOptions(min_side=1)).image) for p in files]
    kinds = np.array([k for k, _ in photos])
    detectors = args.detectors.split(",")
    print(f"{len(photos)} photos ({', '.join(f'{f.name}: {(kinds == f.name).sum()}' for f in folders)}); "
          f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    areas, times = {}, {}
    for name in detectors:
        opts = FaceAreaOptions(detector=name)
        detect_faces(photos[0][1], opts)  # load the model outside the timing
        area, spent = [], []
        for _, image in photos:
            t0 = time.process_time()  # CPU time of this process: the shared machine's load inflates wall time
            faces = detect_faces(image, opts)
            spent.append(time.process_time() - t0)
            area.append(face_area_fraction(faces, image.shape[1], image.shape[0]))
        areas[name], times[name] = np.array(area), np.array(spent)
    rule = FaceAreaOptions().min_face_area
    print(f"\nper detector, {rule:.0%} rule:")
    print(f"  {'detector':<8} {'CPU ms/img':>10} {'x haar':>7} {'any face':>9} " + " ".join(f"{f'kept {f.name}':>15}" for f in folders))
    for name in detectors:
        kept = areas[name] > rule
        ratio = times[name].mean() / times["haar"].mean() if "haar" in times else float("nan")
        print(f"  {name:<8} {times[name].mean() * 1000:10.1f} {ratio:7.1f} {np.mean(areas[name] > 0):9.1%} "
              + " ".join(f"{f'{kept[kinds == f.name].sum()}/{(kinds == f.name).sum()}':>15}" for f in folders))
    print("\nkeep/reject agreement between detectors (identical decisions, Cohen's kappa):")
    for a, b in itertools.combinations(detectors, 2):
        ka, kb = areas[a] > rule, areas[b] > rule
        per = ", ".join(f"{f.name} {np.mean(ka[kinds == f.name] == kb[kinds == f.name]):.0%}" for f in folders)
        print(f"  {a} vs {b}: {np.mean(ka == kb):6.1%}  kappa {kappa(ka, kb):5.2f}  ({per})")
    print("\nkept per folder at other thresholds (dlib's boxes are tighter than Haar's):")
    for name in detectors:
        cells = "  ".join(f"{t:.0%}: " + "/".join(str(int((areas[name][kinds == f.name] > t).sum())) for f in folders)
                          for t in THRESHOLDS)
        print(f"  {name:<5} ({'/'.join(f.name for f in folders)})  {cells}")
    both = [(a, b) for a, b in itertools.combinations(detectors, 2)]
    print("\nmedian ratio of box area where both found a face:")
    for a, b in both:
        m = (areas[a] > 0) & (areas[b] > 0)
        print(f"  {b}/{a}: {np.median(areas[b][m] / areas[a][m]):.2f} over {m.sum()} photos")


if __name__ == "__main__":
    main()
