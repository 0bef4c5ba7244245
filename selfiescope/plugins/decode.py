"""The ``decode`` step: untrusted bytes in, a validated RGB array out (first in the chain).

Every check that can be made from the header (format, pixel count, minimum side) runs
before any pixel is decoded, so a decompression bomb costs a few bytes of reading.
The original bytes stay on the event untouched; storage writes them as they came.

One decode per image, shared: in a collect run the step decodes at the smallest size that
every later step of the chain needs for that image (``Step.working_side_for``, given the
original's size from the header): a JPEG is decoded reduced by
libjpeg's DCT scaling (Pillow's ``draft``, 1/2, 1/4 or 1/8), any other format is decoded in
full and downscaled once. ``event.width``/``height`` stay the original's (EXIF-oriented),
and every header check uses the original size. Without a collect run (training's dataset,
``predict``) the image is decoded at full resolution, exactly as before, so features do not
change. See ``benchmarks/bench_import_cpu.py``.
"""

from __future__ import annotations

import io
import math
import struct
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Literal, Union

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import Field

from ..api import ImageEvent, Options, Reject, Step, hookimpl

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


# Pillow refuses twice its MAX_IMAGE_PIXELS outright (a decompression bomb): no setting goes above it
MAX_DECODABLE = 2 * Image.MAX_IMAGE_PIXELS


class DecodeOptions(Options):
    max_pixels: int = Field(50_000_000, ge=1, le=MAX_DECODABLE,
                            description="refuse larger images from their header")
    min_side: int = Field(64, ge=1, description="refuse images whose shorter side is smaller")
    animated: Literal["first_frame", "reject"] = "first_frame"
    formats: list[str] = Field(default_factory=lambda: sorted(set(FORMATS.values())))


@dataclass
class Decoded:
    image: np.ndarray  # (H, W, 3) uint8 RGB, EXIF orientation applied; reduced when asked to
    format: str
    width: int  # the original's size, EXIF orientation applied (whatever size ``image`` is)
    height: int
    frames: int = 1
    exif: bytes | None = None  # the raw EXIF block, if the file has one
    working_side: int | None = None  # the longest side asked for (None: full resolution): with the bytes, it fixes the pixels


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


# The longest side a caller needs: a number, or a function of the original's width and height
# (as stored, before EXIF orientation: a quarter turn swaps them) read from the header.
WorkingSide = Union[int, None, Callable[[int, int], Union[int, None]]]


def decode_image(data: bytes, options: DecodeOptions | None = None, *, working_side: WorkingSide = None) -> Decoded:
    """Validate and decode image bytes. Raises :class:`Reject` with a stable code on bad input.

    The bytes are untrusted: whatever a decoder raises on them is a rejection (``corrupt``),
    never an error of the run. ``working_side``: the longest side the caller needs (or a function
    of the original's size giving it); the image comes back at least that large but no larger
    than it must be (None: full resolution).
    """
    try:
        return _decode(data, options or DecodeOptions(), working_side)
    except (Reject, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - a decoder's unexpected exception on hostile bytes
        raise Reject("corrupt", f"cannot be decoded: {type(exc).__name__}: {exc}") from None


def shrink_to_side(image: np.ndarray, side: int) -> np.ndarray:
    """Downscale so the longer side is ``side`` (aspect kept); smaller images come back as they are."""
    height, width = image.shape[:2]
    if max(width, height) <= side:
        return image
    scale = side / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if scale < 0.5:  # a cheap bilinear step to twice the size first: area-averaging a large image costs 10x more
        image = cv2.resize(image, (size[0] * 2, size[1] * 2), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _draft_size(width: int, height: int, side: int) -> tuple[int, int]:
    """The size to ask ``draft`` for: the original scaled so its longer side is ``side``.

    ``draft`` picks the largest DCT reduction (1/8..1/2) that keeps both sides at least this,
    so the result's longer side is >= ``side``; both sides scale alike, so EXIF rotation
    (applied after decoding) does not change the answer.
    """
    scale = side / max(width, height)
    return max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))


def _quarter_turned(im: Image.Image, oriented: Image.Image) -> bool:
    """Whether EXIF orientation turned the picture by 90 degrees (5-8: its sides swapped)."""
    if oriented is im:  # the EXIF block could not be applied
        return False
    if oriented.size != im.size:
        return True
    try:  # a square after a reduced decode may come from a not quite square original
        return im.getexif().get(0x0112) in (5, 6, 7, 8)
    except Exception:  # noqa: BLE001 - a broken EXIF block
        return False


def _decode(data: bytes, options: DecodeOptions, working: WorkingSide = None) -> Decoded:
    if not data:
        raise Reject("empty", "zero bytes received")
    try:
        im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:  # Pillow's words name its own limit, not the setting
        raise Reject("too_many_pixels", f"more than {MAX_DECODABLE:,} pixels, refused from the header "
                                        f"(max_pixels {options.max_pixels:,})") from None
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
            raise Reject("too_small", f"{width}x{height}: shorter side below min_side {options.min_side} "
                                      f"(lower [plugins.decode] min_side to keep it)")
        working_side = working(width, height) if callable(working) else working
        try:
            frames = int(getattr(im, "n_frames", 1) or 1)  # GIF counts frames by reading through them
            if frames > 1 and fmt != "jpeg" and options.animated == "reject":
                raise Reject("animated", f"animated {fmt} with {frames} frames (decode.animated = 'reject')")
            im.seek(0)
            reduce = bool(working_side) and max(width, height) > 2 * working_side
            if reduce and fmt == "jpeg":
                im.draft("RGB", _draft_size(width, height, working_side))  # header size checked above
            im.load()
        except Image.DecompressionBombError:
            raise Reject("too_many_pixels", f"{width}x{height}: more pixels than the decoder accepts "
                                            f"(max_pixels {options.max_pixels:,})") from None
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
        if _quarter_turned(im, oriented):  # the original's sides swap too
            width, height = height, width
    if working_side and max(rgb.shape[:2]) > 2 * working_side:  # not a JPEG, or more than draft's 1/8
        rgb = shrink_to_side(rgb, working_side)
    return Decoded(rgb, fmt, width, height, frames, exif if isinstance(exif, bytes) and exif else None,
                   working_side or None)


# Where no later step looks at the pixels, decode this small: the whole stream is still read
# (a truncated or corrupt file is still refused), but no more pixels are made than needed.
NO_PIXELS_SIDE = 64


def _later_steps(run: Any, after: str) -> list[tuple[type[Step], Options]] | None:
    """The steps after ``after`` in ``run``'s chain with their options; None where the chain
    cannot say (no collect run, an unknown step, options that do not validate)."""
    pipeline = getattr(run, "pipeline", None)
    chain = getattr(pipeline, "chain", None)
    registry = getattr(run, "registry", None)
    if not chain or registry is None or after not in chain:
        return None
    later = []
    for name in chain[chain.index(after) + 1 :]:
        cls = registry.steps.get(name)
        if cls is None:
            return None
        try:
            options = cls.Options.model_validate(run.settings.component_options(name, pipeline))
        except Exception:  # noqa: BLE001 - settings checking reports it; decode in full meanwhile
            return None
        later.append((cls, options))
    return later


def _largest(sides: list[int | None]) -> int | None:
    if any(side is None for side in sides):
        return None
    return max([0, *sides]) or NO_PIXELS_SIDE  # type: ignore[type-var]


def chain_working_side(run: Any, after: str) -> int | None:
    """The longest side the steps after ``after`` in ``run``'s chain may need (``Step.working_side``).

    None (full resolution) without a collect run (no run, no pipeline chain: training's
    dataset, ``predict``), when a step is unknown or its options do not validate, or when
    any later step needs full resolution.
    """
    later = _later_steps(run, after)
    if later is None:
        return None
    return _largest([cls.working_side(options) for cls, options in later])


def chain_working_side_for(run: Any, after: str) -> Callable[[int, int], int | None] | None:
    """Per image: the longest side the later steps need for an original of that size
    (``Step.working_side_for``; None: full resolution). None without a collect run or where the
    chain cannot say (an unknown step, options that do not validate), as for :func:`chain_working_side`."""
    later = _later_steps(run, after)
    if later is None:
        return None

    def working_side_for(width: int, height: int) -> int | None:
        return _largest([cls.working_side_for(options, width, height) for cls, options in later])

    return working_side_for


class DecodeStep(Step):
    """Sets ``event.image`` (RGB, EXIF-oriented, at the chain's working size), ``format``,
    and the original's ``width`` and ``height``."""

    name = "decode"
    worker_safe = True  # pure: bytes in, pixels out
    Options = DecodeOptions
    provides = frozenset({"image", "format", "exif"})  # capabilities: training/predict decode with this step
    working: int | None = None  # the most the chain's steps may need, found in open(); None = full resolution
    working_for: Callable[[int, int], int | None] | None = None  # what they need for one image's size

    @classmethod
    def working_side(cls, options: Options) -> int | None:
        return 0  # decode makes the pixels; it needs none of its own

    async def open(self) -> None:
        self.working = chain_working_side(self.run, self.name)
        self.working_for = chain_working_side_for(self.run, self.name)

    def process(self, event: ImageEvent) -> None:
        if "oversize" in event.notes:
            raise Reject("too_large", f"file of {event.notes['oversize']:,} bytes is over the source's max_bytes")
        decoded = decode_image(event.data, self.options, working_side=self.working_for)
        event.image = decoded.image
        event.format = decoded.format
        event.width = decoded.width
        event.height = decoded.height
        event.exif = decoded.exif
        event.decoded_side = decoded.working_side or 0
        if decoded.frames > 1:
            event.notes["frames"] = decoded.frames


@hookimpl
def selfiescope_steps():
    return [DecodeStep]
