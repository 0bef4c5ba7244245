"""Every command of the CLI, as built (plugin commands included, so a new command is covered
without a line here), given bad arguments and bad settings: nasty paths (FIFOs, devices,
undecodable names, folders for files and files for folders, missing, empty, read-only), huge
and negative numbers, odd strings, and odd settings files. Every case must end by itself within
a generous deadline, exit 0, 1, 2 or 130, print no traceback, and leave the user's photos, the
dataset's stored files and the settings file as they were unless the command was asked to
change them.

Cases run in a runner process (tests/cli_fuzz_runner.py) that takes one command line after
another, so most cases cost no interpreter start; a case that hangs is killed with its runner.
A smaller set runs as real ``python -m selfiescope`` processes, for what only a real process
shows (its own stdio encodings, the entry point, settings read before the command is chosen).
Network commands meet a closed local port, so they end fast.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, seed, settings as hsettings, strategies as st

from cli_fuzz_helpers import (
    ALLOWED_CODES, CASE_DEADLINE_S, COMMAND_ENV, NASTY_NUMBERS, NASTY_STRINGS, SERVES_UNTIL_INTERRUPTED, Command, Runner, World,
    build_world, commands_of, nasty_paths, nasty_settings, problems_with, restore, snapshot, unmount_all,
)

pytestmark = [pytest.mark.slow, pytest.mark.faces]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    from conftest import FACES

    if not FACES.is_dir():
        pytest.skip(f"real face photos not available: {FACES}")
    built = build_world(tmp_path_factory.mktemp("fuzz"), tmp_path_factory.mktemp("pristine") / "user", FACES)
    yield built
    unmount_all(built)


@pytest.fixture(scope="module")
def commands() -> list[Command]:
    from selfiescope.cli.build import make_app

    return commands_of(make_app()[0])


@pytest.fixture(scope="module")
def runner(world: World):  # noqa: ANN201
    r = Runner(world)
    yield r
    r.stop()


class Judge:
    """Runs cases through the runner and collects every broken promise, restoring the user
    folder after a case that was allowed to change it."""

    def __init__(self, world: World, runner: Runner) -> None:
        self.world, self.runner = world, runner
        self.pristine = snapshot(world)
        self.failures: list[str] = []

    def case(self, command: tuple[str, ...], argv: list[str]) -> list[str]:
        before, started = snapshot(self.world), time.monotonic()
        result = self.runner.run([*command, *argv], COMMAND_ENV.get(command))
        after = snapshot(self.world)
        found = problems_with(self.world, command, argv, result, before, after)
        restore(self.world, self.pristine, after)
        with open(self.world.base / "cases.log", "a", encoding="utf-8") as log:  # what ran, for a hang's post-mortem
            log.write(f"{time.monotonic() - started:6.1f}s {result.get('code')} {' '.join(map(ascii, [*command, *argv]))} {'; '.join(found)[:200]!a}\n")
        if found:
            self.failures.append(f"selfiescope {' '.join(map(ascii, [*command, *argv]))}: " + "; ".join(found))
        return found


def placeholder(param) -> list[str]:  # noqa: ANN001 - cli_fuzz_helpers.Param
    """A plain, valid-looking value for a required parameter that is not the one under test."""
    value = {"label": "portrait", "tags": "selfie", "pipelines": "photos", "har_file": "out.har",
             "directory": "export-out", "model": "model", "folder": "photos"}.get(param.name, "x")
    if param.kind is int:
        value = "1"
    if param.kind is Path and param.name == "folder":
        value = "."
    return [*param.opts[:1], value]


def required_others(command: Command, skip: str) -> list[str]:
    return [a for p in command.params if p.required and p.name != skip for a in placeholder(p)]


def test_the_fuzz_covers_every_command(commands: list[Command]) -> None:
    names = {c.path for c in commands}
    assert {("import",), ("clean",), ("settings", "check"), ("login",), ("doctor",)} <= names  # built-in and plugin
    assert all(c.params for c in commands)


@pytest.mark.timeout(900)
def test_every_path_parameter_takes_every_nasty_path(world: World, runner: Runner, commands: list[Command]) -> None:
    """Each path argument of each command, in turn, is each nasty path."""
    judge = Judge(world, runner)
    paths = nasty_paths(world)
    for command in commands:
        for param in command.path_params:
            if param.name == "settings_path":
                continue  # the next test gives it nasty settings files
            for name, value in paths.items():
                if command.path in SERVES_UNTIL_INTERRUPTED:
                    continue
                judge.case(command.path, [*required_others(command, param.name), *param.opts[:1], value])
    assert not judge.failures, "\n\n".join(judge.failures)


@pytest.mark.timeout(900)
def test_every_command_takes_every_nasty_settings_file(world: World, runner: Runner, commands: list[Command]) -> None:
    judge = Judge(world, runner)
    for command in commands:
        if not any(p.name == "settings_path" for p in command.params) or command.path in SERVES_UNTIL_INTERRUPTED:
            continue
        stored = ["--stored"] if command.path == ("predict",) else []
        for name, value in nasty_settings(world).items():
            judge.case(command.path, [*required_others(command, "settings_path"), *stored, "--settings", value])
    assert not judge.failures, "\n\n".join(judge.failures)


# --- generated command lines ----------------------------------------------------------------------
SEGMENT = st.text(st.sampled_from("ab.-_ ~é\udcff\udcfe"), min_size=1, max_size=8).filter(lambda s: set(s) != {"."})


def values_for(param, world: World) -> st.SearchStrategy[str]:  # noqa: ANN001 - cli_fuzz_helpers.Param
    if param.kind is Path:
        relative = st.lists(SEGMENT, min_size=1, max_size=3).map("/".join)
        return st.one_of(st.sampled_from(sorted(nasty_paths(world).values())), relative)
    if param.kind is int:
        return st.one_of(st.sampled_from(NASTY_NUMBERS), st.integers(-(2 ** 70), 2 ** 70).map(str))
    if param.kind is float:
        return st.one_of(st.sampled_from(NASTY_NUMBERS), st.floats().map(repr))
    return st.one_of(st.sampled_from(NASTY_STRINGS), st.text(max_size=20).filter(lambda s: "\x00" not in s))


@st.composite
def command_lines(draw, commands: list[Command], world: World) -> tuple[tuple[str, ...], list[str]]:  # noqa: ANN001
    command = draw(st.sampled_from([c for c in commands if c.path not in SERVES_UNTIL_INTERRUPTED]))
    argv: list[str] = []
    for param in command.params:
        if param.name == "settings_path":
            if draw(st.booleans()):
                argv += ["--settings", draw(st.sampled_from(sorted(nasty_settings(world).values())))]
            continue
        if not param.required and not draw(st.integers(0, 2)):
            continue  # one optional parameter in three is left out
        if param.kind is bool:
            argv += [param.opts[0]] if param.opts else []
            continue
        for _ in range(draw(st.integers(1, 2)) if param.many else 1):
            argv += [*param.opts[:1], draw(values_for(param, world))]
    return command.path, argv


@pytest.mark.timeout(900)
def test_generated_command_lines(world: World, runner: Runner, commands: list[Command]) -> None:
    judge = Judge(world, runner)

    # FUZZ_EXAMPLES and FUZZ_SEED run a longer, different campaign; by default the same 120 cases every run.
    campaign = dict(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "120")), deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))

    @hsettings(**campaign, derandomize="FUZZ_SEED" not in os.environ)
    @seed(int(os.environ.get("FUZZ_SEED", "0")))
    @given(line=command_lines(commands, world))
    def one(line: tuple[tuple[str, ...], list[str]]) -> None:
        judge.case(*line)  # every broken promise is collected: one run shows them all

    one()
    assert not judge.failures, "\n\n".join(judge.failures)


# --- real processes -------------------------------------------------------------------------------
@pytest.mark.timeout(900)
def test_real_processes_end_on_hang_prone_inputs(world: World, commands: list[Command]) -> None:
    """``python -m selfiescope`` itself, for what only a real process shows (the entry point
    reads settings before the command is chosen; its own stdio): a FIFO as the settings file
    and as the first path argument never hangs, never prints a traceback."""
    fifo = nasty_paths(world)["fifo"]
    lines = []
    for command in commands:
        if command.path in SERVES_UNTIL_INTERRUPTED:
            lines.append((command, ["--port", "99999999999999999999"]))
            continue
        if any(p.name == "settings_path" for p in command.params):
            lines.append((command, [*required_others(command, "settings_path"), "--settings", fifo]))
        first = next((p for p in command.path_params if p.name != "settings_path"), None)
        if first is not None:
            lines.append((command, [*required_others(command, first.name), *first.opts[:1], fifo]))

    def run(line: tuple[Command, list[str]]) -> str | None:
        command, argv = line
        try:
            proc = subprocess.run([sys.executable, "-m", "selfiescope", *command.path, *argv], cwd=world.work,
                                  env={**world.env, **COMMAND_ENV.get(command.path, {})}, capture_output=True,
                                  timeout=CASE_DEADLINE_S)
        except subprocess.TimeoutExpired:
            return f"{command.path} {argv!a}: did not end within {CASE_DEADLINE_S} s"
        text = (proc.stdout + proc.stderr).decode("utf-8", "replace")
        if proc.returncode not in ALLOWED_CODES or "Traceback" in text:
            return f"{command.path} {argv!a}: exit {proc.returncode}\n{text[-2000:]}"
        return None

    with ThreadPoolExecutor(2) as pool:  # each process mostly starts up: two at a time halve the wait
        failures = [f for f in pool.map(run, lines) if f]
    assert not failures, "\n\n".join(failures)
