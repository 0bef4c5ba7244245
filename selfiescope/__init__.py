"""selfiescope: collect face photos and learn to tell selfies from other portraits."""

__version__ = "0.1.0"

from .core.hookspecs import hookimpl  # noqa: E402  (the one name a plugin author needs)

__all__ = ["__version__", "hookimpl", "load_model"]


def load_model(path):  # noqa: ANN001, ANN201 - thin lazy wrapper, see pipelines.predict
    """Load a trained model folder: ``selfiescope.load_model(path).predict(paths)``."""
    from .pipelines.predict import load_model as _load

    return _load(path)
