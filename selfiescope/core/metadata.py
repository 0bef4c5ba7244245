"""Remove location (or all) metadata from an image's bytes without touching its pixels.

The container is rewritten segment by segment (JPEG markers, PNG chunks, WebP RIFF
chunks); the compressed image data is copied byte for byte, so the decoded pixels, the
perceptual hash and every id derived from the *original* bytes stay the same.

``location``: the EXIF GPS directory is removed (the rest of EXIF is kept: camera and
lens tags are features), and so are XMP packets that carry GPS or place fields and
IPTC/Photoshop blocks (they hold city/country fields).
``all``: EXIF, XMP, IPTC, comments and text chunks go; only the EXIF orientation is
kept (it decides which way up the pixels are shown), with the colour profile.
Other formats (GIF, BMP, TIFF, AVIF, HEIC) are returned unchanged; the ``store`` step refuses a
file that still has a GPS directory (see docs/architecture.md).
"""

from __future__ import annotations

import struct
import zlib
from io import BytesIO
from typing import Literal

from PIL import Image

StripMode = Literal["location", "all", "none"]
GPS_IFD = 0x8825
ORIENTATION = 0x0112
EXIF_HEADER = b"Exif\x00\x00"
XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
# Fields of XMP that say where a photo was taken.
XMP_PLACE_MARKS = (b"GPS", b"photoshop:City", b"photoshop:State", b"photoshop:Country",
                   b"Iptc4xmpCore:Location", b"Iptc4xmpExt:LocationShown", b"Iptc4xmpExt:LocationCreated")


def rewrite_exif(raw: bytes, mode: StripMode) -> bytes | None:
    """EXIF (with or without the ``Exif\\0\\0`` header) without GPS (``location``) or with only
    the orientation (``all``); ``None`` when nothing is left. Unchanged bytes when clean."""
    body = raw[len(EXIF_HEADER):] if raw.startswith(EXIF_HEADER) else raw
    exif = Image.Exif()
    try:
        exif.load(body)
    except Exception:  # unreadable EXIF: we cannot prove it has no location; drop it
        return None
    if mode == "all":
        orientation = exif.get(ORIENTATION)
        if not orientation or orientation == 1:
            return None
        kept = Image.Exif()
        kept[ORIENTATION] = orientation
        return kept.tobytes()
    if GPS_IFD not in exif:
        return raw if raw.startswith(EXIF_HEADER) else EXIF_HEADER + raw
    del exif[GPS_IFD]
    return exif.tobytes() if len(exif) else None


def _xmp_has_place(packet: bytes) -> bool:
    return any(mark in packet for mark in XMP_PLACE_MARKS)


# --- JPEG ------------------------------------------------------------------------------
_KEEP_ALL_MODE = {0xE0, 0xE2, 0xEE}  # APP0 JFIF, APP2 ICC profile, APP14 Adobe (colour transform)


def _jpeg(data: bytes, mode: StripMode) -> bytes:
    out = bytearray(data[:2])
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            break  # not a marker: leave the rest as it is
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            out.append(0xFF)
            pos += 1
            continue
        if marker == 0xDA or marker == 0xD9 or 0xD0 <= marker <= 0xD7 or marker == 0x01:
            break  # start of scan (or no-length markers): the image data follows untouched
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        end = pos + 2 + length
        payload = data[pos + 4:end]
        kept = _jpeg_segment(marker, payload, mode)
        if kept is not None:
            out += bytes([0xFF, marker]) + struct.pack(">H", len(kept) + 2) + kept
        pos = end
    out += data[pos:]
    return bytes(out)


def _jpeg_segment(marker: int, payload: bytes, mode: StripMode) -> bytes | None:
    """The payload to keep for one marker segment, or None to drop it."""
    if marker == 0xE1 and payload.startswith(EXIF_HEADER):
        exif = rewrite_exif(payload, mode)
        if exif is None or len(exif) + 2 > 0xFFFF:
            return None
        return exif
    if mode == "all":
        is_app_or_comment = 0xE0 <= marker <= 0xEF or marker == 0xFE
        return None if is_app_or_comment and marker not in _KEEP_ALL_MODE else payload
    if marker == 0xE1 and _xmp_has_place(payload):
        return None  # XMP (standard or extended) with GPS/place fields
    if marker == 0xED:  # APP13: Photoshop IRB / IPTC (city, country, sublocation)
        return None
    return payload


# --- PNG -------------------------------------------------------------------------------
_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_PNG_TEXT = {b"tEXt", b"zTXt", b"iTXt"}


def _png(data: bytes, mode: StripMode) -> bytes:
    out = bytearray(_PNG_SIG)
    pos = len(_PNG_SIG)
    while pos + 8 <= len(data):
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 12 + length
        body = data[pos + 8:pos + 8 + length]
        kept: bytes | None = body
        if ctype == b"eXIf":
            kept = rewrite_exif(body, mode)
            kept = kept[len(EXIF_HEADER):] if kept else None
        elif ctype in _PNG_TEXT:
            text = body if ctype != b"zTXt" else _inflate_ztxt(body)
            if mode == "all" or text is None or _xmp_has_place(text) or b"GPS" in text:
                kept = None
        if kept is body:
            out += data[pos:end]
        elif kept is not None:
            out += struct.pack(">I", len(kept)) + ctype + kept + struct.pack(">I", zlib.crc32(ctype + kept))
        pos = end
        if ctype == b"IEND":
            break
    out += data[pos:]
    return bytes(out)


def _inflate_ztxt(body: bytes) -> bytes | None:
    try:
        keyword, rest = body.split(b"\x00", 1)
        return keyword + b"\x00" + zlib.decompress(rest[1:])
    except (ValueError, zlib.error):
        return None


# --- WebP ------------------------------------------------------------------------------
_VP8X_EXIF, _VP8X_XMP = 0x08, 0x04


def _webp(data: bytes, mode: StripMode) -> bytes:
    chunks: list[tuple[bytes, bytes]] = []
    pos = 12
    while pos + 8 <= len(data):
        ctype, size = struct.unpack("<4sI", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + size]
        pos += 8 + size + (size & 1)
        if ctype == b"EXIF":
            kept = rewrite_exif(body, mode)
            if kept is not None:
                chunks.append((ctype, kept[len(EXIF_HEADER):] if body[:6] != EXIF_HEADER else kept))
            continue
        if ctype == b"XMP " and (mode == "all" or _xmp_has_place(body)):
            continue
        chunks.append((ctype, body))
    has = {c for c, _ in chunks}
    out = bytearray()
    for ctype, body in chunks:
        if ctype == b"VP8X":
            flags = body[0] & ~(_VP8X_EXIF | _VP8X_XMP)
            flags |= _VP8X_EXIF if b"EXIF" in has else 0
            flags |= _VP8X_XMP if b"XMP " in has else 0
            body = bytes([flags]) + body[1:]
        out += ctype + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) & 1 else b"")
    return b"RIFF" + struct.pack("<I", len(out) + 4) + b"WEBP" + bytes(out)


def strip_metadata(data: bytes, fmt: str | None, mode: StripMode = "location") -> bytes:
    """``data`` with location (or all) metadata removed; the same pixels. Unknown: unchanged."""
    if mode == "none" or not data:
        return data
    try:
        if fmt == "jpeg" and data[:2] == b"\xff\xd8":
            return _jpeg(data, mode)
        if fmt == "png" and data.startswith(_PNG_SIG):
            return _png(data, mode)
        if fmt == "webp" and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp(data, mode)
    except (struct.error, IndexError):
        return data  # a damaged container: decode accepted it, so keep the bytes as they came
    return data


def has_location(data: bytes) -> bool:
    """Whether Pillow finds a GPS directory in these bytes' EXIF (for tests and the card)."""
    try:
        with Image.open(BytesIO(data)) as im:
            return bool(im.getexif().get_ifd(GPS_IFD))
    except Exception:
        return False
