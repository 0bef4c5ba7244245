"""Face detectors side by side on ../shared/faces: speed and keep/reject agreement.

For each ``[plugins.face_area] detector`` (haar, hog, cnn) with the default options
(15% rule, detection downscaled to 480 px), prints ms per image, how many photos of each
folder it keeps, the share of identical keep/reject decisions for every pair of
detectors (and Cohen's kappa), and how many photos each folder keeps at several
thresholds, since dlib's boxes are tighter than Haar's.

Face-free images (scikit-image's bundled pictures without people, crops of them at other
aspect ratios, and generated scenes: shapes, gradients, noise) measure false positives: a
face-free picture kept is a wrong keep. The sweep table (selfies, portraits and face-free
kept per detector and threshold) is what the per-detector default thresholds and the
default detector in ``face_area`` were chosen from.

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
THRESHOLDS = (0.05, 0.08, 0.10, 0.12, 0.15, 0.20, 0.25)
# scikit-image's bundled pictures that show no person (camera, astronaut and lfw_subset do)
FACE_FREE_DATA = ("chelsea", "coffee", "rocket", "horse", "coins", "moon", "page", "text", "brick", "grass",
                  "gravel", "hubble_deep_field", "retina", "immunohistochemistry", "logo", "clock", "motorcycle_left",
                  "chessboard", "cell", "microaneurysms")


def face_free_images(count: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` RGB pictures with no face: scikit-image's photos and crops of them, then generated scenes."""
    from skimage import data

    rng = np.random.default_rng(seed)
    base = []
    for name in FACE_FREE_DATA:
        try:
            image = np.asarray(getattr(data, name)())
        except Exception:  # noqa: BLE001 - a picture the installed version lacks (or must download)
            continue
        if image.dtype != np.uint8:
            image = (255 * (image > 0)).astype(np.uint8) if image.dtype == bool else cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
        image = image[..., :3] if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
        base.append(np.ascontiguousarray(image))
    out = list(base)
    while len(out) < count * 2 // 3 and base:
        image = base[int(rng.integers(len(base)))]
        h, w = image.shape[:2]
        ch, cw = int(h * rng.uniform(0.4, 1.0)), int(w * rng.uniform(0.4, 1.0))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        out.append(np.ascontiguousarray(image[y:y + ch, x:x + cw]))
    while len(out) < count:
        h, w = int(rng.integers(240, 720)), int(rng.integers(240, 720))
        scene = np.zeros((h, w, 3), np.uint8)
        scene[:] = np.linspace(rng.integers(0, 255, 3), rng.integers(0, 255, 3), h)[:, None, :].astype(np.uint8)
        for _ in range(int(rng.integers(3, 25))):
            colour = tuple(int(c) for c in rng.integers(0, 255, 3))
            centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            if rng.random() < 0.5:
                cv2.circle(scene, centre, int(rng.integers(5, min(h, w) // 3)), colour, -1)
            else:
                cv2.rectangle(scene, centre, (int(rng.integers(0, w)), int(rng.integers(0, h))), colour, -1)
        noise = rng.normal(0, rng.uniform(0, 25), scene.shape)
        out.append(np.clip(scene + noise, 0, 255).astype(np.uint8))
    return out[:count]


def kappa(a: np.ndarray, b: np.ndarray) -> float:
    po = np.mean(a == b)
    pe = a.mean() * b.mean() + (1 - a.mean()) * (1 - b.mean())
    return float((po - pe) / (1 - pe)) if pe < 1 else 1.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=None, help="first N photos per folder")
    ap.add_argument("--detectors", default="haar,hog,cnn")
    ap.add_argument("--face-free", type=int, default=120, help="how many face-free pictures to add")
    args = ap.parse_args()
    if not FACES.is_dir():
        sys.exit(f"{FACES} absent: nothing to measure")
    cv2.setNumThreads(1)
    folders = sorted(p for p in FACES.iterdir() if p.is_dir())
    photos = []
    for folder in folders:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})[: args.limit]
        photos += [(folder.name, decode_image(p.read_bytes(), DecodeOptions(min_side=1)).image) for p in files]
    photos += [("face-free", image) for image in face_free_images(args.face_free)]
    kinds = np.array([k for k, _ in photos])
    folders = [*folders, Path("face-free")]
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
    print("\nthreshold sweep (kept / total; face-free kept are false positives):")
    print(f"  {'detector':<8} {'threshold':>9} {'ms/img':>7} " + " ".join(f"{f.name:>12}" for f in folders))
    for name in detectors:
        for t in THRESHOLDS:
            print(f"  {name:<8} {t:9.2f} {times[name].mean() * 1000:7.1f} " + " ".join(
                f"{f'{int((areas[name][kinds == f.name] > t).sum())}/{int((kinds == f.name).sum())}':>12}" for f in folders))
    both = [(a, b) for a, b in itertools.combinations(detectors, 2)]
    print("\nmedian ratio of box area where both found a face:")
    for a, b in both:
        m = (areas[a] > 0) & (areas[b] > 0)
        print(f"  {b}/{a}: {np.median(areas[b][m] / areas[a][m]):.2f} over {m.sum()} photos")


if __name__ == "__main__":
    main()
