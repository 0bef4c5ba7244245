"""Whether a downloaded answer arrived whole.

A body shorter than its ``Content-Length``, or image data that stops before the image does, is
a download that broke off (a proxy or the connection cut it), not a bad image: the download
is retried and, if it stays so, counted as failed, never rejected for good. The image test is
the one the decode step applies (Pillow reading every byte, "truncated" or an early end), so
what passes here is never rejected as truncated there.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping

_DRAFT_SIDE = 64  # a JPEG is decoded at 1/8 scale: every byte is still read, at a fraction of the work
# Larger (non-JPEG) images are not decoded here: the decode step refuses them from their header
# (``decode.max_pixels``), and decoding one twice would hold gigabytes.
_MAX_CHECKED_PIXELS = 50_000_000


def body_cut_short(headers: Mapping[str, str], data: bytes) -> str | None:
    """Why ``data`` is not the whole body its headers announce, or None. A body sent with a
    ``Content-Encoding`` was decoded on arrival, so its length is not comparable."""
    lowered = {k.lower(): v for k, v in headers.items()}
    length = (lowered.get("content-length") or "").strip()
    if lowered.get("content-encoding", "identity").strip().lower() not in ("", "identity") or not length.isdigit():
        return None
    if len(data) < int(length):
        return f"cut off ({len(data)} of {int(length)} bytes arrived)"
    return None


def image_cut_short(data: bytes) -> str | None:
    """Why the image in ``data`` ends before its data does, or None (whole, or wrong in another way
    that the decode step judges)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                if im.format == "JPEG":
                    im.draft("RGB", (_DRAFT_SIDE, _DRAFT_SIDE))
                elif im.width * im.height > _MAX_CHECKED_PIXELS:
                    return None
                im.load()
    except EOFError:
        return "image data cut off"
    except Exception as exc:  # noqa: BLE001 - any other problem is the decode step's to judge
        if "truncated" in str(exc):
            return "image data cut off"
        return None
    return None
