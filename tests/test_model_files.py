"""Model folders from anywhere: whatever schema.json, settings.json and model.txt hold (truncated,
bit-flipped, edited and re-sealed with fresh checksums, or a first-release model without
checksums), loading a model either works or ends in one ModelError line; LightGBM never parses
text that was not checked, so nothing aborts the process."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from train_helpers import build_dataset, render, train_settings, write_pictures

from selfiescope.core.app import App
from selfiescope.pipelines.model.model_text import ModelTextError, checked_model_text
from selfiescope.pipelines.model.predict import ModelError, load_model
from selfiescope.pipelines.model.train import lightgbm, train

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("model_files")
    files = {
        "selfie": write_pictures(root / "in" / "selfie", "selfie", 12, seed=21),
        "portrait": write_pictures(root / "in" / "portrait", "portrait", 12, seed=22),
    }
    build_dataset(root, files)
    plugins = {"instagram": {"base_url": f"http://127.0.0.1:9/?access_token={SECRET}"}}  # kept in settings.json
    return train(App.create(train_settings(root, root / "model", ["geometry", "image"], plugins, folds=3, report=False)),
                 "t").model_dir


SECRET = "tok3nSECRETvalue"


def test_the_saved_settings_hold_no_credential(model_dir):
    saved = (model_dir / "settings.json").read_text()
    assert SECRET not in saved and "access_token=REDACTED" in saved
    assert load_model(model_dir).settings.plugins  # still loads, with the URL's other parts


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "one.jpg"
    from PIL import Image

    Image.fromarray(render("selfie", np.random.default_rng(1))).save(path)
    return path


def _copy(model_dir: Path, dest: Path) -> Path:
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(model_dir, dest)
    return dest


def _reseal(folder: Path) -> None:
    """Record the files' current sizes and hashes, as an editor who knows the format would."""
    schema = json.loads((folder / "schema.json").read_text())
    for name in schema.get("files", {}):
        data = (folder / name).read_bytes()
        schema["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (folder / "schema.json").write_text(json.dumps(schema))


def _edit_schema(folder: Path, edit) -> None:
    schema = json.loads((folder / "schema.json").read_text())
    (folder / "schema.json").write_text(json.dumps(edit(schema)))


def _first_release(schema: dict) -> dict:
    return {k: v for k, v in schema.items() if k not in ("files", "written_by")}


def _without(key: str):
    return lambda schema: {k: v for k, v in schema.items() if k != key}


def _bad_split(text: str) -> str:
    return re.sub(r"split_feature=\d+", "split_feature=99999", text, count=1)


# The reported cases: each ended in a traceback or in SIGABRT (exit 134) before.
SCHEMA_CASES = {
    "no-groups": _without("groups"),
    "no-labels": _without("labels"),
    "a-list": lambda schema: [schema],
    "threshold-abc": lambda schema: {**schema, "threshold": "abc"},
}


def _truncated_first_release(folder: Path) -> None:
    text = (folder / "model.txt").read_text()
    (folder / "model.txt").write_text(text[:len(text) // 2])
    _edit_schema(folder, _first_release)


def _resealed_bad_split(folder: Path) -> None:
    (folder / "model.txt").write_text(_bad_split((folder / "model.txt").read_text()))
    _reseal(folder)


def _fifo_metrics(folder: Path) -> None:
    (folder / "metrics.json").unlink()
    os.mkfifo(folder / "metrics.json")  # opening it to hash it would wait forever for a writer


def _model_is_dev_zero(folder: Path) -> None:
    (folder / "model.txt").unlink()
    (folder / "model.txt").symlink_to("/dev/zero")


def _storing_step(folder: Path) -> None:
    """A schema that makes prediction run the store step would write into a dataset."""
    _edit_schema(folder, lambda schema: {**schema, "steps": [*schema["steps"], "store"]})


def _markup_label(folder: Path) -> None:
    _edit_schema(folder, lambda schema: {**schema, "labels": ["[/red]", schema["labels"][1]], "positive": "[/red]"})


MODEL_TEXT_CASES = {"first-release-truncated": _truncated_first_release, "resealed-bad-split": _resealed_bad_split,
                    "fifo-metrics": _fifo_metrics, "model-is-dev-zero": _model_is_dev_zero,
                    "storing-step": _storing_step, "markup-label": _markup_label}


def _predict_cli(folder: Path, photo: Path) -> subprocess.CompletedProcess:
    """A real process: an abort in native code shows as a signal, not as a dead test run."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, "-m", "selfiescope", "predict", str(folder), str(photo)],
                          capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("case", [*SCHEMA_CASES, *MODEL_TEXT_CASES])
def test_reported_broken_models_exit_2_with_one_message(model_dir, photo, tmp_path, case):
    folder = _copy(model_dir, tmp_path / "m")
    if case in SCHEMA_CASES:
        _edit_schema(folder, SCHEMA_CASES[case])
    else:
        MODEL_TEXT_CASES[case](folder)
    result = _predict_cli(folder, photo)
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert result.stderr.startswith("error:") and str(folder) in "".join(result.stderr.split()), result.stderr


def test_a_sound_model_loads_exactly_as_lightgbm_would(model_dir):
    """The rebuilt text is the same model: identical scores to LightGBM's own load of the file."""
    lgb = lightgbm()
    model = load_model(model_dir)
    rng = np.random.default_rng(0)
    X = rng.random((300, len(model.schema["columns"]))) * 2
    own = lgb.Booster(model_file=str(model_dir / "model.txt")).predict(X)
    assert np.array_equal(model.predict_raw(X), own)


def _lightgbm_variants() -> dict[str, tuple[str, list[str]]]:
    """Model texts LightGBM writes for other settings than ours: categorical splits, one-leaf
    trees, another binary objective with monotone constraints."""
    lgb = lightgbm()
    rng = np.random.default_rng(3)
    X = rng.random((300, 3))
    X[:, 1] = rng.integers(0, 5, 300)
    y = ((X[:, 0] > 0.5) ^ (X[:, 1] == 2)).astype(int)
    names = ["a", "b", "c"]
    quiet = {"verbose": -1, "num_threads": 1}
    made = {
        "categorical": lgb.train({"objective": "binary", "min_data_per_group": 5, **quiet},
                                 lgb.Dataset(X, y, feature_name=names, categorical_feature=[1]), 20),
        "one-leaf": lgb.train({"objective": "binary", "min_data_in_leaf": 1000, **quiet},
                              lgb.Dataset(X, y, feature_name=names), 3),
        "xentropy-monotone": lgb.train({"objective": "cross_entropy", "monotone_constraints": [1, 0, -1], **quiet},
                                       lgb.Dataset(X, y, feature_name=names), 10),
    }
    return {name: (booster.model_to_string(), names) for name, booster in made.items()} | {"X": (X, names)}


def test_other_lightgbm_models_pass_the_check_unchanged():
    lgb = lightgbm()
    variants = _lightgbm_variants()
    X, _ = variants.pop("X")
    for name, (text, names) in variants.items():
        rebuilt = checked_model_text(text.encode(), names)
        assert np.array_equal(lgb.Booster(model_str=rebuilt).predict(X), lgb.Booster(model_str=text).predict(X)), name


def test_tree_shapes_that_are_no_tree_are_refused(model_dir):
    """Children that loop back, point twice at one node, or out of range: LightGBM would loop
    forever or read outside its arrays while predicting; the check refuses each."""
    names = json.loads((model_dir / "schema.json").read_text())["columns"]
    text = (model_dir / "model.txt").read_text()
    deep = next(m for m in re.finditer(r"num_leaves=(\d+)\n(?:.*\n)*?left_child=(.*)\nright_child=(.*)\n", text)
                if int(m[1]) >= 3)
    left = deep[2].split()
    edits = {
        "cycle": " ".join(["0", *left[1:]]),  # a child that is the root
        "twice": " ".join([left[0], left[0], *left[2:]]),
        "out-of-range": " ".join(["77", *left[1:]]),
    }
    for what, new_left in edits.items():
        broken = text[:deep.start(2)] + new_left + text[deep.end(2):]
        with pytest.raises(ModelTextError, match="left_child|reached twice|unreachable"):
            checked_model_text(broken.encode(), names)


def _corrupt(data: bytes, how: str, at: float, value: int) -> bytes:
    pos = min(int(at * len(data)), max(len(data) - 1, 0))
    if how == "truncate":
        return data[:pos]
    if how == "flip":
        return data[:pos] + bytes([data[pos] ^ (1 << (value % 8))]) + data[pos + 1:] if data else data
    if how == "number":  # a number somewhere replaced by another (re-sealed: checksums would not notice)
        spans = [m.span() for m in re.finditer(rb"-?\d+(?:\.\d+)?(?:e-?\d+)?", data)]
        if not spans:
            return data
        start, end = spans[min(int(at * len(spans)), len(spans) - 1)]
        return data[:start] + str(value).encode() + data[end:]
    if how == "drop-line":
        lines = data.split(b"\n")
        del lines[min(int(at * len(lines)), len(lines) - 1)]
        return b"\n".join(lines)
    raise AssertionError(how)


@FUZZ
@given(target=st.sampled_from(["model.txt", "schema.json", "settings.json"]),
       how=st.sampled_from(["truncate", "flip", "number", "drop-line"]),
       at=st.floats(0, 1), value=st.sampled_from([-3, -1, 0, 1, 2, 7, 36, 37, 99999, 2**31, -2**31 - 1]),
       reseal=st.booleans(), first_release=st.booleans())
@example(target="model.txt", how="drop-line", at=0.703125, value=-3, reseal=False, first_release=True)  # LightGBM refused it
def test_any_corrupted_model_folder_loads_or_is_one_clear_error(model_dir, tmp_path_factory, target, how, at, value,
                                                                reseal, first_release):
    folder = _copy(model_dir, tmp_path_factory.mktemp("fuzz") / "m")
    if first_release:
        _edit_schema(folder, _first_release)
    path = folder / target
    path.write_bytes(_corrupt(path.read_bytes(), how, at, value))
    if reseal and target != "schema.json" and not first_release:
        _reseal(folder)
    try:
        model = load_model(folder)
    except ModelError as exc:
        message = str(exc)
        assert "\n" not in message and str(folder) in message, message
        return
    # It loaded: then it is a model LightGBM can walk for any input.
    X = np.random.default_rng(0).normal(0, 10, (50, len(model.schema["columns"])))
    assert model.predict_raw(X).shape == (50,)


def test_infinite_thresholds_lightgbm_writes_are_accepted(model_dir):
    """LightGBM writes ``inf`` for a split at the end of a feature's range (real photos give such models):
    the check must take it, and the rebuilt text must score as LightGBM's own parse does."""
    lgb = lightgbm()
    names = json.loads((model_dir / "schema.json").read_text())["columns"]
    text = re.sub(r"threshold=\S+", "threshold=inf", (model_dir / "model.txt").read_text(), count=1)
    text = re.sub(r"tree_sizes=.*\n", "", text)  # the edit changed a tree's size: LightGBM must not trust them
    rebuilt = checked_model_text(text.encode(), names)
    X = np.random.default_rng(1).normal(0, 10, (100, len(names)))
    assert np.array_equal(lgb.Booster(model_str=rebuilt).predict(X), lgb.Booster(model_str=text).predict(X))
    with pytest.raises(ModelTextError, match="leaf_value"):
        checked_model_text(re.sub(r"leaf_value=\S+", "leaf_value=nan", text, count=1).encode(), names)


@pytest.mark.parametrize("key, bad", [
    ("leaf_weight", "x"), ("leaf_count", "-1"), ("leaf_count", "1.5"),
    ("split_gain", "x"), ("internal_value", "nan"), ("internal_weight", "x"),
    ("internal_count", "-1"), ("internal_count", "1e3"),
])
def test_each_per_leaf_and_per_node_statistic_is_checked_by_its_own_rule(model_dir, key, bad):
    """Statistics LightGBM only reports are still parsed before it sees them: a float key takes any
    float but NaN, a count only a whole number from 0; the message names the key."""
    names = json.loads((model_dir / "schema.json").read_text())["columns"]
    text = re.sub(r"tree_sizes=.*\n", "", (model_dir / "model.txt").read_text())
    with pytest.raises(ModelTextError, match=key):
        checked_model_text(re.sub(rf"\n{key}=(\S+)", rf"\n{key}={bad}", text, count=1).encode(), names)
    if key not in ("leaf_count", "internal_count"):
        checked_model_text(re.sub(rf"\n{key}=(\S+)", rf"\n{key}=-inf", text, count=1).encode(), names)
    with pytest.raises(ModelTextError, match=key):  # one token too few
        checked_model_text(re.sub(rf"\n{key}=(\S+) ", f"\n{key}=", text, count=1).encode(), names)
