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
import threading
from pathlib import Path

from PIL import Image, ImageOps

from ..core.errors import RunFailed

from ..pipelines.dataset_care.reviewed import CONTENT_HASH as _HASH, THUMBS, remove_thumbnails as remove, thumbnail_path as thumb_path

__all__ = ["THUMBS", "cached", "keep", "make_thumbnail", "pixels_only", "remove", "thumb_path"]
log = logging.getLogger("selfiescope.review")
SIDE = 320
QUALITY = 82
MAX_DECODED_PIXELS = 40_000_000  # ~120 MB of RGB: what one thumbnail may decode


class TooLarge(RunFailed, ValueError):
    """An image whose decode would take more memory than a thumbnail is worth."""


def make_thumbnail(data: bytes, side: int = SIDE) -> bytes:
    """A JPEG no larger than ``side`` on either side (EXIF orientation applied). Pillow's own
    decompression-bomb check stays on (a rejected original may be one); a JPEG is decoded at
    1/8 scale at most, so it may be 64 times larger than anything else."""
    with Image.open(io.BytesIO(data)) as im:
        width, height = im.size
        if im.format == "JPEG":
            if width * height > 64 * MAX_DECODED_PIXELS:
                raise TooLarge(f"{width}x{height}")
            im.draft("RGB", (side, side))  # libjpeg's reduced decode: never below (side, side)
        elif width * height > MAX_DECODED_PIXELS:
            raise TooLarge(f"{width}x{height}")
        im = ImageOps.exif_transpose(im)
        im.thumbnail((side, side), Image.Resampling.BILINEAR, reducing_gap=2.0)
        out = io.BytesIO()
        pixels_only(im).save(out, "JPEG", quality=QUALITY)
        return out.getvalue()


def pixels_only(im: Image.Image) -> Image.Image:
    """A new RGB image with ``im``'s pixels and nothing else: Pillow writes what ``info`` carries
    (a JPEG comment, text chunks, an ICC profile) into the file it saves, and a rejected
    original's metadata must not reach a thumbnail."""
    rgb = im if im.mode == "RGB" else im.convert("RGB")
    return Image.frombytes("RGB", rgb.size, rgb.tobytes())


def without_text(thumbnail: bytes) -> bytes:
    """A kept JPEG thumbnail with every comment and APP segment but orientation dropped (a
    segment filter: the pixels stay as they are)."""
    from ..core.metadata import strip_metadata

    try:
        return strip_metadata(thumbnail, "jpeg", "all")
    except Exception:  # noqa: BLE001 - not a JPEG this filter reads: nothing of it is served
        return make_thumbnail(thumbnail)


def cached(root: Path, content_hash: str) -> bytes | None:
    try:
        return thumb_path(root, content_hash).read_bytes()
    except OSError:
        return None


def keep(root: Path, content_hash: str, data: bytes) -> bool:
    """Write the thumbnail atomically; a root this process cannot write (read-only, full) keeps
    none, and says so with False."""
    path = thumb_path(root, content_hash)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")  # one per writer
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return True
    except OSError as exc:
        log.debug("thumbnail not cached (%s): %s", path, exc)
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        return False
