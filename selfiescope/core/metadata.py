"""Remove location (or all) metadata from an image's bytes without touching its pixels.

The container is rewritten segment by segment (JPEG markers, PNG chunks, WebP RIFF
chunks); the compressed image data is copied byte for byte, so the decoded pixels, the
perceptual hash and every id derived from the *original* bytes stay the same.

Each container keeps only what an allowlist names (image data, colour profile, structure);
everything else goes in both modes: XMP (a place can hide in any of its namespaces), IPTC and
Photoshop blocks, comments, text chunks and tags, and whatever a vendor added.
``location``: EXIF stays without its GPS directory and free-text tags (description, comments,
maker note, names): camera and lens tags are features.
``all``: only the EXIF orientation is kept (it decides which way up the pixels are shown).
TIFF tags are removed in place (their values zeroed, offsets unchanged). Other formats (GIF,
BMP, AVIF, HEIC) are returned unchanged; the ``store`` step refuses a file that still has GPS
or an XMP place field (see docs/architecture.md).
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
EXIF_IFD, INTEROP_IFD = 0x8769, 0xA005
# Fields of XMP that say where a photo was taken (the store step's check on formats not rewritten).
XMP_PLACE_MARKS = (b"GPS", b"photoshop:City", b"photoshop:State", b"photoshop:Country",
                   b"Iptc4xmpCore:Location", b"Iptc4xmpExt:LocationShown", b"Iptc4xmpExt:LocationCreated")
# EXIF tags of free text or vendor blobs (a street, a city, a name can be typed into any of them).
EXIF_FREE_TEXT = frozenset({
    0x010D, 0x010E, 0x011D, 0x013B, 0x8298,  # DocumentName, ImageDescription, PageName, Artist, Copyright
    0x9C9B, 0x9C9C, 0x9C9D, 0x9C9E, 0x9C9F,  # XPTitle, XPComment, XPAuthor, XPKeywords, XPSubject
    0x9286, 0x927C, 0xA430,  # UserComment, MakerNote, CameraOwnerName
})


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
    sub = exif.get_ifd(EXIF_IFD) if EXIF_IFD in exif else {}
    free = [t for t in exif if t in EXIF_FREE_TEXT] + [t for t in sub if t in EXIF_FREE_TEXT]
    if GPS_IFD not in exif and not free:
        return raw if raw.startswith(EXIF_HEADER) else EXIF_HEADER + raw
    for tag in (GPS_IFD, *EXIF_FREE_TEXT):
        exif.pop(tag, None)
        sub.pop(tag, None)
    return exif.tobytes() if len(exif) else None


def _xmp_has_place(packet: bytes) -> bool:
    return any(mark in packet for mark in XMP_PLACE_MARKS)


# --- JPEG ------------------------------------------------------------------------------
_KEEP_APP = {0xE0, 0xE2, 0xEE}  # APP0 JFIF, APP2 ICC profile / MPF, APP14 Adobe (colour transform)


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
    is_app_or_comment = 0xE0 <= marker <= 0xEF or marker == 0xFE  # XMP, IPTC, comments, vendor blocks
    return None if is_app_or_comment and marker not in _KEEP_APP else payload


# --- PNG -------------------------------------------------------------------------------
_PNG_SIG = b"\x89PNG\r\n\x1a\n"
# Chunks that make up the image or change how it is shown; text, XMP and vendor chunks are not among them.
_PNG_KEEP = {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT", b"bKGD",
             b"hIST", b"pHYs", b"sPLT", b"cICP", b"mDCV", b"cLLI", b"acTL", b"fcTL", b"fdAT", b"eXIf"}


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
        elif ctype not in _PNG_KEEP:
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


# --- WebP ------------------------------------------------------------------------------
_VP8X_EXIF, _VP8X_XMP = 0x08, 0x04
_WEBP_KEEP = {b"VP8X", b"VP8 ", b"VP8L", b"ALPH", b"ANIM", b"ANMF", b"ICCP"}


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
        if ctype not in _WEBP_KEEP:
            continue  # XMP and anything else
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


# --- TIFF ------------------------------------------------------------------------------
# Tags that make up the image (layout, strips/tiles, compression, colour, orientation, ICC profile).
_TIFF_IMAGE_TAGS = frozenset({
    254, 255, 256, 257, 258, 259, 262, 263, 264, 265, 266, 273, 274, 277, 278, 279, 280, 281, 282, 283, 284,
    286, 287, 290, 291, 292, 293, 296, 297, 301, 317, 318, 319, 320, 321, 322, 323, 324, 325, 330, 332, 338,
    339, 340, 341, 347, 512, 513, 514, 515, 517, 518, 519, 520, 521, 529, 530, 531, 532, 34675,
})
_TIFF_CAMERA_TAGS = frozenset({271, 272, 305, 306, EXIF_IFD})  # Make, Model, Software, DateTime, EXIF: features
_TIFF_SUB_IFDS = 330
_TIFF_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}


class _Tiff:
    """Removes IFD entries in place: the IFD is repacked with the entries kept, the bytes of the
    entries and values removed are zeroed, and no offset moves (strips and tiles stay where they are)."""

    def __init__(self, data: bytes, mode: StripMode) -> None:
        self.buf = bytearray(data)
        self.mode = mode
        self.e = "<" if data[:2] == b"II" else ">"
        self.seen: set[int] = set()
        self.wipes: list[tuple[int, int]] = []
        self.kept: list[tuple[int, int]] = []  # kept IFDs, values, strips and tiles: never zeroed

    def u(self, fmt: str, at: int) -> int:
        return struct.unpack_from(self.e + fmt, self.buf, at)[0]

    def entries(self, off: int) -> list[tuple[int, int, int, int, int]]:
        n = self.u("H", off)
        if off + 2 + 12 * n + 4 > len(self.buf):
            raise IndexError("IFD past the end")
        out = []
        for i in range(n):
            at = off + 2 + 12 * i
            tag, typ, count = struct.unpack_from(self.e + "HHI", self.buf, at)
            out.append((tag, typ, count, at, _TIFF_SIZES.get(typ, 1) * count))
        return out

    def value_offset(self, entry: tuple[int, int, int, int, int]) -> int | None:
        _, _, _, at, size = entry
        return None if size <= 4 else self.u("I", at + 8)

    def offsets(self, entry: tuple[int, int, int, int, int]) -> list[int]:
        _, typ, count, at, size = entry
        fmt = "H" if typ == 3 else "I"
        base = at + 8 if size <= 4 else self.u("I", at + 8)
        return [self.u(fmt, base + k * struct.calcsize(fmt)) for k in range(min(count, 1024))]

    def wipe_value(self, entry: tuple[int, int, int, int, int]) -> None:
        start = self.value_offset(entry)
        if start is not None:
            self.wipes.append((start, start + entry[4]))

    def keep_value(self, entry: tuple[int, int, int, int, int], entries: list) -> None:
        start = self.value_offset(entry)
        if start is not None:
            self.kept.append((start, start + entry[4]))
        counts = {273: 279, 324: 325}.get(entry[0])
        sizes = next((e for e in entries if e[0] == counts), None)
        if sizes is not None:
            self.kept += [(o, o + n) for o, n in zip(self.offsets(entry), self.offsets(sizes))]

    def finish(self) -> bytes:
        for start, end in self.wipes:
            if end <= len(self.buf) and not any(a < end and start < b for a, b in self.kept):
                self.buf[start:end] = bytes(end - start)
        return bytes(self.buf)

    def wipe_ifd(self, off: int) -> None:
        """Zero a sub-IFD that is no longer referenced (GPS, an EXIF directory in ``all`` mode)."""
        if off in self.seen or not 8 <= off < len(self.buf):
            return
        self.seen.add(off)
        entries = self.entries(off)
        for entry in entries:
            if entry[0] in (GPS_IFD, EXIF_IFD, INTEROP_IFD):
                self.wipe_ifd(self.offsets(entry)[0])
            self.wipe_value(entry)
        self.wipes.append((off, off + 2 + 12 * len(entries) + 4))

    def rewrite(self, off: int, keep, follow_next: bool) -> None:
        while off and off not in self.seen:
            if not 8 <= off < len(self.buf):
                raise IndexError("IFD offset past the end")
            self.seen.add(off)
            entries = self.entries(off)
            next_at = off + 2 + 12 * len(entries)
            nxt = self.u("I", next_at)
            kept = []
            for entry in entries:
                tag = entry[0]
                if keep(tag):
                    kept.append(bytes(self.buf[entry[3]:entry[3] + 12]))
                    self.keep_value(entry, entries)
                    if tag == EXIF_IFD:
                        self.rewrite(self.offsets(entry)[0], lambda t: t not in EXIF_FREE_TEXT and t != GPS_IFD, False)
                    elif tag == _TIFF_SUB_IFDS:
                        for sub in self.offsets(entry):
                            self.rewrite(sub, keep, False)
                    continue
                if tag in (GPS_IFD, EXIF_IFD, INTEROP_IFD):
                    self.wipe_ifd(self.offsets(entry)[0])
                self.wipe_value(entry)
            block = struct.pack(self.e + "H", len(kept)) + b"".join(kept) + struct.pack(self.e + "I", nxt)
            self.buf[off:next_at + 4] = block + bytes(next_at + 4 - off - len(block))
            self.kept.append((off, off + len(block)))
            off = nxt if follow_next else 0


def _tiff(data: bytes, mode: StripMode) -> bytes:
    if data[:4] not in (b"II*\x00", b"MM\x00*"):
        return data  # BigTIFF and others: left as they are (the store step checks what remains)
    keep_tags = _TIFF_IMAGE_TAGS | (_TIFF_CAMERA_TAGS if mode == "location" else frozenset())
    tiff = _Tiff(data, mode)
    tiff.rewrite(tiff.u("I", 4), keep_tags.__contains__, True)
    return tiff.finish()


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
        if fmt == "tiff":
            return _tiff(data, mode)
    except (struct.error, IndexError):
        return data  # a damaged container: decode accepted it, so keep the bytes as they came
    return data


def has_location(data: bytes) -> bool:
    """Whether Pillow finds a GPS directory in these bytes' EXIF, or an XMP packet with a GPS or
    place field (the store step's check, for formats and files not rewritten)."""
    try:
        with Image.open(BytesIO(data)) as im:
            if im.getexif().get_ifd(GPS_IFD):
                return True
            packets = [im.info.get("xmp"), im.info.get("XML:com.adobe.xmp")]
            tags = getattr(im, "tag_v2", None)
            if tags is not None:
                packets.append(tags.get(700))
            return any(_xmp_has_place(p if isinstance(p, bytes) else str(p).encode("utf-8", "replace"))
                       for p in packets if p)
    except Exception:
        return False
