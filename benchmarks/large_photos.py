"""The benchmarks' large photos: the real faces in ../shared/faces, upsampled to a given long
side and saved as JPEGs (quality 90) in a temporary folder, never in the repository."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selfiescope.plugins.decode import DecodeOptions, decode_image  # noqa: E402

FACES = Path(__file__).resolve().parents[2] / "shared" / "faces"


def face_files(limit: int | None = None, sample: int | None = None) -> list[Path]:
    """The photos, sorted; the first ``limit``, or ``sample`` of them evenly spaced over all."""
    if not FACES.is_dir():
        sys.exit(f"{FACES} absent: nothing to measure")
    files = sorted(p for p in FACES.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    if sample:
        files = [files[i * len(files) // sample] for i in range(min(sample, len(files)))]
    return files[:limit]


def write_large_jpegs(
    folder: Path, side: int = 2000, limit: int | None = None, quality: int = 90, sample: int | None = None
) -> list[Path]:
    """Each photo resized (bicubic) so its longer side is ``side``, as ``folder/NNN_name.jpg``."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, path in enumerate(face_files(limit, sample)):
        image = decode_image(path.read_bytes(), DecodeOptions(min_side=1)).image
        h, w = image.shape[:2]
        f = side / max(h, w)
        large = cv2.resize(image, (round(w * f), round(h * f)), interpolation=cv2.INTER_CUBIC)
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(large[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert ok
        target = folder / f"{i:03d}_{path.parent.name}_{path.stem}.jpg"
        target.write_bytes(buf.tobytes())
        out.append(target)
    return out
