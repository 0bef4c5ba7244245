"""The ``folder`` source: every image file under a folder goes through the chain.

What cannot be read (a file without read permission, a folder that cannot be listed) is
reported as a failed image with the reason, and the rest of the folder goes on: the run
ends with errors (exit 1), never silently short. A symbolic link whose target is also in
the folder is read once, through the real file, so the link and its target can never be
taken for duplicates of each other (``clean --delete-rejected`` would otherwise delete
the one real copy). File names need not be valid UTF-8.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import aiofiles

from ..api import ImageEvent, Job, Options, Origin, Source, WorkItem, hookimpl, printable
from ..api.dataset import IMAGE_SUFFIXES, MAX_IMAGE_BYTES, already_stored



#: The run's figure (``stats.extra``) for entries skipped because they are not regular files.
SKIPPED_KEY = "skipped_not_regular_files"
_KINDS = ((stat.S_ISFIFO, "a pipe"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
          (stat.S_ISBLK, "a device"), (stat.S_ISREG, "a file"), (stat.S_ISDIR, "a folder"))


def kind_of(path: Path) -> str | None:
    """What ``path`` is, following links ("a pipe", "a device", "a file", "a folder"...), or None if nothing is there."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return next((what for test, what in _KINDS if test(mode)), "not a regular file")


class FolderOptions(Options):
    recursive: bool = True
    all_files: bool = False  # also try files whose suffix is not an image suffix
    max_bytes: int = MAX_IMAGE_BYTES


class FolderSource(Source):
    name = "folder"
    Options = FolderOptions

    def _wanted(self, name: str) -> bool:
        return not name.startswith(".") and (self.options.all_files or Path(name).suffix.lower() in IMAGE_SUFFIXES)

    def scan(self, root: Path) -> tuple[list[Path], list[tuple[str, str]], int]:
        """The image files a job over ``root`` reads, in a stable order, ``(path, problem)``
        for everything under it that could not be listed, and how many entries with an image
        name were skipped because they are not regular files (pipes, devices, links to them)."""
        if root.is_file():
            return [root], [], 0
        if not root.is_dir():
            if (what := kind_of(root)) is not None:
                raise NotADirectoryError(f"{printable(root)}: not a folder ({what})")
            raise FileNotFoundError(f"folder not found: {printable(root)}")
        problems: list[tuple[str, str]] = []

        def unlistable(exc: OSError) -> None:
            problems.append((exc.filename or str(root), f"cannot list folder: {exc.strerror or exc}"))

        real: list[Path] = []
        links: list[Path] = []
        skipped = 0
        for dirpath, dirnames, filenames in os.walk(root, onerror=unlistable):
            if not self.options.recursive:
                dirnames.clear()
            dirnames.sort()
            for name in filenames:
                path = Path(dirpath) / name
                if not self._wanted(name):
                    continue
                try:
                    mode = path.lstat().st_mode
                except OSError as exc:
                    problems.append((str(path), f"cannot read: {exc.strerror or exc}"))
                    continue
                if stat.S_ISLNK(mode):
                    links.append(path)
                elif stat.S_ISREG(mode):
                    real.append(path)
                else:  # sockets, FIFOs and devices are not files to read: a FIFO would block forever
                    skipped += 1
        seen = {os.path.realpath(p) for p in real}
        for link in links:
            target = os.path.realpath(link)
            if target in seen:
                continue  # its target is read as itself
            try:
                if not stat.S_ISREG(os.stat(target).st_mode):
                    skipped += 1
                    continue
            except OSError as exc:
                problems.append((str(link), f"broken link: {exc.strerror or exc}"))
                continue
            seen.add(target)
            real.append(link)
        return sorted(real), problems, skipped

    def _note_skipped(self, skipped: int) -> None:
        if skipped and self.run is not None:
            extra = self.run.stats.extra
            extra[SKIPPED_KEY] = extra.get(SKIPPED_KEY, 0) + skipped

    def _failed(self, job: Job, path: str, reason: str) -> ImageEvent:
        event = ImageEvent(origin=Origin(source=self.name, job=job.target, path=path), label=job.label, data=b"")
        event.fail(self.name, "read_failed", f"{printable(path)}: {reason}")
        return event

    async def _read(self, path: Path) -> tuple[bytes, int, str | None]:
        """``(data, size, content hash)``: the bytes, or for an oversize file no bytes and its streamed hash."""
        size = (await asyncio.to_thread(path.stat)).st_size
        if size > self.options.max_bytes:
            return b"", size, (await asyncio.to_thread(self._digest, path))[1]
        async with aiofiles.open(path, "rb") as fh:
            data = await fh.read(self.options.max_bytes + 1)
        return data, len(data), None

    async def events(self, job: Job) -> AsyncIterator[ImageEvent]:
        # absolute: the manifest's origin path must name the file from any working directory
        # (review shows a rejected import from it; forget finds it by it)
        root = Path(job.target).expanduser().absolute()
        files, problems, skipped = await asyncio.to_thread(self.scan, root)
        self._note_skipped(skipped)
        for where, why in problems:
            yield self._failed(job, where, why)
        for path in files:
            try:
                data, size, oversize_hash = await self._read(path)
            except OSError as exc:
                yield self._failed(job, str(path), f"cannot read: {exc.strerror or exc}")
                continue
            origin = Origin(source=self.name, job=job.target, path=str(path), post_id=None)
            if oversize_hash is not None:
                event = ImageEvent(origin=origin, label=job.label, data=b"", content_hash=oversize_hash)
                event.notes["oversize"] = size
            else:
                event = ImageEvent(origin=origin, label=job.label, data=data)
                if len(data) > self.options.max_bytes:  # it grew while being read
                    event.notes["oversize"] = len(data)
                    event.data = b""
            if "oversize" not in event.notes and await already_stored(self.run, event.content_hash):
                continue  # stored by an earlier run: a rerun resumes where it stopped
            yield event

    async def remote_items(self, job: Job) -> AsyncIterator[WorkItem]:
        """The same files, problems and resume skip as :meth:`events`, as paths that workers
        on a shared filesystem read themselves: only the content hash is computed here."""
        root = Path(job.target).expanduser().absolute()
        files, problems, skipped = await asyncio.to_thread(self.scan, root)
        self._note_skipped(skipped)
        for where, why in problems:
            yield self._failed_item(job, where, why)
        for path in files:
            origin = Origin(source=self.name, job=job.target, path=str(path), post_id=None)
            try:
                size, content_hash = await asyncio.to_thread(self._digest, path)
            except OSError as exc:
                yield self._failed_item(job, str(path), f"cannot read: {exc.strerror or exc}")
                continue
            if size <= self.options.max_bytes and await already_stored(self.run, content_hash):
                continue  # stored by an earlier run, exactly as events() skips it
            yield WorkItem(origin, job.label, path=str(path), max_bytes=self.options.max_bytes,
                           content_hash=content_hash)

    @staticmethod
    def _digest(path: Path) -> tuple[int, str]:
        with path.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            return size, hashlib.file_digest(fh, "sha256").hexdigest()

    def _failed_item(self, job: Job, path: str, reason: str) -> WorkItem:
        return WorkItem(Origin(source=self.name, job=job.target, path=path), job.label,
                        failure=(self.name, "read_failed", f"{printable(path)}: {reason}"))


@hookimpl
def selfiescope_sources():
    return [FolderSource]
