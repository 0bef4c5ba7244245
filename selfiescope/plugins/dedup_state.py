"""What dedup keeps in the manifest, under its namespace (``dedup__phashes``, ``dedup__conflicts``).

``phashes``: each stored image's perceptual hashes (whole picture and centre), the persistent
index. ``conflicts``: photos met under two labels. Both name content hashes, so ``forget``
removes their rows with the image. Manifests written before plugins kept their own state
had these as core tables (``phashes``, ``conflicts``): the first migration moves their rows
here and drops them.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..api import PluginState, StateHandle, StateTable, declare
from ..api.dataset import phash_to_int, signed64

NAMESPACE = "dedup"
_LEGACY_PHASH_COLUMNS = ("content_hash", "phash", "label", "added", "centre")
_LEGACY_CONFLICT_COLUMNS = ("content_hash", "other_hash", "label", "other_label", "distance", "at")


def adopt_core_tables(state: StateHandle) -> None:
    """Move the rows of an older manifest's core ``phashes`` and ``conflicts`` tables here."""
    for legacy, columns in (("phashes", _LEGACY_PHASH_COLUMNS), ("conflicts", _LEGACY_CONFLICT_COLUMNS)):
        have = state.columns(legacy, adopted=True)
        if not have:
            continue
        kept = ", ".join(c for c in columns if c in have)
        verb = "INSERT OR IGNORE" if legacy == "phashes" else "INSERT"
        state.run_script(f"{verb} INTO {{{legacy}}}({kept}) SELECT {kept} FROM {legacy} ORDER BY rowid;"
                         f" DROP TABLE {legacy}")


def card_facts(state: StateHandle) -> dict[str, Any]:
    if not state.present:  # a read-only manifest from before the namespace: its core table, if any
        rows = state.query_adopted("SELECT COUNT(*) FROM conflicts") if state.exists("conflicts", adopted=True) else []
        return {"conflicts": int(rows[0][0]) if rows else 0}
    rows = state.query("SELECT COUNT(*) FROM {conflicts}")
    return {"conflicts": int(rows[0][0]) if rows else 0}


STATE = declare(PluginState(
    namespace=NAMESPACE,
    tables=(
        StateTable("phashes", "CREATE TABLE {name} (content_hash TEXT PRIMARY KEY, phash INTEGER NOT NULL,"
                   " label TEXT, added REAL, centre INTEGER)", content_hash_columns=("content_hash",)),
        StateTable("conflicts", "CREATE TABLE {name} (content_hash TEXT, other_hash TEXT, label TEXT,"
                   " other_label TEXT, distance INTEGER, at REAL);"
                   " CREATE INDEX {name}_hash ON {name}(content_hash);"
                   " CREATE INDEX {name}_other ON {name}(other_hash)",
                   content_hash_columns=("content_hash", "other_hash")),
    ),
    migrations=(adopt_core_tables,),
    adopts=("phashes", "conflicts"),
    facts=card_facts,
))


def add_phash(state: StateHandle, content_hash: str, phash: int, label: str, centre: int | None = None) -> int:
    """Add a stored image's hashes (whole, centre); returns its row id."""
    with state.transaction():
        state.execute("INSERT OR IGNORE INTO {phashes}(content_hash, phash, label, added, centre) VALUES (?,?,?,?,?)",
                      (content_hash, signed64(phash), label, time.time(), None if centre is None else signed64(centre)))
        return int(state.query("SELECT rowid FROM {phashes} WHERE content_hash=?", (content_hash,))[0][0])


def add_phashes(state: StateHandle, rows: list[tuple[str, int, str, int | None]]) -> None:
    now = time.time()
    state.executemany(
        "INSERT OR IGNORE INTO {phashes}(content_hash, phash, label, added, centre) VALUES (?,?,?,?,?)",
        [(h, signed64(p), label, now, None if c is None else signed64(c)) for h, p, label, c in rows],
    )


def _catch_up(state: StateHandle) -> None:
    """Make the index agree with the images the manifest says are stored: drop hashes of
    images a chain without storage accepted (they would make the photo a duplicate of itself
    forever), add those of stored images that lack them (a kill between recording an image
    and indexing it), with the whole-image hash only."""
    manifest = state.manifest
    unstored = manifest.accepted_unstored()
    for i in range(0, len(unstored), 500):
        chunk = unstored[i:i + 500]
        state.execute(f"DELETE FROM {{phashes}} WHERE content_hash IN ({','.join('?' * len(chunk))})", tuple(chunk))
    have = int(state.query("SELECT COUNT(*) FROM {phashes}")[0][0])
    if have == manifest.stored_phashes(count_only=True):
        return  # every stored image's hash is indexed already (the common case: no set to build)
    indexed = {r[0] for r in state.query("SELECT content_hash FROM {phashes}", plain=True)}
    missing = [(h, phash_to_int(p), label, None) for h, p, label in manifest.stored_phashes() if h not in indexed]
    if missing:
        add_phashes(state, missing)


def load_arrays(state: StateHandle) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(rowids, phashes, centre phashes, has_centre)`` of every stored image."""
    if not state.manifest.readonly:
        _catch_up(state)
    rows = state.query("SELECT rowid, phash, centre IS NOT NULL, IFNULL(centre, 0) FROM {phashes}", plain=True)
    data = np.array(rows, dtype=np.int64).reshape(-1, 4)
    return data[:, 0].copy(), data[:, 1].copy().view(np.uint64), data[:, 3].copy().view(np.uint64), data[:, 2] == 1


def add_conflict(state: StateHandle, content_hash: str, other_hash: str, label: str, other_label: str,
                 distance: int) -> None:
    """Record that one photo came under two labels (once per pair and label)."""
    with state.transaction():
        if not state.query("SELECT 1 FROM {conflicts} WHERE content_hash=? AND other_hash=? AND label=?",
                           (content_hash, other_hash, label)):
            state.execute("INSERT INTO {conflicts}(content_hash, other_hash, label, other_label, distance, at)"
                          " VALUES (?,?,?,?,?,?)", (content_hash, other_hash, label, other_label, distance, time.time()))


def set_label(state: StateHandle, content_hash: str, label: str) -> None:
    """Keep the index's copy of an image's label equal to its effective label (in the
    caller's transaction: a review edit)."""
    state.execute("UPDATE {phashes} SET label=? WHERE content_hash=?", (label, content_hash))


def conflict_pairs(state: StateHandle) -> list[tuple[str, str]]:
    """The pairs of content hashes met under two labels (an older manifest's read-only open:
    its legacy table)."""
    if not state.present:
        if not state.exists("conflicts", adopted=True):
            return []
        return [(a, b) for a, b in state.query_adopted("SELECT content_hash, other_hash FROM conflicts")]
    return [(a, b) for a, b in state.query("SELECT content_hash, other_hash FROM {conflicts}", plain=True)]
