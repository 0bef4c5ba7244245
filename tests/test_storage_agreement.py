"""Storage and manifest agree after any sequence of imports, kills and forgets, and
`selfiescope fsck` finds (and with --repair mends) every way they can part."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from PIL import Image
from privacy_helpers import accepted_locations, import_folder, jpeg, settings_for, stored_files, write_settings
from typer.testing import CliRunner

from selfiescope.cli import app
from selfiescope.core.manifest import Manifest

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]
N = 8


def resized(data: bytes, side: int = 80) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).resize((side, side), Image.LANCZOS).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def folders(tmp: Path) -> tuple[Path, Path]:
    """A: N photos; B: the same photos resized (near-duplicates that dedup catches)."""
    a, b = tmp / "A", tmp / "B"
    a.mkdir(exist_ok=True)
    b.mkdir(exist_ok=True)
    for i in range(N):
        data = jpeg(100 + i)
        (a / f"a{i}.jpg").write_bytes(data)
        (b / f"b{i}.jpg").write_bytes(resized(data))
    return a, b


def cli(root: Path, *args: str):
    return runner.invoke(app, [*args, "--settings", str(write_settings(root))])


KILLED_IMPORT = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from selfiescope.core.manifest import Manifest
    from selfiescope.core.settings import ScrapePipeline, settings_from_dict
    from selfiescope.core.app import App
    from selfiescope.pipelines.collecting.collect import collect

    real, seen = Manifest.record, []

    def record(self, event, run_id=None):  # SIGKILL once the 3rd image is written, before its row commits
        if event.location:
            seen.append(event.location)
            if len(seen) == 3:
                os.kill(os.getpid(), signal.SIGKILL)
        return real(self, event, run_id)

    Manifest.record = record
    root, folder = sys.argv[1], sys.argv[2]
    settings = settings_from_dict({"storage": {"root": root}, "engine": {"workers": 1, "threads": 1}})
    pipeline = ScrapePipeline(kind="import", source="folder", paths=[folder], label="portrait",
                              chain=["decode", "dedup", "store"])
    asyncio.run(collect(App.create(settings), "import", pipeline=pipeline))
    """
)


def test_a_write_killed_before_its_row_leaves_no_file_behind(tmp_path: Path) -> None:
    """SIGKILL of import A between a write and its row, import B of resized copies, A again,
    forget the label: every file is gone with its rows (an orphan survived all of it)."""
    a, b = folders(tmp_path)
    root = tmp_path / "data"
    script = tmp_path / "killed.py"
    script.write_text(KILLED_IMPORT)
    env = {**os.environ, "PYTHONPATH": str(REPO), "SELFIESCOPE_NO_ENTRYPOINTS": "1"}
    proc = subprocess.run([sys.executable, str(script), str(root), str(a)], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert len(stored_files(root)) == 3 and len(accepted_locations(root)) == 2  # the third: written, never recorded

    settings = settings_for(root)
    assert import_folder(settings, b, "portrait").ok
    assert stored_files(root) == accepted_locations(root)  # the unrecorded write was swept before B ran
    import_folder(settings, a, "portrait")
    assert stored_files(root) == accepted_locations(root)
    gone = cli(root, "forget", "--label", "portrait", "--yes")
    assert gone.exit_code == 0, gone.output
    assert stored_files(root) == set() == accepted_locations(root)
    assert json.loads(cli(root, "fsck", "--json").stdout)["ok"] is True


@hsettings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.sampled_from(["A", "B", "A-lost", "B-lost", "forget"]), min_size=2, max_size=4))
def test_any_sequence_of_imports_lost_records_and_forgets_keeps_storage_and_manifest_agreeing(
    tmp_path_factory, ops: list[str],
) -> None:
    """``*-lost``: the 2nd image's row is lost after its write (as a kill there would lose it).
    After every command that ran to its end, the files are exactly what the rows name."""
    tmp = tmp_path_factory.mktemp("seq")
    a, b = folders(tmp)
    root = tmp / "data"
    settings = settings_for(root)
    real = Manifest.record
    for op in ops:
        if op == "forget":
            if (root / "manifest.sqlite").exists():
                assert cli(root, "forget", "--label", "portrait", "--yes").exit_code in (0, 1)
            assert stored_files(root) == accepted_locations(root), ops
            continue
        seen: list[str] = []

        def record(self, event, run_id=None):  # noqa: ANN001
            if event.location:
                seen.append(event.location)
                if len(seen) == 2:
                    raise OSError(5, "I/O error")  # the row is lost; the file was written
            return real(self, event, run_id)

        with pytest.MonkeyPatch.context() as mp:
            if op.endswith("-lost"):
                mp.setattr(Manifest, "record", record)
            import_folder(settings, a if op.startswith("A") else b, "portrait")
        if not op.endswith("-lost"):
            assert stored_files(root) == accepted_locations(root), ops
    if (root / "manifest.sqlite").exists():
        report = cli(root, "fsck", "--repair", "--json")
        assert report.exit_code == 0, report.output
        assert stored_files(root) == accepted_locations(root)


def test_fsck_finds_and_repairs_orphans_missing_and_changed_files(tmp_path: Path) -> None:
    a, _ = folders(tmp_path)
    root = tmp_path / "data"
    settings = settings_for(root)
    assert import_folder(settings, a, "selfie").accepted == N
    assert cli(root, "fsck").exit_code == 0
    files = sorted(stored_files(root))
    orphan = root / "selfie" / "0123456789abcdef.jpg"
    shutil.copy(root / files[0], orphan)
    unknown = root / "selfie" / "notes.txt"
    unknown.write_text("mine")
    (root / files[1]).unlink()
    changed = root / files[2]
    changed.write_bytes(changed.read_bytes()[:-10])

    found = cli(root, "fsck", "--json")
    assert found.exit_code == 1, found.output
    kinds = {f["location"]: f["kind"] for f in json.loads(found.stdout)["findings"]}
    assert kinds == {"selfie/0123456789abcdef.jpg": "orphan", "selfie/notes.txt": "unknown",
                     files[1]: "missing", files[2]: "mismatch"}
    assert orphan.exists() and changed.exists()  # a check changes nothing

    mended = cli(root, "fsck", "--repair")
    assert mended.exit_code == 0, mended.output
    quarantine = root / ".selfiescope-quarantine" / "selfie"
    assert sorted(p.name for p in quarantine.iterdir()) == sorted([orphan.name, changed.name])
    assert unknown.read_text() == "mine"  # not a name selfiescope writes: never touched
    assert stored_files(root) - {"selfie/notes.txt"} == accepted_locations(root)
    assert cli(root, "fsck").exit_code == 0
    again = import_folder(settings, a, "selfie")  # the two rows removed are fetched again
    assert again.accepted == 2, again.as_dict()
    assert stored_files(root) - {"selfie/notes.txt"} == accepted_locations(root)
    assert len(accepted_locations(root)) == N
