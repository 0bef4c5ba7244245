"""The values the review app's data layer hands to its web layer (see ``data.py``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from ..core.errors import RunFailed

SORTS = ("mislabeled", "face_area", "newest")
ACTIONS = ("relabel", "exclude", "include", "reviewed", "unreviewed")
BOOL_VALUES = {"yes": True, "no": False, "true": True, "false": False, "1": True, "0": False}
EXTRA_PREFIX = "x."  # a plugin facet's query key: "x.<facet name>"
_MULTI = ("label", "job", "decision", "reason", "detector")
_BOOLS = ("in_group", "reviewed", "excluded", "disagrees")


class ReviewError(RunFailed):
    """An action that cannot be carried out; phrased for the user (one line)."""


class ReviewBusy(ReviewError):
    """The root is locked by another run: ``str(e) == 'data/ is in use by pid N'``."""


def _number(key: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{key}: {text!r} is not a number") from None
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{key}: {text!r} must be a share of the image between 0 and 1")
    return value


def _flag(key: str, values: list[str]) -> bool:
    text = values[-1].strip().lower()
    if text not in BOOL_VALUES:
        raise ValueError(f"{key}: {values[-1]!r} must be yes or no")
    return BOOL_VALUES[text]


@dataclass(frozen=True)
class Filters:
    """What the grid shows: each field narrows it; values within a field are alternatives.

    Query keys are the field names; the face-area facet's values (``"0.05:0.1"``) are also
    taken under the key ``face_area``, and a plugin facet's under ``x.<facet name>``."""

    label: tuple[str, ...] = ()
    job: tuple[str, ...] = ()
    decision: tuple[str, ...] = ()
    reason: tuple[str, ...] = ()  # "step:code"
    detector: tuple[str, ...] = ()
    area_min: float | None = None
    area_max: float | None = None
    in_group: bool | None = None
    reviewed: bool | None = None
    excluded: bool | None = None
    disagrees: bool | None = None
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def from_query(cls, params: Mapping[str, list[str]]) -> "Filters":
        """A URL query (``parse_qs`` form) as filters; a bad key or value raises ValueError saying which."""
        kwargs: dict[str, object] = {}
        extra: dict[str, tuple[str, ...]] = {}
        for key, raw in params.items():
            values = [v for v in raw if v != ""]
            if not values:
                continue
            if key in _MULTI:
                kwargs[key] = tuple(dict.fromkeys(values))
            elif key in _BOOLS:
                kwargs[key] = _flag(key, values)
            elif key in ("area_min", "area_max"):
                kwargs[key] = _number(key, values[-1])
            elif key == "face_area":
                lows, highs = [], []
                for value in values:
                    low, sep, high = value.partition(":")
                    if not sep:
                        raise ValueError(f"face_area: {value!r} must be MIN:MAX")
                    lows.append(_number("face_area", low))
                    highs.append(_number("face_area", high))
                kwargs["area_min"], kwargs["area_max"] = min(lows), max(highs)
            elif key.startswith(EXTRA_PREFIX) and len(key) > len(EXTRA_PREFIX):
                extra[key[len(EXTRA_PREFIX):]] = tuple(dict.fromkeys(values))
            elif key in ("sort", "cursor", "limit", "token", "csrf", "id", "ids"):
                continue  # the page's own parameters
            else:
                raise ValueError(f"unknown filter {key!r}")
        low, high = kwargs.get("area_min"), kwargs.get("area_max")
        if isinstance(low, float) and isinstance(high, float) and low > high:
            raise ValueError(f"area_min {low} is above area_max {high}")
        return cls(**kwargs, extra=tuple(sorted(extra.items())))  # type: ignore[arg-type]

    def to_query(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "extra":
                out += [(EXTRA_PREFIX + name, v) for name, vs in value for v in vs]
            elif isinstance(value, tuple):
                out += [(f.name, v) for v in value]
            elif isinstance(value, bool):
                out.append((f.name, "yes" if value else "no"))
            elif value is not None:
                out.append((f.name, repr(float(value))))
        return out

    def extra_values(self, name: str) -> tuple[str, ...]:
        return dict(self.extra).get(name, ())


@dataclass
class FacetValue:
    value: str  # what goes into the query under the facet's name
    label: str  # what the page shows
    count: int  # images with this value under the other facets' filters


@dataclass
class Facet:
    name: str  # the query key (a plugin facet's: "x.<name>")
    title: str
    values: list[FacetValue]
    kind: str = "values"  # "values" (any of), "flag" (yes/no: one at a time), "range" (face_area: MIN:MAX)


@dataclass
class Tile:
    id: str  # the manifest's content hash
    label: str  # the effective label (reviewed, else collected)
    decision: str
    reason: str | None
    face_area: float | None
    reviewed: bool
    excluded: bool
    probability: float | None  # the latest model's calibrated out-of-fold probability of the positive label
    has_thumbnail: bool
    original_label: str | None = None  # the collected label when a review changed it


@dataclass
class Page:
    tiles: list[Tile]
    total: int
    next_cursor: str | None


@dataclass
class ReviewRow:
    id: int
    image: str
    action: str
    old: str | None
    new: str | None
    at: float
    note: str | None
    batch: int
    undoes: int | None = None  # the batch this row undid


@dataclass
class Detail:
    tile: Tile
    faces: list[tuple[int, int, int, int]]  # every recorded box: x, y, w, h in the stored image's pixels
    largest: int | None  # the index in ``faces`` of the largest face
    decisions: list[tuple[str, str, str]]  # (step, code, reason)
    job: str | None
    owner: str | None  # pseudonymised only
    post_url: str | None
    width: int | None
    height: int | None
    size_bytes: int | None
    detector: str | None
    group: list[Tile]
    kept_id: str | None
    history: list[ReviewRow]
    source: str | None = None
    n_faces: int = 0
    faces_unboxed: int = 0  # faces counted (n_faces) with no recorded box: see core/face_boxes.py
    first_seen: float | None = None
    extra: dict[str, list[str]] = field(default_factory=dict)  # plugin facets' values


@dataclass
class ActionResult:
    batch: int
    changed: int
    message: str


class ImageMismatch(ReviewError):
    """The bytes the storage gave for an image are not the ones the manifest recorded for it
    (replaced, a link followed, another image's copy): nothing of them is served."""

    def __init__(self) -> None:
        super().__init__("the image's bytes are not the ones stored")
