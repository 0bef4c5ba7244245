"""Synthetic review datasets as an import would leave them: the manifest rows of
:mod:`selfiescope.testing.review_manifest`, and dedup's index of the stored images in its own tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selfiescope.core.manifest import Manifest, phash_to_int
from selfiescope.plugins import dedup_state
from selfiescope.testing.review_manifest import build as build_rows


def build(root: Path, n: int, **options: Any) -> list[str]:
    hashes = build_rows(root, n, **options)
    manifest = Manifest.at_root(root)
    try:
        dedup_state.add_phashes(manifest.state(dedup_state.STATE),
                                [(h, phash_to_int(p), label, None) for h, p, label in manifest.stored_phashes()])
    finally:
        manifest.close()
    return hashes
