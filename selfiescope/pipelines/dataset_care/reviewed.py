"""What `selfiescope review` decided, as the pipelines below it read it.

A relabel keeps the collected label in ``images.label`` (the stored file's place and each
job's limit go by it) and writes the reviewed one to ``images.review_label``; the label
everything downstream sees (train, card, export, dedup's label check) is
``COALESCE(review_label, label)``. ``images.excluded`` leaves an image out of training;
``images.reviewed`` is when someone looked at it. A manifest written before these columns
existed (opened read-only, so not migrated) reads as "nothing reviewed".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

REVIEW_COLUMNS = ("review_label", "reviewed", "excluded")
THUMBS = ".thumbs"  # the review app's thumbnails under the storage root: <root>/.thumbs/<hh>/<content hash>.jpg
CONTENT_HASH = re.compile(r"^[0-9a-f]{16,128}$")


class Queryable(Protocol):
    def execute(self, sql: str, params: Any = ...) -> Any: ...


def has_review_columns(db: Queryable) -> bool:
    have = {row[1] for row in db.execute("PRAGMA table_info(images)").fetchall()}
    return all(name in have for name in REVIEW_COLUMNS)


def label_sql(db: Queryable) -> str:
    """The SQL expression of an image's effective label."""
    return "COALESCE(review_label, label)" if has_review_columns(db) else "label"


def trainable_sql(db: Queryable) -> str:
    """A condition that leaves excluded images out (always true on a manifest without the columns)."""
    return "IFNULL(excluded, 0) = 0" if has_review_columns(db) else "1"


@dataclass(frozen=True)
class ReviewProgress:
    stored: int  # stored images
    reviewed: int  # of them marked reviewed (or relabeled)
    relabeled: int  # whose reviewed label differs from the collected one
    excluded: int  # left out of training

    def as_dict(self) -> dict[str, int]:
        return {"stored": self.stored, "reviewed": self.reviewed, "relabeled": self.relabeled,
                "excluded": self.excluded}

    def sentence(self) -> str:
        if not self.stored:
            return "no stored image to review"
        share = self.reviewed / self.stored
        return (f"{self.reviewed} of {self.stored} stored images reviewed ({share:.0%}); "
                f"{self.relabeled} relabeled, {self.excluded} excluded from training")


def review_progress(db: Queryable, labels: tuple[str, ...] | None = None) -> ReviewProgress:
    """Counts over stored images (of ``labels``' effective label when given)."""
    stored = "decision='accepted' AND location IS NOT NULL"
    if not has_review_columns(db):
        n = db.execute(f"SELECT COUNT(*) FROM images WHERE {stored}").fetchone()[0]
        return ReviewProgress(int(n), 0, 0, 0)
    where, params = stored, ()
    if labels:
        where += f" AND COALESCE(review_label, label) IN ({','.join('?' * len(labels))})"
        params = tuple(labels)
    row = db.execute(
        "SELECT COUNT(*), SUM(reviewed IS NOT NULL), SUM(review_label IS NOT NULL AND review_label != label),"
        f" SUM(IFNULL(excluded, 0) != 0) FROM images WHERE {where}", params,
    ).fetchone()
    return ReviewProgress(*(int(v or 0) for v in row))


def thumbnail_path(root: Path, content_hash: str) -> Path:
    if not CONTENT_HASH.match(content_hash):
        raise ValueError(f"not a content hash: {content_hash!r}")
    return Path(root) / THUMBS / content_hash[:2] / f"{content_hash}.jpg"


def remove_thumbnails(root: Path, content_hashes: list[str]) -> int:
    """Delete these images' review thumbnails (derived data: forgetting an image removes them),
    and any half-written one a killed writer left beside them."""
    removed = 0
    for content_hash in content_hashes:
        try:
            path = thumbnail_path(root, content_hash)
        except ValueError:
            continue
        try:
            path.unlink()
            removed += 1
        except OSError:
            pass
        try:
            for tmp in path.parent.glob(f".{path.name}.*.tmp"):
                tmp.unlink(missing_ok=True)
        except OSError:
            continue
    return removed
