"""Steps declare what they provide and require; settings, training and predict ask that, never a name."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from selfiescope.core.components import Step, chain_providing, steps_providing, unmet_requirements
from selfiescope.core.events import ImageEvent, Origin
from selfiescope.core.hookspecs import hookimpl
from selfiescope.core.plugins import build_registry
from selfiescope.core.settings import settings_from_dict
from selfiescope.core.checks import check_components
from selfiescope.pipelines.model.dataset import image_step
from selfiescope.plugins.decode import DecodeStep
from selfiescope.plugins.features import exif_block

REPO = Path(__file__).resolve().parents[1]


def test_built_in_steps_declare_their_annotations():
    steps = build_registry().steps
    assert {"image", "format", "exif"} <= steps["decode"].provides and not steps["decode"].requires
    assert steps["face_area"].requires == {"image"} and "faces" in steps["face_area"].provides
    assert steps["dedup"].requires == {"image"} and "phash" in steps["dedup"].provides
    assert steps["store"].requires == {"format"}
    assert chain_providing(steps, ["image", "faces"]) == ["decode", "face_area"]


def test_settings_report_a_step_whose_requirement_no_earlier_step_provides(tmp_path):
    registry = build_registry()

    def problems(chain):
        settings = settings_from_dict({"storage": {"root": str(tmp_path)}, "pipelines": {
            "p": {"kind": "import", "source": "folder", "paths": [str(tmp_path)], "label": "selfie", "chain": chain}}})
        return [p for p in check_components(settings, registry) if "requires" in p]

    assert problems(["decode", "face_area", "dedup", "store"]) == []
    found = problems(["face_area", "decode", "store"])
    assert found == ["pipelines.p.chain[0]: step 'face_area' requires image, which no earlier step provides"]
    assert problems(["store"]) == ["pipelines.p.chain[0]: step 'store' requires format, which no earlier step provides"]
    assert unmet_requirements(registry.steps, ["decode", "face_area"]) == []


class FancyDecode(DecodeStep):
    """A third party's decoder: same annotations, another name."""

    name = "fancy_decode"


class Plugin:
    @staticmethod
    @hookimpl
    def selfiescope_steps():
        return [FancyDecode]


def test_training_decodes_with_the_step_that_provides_image_in_the_configured_chain(tmp_path):
    registry = build_registry(plugins=[Plugin()])
    plain = settings_from_dict({"storage": {"root": str(tmp_path)}})
    assert image_step(registry, plain) == "decode"  # registration order: the built-in first
    chained = settings_from_dict({"storage": {"root": str(tmp_path)}, "pipelines": {
        "p": {"kind": "import", "source": "folder", "paths": [str(tmp_path)], "label": "selfie",
              "chain": ["fancy_decode", "face_area", "store"]}}})
    assert image_step(registry, chained) == "fancy_decode"  # what collection used wins
    assert steps_providing(registry.steps, "image", ["fancy_decode"]) == ["fancy_decode", "decode"]


def test_decode_puts_the_raw_exif_block_on_the_event():
    exif = Image.Exif()
    exif[0x010F] = "Apple"
    buf = io.BytesIO()
    Image.new("RGB", (96, 96), "gray").save(buf, "JPEG", exif=exif)
    data = buf.getvalue()
    event = ImageEvent(origin=Origin("test"), label="x", data=data)
    DecodeStep(DecodeStep.Options(), None).process(event)
    assert event.exif is not None and event.exif == exif_block(data)
    png = io.BytesIO()
    Image.new("RGB", (96, 96)).save(png, "PNG")
    event = ImageEvent(origin=Origin("test"), label="x", data=png.getvalue())
    DecodeStep(DecodeStep.Options(), None).process(event)
    assert event.exif is None


def test_training_and_predict_name_no_step_and_import_nothing_from_plugins():
    for module in ("model/dataset.py", "model/predict.py", "model/train.py", "model/report.py", "model/dask_train.py",
                   "model/counterfactual.py", "dataset_care/stored.py"):
        text = (REPO / "selfiescope" / "pipelines" / module).read_text()
        assert "exif_block" not in text and "plugins.features" not in text, module
        assert '"decode"' not in text and '["decode", "face_area"]' not in text, module


def test_a_step_without_declarations_provides_and_requires_nothing():
    class Bare(Step):
        name = "bare"

    assert Bare.provides == frozenset() and Bare.requires == frozenset()
