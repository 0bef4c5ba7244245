"""Helpers for testing selfiescope and its plugins.

- :class:`~selfiescope.testing.site.MockInstagram`: a local Instagram-like site (misbehaving on
  purpose with :class:`~selfiescope.testing.chaos.Chaos`);
- :mod:`~selfiescope.testing.synth`: synthetic selfie / portrait / no-face photos;
- :func:`~selfiescope.testing.runner.run_steps`: run named chain steps on images in-process;
- the pytest plugin (fixtures ``mock_instagram`` and ``selfiescope_run``), loaded
  automatically when selfiescope is installed.

Names are imported lazily so that loading the pytest plugin stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MockInstagram": "site",
    "Chaos": "chaos",
    "TagSpec": "site",
    "Post": "site",
    "run_steps": "runner",
    "ChainResult": "runner",
    "render_selfie": "synth",
    "render_portrait": "synth",
    "render_noface": "synth",
    "render_small_face": "synth",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
