"""``[pipelines.NAME] normalize = true``: one shape, one level of detail, one size and one JPEG quality.

When each label comes from its own camera or site, size, aspect ratio and compression alone
can tell the classes apart (see :mod:`.baselines`). Normalizing (a :class:`Recipe`) takes a
square of :data:`FACE_CONTEXT` face sides around the face, placed so the face is as near its
centre as the frame allows (the largest square when the frame is smaller, or without a face),
resamples it to :data:`DETAIL` pixels a side (area averaging) and blurs it by
:data:`DETAIL_BLUR` of those pixels, then scales it to ``side`` x ``side`` and re-encodes it at
one JPEG quality before features; the features never see the file's metadata.

A square crop, not a letterbox: padding would tell where the frame's edges are, and so its
aspect ratio. For the same reason bars a picture already has (a letterbox, a screenshot's or
an upload's padding: rows or columns of one colour at an edge) are trimmed first
(:func:`content_bounds`), so a padded copy gives the square its unpadded original gives. A
square sized by the face, not the largest one: the largest square's side is the frame's
shorter side, so the face's share of it followed the frame (a landscape portrait cropped to
4:5 got a bigger face, and was called a selfie). One level of detail, not only one size: a small square scaled up to ``side`` is
blurrier than a large one scaled down, and sharpness then tells the source's pixel count (two
sets of the same photos, one halved, were told apart with AUC 1.0 by sharpness alone). Area
averaging to 128 pixels alone still leaves differences of up to 2x in sharpness between a
picture and a smaller copy (what lies just above the new resolution leaks through the box
filter, more or less depending on the factor); the Gaussian removes that band, and the
sharpness of the two then differs by at most a few percent (tests/test_shape_free.py) as long as
both had comfortably more than DETAIL pixels (1.5x). A smaller source keeps some of its blur.

Every feature is then measured in the square: ``image.aspect`` and ``image.megapixels`` are
constants, and the face's size and position (geometry, landmarks' ``iod_frac``, ``chin_y_img``)
are relative to the square's side, not to the frame's shape. The face is found again in the
square (:data:`FACE`), by the chain's own face step run on the square's JPEG bytes and pixels
(:func:`square_event`; the decoding step's decisions, such as ``min_side``, are not asked
again about a picture normalize made): a detector's boxes follow the pixel grid (HOG boxed a face in a
halved copy up to 20% larger relative to the picture, and geometry followed), and every square
is on one grid. Where the square shows no face (the crop cut it), the box collection found is
moved into it. What an earlier compression destroyed stays lost, and what the crop leaves out
of a wide picture is not seen. Training and prediction both call :func:`normalize_image`, so
a normalized model sees new photos the way it was trained; a model's ``schema.json["normalize"]``
names ``shape``, ``detail`` and ``face``, and one saved without them is fed as it was trained
(the whole frame; no detail step; the collection's box).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from PIL import Image

DETAIL = 128  # pixels across the square that every source is resampled to (see the module's text)
DETAIL_BLUR = 1.0  # Gaussian sigma, in those pixels: measured, the smallest that evens out the sources' sizes
FACE = "square"  # schema.json normalize.face: the face is detected again in the square ("frame": moved into it)
METADATA = "dropped"  # schema.json normalize.metadata: the file's EXIF is not seen ("kept": it is)
BORDERS = "trimmed"  # schema.json normalize.borders: one-colour bars at the edges are cut off ("kept")
CROP = "face"  # schema.json normalize.crop: a square of FACE_CONTEXT face sides ("largest": the largest square)
FACE_CONTEXT = 2.0  # the square's side in face sides: the face, hair and shoulders, whatever the frame
BAR_TOLERANCE = 12  # grey levels from the edge's colour that a bar's pixels stay within (JPEG noise)
BAR_OUTLIERS = 0.01  # share of a bar row's (or column's) pixels allowed further off (a logo, a speck)
BAR_BLOCK = 32  # rows (columns) compared at once, from each edge inwards

if TYPE_CHECKING:  # pragma: no cover
    from ...core.components import Step
    from ...core.events import FaceBox, ImageEvent

# The chain's face detection on a square (its JPEG bytes and their pixels): its boxes (None or empty: none found).
FindFaces = Callable[[bytes, np.ndarray], "Sequence[FaceBox] | None"]


def square_crop(width: int, height: int, box: list[int] | None, side: int | None = None) -> tuple[int, int, int]:
    """(x, y, side) of a square of ``side`` (default: the largest) in a ``width`` x ``height``
    picture, as centred on the face box as the frame allows (centred in the picture without one)."""
    side = min(width, height) if side is None else min(side, width, height)
    cx, cy = (box[0] + box[2] / 2, box[1] + box[3] / 2) if box else (width / 2, height / 2)
    x = int(round(min(max(cx - side / 2, 0), width - side)))
    y = int(round(min(max(cy - side / 2, 0), height - side)))
    return x, y, side


@dataclass(frozen=True)
class Recipe:
    """How pictures are normalized: training's is saved in the model's
    ``schema.json["normalize"]``; a model saved before a step was added names none of that
    step's field, and :meth:`saved` feeds it as it was trained."""

    side: int
    jpeg_quality: int
    shape: str = "square"  # "frame": the whole picture, its longer side ``side``
    detail: int | None = DETAIL  # None: no band limit
    face: str = FACE  # "frame": the collection's box moved into the square
    metadata: str = METADATA  # "kept": features see the file's EXIF
    borders: str = BORDERS  # "kept": bars are not trimmed
    crop: str = CROP  # "largest": the largest square in the frame

    @classmethod
    def saved(cls, schema: dict[str, Any]) -> "Recipe":
        return cls(int(schema["side"]), int(schema["jpeg_quality"]), schema.get("shape", "frame"),
                   schema.get("detail"), schema.get("face", "frame"), schema.get("metadata", "kept"),
                   schema.get("borders", "kept"), schema.get("crop", "largest"))

    def as_schema(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def square(self) -> bool:
        return self.shape == "square"

    @property
    def finds_face(self) -> bool:
        """Whether the face is detected again in the square (else the collection's box is moved)."""
        return self.square and self.face == FACE

    def cache_suffix(self) -> str:
        """Added to a feature cache version: normalized features are other features."""
        # sq: the square crop; d/g: the detail step; f: the face found again in the square; m: no
        # metadata; t: bars trimmed; c: the face's square
        return (f"+norm{self.side}q{self.jpeg_quality}" + ("sq" if self.square else "")
                + (f"d{self.detail}g{DETAIL_BLUR}" if self.detail else "") + ("f" if self.face == FACE else "")
                + ("m" if self.metadata == METADATA else "") + ("t" if self.borders == BORDERS else "")
                + (f"c{FACE_CONTEXT:g}" if self.crop == CROP else ""))


def content_bounds(image_rgb: np.ndarray, box: list[int] | None) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the picture without the bars along its edges: the rows (columns)
    from each edge inwards whose pixels, but :data:`BAR_OUTLIERS` of them, are within
    :data:`BAR_TOLERANCE` of the edge's own colour. Never into the face box, never all of it."""
    grey = image_rgb if image_rgb.ndim == 2 else cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY)
    height, width = grey.shape

    def bar(lines: np.ndarray) -> int:  # lines from the edge inwards, one per row (column)
        colour = int(np.median(lines[0]))
        for start in range(0, len(lines), BAR_BLOCK):  # a block at a time: most pictures stop in the first
            block = lines[start:start + BAR_BLOCK].astype(np.int16)
            uniform = (np.abs(block - colour) > BAR_TOLERANCE).mean(axis=1) <= BAR_OUTLIERS
            if not uniform.all():
                return start + int(np.argmin(uniform))
        return len(lines)

    top, bottom = bar(grey), bar(grey[::-1])
    left, right = bar(grey.T), bar(grey.T[::-1])
    if top + bottom >= height or left + right >= width:  # one colour all over: nothing to tell apart
        return 0, 0, width, height
    if box:  # the face is content, whatever its colours
        top, left = min(top, max(box[1], 0)), min(left, max(box[0], 0))
        bottom = min(bottom, max(height - box[1] - box[3], 0))
        right = min(right, max(width - box[0] - box[2], 0))
    return left, top, width - right, height - bottom


def band_limit(part: np.ndarray, detail: int) -> np.ndarray:
    """``part`` resampled to ``detail`` pixels on its longer side (exact area averaging down,
    bicubic up), then blurred by :data:`DETAIL_BLUR` of those pixels: the box filter alone lets
    through a little of what lies above the new resolution, more or less of it depending on the
    source's size; the blur removes that band, so the detail left does not tell how many pixels
    the source had, as long as it had comfortably more than ``detail``."""
    height, width = part.shape[:2]
    factor = detail / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    pil = Image.fromarray(np.ascontiguousarray(part))
    resized = np.asarray(pil.resize(size, Image.Resampling.BOX if factor < 1 else Image.Resampling.BICUBIC))
    return cv2.GaussianBlur(resized, (0, 0), DETAIL_BLUR)


def normalize_image(
    image_rgb: np.ndarray, face: dict[str, Any], recipe: Recipe, find_faces: FindFaces | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The picture as ``recipe`` normalizes it: bars trimmed, the square around the face
    (:data:`FACE_CONTEXT` face sides, or the largest square without a face), averaged down to
    ``detail`` pixels, resized to ``side`` x ``side``, JPEG-encoded at ``jpeg_quality`` and
    decoded; the face is found again in it by ``find_faces`` (see :func:`refit_face`), else
    its box (and area share) is moved into the square; the file's metadata (``face["exif"]``)
    is dropped. Each step as the recipe says (an older model's recipe leaves some out)."""
    data, out, moved = normalized_square(image_rgb, face, recipe)
    if recipe.finds_face and find_faces is not None:
        moved = refit_face(moved, find_faces(data, out), out.shape[1], out.shape[0])
    return out, moved


def normalized_square(
    image_rgb: np.ndarray, face: dict[str, Any], recipe: Recipe,
) -> tuple[bytes, np.ndarray, dict[str, Any]]:
    """:func:`normalize_image` without the second detection: (the JPEG bytes, their pixels, the
    face with its box moved into the square), for a caller that runs the chain itself."""
    box = face.get("box")
    if recipe.square and recipe.borders == BORDERS:
        x0, y0, x1, y1 = content_bounds(image_rgb, box)
        image_rgb = image_rgb[y0:y1, x0:x1]
        box = [box[0] - x0, box[1] - y0, box[2], box[3]] if box else box
        face = {**face, "box": box}
    height, width = image_rgb.shape[:2]
    if recipe.square:
        wanted = max(1, round(FACE_CONTEXT * max(box[2], box[3]))) if box and recipe.crop == CROP else None
        x, y, w = square_crop(width, height, box, wanted)
        h = w
    else:
        x, y, w, h = 0, 0, width, height
    scale = recipe.side / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    part = image_rgb[y:y + h, x:x + w]
    if recipe.detail:
        part = band_limit(part, recipe.detail)
    grow = size[0] > part.shape[1]
    resized = cv2.resize(part, size, interpolation=cv2.INTER_CUBIC if grow else cv2.INTER_AREA)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(resized)).save(buf, "JPEG", quality=recipe.jpeg_quality)
    data = buf.getvalue()
    out = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    moved: dict[str, Any] = {**face}
    if recipe.metadata == METADATA:  # the re-encoded square has none: whether the file had EXIF is a file cue
        moved["exif"] = None
    if box:
        x0, y0 = max(box[0], x), max(box[1], y)
        x1, y1 = min(box[0] + box[2], x + w), min(box[1] + box[3], y + h)
        inside = [round((x0 - x) * scale), round((y0 - y) * scale), round((x1 - x0) * scale), round((y1 - y0) * scale)]
        moved["box"] = inside if inside[2] > 0 and inside[3] > 0 else None
        if recipe.square:  # the face's share of the square, not of the original frame (which knew its shape)
            moved["face_area"] = inside[2] * inside[3] / float(size[0] * size[1]) if moved["box"] else 0.0
    return data, out, moved


def square_event(data: bytes, pixels: np.ndarray) -> "ImageEvent":
    """The square as an event fresh from decoding, for the chain's face step."""
    from ...core.events import ImageEvent, Origin

    event = ImageEvent(origin=Origin(source="normalize"), label="", data=data)
    event.image, event.decoded_side = pixels, 0  # decoded in full: a face step may use these pixels as they are
    event.height, event.width = pixels.shape[:2]
    return event


def faces_steps(steps: "Sequence[Step]") -> "list[Step]":
    """The steps of predict's chain that run on a square: all but those that decode."""
    return [step for step in steps if "image" not in step.provides]


def refit_face(moved: dict[str, Any], found: "Sequence[FaceBox] | None", width: int, height: int) -> dict[str, Any]:
    """The face dict with the largest box detected in the square (``found``), its share of the
    square and the count; unchanged (the moved box) when nothing was found there."""
    if not found:
        return moved
    largest = max(found, key=lambda b: b.area)
    return {**moved, "box": largest.as_list(), "face_area": largest.area / float(width * height), "n_faces": len(found)}
