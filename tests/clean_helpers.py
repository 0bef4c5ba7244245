"""Helpers for the ``clean`` safety tests: the same photo in several files, and the
invariant every run must keep (no photo of the user's is lost)."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from selfiescope.core.metadata import GPS_IFD
from selfiescope.core.settings import settings_from_dict

FORMATS = {"jpeg": ("JPEG", ".jpg"), "png": ("PNG", ".png"), "tiff": ("TIFF", ".tif"), "webp": ("WEBP", ".webp")}


def gps_exif() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    exif[GPS_IFD] = {1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)}
    return exif.tobytes()


def variant(source: Path, fmt: str, side: int = 300, gps: bool = False) -> bytes:
    """``source`` as ``fmt`` (jpeg, png, tiff, webp), its longer side ``side`` px, with GPS EXIF if asked."""
    image = Image.open(source).convert("RGB")
    image.thumbnail((side, side))
    buf = io.BytesIO()
    options: dict = {"exif": gps_exif()} if gps else {}
    if fmt == "jpeg":
        options["quality"] = 90
    image.save(buf, FORMATS[fmt][0], **options)
    return buf.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def clean_settings(tmp_path: Path, extra: dict | None = None):
    return settings_from_dict({"storage": {"root": str(tmp_path / "unused-root")}, **(extra or {})})


@dataclass
class Original:
    """A file the user had: which photo it shows and its bytes."""

    name: str
    photo: str
    data: bytes


@dataclass
class Outcome:
    """Where each original is after a run (by content hash)."""

    in_folder: set[str] = field(default_factory=set)
    moved: set[str] = field(default_factory=set)
    stored: set[str] = field(default_factory=set)


def hashes_under(folder: Path) -> set[str]:
    if not folder.is_dir():
        return set()
    return {sha(p.read_bytes()) for p in folder.rglob("*") if p.is_file() and not p.is_symlink()}


def partial_files(folder: Path, originals: list[Original]) -> list[str]:
    """Files under ``folder`` that carry a real image name but none of the originals' bytes."""
    whole = {sha(o.data) for o in originals}
    return [str(p) for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")
            and sha(p.read_bytes()) not in whole] if folder.is_dir() else []
