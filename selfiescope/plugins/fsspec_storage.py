"""The ``fsspec`` storage backend: images under any fsspec URL, the manifest stays local.

``[plugins.fsspec] url = "s3://bucket/prefix"`` (or ``gs://``, ``memory://``, ``file://``,
any filesystem fsspec knows) stores ``<url>/<label>/<id>.<ext>``; the location saved in
the manifest is ``<label>/<id>.<ext>``, relative to the URL, so a moved bucket needs one
setting changed. The manifest is the usual SQLite file under ``storage.root``.

Writes are atomic where the filesystem allows: object stores (S3, GCS, Azure) and the
in-memory filesystem publish an object in one PUT, so a reader sees all of it or nothing;
elsewhere (``file://``, SFTP, ...) bytes go to a temp name in the same folder and are
moved over the final name, and ``open`` tidies temps a killed run left (only when no
other process can be writing, as the ``files`` backend does).

Credentials never come from settings: ``storage_options`` refuses secret-looking keys;
s3fs, gcsfs and adlfs read their usual environment variables (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, ``GOOGLE_APPLICATION_CREDENTIALS``, ...).
Needs ``pip install 'selfiescope[s3]'`` for S3 (fsspec alone covers ``memory://`` and ``file://``).

fsspec's synchronous API runs in worker threads (``asyncio.to_thread``): async-native
filesystems (s3fs) run their own event loop behind it, and every filesystem works the same.
Every call has a deadline (``timeout_s``): a hung connection is a failure of that image (a
write is retried by the next run; writes are idempotent), never a run that waits forever.
"""

from __future__ import annotations

import asyncio
import posixpath
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from ..api import ImageEvent, Options, Storage, StoredImage, hookimpl
from ..api.dataset import when_alone
from .files_storage import SAFE_NAME, TEMP_MARK, location_for, safe_name

# Filesystems whose single write publishes the whole object at once (no partial object is ever visible).
ATOMIC_PUT = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "memory"}
# Filesystems that live in one process's memory: fine for the contract tests, never for a dataset.
EPHEMERAL = {"memory"}
SECRET_KEYS = re.compile(r"(key|secret|token|password|passwd|credential|sas|signature)", re.IGNORECASE)
LOCATION = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_-]{0,127})/([A-Za-z0-9][A-Za-z0-9_-]{0,127})\.([a-z0-9]{1,8})$")


class FsspecOptions(Options):
    url: str = Field("", description="fsspec URL of the image folder: s3://bucket/prefix, gs://..., memory://name, file:///path")
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="options for the filesystem (e.g. client_kwargs = {endpoint_url = ...}); never credentials",
    )
    timeout_s: float = Field(120.0, gt=0, description="deadline of one call to the filesystem (connect, write, read, ...)")

    @field_validator("storage_options")
    @classmethod
    def _no_secrets(cls, value: dict[str, Any]) -> dict[str, Any]:
        def walk(d: dict[str, Any], where: str) -> None:
            for k, v in d.items():
                if SECRET_KEYS.search(str(k)):
                    raise ValueError(f"{where}{k}: credentials come from the environment (e.g. AWS_ACCESS_KEY_ID, "
                                     "AWS_SECRET_ACCESS_KEY), never from settings")
                if isinstance(v, dict):
                    walk(v, f"{where}{k}.")
        walk(value, "")
        return value


class FsspecStorage(Storage):
    name = "fsspec"
    Options = FsspecOptions

    @classmethod
    def settings_problems(cls, options: FsspecOptions) -> list[str]:  # type: ignore[override]
        """An empty URL, a protocol fsspec does not know (or whose package is missing), and a
        filesystem that lives in this process's memory (its images would be gone at exit
        while the manifest says stored) cannot hold a dataset."""
        url = options.url.strip()
        if not url:
            return ['url: empty; give the image folder as an fsspec URL: "s3://bucket/prefix", "gs://...", "file:///path"']
        try:
            import fsspec
        except ImportError:
            return ["url: the fsspec backend needs fsspec: pip install 'selfiescope[fsspec]' (or 'selfiescope[s3]')"]
        protocol = fsspec.core.split_protocol(url)[0] or "file"
        try:
            fs_class = fsspec.get_filesystem_class(protocol)
        except ValueError:
            return [f"url: {url!r}: fsspec knows no protocol {protocol!r} (e.g. s3, gs, az, file, sftp)"]
        except ImportError as exc:
            return [f"url: {url!r}: {exc}"]
        if protocol in EPHEMERAL or getattr(fs_class, "protocol", None) in EPHEMERAL:
            return [f"url: {url!r} keeps images in this process's memory only: they would be gone when it exits "
                    "while the manifest says they are stored; use a filesystem that lasts (file://, s3://, ...)"]
        return []

    def __init__(self, options: FsspecOptions, run: Any) -> None:
        super().__init__(options, run)
        self.fs: Any = None
        self.base = ""

    async def open(self) -> None:
        if not self.options.url:
            raise ValueError('the fsspec storage backend needs [plugins.fsspec] url = "s3://bucket/prefix" (or another fsspec URL)')
        await self._call("connect to", self.options.url, self._connect)

    def _connect(self) -> None:
        try:
            import fsspec
        except ImportError:
            raise ImportError("the fsspec storage backend needs fsspec: pip install 'selfiescope[fsspec]' "
                              "(or 'selfiescope[s3]' for S3)") from None
        try:
            self.fs, path = fsspec.core.url_to_fs(self.options.url, **self.options.storage_options)
        except ImportError as exc:  # s3fs, gcsfs, ... is an optional dependency
            raise ImportError(f"{self.options.url}: {exc} (for S3: pip install 'selfiescope[s3]')") from None
        self.base = path.rstrip("/")
        if not self.atomic_put:
            self.fs.makedirs(self.base, exist_ok=True)
            self._tidy_when_alone()

    async def _call(self, what: str, where: str, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` in a worker thread, within ``timeout_s``; TimeoutError says what hung.
        (The thread itself cannot be stopped: a late write stores the same bytes under the same key.)"""
        try:
            return await asyncio.wait_for(asyncio.to_thread(fn, *args), self.options.timeout_s)
        except TimeoutError:
            raise TimeoutError(f"could not {what} {where} within {self.options.timeout_s:g} s "
                               "([plugins.fsspec] timeout_s)") from None

    @property
    def atomic_put(self) -> bool:
        protocols = self.fs.protocol if isinstance(self.fs.protocol, (tuple, list)) else (self.fs.protocol,)
        return any(p in ATOMIC_PUT for p in protocols)

    # --- paths ---------------------------------------------------------------------------
    def _full(self, location: str) -> str:
        if not LOCATION.match(location or ""):
            raise ValueError(f"location {location!r} is not <label>/<id>.<ext> of this backend")
        return f"{self.base}/{location}"

    def location_of(self, image_id: str, label: str, fmt: str | None) -> str:
        return location_for(image_id, label, fmt)

    # --- the contract ----------------------------------------------------------------------
    async def write(self, event: ImageEvent) -> str:
        """Store ``event.data``; idempotent: an id already stored with the same size is not rewritten."""
        if not event.id:
            raise ValueError("event.id must be set before storage.write")
        location = self.location_of(event.id, event.label, event.format)
        await self._call("write", location, self._write, self._full(location), event.data)
        return location

    def _write(self, path: str, data: bytes) -> None:
        if self.atomic_put:
            # One PUT, no look first: the id is the content's, so writing it again stores the same
            # bytes under the same key (idempotent), and a HEAD (plus a LIST) would double the requests.
            self.fs.pipe_file(path, data)
            return
        try:
            if self.fs.size(path) == len(data):
                return
        except (FileNotFoundError, OSError):
            pass
        folder, name = posixpath.split(path)
        self.fs.makedirs(folder, exist_ok=True)
        tmp = f"{folder}/.{name.rsplit('.', 1)[0]}{TEMP_MARK}{secrets.token_hex(4)}"
        try:
            self.fs.pipe_file(tmp, data)
            self.fs.mv(tmp, path)
        except BaseException:
            try:
                self.fs.rm_file(tmp)
            except (FileNotFoundError, OSError):
                pass
            raise

    async def locate(self, image_id: str, label: str) -> list[StoredImage]:
        pattern = f"{self.base}/{safe_name(label, 'label')}/{safe_name(image_id, 'id')}.*"
        found = await self._call("look for", f"{label}/{image_id}", self._glob, pattern)
        locations = (f"{label}/{posixpath.basename(p)}" for p in found)
        return [StoredImage(image_id, label, loc) for loc in sorted(locations)
                if LOCATION.match(loc) and loc.split("/")[1].rsplit(".", 1)[0] == image_id]

    def _glob(self, pattern: str) -> list[str]:
        self.fs.invalidate_cache(posixpath.dirname(pattern))  # a listing cached before our own writes
        return [p for p in self.fs.glob(pattern) if not posixpath.basename(p).startswith(".")]

    def iterate(self, label: str | None = None) -> Iterator[StoredImage]:
        self.fs.invalidate_cache(self.base)
        labels = [safe_name(label, "label")] if label else sorted(
            posixpath.basename(p.rstrip("/")) for p in self._list(self.base) if self.fs.isdir(p))
        for name in labels:
            if not SAFE_NAME.match(name):
                continue
            for path in sorted(self._list(f"{self.base}/{name}")):
                location = f"{name}/{posixpath.basename(path)}"
                if LOCATION.match(location):
                    yield StoredImage(location.split("/")[1].rsplit(".", 1)[0], name, location)

    def _list(self, path: str) -> list[str]:
        try:
            return self.fs.ls(path, detail=False, refresh=True)
        except TypeError:  # a filesystem whose ls takes no refresh
            return self.fs.ls(path, detail=False)
        except FileNotFoundError:
            return []

    async def read(self, stored: StoredImage) -> bytes:
        return await self._call("read", stored.location, self.fs.cat_file, self._full(stored.location))

    async def delete(self, stored: StoredImage) -> bool:
        """Remove the object (and any temp copy of it); a missing one is not an error."""
        return await self._call("delete", stored.location, self._delete, self._full(stored.location))

    def _delete(self, path: str) -> bool:
        self.fs.invalidate_cache(posixpath.dirname(path))
        existed = bool(self.fs.exists(path))  # S3 answers a DELETE of a missing key with success: ask first
        try:
            self.fs.rm_file(path)
        except FileNotFoundError:
            existed = False
        if not self.atomic_put:
            folder, name = posixpath.split(path)
            for tmp in self.fs.glob(f"{folder}/.{name.rsplit('.', 1)[0]}{TEMP_MARK}*"):
                self.fs.rm_file(tmp)
        self.fs.invalidate_cache(posixpath.dirname(path))
        return existed

    # --- temps of a killed run (filesystems without an atomic PUT) ----------------------
    def _tidy_when_alone(self) -> int:
        root = Path(self.run.settings.storage.root) if self.run is not None else None
        return 0 if root is None else when_alone(root, self._remove_stale_temps)

    def _remove_stale_temps(self) -> int:
        stale = self.fs.glob(f"{self.base}/*/.*{TEMP_MARK}*")
        for tmp in stale:
            self.fs.rm_file(tmp)
        return len(stale)


@hookimpl
def selfiescope_storage():
    return [FsspecStorage]
