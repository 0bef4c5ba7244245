"""Datasets for the training and prediction tests: rendered pictures whose label is decided by geometry.

Every picture holds the same face (the astronaut of scikit-image, pasted at a random
size from one shared range), so neither face size nor face content tells the classes
apart. Only *where* the face sits does: "selfie" faces touch a side of the frame,
"portrait" faces are centred. A face-area baseline must therefore fail where the
geometry features succeed.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import imagehash
import numpy as np
from PIL import Image

from selfiescope.core.app import App
from selfiescope.core.engine import run_chain
from selfiescope.core.events import Decision, ImageEvent, Origin
from selfiescope.core.manifest import Manifest
from selfiescope.core.plugins import build_registry
from selfiescope.core.settings import Settings, settings_from_dict
from selfiescope.testing.synth import astronaut

SIDE = 256
HEAD = (130, 10, 320, 200)  # x0, y0, x1, y1 around the face in astronaut()
FACE_SHARE = (95 / (HEAD[2] - HEAD[0]))  # face box side / pasted head side


def render(kind: str, rng: np.random.Generator) -> np.ndarray:
    """A SIDE x SIDE RGB picture with the astronaut's head pasted at a kind-dependent place."""
    canvas = np.empty((SIDE, SIDE, 3), np.uint8)
    top, bottom = rng.integers(40, 220, 3), rng.integers(40, 220, 3)
    ramp = np.linspace(0, 1, SIDE)[:, None, None]
    canvas[:] = (top * (1 - ramp) + bottom * ramp).astype(np.uint8)
    for _ in range(6):  # furniture: random blocks, so no two pictures look alike
        x, y = rng.integers(0, SIDE, 2)
        w, h = rng.integers(20, 120, 2)
        canvas[y:y + h, x:x + w] = rng.integers(0, 256, 3)
    face_side = rng.uniform(0.42, 0.52) * SIDE
    head_side = int(face_side / FACE_SHARE)
    x0, y0, x1, y1 = HEAD
    head = cv2.resize(np.ascontiguousarray(astronaut()[y0:y1, x0:x1]), (head_side, head_side), interpolation=cv2.INTER_AREA)
    margin = int((head_side - face_side) / 2)
    if kind == "selfie":  # the face box touches the left or right side
        fx = rng.choice([rng.uniform(0, 4), SIDE - face_side - rng.uniform(0, 4)])
    else:
        fx = (SIDE - face_side) / 2 + rng.uniform(-6, 6)
    fy = (SIDE - face_side) / 2 + rng.uniform(-25, 25)
    hx, hy = int(fx) - margin, int(fy) - margin
    sx0, sy0 = max(0, -hx), max(0, -hy)
    dx0, dy0 = max(0, hx), max(0, hy)
    w = min(head_side - sx0, SIDE - dx0)
    h = min(head_side - sy0, SIDE - dy0)
    canvas[dy0:dy0 + h, dx0:dx0 + w] = head[sy0:sy0 + h, sx0:sx0 + w]
    noise = rng.normal(0, 4, canvas.shape)
    return np.clip(canvas + noise, 0, 255).astype(np.uint8)


def write_pictures(folder: Path, kind: str, n: int, seed: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"{kind}_{seed}_{i:03d}.jpg"
        Image.fromarray(render(kind, rng)).save(path, "JPEG", quality=90)
        paths.append(path)
    return paths


async def _annotate(settings: Settings, paths: list[Path], label: str, job: str, manifest: Manifest) -> int:
    """Run the real decode and face_area steps, store accepted images with the configured
    storage backend and record them (no dedup: near-duplicates must reach training, which
    groups them)."""
    registry = build_registry()
    executor = ThreadPoolExecutor(2)
    run = App.create(settings).run_context("test", None, manifest, executor=executor)
    steps = [run.component("steps", name) for name in ("decode", "face_area")]
    storage = run.component("storage", settings.storage.backend)
    await storage.open()
    for step in steps:
        await step.open()
    accepted = 0
    try:
        for path in paths:
            event = ImageEvent(origin=Origin(source="folder", job=job, path=str(path)), label=label, data=path.read_bytes())
            await run_chain(event, steps, run)
            if event.decision is Decision.ACCEPTED:
                event.phash = event.phash or str(imagehash.phash(Image.fromarray(event.image)))
                event.id = event.content_hash[:16]
                event.location = await storage.write(event)
                accepted += 1
            manifest.record(event)
    finally:
        for step in steps:
            await step.close()
        await storage.close()
        executor.shutdown()
    return accepted


def build_dataset(root: Path, files: dict[str, list[Path]], settings: Settings | None = None) -> dict[str, int]:
    """Store and record ``{label: [files]}`` in ``root``'s manifest the way collection does
    (through ``settings``' storage backend; the input files stay where they are)."""
    settings = settings or settings_from_dict({"storage": {"root": str(root)}})
    manifest = Manifest.at_root(root)
    try:
        return {
            label: asyncio.run(_annotate(settings, paths, label, f"#{label}", manifest))
            for label, paths in files.items()
        }
    finally:
        manifest.close()


def rendered_dataset(root: Path, per_label: int, minimum: int, seeds: tuple[int, int] = (1, 2)) -> Path:
    """``per_label`` rendered selfies and portraits (:func:`write_pictures`, under ``root/in``)
    collected into ``root``; at least ``minimum`` of each label must be accepted."""
    files = {label: write_pictures(root / "in" / label, label, per_label, seed=seed)
             for label, seed in zip(("selfie", "portrait"), seeds)}
    accepted = build_dataset(root, files)
    assert min(accepted.values()) >= minimum, accepted
    return root


def train_settings(root: Path, model_dir: Path, features: list[str], plugins: dict | None = None, **extra) -> Settings:
    pipeline = {"kind": "train", "labels": ["selfie", "portrait"], "features": features,
                "model_dir": str(model_dir), "folds": 4, **extra}
    return settings_from_dict({"storage": {"root": str(root)}, "plugins": plugins or {}, "pipelines": {"t": pipeline}})
