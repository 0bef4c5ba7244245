"""A dataset of posts with owners and captions, collected by the real engine (for the privacy tests).

``PostsSource`` is a third-party-style source: it yields the posts of ``POSTS[tag]``
with an owner, a caption and a date in ``origin.extra``, as the instagram source does,
and skips posts the manifest says were seen, as every source must.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from selfiescope.core.app import App
from selfiescope import hookimpl
from selfiescope.core.components import Job, Source
from selfiescope.core.events import ImageEvent, Origin
from selfiescope.core.manifest import Manifest
from selfiescope.core.settings import ScrapePipeline, Settings, settings_from_dict
from selfiescope.core.stats import RunStats
from selfiescope.pipelines.collecting.collect import collect

CHAIN = ["decode", "dedup", "store"]


@dataclass(frozen=True)
class FakePost:
    code: str
    owner: str
    caption: str
    data: bytes
    taken_at: int = 1_767_225_600


POSTS: dict[str, list[FakePost]] = {}


def jpeg(seed: int, size: int = 96, exif: bytes | None = None) -> bytes:
    rng = np.random.default_rng(seed)
    im = Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85, **({"exif": exif} if exif else {}))
    return buf.getvalue()


class PostsSource(Source):
    name = "posts"
    BIAS = "Posts come from the test feed only."

    @classmethod
    def known_biases(cls, options: Any) -> list[str]:  # what the dataset card says of this source
        return [cls.BIAS]

    async def events(self, job: Job) -> AsyncIterator[ImageEvent]:
        for post in POSTS.get(job.target, []):
            if await asyncio.to_thread(self.run.manifest.post_seen, self.name, post.code):
                continue
            origin = Origin(self.name, job=job.target, post_id=post.code, post_url=f"https://example.test/p/{post.code}/",
                            extra={"owner": post.owner, "caption": post.caption, "taken_at": post.taken_at})
            yield ImageEvent(origin=origin, label=job.label, data=post.data)


class PostsPlugin:
    @hookimpl
    def selfiescope_sources(self) -> list[type[Source]]:
        return [PostsSource]


def settings_for(root: Path, **privacy: Any) -> Settings:
    return settings_from_dict({"storage": {"root": str(root)}, "engine": {"workers": 2, "threads": 2},
                               "privacy": privacy})


def write_settings(root: Path, **privacy: Any) -> Path:
    lines = ["[storage]", f'root = "{root}"', "", "[privacy]"]
    lines += [f"{k} = {str(v).lower() if isinstance(v, bool) else repr(v)}" for k, v in privacy.items()]
    path = root.parent / f"{root.name}-settings.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def collect_posts(settings: Settings, tag: str, label: str, posts: list[FakePost]) -> RunStats:
    POSTS[tag] = posts
    pipeline = ScrapePipeline(kind="scrape", source="posts", hashtags=[tag], label=label, chain=CHAIN)
    return asyncio.run(collect(App.create(settings, plugins=[PostsPlugin()]), "scrape", pipeline=pipeline))


def import_folder(settings: Settings, folder: Path, label: str) -> RunStats:
    pipeline = ScrapePipeline(kind="import", source="folder", paths=[folder], label=label, chain=CHAIN)
    return asyncio.run(collect(App.create(settings), "import", pipeline=pipeline))


def import_pictures(root: Path, folders: Path, pictures: Mapping[str, Iterable[np.ndarray]]) -> None:
    """Each label's pictures (BGR arrays) written as PNG files to ``folders/<label>`` and imported
    into the storage root ``root`` under that label (decode, dedup, store: no face step)."""
    import cv2

    for label, images in pictures.items():
        folder = folders / label
        folder.mkdir()
        for i, pixels in enumerate(images):
            cv2.imwrite(str(folder / f"{i}.png"), np.ascontiguousarray(pixels))
        import_folder(settings_for(root), folder, label)


def stored_files(root: Path) -> set[str]:
    """Every image file under the storage root (label folders), as root-relative paths."""
    return {
        p.relative_to(root).as_posix() for p in root.glob("*/*")
        if p.is_file() and not p.name.startswith(".") and p.parent.name not in ("export",)
    }


def accepted_locations(root: Path) -> set[str]:
    m = Manifest.at_root(root)
    try:
        return {r["location"] for r in m.query("SELECT location FROM images WHERE decision='accepted'")}
    finally:
        m.close()


def table_hashes(root: Path) -> dict[str, set[str]]:
    """Content hashes present in every table that keeps them."""
    m = Manifest.at_root(root)
    try:
        return {
            "images": {r[0] for r in m.query("SELECT content_hash FROM images")},
            "rejections": {r[0] for r in m.query("SELECT content_hash FROM rejections")},
            "phashes": {r[0] for r in m.query("SELECT content_hash FROM dedup__phashes")},
            "features": {r[0] for r in m.query("SELECT content_hash FROM features")},
            "conflicts": {h for r in m.query("SELECT content_hash, other_hash FROM dedup__conflicts") for h in r},
        }
    finally:
        m.close()
