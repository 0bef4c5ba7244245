"""dlib-based feature groups: ``landmarks`` (68 points, head pose, lens distortion) and ``embedding``.

Both run on the face filter's (Haar) box: dlib's 68-point shape predictor places the
landmarks inside it, and the 128-d face descriptor is computed from those landmarks.
The model files ship in the ``face-recognition-models`` package (offline). dlib holds
the GIL, so the training pipeline runs these groups in worker processes; each process
(and thread) loads the models once.
"""

from __future__ import annotations

import importlib.util
import math
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..api import FeatureExtractor, RunFailed

NAN = float("nan")
_local = threading.local()


class ModelFilesMissing(RunFailed, RuntimeError):
    pass


def model_file(name: str) -> Path:
    """Path of a file of the ``face-recognition-models`` package (found without importing it,
    since its ``__init__`` needs ``pkg_resources``, which recent setuptools no longer ship)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelFilesMissing("the landmarks/embedding features need the package face-recognition-models")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise ModelFilesMissing(f"dlib model file missing: {path}")
    return path


def _models() -> tuple[Any, Any]:
    """(shape_predictor, face_recognition_model), loaded once per thread."""
    models = getattr(_local, "models", None)
    if models is None:
        import dlib

        predictor = dlib.shape_predictor(str(model_file("shape_predictor_68_face_landmarks.dat")))
        recogniser = dlib.face_recognition_model_v1(str(model_file("dlib_face_recognition_resnet_model_v1.dat")))
        models = _local.models = (predictor, recogniser)
    return models


def _shape(image: np.ndarray, box: list[float]) -> Any:
    import dlib

    x, y, w, h = (int(round(v)) for v in box)
    return _models()[0](image, dlib.rectangle(x, y, x + w, y + h))


def _valid_box(face: dict[str, Any]) -> list[float] | None:
    box = face.get("box")
    if not box or len(box) != 4 or box[2] <= 0 or box[3] <= 0:
        return None
    return [float(v) for v in box]


def landmarks_68(image: np.ndarray, box: list[float]) -> np.ndarray:
    """(68, 2) float array of dlib landmarks inside ``box`` [x, y, w, h]."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    shape = _shape(image, box)
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


# A generic 3-D head (mm-ish units) in camera axes: x right, y down, z away from the camera.
_MODEL_3D = np.array([
    (0.0, 0.0, 0.0),  # nose tip (30)
    (0.0, 330.0, 65.0),  # chin (8)
    (-225.0, -170.0, 135.0),  # outer corner of the eye on the image's left (36)
    (225.0, -170.0, 135.0),  # outer corner of the eye on the image's right (45)
    (-150.0, 150.0, 125.0),  # mouth corner, image left (48)
    (150.0, 150.0, 125.0),  # mouth corner, image right (54)
])
_POSE_POINTS = [30, 8, 36, 45, 48, 54]


def _wrap(deg: float) -> float:
    while deg > 90:
        deg -= 180
    while deg < -90:
        deg += 180
    return deg


def head_pose(points: np.ndarray, width: int, height: int) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from solvePnP on six landmarks; 0, 0, 0 is a frontal face."""
    focal = float(max(width, height))
    camera = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]], dtype=np.float64)
    ok, rvec, _ = cv2.solvePnP(_MODEL_3D, points[_POSE_POINTS], camera, np.zeros(4), flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        return NAN, NAN, NAN
    rot, _ = cv2.Rodrigues(rvec)
    pitch = math.degrees(math.atan2(rot[2, 1], rot[2, 2]))
    yaw = math.degrees(math.atan2(-rot[2, 0], math.hypot(rot[2, 1], rot[2, 2])))
    roll = math.degrees(math.atan2(rot[1, 0], rot[0, 0]))
    return _wrap(yaw), _wrap(pitch), _wrap(roll)


def _dist(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.hypot(*(a - b)))


class LandmarkFeatures(FeatureExtractor):
    """Head pose, eye-line tilt, perspective-distortion proxies and facial proportions.

    A phone held at arm's length is close to the face: the nose looks wider and the face
    narrower relative to the distance between the eyes than in a portrait taken from a
    few metres. Distances are divided by the inter-ocular distance (scale-free).
    """

    name = "landmarks"
    version = "1"

    def feature_names(self) -> list[str]:
        return [
            "yaw", "pitch", "roll", "eye_tilt", "iod_frac",
            "nose_width", "face_width", "jaw_width", "mouth_width", "face_height", "nose_to_face",
            "eyes_to_nose", "nose_to_mouth", "mouth_to_chin",
            "eyes_x", "eyes_y", "nose_x", "nose_y", "mouth_x", "mouth_y",
            "chin_y_img", "brow_y_img", "points_outside",
        ]

    def extract(self, image: np.ndarray, face: dict[str, Any]) -> dict[str, float]:
        out = dict.fromkeys(self.feature_names(), NAN)
        box = _valid_box(face)
        if box is None:
            return out
        height, width = image.shape[:2]
        pts = landmarks_68(image, box)
        eye_a, eye_b = pts[36:42].mean(axis=0), pts[42:48].mean(axis=0)
        eyes = (eye_a + eye_b) / 2
        iod = _dist(eye_a, eye_b)
        if iod < 1e-6:
            return out
        nose_tip, mouth, chin = pts[30], pts[48:60].mean(axis=0), pts[8]
        out["yaw"], out["pitch"], out["roll"] = head_pose(pts, width, height)
        out["eye_tilt"] = math.degrees(math.atan2(eye_b[1] - eye_a[1], eye_b[0] - eye_a[0]))
        out["iod_frac"] = iod / width
        out["nose_width"] = _dist(pts[31], pts[35]) / iod
        out["face_width"] = _dist(pts[0], pts[16]) / iod
        out["jaw_width"] = _dist(pts[4], pts[12]) / iod
        out["mouth_width"] = _dist(pts[48], pts[54]) / iod
        out["face_height"] = _dist(pts[27], chin) / iod
        out["nose_to_face"] = out["nose_width"] / out["face_width"] if out["face_width"] > 0 else NAN
        out["eyes_to_nose"] = _dist(eyes, nose_tip) / iod
        out["nose_to_mouth"] = _dist(nose_tip, mouth) / iod
        out["mouth_to_chin"] = _dist(mouth, chin) / iod
        x, y, w, h = box
        for key, point in (("eyes", eyes), ("nose", nose_tip), ("mouth", mouth)):
            out[f"{key}_x"] = (point[0] - x) / w
            out[f"{key}_y"] = (point[1] - y) / h
        out["chin_y_img"] = chin[1] / height
        out["brow_y_img"] = float(pts[17:27, 1].min()) / height
        inside = (pts[:, 0] >= 0) & (pts[:, 0] < width) & (pts[:, 1] >= 0) & (pts[:, 1] < height)
        out["points_outside"] = float(1.0 - inside.mean())
        return out


class EmbeddingFeatures(FeatureExtractor):
    """dlib's 128-d face descriptor (ResNet), computed from the 68 landmarks."""

    name = "embedding"
    version = "1"
    DIMS = 128

    def feature_names(self) -> list[str]:
        return [f"e{i:03d}" for i in range(self.DIMS)]

    def extract(self, image: np.ndarray, face: dict[str, Any]) -> dict[str, float]:
        names = self.feature_names()
        box = _valid_box(face)
        if box is None:
            return dict.fromkeys(names, NAN)
        image = np.ascontiguousarray(image, dtype=np.uint8)
        shape = _shape(image, box)
        descriptor = _models()[1].compute_face_descriptor(image, shape)
        return dict(zip(names, (float(v) for v in descriptor)))
