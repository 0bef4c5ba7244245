"""The ``decode`` step: untrusted bytes in, a validated RGB array out (first in the chain).

Every check that can be made from the header (format, pixel count, minimum side) runs
before any pixel is decoded, so a decompression bomb costs a few bytes of reading.
The original bytes stay on the event untouched; storage writes them as they came.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import Field

from ..core.components import Options, Step
from ..core.events import ImageEvent, Reject
from ..core.hookspecs import hookimpl

# Pillow warns (on stderr, once per message) about damaged EXIF blocks; the picture is still
# fine, and a broken EXIF block only costs its orientation, so keep the terminal quiet.
warnings.filterwarnings("ignore", message=r"(?i).*(exif|metadata).*", module=r"PIL\..*")

# Pillow format name -> our format name (MPO is a JPEG with extra frames, e.g. a phone's depth map).
FORMATS = {
    "JPEG": "jpeg", "MPO": "jpeg", "PNG": "png", "WEBP": "webp", "GIF": "gif",
    "BMP": "bmp", "TIFF": "tiff", "AVIF": "avif",
}
EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp", "gif": "gif", "bmp": "bmp", "tiff": "tif", "avif": "avif"}
# What Pillow raises on malformed data, depending on the plugin that reads it.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error)


class DecodeOptions(Options):
    max_pixels: int = Field(50_000_000, ge=1, description="refuse larger images from their header")
    min_side: int = Field(64, ge=1, description="refuse images whose shorter side is smaller")
    animated: Literal["first_frame", "reject"] = "first_frame"
    formats: list[str] = Field(default_factory=lambda: sorted(set(FORMATS.values())))


@dataclass
class Decoded:
    image: np.ndarray  # (H, W, 3) uint8 RGB, EXIF orientation applied
    format: str
    width: int
    height: int
    frames: int = 1
    exif: bytes | None = None  # the raw EXIF block, if the file has one


SIGNATURES = {
    b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG", b"GIF87a": "GIF", b"GIF89a": "GIF",
    b"BM": "BMP", b"II*\x00": "TIFF", b"MM\x00*": "TIFF",
}


def _sniff_text(data: bytes) -> str | None:
    head = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith((b"<!doctype", b"<html", b"<head", b"<body", b"<?xml", b"<")):
        return "HTML/XML text"
    if head.startswith((b"{", b"[")):
        return "JSON text"
    return None


def _to_rgb(im: Image.Image) -> np.ndarray:
    """Any Pillow mode -> (H, W, 3) uint8 RGB; transparency is flattened onto white."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im)
        if im.mode.startswith("I;16") or (arr.size and arr.max() > 255):
            top = 65535.0 if im.mode != "F" else max(float(arr.max()), 1.0)
            arr = np.clip(arr.astype(np.float64) * (255.0 / top), 0, 255)
        grey = arr.astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "La", "RGBa", "PA") or (im.mode in ("RGB", "L") and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))


def decode_image(data: bytes, options: DecodeOptions | None = None) -> Decoded:
    """Validate and decode image bytes. Raises :class:`Reject` with a stable code on bad input.

    The bytes are untrusted: whatever a decoder raises on them is a rejection (``corrupt``),
    never an error of the run.
    """
    try:
        return _decode(data, options or DecodeOptions())
    except (Reject, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - a decoder's unexpected exception on hostile bytes
        raise Reject("corrupt", f"cannot be decoded: {type(exc).__name__}: {exc}") from None


def _decode(data: bytes, options: DecodeOptions) -> Decoded:
    if not data:
        raise Reject("empty", "zero bytes received")
    try:
        im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise Reject("too_many_pixels", f"refused from the header: {exc}") from None
    except UnidentifiedImageError:
        signed = next((fmt for magic, fmt in SIGNATURES.items() if data.startswith(magic)), None)
        if signed:
            raise Reject("corrupt", f"{signed} signature but an unreadable header ({len(data)} bytes)") from None
        kind = _sniff_text(data)
        what = f"{kind} served instead of an image" if kind else "not a recognised image format"
        raise Reject("not_image", f"{what} ({len(data)} bytes)") from None  # never quote the bytes: they may be a secret
    except _DECODE_ERRORS as exc:
        raise Reject("corrupt", f"unreadable header: {type(exc).__name__}: {exc}") from None
    with im:
        # The raw EXIF block as the header gives it, before load() (what features read camera data from).
        exif = im.info.get("exif")
        fmt = FORMATS.get(im.format or "")
        if fmt is None or fmt not in options.formats:
            raise Reject("unsupported", f"image format {im.format} is not accepted")
        width, height = im.size
        if width * height > options.max_pixels:
            raise Reject(
                "too_many_pixels",
                f"{width}x{height} = {width * height:,} pixels exceeds max_pixels {options.max_pixels:,}",
            )
        if min(width, height) < options.min_side:
            raise Reject("too_small", f"{width}x{height}: shorter side below min_side {options.min_side}")
        try:
            frames = int(getattr(im, "n_frames", 1) or 1)  # GIF counts frames by reading through them
            if frames > 1 and fmt != "jpeg" and options.animated == "reject":
                raise Reject("animated", f"animated {fmt} with {frames} frames (decode.animated = 'reject')")
            im.seek(0)
            im.load()
        except Image.DecompressionBombError as exc:
            raise Reject("too_many_pixels", str(exc)) from None
        except _DECODE_ERRORS as exc:
            code = "truncated" if "truncated" in str(exc) or isinstance(exc, EOFError) else "corrupt"
            raise Reject(code, f"{fmt} data cannot be decoded: {type(exc).__name__}: {exc}") from None
        try:
            oriented = ImageOps.exif_transpose(im)
        except Exception:  # a broken EXIF block must not cost the picture
            oriented = im
        try:
            rgb = _to_rgb(oriented)
        except _DECODE_ERRORS as exc:
            raise Reject("unsupported", f"pixel mode {im.mode} cannot be converted: {exc}") from None
    return Decoded(rgb, fmt, rgb.shape[1], rgb.shape[0], frames, exif if isinstance(exif, bytes) and exif else None)


class DecodeStep(Step):
    """Sets ``event.image`` (RGB, EXIF-oriented), ``format``, ``width`` and ``height``."""

    name = "decode"
    Options = DecodeOptions
    provides = frozenset({"image", "format", "exif"})  # capabilities: training/predict decode with this step

    def process(self, event: ImageEvent) -> None:
        if "oversize" in event.notes:
            raise Reject("too_large", f"file of {event.notes['oversize']:,} bytes is over the source's max_bytes")
        decoded = decode_image(event.data, self.options)
        event.image = decoded.image
        event.format = decoded.format
        event.width = decoded.width
        event.height = decoded.height
        event.exif = decoded.exif
        if decoded.frames > 1:
            event.notes["frames"] = decoded.frames


@hookimpl
def selfiescope_steps():
    return [DecodeStep]
