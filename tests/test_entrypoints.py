"""A third-party plugin package, installed through its entry point, appears and acts."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from package_helpers import cli, install_example
from PIL import Image

EXAMPLE = Path(__file__).parent / "example_plugin"


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory) -> dict[str, str]:
    env, source = install_example(tmp_path_factory, EXAMPLE)
    env["EXAMPLE_SOURCE"] = str(source)
    return env


def test_example_plugin_is_listed(installed_example):
    proc = cli(installed_example, "plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["plugin"]: r for r in json.loads(proc.stdout)}
    row = rows["sizegate"]
    assert row["origin"] == "selfiescope-sizegate 1.0.0" and row["status"] == "loaded"
    assert row["components"] == ["step:sizegate"] and row["commands"] == ["sizegate"]
    assert row["hooks"] == ["selfiescope_commands", "selfiescope_review_facets", "selfiescope_steps"]


def test_example_plugin_command_is_on_the_cli_and_runs(installed_example, tmp_path):
    assert "sizegate" in cli(installed_example, "--help").stdout
    (tmp_path / "big.bin").write_bytes(b"x" * 2000)
    (tmp_path / "small.bin").write_bytes(b"x" * 10)
    proc = cli(installed_example, "sizegate", str(tmp_path / "big.bin"), str(tmp_path / "small.bin"))
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.splitlines() == [f"keep {tmp_path / 'big.bin'}", f"drop {tmp_path / 'small.bin'}"]
    assert cli(installed_example, "sizegate", str(tmp_path / "big.bin")).returncode == 0


def test_disabling_the_example_plugin_removes_its_command(installed_example, tmp_path):
    """A disabled plugin's commands are gone: built with the disable list, the CLI has no
    ``sizegate`` (checked on the application the CLI builds, whatever the settings' shape)."""
    code = ("from selfiescope.cli.build import build_app, command_names, plugin_manager;"
            "print(sorted(command_names(build_app(plugin_manager(['sizegate']), ['sizegate'])[0])))")
    proc = subprocess.run([sys.executable, "-c", code], env=installed_example, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "'sizegate'" not in proc.stdout and "'scrape'" in proc.stdout


def test_example_plugin_is_absent_without_the_install():
    proc = cli(dict(os.environ), "plugins", "--json")
    assert "sizegate" not in {r["plugin"] for r in json.loads(proc.stdout)}


def test_example_plugin_acts_in_a_run(installed_example, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (400, 400), (200, 120, 90)).save(photos / "big.bmp")  # ~480 kB
    Image.new("RGB", (100, 100)).save(photos / "small.png")  # ~300 bytes
    (tmp_path / "settings.toml").write_text(
        f'[storage]\nroot = "{tmp_path / "data"}"\n[plugins.sizegate]\nmin_bytes = 5000\n'
    )
    proc = cli(installed_example, "import", str(photos), "--label", "selfie", "--chain", "decode,sizegate,store",
               "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    assert stats["accepted"] == 1 and stats["rejected_by_reason"] == {"too_few_bytes": 1}
    stored = list((tmp_path / "data" / "selfie").iterdir())
    assert len(stored) == 1 and stored[0].stat().st_size > 5000


def test_example_plugin_own_tests_pass_against_the_installed_copy(installed_example):
    """What a plugin author runs: unit tests plus the selfiescope_run fixture."""
    source = Path(installed_example["EXAMPLE_SOURCE"])
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_sizegate.py"],
                          cwd=source, env=installed_example, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 passed" in proc.stdout


def test_a_third_party_plugin_can_be_disabled_by_its_entry_point_name(installed_example, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (400, 400), (200, 120, 90)).save(photos / "big.bmp")
    (tmp_path / "settings.toml").write_text(f'[storage]\nroot = "{tmp_path / "data"}"\n[plugins]\ndisable = ["sizegate"]\n')
    proc = cli(installed_example, "import", str(photos), "--label", "selfie", "--chain", "decode,sizegate,store",
               "--json", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "step 'sizegate' is provided by plugin 'sizegate', which [plugins] disable turns off" in proc.stderr
    assert not (tmp_path / "data" / "selfie").exists()  # nothing ran
    proc = cli(installed_example, "import", str(photos), "--label", "selfie", "--chain", "decode,store",
               "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["accepted"] == 1
