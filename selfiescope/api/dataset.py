"""For steps, sources and backends that work with what a dataset already holds: the manifest,
the resume check, the store step's crash-safety and metadata helpers, tidying a storage root
only while no run holds it, and the perceptual hashes dedup and the forget gate share.

::

    from selfiescope.api.dataset import Manifest, already_stored, when_alone
"""

from __future__ import annotations

from ..core.components import STORED
from ..core.decisions import already_stored
from ..core.image_files import IMAGE_SUFFIXES, MAX_IMAGE_BYTES
from ..core.intents import note_intent
from ..core.likeness import (
    CENTRE_MARGIN, HASH_WORKING_SIDE, centre_crop, compute_mirror_phashes, compute_phash, compute_phashes,
)
from ..core.lock import when_alone
from ..core.manifest import Manifest, phash_to_int, signed64
from ..core.metadata import has_location, strip_metadata

__all__ = [
    "CENTRE_MARGIN",
    "HASH_WORKING_SIDE",
    "IMAGE_SUFFIXES",
    "MAX_IMAGE_BYTES",
    "Manifest",
    "STORED",
    "already_stored",
    "centre_crop",
    "compute_mirror_phashes",
    "compute_phash",
    "compute_phashes",
    "has_location",
    "note_intent",
    "phash_to_int",
    "signed64",
    "strip_metadata",
    "when_alone",
]
