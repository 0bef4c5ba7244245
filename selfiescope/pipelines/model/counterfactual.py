"""The frame counterfactual: does the model's answer follow the picture's frame?

Three frames are checked, each on a sample of every label moved to the other label's typical
value (the median over its images' headers):

- ``aspect``: width / height. A picture wider than the target is cropped around its face, a
  narrower one is padded left and right with black, as a screenshot or a letterbox would be.
- ``size``: the pixel count. The picture is resampled (its aspect kept) to as many pixels as
  the other label's typical picture has, as a re-upload or a thumbnail would be.
- ``placement``: where the face sits in the frame (its centre, as shares of the width and the
  height). The picture is cropped so the face sits where the other label's typically does, as
  far as cropping alone can move it (a selfie's face near the top edge, a portrait's centred).

Each changed picture goes through what ``predict`` would do with such a file (decode and face
detection again, then normalize and the feature groups) and is scored by the final model; so
does the unchanged picture, and a decision that differs between the two is a *flip*, caused by
the frame alone. Detection runs again because a detector's boxes follow the pixel grid: a face
found in a smaller copy can get a box of another relative size. A model that reads
selfie-ness from the photo flips rarely; one that reads the frame flips often, and the
training report, MODEL.md and the CLI warn when more than :data:`FLIP_WARN` of a label flips. A check whose two
labels share their typical frame (within :data:`SAME_FRAME`) is skipped: there is nothing to move.
"""

from __future__ import annotations

import asyncio
import math
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any, Callable

import cv2
import numpy as np

from .normalize import DETAIL

if TYPE_CHECKING:  # pragma: no cover
    from ...core.app import App
    from ...core.settings import TrainPipeline
    from ...core.events import ImageEvent
    from .dataset import FeatureTable
    from ..dataset_care.stored import StoredReader

FLIP_WARN = 0.2  # a share of a label's sample whose decision changes with the frame alone
SAMPLE_PER_LABEL = 24  # pictures changed per label and check (each costs one feature extraction)
SAME_FRAME = 0.02  # typical aspects (or linear sizes) this close are one frame: the check is skipped
CHECKS = {"aspect": "aspect ratio", "size": "pixel size", "placement": "face position"}
SAME_PLACE = 0.03  # typical face centres this close (as shares of the frame) are one placement
TURNED_AWAY = "turned away"  # predict's chain rejected the changed picture (no face found, too small)

Face = dict[str, Any]


def reshape_to_aspect(image: np.ndarray, face: Face, aspect: float) -> tuple[np.ndarray, Face]:
    """``image`` with width / height ``aspect``: cropped around the face when wider, padded with
    black left and right when narrower; the face box follows (clipped to the new frame)."""
    height, width = image.shape[:2]
    target = max(1, int(round(height * aspect)))
    box = face.get("box")
    if target <= width:
        cx = box[0] + box[2] / 2 if box else width / 2
        x = int(round(min(max(cx - target / 2, 0), width - target)))
        out, shift = np.ascontiguousarray(image[:, x:x + target]), -x
    else:
        left = (target - width) // 2
        out = np.zeros((height, target, 3), dtype=image.dtype)
        out[:, left:left + width] = image
        shift = left
    moved = {**face}
    if box:
        x0, x1 = max(0, box[0] + shift), min(out.shape[1], box[0] + box[2] + shift)
        moved["box"] = [x0, box[1], x1 - x0, box[3]] if x1 > x0 else None
        moved["face_area"] = (x1 - x0) * box[3] / float(out.shape[0] * out.shape[1]) if x1 > x0 else 0.0
    return out, moved


def resize_by(image: np.ndarray, face: Face, factor: float) -> tuple[np.ndarray, Face]:
    """``image`` scaled by ``factor`` on both sides (area averaging down, bicubic up); the face
    box scales with it and keeps its share of the picture."""
    height, width = image.shape[:2]
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    out = cv2.resize(image, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC)
    moved = {**face}
    if face.get("box"):
        moved["box"] = [round(v * factor) for v in face["box"]]
    return out, moved


def _interval_placing(lo: float, hi: float, size: int, target: float) -> tuple[int, int]:
    """[start, end) of [0, size) that keeps [lo, hi) and puts its centre at ``target`` of the
    interval's length, as near as cutting one end can."""
    centre = (lo + hi) / 2
    if target < centre / size:  # nearer the start: cut from the start, (centre - s) / (size - s) = target
        start = (centre - target * size) / (1 - target)
        return int(round(min(max(0.0, start), lo))), size
    end = centre / target if target > 0 else size  # nearer the end: cut from the end, centre / e = target
    return 0, int(round(max(min(float(size), end), hi)))


def place_face(image: np.ndarray, face: Face, target: tuple[float, float]) -> tuple[np.ndarray, Face]:
    """``image`` cropped so the face's centre sits at ``target`` (shares of the new width and
    height), as near as cropping alone can; the box follows. ValueError without a face box."""
    box = face.get("box")
    if not box:
        raise ValueError("no face to move")
    height, width = image.shape[:2]
    x0, x1 = _interval_placing(box[0], box[0] + box[2], width, target[0])
    y0, y1 = _interval_placing(box[1], box[1] + box[3], height, target[1])
    out = np.ascontiguousarray(image[y0:y1, x0:x1])
    moved_box = [box[0] - x0, box[1] - y0, box[2], box[3]]
    return out, {**face, "box": moved_box, "face_area": box[2] * box[3] / float(out.shape[0] * out.shape[1])}


def typical_frames(table: "FeatureTable", labels: list[str]) -> dict[str, dict[str, Any]]:
    """Per label: the median width / height (``aspect``), the median linear size, the square
    root of the pixel count (``size``), from the images' header facts, and the median face
    centre as shares of the width and height (``placement``, where the images have a face box)."""
    out: dict[str, dict[str, Any]] = {}
    for label in labels:
        frames = [(f.width / f.height, math.sqrt(f.width * f.height)) for f, r in zip(table.facts, table.rows)
                  if r.label == label and f.width and f.height and math.isfinite(f.width / f.height)]
        if frames:
            aspects, sizes = zip(*frames)
            out[label] = {"aspect": float(np.median(aspects)), "size": float(np.median(sizes))}
            centres = [((r.box[0] + r.box[2] / 2) / f.width, (r.box[1] + r.box[3] / 2) / f.height)
                       for f, r in zip(table.facts, table.rows)
                       if r.label == label and r.box and f.width and f.height and math.isfinite(f.width * f.height)]
            if centres:
                out[label]["placement"] = tuple(float(v) for v in np.median(np.array(centres), axis=0))
    return out


def _same(check: str, a: Any, b: Any) -> bool:
    if check == "placement":
        return a is None or b is None or max(abs(a[0] - b[0]), abs(a[1] - b[1])) <= SAME_PLACE
    return abs(a - b) <= SAME_FRAME * max(a, b)


def _changed(check: str, image: np.ndarray, face: Face, target: Any, file_size: float) -> tuple[np.ndarray, Face]:
    """``image`` moved to the ``target`` aspect, linear size or face placement; ``file_size`` is
    the file's own linear size (a decode step may have worked on a smaller copy: the picture
    scales by the ratio)."""
    if check == "aspect":
        return reshape_to_aspect(image, face, target)
    if check == "placement":
        return place_face(image, face, target)
    return resize_by(image, face, target / file_size)


class PredictChain:
    """The steps ``predict`` runs before the features (decode, face detection), run on a changed
    picture's bytes: a detector finds boxes on a grid of the picture's own pixels, so a face's
    box, and every feature measured from it, can follow the pixel size; scaling the stored box
    would hide that. ``with PredictChain(app, names) as chain: chain.run(png_bytes)``."""

    def __init__(self, app: "App", names: list[str]) -> None:
        self.app, self.names = app, names

    def __enter__(self) -> "PredictChain":
        from concurrent.futures import ThreadPoolExecutor

        from ...core.manifest import Manifest

        self.loop = asyncio.new_event_loop()
        self.manifest = Manifest(":memory:")  # the steps get a manifest; nothing is recorded
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="selfiescope-counterfactual")
        self.context = self.app.run_context("counterfactual", None, self.manifest, executor=self.executor)
        self.steps: list[Any] = []
        try:
            for name in self.names:
                step = self.context.component("steps", name)
                self.loop.run_until_complete(step.open())
                self.steps.append(step)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def run(self, data: bytes) -> "ImageEvent":
        from ...core.engine import run_chain
        from ...core.events import ImageEvent, Origin

        event = ImageEvent(origin=Origin(source="counterfactual"), label="", data=data)
        return self.loop.run_until_complete(run_chain(event, self.steps, self.context))

    def __exit__(self, *exc: object) -> None:
        try:
            for step in reversed(self.steps):
                self.loop.run_until_complete(step.close())
        finally:
            self.executor.shutdown(wait=True)
            self.manifest.close()
            self.loop.close()


def png_bytes(image: np.ndarray) -> bytes:
    """Lossless: the changed picture differs from the stored one by its frame only."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(image[:, :, ::-1]))
    if not ok:
        raise ValueError("the changed picture could not be encoded")
    return buf.tobytes()


def shape_flips(
    app: "App", pipeline: "TrainPipeline", table: "FeatureTable", reader: "StoredReader",
    predict: Callable[[np.ndarray], np.ndarray], threshold: float, sample: int = SAMPLE_PER_LABEL,
) -> dict[str, Any]:
    """``{"per_label": {label: aspect check}, "per_label_size": {label: size check}, "warn": bool,
    "warn_checks": [...]}``, each check ``{"to_aspect" | "to_size", "checked", "flipped", "rate",
    "no_face"}`` or ``{"skipped": why}``; ``{"skipped": why}`` where nothing can run. The table's
    own decoding step, extractors and predict chain re-score the changed photos, read by ``reader``."""
    from ...core.events import Decision
    from .dataset import event_face_dict, extract_features
    from .feature_tasks import chain_faces, decode_with_step
    from .normalize import Recipe, normalize_image

    labels = list(pipeline.labels)
    frames = typical_frames(table, labels)
    if len(frames) < 2:
        return {"skipped": "the images' sizes could not be read"}
    step_cls = app.registry.steps[table.image_step]
    step = step_cls(step_cls.Options.model_validate(app.settings.component_options(table.image_step)), None)
    extractors = table.extractors
    chain_names = table.predict_steps
    rng = np.random.default_rng(pipeline.seed)
    results: dict[str, dict[str, Any]] = {check: {} for check in CHECKS}
    def score(chain: PredictChain, image: np.ndarray, exif: bytes | None) -> bool | str | None:
        """The final model's decision on ``image`` as ``predict`` would reach it from a file holding
        it: TURNED_AWAY when the chain rejects it, None when a step or a feature group fails."""
        try:
            seen = chain.run(png_bytes(image))
        except Exception:  # noqa: BLE001 - a step's failure leaves this picture out
            return None
        if seen.decision is Decision.FAILED:
            return None
        if seen.image is None or seen.decision is Decision.REJECTED:
            return TURNED_AWAY
        image, face = seen.image, event_face_dict(seen, exif)  # the metadata stays the file's
        if pipeline.normalize:
            image, face = normalize_image(image, face, Recipe(pipeline.normalize_side, pipeline.normalize_quality),
                                          find_faces=chain_faces(chain.steps))
        try:
            values = extract_features(image, face, extractors)
        except Exception:  # noqa: BLE001
            return None
        x = np.array([[values.get(c, math.nan) for c in table.columns]], dtype=np.float64)
        return bool(predict(x)[0] >= threshold)

    with ExitStack() as stack:
        try:
            chain = stack.enter_context(PredictChain(app, chain_names))
        except Exception as exc:  # noqa: BLE001
            return {"skipped": f"predict's chain ({', '.join(chain_names)}) could not be opened ({type(exc).__name__})"}
        for label, other in ((labels[0], labels[1]), (labels[1], labels[0])):
            todo = [c for c in CHECKS if not _same(c, frames[label].get(c), frames[other].get(c))]
            for check in CHECKS:
                if check not in todo:
                    results[check][label] = {"skipped": f"both labels have the same typical {CHECKS[check]}"
                                             if frames[label].get(check) is not None and frames[other].get(check)
                                             is not None else "no face boxes to place"}
            idx = [i for i, r in enumerate(table.rows) if r.label == label]
            chosen = rng.choice(idx, size=min(sample, len(idx)), replace=False) if idx and todo else []
            counts = {check: [0, 0, 0] for check in todo}  # checked, flipped, face lost
            for i in chosen:
                row, facts = table.rows[int(i)], table.facts[int(i)]
                try:
                    event = decode_with_step(step, reader.read(row.stored))
                except Exception:  # noqa: BLE001 - an unreadable file is left out of the sample
                    continue
                # the control: the unchanged picture through the same path, so only the frame differs
                before = score(chain, event.image, event.exif)
                if not isinstance(before, bool):
                    continue
                decoded = math.sqrt(event.image.shape[0] * event.image.shape[1])
                known = math.isfinite(facts.width * facts.height) and facts.width * facts.height > 0
                file_size = math.sqrt(facts.width * facts.height) if known else decoded
                for check in todo:
                    face = {"box": row.box, "face_area": row.face_area, "n_faces": row.n_faces, "exif": event.exif}
                    try:
                        image, _ = _changed(check, event.image, face, frames[other][check], file_size)
                    except Exception:  # noqa: BLE001 - a picture the change breaks is left out
                        continue
                    after = score(chain, image, event.exif)
                    if after == TURNED_AWAY:
                        counts[check][2] += 1  # predict would answer no_face or error (too small, no face)
                    elif isinstance(after, bool):
                        counts[check][0] += 1
                        counts[check][1] += int(before != after)
            for check, (checked, flipped, lost) in counts.items():
                target = frames[other][check]
                results[check][label] = {f"to_{check}": [round(v, 3) for v in target] if check == "placement"
                                         else round(target, 3 if check == "aspect" else 1),
                                         "checked": checked, "flipped": flipped, "no_face": lost,
                                         "rate": flipped / checked if checked else None}
    warn_checks = [check for check in CHECKS
                   if any((v.get("rate") or 0) > FLIP_WARN for v in results[check].values())]
    return {"per_label": results["aspect"], "per_label_size": results["size"],
            "per_label_placement": results["placement"],
            "aspects": {k: round(v["aspect"], 3) for k, v in frames.items()},
            "placements": {k: [round(c, 3) for c in v["placement"]] for k, v in frames.items() if "placement" in v},
            "sizes": {k: round(v["size"], 1) for k, v in frames.items()},
            "warn": bool(warn_checks), "warn_checks": warn_checks, "threshold": FLIP_WARN,
            "normalized": bool(pipeline.normalize)}


def _moved(check: str, v: dict[str, Any]) -> str:
    if check == "placement":
        x, y = v["to_placement"]
        return f"cropped so the face sits {x:.0%} across and {y:.0%} down"
    return f"reshaped to aspect {v['to_aspect']}" if check == "aspect" else \
        f"resampled to {v['to_size'] ** 2 / 1e6:.2f} megapixels"


def _checks(result: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    return {"aspect": result.get("per_label") or {}, "size": result.get("per_label_size") or {},
            "placement": result.get("per_label_placement") or {}}


def flip_warnings(result: dict[str, Any]) -> list[str]:
    out = []
    for check in result.get("warn_checks") or (["aspect"] if result.get("warn") else []):
        parts = ", ".join(f"{label} {v['flipped']}/{v['checked']} ({_moved(check, v)})"
                          for label, v in _checks(result)[check].items() if v.get("checked"))
        advice = ("normalize = true cannot remove it: the square stays inside the frame, so a face near an edge "
                  "sits near the square's edge too; collect both labels framed alike"
                  if result.get("normalized") and check == "placement" else
                  f"normalize = true did not remove it: pictures under about {DETAIL * 3 // 2} pixels keep their "
                  f"blur, and what the square crop leaves out differs with the frame; collect both labels with the "
                  f"same {CHECKS[check]}s"
                  if result.get("normalized") else
                  f"collect both labels with the same {CHECKS[check]}s, or train with normalize = true (a square "
                  f"crop around the face, averaged to one level of detail) and compare")
        out.append(f"The model's answer follows the picture's frame: changing only the {CHECKS[check]} of photos to "
                   f"the other label's typical one changed the decision for {parts}. It has learnt the classes' "
                   f"{CHECKS[check]}s; {advice}.")
    return out


def flip_lines(result: dict[str, Any] | None) -> list[str]:
    """Plain lines for MODEL.md and the report: per check and label, how many changed photos flipped."""
    if not result:
        return []
    if "skipped" in result:
        return [f"Frame counterfactual not run: {result['skipped']}."]
    lines = []
    for check, per_label in _checks(result).items():
        for label, v in per_label.items():
            if "skipped" in v:
                lines.append(f"{label}, {CHECKS[check]}: not checked ({v['skipped']})")
            elif v["checked"]:
                lost = f"; {v['no_face']} more turned away by predict's chain" if v.get("no_face") else ""
                lines.append(f"{label}: {v['flipped']} of {v['checked']} photos {_moved(check, v)} "
                             f"changed decision ({v['rate']:.0%}{lost})")
            elif v.get("no_face"):  # predict would answer no_face or rejected for every one of them
                lines.append(f"{label}, {CHECKS[check]}: not scored: predict's chain turned away all {v['no_face']} "
                             f"photos {_moved(check, v)} (no face found, or too small a share of the picture), "
                             "so predict gives no label for such photos")
    return lines
