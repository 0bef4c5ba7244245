"""Tables a plugin keeps in the manifest, under its own namespace.

A plugin declares its state once (a :class:`PluginState`: a namespace, its tables with their
``CREATE`` statements, an ordered list of migrations) and sets it as the ``state`` attribute
of its component; the component reaches its tables through ``self.run.state(namespace)``, a
:class:`StateHandle`. Core creates and migrates the tables the first time a writable manifest
meets the declaration (when the manifest opens, or at the first handle), in one transaction,
and records the namespace's version and tables in ``plugin_schema``.

Why table-name prefixes (``dedup__phashes``) rather than an ATTACHed database per plugin: the
manifest runs in WAL mode, where a transaction over several attached files is not atomic, and
``forget`` must delete an image's rows from core's tables and every plugin's in one
transaction. Prefixed tables live in the one file, so that transaction stays atomic, a copy
or backup of ``manifest.sqlite`` holds everything, and a read-only open reads them all.

The handle is narrow: SQLite's authorizer refuses, while a handle's statement is prepared,
any access to a table outside the namespace (core's tables are read through the manifest's
public methods), any PRAGMA, ATTACH or transaction statement. Each table names its columns
that hold a content hash (``content_hash_columns``); ``forget`` deletes the rows naming a
forgotten image from every table ``plugin_schema`` lists, whether or not the plugin that made
it is still installed: the rows may describe a person's photo.

Versions: a declaration's version is ``len(migrations)``. A namespace new to a manifest gets
its tables as declared and then runs every migration, so a migration must hold on the tables
as declared today (one that adopts rows kept elsewhere before, or a callable that checks
:meth:`StateHandle.columns` before it adds one). A manifest at an older version runs the
migrations after its version; one at a newer version than the plugin knows is refused
(:class:`StateError`), as is any change to a read-only manifest.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

from .errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    from .manifest import Manifest

log = logging.getLogger("selfiescope.plugin_state")
SEPARATOR = "__"
_NAMESPACE = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")  # no "__": it separates namespace and table
_TABLE = _NAMESPACE
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_SCHEMA_TABLES = {"sqlite_master", "sqlite_schema", "sqlite_sequence"}
# Core's tables that plugins took over: a manifest from before still has them until the plugin's
# migration adopts their rows. ``forget`` still reaches them meanwhile (they name content hashes).
LEGACY_CONTENT_TABLES: dict[str, tuple[str, ...]] = {
    "phashes": ("content_hash",),
    "conflicts": ("content_hash", "other_hash"),
}


def core_tables() -> frozenset[str]:
    """The tables core's schema makes (read from it, so a table added there is covered)."""
    from .manifest import SCHEMA

    return frozenset(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", SCHEMA))


def _not_adoptable(table: str) -> str | None:
    """Why a namespace may not adopt ``table`` (None when it may): adopting lets its migrations
    read, alter and drop the table, so only a legacy table outside core and every namespace."""
    if not _TABLE.fullmatch(table):
        return "not a plain table name (another namespace's tables are its own)"
    if table.lower().startswith("sqlite_"):
        return "SQLite's own table"
    if table in LEGACY_CONTENT_TABLES:
        return None
    if table in core_tables():
        return "one of core's tables"
    return None


class StateError(UsageError, RuntimeError):
    """A plugin's tables cannot be used as declared (a newer manifest, a read-only one, a bad
    declaration, a statement outside the namespace): phrased for the user."""


@dataclass(frozen=True)
class StateTable:
    """One table of a namespace.

    ``create``: its ``CREATE TABLE`` statement (and any ``CREATE INDEX``, separated by ``;``)
    with the table written ``{name}``, e.g. ``"CREATE TABLE {counts} (label TEXT PRIMARY KEY,
    n INTEGER)"``: core puts the prefixed name in. ``content_hash_columns``: the columns that
    hold an image's content hash; ``forget`` deletes every row where one of them names a
    forgotten image.
    """

    name: str
    create: str
    content_hash_columns: tuple[str, ...] = ()


Migration = Union[str, Callable[["StateHandle"], None]]


@dataclass(frozen=True)
class PluginState:
    """A plugin's declaration of the tables it keeps in the manifest.

    ``migrations``: SQL scripts (tables written ``{name}``) or callables taking the
    :class:`StateHandle`, run in order, in the transaction that creates or upgrades the tables.
    ``adopts``: tables of an older manifest, outside every namespace, whose rows this plugin's
    migrations move into its own tables; only a migration may read or drop them.
    ``facts``: what the dataset card says of this state (``{name: JSON value}``), read through
    a handle; e.g. how many photos were met under two labels.
    """

    namespace: str
    tables: tuple[StateTable, ...]
    migrations: tuple[Migration, ...] = ()
    adopts: tuple[str, ...] = ()
    facts: Callable[["StateHandle"], dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        if not _NAMESPACE.fullmatch(self.namespace) or len(self.namespace) > 40:
            raise StateError(f"plugin state namespace {self.namespace!r}: lower-case letters, digits and single "
                             "underscores, starting with a letter")
        for table in self.tables:
            if not _TABLE.fullmatch(table.name):
                raise StateError(f"plugin state {self.namespace}: table name {table.name!r} is not a plain name")
            for column in table.content_hash_columns:
                if not re.fullmatch(r"\w+", column):
                    raise StateError(f"plugin state {self.namespace}.{table.name}: bad column {column!r}")
        for adopted in self.adopts:
            if why := _not_adoptable(adopted):
                raise StateError(f"plugin state {self.namespace}: it cannot adopt table {adopted!r}: {why}")

    @property
    def version(self) -> int:
        return len(self.migrations)

    def table(self, name: str) -> str:
        """The table's name in the manifest."""
        if name not in {t.name for t in self.tables}:
            raise StateError(f"plugin state {self.namespace} declares no table {name!r}")
        return f"{self.namespace}{SEPARATOR}{name}"

    def full_names(self) -> dict[str, str]:
        return {t.name: self.table(t.name) for t in self.tables}

    def sql(self, text: str) -> str:
        """``text`` with each ``{table}`` replaced by its name in the manifest."""
        names = self.full_names()

        def name(match: re.Match[str]) -> str:
            if match.group(1) not in names:
                raise StateError(f"plugin state {self.namespace}: {{{match.group(1)}}} is not one of its tables "
                                 f"({', '.join(sorted(names))})")
            return names[match.group(1)]

        return _PLACEHOLDER.sub(name, text)

    def record(self) -> str:
        """What ``plugin_schema.tables`` keeps: each table and its content-hash columns."""
        return json.dumps({self.table(t.name): list(t.content_hash_columns) for t in self.tables}, sort_keys=True)


_DECLARED: dict[str, PluginState] = {}
_DECLARED_LOCK = threading.Lock()


def _shape(state: PluginState) -> tuple[Any, ...]:
    """Everything that decides what a declaration does to a manifest: its tables as created,
    its migrations (SQL text, or the callable's module and name), what it adopts."""
    migrations = tuple(m if isinstance(m, str) else (getattr(m, "__module__", None), getattr(m, "__qualname__", repr(m)))
                       for m in state.migrations)
    return (state.tables, migrations, tuple(sorted(state.adopts)))


def declare(state: PluginState) -> PluginState:
    """Make a declaration known to every manifest this process opens from now on (returns it,
    so a module can write ``STATE = declare(PluginState(...))``). Two different declarations of
    one namespace are an error, as is adopting a table another namespace adopts."""
    with _DECLARED_LOCK:
        known = _DECLARED.get(state.namespace)
        # The same declaration met again (a module imported again) is no conflict.
        if known is not None and _shape(known) != _shape(state):
            raise StateError(f"plugin state namespace {state.namespace!r} is declared twice, with different tables, "
                             "migrations or adopted tables: two plugins cannot share a namespace")
        for other in _DECLARED.values():
            shared = set(other.adopts) & set(state.adopts)
            if other.namespace != state.namespace and shared:
                raise StateError(f"plugin state {state.namespace}: table {sorted(shared)[0]!r} is adopted by "
                                 f"namespace {other.namespace!r} already")
        _DECLARED.setdefault(state.namespace, state)
    return state


def declared() -> list[PluginState]:
    with _DECLARED_LOCK:
        return list(_DECLARED.values())


def statements(script: str) -> Iterator[str]:
    """The complete SQL statements of a script, one at a time (``executescript`` would end the
    transaction the migration runs in)."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\r\n;"):
                yield pending.strip()
            pending = ""
    if pending.strip(" \t\r\n;"):
        raise StateError(f"an incomplete SQL statement: {pending.strip()[:80]!r}")


class StateHandle:
    """A plugin's access to its own tables (and nothing else) in one manifest.

    Write SQL with tables as ``{name}``: ``handle.query("SELECT n FROM {counts} WHERE label=?",
    (label,))``. ``handle.manifest`` is the manifest, for its public methods (core's tables).
    """

    def __init__(self, manifest: "Manifest", state: PluginState, *, present: bool = True,
                 migrating: bool = False) -> None:
        self.manifest, self.state = manifest, state
        self.present = present  # False: a read-only manifest that never met this namespace (no rows)
        self._migrating = migrating
        self._adopted_reads = False
        self._own = set(state.full_names().values())

    @property
    def namespace(self) -> str:
        return self.state.namespace

    def _allowed(self, action: int, arg1: str | None, arg2: str | None, dbname: str | None, _source: str | None) -> int:
        ok, deny = sqlite3.SQLITE_OK, sqlite3.SQLITE_DENY
        if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_FUNCTION, getattr(sqlite3, "SQLITE_RECURSIVE", -1)):
            return ok
        if dbname not in (None, "main"):
            return deny
        if action == sqlite3.SQLITE_REINDEX:  # part of CREATE INDEX (arg1 names the index)
            return ok if self._migrating else deny
        table = {
            sqlite3.SQLITE_READ: arg1, sqlite3.SQLITE_INSERT: arg1, sqlite3.SQLITE_UPDATE: arg1,
            sqlite3.SQLITE_DELETE: arg1, sqlite3.SQLITE_CREATE_TABLE: arg1, sqlite3.SQLITE_DROP_TABLE: arg1,
            sqlite3.SQLITE_CREATE_INDEX: arg2, sqlite3.SQLITE_DROP_INDEX: arg2, sqlite3.SQLITE_ALTER_TABLE: arg2,
        }.get(action)
        if table is None:
            return deny
        if table in self._own:
            return ok
        if self._adopted_reads and action == sqlite3.SQLITE_READ and table in self.state.adopts:
            return ok
        if self._migrating and (table in self.state.adopts or table in _SCHEMA_TABLES):
            return ok  # a migration creates, alters and drops: SQLite checks its writes to the schema table
        return deny

    @contextmanager
    def _guarded(self) -> Iterator[sqlite3.Connection]:
        db = self.manifest._db
        with self.manifest._lock:
            db.set_authorizer(self._allowed)
            try:
                yield db
            except sqlite3.DatabaseError as exc:
                if "not authorized" in str(exc) or "prohibited" in str(exc):
                    raise StateError(f"plugin state {self.namespace}: a statement reached outside its own tables "
                                     f"({', '.join(sorted(self._own))})") from None
                raise
            finally:
                db.set_authorizer(None)

    def _check_write(self) -> None:
        if self.manifest.readonly:
            raise StateError(f"plugin state {self.namespace}: the manifest is open read-only")

    def execute(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> int:
        """Run one statement on the namespace's tables; returns the rows it changed."""
        from .manifest import storable

        self._check_write()
        with self._guarded() as db:
            return int(db.execute(self.state.sql(sql), storable(params)).rowcount)

    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """One statement over many rows, in one transaction (or the one in progress)."""
        from .manifest import storable

        self._check_write()
        with self.transaction(), self._guarded() as db:
            db.executemany(self.state.sql(sql), [storable(row) for row in rows])

    def query(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = (), *,
              plain: bool = False) -> list[Any]:
        """Rows of one statement (``sqlite3.Row``, or plain tuples with ``plain``: faster for
        millions); none on a read-only manifest that never held this namespace."""
        from .manifest import storable

        if not self.present:
            return []
        with self._guarded() as db:
            cur = db.cursor()
            if plain:
                cur.row_factory = None
            return cur.execute(self.state.sql(sql), storable(params)).fetchall()

    def query_adopted(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """Read a table this namespace ``adopts`` on a manifest that still has it (one opened
        read-only before a writing open upgraded it): e.g. the card's count from the old table."""
        if not (self.manifest.readonly and not self.present):
            raise StateError(f"plugin state {self.namespace}: adopted tables are read only before the upgrade")
        if not any(self.columns(t, adopted=True) for t in self.state.adopts):
            return []
        self._adopted_reads = True
        try:
            with self._guarded() as db:
                return db.execute(sql, params).fetchall()
        finally:
            self._adopted_reads = False

    @contextmanager
    def transaction(self) -> Iterator["StateHandle"]:
        """One write transaction for several statements (joins the one in progress, if any)."""
        self._check_write()
        if self.manifest._db.in_transaction:
            yield self
            return
        with self.manifest.transaction():
            yield self

    def columns(self, table: str, *, adopted: bool = False) -> list[str]:
        """The columns a table has now (empty when it does not exist): one of the namespace's
        (short name), or with ``adopted`` one it ``adopts`` (for a migration that moves rows)."""
        if adopted and table not in self.state.adopts:
            raise StateError(f"plugin state {self.namespace} does not adopt a table {table!r}")
        name = table if adopted else self.state.table(table)
        with self.manifest._lock:
            return [r[1] for r in self.manifest._db.execute(f"PRAGMA table_info({name})")]

    def exists(self, table: str, *, adopted: bool = False) -> bool:
        """Whether a table exists (as :meth:`columns` names it)."""
        return bool(self.columns(table, adopted=adopted))

    def run_script(self, script: str) -> None:
        """Several statements (a migration's SQL), inside the transaction in progress."""
        self._check_write()
        with self._guarded() as db:
            for statement in statements(self.state.sql(script)):
                db.execute(statement)


def recorded_versions(manifest: "Manifest") -> dict[str, int] | None:
    """Each recorded namespace's version; None when the manifest has no ``plugin_schema``."""
    db = manifest._db
    if not db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='plugin_schema'").fetchone():
        return None
    return {r[0]: int(r[1]) for r in db.execute("SELECT namespace, version FROM plugin_schema")}


def newer_error(manifest: "Manifest", state: PluginState, have: int) -> StateError:
    return StateError(f"{manifest.path}: the {state.namespace!r} tables are at version {have}, newer than this "
                      f"plugin knows ({state.version}); upgrade the plugin that provides {state.namespace!r}")


def open_state(manifest: "Manifest", state: PluginState) -> StateHandle:
    """The handle on ``state``'s tables in ``manifest``, creating or migrating them first
    (one transaction) when the manifest is writable."""
    with manifest._lock:
        if manifest.readonly:
            have = (recorded_versions(manifest) or {}).get(state.namespace)
            if have is None:
                return StateHandle(manifest, state, present=False)
            if have > state.version:
                raise newer_error(manifest, state, have)
            if have < state.version:
                raise StateError(f"{manifest.path}: the {state.namespace!r} tables were written by an older version "
                                 "of their plugin; any run that writes upgrades them")
            return StateHandle(manifest, state)
        query = "SELECT version, tables FROM plugin_schema WHERE namespace=?"
        row = manifest._db.execute(query, (state.namespace,)).fetchone()
        if row is None or int(row[0]) != state.version or row[1] != state.record():
            with manifest.transaction() as db:  # taken only to change something: readers never wait on it
                row = db.execute(query, (state.namespace,)).fetchone()  # another process may have done it
                have = None if row is None else int(row[0])
                if have is not None and have > state.version:
                    raise newer_error(manifest, state, have)
                if have != state.version or row[1] != state.record():
                    _upgrade(manifest, state, have)
    return StateHandle(manifest, state)


def _upgrade(manifest: "Manifest", state: PluginState, have: int | None) -> None:
    """Create (``have`` None) or migrate the tables, inside the caller's transaction."""
    handle = StateHandle(manifest, state, migrating=True)
    if have is None:
        for table in state.tables:
            if handle.exists(table.name):
                raise StateError(f"{manifest.path}: a table {state.table(table.name)} exists that plugin_schema "
                                 "does not record; it was not made by this plugin")
            handle.run_script(table.create.replace("{name}", "{" + table.name + "}"))
    for migration in state.migrations[have or 0:]:
        if isinstance(migration, str):
            handle.run_script(migration)
        else:
            migration(handle)
    manifest._db.execute(
        "INSERT INTO plugin_schema(namespace, version, tables, updated) VALUES (?,?,?,?)"
        " ON CONFLICT(namespace) DO UPDATE SET version=excluded.version, tables=excluded.tables,"
        " updated=excluded.updated",
        (state.namespace, state.version, state.record(), time.time()),
    )


def content_tables(db: sqlite3.Connection) -> dict[str, tuple[str, ...]]:
    """Every table that holds content hashes outside core's own: each namespace's (as
    ``plugin_schema`` recorded them) and the legacy ones still present, with their columns."""
    present = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    found = {name: cols for name, cols in LEGACY_CONTENT_TABLES.items() if name in present}
    if "plugin_schema" in present:
        for (tables,) in db.execute("SELECT tables FROM plugin_schema"):
            try:
                recorded = json.loads(tables)
            except ValueError:
                continue
            for name, cols in (recorded.items() if isinstance(recorded, dict) else []):
                # Names read from the file go into SQL: only a namespaced table that exists, plain columns.
                if (isinstance(name, str) and SEPARATOR in name and name in present and isinstance(cols, list)
                        and all(isinstance(c, str) and re.fullmatch(r"\w+", c) for c in cols) and cols):
                    found[name] = tuple(cols)
    return found


def forget_content(db: sqlite3.Connection, hashes_sql: str, params: tuple[Any, ...] = ()) -> dict[str, int]:
    """Delete, in the caller's transaction, every row of :func:`content_tables` whose
    content-hash column is one of ``hashes_sql`` (a subquery, or ``?`` marks with ``params``);
    rows removed per table."""
    removed = {}
    for table, cols in sorted(content_tables(db).items()):
        where = " OR ".join(f"{col} IN ({hashes_sql})" for col in cols)
        removed[table] = int(db.execute(f"DELETE FROM {table} WHERE {where}", params * len(cols)).rowcount)
    return removed


def card_facts(manifest: "Manifest", states: list[PluginState]) -> dict[str, dict[str, Any]]:
    """Each declaration's ``facts`` for the dataset card, by namespace."""
    facts = {}
    for state in sorted(states, key=lambda s: s.namespace):
        if state.facts is None:
            continue
        try:
            facts[state.namespace] = state.facts(manifest.state(state))
        except StateError as exc:  # a read-only manifest not upgraded yet: the card says the rest
            log.warning("%s", exc)
    return facts
