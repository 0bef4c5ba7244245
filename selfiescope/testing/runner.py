"""Run named chain steps on given images in-process, the way a real run does.

This is what the ``selfiescope_run`` pytest fixture calls. Steps come from an application
made as for a run (:class:`~selfiescope.core.app.App`: built-ins, installed plugins, and
``plugins=`` objects registered on the spot, less what ``[plugins] disable`` turns off), get their options validated by their ``Options`` model, are
opened and closed, and each image goes through :func:`~selfiescope.core.engine.run_chain`,
is recorded in a real manifest and fires the accepted/rejected hooks. Calls sharing a
``root`` share the manifest and storage, so a second call sees what the first stored.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..core.app import App
from ..core.checks import check_chain, check_components
from ..core.context import RunContext
from ..core.decisions import admit, settle
from ..core.engine import run_chain
from ..core.events import Decision, ImageEvent, Origin
from ..core.manifest import Manifest
from ..core.settings import ScrapePipeline, SettingsError, settings_from_dict
from ..pipelines.collecting.lifecycle import managed_run

ImageInput = bytes | Path | str | ImageEvent | Any  # Any: a numpy RGB/gray array


class ChainResult(list[ImageEvent]):
    """The events, in input order, with shortcuts for assertions."""

    def __init__(self, events: Iterable[ImageEvent], run: RunContext) -> None:
        super().__init__(events)
        self.run = run
        self.root: Path = run.settings.storage.root

    @property
    def accepted(self) -> list[ImageEvent]:
        return [e for e in self if e.decision is Decision.ACCEPTED]

    @property
    def rejected(self) -> list[ImageEvent]:
        return [e for e in self if e.decision is Decision.REJECTED]

    @property
    def failed(self) -> list[ImageEvent]:
        """Images that could not be processed (a step raised something other than Reject)."""
        return [e for e in self if e.decision is Decision.FAILED]

    @property
    def codes(self) -> list[str | None]:
        """``reject_code`` per event (``None`` for accepted ones)."""
        return [e.reject_code for e in self]

    def manifest(self) -> Manifest:
        """A fresh connection to the run's manifest (close it when done)."""
        return Manifest.at_root(self.root)


def _to_bytes(image: Any) -> tuple[bytes, str | None]:
    if isinstance(image, bytes | bytearray | memoryview):
        return bytes(image), None
    if isinstance(image, str | Path):
        path = Path(image)
        return path.read_bytes(), str(path)
    if hasattr(image, "__array_interface__"):
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG")  # lossless: the step sees these exact pixels
        return buf.getvalue(), None
    raise TypeError(f"cannot make an image event from {type(image).__name__}: give bytes, a path or an array")


def make_event(image: ImageInput, label: str, index: int) -> ImageEvent:
    if isinstance(image, ImageEvent):
        return image
    data, path = _to_bytes(image)
    origin = Origin(source="selfiescope_run", job="selfiescope_run", path=path, post_id=f"test-{index}")
    return ImageEvent(origin=origin, label=label, data=data)


async def run_steps(
    steps: Sequence[str],
    images: Iterable[ImageInput],
    *,
    root: Path | str,
    label: str = "selfie",
    options: dict[str, dict[str, Any]] | None = None,
    settings: dict[str, Any] | None = None,
    plugins: Sequence[Any] = (),
    entrypoints: bool | None = None,
    concurrent: bool = False,
) -> ChainResult:
    """Run ``steps`` (names) on ``images`` and return the finished events.

    ``options``: per-component options, as ``[plugins.NAME]`` in settings.toml;
    ``settings``: any other settings as a dict (``storage.root`` defaults to ``root``);
    ``plugins``: extra plugin objects (modules or instances with hookimpls);
    ``concurrent``: run all images at once (as the engine's workers do) instead of in order.

    Raises :class:`~selfiescope.core.settings.SettingsError` with the problems ``settings check``
    would report (unknown or disabled steps, bad options, a step whose ``requires`` no earlier
    step provides) before anything runs; the chain need not store.
    """
    data = dict(settings or {})
    data["storage"] = {"root": str(root), **data.get("storage", {})}
    data["plugins"] = {**data.get("plugins", {}), **(options or {})}
    cfg = settings_from_dict(data)
    app = App.create(cfg, plugins=plugins, entrypoints=entrypoints)
    registry = app.registry
    # The checks a settings file gets (`settings check`, every run): names, options, [plugins] disable,
    # and each step's `requires` met by an earlier one. The chain may store nothing: tests look at events.
    problems = check_components(cfg, registry) + check_chain(registry, "selfiescope_run", list(steps), must_store=False)
    if problems:
        raise SettingsError(problems, source="selfiescope_run")
    pipeline = ScrapePipeline(kind="import", source="selfiescope_run", label=label, chain=list(steps), paths=[Path(root)])
    events = [make_event(img, label, i) for i, img in enumerate(images)]

    # The run's lifecycle is a real run's (lock, manifest, run record, storage, hooks, close);
    # each image is admitted and settled by the same functions as in every executor.
    async with managed_run(app, "selfiescope_run", pipeline) as (run, open_component):
        chain = [await open_component("steps", name) for name in steps]
        run.hook.selfiescope_run_started(run=run)

        async def one(event: ImageEvent) -> None:
            if await admit(run, event, label):
                await run_chain(event, chain, run)
                await settle(run, event, label)

        if concurrent:
            await asyncio.gather(*(one(e) for e in events))
        else:
            for event in events:
                await one(event)
    return ChainResult(events, run)


class StepRunner:
    """The ``selfiescope_run`` fixture: ``runner(steps, images, **kw)`` or ``await runner.arun(...)``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    async def arun(self, steps: Sequence[str], images: Iterable[ImageInput], **kwargs: Any) -> ChainResult:
        kwargs.setdefault("root", self.root / "data")
        return await run_steps(steps, images, **kwargs)

    def __call__(self, steps: Sequence[str], images: Iterable[ImageInput], **kwargs: Any) -> ChainResult:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.arun(steps, images, **kwargs))
        raise RuntimeError("selfiescope_run(...) called inside a running event loop; use `await selfiescope_run.arun(...)`")
