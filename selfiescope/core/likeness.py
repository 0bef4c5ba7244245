"""Perceptual tombstones: a forgotten photo stays forgotten when it comes back re-encoded,
resized, mirrored, converted to PNG or slightly cropped.

``forget`` records, beside the exact tombstones (keyed hashes of the bytes, the post and the
owner), the photo's two perceptual hashes (whole picture and centre, as dedup stores them).
The admit gate then refuses any incoming image that dedup would call the same photo: any of
its four hashes (whole, centre, and those of its horizontal mirror) within dedup's
``max_distance`` of either sealed hash.

How the hashes are kept, and why. A perceptual hash is a fingerprint of the photo: kept in
clear it would say, to anyone holding the manifest and a candidate photo, "this was
forgotten". Two keyed forms were weighed:

* a fixed XOR mask derived from the dataset key keeps Hamming distances, so sealed hashes
  could be searched without the key; but the XOR of two sealed hashes is then the XOR of the
  two raw hashes (two candidate photos can be tested against the table without any key),
  and one known forgotten photo reveals the mask, hence every other hash;
* sealing each hash with its own random nonce (``hash XOR HMAC-SHA256(key, nonce)``: a
  stream cipher with HMAC as the pseudo-random function, plus an 8-byte HMAC tag that tells
  a wrong key) makes every stored value look random and unrelated to the others. Matching needs the key: a run opens the sealed hashes
  once (one HMAC per forgotten photo) and compares in memory.

The second is used: forgotten photos are few (a removal request names some, not millions),
so opening them all once per run costs milliseconds, and the table then says nothing
about any photo, even to someone holding a candidate copy, without the key (kept outside
the manifest). The sealed value is the tombstone's key (``kind = 'phash'``): no new
table, and an older manifest needs no migration.

The hash functions live here (dedup imports them) so the gate and dedup agree exactly.
"""

from __future__ import annotations

import hmac
import io
import logging
import secrets
import struct
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import cv2
import imagehash
import numpy as np
from PIL import Image, ImageOps

if TYPE_CHECKING:  # pragma: no cover
    from .events import ImageEvent
    from .manifest import Manifest
    from .privacy import Keyring

log = logging.getLogger("selfiescope.privacy")

KIND = "phash"  # tombstones.kind of a sealed perceptual hash pair
PREFIX = "phash:"
NONCE_BYTES = 16
TAG_BYTES = 8
CENTRE_MARGIN = 0.05
# The hashes are of a 32x32 area-averaged copy: a decoded image of this side or more gives the
# same hashes as the full one within a bit or two (benchmarks/bench_import_cpu.py measures it).
HASH_WORKING_SIDE = 256
DEFAULT_MAX_DISTANCE = 8  # dedup's default (``[plugins.dedup] max_distance``)
DEFAULT_MAX_PIXELS = 50_000_000  # the decode step's default refusal from the header


# --- the hashes (shared with dedup) --------------------------------------------------------
def compute_phash(image: np.ndarray) -> str:
    """imagehash pHash (hex) of a decoded RGB (or grey) image; downscaled with area averaging first."""
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    small = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA)
    return str(imagehash.phash(Image.fromarray(small)))


def centre_crop(image: np.ndarray, margin: float = CENTRE_MARGIN) -> np.ndarray:
    height, width = image.shape[:2]
    dy, dx = int(height * margin), int(width * margin)
    return image[dy : height - dy, dx : width - dx]


def compute_phashes(image: np.ndarray) -> tuple[str, str]:
    """pHash of the whole image and of its centre (5% off each side).

    A copy cropped by a few percent hashes close to the original's centre (or the other
    way round), which the whole-image hash alone misses: see benchmarks/bench_dedup.py.
    """
    return compute_phash(image), compute_phash(centre_crop(image))


def compute_mirror_phashes(image: np.ndarray) -> tuple[str, str]:
    """The two hashes of the horizontally mirrored image (the lookup keys for flipped copies).

    The centre crop is symmetric, so the mirror's centre is the centre's mirror.
    """
    return compute_phashes(np.ascontiguousarray(image[:, ::-1]))


# --- sealing ---------------------------------------------------------------------------------
def _mask(keyring: "Keyring", nonce: bytes) -> bytes:
    return keyring.mac("phash-tombstone", nonce)[:16]


def seal(keyring: "Keyring", whole: int, centre: int | None) -> str:
    """A tombstone key holding ``(whole, centre)`` sealed under the dataset key (fresh nonce),
    with a tag that tells a wrong key (a lost and re-made key file) from a right one."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    plain = struct.pack(">QQ", whole, whole if centre is None else centre)
    body = bytes(a ^ b for a, b in zip(plain, _mask(keyring, nonce)))
    return PREFIX + (nonce + body + _tag(keyring, nonce, plain)).hex()


def _tag(keyring: "Keyring", nonce: bytes, plain: bytes) -> bytes:
    return keyring.mac("phash-tombstone-tag", nonce + plain)[:TAG_BYTES]


def unseal(keyring: "Keyring", key: str) -> tuple[int, int] | None:
    """The hash pair of a sealed tombstone key (None for a damaged one, or another key's)."""
    try:
        raw = bytes.fromhex(key[len(PREFIX):]) if key.startswith(PREFIX) else b""
    except ValueError:
        return None
    if len(raw) != NONCE_BYTES + 16 + TAG_BYTES:
        return None
    nonce, body, tag = raw[:NONCE_BYTES], raw[NONCE_BYTES:NONCE_BYTES + 16], raw[NONCE_BYTES + 16:]
    plain = bytes(a ^ b for a, b in zip(body, _mask(keyring, nonce)))
    if not hmac.compare_digest(tag, _tag(keyring, nonce, plain)):
        return None
    return struct.unpack(">QQ", plain)  # type: ignore[return-value]


class ForgottenLikeness:
    """The opened perceptual tombstones of one dataset, searched by Hamming distance."""

    def __init__(self, pairs: Iterable[tuple[int, int]], max_distance: int) -> None:
        self.hashes = np.array([h for pair in pairs for h in pair], dtype=np.uint64)
        self.max_distance = max_distance

    def __len__(self) -> int:
        return len(self.hashes) // 2

    def matches(self, queries: Sequence[int]) -> bool:
        """Whether any query hash is within ``max_distance`` of any forgotten hash."""
        if not len(self.hashes):
            return False
        return any(int(np.bitwise_count(self.hashes ^ np.uint64(q)).min()) <= self.max_distance for q in queries)

    def matches_event(self, event: "ImageEvent", max_pixels: int = DEFAULT_MAX_PIXELS) -> bool:
        queries = event_hashes(event, max_pixels)
        return bool(queries) and self.matches(queries)


def load_likeness(manifest: "Manifest", max_distance: int) -> ForgottenLikeness:
    keys = [r[0] for r in manifest.query("SELECT key FROM tombstones WHERE kind=?", (KIND,))]
    pairs = [pair for key in keys if (pair := unseal(manifest.keyring, key))]
    if len(pairs) < len(keys):
        log.warning("%d forgotten photos' perceptual tombstones cannot be opened (damaged, or sealed with another "
                    "dataset key: restore %s from a backup), so copies of them are not recognised",
                    len(keys) - len(pairs), manifest.keyring.path)
    return ForgottenLikeness(pairs, max_distance)


def event_hashes(event: "ImageEvent", max_pixels: int = DEFAULT_MAX_PIXELS) -> list[int]:
    """The four lookup hashes of an incoming image (whole, centre, and the mirror's): those a
    worker already computed (Dask), else from a small decode of the bytes. An image that cannot
    be decoded has none (the chain then rejects it as it would anyway)."""
    known = [event.phash, event.phash_centre, event.phash_mirror, event.phash_mirror_centre]
    if all(isinstance(h, str) for h in known):
        try:
            return [int(h, 16) for h in known]  # type: ignore[arg-type]
        except ValueError:
            pass
    if not event.data:
        return []
    grey = decode_grey(event.data, max_pixels)
    if grey is None:
        return []
    return [int(h, 16) for h in (*compute_phashes(grey), *compute_mirror_phashes(grey))]


def decode_grey(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, side: int = HASH_WORKING_SIDE) -> np.ndarray | None:
    """The picture in grey, at least ``side`` pixels on its longer side (a JPEG is decoded
    reduced), EXIF orientation applied, transparency flattened onto white: the pixels the
    decode step gives dedup, within a bit of its hashes. Core cannot import that step (a
    plugin), hence this small copy. None for what cannot be decoded or is larger than
    ``max_pixels`` (checked from the header): the chain refuses those anyway."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            if width * height > max_pixels or not width or not height:
                return None
            if max(width, height) > 2 * side:
                im.draft("RGB", (max(1, width * side // max(width, height)), max(1, height * side // max(width, height))))
            im.seek(0)
            im.load()
            try:
                im = ImageOps.exif_transpose(im)
            except Exception:  # noqa: BLE001 - a broken EXIF block costs the orientation only
                pass
            grey = _grey(im)
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error, Image.DecompressionBombError):
        return None
    if max(grey.shape) > 2 * side:
        scale = side / max(grey.shape)
        grey = cv2.resize(grey, (max(1, round(grey.shape[1] * scale)), max(1, round(grey.shape[0] * scale))),
                          interpolation=cv2.INTER_AREA)
    return grey


def _grey(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im)
        if im.mode.startswith("I;16") or (arr.size and arr.max() > 255):
            top = 65535.0 if im.mode != "F" else max(float(arr.max()), 1.0)
            arr = np.clip(arr.astype(np.float64) * (255.0 / top), 0, 255)
        return np.ascontiguousarray(arr.astype(np.uint8))
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "La", "RGBa", "PA") or (im.mode in ("RGB", "L") and "transparency" in im.info):
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    rgb = np.asarray(im.convert("RGB") if im.mode != "RGB" else im, dtype=np.uint8)
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


def likeness_tombstones(manifest: "Manifest", content_hashes: list[str]) -> list[str]:
    """Sealed perceptual hashes of these images: the row's whole-image hash and the centre
    hash (core's columns, from the event's public fields)."""
    sealed = []
    for content_hash in content_hashes:
        row = manifest.query("SELECT phash, phash_centre FROM images WHERE content_hash=?", (content_hash,))
        whole, centre = (_hex64(row[0][0]), _hex64(row[0][1])) if row else (None, None)
        if whole is not None:
            sealed.append(seal(manifest.keyring, whole, centre))
    return sealed


def _hex64(value: object) -> int | None:
    try:
        return int(value, 16) & 0xFFFFFFFFFFFFFFFF if isinstance(value, str) and value else None
    except ValueError:
        return None

