"""Built-in feature groups: ``geometry``, ``image``, ``landmarks`` and ``embedding``.

Each group is a :class:`~selfiescope.core.components.FeatureExtractor` returned by the
``selfiescope_features`` hook, exactly as a third-party group would be. ``geometry``
and ``image`` are cheap (OpenCV and Pillow); ``landmarks`` and ``embedding`` run
dlib's models (see :mod:`selfiescope.plugins.landmarks`).

``face`` is the dict described in :func:`selfiescope.core.hookspecs.selfiescope_features`:
``box`` ([x, y, w, h] of the largest face or ``None``), ``face_area``, ``n_faces`` and
``exif`` (the raw EXIF block of the original file or ``None``).
"""

from __future__ import annotations

import io
import math
from typing import Any

import cv2
import numpy as np
from PIL import Image

from ..api import FeatureExtractor, hookimpl
from .landmarks import EmbeddingFeatures, LandmarkFeatures

NAN = float("nan")


def face_box(face: dict[str, Any]) -> tuple[float, float, float, float] | None:
    box = face.get("box")
    if not box or len(box) != 4 or box[2] <= 0 or box[3] <= 0:
        return None
    x, y, w, h = (float(v) for v in box)
    return x, y, w, h


class GeometryFeatures(FeatureExtractor):
    """Where the largest face sits in the frame and how big it is.

    Selfies are taken at arm's length: the face is large and often cut by the frame at
    the chin or forehead; portraits are taken from farther away and composed.
    """

    name = "geometry"
    version = "1"

    def feature_names(self) -> list[str]:
        return [
            "has_face", "n_faces", "face_area", "face_cx", "face_cy", "face_w", "face_h", "face_aspect",
            "edge_left", "edge_right", "edge_top", "edge_bottom", "edge_min", "off_centre",
        ]

    def extract(self, image: np.ndarray, face: dict[str, Any]) -> dict[str, float]:
        height, width = image.shape[:2]
        out = dict.fromkeys(self.feature_names(), NAN)
        out["n_faces"] = float(face.get("n_faces") or 0)
        box = face_box(face)
        out["has_face"] = float(box is not None)
        if box is None:
            return out
        x, y, w, h = box
        area = face.get("face_area")
        out["face_area"] = float(area) if area is not None else (w * h) / (width * height)
        out["face_cx"] = (x + w / 2) / width
        out["face_cy"] = (y + h / 2) / height
        out["face_w"] = w / width
        out["face_h"] = h / height
        out["face_aspect"] = w / h
        out["edge_left"] = x / width
        out["edge_right"] = (width - x - w) / width
        out["edge_top"] = y / height
        out["edge_bottom"] = (height - y - h) / height
        out["edge_min"] = min(out["edge_left"], out["edge_right"], out["edge_top"], out["edge_bottom"])
        out["off_centre"] = math.hypot(out["face_cx"] - 0.5, out["face_cy"] - 0.5)
        return out


# EXIF tags (IFD0 and the Exif sub-IFD).
_MAKE, _MODEL, _EXIF_IFD = 0x010F, 0x0110, 0x8769
_EXPOSURE, _FNUMBER, _ISO, _FOCAL, _FOCAL35, _LENS = 0x829A, 0x829D, 0x8827, 0x920A, 0xA405, 0xA434
_PHONE_MAKERS = ("apple", "samsung", "google", "huawei", "xiaomi", "oneplus", "oppo", "vivo", "motorola",
                 "lg", "sony mobile", "htc", "nokia", "realme", "honor", "asus", "zte", "meizu")


def exif_block(data: bytes) -> bytes | None:
    """The raw EXIF block of an image file (headers only are read), or ``None``."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            raw = im.info.get("exif")
    except Exception:  # not our job to judge the file; decode does that
        return None
    return raw if isinstance(raw, bytes) and raw else None


def _number(value: Any) -> float:
    try:
        if isinstance(value, tuple):  # (numerator, denominator) in some files
            return float(value[0]) / float(value[1]) if value[1] else NAN
        return float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return NAN


def exif_features(raw: bytes | None) -> dict[str, float]:
    out = {
        "exif_present": 0.0, "exif_focal_mm": NAN, "exif_focal_35mm": NAN, "exif_fnumber": NAN,
        "exif_exposure_s": NAN, "exif_iso": NAN, "exif_phone": NAN, "exif_front_lens": NAN,
    }
    if not raw:
        return out
    try:
        exif = Image.Exif()
        exif.load(raw)
        sub = exif.get_ifd(_EXIF_IFD)
    except Exception:
        return out
    out["exif_present"] = 1.0
    out["exif_focal_mm"] = _number(sub.get(_FOCAL))
    out["exif_focal_35mm"] = _number(sub.get(_FOCAL35))
    out["exif_fnumber"] = _number(sub.get(_FNUMBER))
    out["exif_exposure_s"] = _number(sub.get(_EXPOSURE))
    iso = sub.get(_ISO)
    out["exif_iso"] = _number(iso[0] if isinstance(iso, tuple) and iso else iso)
    make = str(exif.get(_MAKE) or "").strip().lower()
    model = str(exif.get(_MODEL) or "").strip().lower()
    lens = str(sub.get(_LENS) or "").strip().lower()
    if make or model:
        out["exif_phone"] = float(make.startswith(_PHONE_MAKERS) or "iphone" in model or "phone" in model)
    if lens:
        out["exif_front_lens"] = float("front" in lens)
    return out


def _laplacian_var(gray: np.ndarray) -> float:
    if gray.size == 0:
        return NAN
    return float(cv2.Laplacian(gray, cv2.CV_32F).var())


class ImageFeatures(FeatureExtractor):
    """Whole-picture statistics: shape, sharpness, light, colour, and EXIF when present.

    Sharpness is measured at a fixed working size (longest side 512) so that it does
    not simply track the resolution.
    """

    name = "image"
    version = "1"
    WORK_SIDE = 512

    def feature_names(self) -> list[str]:
        return [
            "aspect", "megapixels", "sharpness", "face_sharpness_ratio", "brightness", "contrast",
            "face_brightness_ratio", "r_mean", "g_mean", "b_mean", "r_std", "g_std", "b_std",
            "saturation", "colourfulness",
            *exif_features(None),
        ]

    def extract(self, image: np.ndarray, face: dict[str, Any]) -> dict[str, float]:
        height, width = image.shape[:2]
        scale = min(1.0, self.WORK_SIDE / max(height, width))
        small = image if scale == 1.0 else cv2.resize(
            image, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA
        )
        gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        rgb = small.reshape(-1, 3).astype(np.float32) / 255.0
        means, stds = rgb.mean(axis=0), rgb.std(axis=0)
        hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
        rg = rgb[:, 0] - rgb[:, 1]
        yb = 0.5 * (rgb[:, 0] + rgb[:, 1]) - rgb[:, 2]
        sharp = _laplacian_var(gray)
        brightness = float(gray.mean()) / 255.0
        out = {
            "aspect": width / height,
            "megapixels": width * height / 1e6,
            "sharpness": sharp,
            "face_sharpness_ratio": NAN,
            "brightness": brightness,
            "contrast": float(gray.std()) / 255.0,
            "face_brightness_ratio": NAN,
            "r_mean": float(means[0]), "g_mean": float(means[1]), "b_mean": float(means[2]),
            "r_std": float(stds[0]), "g_std": float(stds[1]), "b_std": float(stds[2]),
            "saturation": float(hsv[:, :, 1].mean()) / 255.0,
            # Hasler & Suesstrunk (2003) colourfulness.
            "colourfulness": float(math.hypot(rg.std(), yb.std()) + 0.3 * math.hypot(rg.mean(), yb.mean())),
        }
        box = face_box(face)
        if box is not None:
            x, y, w, h = (round(v * scale) for v in box)
            crop = gray[max(0, y):max(0, y + h), max(0, x):max(0, x + w)]
            if crop.size >= 16:
                face_sharp = _laplacian_var(crop)
                out["face_sharpness_ratio"] = face_sharp / sharp if sharp > 0 else NAN
                out["face_brightness_ratio"] = (float(crop.mean()) / 255.0) / brightness if brightness > 0 else NAN
        out.update(exif_features(face.get("exif")))
        return out


@hookimpl
def selfiescope_features():
    return [GeometryFeatures, LandmarkFeatures, EmbeddingFeatures, ImageFeatures]
