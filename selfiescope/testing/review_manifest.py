"""A synthetic dataset for the review app's tests and benchmark: manifest rows written directly.

Images get a random label, job, decision (with a rejection by a built-in or a third-party
step), face detector, face area, pHash (some near-duplicate pairs) and first-seen time. With
``files``, accepted images also get a tiny JPEG under ``<root>/<label>/<id>.jpg`` (the files
backend's layout), whose sha256 is the row's content hash.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path

import numpy as np

from ..core.manifest import Manifest

LABELS = ("selfie", "portrait")
JOBS = ("selfie", "portrait", "mirrorselfie", "headshot")
REASONS = (("dedup", "near_duplicate", "a copy of a stored image"), ("decode", "too_small", "under 200 px"),
           ("face_area", "no_face", "no frontal face"), ("blurcheck", "blurry", "variance of the Laplacian 12"))
DETECTORS = ("haar", "dnn", None)


def tiny_jpeg(seed: int, side: int = 24) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(out, "JPEG", quality=70)
    return out.getvalue()


def build(root: Path, n: int, *, seed: int = 0, files: bool = False, rejected_share: float = 0.2) -> list[str]:
    """Write ``n`` images into ``<root>/manifest.sqlite``; returns their content hashes in row order."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    manifest = Manifest.at_root(root)
    now = time.time()
    images, rejections, phashes, hashes = [], [], [], []
    kept: list[tuple[str, str]] = []
    base = rng.integers(0, 2**63, n, dtype=np.int64)
    for i in range(n):
        label = LABELS[int(rng.integers(0, 2))]
        rejected = rng.random() < rejected_share
        data = tiny_jpeg(seed * 1_000_003 + i) if files and not rejected else f"{seed}:{i}".encode()
        content_hash = hashlib.sha256(data).hexdigest()
        image_id = content_hash[:16]
        phash = int(base[i]) if i % 50 else int(base[i - 1]) ^ 0b101 if i else int(base[i])  # every 50th: a near copy
        area = None if rejected and rng.random() < 0.5 else float(rng.uniform(0.01, 0.6))
        step, code, reason = REASONS[int(rng.integers(0, len(REASONS)))] if rejected else (None, None, None)
        if code == "near_duplicate" and kept:  # named the way dedup names the copy it kept
            reason = f"pHash distance 3 <= 8 to {kept[-1][1]}/{kept[-1][0][:16]} (stored)"
        location = None
        if not rejected:
            kept.append((content_hash, label))
            location = f"{label}/{image_id}.jpg"
            if files:
                (root / label).mkdir(exist_ok=True)
                (root / location).write_bytes(data)
        detector = DETECTORS[int(rng.integers(0, len(DETECTORS)))]
        images.append((content_hash, image_id, "instagram", JOBS[int(rng.integers(0, len(JOBS)))], f"P{i}", label,
                       f"{phash & 0xFFFFFFFFFFFFFFFF:016x}", "jpeg", 24, 24, len(data),
                       json.dumps([2, 2, 10, 10]) if area else None, area, 1 if area else 0, detector,
                       "rejected" if rejected else "accepted", step, code, reason, location,
                       now - n + i, now - n + i))
        if rejected:
            rejections.append((content_hash, "instagram", images[-1][3], f"P{i}", label, step, code, reason, now))
        else:
            phashes.append((content_hash, phash, label, None))
        hashes.append(content_hash)
    manifest.executemany(
        "INSERT OR REPLACE INTO images(content_hash, id, source, job, post_id, label, phash, format, width, height,"
        " size, face_box, face_area, n_faces, face_detector, decision, rejected_by, reject_code, reason, location,"
        " first_seen, updated) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", images)
    manifest.executemany(
        "INSERT INTO rejections(content_hash, source, job, post_id, label, rejected_by, reject_code, reason, at)"
        " VALUES (?,?,?,?,?,?,?,?,?)", rejections)
    manifest.add_phashes(phashes)
    manifest.close()
    return hashes


def write_model(folder: Path, root: Path, probabilities: dict[str, tuple[str, float]], positive: str = "selfie",
                negative: str = "portrait") -> None:
    """A model folder with the files the review app reads (metrics.json, predictions.csv), registered."""
    import csv

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps({"labels": {"positive": positive, "negative": negative}}))
    with (folder / "predictions.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["content_hash", "label", "job", "location", "group", "oof_probability",
                         "baseline_probability", "calibrated_oof_probability"])
        for content_hash, (label, p) in probabilities.items():
            writer.writerow([content_hash, label, "", "", 0, f"{p:.6f}", "0.5", f"{p:.6f}"])
    manifest = Manifest.at_root(root)
    manifest.execute("INSERT OR REPLACE INTO models(path, pipeline, trained, images) VALUES (?,?,?,?)",
                     (str(folder.resolve()), "train", time.time(), len(probabilities)))
    manifest.close()
