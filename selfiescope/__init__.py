"""selfiescope: collect face photos and learn to tell selfies from other portraits."""

__version__ = "0.1.0"
