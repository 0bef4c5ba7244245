"""``selfiescope export DIR --format imagefolder|csv|parquet``.

``imagefolder``: ``DIR/<label>/<file>`` plus ``DIR/metadata.csv`` whose ``file_name``
column is the path relative to DIR: the layout Hugging Face ``datasets``
(``load_dataset("imagefolder", data_dir=DIR)``) and torchvision's ``ImageFolder`` read
as is. ``csv`` / ``parquet``: one table of the stored images (``DIR/images.csv`` or
``DIR/images.parquet``). Files are read through the storage backend.

Only accepted images are exported, never a tombstoned one; owners appear as their
pseudonym, captions only when the dataset keeps them, and post/image URLs and original
paths only with ``include_urls`` (they lead back to the person). The key never leaves.
``label`` is the label as reviewed (`selfiescope review`), ``collected_label`` the one it was
collected under; ``reviewed`` and ``excluded`` (left out of training) come from the review too.
DIR must be new or empty: an export never overwrites anything. It is written beside DIR
and renamed into place at the end, so DIR never holds half an export.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from ...core.errors import UsageError
from ...core.components import StoredImage
from ...core.manifest import Manifest
from ...core.app import App
from ...core.text import printable
from ...core.lock import pid_alive as _alive

ExportFormat = Literal["imagefolder", "csv", "parquet"]
COLUMNS = [
    "id", "label", "owner", "source", "job", "format", "width", "height", "size",
    "face_x", "face_y", "face_w", "face_h", "face_area", "n_faces", "phash", "content_hash",
    "taken_at", "collected_at", "collected_label", "reviewed", "excluded",
]
URL_COLUMNS = ["post_id", "post_url", "image_url", "origin_path"]


class ExportError(UsageError):
    """Bad export request (phrased for the user)."""


@dataclass
class ExportResult:
    directory: Path
    format: str
    images: int
    files: list[str]
    skipped: list[str] = field(default_factory=list)  # "location: why" of each stored file not readable

    def as_dict(self) -> dict[str, Any]:
        return {"directory": printable(self.directory), "format": self.format, "images": self.images,
                "files": self.files, "skipped": len(self.skipped), "skipped_examples": self.skipped[:20]}


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
        keys = r.keys()
        reviewed_label = r["review_label"] if "review_label" in keys else None
        rec: dict[str, Any] = {
            "id": r["id"], "label": reviewed_label or r["label"], "collected_label": r["label"],
            "reviewed": "reviewed" in keys and r["reviewed"] is not None,
            "excluded": "excluded" in keys and bool(r["excluded"]), "owner": r["owner"], "source": r["source"], "job": r["job"],
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
    cwd = Path.cwd().resolve()
    if not directory.name or cwd.is_relative_to(directory.resolve()):
        raise ExportError(f"{directory} is the current folder or holds it: name a new folder of its own")
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
    app: App, directory: Path, fmt: ExportFormat = "imagefolder", *, include_urls: bool = False,
) -> ExportResult:
    """Write the export into a hidden sibling folder and rename it into place at the end: DIR
    appears complete or not at all (a killed export leaves only the sibling, which the next
    export tidies). A stored file that cannot be read is left out and reported
    (``ExportResult.skipped``), and ``metadata.csv`` lists only the files written."""
    settings = app.settings
    root = Path(settings.storage.root)
    if fmt not in ("imagefolder", "csv", "parquet"):
        raise ExportError(f"unknown format {fmt!r}: imagefolder, csv or parquet")
    if not (root / "manifest.sqlite").exists():
        raise ExportError(f"no dataset at {root}: {root / 'manifest.sqlite'} does not exist")
    directory = Path(os.path.abspath(directory))  # "out/..", "." named as the folders they are
    _check_target(directory, root)
    if fmt == "parquet":  # fail before writing anything when pyarrow is missing
        _write_parquet_check()
    manifest = Manifest.for_reading(root)
    try:
        captions = settings.privacy.store_captions
        rows = export_rows(manifest, include_urls=include_urls, captions=captions)
        columns = COLUMNS + (["caption"] if captions else []) + (URL_COLUMNS if include_urls else [])
        directory.parent.mkdir(parents=True, exist_ok=True)
        tidy_stale(directory)
        with staging(directory) as tmp:
            if fmt == "csv":
                _write_csv(tmp / "images.csv", rows, columns)
                files, skipped = ["images.csv"], []
            elif fmt == "parquet":
                _write_parquet(tmp / "images.parquet", rows, columns)
                files, skipped = ["images.parquet"], []
            else:
                rows, skipped = await _copy_images(app, manifest, rows, tmp)
                _write_csv(tmp / "metadata.csv", rows, ["file_name", *columns])
                files = ["metadata.csv", *sorted({r["label"] + "/" for r in rows})]
        return ExportResult(directory, fmt, len(rows), files, skipped)
    finally:
        manifest.close()


async def _copy_images(app: App, manifest: Manifest, rows: list[dict[str, Any]], tmp: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Each stored image into ``tmp/<label>/``; (the rows written, why the others were not).
    A read that fails or hangs skips that image; a write that fails ends the export."""
    from .stored import READ_TIMEOUT_S

    storage = app.storage_backend(manifest, "export")
    written, skipped = [], []
    await storage.open()
    try:
        for rec in rows:
            item = StoredImage(rec["id"], rec["collected_label"], rec["location"], rec["content_hash"])
            try:
                data = await asyncio.wait_for(storage.read(item), READ_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - any backend's failure to read is this image's
                why = exc.strerror if isinstance(exc, OSError) and exc.strerror else (str(exc) or type(exc).__name__)
                skipped.append(f"{printable(rec['location'])}: {printable(why)}")
                continue
            name = _file_name(rec)
            (tmp / rec["label"]).mkdir(exist_ok=True)
            (tmp / rec["label"] / name).write_bytes(data)
            written.append({**rec, "file_name": f"{rec['label']}/{name}"})
    finally:
        await storage.close()
    return written, skipped


def _file_name(rec: dict[str, Any]) -> str:
    """The stored file's own name, or the image id when the backend's location has none."""
    name = Path(str(rec["location"])).name
    if not name or name in (".", "..") or name.startswith("."):
        name = f"{rec['id']}{Path(name).suffix}"
    return name


STAGING_MARK = ".selfiescope-export-incomplete"  # inside a staging folder only; gone before the rename
_STAGING = re.compile(r"^\.(?P<name>.+)\.export-(?P<pid>\d+)$")


@contextmanager
def staging(directory: Path) -> Iterator[Path]:
    """A hidden sibling of ``directory`` to write into; renamed onto it when the block ends
    without an error, removed when it raises (a SIGKILL leaves it for :func:`tidy_stale`)."""
    tmp = directory.with_name(f".{directory.name}.export-{os.getpid()}")
    if tmp.exists() and (tmp / STAGING_MARK).exists():
        shutil.rmtree(tmp)  # ours: this pid's, marked
    try:
        tmp.mkdir()
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(directory.parent)) from None
    (tmp / STAGING_MARK).touch()
    try:
        yield tmp
        (tmp / STAGING_MARK).unlink()
        try:
            os.rename(tmp, directory)  # replaces only a missing or empty folder
        except OSError as exc:
            raise ExportError(f"{directory}: cannot put the export in place ({exc.strerror or exc}); it was "
                              f"written to {tmp}") from None
    except BaseException as exc:
        if (tmp / STAGING_MARK).exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and not exc.filename:  # a failed write says where the export was going
            raise OSError(exc.errno, exc.strerror or str(exc), str(directory)) from None
        raise


def tidy_stale(directory: Path) -> None:
    """Remove staging folders of killed exports to ``directory``: named for it, marked as ours,
    and their pid no longer running."""
    for entry in directory.parent.iterdir():
        m = _STAGING.match(entry.name)
        if (m and m["name"] == directory.name and not entry.is_symlink() and entry.is_dir()
                and (entry / STAGING_MARK).is_file() and not _alive(int(m["pid"]))):
            shutil.rmtree(entry, ignore_errors=True)



def _write_parquet_check() -> None:
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise ExportError(
            "Parquet export needs pyarrow, which comes with the 'dask' extra: pip install 'selfiescope[dask]'"
            " (or pip install pyarrow)"
        ) from None
