"""Thumbnails: made once with a reduced decode, kept as derived data under the storage root.

``<root>/.thumbs/<first two hex digits>/<content hash>.jpg``. A JPEG is decoded at the
smallest DCT scale that still covers the thumbnail (Pillow ``draft``: libjpeg decodes 1/2
to 1/8 of the pixels); other formats are decoded once and reduced. The file is written
beside its final name and renamed into place, so a kill leaves either no thumbnail or a
whole one. ``forget`` removes an image's thumbnail with its other derived data; a root
that cannot be written simply keeps no cache.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

from PIL import Image, ImageOps

from ..pipelines.reviewed import CONTENT_HASH as _HASH, THUMBS, remove_thumbnails as remove, thumbnail_path as thumb_path

__all__ = ["THUMBS", "cached", "keep", "make_thumbnail", "remove", "thumb_path"]
log = logging.getLogger("selfiescope.review")
SIDE = 320
QUALITY = 82


def make_thumbnail(data: bytes, side: int = SIDE) -> bytes:
    """A JPEG no larger than ``side`` on either side (EXIF orientation applied)."""
    Image.MAX_IMAGE_PIXELS = None  # the bytes were accepted by the chain's own pixel limit
    with Image.open(io.BytesIO(data)) as im:
        if im.format == "JPEG":
            im.draft("RGB", (side, side))  # libjpeg's reduced decode: never below (side, side)
        im = ImageOps.exif_transpose(im)
        im.thumbnail((side, side), Image.Resampling.BILINEAR, reducing_gap=2.0)
        if im.mode != "RGB":
            im = im.convert("RGB")
        out = io.BytesIO()
        im.save(out, "JPEG", quality=QUALITY)
        return out.getvalue()


def cached(root: Path, content_hash: str) -> bytes | None:
    try:
        return thumb_path(root, content_hash).read_bytes()
    except OSError:
        return None


def keep(root: Path, content_hash: str, data: bytes) -> None:
    """Write the thumbnail atomically; a root this process cannot write keeps none."""
    path = thumb_path(root, content_hash)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        log.debug("thumbnail not cached (%s): %s", path, exc)
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
