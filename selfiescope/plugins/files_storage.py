"""The ``files`` storage backend: ``<root>/<label>/<id>.<ext>``, written atomically.

Bytes go to a temp file ``.<id>.tmp-<random>`` in the target folder, are flushed to disk
and renamed over the final name with :func:`os.replace`, so a crash leaves either the
whole file or a temp file, which :meth:`FilesStorage.open` removes on the next run. Ids
and labels are checked against a strict alphabet: nothing from a remote name ever
reaches a path.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import aiofiles

from ..api import ImageEvent, Options, Storage, StoredImage, hookimpl
from ..api.dataset import when_alone
from .decode import EXTENSIONS

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
TEMP_MARK = ".tmp-"


class FilesOptions(Options):
    fsync: bool = True  # flush file contents to disk before the rename


def safe_name(value: str, what: str) -> str:
    if not SAFE_NAME.match(value or ""):
        raise ValueError(f"unsafe {what} {value!r}: only letters, digits, '-' and '_' (max 128)")
    return value


def location_for(image_id: str, label: str, fmt: str | None) -> str:
    """``<label>/<id>.<ext>``, both names checked: the location every path-like backend uses."""
    return f"{safe_name(label, 'label')}/{safe_name(image_id, 'id')}.{EXTENSIONS.get(fmt or '', 'bin')}"


class FilesStorage(Storage):
    name = "files"
    Options = FilesOptions

    @property
    def root(self) -> Path:
        return Path(self.run.settings.storage.root)

    async def open(self) -> None:
        await asyncio.to_thread(self.tidy_when_alone)

    def tidy_when_alone(self) -> int:
        """Remove a killed run's temp files, but only when no other process can be writing:
        this process holds the root's lock (a collect run), or takes it for the moment of
        tidying (a reader such as train or export, which may run beside a collect run whose
        temp files are live). Returns how many were removed."""
        return when_alone(self.root, self.remove_stale_temps)

    def remove_stale_temps(self) -> int:
        """Delete temp files a killed run left behind. Returns how many."""
        removed = 0
        if not self.root.is_dir():
            return 0
        for folder in self.root.iterdir():
            if folder.is_dir() and not folder.name.startswith("."):
                for tmp in folder.glob(f".*{TEMP_MARK}*"):
                    tmp.unlink(missing_ok=True)
                    removed += 1
        return removed

    def relative_location(self, image_id: str, label: str, fmt: str | None) -> str:
        return location_for(image_id, label, fmt)

    async def write(self, event: ImageEvent) -> str:
        """Write ``event.data``; idempotent: an id already stored with the same size is not rewritten."""
        if not event.id:
            raise ValueError("event.id must be set before storage.write")
        location = self.relative_location(event.id, event.label, event.format)
        final = self.root / location
        if final.is_file() and final.stat().st_size == len(event.data):
            return location
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{event.id}{TEMP_MARK}{secrets.token_hex(4)}"
        # Create the temp file here, not in aiofiles' thread: a run cancelled while that thread
        # opened it would unlink first and see the thread create it after (a stray temp file).
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            async with aiofiles.open(fd, "wb") as fh:
                await fh.write(event.data)
                await fh.flush()
                if self.options.fsync:
                    await asyncio.to_thread(os.fsync, fh.fileno())
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return location

    async def locate(self, image_id: str, label: str) -> list[StoredImage]:
        folder = self.root / safe_name(label, "label")
        return [StoredImage(p.stem, label, f"{label}/{p.name}") for p in sorted(folder.glob(f"{safe_name(image_id, 'id')}.*"))
                if p.is_file() and p.stem == image_id]

    def iterate(self, label: str | None = None) -> Iterator[StoredImage]:
        if not self.root.is_dir():
            return
        folders = [self.root / safe_name(label, "label")] if label else sorted(self.root.iterdir())
        for folder in folders:
            if not folder.is_dir() or folder.name.startswith("."):
                continue
            for path in sorted(folder.iterdir()):
                if path.is_file() and not path.name.startswith(".") and SAFE_NAME.match(path.stem):
                    yield StoredImage(path.stem, folder.name, f"{folder.name}/{path.name}")

    def path_of(self, stored: StoredImage) -> Path:
        path = (self.root / stored.location).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"location {stored.location!r} is outside the storage root")
        return path

    async def read(self, stored: StoredImage) -> bytes:
        async with aiofiles.open(self.path_of(stored), "rb") as fh:
            return await fh.read()

    async def delete(self, stored: StoredImage) -> bool:
        """Unlink the file (and any temp copy of the same id); a missing file is not an error."""
        path = self.path_of(stored)
        if path.parent == self.root.resolve():
            raise ValueError(f"location {stored.location!r} is not inside a label folder")
        existed = path.is_file()
        path.unlink(missing_ok=True)
        for tmp in path.parent.glob(f".{path.stem}{TEMP_MARK}*"):
            tmp.unlink(missing_ok=True)
        if existed and self.options.fsync:  # the removal itself survives a power cut
            await asyncio.to_thread(_fsync_dir, path.parent)
        return existed


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@hookimpl
def selfiescope_storage():
    return [FilesStorage]
