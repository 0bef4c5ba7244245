"""Photos with two real faces, made from ../shared/faces' single portraits with PIL (its one
group photo's faces are too small for the detector): the test's own files, never committed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from selfiescope.plugins.face_area import detect_faces


def _portraits(faces_dir: Path) -> list[Image.Image]:
    """The first two Caltech portraits with one face each, as the default detector sees them."""
    found = []
    for path in sorted((faces_dir / "portrait").glob("caltech_*.jpg")):
        image = Image.open(path).convert("RGB")
        if len(detect_faces(np.asarray(image))) == 1:
            found.append(image)
        if len(found) == 2:
            return found
    raise AssertionError(f"{faces_dir}/portrait has no two Caltech portraits with one face each")


def _around_face(image: Image.Image, half: int) -> Image.Image:
    face = detect_faces(np.asarray(image))[0]
    left = min(max(0, face.x + face.w // 2 - half), image.width - 2 * half)
    return image.crop((left, 0, left + 2 * half, image.height))


def two_faces_kept(faces_dir: Path, target: Path) -> Path:
    """Two people side by side, the second at 0.8x: both faces large enough that the face filter
    keeps the photo (the larger covers ~12-18% of it, the smaller ~8%)."""
    first, second = (_around_face(p, 120) for p in _portraits(faces_dir))
    second = second.resize((round(second.width * 0.8), round(second.height * 0.8)))
    canvas = Image.new("RGB", (first.width + second.width, first.height), (120, 120, 120))
    canvas.paste(first, (0, 0))
    canvas.paste(second, (first.width, 30))
    canvas.save(target, quality=95)
    return target


def two_faces_too_small(faces_dir: Path, target: Path) -> Path:
    """Two whole portraits side by side: two faces of ~7% each, which the filter rejects as
    ``face_too_small`` (hog's threshold is 10%)."""
    first, second = _portraits(faces_dir)
    canvas = Image.new("RGB", (first.width + second.width, max(first.height, second.height)))
    canvas.paste(first, (0, 0))
    canvas.paste(second, (first.width, 0))
    canvas.save(target, quality=95)
    return target
