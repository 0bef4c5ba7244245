"""selfiescope: collect face photos and learn to tell selfies from other portraits.

The plugin API lives in :mod:`selfiescope.api`; its most used names are importable from
here too (``from selfiescope import Step, hookimpl``), loaded on first use so that importing
the package (a Dask worker unpickling a task, ``python -m selfiescope``) loads no component
module, and so no plugin, until one is asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from .core.hookspecs import hookimpl  # noqa: E402  (cheap: pluggy only)

if TYPE_CHECKING:  # pragma: no cover
    from .api import FeatureExtractor, ImageEvent, Job, Options, Reject, Source, Step, Storage

# Re-exported lazily from selfiescope.api (PEP 562).
_API_NAMES = ("FeatureExtractor", "ImageEvent", "Job", "Options", "Reject", "Source", "Step", "Storage")

__all__ = ["__version__", "hookimpl", "load_model", *_API_NAMES]


def __getattr__(name: str) -> Any:
    if name in _API_NAMES:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'selfiescope' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API_NAMES})


def load_model(path):  # noqa: ANN001, ANN201 - thin lazy wrapper, see pipelines.model.predict
    """Load a trained model folder: ``selfiescope.load_model(path).predict(paths)``."""
    from .pipelines.model.predict import load_model as _load

    return _load(path)
