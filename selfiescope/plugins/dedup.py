"""The ``dedup`` step: drop exact and near duplicates of anything already stored.

Exact copies are found by content hash; near copies (resized, re-encoded, slightly
cropped) by the Hamming distance between 64-bit perceptual hashes (imagehash pHash). Each
image gets two: of the whole picture and of its centre (5% off each side), and two images
match when any pair of their hashes is within ``max_distance``, which catches crops that
the whole-image hash alone misses without merging more different photos (measured in
``benchmarks/bench_dedup.py``). Front cameras mirror selfies and re-posts are often
flipped, and a pHash of a mirrored picture shares nothing with the original's, so a new
image is also looked up by the two hashes of its horizontal mirror (only the unmirrored
hashes are stored: a mirrored copy of a stored photo then matches once, not twice).

The index is persistent (dedup's own ``phashes`` table in the manifest, :mod:`.dedup_state`) and searched in memory with
multi-index hashing: the hash is split into ``m`` bands, and by the pigeonhole principle
a hash within distance ``d`` of the query is within ``d // m`` bits of it on at least one
band, so a lookup probes a few hundred band values instead of scanning every hash.

Images accepted earlier in the same run count too: a hash is reserved atomically when an
image passes dedup and released if a later step rejects that image (or fails to store it).
A match against such a reservation is not a decision yet: the image waits (on the event
loop, holding no thread) until the copy it matches is settled, and is judged again if that
copy was not kept. Otherwise a photo met twice, whose first copy a later step rejects
(GPS that cannot be removed, a write that fails), would be turned away as a duplicate of
nothing, and a rerun would skip it for good.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import Field

from ..api import ImageEvent, Options, Reject, Step, hookimpl
from ..api.dataset import (  # noqa: F401 - the hash functions, shared with the forget gate
    CENTRE_MARGIN, HASH_WORKING_SIDE, Manifest, centre_crop, compute_mirror_phashes, compute_phash, compute_phashes,
    phash_to_int,
)
from .dedup_state import STATE, add_conflict, add_phash, conflict_pairs, load_arrays, set_label

SERVICE = "dedup.index"


class DedupOptions(Options):
    max_distance: int = Field(
        8, ge=0, le=31, description="pHash Hamming distance at or below which two images are the same photo"
    )
    across_labels: bool = Field(True, description="a match under another label is a label_conflict, not a new image")
    settle_wait_s: float = Field(
        600.0, gt=0, description="longest wait for a copy met earlier in the same run to be kept or "
        "turned away before an image is judged a duplicate of it",
    )


def annotate_phashes(event: ImageEvent) -> None:
    """Set ``event.phash`` and ``event.phash_centre`` (and the mirror's hashes,
    ``phash_mirror`` / ``phash_mirror_centre``) from the decoded pixels: what dedup needs,
    for code that hashes where the pixels are (Dask workers) and dedups elsewhere.

    They are computed from the event's grey view at its working size (the one decode the
    chain shares), never from a full-size copy."""
    grey = event.grey
    event.phash, event.phash_centre = compute_phashes(grey)
    event.phash_mirror, event.phash_mirror_centre = compute_mirror_phashes(grey)


def _bands(max_distance: int) -> list[tuple[int, int, np.ndarray]]:
    """Split 64 bits into ``m`` bands and list, per band, the XOR masks to probe.

    By the pigeonhole principle two hashes within ``max_distance`` differ in at most
    ``max_distance // m`` bits on at least one band. Three bands of ~21 bits keep both the
    probes (254 for distance 8) and the candidates per probe (N / 2**21) small up to
    millions of hashes; larger distances take more bands so the probes stay few.
    """
    m = max(3, (max_distance + 4) // 4)
    radius = max_distance // m
    base, extra = divmod(64, m)
    bands, start = [], 0
    for i in range(m):
        length = base + (1 if i < extra else 0)
        masks = [sum(1 << b for b in bits) for r in range(radius + 1) for bits in itertools.combinations(range(length), r)]
        bands.append((start, length, np.array(masks, dtype=np.uint32)))
        start += length
    return bands


class HammingIndex:
    """64-bit hashes searchable by Hamming distance (multi-index hashing).

    All bands share one CSR table: every (band, band value) owns a bucket of slots, so a
    probe costs two array reads wherever the index has a thousand hashes or millions.
    Hashes added since the last merge sit in a buffer that is scanned directly and merged
    into the table (a linear pass, no re-sort) when it holds ``MERGE_EVERY`` hashes or 1/32
    of the table, at most 65536: a merge costs a pass over the whole table.
    Each slot carries an int64 ``payload`` (the caller's row id).
    """

    MERGE_EVERY = 2048

    def __init__(self, max_distance: int) -> None:
        self.max_distance = max_distance
        bands = _bands(max_distance)
        sizes = [1 << length for _, length, _ in bands]
        bases = np.cumsum([0, *sizes[:-1]])
        self._band_of = [(np.uint64(start), np.uint64((1 << length) - 1), int(base)) for (start, length, _), base in zip(bands, bases)]
        self._shifts = np.concatenate([np.full(len(p), start, np.uint64) for start, _, p in bands])
        self._masks = np.concatenate([np.full(len(p), (1 << length) - 1, np.uint64) for _, length, p in bands])
        self._probes = np.concatenate([p.astype(np.uint64) for _, _, p in bands])
        self._bases = np.concatenate([np.full(len(p), base, np.int64) for (_, _, p), base in zip(bands, bases)])
        self._offsets = np.zeros(sum(sizes) + 1, dtype=np.int32)  # 32 MB for the default 3 bands
        self._order = np.zeros(0, dtype=np.int32)
        self._hashes = np.zeros(1024, dtype=np.uint64)
        self._payload = np.zeros(1024, dtype=np.int64)
        self._alive = np.zeros(1024, dtype=bool)
        self._n = 0
        self._built = 0

    def __len__(self) -> int:
        return int(self._alive[: self._n].sum())

    def _grow(self, need: int) -> None:
        if need <= len(self._hashes):
            return
        size = max(need, 2 * len(self._hashes))
        for name in ("_hashes", "_payload", "_alive"):
            old = getattr(self, name)
            new = np.zeros(size, dtype=old.dtype)
            new[: self._n] = old[: self._n]
            setattr(self, name, new)

    def add_many(self, values: np.ndarray, payloads: np.ndarray) -> None:
        count = len(values)
        self._grow(self._n + count)
        self._hashes[self._n : self._n + count] = values
        self._payload[self._n : self._n + count] = payloads
        self._alive[self._n : self._n + count] = True
        self._n += count
        self._merge()

    def add(self, value: int, payload: int) -> int:
        slot = self._n
        self._grow(slot + 1)
        self._hashes[slot] = np.uint64(value)
        self._payload[slot] = payload
        self._alive[slot] = True
        self._n += 1
        if self._n - self._built >= max(self.MERGE_EVERY, min(self._built // 32, 65536)):
            self._merge()
        return slot

    def set_payload(self, slot: int, payload: int) -> None:
        self._payload[slot] = payload

    def remove(self, slot: int) -> None:
        self._alive[slot] = False

    def _merge(self) -> None:
        """Move the buffer into the CSR table: each new slot goes to the end of its buckets."""
        if self._n == self._built:
            return
        hashes = self._hashes[self._built : self._n]
        slots = np.arange(self._built, self._n, dtype=np.int64)
        keys = np.concatenate([((hashes >> start) & mask).astype(np.int64) + base for start, mask, base in self._band_of])
        order = np.argsort(keys, kind="stable")
        keys, slots = keys[order], np.tile(slots, len(self._band_of))[order].astype(np.int32)
        self._order = np.insert(self._order, self._offsets[keys + 1], slots)
        self._offsets[1:] += np.cumsum(np.bincount(keys, minlength=len(self._offsets) - 1)).astype(np.int32)
        self._built = self._n

    def nearest(self, value: int) -> tuple[int, int, int] | None:
        """``(distance, slot, payload)`` of the closest live hash within ``max_distance``, or None."""
        query = np.uint64(value)
        keys = (((query >> self._shifts) & self._masks) ^ self._probes).astype(np.int64) + self._bases
        starts = self._offsets[keys]
        counts = self._offsets[keys + 1] - starts
        total = int(counts.sum())
        slots = self._order[np.repeat(starts - (np.cumsum(counts) - counts), counts) + np.arange(total)]
        if self._n > self._built:
            slots = np.concatenate([slots, np.arange(self._built, self._n, dtype=np.int32)])
        slots = slots[self._alive[slots]]
        if not len(slots):
            return None
        dist = np.bitwise_count(self._hashes[slots] ^ query)
        best = int(np.argmin(dist))
        if dist[best] > self.max_distance:
            return None
        slot = int(slots[best])
        return int(dist[best]), slot, int(self._payload[slot])


@dataclass
class Entry:
    content_hash: str
    phash: int
    label: str
    centre: int | None = None
    pending: bool = False  # reserved in this run, not stored yet
    settled: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)
    kept: bool = False  # settled as accepted (False once settled: released, the slot is free again)

    async def wait_settled(self, timeout_s: float) -> bool:
        """Wait, without holding a thread, until this reservation is kept or released;
        False when ``timeout_s`` passed first."""
        deadline = time.monotonic() + timeout_s
        delay = 0.005
        while not self.settled.is_set():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)
        return True


class DedupIndex:
    """Every stored image's two hashes (loaded from the manifest) plus this run's
    reservations, behind one lock.

    Stored hashes live in memory only as numbers (64-bit hash + manifest row id), so a
    million images take a few tens of MB; details are read back from SQLite on a match.
    """

    def __init__(self, manifest: Manifest, max_distance: int) -> None:
        self.manifest = manifest
        self.state = manifest.state(STATE)
        self._lock = threading.Lock()
        self._index = HammingIndex(max_distance)
        self._pending: dict[str, tuple[list[int], Entry]] = {}
        self._pending_slots: dict[int, Entry] = {}
        rowids, values, centres, has_centre = load_arrays(self.state)
        self._index.add_many(np.concatenate([values, centres[has_centre]]), np.concatenate([rowids, rowids[has_centre]]))

    def _stored_entry(self, rowid: int) -> Entry:
        row = self.state.query("SELECT content_hash, phash, label FROM {phashes} WHERE rowid=?", (rowid,))[0]
        return Entry(row[0], row[1] & 0xFFFFFFFFFFFFFFFF, row[2])

    def check_and_reserve(
        self, content_hash: str, phash: int, label: str, centre: int | None = None,
        mirror: tuple[int, ...] = (),
    ) -> tuple[str, int, Entry] | None:
        """Return ``(kind, distance, match)`` for a duplicate, else reserve this image and return None.

        ``mirror``: hashes of the horizontally mirrored image, looked up but not stored.
        """
        with self._lock:
            if content_hash in self._pending:
                return "exact", 0, self._pending[content_hash][1]
            rows = self.state.query("SELECT rowid FROM {phashes} WHERE content_hash=?", (content_hash,))
            if rows:
                return "exact", 0, self._stored_entry(rows[0][0])
            queries = (phash, centre, *mirror)
            hits = [hit for value in queries if value is not None and (hit := self._index.nearest(value))]
            if hits:
                distance, slot, rowid = min(hits)
                entry = self._pending_slots.get(slot) or self._stored_entry(rowid)
                return "near", distance, entry
            entry = Entry(content_hash, phash, label, centre, pending=True)
            slots = [self._index.add(value, -1) for value in (phash, centre) if value is not None]
            self._pending[content_hash] = (slots, entry)
            for slot in slots:
                self._pending_slots[slot] = entry
            return None

    def release(self, content_hash: str) -> None:
        with self._lock:
            item = self._pending.pop(content_hash, None)
            for slot in item[0] if item else []:
                self._pending_slots.pop(slot, None)
                self._index.remove(slot)
        if item:
            item[1].settled.set()  # whoever matched it looks again

    def commit(self, content_hash: str, *, persist: bool = True) -> None:
        """The reserved image was accepted. ``persist``: it was stored, so its hashes join the
        manifest's index; otherwise (a chain that stores nothing) they count for this run only,
        so a later run that does store the photo is not told it is a duplicate of itself."""
        with self._lock:
            if not persist:  # stays reserved in memory until the run ends
                if item := self._pending.get(content_hash):
                    item[1].kept = True
                    item[1].settled.set()
                return
            item = self._pending.pop(content_hash, None)
            if not item:
                return
            slots, entry = item
            rowid = add_phash(self.state, entry.content_hash, entry.phash, entry.label, entry.centre)
            for slot in slots:
                self._index.set_payload(slot, rowid)
                self._pending_slots.pop(slot, None)
            entry.pending = False
            entry.kept = True
            entry.settled.set()


class DedupStep(Step):
    """Sets ``event.phash``; rejects ``duplicate``, ``near_duplicate`` or ``label_conflict``."""

    requires = frozenset({"image"})
    provides = frozenset({"phash"})

    name = "dedup"
    Options = DedupOptions
    state = STATE  # the hash index and the label conflicts: dedup's own tables in the manifest

    @classmethod
    def known_biases(cls, options: DedupOptions) -> list[str]:
        return [f"Near-duplicates (pHash distance <= {options.max_distance}) are kept once, under the first "
                "label met; photos met under two labels are recorded as conflicts."]

    @classmethod
    def working_side(cls, options: DedupOptions) -> int | None:  # type: ignore[override]
        return HASH_WORKING_SIDE

    async def open(self) -> None:
        self.index: DedupIndex = self.run.service(
            SERVICE, lambda: DedupIndex(self.run.manifest, self.options.max_distance)
        )

    def _stored_without_phash(self, event: ImageEvent) -> tuple[str, int, Entry] | None:
        """Same bytes accepted by a run whose chain had no dedup (so the index lacks them)."""
        row = self.run.manifest.get_image(event.content_hash)
        if row is None or row["decision"] != "accepted" or row["phash"] or not row["location"]:
            return None
        return "exact", 0, Entry(event.content_hash, 0, row["label"])

    def precompute(self, event: ImageEvent) -> None:
        """The hashes, where the pixels are (a Dask worker): ``process`` then only looks them up."""
        if event.phash is None and event.image is not None:
            annotate_phashes(event)

    async def process(self, event: ImageEvent) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.run.executor, self._hashes, event)  # CPU work: off the loop
        deadline = time.monotonic() + self.options.settle_wait_s
        while True:
            found = await loop.run_in_executor(self.run.executor, self._lookup, event)
            if found is None:
                event.notes["dedup_reserved"] = True
                return
            match = found[2]
            if not match.pending or match.kept:
                break
            # A copy met earlier in this run is still in the chain: its fate decides this one.
            if not await match.wait_settled(deadline - time.monotonic()):
                break  # not settled in time: judged against it as it stands
            if match.kept:
                break
        await loop.run_in_executor(self.run.executor, self._reject, event, *found)  # raises Reject

    def _hashes(self, event: ImageEvent) -> None:
        if event.phash is None:  # set already when the pixels were hashed elsewhere (precompute)
            if event.image is None:
                raise Reject("not_decoded", "dedup needs the decode step before it in the chain")
            annotate_phashes(event)
        elif event.image is not None and event.phash_centre is None:
            event.phash_centre = compute_phash(centre_crop(event.grey))
        if event.image is not None and event.phash_mirror is None:
            event.phash_mirror, event.phash_mirror_centre = compute_mirror_phashes(event.grey)

    def _lookup(self, event: ImageEvent) -> tuple[str, int, Entry] | None:
        """A duplicate ``(kind, distance, match)``, or None after reserving ``event``'s hashes."""
        centre = event.phash_centre
        mirror = tuple(phash_to_int(h) for h in (event.phash_mirror, event.phash_mirror_centre) if h)
        return self._stored_without_phash(event) or self.index.check_and_reserve(
            event.content_hash, phash_to_int(event.phash), event.label, phash_to_int(centre) if centre else None,
            mirror=mirror,
        )

    def _reject(self, event: ImageEvent, kind: str, distance: int, match: Entry) -> None:
        # which image this one duplicates: whoever acts on the rejection (clean) verifies that one first
        event.notes["duplicate_of"] = match.content_hash
        where = "stored" if not match.pending else "accepted earlier in this run"
        if match.label != event.label and self.options.across_labels:
            add_conflict(self.run.state(STATE.namespace), event.content_hash, match.content_hash, event.label, match.label, distance)
            raise Reject(
                "label_conflict",
                f"same photo (pHash distance {distance}) already {where} under label {match.label!r} "
                f"as {match.content_hash[:16]}",
            )
        if kind == "exact":
            raise Reject("duplicate", f"same bytes already {where} ({match.label}/{match.content_hash[:16]})")
        raise Reject(
            "near_duplicate",
            f"pHash distance {distance} <= {self.options.max_distance} to {match.label}/{match.content_hash[:16]} ({where})",
        )


def _index_of(run: Any) -> DedupIndex | None:
    services = getattr(run, "services", None) or {}
    return services.get(SERVICE)


@hookimpl
def selfiescope_steps():
    return [DedupStep]


@hookimpl
def selfiescope_label_changed(manifest, content_hash, old, new):
    set_label(manifest.state(STATE), content_hash, new)


@hookimpl
def selfiescope_linked_images(manifest):
    return conflict_pairs(manifest.state(STATE))


@hookimpl
def selfiescope_image_accepted(event, run):
    index = _index_of(run)
    if index is not None and event.notes.get("dedup_reserved"):
        index.commit(event.content_hash, persist=event.stored)


@hookimpl
def selfiescope_image_rejected(event, run):
    index = _index_of(run)
    if index is not None and event.notes.get("dedup_reserved"):
        index.release(event.content_hash)


@hookimpl
def selfiescope_image_failed(event, run):
    selfiescope_image_rejected(event, run)  # not stored: free the reservation, a rerun retries
