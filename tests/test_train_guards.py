"""What train refuses before any work: a pipeline name settings do not define, a model folder it
cannot write, settings that would make a model prediction refuses. None of these tests trains."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from safety_helpers import cli, no_traceback

from selfiescope.core.settings import SettingsError, settings_from_dict
from selfiescope.core.app import App
from selfiescope.pipelines.model import train as train_module
from selfiescope.pipelines.model.model_dir import ModelDirError


@pytest.fixture()
def no_work(monkeypatch):
    """Any feature computation means the guard came too late."""
    def refuse(*args, **kwargs):
        raise AssertionError("training started before the guard")

    monkeypatch.setattr(train_module, "build_feature_table", refuse)


def _settings_file(tmp_path: Path, pipelines: str = "") -> Path:
    path = tmp_path / "settings.toml"
    path.write_text(f'[storage]\nroot = "{tmp_path / "data"}"\n{pipelines}')
    return path


TRAIN = '[pipelines.mine]\nkind = "train"\nmodel_dir = "{dir}"\n'


@pytest.mark.parametrize("defined", [True, False], ids=["train-pipelines-defined", "none-defined"])
def test_an_unknown_pipeline_name_is_exit_2_naming_the_known_ones(tmp_path, no_work, defined):
    model_dir = tmp_path / "models" / "latest"
    settings = _settings_file(tmp_path, TRAIN.format(dir=model_dir) if defined else "")
    result = cli("train", "trian", "--model-dir", model_dir, "-s", settings)
    assert result.exit_code == 2, result.output
    assert no_traceback(result)
    assert "trian" in result.output and ("mine" in result.output if defined else "none defined" in result.output)
    assert not model_dir.exists() and not (tmp_path / "models").exists()


@contextlib.contextmanager
def read_only_folder(path: Path):
    """``path`` as a read-only folder: a read-only mount as root (root ignores mode bits)."""
    path.mkdir(parents=True)
    if os.geteuid() == 0:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1M", "tmpfs", str(path)], check=True)
        try:
            yield path
        finally:
            subprocess.run(["umount", str(path)], check=True)
    else:
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)


def test_a_read_only_model_folder_is_refused_before_training(tmp_path, no_work):
    with read_only_folder(tmp_path / "ro") as ro:
        model_dir = ro / "models" / "latest"
        settings = _settings_file(tmp_path, TRAIN.format(dir=model_dir))
        result = cli("train", "mine", "-s", settings)
        assert result.exit_code == 2, result.output
        assert no_traceback(result) and "cannot write" in result.output and str(ro) in " ".join(result.output.split())
        pipeline = settings_from_dict({"storage": {"root": str(tmp_path / "data")},
                                       "pipelines": {"t": {"kind": "train", "model_dir": str(model_dir)}}})
        with pytest.raises(ModelDirError, match="cannot write"):
            train_module.train(App.create(pipeline), "t")


def test_a_home_folder_of_no_user_is_a_clear_error(tmp_path, no_work):
    settings = _settings_file(tmp_path, TRAIN.format(dir="~nosuchuser_selfiescope/m"))
    result = cli("train", "mine", "-s", settings)
    assert result.exit_code == 2, result.output
    assert no_traceback(result) and "nosuchuser_selfiescope" in result.output


def test_linear_trees_are_refused_before_training(tmp_path, no_work):
    settings = settings_from_dict({"storage": {"root": str(tmp_path / "data")}, "pipelines": {
        "t": {"kind": "train", "model_dir": str(tmp_path / "m"), "params": {"linear_tree": True}}}})
    with pytest.raises(SettingsError, match="linear_tree"):
        train_module.train(App.create(settings), "t")


def test_a_schema_naming_files_outside_its_folder_never_gets_them_deleted(tmp_path):
    """Replacing a model removes the files its schema lists: only plain names inside the folder."""
    from selfiescope.pipelines.model.model_dir import check_target, seal, swap_in

    victim = tmp_path / "victim.txt"
    victim.write_text("the user's")
    old = tmp_path / "model"
    old.mkdir()
    (old / "model.txt").write_text("tree\n")
    seal(old, {"format": 1})
    schema = json.loads((old / "schema.json").read_text())
    schema["files"]["../victim.txt"] = {"size": 10, "sha256": "0" * 64}
    (old / "schema.json").write_text(json.dumps(schema))
    check_target(old, [])
    new = tmp_path / ".model.tmp-1"
    new.mkdir()
    seal(new, {"format": 1})
    swap_in(new, old)
    assert victim.read_text() == "the user's"
    assert (old / "schema.json").is_file() and not list(tmp_path.glob(".model.old-*"))


@pytest.mark.parametrize("fields, key", [
    ({"features": []}, "pipelines.t.features: choose at least one feature group"),
    ({"dataset_root": "/nonexistent-selfiescope"}, "pipelines.t.dataset_root: folder not found"),
])
def test_settings_check_refuses_what_train_refuses(tmp_path, fields, key):
    s = tmp_path / "settings.toml"
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in fields.items())
    s.write_text(f'[storage]\nroot = "{tmp_path / "data"}"\n[pipelines.t]\nkind = "train"\n'
                 f'model_dir = "{tmp_path / "m"}"\n{extra}')
    for result in (cli("settings", "check", "-s", s), cli("train", "t", "-s", s)):
        assert result.exit_code == 2 and key in result.output and no_traceback(result), result.output
