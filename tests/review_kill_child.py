"""Child of test_review_kill: edits a dataset through ReviewData until it is killed.

Before each action it prints ``intent SEQ ACTION IDS`` and after it ``saved SEQ BATCH`` (the
moment the page would show the edit as saved), each line flushed."""

from __future__ import annotations

import json
import random
import sys

from selfiescope.core.plugins import load_registry
from selfiescope.core.settings import settings_from_dict
from selfiescope.review.data import Filters, ReviewData

K = 5


def main(root: str, seed: int) -> None:
    rng = random.Random(seed)
    data = ReviewData(settings_from_dict({"storage": {"root": root}}), load_registry())
    print("ready", flush=True)
    for seq in range(10_000):
        kind = rng.choice(["relabel", "exclude", "include", "reviewed", "unreviewed", "undo"])
        if kind == "undo":
            print(f"intent {seq} undo []", flush=True)
            result = data.undo()
            print(f"saved {seq} {result.batch}", flush=True)
            continue
        value = None
        if kind == "relabel":
            source, value = rng.sample(["selfie", "portrait"], 2)
            f = Filters(label=(source,))
        else:
            f = {"exclude": Filters(excluded=False), "include": Filters(excluded=True),
                 "reviewed": Filters(reviewed=False), "unreviewed": Filters(reviewed=True)}[kind]
        tiles = data.page(f, "newest", None, 50).tiles
        if len(tiles) < K:
            continue
        ids = [t.id for t in rng.sample(tiles, K)]
        print(f"intent {seq} {kind} {json.dumps(ids)}", flush=True)
        result = data.apply(kind, ids, value)
        print(f"saved {seq} {result.batch}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
