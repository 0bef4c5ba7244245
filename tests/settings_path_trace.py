"""Follow a command's settings through the modules it visits, by profiling the real run.

A call *passes the settings on* when its arguments (the frame's argument locals at the
profiler's ``call`` event) hold one of the command's :class:`Settings` instances, or an
object that carries one as ``.settings`` or ``.app.settings`` (an ``App``, a ``RunContext``,
a reader made from the app). The command's instances are those some ``App`` held: the one
the entry point made and those derived from it (``app.with_settings``). The receiver of a
method (``self``, ``cls``) is not counted: calling ``run.service(...)`` uses what the run
already holds where it lives, it hands the settings to no new place; nor is a property's
getter (reading an attribute).

A module is *entered* when such a call goes into a ``selfiescope`` module from a frame in
another module; calls within a module do not count. Entries are counted as distinct paths:
the chain of such calls (each a caller's file:line and the function called) from the entry
point down to the one that enters the module. The same service rebuilt from three places is
three paths into each module it goes through; a loop that calls one site for each image is
one, and a coroutine resumed by the event loop is not a new call.
"""

from __future__ import annotations

import dis
import inspect
import sys
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import CodeType, FrameType
from typing import Any

from selfiescope.core.app import App
from selfiescope.core.settings import Settings

GENERATOR_FLAGS = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR
RECEIVERS = ("self", "cls")  # a method's own object: calling it uses what that object holds


@dataclass(frozen=True)
class Edge:
    module: str  # the module entered
    function: str  # the function called there
    caller: str  # file:line of the call, in another module


@dataclass
class SettingsPath:
    """What one traced command did: each call edge that passed settings, and which ones."""

    paths: dict[tuple[Edge, ...], set[int]] = field(default_factory=lambda: defaultdict(set))
    app_settings: set[int] = field(default_factory=set)  # ids of Settings that an App held
    keep: list[Any] = field(default_factory=list)  # the Settings seen, alive so no id is reused

    def entries(self) -> dict[str, list[Edge]]:
        """``{module: [edges into it that passed the command's settings]}``."""
        by_module: dict[str, list[tuple[Edge, ...]]] = defaultdict(list)
        for path, ids in self.paths.items():
            if ids & self.app_settings:
                by_module[path[-1].module].append(path)
        return dict(by_module)

    def over(self, limit: int) -> dict[str, list[tuple[Edge, ...]]]:
        return {m: sorted(ps, key=lambda p: [e.caller for e in p]) for m, ps in self.entries().items() if len(ps) > limit}


def explain(over: dict[str, list[tuple[Edge, ...]]], limit: int) -> str:
    lines = [f"modules entered more than {limit} times by calls that pass the settings on:"]
    for module, paths in sorted(over.items()):
        lines.append(f"  {module}: {len(paths)} entries, each reached by")
        for path in paths:
            lines.append("    " + "  >  ".join(f"{short(e.caller)} {e.function}" for e in path))
    return "\n".join(lines)


def short(where: str) -> str:
    """``selfiescope/x/y.py:12`` for the package's files, the file's name for others."""
    marker = "/selfiescope/"
    return where[where.rindex(marker) + 1:] if marker in where else where.rsplit("/", 1)[-1]


class _Tracer:
    def __init__(self) -> None:
        self.path = SettingsPath()
        self.module_of: dict[CodeType, str | None] = {}
        self.opcodes: dict[CodeType, dict[int, str]] = {}
        self.getters: dict[CodeType, bool] = {}
        self.live: dict[int, tuple[FrameType, tuple[Edge, ...]]] = {}  # frames of counted calls, still running
        self.lock = threading.Lock()

    def _module(self, frame: FrameType) -> str | None:
        code = frame.f_code
        if code not in self.module_of:
            name = frame.f_globals.get("__name__", "")
            self.module_of[code] = name if name == "selfiescope" or name.startswith("selfiescope.") else None
        return self.module_of[code]

    def _opcode(self, frame: FrameType) -> str:
        code = frame.f_code
        if code not in self.opcodes:
            self.opcodes[code] = {i.offset: i.opname for i in dis.get_instructions(code)}
        return self.opcodes[code].get(frame.f_lasti, "")

    def _is_resume(self, frame: FrameType) -> bool:
        """A generator or coroutine picked up again after a yield or an await, not called anew."""
        if not frame.f_code.co_flags & GENERATOR_FLAGS:
            return False
        opcodes = self.opcodes.get(frame.f_code) or (self._opcode(frame) and self.opcodes[frame.f_code])
        first = next((offset for offset, name in sorted(opcodes.items()) if name == "RESUME"), 0)
        return frame.f_lasti > first

    def _is_getter(self, frame: FrameType) -> bool:
        """A property's getter: reading an attribute of the carrier does not pass it on."""
        code = frame.f_code
        if code not in self.getters:
            owner = frame.f_locals.get("self") if code.co_argcount == 1 else None
            attr = inspect.getattr_static(type(owner), code.co_name, None) if owner is not None else None
            self.getters[code] = isinstance(attr, property) and getattr(attr.fget, "__code__", None) is code
        return self.getters[code]

    def _carried(self, value: Any) -> list[Settings]:
        found = []
        if isinstance(value, Settings):
            found.append(value)
        for path in (("settings",), ("app", "settings")):
            obj = value
            try:
                for attr in path:
                    obj = getattr(obj, attr, None)
            except Exception:  # noqa: BLE001 - a property that cannot answer carries nothing
                continue
            if isinstance(obj, Settings):
                found.append(obj)
        if isinstance(value, App):
            self.path.app_settings.add(id(value.settings))
            self.path.keep.append(value.settings)
        return found

    def _arguments(self, frame: FrameType) -> list[tuple[str, Any]]:
        code = frame.f_code
        n = code.co_argcount + code.co_kwonlyargcount
        n += bool(code.co_flags & inspect.CO_VARARGS) + bool(code.co_flags & inspect.CO_VARKEYWORDS)
        local = frame.f_locals
        out: list[tuple[str, Any]] = []
        for name in code.co_varnames[:n]:
            value = local.get(name)
            if isinstance(value, tuple):
                out += [(name, v) for v in value]
            elif isinstance(value, dict) and name == code.co_varnames[n - 1] and code.co_flags & inspect.CO_VARKEYWORDS:
                out += [(name, v) for v in value.values()]
            else:
                out.append((name, value))
        return out

    def _parent_path(self, frame: FrameType | None) -> tuple[Edge, ...]:
        while frame is not None:
            known = self.live.get(id(frame))
            if known is not None and known[0] is frame:
                return known[1]
            frame = frame.f_back
        return ()

    def profile(self, frame: FrameType, event: str, arg: Any) -> None:
        if event == "return":
            known = self.live.get(id(frame))
            if known is not None and known[0] is frame and not self._opcode(frame).startswith("YIELD"):
                with self.lock:
                    self.live.pop(id(frame), None)
            return
        if event != "call":
            return
        module = self._module(frame)
        if module is None or self._is_resume(frame):
            return
        caller = frame.f_back
        if caller is not None and caller.f_globals.get("__name__") == module:
            return
        if self._is_getter(frame):
            return
        ids = set()
        for name, value in self._arguments(frame):
            if name in RECEIVERS:
                self._carried(value)  # an App's settings are the command's, whoever holds it
                continue
            for settings in self._carried(value):
                ids.add(id(settings))
                self.path.keep.append(settings)
        if not ids:
            return
        where = f"{caller.f_code.co_filename}:{caller.f_lineno}" if caller is not None else "?"
        edge = Edge(module, frame.f_code.co_qualname, where)
        with self.lock:
            path = self._parent_path(caller) + (edge,)
            self.live[id(frame)] = (frame, path)
            self.path.paths[path] |= ids


@contextmanager
def traced() -> Iterator[SettingsPath]:
    """Profile this thread and the threads started meanwhile; yields what was seen."""
    tracer = _Tracer()
    previous = sys.getprofile()
    threading.setprofile(tracer.profile)
    sys.setprofile(tracer.profile)
    try:
        yield tracer.path
    finally:
        sys.setprofile(previous)
        threading.setprofile(None)  # type: ignore[arg-type]
