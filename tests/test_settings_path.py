"""Following the settings from the ``train`` and ``import`` entry points visits each module
at most twice: the app's shared services (the storage backend, a reader of stored images,
the run's components) are made once per command and handed down, not rebuilt by each
module that needs them. Measured on the real commands (tests/settings_path_trace.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from settings_path_trace import explain, traced
from train_helpers import rendered_dataset, write_pictures
from typer.testing import CliRunner

from selfiescope.cli import app as cli

MOST = 2


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return rendered_dataset(tmp_path_factory.mktemp("settings_path_ds"), 12, 8, seeds=(11, 12))


def _settings_file(folder: Path, root: Path, pipeline: str = "") -> Path:
    path = folder / "settings.toml"
    path.write_text(f'[storage]\nroot = "{root}"\n{pipeline}')
    return path


@pytest.mark.parametrize("normalize, elsewhere", [(False, False), (True, False), (False, True)],
                         ids=["as_stored", "normalize", "dataset_root"])
def test_train_passes_its_settings_through_each_module_at_most_twice(small_dataset, tmp_path, normalize, elsewhere):
    """``dataset_root``: the dataset is not the storage root, so the reader moves the settings
    there; ``--model-dir``: a command option that changes the settings before the app is made."""
    storage_root = tmp_path / "other-root" if elsewhere else small_dataset
    settings = _settings_file(tmp_path, storage_root, (
        f'[pipelines.t]\nkind = "train"\nfeatures = ["geometry", "image"]\nfolds = 2\nworkers = 1\n'
        f'normalize = {"true" if normalize else "false"}\n'
        + (f'dataset_root = "{small_dataset}"\n' if elsewhere else "")
    ))
    with traced() as path:
        result = CliRunner().invoke(cli, ["train", "t", "--settings", str(settings), "--json",
                                          "--model-dir", str(tmp_path / "model")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "model" / "report.html").exists()  # the report read the stored images too
    assert json.loads(result.stdout)["images"] >= 16
    entered = path.entries()
    for module in ("selfiescope.pipelines.model.train", "selfiescope.pipelines.model.dataset",
                   "selfiescope.pipelines.dataset_care.stored", "selfiescope.core.app"):
        assert module in entered, sorted(entered)  # the trace sees the path it measures
    assert not (over := path.over(MOST)), explain(over, MOST)


def test_import_passes_its_settings_through_each_module_at_most_twice(tmp_path):
    photos = tmp_path / "photos"
    pictures = write_pictures(photos, "selfie", 4, seed=21)
    (photos / "copy.jpg").write_bytes(pictures[0].read_bytes())  # one rejected as a duplicate
    (photos / "broken.jpg").write_bytes(b"not an image")  # one rejected by decode
    settings = _settings_file(tmp_path, tmp_path / "data")
    with traced() as path:
        result = CliRunner().invoke(cli, ["import", str(photos), "--label", "selfie", "--settings", str(settings),
                                          "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["accepted"] >= 1 and stats["rejected"] >= 2, stats
    entered = path.entries()
    for module in ("selfiescope.pipelines.collecting.collect", "selfiescope.core.app", "selfiescope.cli.collect"):
        assert module in entered, sorted(entered)
    assert not (over := path.over(MOST)), explain(over, MOST)


def test_the_trace_counts_each_path_once_and_each_rebuild(tmp_path):
    """The measurement itself: a loop over one call site is one path; the same service made
    at three places is three, and the failure names each place."""
    from selfiescope.core.app import App
    from selfiescope.core.settings import settings_from_dict
    from selfiescope.pipelines.dataset_care.stored import StoredReader

    app = App.create(settings_from_dict({"storage": {"root": str(tmp_path)}}), entrypoints=False)
    with traced() as path:
        for _ in range(5):
            StoredReader(app)
    assert len(path.entries()["selfiescope.pipelines.dataset_care.stored"]) == 1
    with traced() as path:
        StoredReader(app)
        StoredReader(app)
        StoredReader(app, tmp_path / "elsewhere")  # moved: the app is made again for that root
    over = path.over(MOST)
    assert sorted(over) == ["selfiescope.pipelines.dataset_care.stored"], sorted(over)
    message = explain(over, MOST)
    assert message.count("test_settings_path.py:") == 3 and "StoredReader.__init__" in message, message
