"""Predict with a trained model folder: images -> the chain's image and face steps -> features -> LightGBM.

Prediction sees exactly what training saw: images go through the chain steps saved in
the model's schema (chosen at training by capability: the steps that provide ``"image"``
and ``"faces"``, see ``Step.provides``) with the plugin options saved in ``settings.json``,
and the features come from the installed extractors, checked against the model's
``schema.json`` when the model is loaded. Every input gets a result: ``ok`` with a
label and probability; a decision of the chain, with its reason and the model's setting that
decided it: ``no_face`` when the face filter found no usable face, ``rejected`` when another
step turned the photo away (too small, too many pixels, ...); or ``error`` when the file could
not be read as an image (missing, unreadable, not an image, truncated).

Images come from files (:meth:`Model.predict`) or from a dataset's storage backend
(:meth:`Model.predict_stored`: read with ``Storage.iterate``/``read``, wherever the backend
keeps them: a folder, a bucket, a database).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from ...core.app import App
from ...core.errors import UsageError
from ...core.components import FeatureExtractor, Step, StoredImage, chain_providing
from ...core.context import RunContext
from ...core.engine import run_chain
from ...core.events import Decision, ImageEvent, Origin
from ...core.manifest import Manifest
from ...core.plugins import Registry
from ...core.settings import Settings, SettingsError, format_validation_error, settings_from_dict
from ...core.text import printable
from ...core.image_files import IMAGE_SUFFIXES, MAX_IMAGE_BYTES, read_regular_file  # noqa: F401 - re-exported
from .dataset import columns_of, event_face_dict, extract_features
from .model_dir import ModelDirError, verify, verify_bytes
from .model_schema import ModelSchema, SavedSettings, SchemaError, read_json_file, validated
from .model_text import ModelTextError, checked_model_text
from .calibration import Calibrator
from .normalize import Recipe, faces_steps, normalized_square, refit_face, square_event

BATCH = 16

MAX_BYTES = MAX_IMAGE_BYTES  # what import would take, prediction takes
MAX_MODEL_BYTES = 256 << 20  # far above any model of a few thousand trees
# Reject codes that say the bytes are no usable image: the input could not be read, an error.
# Every other rejection is the chain's decision about a photo it read.
UNREADABLE_CODES = frozenset({"empty", "not_image", "corrupt", "truncated", "not_decoded", "too_large"})
STATUSES = ("ok", "no_face", "rejected", "error")


class ModelError(UsageError):
    """The model folder cannot be used (missing files, or features that no longer match); phrased for the user."""


@dataclass
class Prediction:
    path: str
    status: str  # one of STATUSES
    label: str | None = None
    probability: float | None = None  # of the positive label, calibrated (see pipelines/model/calibration.py)
    reason: str | None = None
    raw_probability: float | None = None  # the booster's own score, before calibration
    threshold: float | None = None  # label = positive when probability >= threshold
    code: str | None = None  # the reject code of a photo the chain turned away
    setting: str | None = None  # the model's setting that decided it, with its value

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _read_json(path: Path) -> Any:
    try:
        return read_json_file(path)
    except FileNotFoundError:
        raise ModelError(f"{path.parent}: not a model folder ({path.name} is missing; train one with `selfiescope train`)") from None
    except SchemaError as exc:
        raise ModelError(str(exc)) from None


def _validated(model: type[Any], path: Path) -> Any:
    try:
        return validated(model, _read_json(path), path)
    except SchemaError as exc:
        raise ModelError(f"{exc}; retrain the model with `selfiescope train`") from None


def read_model_text(path: Path, schema: dict[str, Any]) -> str:
    """``model.txt`` read once, checked against the schema's recorded digest and then parsed in
    Python (:mod:`.model_text`): LightGBM only ever parses what that check rebuilt."""
    try:
        data = read_regular_file(path, MAX_MODEL_BYTES)
    except FileNotFoundError:
        raise ModelError(f"{path}: missing; the model folder is incomplete, retrain it") from None
    except OSError as exc:
        raise ModelError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise ModelError(f"{path}: {exc}; not a model this tool wrote") from None
    try:
        verify_bytes(path, data, schema)
    except ModelDirError as exc:
        raise ModelError(str(exc)) from None
    try:
        return checked_model_text(data, [c.replace(" ", "_") for c in schema["columns"]])
    except ModelTextError as exc:
        raise ModelError(f"{path}: not a usable LightGBM model: {exc}; retrain it with `selfiescope train`") from None


def check_schema(schema: dict[str, Any], registry: Registry) -> list[FeatureExtractor]:
    """The installed extractors for the model's feature groups; ModelError if any differs."""
    extractors, problems = [], []
    for group in schema["groups"]:
        name = group["name"]
        cls = registry.features.get(name)
        if cls is None:
            problems.append(f"feature group {name!r} is not installed (available: {', '.join(sorted(registry.features)) or 'none'})")
            continue
        if str(cls.version) != str(group["version"]):
            problems.append(f"feature group {name!r} is version {cls.version}, the model was trained with version {group['version']}")
            continue
        try:
            extractor = cls(cls.Options.model_validate(group.get("options", {})))
        except ValidationError as exc:
            problems.append(f"feature group {name!r} options: {'; '.join(format_validation_error(exc))}")
            continue
        if extractor.feature_names() != group["features"]:
            problems.append(f"feature group {name!r} computes different features than the model was trained on")
            continue
        extractors.append(extractor)
    if not problems and columns_of(extractors) != schema["columns"]:
        problems.append("the model's feature columns do not match the installed extractors")
    if problems:
        raise ModelError("the model does not match the installed feature extractors: " + "; ".join(problems)
                         + ". Retrain it with `selfiescope train`.")
    return extractors


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given; folders recursively (image suffixes only, hidden files skipped)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".")
                          and f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            out.append(p)
    return out


class Model:
    """A trained model folder, ready to predict. Use :func:`selfiescope.load_model`."""

    def __init__(self, path: Path, *, app: App | None = None) -> None:
        self.path = Path(path)
        try:
            self._load(app)
        except ModelError as exc:  # every message names the folder it is about
            if str(self.path) not in str(exc):
                raise ModelError(f"{self.path}: {exc}") from None
            raise

    def _load(self, app: App | None) -> None:
        from .train import lightgbm

        lgb = lightgbm()
        if not self.path.is_dir():
            raise ModelError(f"{self.path}: no such model folder")
        schema_path = self.path / "schema.json"
        self.schema: dict[str, Any] = _validated(ModelSchema, schema_path).model_dump(mode="json")
        try:
            verify(self.path, self.schema, skip=("model.txt",))
        except ModelDirError as exc:
            raise ModelError(str(exc)) from None
        saved_path = self.path / "settings.json"
        saved = _validated(SavedSettings, saved_path)
        try:
            self.settings: Settings = settings_from_dict(saved.settings)
        except SettingsError as exc:
            raise ModelError(f"{saved_path}: {'; '.join(exc.problems)[:500]}; retrain the model") from None
        # The training's settings with the plugins of the application predicting (a command's,
        # with its [plugins] disable), else with the ones those settings enable.
        self.app = replace(app, settings=self.settings) if app is not None else App.create(self.settings)
        self.registry = self.app.registry
        self.extractors = check_schema(self.schema, self.registry)
        try:  # models from before the schema saved its steps: the installed steps that provide them
            self.steps: list[str] = list(self.schema.get("steps") or chain_providing(self.registry.steps, ["image", "faces"]))
        except LookupError as exc:
            raise ModelError(f"{exc}; prediction needs it") from None
        for step in self.steps:
            if step not in self.registry.steps:
                raise ModelError(f"the chain step {step!r} that prediction needs is not installed")
            if not {"image", "faces"} & set(self.registry.steps[step].provides):  # never a storing step
                raise ModelError(f"schema.json steps: {step!r} provides neither the image nor its faces")
        model_text = read_model_text(self.path / "model.txt", self.schema)
        try:
            self.booster = lgb.Booster(model_str=model_text)
        except (lgb.basic.LightGBMError, ValueError) as exc:
            # LightGBM's own words name its source lines, not the problem: the debug log keeps them
            logging.getLogger("selfiescope.predict").debug("LightGBM refused %s: %s", self.path / "model.txt", exc)
            raise ModelError(f"{self.path / 'model.txt'}: LightGBM cannot load this model (the file is damaged or "
                             "was edited); retrain it with `selfiescope train` or restore the folder") from None
        self.labels: list[str] = self.schema["labels"]
        self.threshold = float(self.schema["threshold"])
        self.calibrator = Calibrator.from_dict(self.schema.get("calibration"))
        saved = self.schema.get("normalize")  # the recipe training used, or None
        self.normalize = Recipe.saved(saved) if saved else None

    def predict(self, paths: Sequence[str | Path] | str | Path) -> list[Prediction]:
        """One :class:`Prediction` per image file (folders are expanded), in order."""
        return asyncio.run(self.apredict(paths))

    async def apredict(self, paths: Sequence[str | Path] | str | Path) -> list[Prediction]:
        if isinstance(paths, (str, Path)):
            paths = [paths]
        files = expand_paths(paths)
        return await self._run(files, self._read_file, printable)

    def predict_stored(self, label: str | None = None, *, settings: Settings | None = None,
                       root: str | Path | None = None) -> list[Prediction]:
        """One :class:`Prediction` per image a dataset's storage backend holds (of ``label``),
        read through the backend configured in ``settings`` (default: the training's own, saved
        with the model; ``root`` moves ``storage.root``). Each result's ``path`` is the location."""
        return asyncio.run(self.apredict_stored(label, settings=settings, root=root))

    async def apredict_stored(self, label: str | None = None, *, settings: Settings | None = None,
                              root: str | Path | None = None) -> list[Prediction]:
        from ..dataset_care.stored import READ_TIMEOUT_S, settings_at

        settings = settings_at(settings or self.settings, root)
        manifest = Manifest(":memory:")  # the backend gets a manifest like in a run; nothing is recorded
        storage = replace(self.app, settings=settings).storage_backend(manifest, "predict")
        await storage.open()
        try:
            stored = await asyncio.to_thread(lambda: list(storage.iterate(label)))

            async def read(item: StoredImage) -> bytes:
                return await asyncio.wait_for(storage.read(item), READ_TIMEOUT_S)

            return await self._run(stored, read, lambda item: item.location)
        finally:
            await storage.close()
            manifest.close()

    async def _run(self, items: Sequence[Any], read: Any, show: Any) -> list[Prediction]:
        manifest = Manifest(":memory:")  # the chain's steps get a manifest; nothing is recorded
        executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="selfiescope-predict")
        run = self.app.run_context("predict", None, manifest, executor=executor)
        steps: list[Step] = []
        try:
            for name in self.steps:
                step = run.component("steps", name)
                await step.open()
                steps.append(step)
            results: list[Prediction] = []
            for start in range(0, len(items), BATCH):
                batch = items[start:start + BATCH]
                results += await asyncio.gather(*(self._one(item, read, show, steps, run) for item in batch))
            return results
        finally:
            for step in reversed(steps):
                await step.close()
            executor.shutdown(wait=True)
            manifest.close()

    async def _read_file(self, path: Path) -> bytes:
        return await asyncio.to_thread(read_regular_file, path, MAX_BYTES)

    async def _one(self, item: Any, read: Any, show: Any, steps: list[Step], run: RunContext) -> Prediction:
        loop = asyncio.get_running_loop()
        shown = show(item)
        try:
            data = await read(item)
        except OSError as exc:
            return Prediction(shown, "error", reason=f"cannot read: {exc.strerror or exc}")
        except ValueError as exc:
            return Prediction(shown, "error", reason=str(exc))
        except Exception as exc:  # noqa: BLE001 - a backend's own error is this image's result
            return Prediction(shown, "error", reason=f"cannot read: {type(exc).__name__}: {exc}")
        origin = Origin(source="predict", path=str(item) if isinstance(item, Path) else None)
        event = ImageEvent(origin=origin, label="", data=data)
        await run_chain(event, steps, run)
        if event.decision is Decision.REJECTED:
            return self._rejected(shown, event)
        if event.decision is Decision.FAILED:
            return Prediction(shown, "error", reason=f"{event.rejected_by} failed: {event.reject_reason}")
        face = event_face_dict(event, event.exif)
        image = event.image
        if self.normalize:  # the model was trained on re-encoded images: see them the same way
            image, face = await self._normalized(image, face, steps, run)
        try:
            values = await loop.run_in_executor(run.executor, extract_features, image, face, self.extractors)
        except Exception as exc:  # noqa: BLE001 - one image's failure is its own result
            return Prediction(shown, "error", reason=f"features failed: {type(exc).__name__}: {exc}")
        raw = float(self.predict_raw(np.array([[values[c] for c in self.schema["columns"]]]))[0])
        prob = float(self.calibrator(np.array([raw]))[0])
        label = self.labels[0] if prob >= self.threshold else self.labels[1]
        return Prediction(shown, "ok", label=label, probability=prob, raw_probability=raw, threshold=self.threshold)

    async def _normalized(self, image: np.ndarray, face: dict[str, Any], steps: list[Step],
                          run: RunContext) -> tuple[np.ndarray, dict[str, Any]]:
        """The picture and face as training measured them (:mod:`.normalize`): the square, and
        for a model whose schema says so, the face found in it by the same steps."""
        loop = asyncio.get_running_loop()
        recipe = self.normalize
        data, image, face = await loop.run_in_executor(run.executor, normalized_square, image, face, recipe)
        if recipe.finds_face:
            seen = await run_chain(square_event(data, image), faces_steps(steps), run)
            face = refit_face(face, seen.faces, image.shape[1], image.shape[0])
        return image, face

    def _rejected(self, shown: str, event: ImageEvent) -> Prediction:
        """A photo the chain turned away: an error only when its bytes are no usable image; else the
        chain's decision, with the training's setting that made it (prediction runs with it)."""
        from ..dataset_care.class_losses import setting_text

        code = event.reject_code or "unknown"
        reason = f"{code}: {event.reject_reason}"
        if code in UNREADABLE_CODES:
            return Prediction(shown, "error", reason=reason, code=code)
        rejecter = self.registry.steps.get(event.rejected_by or "")
        status = "no_face" if rejecter is not None and "faces" in rejecter.provides else "rejected"
        return Prediction(shown, status, reason=reason, code=code, setting=setting_text(code, self.settings))

    def predict_raw(self, X: np.ndarray) -> np.ndarray:
        """The booster's score for rows of features in ``schema["columns"]`` order (uncalibrated)."""
        return np.asarray(self.booster.predict(np.asarray(X, dtype=np.float64)))

    def predict_features(self, X: np.ndarray) -> np.ndarray:
        """Calibrated probability of the positive label for rows of features in ``schema["columns"]`` order."""
        return self.calibrator(self.predict_raw(X))


def load_model(path: str | Path, *, app: App | None = None) -> Model:
    """Load a model folder written by ``selfiescope train``; ModelError if it cannot be used.
    It predicts with the plugins of ``app`` (a command's application; tests give one with
    their own plugins), by default with those the training's saved settings enable."""
    return Model(Path(path), app=app)


def predict(model_path: str | Path, paths: Sequence[str | Path]) -> list[Prediction]:
    return load_model(model_path).predict(paths)
