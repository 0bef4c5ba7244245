"""``selfiescope export DIR --format imagefolder|csv|parquet``.

``imagefolder``: ``DIR/<label>/<file>`` plus ``DIR/metadata.csv`` whose ``file_name``
column is the path relative to DIR: the layout Hugging Face ``datasets``
(``load_dataset("imagefolder", data_dir=DIR)``) and torchvision's ``ImageFolder`` read
as is. ``csv`` / ``parquet``: one table of the stored images (``DIR/images.csv`` or
``DIR/images.parquet``). Files are read through the storage backend.

Only accepted images are exported, never a tombstoned one; owners appear as their
pseudonym, captions only when the dataset keeps them, and post/image URLs and original
paths only with ``include_urls`` (they lead back to the person). The key never leaves.
DIR must be new or empty: an export never overwrites anything.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from ..core.components import StoredImage
from ..core.context import RunContext
from ..core.manifest import Manifest
from ..core.plugins import Registry, registry_for
from ..core.settings import Settings

ExportFormat = Literal["imagefolder", "csv", "parquet"]
COLUMNS = [
    "id", "label", "owner", "source", "job", "format", "width", "height", "size",
    "face_x", "face_y", "face_w", "face_h", "face_area", "n_faces", "phash", "content_hash",
    "taken_at", "collected_at",
]
URL_COLUMNS = ["post_id", "post_url", "image_url", "origin_path"]


class ExportError(Exception):
    """Bad export request (phrased for the user)."""


@dataclass
class ExportResult:
    directory: Path
    format: str
    images: int
    files: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {"directory": str(self.directory), "format": self.format, "images": self.images, "files": self.files}


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds") if ts else None


def export_rows(manifest: Manifest, *, include_urls: bool = False, captions: bool = False) -> list[dict[str, Any]]:
    """The accepted, non-forgotten images as flat records."""
    tombstones = {t[0] for t in manifest.query("SELECT key FROM tombstones")} if manifest.has_tombstones() else set()
    rows = []
    for r in manifest.accepted():
        if tombstones and manifest.keyring.content(r["content_hash"]) in tombstones:
            continue  # a forget in progress: its rows are about to go
        box = json.loads(r["face_box"]) if r["face_box"] else [None] * 4
        rec: dict[str, Any] = {
            "id": r["id"], "label": r["label"], "owner": r["owner"], "source": r["source"], "job": r["job"],
            "format": r["format"], "width": r["width"], "height": r["height"], "size": r["size"],
            "face_x": box[0], "face_y": box[1], "face_w": box[2], "face_h": box[3],
            "face_area": r["face_area"], "n_faces": r["n_faces"], "phash": r["phash"],
            "content_hash": r["content_hash"], "taken_at": _iso(r["taken_at"]), "collected_at": _iso(r["first_seen"]),
            "location": r["location"],
        }
        if captions:
            rec["caption"] = r["caption"]
        if include_urls:
            rec.update({k: r[k] for k in URL_COLUMNS})
        rows.append(rec)
    return rows


def _check_target(directory: Path, root: Path) -> None:
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ExportError(f"{directory} exists and is not an empty folder: choose a new one (an export never overwrites)")
    if directory.resolve().is_relative_to(root.resolve()):
        raise ExportError(f"{directory} is inside the storage root {root}: export somewhere else")


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _write_parquet(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    _write_parquet_check()
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows])
    pq.write_table(table, path)


async def export(
    settings: Settings, directory: Path, fmt: ExportFormat = "imagefolder", *,
    include_urls: bool = False, registry: Registry | None = None,
) -> ExportResult:
    root = Path(settings.storage.root)
    if fmt not in ("imagefolder", "csv", "parquet"):
        raise ExportError(f"unknown format {fmt!r}: imagefolder, csv or parquet")
    if not (root / "manifest.sqlite").exists():
        raise ExportError(f"no dataset at {root}: {root / 'manifest.sqlite'} does not exist")
    directory = Path(directory)
    _check_target(directory, root)
    if fmt == "parquet":  # fail before writing anything when pyarrow is missing
        _write_parquet_check()
    manifest = Manifest.for_reading(root)
    try:
        captions = settings.privacy.store_captions
        rows = export_rows(manifest, include_urls=include_urls, captions=captions)
        columns = COLUMNS + (["caption"] if captions else []) + (URL_COLUMNS if include_urls else [])
        directory.mkdir(parents=True, exist_ok=True)
        if fmt == "csv":
            _write_csv(directory / "images.csv", rows, columns)
            return ExportResult(directory, fmt, len(rows), ["images.csv"])
        if fmt == "parquet":
            _write_parquet(directory / "images.parquet", rows, columns)
            return ExportResult(directory, fmt, len(rows), ["images.parquet"])
        registry = registry or registry_for(settings)
        storage = RunContext(settings, registry, "export", None, manifest).component("storage", settings.storage.backend)
        await storage.open()
        try:
            for rec in rows:
                name = Path(rec["location"]).name
                data = await storage.read(StoredImage(rec["id"], rec["label"], rec["location"], rec["content_hash"]))
                (directory / rec["label"]).mkdir(exist_ok=True)
                (directory / rec["label"] / name).write_bytes(data)
                rec["file_name"] = f"{rec['label']}/{name}"
        finally:
            await storage.close()
        _write_csv(directory / "metadata.csv", rows, ["file_name", *columns])
        return ExportResult(directory, fmt, len(rows), ["metadata.csv", *sorted({r["label"] + "/" for r in rows})])
    finally:
        manifest.close()


def _write_parquet_check() -> None:
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise ExportError(
            "Parquet export needs pyarrow, which comes with the 'dask' extra: pip install 'selfiescope[dask]'"
            " (or pip install pyarrow)"
        ) from None
