"""What a model folder's ``schema.json`` and ``settings.json`` must hold, checked before use.

Every key prediction reads is typed here, so a schema that lacks ``groups``, is a list, or
has ``threshold: "abc"`` is refused with one line naming the file and the key, never
discovered later as a KeyError. Unknown keys are allowed (a newer release may add some).
The first release's schema has no ``files`` (no checksums) and no ``steps``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ...core.errors import UsageError
from ...core.image_files import read_regular_file
from ...core.settings import check_label, format_validation_error

MAX_JSON_BYTES = 64 * 1024 * 1024

Name = Annotated[str, Field(min_length=1, max_length=1000)]


class SchemaError(UsageError, ValueError):
    """A model file that does not have the expected content; phrased for the user."""


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class FileDigest(_Open):
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class FeatureGroup(_Open):
    name: Name
    version: Union[str, int]
    options: dict[str, Any] = {}
    features: list[Name] = Field(min_length=1)


class Normalize(_Open):
    side: int = Field(gt=0, le=100_000)
    jpeg_quality: int = Field(ge=1, le=100)
    shape: Literal["frame", "square"] = "frame"  # square: the largest square around the face (normalize.py)
    detail: int | None = Field(None, gt=0, le=100_000)  # pixels the square is averaged down to (None: kept)
    face: Literal["frame", "square"] = "frame"  # square: the face detected again in the square (normalize.py)
    metadata: Literal["kept", "dropped"] = "kept"  # dropped: features never see the file's EXIF (normalize.py)
    borders: Literal["kept", "trimmed"] = "kept"  # trimmed: one-colour bars at the edges cut off first
    crop: Literal["largest", "face"] = "largest"  # face: a square of normalize.FACE_CONTEXT face sides


def _finite(values: list[float]) -> list[float]:
    if not all(math.isfinite(v) for v in values):
        raise ValueError("must be finite numbers")
    return values


class Platt(_Open):
    method: Literal["platt"]
    a: float
    b: float

    @field_validator("a", "b")
    @classmethod
    def _finite_number(cls, value: float) -> float:
        return _finite([value])[0]


class Isotonic(_Open):
    method: Literal["isotonic"]
    x: list[float] = Field(min_length=1)
    y: list[float] = Field(min_length=1)

    @model_validator(mode="after")
    def _curve(self) -> "Isotonic":
        _finite(self.x), _finite(self.y)
        if len(self.x) != len(self.y):
            raise ValueError("x and y differ in length")
        if any(a > b for a, b in zip(self.x, self.x[1:])):
            raise ValueError("x must not decrease")
        if not all(0.0 <= v <= 1.0 for v in self.y):
            raise ValueError("y must be probabilities (0 to 1)")
        return self


class Identity(_Open):
    method: Literal["identity"]


Calibration = Annotated[Union[Platt, Isotonic, Identity], Field(discriminator="method")]


class ModelSchema(_Open):
    format: int | None = None
    written_by: str | None = None
    labels: list[Name] = Field(min_length=2, max_length=2)
    positive: str | None = None
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    columns: list[Name] = Field(min_length=1)
    groups: list[FeatureGroup] = Field(min_length=1)
    steps: list[Name] | None = None
    calibration: Calibration | None = None
    normalize: Normalize | None = None
    files: dict[str, FileDigest] | None = None

    @field_validator("labels")
    @classmethod
    def _valid_labels(cls, labels: list[str]) -> list[str]:
        return [check_label(label) for label in labels]  # the rule training's labels follow

    @field_validator("files")
    @classmethod
    def _plain_names(cls, files: dict[str, FileDigest] | None) -> dict[str, FileDigest] | None:
        for name in files or {}:
            if not is_plain_name(name):
                raise ValueError(f"{name[:60]!r} is not a file name inside the folder")
        return files

    @model_validator(mode="after")
    def _consistent(self) -> "ModelSchema":
        if self.labels[0] == self.labels[1]:
            raise ValueError("labels: give two different labels")
        if self.positive is not None and self.positive != self.labels[0]:
            raise ValueError("positive: must be the first of labels")
        if len(set(self.columns)) != len(self.columns):
            raise ValueError("columns: a column is listed twice")
        return self


class SavedSettings(_Open):
    pipeline: str | None = None
    settings: dict[str, Any]


def is_plain_name(name: str) -> bool:
    """A file directly inside the folder: no separator, not ``.`` or ``..``, no NUL."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and "\0" not in name


def read_json_file(path: Path) -> Any:
    """The JSON value in ``path``; FileNotFoundError passes through, other problems are SchemaError."""
    try:
        data = read_regular_file(path, MAX_JSON_BYTES)  # a FIFO or a device is refused, never waited on
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise SchemaError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise SchemaError(f"{path}: {exc}; not a model file") from None
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise SchemaError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise SchemaError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except RecursionError:
        raise SchemaError(f"{path}: JSON nested too deeply") from None


def validated(model: type[BaseModel], data: Any, path: Path) -> Any:
    """``data`` checked against ``model``; SchemaError naming the file and the first keys at fault."""
    if not isinstance(data, dict):
        raise SchemaError(f"{path}: must be a JSON object, not {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [p.removeprefix(": ") for p in format_validation_error(exc)]
        shown = "; ".join(p[:200] for p in problems[:3]) + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")
        raise SchemaError(f"{path}: {shown}") from None
