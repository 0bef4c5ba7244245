"""The ``folder`` source: every image file under a folder goes through the chain."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiofiles

from ..core.components import Job, Options, Source
from ..core.events import ImageEvent, Origin
from ..core.hookspecs import hookimpl

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".avif", ".heic"}


class FolderOptions(Options):
    recursive: bool = True
    all_files: bool = False  # also try files whose suffix is not an image suffix
    max_bytes: int = 50 * 1024 * 1024


class FolderSource(Source):
    name = "folder"
    Options = FolderOptions

    def list_files(self, root: Path) -> list[Path]:
        """The image files a job over ``root`` reads, in a stable order."""
        if root.is_file():
            return [root]
        if not root.is_dir():
            raise FileNotFoundError(f"folder not found: {root}")
        pattern = "**/*" if self.options.recursive else "*"
        files = [
            p for p in root.glob(pattern)
            if p.is_file() and not p.name.startswith(".")
            and (self.options.all_files or p.suffix.lower() in IMAGE_SUFFIXES)
        ]
        return sorted(files)

    async def events(self, job: Job) -> AsyncIterator[ImageEvent]:
        root = Path(job.target).expanduser()
        files = await asyncio.to_thread(self.list_files, root)
        for path in files:
            size = path.stat().st_size
            if size > self.options.max_bytes:
                data = b""  # decode rejects it; the reason says why
            else:
                async with aiofiles.open(path, "rb") as fh:
                    data = await fh.read()
            origin = Origin(source=self.name, job=job.target, path=str(path), post_id=None)
            event = ImageEvent(origin=origin, label=job.label, data=data)
            if size > self.options.max_bytes:
                event.notes["oversize"] = size
            elif self.run.manifest.is_stored(event.content_hash, before_run=self.run.run_id):
                continue  # stored by an earlier run: a rerun resumes where it stopped
            yield event


@hookimpl
def selfiescope_sources():
    return [FolderSource]
