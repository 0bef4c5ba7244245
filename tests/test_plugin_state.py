"""Plugins' own tables in the manifest: creation, migrations, the guarded handle, read-only
opens, forget reaching every namespace, and an old manifest's dedup tables adopted."""

from __future__ import annotations

import hashlib
import re
import shutil
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from selfiescope.core.manifest import Manifest
from selfiescope.core.plugin_state import (
    PluginState, StateError, StateTable, content_tables, forget_content,
)
from selfiescope.plugins.dedup_state import STATE as DEDUP

COUNTS = StateTable("seen", "CREATE TABLE {name} (content_hash TEXT PRIMARY KEY, label TEXT)",
                    content_hash_columns=("content_hash",))
V1 = PluginState("tally", (COUNTS,))


def add_note_column(state) -> None:
    if "note" not in state.columns("seen"):
        state.execute("ALTER TABLE {seen} ADD COLUMN note TEXT")


V2 = PluginState("tally", (StateTable("seen", "CREATE TABLE {name} (content_hash TEXT PRIMARY KEY, label TEXT,"
                                      " note TEXT)", content_hash_columns=("content_hash",)),),
                 migrations=("UPDATE {seen} SET label = upper(label)", add_note_column))


def fingerprint(root: Path) -> dict[str, tuple[str, float]]:
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime) for p in root.iterdir()}


def test_a_namespace_is_created_recorded_and_kept_to_its_own_tables(tmp_path: Path) -> None:
    m = Manifest.at_root(tmp_path)
    state = m.state(V1)
    state.execute("INSERT INTO {seen} VALUES (?, ?)", ("a" * 64, "selfie"))
    assert state.query("SELECT label FROM {seen}")[0][0] == "selfie"
    assert m.query("SELECT namespace, version FROM plugin_schema WHERE namespace='tally'")[0][:] == ("tally", 0)
    for sql in ("SELECT * FROM images", "DELETE FROM tombstones", "PRAGMA journal_mode=DELETE",
                "ATTACH DATABASE ':memory:' AS x", "CREATE TABLE other (a)", "SELECT * FROM dedup__phashes",
                "DROP TABLE {seen}", "BEGIN"):
        with pytest.raises(StateError, match="outside its own tables"):
            state.query(sql) if sql.startswith("SELECT") else state.execute(sql)
    with pytest.raises(StateError, match="not one of its tables"):
        state.query("SELECT * FROM {images}")
    # core's own statements are not hindered after a refused one
    assert m.query("SELECT COUNT(*) FROM images")[0][0] == 0
    m.close()


def test_migrations_run_in_order_on_an_older_manifest(tmp_path: Path) -> None:
    m = Manifest.at_root(tmp_path)
    m.state(V1).execute("INSERT INTO {seen} VALUES (?, ?)", ("a" * 64, "selfie"))
    m.close()
    m = Manifest.at_root(tmp_path)
    state = m.state(V2)
    assert [tuple(r) for r in state.query("SELECT label, note FROM {seen}")] == [("SELFIE", None)]
    assert m.query("SELECT version FROM plugin_schema WHERE namespace='tally'")[0][0] == 2
    m.close()
    # a fresh manifest runs them too, on the tables as declared: the callable checks its column
    fresh = Manifest.at_root(tmp_path / "fresh")
    assert fresh.state(V2).columns("seen") == ["content_hash", "label", "note"]
    fresh.close()


def test_a_failing_migration_changes_nothing(tmp_path: Path) -> None:
    m = Manifest.at_root(tmp_path)
    m.state(V1).execute("INSERT INTO {seen} VALUES (?, ?)", ("a" * 64, "selfie"))

    def broken(state) -> None:
        state.execute("UPDATE {seen} SET label='changed'")
        raise RuntimeError("half way")

    with pytest.raises(RuntimeError, match="half way"):
        m.state(PluginState("tally", (COUNTS,), migrations=("DELETE FROM {seen}", broken)))
    assert m.query("SELECT version FROM plugin_schema WHERE namespace='tally'")[0][0] == 0
    assert [tuple(r) for r in m.query("SELECT * FROM tally__seen")] == [("a" * 64, "selfie")]
    # and a namespace whose creation failed leaves no table behind
    with pytest.raises(RuntimeError, match="half way"):
        m.state(PluginState("fresh", (COUNTS,), migrations=(broken,)))
    assert not m.query("SELECT 1 FROM sqlite_master WHERE name='fresh__seen'")
    m.close()


def test_a_newer_version_is_a_clear_error_and_the_cli_says_so(tmp_path: Path) -> None:
    from selfiescope.exits import EXIT_USAGE, classify

    m = Manifest.at_root(tmp_path)
    m.state(V2)
    m.close()
    m = Manifest.at_root(tmp_path)
    with pytest.raises(StateError, match="version 2, newer than this plugin knows") as info:
        m.state(V1)
    code, message = classify(info.value)
    assert code == EXIT_USAGE and "upgrade the plugin" in message and "\n" not in message
    m.close()


def test_read_only_opens_read_and_never_write(tmp_path: Path) -> None:
    m = Manifest.at_root(tmp_path)
    m.state(V1).execute("INSERT INTO {seen} VALUES (?, ?)", ("a" * 64, "selfie"))
    m.close()
    before = fingerprint(tmp_path)
    # read_only (forget --dry-run) changes no byte; for_reading's read-only mode is for unwritable roots
    for ro in (Manifest.read_only(tmp_path), Manifest(tmp_path / "manifest.sqlite", readonly=True)):
        state = ro.state(V1)
        assert state.query("SELECT label FROM {seen}")[0][0] == "selfie"
        with pytest.raises(StateError, match="read-only"):
            state.execute("DELETE FROM {seen}")
        assert ro.state(PluginState("unknown", (COUNTS,))).query("SELECT * FROM {seen}") == []  # nothing kept yet
        with pytest.raises(StateError, match="older version"):
            ro.state(V2)
        ro.close()
        assert fingerprint(tmp_path)["manifest.sqlite"] == before["manifest.sqlite"]
        if ro.path.with_name("manifest.sqlite-wal").exists():
            break
        assert fingerprint(tmp_path) == before


@hsettings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hashes=st.lists(st.sampled_from([c * 64 for c in "0123456789abcdef"]), min_size=1, max_size=12, unique=True),
       data=st.data())
def test_forget_content_removes_exactly_the_named_rows_of_every_namespace(tmp_path_factory, hashes, data) -> None:
    """Invariant: after forget_content, no table a namespace declared holds a forgotten hash in
    any content-hash column, and every other row is still there; a namespace no loaded plugin
    declares (the plugin was uninstalled) is reached too, through plugin_schema."""
    root = tmp_path_factory.mktemp("forget")
    pairs = PluginState("pairs", (StateTable("pair", "CREATE TABLE {name} (a TEXT, b TEXT)", ("a", "b")),))
    m = Manifest.at_root(root)
    m.state(V1).executemany("INSERT INTO {seen} VALUES (?, ?)", [(h, "x") for h in hashes])
    m.state(pairs).executemany("INSERT INTO {pair} VALUES (?, ?)", list(zip(hashes, reversed(hashes))))
    m.close()
    gone = set(data.draw(st.lists(st.sampled_from(hashes), unique=True)))
    m = Manifest.at_root(root)  # a new open: neither declaration is loaded by it
    with m.transaction() as db:
        marks = ",".join("?" * len(gone)) or "NULL"
        forget_content(db, marks, tuple(sorted(gone)))
    assert {r[0] for r in m.query("SELECT content_hash FROM tally__seen")} == set(hashes) - gone
    assert {(r[0], r[1]) for r in m.query("SELECT a, b FROM pairs__pair")} == {
        (a, b) for a, b in zip(hashes, reversed(hashes)) if a not in gone and b not in gone}
    m.close()
    shutil.rmtree(root)


def test_forget_content_ignores_a_forged_table_list(tmp_path: Path) -> None:
    m = Manifest.at_root(tmp_path)
    m.execute("INSERT INTO plugin_schema VALUES ('x', 0, ?, 0)", ('{"images; DROP TABLE images": ["a"], "runs": ["id"]}',))
    with m.transaction() as db:
        assert "runs" not in content_tables(db)
        forget_content(db, "?", ("a",))
    assert m.query("SELECT COUNT(*) FROM images")[0][0] == 0
    m.close()


# --- an old manifest: dedup's tables were core's ----------------------------------------
OLD_TABLES = """
CREATE TABLE conflicts (
    content_hash TEXT, other_hash TEXT, label TEXT, other_label TEXT, distance INTEGER, at REAL
);
CREATE TABLE phashes (
    content_hash TEXT PRIMARY KEY, phash INTEGER NOT NULL, label TEXT, added REAL, centre INTEGER
);
CREATE INDEX conflicts_hash ON conflicts(content_hash);
CREATE INDEX conflicts_other ON conflicts(other_hash);
"""


def make_old(root: Path) -> dict[str, list[tuple]]:
    """Turn a manifest into one as the version before plugin state wrote it: the index and
    conflicts in core tables, no plugin_schema."""
    db = sqlite3.connect(root / "manifest.sqlite")
    db.executescript(OLD_TABLES)
    db.execute("INSERT INTO phashes SELECT content_hash, phash, label, added, centre FROM dedup__phashes")
    db.execute("INSERT INTO conflicts SELECT * FROM dedup__conflicts")
    kept = {t: db.execute(f"SELECT * FROM {t} ORDER BY content_hash").fetchall() for t in ("phashes", "conflicts")}
    # Every plugin's tables go (another test's plugin may have declared one in this process).
    plugin_tables = db.execute("SELECT name FROM sqlite_master WHERE type='table' AND instr(name, '__') > 0").fetchall()
    for (table,) in plugin_tables:
        db.execute(f'DROP TABLE "{table}"')
    db.execute("DROP TABLE plugin_schema")
    db.commit()
    db.close()
    return kept


def test_an_old_manifest_is_upgraded_and_dedup_behaves_the_same(tmp_path: Path) -> None:
    from PIL import Image
    from test_dedup import copies, jpeg, pattern, run_folder
    import asyncio

    originals, later = tmp_path / "orig", tmp_path / "later"
    originals.mkdir(), later.mkdir()
    for seed in range(3):
        (originals / f"p{seed}.jpg").write_bytes(jpeg(pattern(seed)))
        for kind, data in copies(pattern(seed)).items():
            (later / f"p{seed}-{kind}.jpg").write_bytes(data)
    (later / "new.jpg").write_bytes(jpeg(pattern(99)))
    root = tmp_path / "data"
    asyncio.run(run_folder(root, originals, "selfie"))
    twin = tmp_path / "twin"  # the same dataset, never downgraded: what dedup decides there is the reference
    shutil.copytree(root, twin)
    conflict = tmp_path / "conflict"
    conflict.mkdir()
    (conflict / "c.jpg").write_bytes(jpeg(pattern(0), 60))
    asyncio.run(run_folder(root, conflict, "portrait"))
    asyncio.run(run_folder(twin, conflict, "portrait"))
    kept = make_old(root)
    assert kept["phashes"] and kept["conflicts"]

    from selfiescope.core.settings import settings_from_dict
    from selfiescope.pipelines.dataset_care.card import build_card
    from selfiescope.pipelines.dataset_care.forget import ForgetRequest, forget

    # A dry run reads the older manifest as this version does (no plugin tables yet, the legacy
    # ones through what dedup adopts) and writes nothing.
    manifest_bytes = (root / "manifest.sqlite").read_bytes()
    dry = Manifest.read_only(root)
    from selfiescope.core.app import App as _App
    assert build_card(_App.create(settings_from_dict({"storage": {"root": str(root)}})), dry)["conflicts"] == \
        len(kept["conflicts"])
    dry.close()
    labels = asyncio.run(forget(_App.create(settings_from_dict({"storage": {"root": str(root)}})),
                                ForgetRequest(labels=["selfie"]), dry_run=True))
    assert labels.dry_run and sum(1 for match in labels.images if match.decision == "accepted") == 3
    assert (root / "manifest.sqlite").read_bytes() == manifest_bytes

    old = Manifest(root / "manifest.sqlite", readonly=True)  # a read-only dataset's card reads the old table
    from selfiescope.core.app import App
    assert build_card(App.create(settings_from_dict({"storage": {"root": str(root)}})), old)["conflicts"] == len(kept["conflicts"])
    old.close()
    m = Manifest.at_root(root)
    assert not m.query("SELECT 1 FROM sqlite_master WHERE name IN ('phashes', 'conflicts')")
    assert m.query("SELECT version FROM plugin_schema WHERE namespace='dedup'")[0][0] == DEDUP.version
    assert [tuple(r) for r in m.query("SELECT content_hash, phash, label, added, centre FROM dedup__phashes"
                                      " ORDER BY content_hash")] == kept["phashes"]
    assert [tuple(r) for r in m.query("SELECT * FROM dedup__conflicts ORDER BY content_hash")] == kept["conflicts"]
    card = build_card(App.create(settings_from_dict({"storage": {"root": str(root)}})), m)  # the count comes from dedup's facts
    assert card["conflicts"] == len(kept["conflicts"]) == card["plugin_facts"]["dedup"]["conflicts"]
    m.close()

    decisions = {}
    for where in (root, twin):
        stats = asyncio.run(run_folder(where, later, "selfie"))
        decisions[where] = {(Path(r[0]).name, r[1], r[2]) for r in Manifest.at_root(where).query(
            "SELECT origin_path, decision, reject_code FROM images WHERE origin_path LIKE '%later%'")}
        assert stats is not None
    assert decisions[root] == decisions[twin]
    assert ("new.jpg", "accepted", None) in decisions[root]
    assert sum(code == "near_duplicate" for _, _, code in decisions[root]) >= 6


def test_core_records_the_public_face_detector_field_not_a_step_note(tmp_path: Path) -> None:
    """The manifest's face_detector column comes from ``ImageEvent.face_detector``; a step's
    private note of the same name is only part of the saved notes."""
    import json

    from selfiescope.api import Decision, ImageEvent, Origin

    m = Manifest.at_root(tmp_path)
    for name, field, note in (("a", None, "private"), ("b", "hog", None)):
        event = ImageEvent(origin=Origin(source="test"), label="selfie", data=name.encode())
        event.face_detector = field
        if note:
            event.notes["face_detector"] = note
        event.decision = Decision.ACCEPTED
        m.record(event)
    rows = {r["content_hash"]: (r["face_detector"], r["notes"]) for r in m.query("SELECT * FROM images")}
    assert rows[hashlib.sha256(b"a").hexdigest()][0] is None
    assert json.loads(rows[hashlib.sha256(b"a").hexdigest()][1]) == {"face_detector": "private"}
    assert rows[hashlib.sha256(b"b").hexdigest()][0] == "hog"
    m.close()


def test_two_plugins_cannot_share_a_namespace() -> None:
    from selfiescope.core.plugins import build_registry
    from selfiescope.api import Step, hookimpl

    class Impostor(Step):
        name = "impostor"
        state = PluginState("dedup", (COUNTS,))

    class Plugin:
        @hookimpl
        def selfiescope_steps(self):
            return [Impostor]

    with pytest.raises(StateError, match="'dedup' is declared twice.*step 'impostor'"):
        build_registry(plugins=[Plugin()], entrypoints=False)
    # the same declaration met again (a module imported twice) is no conflict
    from selfiescope.core.plugin_state import declare
    assert declare(PluginState("dedup", DEDUP.tables, DEDUP.migrations, DEDUP.adopts)).namespace == "dedup"


def test_forget_reaches_the_old_core_tables_until_they_are_adopted(tmp_path: Path) -> None:
    """A manifest whose dedup tables were not adopted yet (dedup disabled since the upgrade):
    the old tables name content hashes too, and forget clears them."""
    m = Manifest.at_root(tmp_path)
    for statement in OLD_TABLES.split(";"):
        if statement.strip():
            m.execute(statement)
    m.execute("INSERT INTO phashes VALUES (?, 1, 'selfie', 0, NULL)", ("a" * 64,))
    m.execute("INSERT INTO conflicts VALUES (?, ?, 'selfie', 'portrait', 1, 0)", ("b" * 64, "a" * 64))
    m.execute("INSERT INTO phashes VALUES (?, 2, 'selfie', 0, NULL)", ("c" * 64,))
    with m.transaction() as db:
        removed = forget_content(db, "?", ("a" * 64,))
    assert removed["phashes"] == 1 and removed["conflicts"] == 1
    assert [r[0] for r in m.query("SELECT content_hash FROM phashes")] == ["c" * 64]
    m.close()


def test_a_kill_in_the_middle_of_a_migration_leaves_the_manifest_as_it_was(tmp_path: Path) -> None:
    import subprocess
    import sys

    m = Manifest.at_root(tmp_path)
    m.state(V1).executemany("INSERT INTO {seen} VALUES (?, ?)", [(c * 64, "selfie") for c in "abc"])
    m.close()
    script = f"""
import os, signal
from selfiescope.core.manifest import Manifest
from selfiescope.core.plugin_state import PluginState
from test_plugin_state import COUNTS

def die(state):
    state.execute("DELETE FROM {{seen}}")
    os.kill(os.getpid(), signal.SIGKILL)

Manifest.at_root({str(tmp_path)!r}).state(PluginState("tally", (COUNTS,), migrations=(die,)))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).parent)
    assert proc.returncode == -9, proc.stderr
    m = Manifest.at_root(tmp_path)
    assert m.query("SELECT version FROM plugin_schema WHERE namespace='tally'")[0][0] == 0
    assert m.query("SELECT COUNT(*) FROM tally__seen")[0][0] == 3
    assert m.state(V2).query("SELECT COUNT(*) FROM {seen}")[0][0] == 3  # and the next open upgrades it
    m.close()


@pytest.mark.parametrize("verb", ["SELECT * FROM {t}", "DELETE FROM {t}", "UPDATE {t} SET rowid = rowid",
                                  "INSERT INTO {t} DEFAULT VALUES", "DROP TABLE {t}", "CREATE INDEX x ON {t}(rowid)",
                                  "SELECT * FROM {{seen}} WHERE EXISTS (SELECT 1 FROM {t})"])
def test_no_core_table_is_reachable_through_a_handle(tmp_path: Path, verb: str) -> None:
    """Invariant: whatever the statement, a handle touches no table of core's schema."""
    import re

    from selfiescope.core.manifest import SCHEMA

    m = Manifest.at_root(tmp_path)
    state = m.state(V1)
    before = {t: m.query(f"SELECT COUNT(*) FROM {t}")[0][0] for t in re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", SCHEMA)}
    for table in before:
        with pytest.raises(StateError, match="outside its own tables"):
            sql = verb.format(t=table)
            state.query(sql) if sql.startswith("SELECT") else state.execute(sql)
    assert {t: m.query(f"SELECT COUNT(*) FROM {t}")[0][0] for t in before} == before
    m.close()


@pytest.mark.parametrize("adopted", ["runs", "plugin_schema", "images", "sqlite_master", "SQLITE_sequence",
                                     "dedup__phashes", "tally__seen"])
def test_a_namespace_cannot_adopt_core_schema_or_another_namespaces_tables(adopted: str, tmp_path: Path) -> None:
    """Invariant: adopting lets a migration alter and drop a table, so only a legacy table
    outside core and every namespace can be adopted; the declaration itself is refused."""
    with pytest.raises(StateError, match=f"cannot adopt table {adopted!r}"):
        PluginState("evil", (COUNTS,), migrations=(f"DROP TABLE {adopted}",), adopts=(adopted,))
    m = Manifest.at_root(tmp_path)  # nothing ran: core's tables are whole
    assert m.query("SELECT COUNT(*) FROM sqlite_master WHERE name IN ('runs', 'plugin_schema')")[0][0] == 2
    m.close()


def test_a_legacy_table_is_adopted_by_one_namespace_only() -> None:
    from selfiescope.core.plugin_state import declare

    with pytest.raises(StateError, match="'phashes' is adopted by namespace 'dedup'"):
        declare(PluginState("thief", (COUNTS,), adopts=("phashes",)))


@pytest.mark.parametrize("change", ["create", "migrations", "adopts"])
def test_a_namespace_declared_again_differently_is_refused(change: str) -> None:
    """Invariant: one namespace, one declaration; the same table names with other columns,
    another migration list or other adopted tables are a different declaration."""
    from selfiescope.core.plugin_state import declare

    base = PluginState(f"shape_{change}", (COUNTS,), migrations=("UPDATE {seen} SET label = label",))
    declare(base)
    other = {
        "create": PluginState(base.namespace, (StateTable("seen", COUNTS.create.replace("label TEXT", "label TEXT, x INT"),
                                                          COUNTS.content_hash_columns),), base.migrations),
        "migrations": PluginState(base.namespace, (COUNTS,), ("DELETE FROM {seen}",)),
        "adopts": PluginState(base.namespace, (COUNTS,), base.migrations, adopts=(f"old_{change}",)),
    }[change]
    with pytest.raises(StateError, match="declared twice"):
        declare(other)
    assert declare(PluginState(base.namespace, (COUNTS,), base.migrations)) is not None  # identical: the same one


def test_two_plugins_declaring_one_namespace_alike_are_refused() -> None:
    from selfiescope.core.plugins import build_registry
    from selfiescope.api import Step, hookimpl

    def plugin(step_name: str) -> object:
        cls = type(f"Step_{step_name}", (Step,), {"name": step_name, "state": PluginState("twin", (COUNTS,)),
                                                   "process": lambda self, event: None})

        class Plugin:
            @hookimpl
            def selfiescope_steps(self):
                return [cls]
        return Plugin()

    assert "twin" in build_registry(plugins=[plugin("twin_a")], entrypoints=False).states
    with pytest.raises(StateError, match="'twin' is declared twice.*step 'twin_b'"):
        build_registry(plugins=[plugin("twin_a"), plugin("twin_b")], entrypoints=False)


def test_a_dry_run_refuses_plugin_tables_newer_than_the_plugin_as_every_command_does(tmp_path: Path) -> None:
    m = Manifest.at_root(tmp_path)
    m.state(DEDUP)
    m.execute("UPDATE plugin_schema SET version = 99 WHERE namespace = 'dedup'")
    m.close()
    with pytest.raises(StateError, match="'dedup' tables are at version 99, newer than this plugin knows"):
        Manifest.read_only(tmp_path)
    with pytest.raises(StateError, match="'dedup' tables are at version 99, newer than this plugin knows"):
        Manifest.at_root(tmp_path)


def test_no_module_but_dedups_own_names_its_tables() -> None:
    """Invariant: a plugin's state is reached through its handle and hooks
    (``selfiescope_label_changed``, ``selfiescope_linked_images``), never by table name."""
    package = Path(__file__).resolve().parent.parent / "selfiescope"
    own = {package / "plugins" / "dedup.py", package / "plugins" / "dedup_state.py"}
    naming = [str(p.relative_to(package)) for p in sorted(package.rglob("*.py"))
              if p not in own and re.search(r"[\"']dedup__\w+|\b(?:FROM|UPDATE|INTO|JOIN)\s+(?:dedup__\w+|phashes|conflicts)\b",
                                            p.read_text(encoding="utf-8"))]
    assert naming == []
