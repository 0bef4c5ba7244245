"""A model folder that the tool can prove it wrote, and nothing else is ever replaced.

``train`` writes a new model into a temporary sibling folder and swaps it in. The folder
it replaces must be a selfiescope model: its ``schema.json`` carries the marker
(``"written_by": "selfiescope"``, or the first release's ``"format": 1`` with feature
columns) and it holds only the files that schema lists. Anything else (a folder of
documents, the dataset, the current directory) is refused before training starts.

``schema.json`` also records each file's size and sha256, so ``predict`` can refuse a
truncated or altered model with a clear message instead of crashing in native code.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

from ...core.errors import UsageError
from .model_schema import SchemaError, is_plain_name, read_json_file
from ...core.lock import pid_alive as _alive

MARKER = {"written_by": "selfiescope"}
SCHEMA = "schema.json"
# Files the first release wrote, which carry no file list of their own.
LEGACY_FILES = {"model.txt", SCHEMA, "settings.json", "metrics.json", "versions.json", "predictions.csv",
                "report.html", "roc.png", "calibration.png", "confusion.png", "importance.png", "balance.png",
                "examples.png"}
# Files prediction reads: checked against their recorded size and hash before loading.
MACHINE_READ = (".txt", ".json", ".pkl", ".joblib", ".npz")
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)$")


class ModelDirError(UsageError):
    """The model folder cannot be written or used; phrased for the user."""


def read_schema(folder: Path) -> dict[str, Any] | None:
    try:
        data = read_json_file(folder / SCHEMA)
    except (OSError, SchemaError):
        return None
    return data if isinstance(data, dict) else None


def is_marked(schema: dict[str, Any] | None) -> bool:
    if schema is None:
        return False
    if schema.get("written_by") == MARKER["written_by"]:
        return True
    return schema.get("format") == 1 and isinstance(schema.get("columns"), list)  # first release


def owned_files(schema: dict[str, Any]) -> set[str]:
    """The names a model folder's schema claims; only plain names, so a schema edited to list
    ``../x`` can never make train delete something outside the folder."""
    listed = schema.get("files")
    names = set(listed) if isinstance(listed, dict) else set(LEGACY_FILES)
    return {name for name in names if isinstance(name, str) and is_plain_name(name)} | {SCHEMA}


def check_target(model_dir: Path, protected: list[Path]) -> None:
    """Refuse a model folder that is not ours to replace. ``protected``: folders (the storage
    root, the dataset) that must neither be the model folder nor lie inside it (a folder inside
    them is refused by the marker check unless it is a model)."""
    if not model_dir.name or model_dir.name in (".", ".."):
        raise ModelDirError(f"--model-dir {model_dir}: name a folder of its own, such as models/latest")
    resolved = model_dir.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or cwd.is_relative_to(resolved):
        raise ModelDirError(f"--model-dir {model_dir}: is the current folder or holds it; name a folder of its own")
    for folder in protected:
        folder = folder.resolve()
        if resolved == folder or folder.is_relative_to(resolved):
            raise ModelDirError(f"--model-dir {model_dir}: overlaps the dataset folder {folder}; choose another folder")
    for parent in model_dir.parents:
        if parent.exists() and not parent.is_dir():
            raise ModelDirError(f"--model-dir {model_dir}: {parent} is a file")
    if not os.path.lexists(model_dir):
        return
    if model_dir.is_symlink() or not model_dir.is_dir():
        raise ModelDirError(f"--model-dir {model_dir}: exists and is not a folder; choose another path")
    schema = read_schema(model_dir)
    if not is_marked(schema):
        raise ModelDirError(
            f"--model-dir {model_dir}: exists and is not a selfiescope model (no schema.json written by "
            "selfiescope); refusing to replace it. Choose a new or empty folder name."
        )
    assert schema is not None
    foreign = sorted(p.name for p in model_dir.iterdir() if p.name not in owned_files(schema))
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise ModelDirError(
            f"--model-dir {model_dir}: holds files selfiescope did not write ({shown}); refusing to replace "
            "it. Move them away or choose another folder."
        )


def check_writable(model_dir: Path) -> None:
    """ModelDirError unless train can write the model: the nearest existing folder above it
    (where the temporary folder goes) and the model folder itself when it exists (its old
    files are removed after the swap). Tried with a real file, so read-only mounts, ACLs and
    a full disk's refusals count, not only mode bits."""
    above = model_dir.parent
    while not above.exists() and above != above.parent:
        above = above.parent
    for folder in (above, *([model_dir] if model_dir.is_dir() and not model_dir.is_symlink() else [])):
        try:
            fd, probe = tempfile.mkstemp(prefix=".selfiescope-probe-", dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise ModelDirError(f"--model-dir {model_dir}: cannot write in {folder} ({exc.strerror or exc}); "
                                "choose a writable folder") from None


def file_digest(path: Path) -> dict[str, Any]:
    with path.open("rb") as fh:
        return {"size": path.stat().st_size, "sha256": hashlib.file_digest(fh, "sha256").hexdigest()}


def seal(folder: Path, schema: dict[str, Any]) -> None:
    """Write ``schema.json`` last, with the marker and every other file's size and hash."""
    files = {p.name: file_digest(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != SCHEMA}
    sealed = {**schema, **MARKER, "files": files}
    (folder / SCHEMA).write_text(json.dumps(sealed, indent=2), encoding="utf-8")


def verify(folder: Path, schema: dict[str, Any], *, skip: tuple[str, ...] = ()) -> None:
    """ModelDirError if a file prediction reads is missing, truncated or altered (``skip``:
    files the caller reads once and checks with :func:`verify_bytes`)."""
    files = schema.get("files")
    if not isinstance(files, dict):
        return  # a first-release model: nothing recorded to check against
    for name, want in files.items():
        if not name.endswith(MACHINE_READ) or name in skip:
            continue
        path = folder / name
        try:
            have = _regular_digest(path, want.get("size") if isinstance(want, dict) else None)
        except OSError as exc:
            raise ModelDirError(f"{path}: {exc.strerror or exc}; the model folder is incomplete, retrain it") from None
        _compare(path, have, want)


def _regular_digest(path: Path, expected_size: Any) -> dict[str, Any]:
    """Like :func:`file_digest`, for a file that may be anything: opened without blocking (a
    FIFO never waits for a writer), refused unless regular, hashed only when its size matches."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        if st.st_size != expected_size:
            return {"size": st.st_size, "sha256": None}
        return {"size": st.st_size, "sha256": hashlib.file_digest(fh, "sha256").hexdigest()}


def verify_bytes(path: Path, data: bytes, schema: dict[str, Any]) -> None:
    """ModelDirError if ``data``, read from ``path``, differs from what the schema recorded for it."""
    files = schema.get("files")
    if not isinstance(files, dict):
        return
    if path.name not in files:
        raise ModelDirError(f"{path}: not listed in schema.json's files; retrain the model")
    _compare(path, {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}, files[path.name])


def _compare(path: Path, have: dict[str, Any], want: Any) -> None:
    if not isinstance(want, dict) or have != {"size": want.get("size"), "sha256": want.get("sha256")}:
        recorded = want.get("size") if isinstance(want, dict) else None
        what = "truncated" if isinstance(recorded, int) and have["size"] < recorded else "altered"
        raise ModelDirError(f"{path}: {what} since training (size or sha256 differs); retrain the model "
                            "with `selfiescope train` or restore the folder")



def remove_stale(model_dir: Path) -> list[Path]:
    """Tidy what a killed ``train`` left beside ``model_dir`` (only folders of dead pids): its
    temporary folder goes; a previous model set aside is put back if no model took its place,
    else its own files are removed. Returns the folders dealt with."""
    done = []
    parent = model_dir.parent
    if not parent.is_dir():
        return done
    for entry in sorted(parent.iterdir()):
        m = _TEMP.match(entry.name)
        if not m or m["name"] != model_dir.name or entry.is_symlink() or not entry.is_dir() or _alive(int(m["pid"])):
            continue
        if ".tmp-" in entry.name:
            shutil.rmtree(entry)  # named by us, for our pid: only train ever writes there
        elif not os.path.lexists(model_dir):
            entry.rename(model_dir)  # killed mid-swap: the previous model comes back
        else:
            _remove_owned(entry)
        done.append(entry)
    return done


def _remove_owned(folder: Path) -> None:
    """Remove a set-aside model's own files, then the folder if nothing else is in it."""
    schema = read_schema(folder) or {}
    for name in owned_files(schema) if is_marked(schema) else ():
        (folder / name).unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:  # something we did not write: leave it where the user can see it
        pass


def swap_in(tmp: Path, model_dir: Path) -> None:
    """Replace ``model_dir`` (checked by :func:`check_target`) with the sealed ``tmp``; the old
    model's own files are removed, anything that appeared meanwhile is kept aside."""
    old = model_dir.with_name(f".{model_dir.name}.old-{os.getpid()}")
    if model_dir.exists():
        model_dir.rename(old)
    tmp.rename(model_dir)
    if old.exists():
        _remove_owned(old)
