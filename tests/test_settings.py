import subprocess
import sys
from pathlib import Path

import pytest

from selfiescope.core.plugins import build_registry
from selfiescope.core.settings import SettingsError, env_overrides, load_settings
from selfiescope.core.checks import check_components

GOOD = """
[storage]
root = "{root}"

[pipelines.mine]
kind = "import"
source = "folder"
paths = ["photos"]
label = "selfie"
chain = ["decode", "face_area"]
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "settings.toml"
    p.write_text(text)
    return p


def problems_of(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(SettingsError) as info:
        load_settings(write(tmp_path, text), environ={})
    return info.value.problems


def test_good_file_loads(tmp_path):
    s = load_settings(write(tmp_path, GOOD.format(root=tmp_path)), environ={})
    p = s.pipelines["mine"]
    assert p.kind == "import" and p.label == "selfie" and p.chain == ["decode", "face_area"]
    assert s.browser.max_contexts == 4  # default


def test_repository_settings_file_is_valid():
    settings = load_settings(Path(__file__).resolve().parents[1] / "settings.toml", environ={})
    assert {"selfies", "portraits", "train", "demo"} <= set(settings.pipelines)
    assert check_components(settings, build_registry()) == []


def test_missing_key_is_named(tmp_path):
    text = GOOD.replace('label = "selfie"\n', "")
    assert problems_of(tmp_path, text.format(root=tmp_path)) == ["pipelines.mine.label: required key is missing"]


def test_wrong_type_is_named(tmp_path):
    text = GOOD.format(root=tmp_path) + '\n[browser]\nmax_contexts = "many"\n'
    (problem,) = problems_of(tmp_path, text)
    assert problem.startswith("browser.max_contexts:") and "integer" in problem and "'many'" in problem


def test_unknown_key_is_an_error(tmp_path):
    text = GOOD.format(root=tmp_path) + '\n[engine]\nworkerz = 3\n'
    assert problems_of(tmp_path, text) == ["engine.workerz: unknown key (check the spelling)"]


def test_unknown_key_inside_a_pipeline(tmp_path):
    text = GOOD.format(root=tmp_path).replace('label = "selfie"', 'label = "selfie"\nlimt = 5')
    assert problems_of(tmp_path, text) == ["pipelines.mine.limt: unknown key (check the spelling)"]


def test_unknown_pipeline_kind(tmp_path):
    text = GOOD.format(root=tmp_path).replace('kind = "import"', 'kind = "scrap"')
    (problem,) = problems_of(tmp_path, text)
    assert problem.startswith("pipelines.mine") and "'scrap'" in problem


def test_invalid_toml_says_where(tmp_path):
    (problem,) = problems_of(tmp_path, "[storage\nroot = 1")
    assert "not valid TOML" in problem and "line 1" in problem


def test_bad_plugin_name_in_chain(tmp_path):
    text = GOOD.format(root=tmp_path).replace('["decode", "face_area"]', '["decode", "face_areaa"]')
    settings = load_settings(write(tmp_path, text), environ={})
    (problem,) = check_components(settings, build_registry())
    assert problem.startswith("pipelines.mine.chain[1]: unknown plugin 'face_areaa'")
    assert "face_area" in problem  # lists what is available


def test_bad_plugin_option(tmp_path):
    text = GOOD.format(root=tmp_path) + '\n[plugins.folder]\nrecursive = "sometimes"\nbogus = 1\n'
    settings = load_settings(write(tmp_path, text), environ={})
    problems = check_components(settings, build_registry())
    assert any(p.startswith("plugins.folder.recursive:") for p in problems)
    assert "plugins.folder.bogus: unknown key (check the spelling)" in problems


def test_environment_overrides(tmp_path):
    env = {"SELFIESCOPE_BROWSER__MAX_CONTEXTS": "2", "SELFIESCOPE_STORAGE__ROOT": "/srv/photos",
           "SELFIESCOPE_INSTAGRAM_PASSWORD": "not-a-setting"}
    assert env_overrides(env) == {"browser": {"max_contexts": 2}, "storage": {"root": "/srv/photos"}}
    s = load_settings(write(tmp_path, GOOD.format(root=tmp_path)), environ=env)
    assert s.browser.max_contexts == 2 and str(s.storage.root) == "/srv/photos"


def test_environment_override_is_validated(tmp_path):
    (problem,) = problems_of_env(tmp_path, {"SELFIESCOPE_ENGINE__WORKERS": "0"})
    assert problem.startswith("engine.workers:")


def problems_of_env(tmp_path, env):
    with pytest.raises(SettingsError) as info:
        load_settings(write(tmp_path, GOOD.format(root=tmp_path)), environ=env)
    return info.value.problems


def test_credentials_in_settings_are_refused(tmp_path):
    text = GOOD.format(root=tmp_path) + '\n[plugins.instagram]\npassword = "hunter2"\n'
    (problem,) = problems_of(tmp_path, text)
    assert problem.startswith("plugins.instagram.password: credentials do not belong in settings")
    assert "hunter2" not in problem


def test_cli_reports_bad_settings_with_exit_2_and_no_traceback(tmp_path):
    path = write(tmp_path, GOOD.format(root=tmp_path) + '\n[engine]\nworkerz = 3\n')
    proc = subprocess.run([sys.executable, "-m", "selfiescope", "settings", "check", "--settings", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "engine.workerz: unknown key" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_cli_settings_check_catches_bad_plugin_name(tmp_path):
    path = write(tmp_path, GOOD.format(root=tmp_path).replace('"face_area"]', '"nope"]'))
    proc = subprocess.run([sys.executable, "-m", "selfiescope", "settings", "check", "--settings", str(path), "--json"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "pipelines.mine.chain[1]: unknown plugin 'nope'" in proc.stdout
