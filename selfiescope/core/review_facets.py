"""A facet a plugin adds to `selfiescope review` (the ``selfiescope_review_facets`` hook)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

FACET_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
FacetValues = Callable[[Mapping[str, Any]], "str | Iterable[str] | None"]


@dataclass(frozen=True)
class ReviewFacet:
    """``name`` (lower-case letters, digits, ``_``; the URL key is ``x.<name>``), ``title`` (what the
    sidebar shows) and ``values``: called once per image with its manifest row (a mapping of the
    ``images`` columns, ``label`` being the reviewed label, ``notes`` the steps' notes as a dict),
    it returns the image's value, several values, or None. No SQL: the review app counts and filters."""

    name: str
    title: str
    values: FacetValues

    def __post_init__(self) -> None:
        if not FACET_NAME.match(self.name):
            raise ValueError(f"review facet name {self.name!r}: use lower-case letters, digits and _ (at most 40)")
