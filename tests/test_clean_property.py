"""Property: whatever folder ``clean`` meets and whatever breaks meanwhile, no photo is lost.

Each example builds a folder holding a few real photos, each in several files (JPEG, PNG,
TIFF, WebP; sizes; with GPS EXIF or not), plus files rejected for their own content, and
runs ``clean`` with some of: a dataset (``--output``), a move target or deletion, a dry run,
storing that fails (a file where the label folder goes, or a backend that fails some
writes), a privacy setting that rejects GPS it cannot strip, images met by dedup in another
order, and files that vanish or change once judged. After every run:

- every file the user had (and did not remove themselves) is still in the folder with its
  bytes, or moved whole, or stored and readable through the storage backend with the same
  pixels, or was deleted under ``--delete-rejected`` for its own content;
- every photo with a file that was not rejected for its own content survives in one of
  those places (a duplicate never goes with the copy it duplicates);
- a file changed after it was judged keeps its new bytes; no partial file is in the move
  target; a failed file is never removed;
- the exit code tells the truth: 1 exactly when some file failed or a removal failed, and
  with exit 0 and ``--output`` every kept file is stored and readable.
"""

from __future__ import annotations

import asyncio
import functools
import io
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from clean_helpers import FORMATS, clean_settings, hashes_under, partial_files, sha, variant
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from PIL import Image

from selfiescope.core.app import App
from selfiescope.core.components import StoredImage
from selfiescope.core.hookspecs import hookimpl
from selfiescope.core.manifest import Manifest
from selfiescope.exits import code_for
from selfiescope.pipelines.collecting.clean import clean
from selfiescope.pipelines.collecting.clean_plan import NOT_ABOUT_THE_FILE, RELATIONAL_CODES
from selfiescope.pipelines.dataset_care.stored import StoredReader
from selfiescope.plugins.dedup import DedupStep
from selfiescope.plugins.files_storage import FilesStorage

pytestmark = [pytest.mark.faces, pytest.mark.slow]
PHOTOS = ["caltech_image_0001.jpg", "caltech_image_0011.jpg"]
LABEL = "photos"


@functools.lru_cache(maxsize=None)
def cached_variant(faces: str, photo: str, fmt: str, side: int, gps: bool) -> bytes:
    return variant(Path(faces) / "portrait" / photo, fmt, side, gps)


def own_content_rejects() -> dict[str, bytes]:
    """Files every run rejects for what they are: not an image, and a photo with no face."""
    blank = io.BytesIO()
    Image.new("RGB", (240, 240), (120, 120, 120)).save(blank, "PNG")
    return {"notes.jpg": b"\xff\xd8 this is not a photo", "blank.png": blank.getvalue()}


file_spec = st.tuples(st.sampled_from(range(len(PHOTOS))), st.sampled_from(sorted(FORMATS)),
                      st.sampled_from([200, 300, 420]), st.booleans())
scenario = st.fixed_dictionaries({
    "files": st.lists(file_spec, min_size=1, max_size=5),
    "junk": st.booleans(),
    "output": st.booleans(),
    "action": st.sampled_from(["move", "delete", "none"]),
    "dry_run": st.booleans(),
    "store_fails": st.sampled_from(["never", "label_blocked", "some"]),
    "strip": st.sampled_from(["location", "none"]),
    "late": st.sets(st.integers(0, 6), max_size=3),       # met by dedup late
    "slow_store": st.booleans(),                           # copies stay reserved a while
    "vanish": st.sets(st.integers(0, 6), max_size=1),      # removed by the user once judged
    "change": st.sets(st.integers(0, 6), max_size=1),      # rewritten by the user once judged
})


class UserMeddles:
    """A plugin that plays the user: once a file is judged, it removes or rewrites it."""

    def __init__(self, vanish: set[str], change: set[str]) -> None:
        self.vanish, self.change = vanish, change

    def _meddle(self, event) -> None:  # noqa: ANN001
        path = Path(event.origin.path or "")
        if path.name in self.vanish and path.exists():
            path.unlink()
        elif path.name in self.change and path.exists():
            path.write_bytes(path.read_bytes() + b"edited")

    @hookimpl
    def selfiescope_image_accepted(self, event, run) -> None:  # noqa: ANN001
        self._meddle(event)

    @hookimpl
    def selfiescope_image_rejected(self, event, run) -> None:  # noqa: ANN001
        self._meddle(event)

    @hookimpl
    def selfiescope_image_failed(self, event, run) -> None:  # noqa: ANN001
        self._meddle(event)


def faults(stack: ExitStack, late: set[str], slow_store: bool, fail_some: bool) -> None:
    process, write = DedupStep.process, FilesStorage.write

    async def dedup_late(self, event):  # noqa: ANN001
        if Path(event.origin.path or "").name in late:
            await asyncio.sleep(0.3)
        return await process(self, event)

    async def flaky_write(self, event):  # noqa: ANN001
        if slow_store:
            await asyncio.sleep(0.2)
        if fail_some and int(event.content_hash[0], 16) % 2:
            raise OSError(28, "No space left on device")
        return await write(self, event)

    stack.enter_context(mock.patch.object(DedupStep, "process", dedup_late))
    stack.enter_context(mock.patch.object(FilesStorage, "write", flaky_write))


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def stored_originals(settings, root: Path, originals: dict[str, bytes]) -> set[str]:
    """Names of the originals whose photo is stored under ``root`` and reads back through the
    backend with the same pixels (the stored copy may have lost its GPS tags)."""
    if not (root / "manifest.sqlite").is_file():
        return set()
    manifest = Manifest.at_root(root)
    found: set[str] = set()
    try:
        rows = {r["content_hash"]: r for r in manifest.query(
            "SELECT content_hash, id, label, location FROM images WHERE decision='accepted' AND location IS NOT NULL")}
        dataset = settings.model_copy(update={"storage": settings.storage.model_copy(update={"root": root})})
        with StoredReader(App.create(dataset), manifest=manifest) as reader:
            for name, data in originals.items():
                row = rows.get(sha(data))
                if row is None:
                    continue
                try:
                    back = reader.read(StoredImage(row["id"], row["label"], row["location"], row["content_hash"]))
                except Exception:  # noqa: BLE001 - not readable: not stored
                    continue
                if back == data or np.array_equal(pixels(back), pixels(data)):
                    found.add(name)
    finally:
        manifest.close()
    return found


@hsettings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=scenario)
def test_clean_never_loses_a_photo(faces_dir: Path, tmp_path_factory: pytest.TempPathFactory, case: dict) -> None:
    tmp = tmp_path_factory.mktemp("clean")
    folder = tmp / LABEL
    folder.mkdir()
    originals: dict[str, bytes] = {}
    photo_of: dict[str, int] = {}
    for i, (photo, fmt, side, gps) in enumerate(case["files"]):
        name = f"f{i}_{fmt}_{side}{'_gps' if gps else ''}{FORMATS[fmt][1]}"
        originals[name] = cached_variant(str(faces_dir), PHOTOS[photo], fmt, side, gps)
        photo_of[name] = photo
    if case["junk"]:
        originals.update(own_content_rejects())
    for name, data in originals.items():
        (folder / name).write_bytes(data)
    names = sorted(originals)
    pick = lambda indices: {names[i] for i in indices if i < len(names)}  # noqa: E731
    vanish, change = pick(case["vanish"]), pick(case["change"]) - pick(case["vanish"])
    output = tmp / "dataset" if case["output"] else None
    if output is not None and case["store_fails"] == "label_blocked":
        output.mkdir()
        (output / LABEL).write_text("x\n")
    move_to = tmp / "rejected" if case["action"] == "move" else None
    settings = clean_settings(tmp, {"privacy": {"strip_metadata": case["strip"]}})
    app = App.create(settings, plugins=[UserMeddles(vanish, change)])
    with ExitStack() as stack:
        faults(stack, pick(case["late"]), case["slow_store"], case["store_fails"] == "some")
        result = clean(app, folder, output=output, move_rejected_to=move_to,
                       delete_rejected=case["action"] == "delete", dry_run=case["dry_run"])

    outcome = {Path(f["path"]).name: f for f in result["files"]}
    in_folder = {n for n in originals if (folder / n).is_file() and (folder / n).read_bytes() == originals[n]}
    moved_hashes = hashes_under(move_to) if move_to else set()
    moved = {n for n in originals if sha(originals[n]) in moved_hashes}
    stored = stored_originals(settings, output, originals) if output else set()
    survives = in_folder | moved | stored

    def own_content(name: str) -> bool:
        item = outcome.get(name)
        return bool(item and item["outcome"] == "rejected" and item["code"] not in RELATIONAL_CODES | NOT_ABOUT_THE_FILE)

    for name in originals:
        if name in vanish:
            continue
        if name in change:
            assert (folder / name).read_bytes() == originals[name] + b"edited", f"{name} changed once judged, then removed"
            continue
        if name not in survives:  # deleted: only as asked, for itself, or as a copy of one that is kept
            same_photo = [n for n in originals if n != name and name in photo_of and photo_of.get(n) == photo_of[name]]
            kept_copies = stored if output is not None else in_folder  # the dataset, or the folder itself
            assert case["action"] == "delete" and not case["dry_run"], f"{name} is gone: {outcome.get(name)}"
            assert own_content(name) or any(n in kept_copies for n in same_photo), (
                f"{name} is lost: {outcome.get(name)} plan={result.get('plan')}")
        if outcome.get(name, {}).get("outcome") == "failed":
            assert name in in_folder, f"{name} failed and was removed"
    for photo in set(photo_of.values()):
        group = [n for n, p in photo_of.items() if p == photo]
        needs_a_copy = [n for n in group if n not in vanish and n not in change and not own_content(n)]
        if needs_a_copy:
            assert any(n in survives for n in group if n not in vanish), (
                f"photo {PHOTOS[photo]} is lost: {[(n, outcome.get(n)) for n in group]} plan={result.get('plan')}")
    if move_to is not None:
        assert not partial_files(move_to, list_originals(originals, change)), "a partial file in the move target"
    if case["dry_run"] or case["action"] == "none":
        assert in_folder | vanish | change == set(originals)

    exit_code = code_for(result["errors"])
    removal_failed = any("could not" in e for e in result["errors"])
    assert exit_code == (1 if result["failed"] or removal_failed else 0), result["errors"]
    if output is not None and case["store_fails"] != "never":
        reached_store = [n for n, f in outcome.items() if f["outcome"] in ("kept", "failed")]
        if case["store_fails"] == "label_blocked" and reached_store:
            assert exit_code == 1
    if exit_code == 0 and output is not None:
        kept = [n for n, f in outcome.items() if f["outcome"] == "kept" and n in originals]
        assert set(kept) <= stored, f"exit 0, yet kept files are not stored: {set(kept) - stored}"


def list_originals(originals: dict[str, bytes], change: set[str]):
    from clean_helpers import Original

    out = [Original(n, "", data) for n, data in originals.items()]
    out += [Original(n, "", originals[n] + b"edited") for n in change]
    return out
