"""Does normalize's face box still tell how many pixels a picture had? Moved box vs found again.

For the Caltech photos of ../shared/faces and a resampled copy of each (a share of the side),
the chain (decode, then the face step at its defaults) boxes the face in both, and each is
normalized two ways: the collection's box moved into the square (models saved without
``normalize.face``), and the face found again in the square by the same chain (the shipped way).
For each way it prints how well the box alone tells the copy from the photo: the AUC of the
box's side in the square, folded to 0.5-1 (0.5: the box does not say which was the copy), and
the median and worst ratio of the two boxes' sides; then the cost of the second detection in
ms per image and as a ratio of normalize alone.

    .venv/bin/python benchmarks/bench_normalize_faces.py [--n 40] [--shares 0.5,0.75,1.5]
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selfiescope.pipelines.model.dataset import event_face_dict  # noqa: E402
from selfiescope.pipelines.model.feature_tasks import chain_faces, decode_with_step  # noqa: E402
from selfiescope.pipelines.model.normalize import Recipe, normalize_image  # noqa: E402
from selfiescope.plugins.decode import DecodeStep  # noqa: E402
from selfiescope.plugins.face_area import FaceAreaStep  # noqa: E402

FACES = Path(__file__).resolve().parents[2] / "shared" / "faces"
SIDE, QUALITY = 320, 85  # the pipeline's defaults


def folded_auc(a: list[float], b: list[float]) -> float:
    """AUC of telling ``a`` from ``b`` by the value, folded so 0.5 is chance and 1.0 is certain."""
    from sklearn.metrics import roc_auc_score

    auc = roc_auc_score([1] * len(a) + [0] * len(b), a + b)
    return max(auc, 1 - auc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="photos (Caltech, ../shared/faces/portrait)")
    parser.add_argument("--shares", default="0.5,0.75,1.5", help="the copies' side, as shares of the photo's")
    args = parser.parse_args()
    steps = [DecodeStep(DecodeStep.Options(), None), FaceAreaStep(FaceAreaStep.Options(), None)]
    find = chain_faces(steps)
    photos = sorted((FACES / "portrait").glob("caltech_*.jpg"))[:args.n]
    timings = {"moved": 0.0, "found": 0.0}
    measured = 0

    def boxed(data: bytes) -> tuple[np.ndarray, dict] | None:
        event = decode_with_step(steps[0], data)
        try:
            steps[1].process(event)
        except Exception:  # noqa: BLE001 - a picture the filter turns away still has its boxes
            pass
        face = event_face_dict(event, None)
        return (event.image, face) if face["box"] else None

    print(f"{len(photos)} Caltech photos, normalize {SIDE} px; box side in the square, photo vs copy")
    print(f"{'copy share':>10} {'pairs':>5} | {'moved: AUC':>10} {'median':>7} {'worst':>6} | "
          f"{'found: AUC':>10} {'median':>7} {'worst':>6}")
    for share in [float(s) for s in args.shares.split(",")]:
        sides: dict[str, tuple[list[float], list[float]]] = {"moved": ([], []), "found": ([], [])}
        for path in photos:
            with Image.open(path) as im:
                rgb = im.convert("RGB")
            buf = io.BytesIO()
            rgb.resize((round(rgb.width * share), round(rgb.height * share)), Image.Resampling.LANCZOS).save(buf, "PNG")
            pair = [boxed(path.read_bytes()), boxed(buf.getvalue())]
            if None in pair:
                continue
            for i, (image, face) in enumerate(pair):
                for way, finder in (("moved", None), ("found", find)):
                    started = time.perf_counter()
                    _, got = normalize_image(image, face, Recipe(SIDE, QUALITY), find_faces=finder)
                    timings[way] += time.perf_counter() - started
                    sides[way][i].append(got["box"][2] / SIDE if got["box"] else float("nan"))
                measured += 1
        row = [f"{share:>10} {len(sides['moved'][0]):>5}"]
        for way in ("moved", "found"):
            photo, copy = (np.array(v) for v in sides[way])
            keep = np.isfinite(photo) & np.isfinite(copy)
            ratio = copy[keep] / photo[keep]
            worst = ratio[np.argmax(np.abs(np.log(ratio)))]
            row.append(f"{folded_auc(list(photo[keep]), list(copy[keep])):>10.3f} {np.median(ratio):>7.3f} {worst:>6.3f}")
        print(" | ".join(row))
    moved_ms, found_ms = (1000 * timings[w] / max(measured, 1) for w in ("moved", "found"))
    print(f"normalize alone {moved_ms:.1f} ms per image, with the second detection {found_ms:.1f} ms "
          f"({found_ms / moved_ms:.1f}x)")


if __name__ == "__main__":
    main()
