"""``[pipelines.NAME] normalize = true``: one size and one JPEG quality for every image.

When each label comes from its own camera or site, size and compression alone can tell
the classes apart (see :mod:`.baselines`). Re-encoding every decoded image the same way
before features removes much of that signal (not all: the aspect ratio stays, and
what an earlier compression destroyed stays lost). Training and prediction both call
:func:`normalize_image`, so a normalized model sees new photos the way it was trained.
"""

from __future__ import annotations

import io
from typing import Any

import cv2
import numpy as np
from PIL import Image


def normalize_image(image_rgb: np.ndarray, face: dict[str, Any], side: int, quality: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Resize so the longer side is ``side`` (aspect kept), JPEG-encode at ``quality``, decode;
    the face box is scaled to match (its area share does not change)."""
    height, width = image_rgb.shape[:2]
    scale = side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = cv2.resize(image_rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    buf = io.BytesIO()
    Image.fromarray(resized).save(buf, "JPEG", quality=quality)
    buf.seek(0)
    out = np.asarray(Image.open(buf).convert("RGB"))
    box = face.get("box")
    if box:
        sx, sy = size[0] / width, size[1] / height
        box = [round(box[0] * sx), round(box[1] * sy), round(box[2] * sx), round(box[3] * sy)]
    return out, {**face, "box": box}


def cache_suffix(side: int, quality: int) -> str:
    """Added to a feature cache version: normalized features are other features."""
    return f"+norm{side}q{quality}"

