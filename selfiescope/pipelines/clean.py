"""``selfiescope clean DIR``: the seed's CleaningPhotos as a pipeline.

Runs a folder through decode + face_area (+ dedup) with the ordinary collect machinery
and reports kept/rejected counts by reason. Without ``output`` it works in place and
only reports (its manifest lives in a temporary folder); with ``output`` the kept images
are stored into a new dataset there. The user's originals are never touched unless
``move_rejected_to`` or ``delete_rejected`` asks for it, and only rejected files are.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from ..core.events import ImageEvent
from ..core.hookspecs import hookimpl
from ..core.plugins import Registry, load_registry
from ..core.settings import ScrapePipeline, Settings, SettingsError


class _Decisions:
    """Observer plugin: remembers the decision for every file of the run."""

    def __init__(self) -> None:
        self.files: list[dict[str, Any]] = []

    def _note(self, event: ImageEvent, kept: bool) -> None:
        self.files.append({
            "path": event.origin.path, "kept": kept, "code": event.reject_code,
            "reason": event.reject_reason, "location": event.location, "face_area": event.face_area,
        })

    @hookimpl
    def selfiescope_image_accepted(self, event: ImageEvent, run: Any) -> None:
        self._note(event, True)

    @hookimpl
    def selfiescope_image_rejected(self, event: ImageEvent, run: Any) -> None:
        self._note(event, False)


def _label_for(folder: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", folder.resolve().name).strip("_") or "images"


def _unique_target(folder: Path, name: str) -> Path:
    target = folder / name
    stem, suffix = Path(name).stem, Path(name).suffix
    n = 1
    while target.exists():
        target = folder / f"{stem}-{n}{suffix}"
        n += 1
    return target


def clean(
    settings: Settings,
    folder: Path | str,
    *,
    output: Path | str | None = None,
    dedup: bool = True,
    move_rejected_to: Path | str | None = None,
    delete_rejected: bool = False,
    registry: Registry | None = None,
    label: str | None = None,
) -> dict[str, Any]:
    """Clean ``folder``; return counts by reason and the decision for every file."""
    from .collect import collect

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise SettingsError([f"clean: folder not found: {folder}"])
    if move_rejected_to is not None and delete_rejected:
        raise SettingsError(["clean: choose either move_rejected_to or delete_rejected, not both"])
    chain = ["decode", "face_area", *(["dedup"] if dedup else []), *(["store"] if output else [])]
    pipeline = ScrapePipeline(kind="import", source="folder", paths=[folder], label=label or _label_for(folder), chain=chain)
    registry = registry or load_registry()
    observer = _Decisions()
    registry.pm.register(observer)
    try:
        with tempfile.TemporaryDirectory(prefix="selfiescope-clean-") as scratch:
            root = Path(output).expanduser() if output else Path(scratch)
            run_settings = settings.model_copy(update={"storage": settings.storage.model_copy(update={"root": root})})
            stats = asyncio.run(collect(run_settings, "clean", registry=registry, pipeline=pipeline))
    finally:
        registry.pm.unregister(observer)

    moved = deleted = 0
    for item in observer.files:
        if item["kept"] or not item["path"]:
            continue
        path = Path(item["path"])
        if move_rejected_to is not None:
            target_dir = Path(move_rejected_to).expanduser() / (item["code"] or "rejected")
            target_dir.mkdir(parents=True, exist_ok=True)
            target = _unique_target(target_dir, path.name)
            shutil.move(str(path), target)
            item["moved_to"] = str(target)
            moved += 1
        elif delete_rejected:
            path.unlink(missing_ok=True)
            item["deleted"] = True
            deleted += 1
    by_reason = Counter(item["code"] for item in observer.files if not item["kept"])
    return {
        "folder": str(folder),
        "output": str(output) if output else None,
        "chain": chain,
        "status": stats.status,
        "seen": len(observer.files),
        "kept": sum(1 for item in observer.files if item["kept"]),
        "rejected": sum(1 for item in observer.files if not item["kept"]),
        "rejected_by_reason": dict(sorted(by_reason.items())),
        "moved": moved,
        "deleted": deleted,
        "errors": list(stats.errors),
        "files": sorted(observer.files, key=lambda item: item["path"] or ""),
    }
