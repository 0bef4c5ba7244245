"""The Storage contract (core/components.py), checked on every built-in backend the same way:
files, fsspec on memory:// and fsspec on file://. The S3 run is tests/test_fsspec_s3.py."""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from selfiescope.core.components import StoredImage
from selfiescope.core.events import ImageEvent, Origin
from selfiescope.core.settings import settings_from_dict
from selfiescope.plugins.files_storage import FilesOptions, FilesStorage
from selfiescope.plugins.store import image_id

fsspec = pytest.importorskip("fsspec")
from selfiescope.plugins.fsspec_storage import FsspecOptions, FsspecStorage  # noqa: E402


def jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def event(data: bytes, label: str = "selfie") -> ImageEvent:
    ev = ImageEvent(origin=Origin("folder", job="x"), label=label, data=data)
    ev.format = "jpeg"
    ev.id = image_id(ev)
    return ev


def make(kind: str, tmp_path: Path):
    run = SimpleNamespace(settings=settings_from_dict({"storage": {"root": str(tmp_path / "root")}}))
    (tmp_path / "root").mkdir(exist_ok=True)
    if kind == "files":
        return FilesStorage(FilesOptions(), run)
    if kind == "memory":
        return FsspecStorage(FsspecOptions(url=f"memory://contract-{uuid.uuid4().hex}/images"), run)
    return FsspecStorage(FsspecOptions(url=(tmp_path / "bucket").as_uri()), run)


@pytest.fixture(params=["files", "memory", "file"])
def storage(request, tmp_path):
    store = make(request.param, tmp_path)
    asyncio.run(store.open())
    yield store
    asyncio.run(store.close())


def test_write_read_locate_iterate_delete(storage) -> None:
    async def go() -> None:
        a, b = event(jpeg(1)), event(jpeg(2), label="portrait")
        loc_a, loc_b = await storage.write(a), await storage.write(b)
        assert loc_a != loc_b
        assert [s.id for s in await storage.locate(a.id, "selfie")] == [a.id]
        assert await storage.locate(a.id, "portrait") == []
        stored = {s.location: s for s in storage.iterate()}
        assert set(stored) == {loc_a, loc_b}
        assert [s.location for s in storage.iterate("portrait")] == [loc_b]
        assert stored[loc_a].id == a.id and stored[loc_a].label == "selfie"
        assert await storage.read(stored[loc_a]) == a.data  # the bytes exactly as written
        assert await storage.delete(stored[loc_a]) is True
        assert await storage.delete(stored[loc_a]) is False  # idempotent: gone is not an error
        assert await storage.locate(a.id, "selfie") == []
        assert [s.location for s in storage.iterate()] == [loc_b]
        with pytest.raises(Exception):
            await storage.read(stored[loc_a])
    asyncio.run(go())


def test_write_is_idempotent(storage) -> None:
    async def go() -> None:
        ev = event(jpeg(3))
        first = await storage.write(ev)
        again = await storage.write(event(jpeg(3)))
        assert first == again and len(list(storage.iterate())) == 1
        assert await storage.read(StoredImage(ev.id, ev.label, first)) == ev.data
    asyncio.run(go())


def test_concurrent_writes_leave_only_whole_images(storage) -> None:
    """Many writes at once (the engine's way): every image whole, no temp file listed or left."""
    async def go() -> None:
        events = [event(jpeg(10 + i), label="selfie" if i % 2 else "portrait") for i in range(12)]
        locations = await asyncio.gather(*(storage.write(e) for e in events))
        listed = {s.location: s for s in storage.iterate()}
        assert set(listed) == set(locations)
        for e, loc in zip(events, locations):
            assert await storage.read(listed[loc]) == e.data
    asyncio.run(go())


def test_locations_are_the_backends_own_and_checked(storage) -> None:
    async def go() -> None:
        for bad in ("../etc/passwd", "/etc/passwd", "selfie/../../x.jpg"):
            with pytest.raises(ValueError):
                await storage.read(StoredImage("x", "selfie", bad))
        with pytest.raises(ValueError):  # a remote name never reaches a path
            await storage.write(event(jpeg(4), label="../up"))
    asyncio.run(go())


def test_file_url_writes_through_a_temp_and_leaves_none(tmp_path) -> None:
    store = make("file", tmp_path)

    async def go() -> None:
        await store.open()
        await store.write(event(jpeg(5)))
        # a killed run's leftover is tidied on the next open (no other process holds the root)
        (tmp_path / "bucket" / "selfie" / ".deadbeef.tmp-0000").write_bytes(b"half")
        await store.open()
    asyncio.run(go())
    names = [p.name for p in (tmp_path / "bucket" / "selfie").iterdir()]
    assert len(names) == 1 and not names[0].startswith(".")


def test_credentials_in_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="environment"):
        FsspecOptions(url="s3://b/p", storage_options={"key": "AKIA...", "secret": "x"})
    with pytest.raises(ValueError, match="environment"):
        FsspecOptions(url="s3://b/p", storage_options={"client_kwargs": {"aws_secret_access_key": "x"}})
    FsspecOptions(url="s3://b/p", storage_options={"client_kwargs": {"endpoint_url": "http://127.0.0.1:1"}})


def test_a_missing_url_is_a_clear_error(tmp_path) -> None:
    run = SimpleNamespace(settings=settings_from_dict({"storage": {"root": str(tmp_path)}}))
    with pytest.raises(ValueError, match="url"):
        asyncio.run(FsspecStorage(FsspecOptions(), run).open())


def test_a_reader_leaves_the_temp_files_of_a_run_in_another_process_alone(tmp_path) -> None:
    """Training or export opens the backend while a collect run may be writing: its temps are live."""
    import subprocess
    import sys
    import time

    root = tmp_path / "root"
    (root / "selfie").mkdir(parents=True)
    live = root / "selfie" / ".abcd.tmp-1234"
    live.write_bytes(b"being written")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from selfiescope.core.lock import RootLock; "
        f"RootLock({str(root)!r}).acquire(); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        assert holder.stdout.readline().strip() == "held"
        store = make("files", tmp_path)
        asyncio.run(store.open())
        assert live.exists()  # another process holds the root: not ours to tidy
    finally:
        holder.kill()
        holder.wait(timeout=10)
    time.sleep(0.1)
    asyncio.run(make("files", tmp_path).open())
    assert not live.exists()  # nobody writes now: a leftover, tidied


def test_a_hung_filesystem_call_ends_at_its_deadline(tmp_path) -> None:
    """No await without a deadline: a filesystem that never answers makes the call fail (the
    store step turns that into a failure of the image, retried by the next run), never a hang."""
    run = SimpleNamespace(settings=settings_from_dict({"storage": {"root": str(tmp_path)}}))
    store = FsspecStorage(FsspecOptions(url=f"memory://hung-{uuid.uuid4().hex}", timeout_s=0.2), run)
    asyncio.run(store.open())

    def hang(*args, **kwargs):  # answers long after the deadline (a thread cannot be stopped)
        time.sleep(1.0)
        raise OSError("too late")

    store.fs.pipe_file = hang
    store.fs.cat_file = hang
    with pytest.raises(TimeoutError, match="could not write selfie/.* within 0.2 s"):
        asyncio.run(store.write(event(jpeg(7))))
    with pytest.raises(TimeoutError, match="could not read selfie/x.jpg within 0.2 s"):
        asyncio.run(store.read(StoredImage("x", "selfie", "selfie/x.jpg")))
