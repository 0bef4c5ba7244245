"""A real dataset for the review app's tests: real face photos imported through the whole chain
(decode, face_area, dedup, store), a mirrored copy for a near-duplicate group, and posts with
owners and captions from a third-party-style source; plus a client behind the app's gate."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps
from manifest_helpers import manifest_query
from privacy_helpers import FakePost, PostsPlugin, POSTS

from selfiescope.core.app import App
from selfiescope.core.manifest import Manifest, phash_to_int
from selfiescope.plugins import dedup_state
from selfiescope.testing.review_manifest import build as build_rows
from selfiescope.core.settings import ScrapePipeline, Settings, settings_from_dict
from selfiescope.pipelines.collecting.collect import collect

CHAIN = ["decode", "face_area", "dedup", "store"]
OWNERS = ("zelda.owner.private", "quentin_raw_name_77")
CAPTION = "caption-that-must-not-show"


@dataclass
class Dataset:
    settings: Settings
    root: Path
    settings_file: Path
    folders: dict[str, Path]


def review_settings(root: Path) -> Settings:
    return settings_from_dict({"storage": {"root": str(root)}, "engine": {"workers": 2, "threads": 2}})


def write_settings_file(root: Path) -> Path:
    path = root.parent / "settings.toml"
    path.write_text(f'[storage]\nroot = "{root}"\n\n[engine]\nworkers = 2\nthreads = 2\n')
    return path


def import_folder(settings: Settings, folder: Path, label: str) -> int:
    pipeline = ScrapePipeline(kind="import", source="folder", paths=[folder], label=label, chain=CHAIN)
    return asyncio.run(collect(App.create(settings), "import", pipeline=pipeline)).accepted


def add_synthetic(settings: Settings, tmp_path: Path, per_label: int = 5) -> list[str]:
    """Synthetic renderings of scikit-image's public-domain astronaut photo, imported under each
    label from folders named ``synthetic-<label>`` (the docs' screenshots show only these: the
    real photos may not be redistributed). Returns the folders' paths (their jobs)."""
    import numpy as np

    from selfiescope.testing.synth import render_portrait, render_selfie

    rng = np.random.default_rng(7)
    jobs = []
    for label, render in (("selfie", render_selfie), ("portrait", render_portrait)):
        folder = tmp_path / f"synthetic-{label}"
        folder.mkdir()
        for i in range(per_label):
            Image.fromarray(render(rng, 480)).save(folder / f"{label}-{i}.jpg", quality=90)
        import_folder(settings, folder, label)
        jobs.append(str(folder))
    return jobs


def build_dataset(tmp_path: Path, faces_dir: Path, per_label: int = 6, owners: bool = False) -> Dataset:
    """``per_label`` frontal portraits imported under each label (hashtags lie: the app is there to
    find that), two real selfies the face filter rejects, a mirrored copy of the first "selfie"
    (a near-duplicate group), and with ``owners`` four posts with owners and captions."""
    root = tmp_path / "data"
    frontal = sorted((faces_dir / "portrait").glob("caltech_*.jpg"))
    picks = {"portrait": frontal[:per_label], "selfie": frontal[per_label:2 * per_label]}
    picks["selfie"] += sorted((faces_dir / "selfie").glob("*.jpg"))[:2]
    folders = {}
    for label, files in picks.items():
        folder = folders[label] = tmp_path / "photos" / label
        folder.mkdir(parents=True)
        for src in files:
            shutil.copy(src, folder / src.name)
    ImageOps.mirror(Image.open(picks["selfie"][0])).save(folders["selfie"] / "zz_mirrored.jpg", quality=95)
    settings = review_settings(root)
    for label, folder in folders.items():
        assert import_folder(settings, folder, label) > 0
    if owners:
        posts = [FakePost(f"C{i}", OWNERS[i % 2], f"{CAPTION} {i}", path.read_bytes())
                 for i, path in enumerate(frontal[2 * per_label:2 * per_label + 4])]
        POSTS["mirrorselfie"] = posts
        pipeline = ScrapePipeline(kind="scrape", source="posts", hashtags=["mirrorselfie"], label="selfie", chain=CHAIN)
        asyncio.run(collect(App.create(settings, plugins=[PostsPlugin()]), "scrape", pipeline=pipeline))
    return Dataset(settings, root, write_settings_file(root), folders)


def manifest_rows(root: Path, sql: str, params: tuple = ()) -> list[tuple]:
    return [tuple(r) for r in manifest_query(root, sql, params)]


def build(root: Path, n: int, **options: Any) -> list[str]:
    """A synthetic manifest of ``n`` images (:mod:`selfiescope.testing.review_manifest`) with
    dedup's index of the stored ones in its own tables, as an import would leave it."""
    hashes = build_rows(root, n, **options)
    manifest = Manifest.at_root(root)
    try:
        dedup_state.add_phashes(manifest.state(dedup_state.STATE),
                                [(h, phash_to_int(p), label, None) for h, p, label in manifest.stored_phashes()])
    finally:
        manifest.close()
    return hashes
