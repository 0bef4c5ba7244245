"""What the CLI fuzz test (tests/test_cli_fuzz.py) needs: the commands as the built application
has them, a prepared user folder with a dataset, nasty paths and settings files, a runner
process with a deadline per case, and the invariants every case must keep."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CASE_DEADLINE_S = 120  # generous: a loaded 2-core machine; a hang runs into it, a slow case does not
ALLOWED_CODES = {0, 1, 2, 130}
# Commands whose normal life is to serve until interrupted: ending by our kill is fine for them,
# once they said they serve. Every other command must end by itself.
SERVES_UNTIL_INTERRUPTED = {("mock-site",), ("review",)}
# Commands that may change the dataset's stored files when asked (the rest must leave them alone).
WRITES_DATASET = {("import",), ("scrape",), ("run",), ("forget",), ("clean",), ("demo",)}
# Options (and export's folder) that ask a command to write where they point: a protected folder
# they name may change.
WRITING_OPTIONS = {"--output", "-o", "--move-rejected-to", "--model-dir", "--har", "--face-area-plot"}
# The demo browses its own local site: with no browser to start it fails at once instead of
# spending a minute scraping, and everything before that still meets the fuzz.
COMMAND_ENV = {("demo",): {"SELFIESCOPE_BROWSER__EXECUTABLE": "/nonexistent/chromium"}}
PHOTO_NAMES = ["caltech_image_0001.jpg", "caltech_image_0002.jpg", "caltech_image_0003.jpg", "biden.jpg"]


# --- the commands, as the built application has them -------------------------------------------
@dataclass(frozen=True)
class Param:
    name: str
    opts: tuple[str, ...]  # ("--label", "-l"); empty for an argument
    kind: type  # Path, str, int, float or bool
    many: bool  # a list argument or a repeatable option
    required: bool


@dataclass(frozen=True)
class Command:
    path: tuple[str, ...]
    params: tuple[Param, ...] = field(default=())

    @property
    def path_params(self) -> list[Param]:
        return [p for p in self.params if p.kind is Path]


def _base_type(annotation: Any) -> tuple[type, bool]:
    """``(Path, True)`` for ``Optional[list[Path]]`` and the like."""
    many = False
    while True:
        origin = typing.get_origin(annotation)
        if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
            annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
        elif origin in (list, tuple):
            many, annotation = True, typing.get_args(annotation)[0]
        else:
            return annotation, many


def commands_of(app: Any) -> list[Command]:
    """Every command of the application, plugin commands and sub-commands included."""
    from typer.models import OptionInfo

    found = []

    def walk(typer_app: Any, prefix: tuple[str, ...]) -> None:
        from selfiescope.cli.build import entry_name

        for info in typer_app.registered_commands:
            signature = inspect.signature(info.callback, eval_str=True)
            params = []
            for name, p in signature.parameters.items():
                kind, many = _base_type(p.annotation)
                default = p.default
                if isinstance(default, OptionInfo):
                    opts = tuple(default.param_decls) or (f"--{name.replace('_', '-')}",)
                    opts = tuple(o.split("/")[0] for o in opts)
                    required = default.default is ...
                else:
                    opts, required = (), getattr(default, "default", None) is ...
                params.append(Param(name, opts, kind, many, required))
            found.append(Command((*prefix, entry_name(info)), tuple(params)))
        for group in typer_app.registered_groups:
            walk(group.typer_instance, (*prefix, entry_name(group)))

    walk(app, ())
    return found


# --- the world: a user's folder, a dataset, nasty files -------------------------------------------
def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SELFIESCOPE_")}
    env.update(HOME=str(home), PYTHONPATH=str(REPO), COLUMNS="120", SELFIESCOPE_NO_ENTRYPOINTS="1")
    return env


@dataclass
class World:
    base: Path
    pristine: Path  # a copy of the user folder, outside ``base``: restored after a case that changed it
    home: Path
    user: Path
    work: Path  # every command runs here
    nasty: Path
    env: dict[str, str]

    @property
    def photos(self) -> Path:
        return self.user / "photos"

    @property
    def data(self) -> Path:
        return self.user / "data"

    @property
    def settings(self) -> Path:
        return self.user / "settings.toml"


def build_world(base: Path, pristine: Path, faces: Path) -> World:
    home, user, work, nasty = (base / n for n in ("home", "user", "work", "nasty"))
    for d in (home, user, work, nasty):
        d.mkdir()
    (user / "photos").mkdir()
    for name in PHOTO_NAMES:
        shutil.copy(faces / "portrait" / name, user / "photos" / name)
    shutil.copy(faces / "portrait" / PHOTO_NAMES[0], os.fsencode(user / "photos") + b"/odd-\xff.jpg")
    port = closed_port()
    (user / "settings.toml").write_text(
        f'[storage]\nroot = "{user / "data"}"\n'
        f"[browser]\ntimeout_s = 10\n"
        f'[plugins.instagram]\nbase_url = "http://127.0.0.1:{port}"\nstall_s = 5\n'
        '[pipelines.train]\nkind = "train"\nfeatures = ["image"]\nfolds = 2\n'
        f'[pipelines.photos]\nkind = "import"\nsource = "folder"\npaths = ["{user / "photos"}"]\nlabel = "portrait"\n',
        encoding="utf-8",
    )
    env = cli_env(home)
    env["SELFIESCOPE_SETTINGS"] = str(user / "settings.toml")
    proc = subprocess.run([sys.executable, "-m", "selfiescope", "import", str(user / "photos"), "--label", "portrait"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stderr
    _make_nasty(nasty, faces, port)
    shutil.copytree(user, pristine, symlinks=True)
    return World(base, pristine, home, user, work, nasty, env)


def _make_nasty(nasty: Path, faces: Path, port: int) -> None:
    os.mkfifo(nasty / "fifo")
    (nasty / "dir").mkdir()
    (nasty / "notes.txt").write_text("not an image\n")
    (nasty / "empty.jpg").write_bytes(b"")
    (nasty / "ro").mkdir()
    shutil.copy(faces / "portrait" / PHOTO_NAMES[1], nasty / "ro" / "p.jpg")
    (nasty / "ro").chmod(0o555)
    odd_dir = os.fsencode(nasty) + b"/d\xff"
    os.mkdir(odd_dir)
    shutil.copy(faces / "portrait" / PHOTO_NAMES[2], odd_dir + b"/x\xfe.jpg")
    os.symlink("loop", nasty / "loop")
    _mount_tmpfs(nasty / "full-disk", "size=64k")
    _mount_tmpfs(nasty / "read-only-fs", "ro")
    if (nasty / "full-disk").is_mount():
        with open(nasty / "full-disk" / "filler", "wb") as fh:  # fill it: every later write meets ENOSPC
            try:
                fh.write(b"\0" * (1 << 20))
            except OSError:
                pass
    settings = nasty / "settings"
    settings.mkdir()
    for name, text in NASTY_SETTINGS.items():
        (settings / f"{name}.toml").write_text(text.format(nasty=nasty, port=port), encoding="utf-8")
    (settings / "non-utf8.toml").write_bytes(b"[storage]\nroot = \"\xff\xfe\"\n")
    (settings / "huge.toml").write_text("# filler\n" * 300_000)


def _mount_tmpfs(folder: Path, options: str) -> None:
    """A small tmpfs at ``folder`` (a full disk, a read-only file system) where this test may
    mount one (as root); otherwise ``folder`` stays a plain folder."""
    folder.mkdir()
    if os.geteuid() == 0 and shutil.which("mount"):
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, timeout=30)


def unmount_all(world: World) -> None:
    for name in ("full-disk", "read-only-fs"):
        if (world.nasty / name).is_mount():
            subprocess.run(["umount", "-l", str(world.nasty / name)], capture_output=True, timeout=30)


NASTY_SETTINGS = {
    "bad-toml": "[storage\nroot = \n",
    "wrong-types": "[engine]\nworkers = \"many\"\n[browser]\nheadless = 3\n",
    "unknown-key": "[storage]\nrot = \"x\"\n[nosuch]\na = 1\n",
    "nul-root": "[storage]\nroot = \"a\\u0000b\"\n",
    "tilde-root": "[storage]\nroot = \"~nosuchuser/data\"\n",
    "empty-chain": "[pipelines.p]\nkind = \"import\"\nsource = \"folder\"\npaths = [\"{nasty}/dir\"]\nlabel = \"a\"\nchain = []\n",
    "bad-params": "[pipelines.train]\nkind = \"train\"\nparams = {{ learning_rate = \"fast\" }}\n",
    "log-fifo": "[logging]\nfile = \"{nasty}/fifo\"\n",
    "log-full": "[logging]\nfile = \"/dev/full\"\n",
    "log-dir": "[logging]\nfile = \"{nasty}/dir\"\n",
    "root-is-file": "[storage]\nroot = \"{nasty}/notes.txt\"\n",
    "root-is-fifo": "[storage]\nroot = \"{nasty}/fifo\"\n",
    "huge-numbers": "[engine]\nworkers = 99999999999999999999999\nqueue_size = 99999999999999999999999\n"
                    "[browser]\ntimeout_s = 1e308\n",
    "negative": "[engine]\nthreads = -1\n[storage]\nlock_timeout_s = -5\n",
    "infinite": "[browser]\ntimeout_s = inf\n[storage]\nlock_timeout_s = nan\n",
    "plugins-not-table": "[plugins]\nface_area = 3\ndisable = \"gallery\"\n",
    "unknown-plugin": "[plugins]\ndisable = [\"nosuch\"]\n[plugins.nosuch]\na = 1\n",
    "root-on-full-disk": "[storage]\nroot = \"{nasty}/full-disk/data\"\n",
    "root-on-read-only-fs": "[storage]\nroot = \"{nasty}/read-only-fs/data\"\n",
    "closed-port": "[plugins.instagram]\nbase_url = \"http://127.0.0.1:{port}\"\n",
    "empty": "",
}


# --- values -------------------------------------------------------------------------------------
def nasty_paths(world: World) -> dict[str, str]:
    n = world.nasty
    return {
        "fifo": str(n / "fifo"), "dev-zero": "/dev/zero", "dev-full": "/dev/full", "dev-null": "/dev/null",
        "dev-tty": "/dev/tty", "proc-mem": "/proc/self/mem", "dir": str(n / "dir"), "text-file": str(n / "notes.txt"),
        "empty-file": str(n / "empty.jpg"), "missing": str(n / "missing" / "deeper"), "loop": str(n / "loop"),
        "non-utf8-dir": os.fsdecode(os.fsencode(n) + b"/d\xff"),
        "non-utf8-missing": os.fsdecode(os.fsencode(n) + b"/new-\xfe"),
        "read-only-dir": str(n / "ro"), "full-disk": str(n / "full-disk" / "out"),
        "read-only-fs": str(n / "read-only-fs" / "out"), "long-name": "a" * 300, "newline": str(n / "a\nb"),
        "tilde-user": "~nosuchuser/x", "tilde": "~/x", "dash": "-", "empty": "", "space": " ",
        "photos": str(world.photos), "dataset": str(world.data), "settings-file": str(world.settings),
    }


def nasty_settings(world: World) -> dict[str, str]:
    files = {p.stem: str(p) for p in sorted((world.nasty / "settings").iterdir())}
    return {**files, "fifo": str(world.nasty / "fifo"), "dev-zero": "/dev/zero", "dir": str(world.nasty / "dir"),
            "missing": str(world.nasty / "missing.toml")}


NASTY_STRINGS = ["", " ", "-", "--", "x" * 5000, "a\nb", "\udcff\udcfe", "é", "#", "../..", "%s%n", "{tag}", "0",
                 "-1", "selfie,,", ",", "http://127.0.0.1:1/", "nosuch://x", "file:///etc/passwd", "javascript:x"]
NASTY_NUMBERS = ["0", "-1", "-999999999999", "99999999999999999999999", "2147483648", "1e308", "nan", "inf",
                 "-inf", "0x10", "1.5", ""]


# --- the runner: many cases in one process, each with a deadline ---------------------------------
class Runner:
    """The fuzz runner process (tests/cli_fuzz_runner.py); restarted after a hang."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.proc: subprocess.Popen[str] | None = None
        self.results: Any = None

    def start(self) -> None:
        read_fd, write_fd = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "cli_fuzz_runner.py"), str(write_fd)], cwd=self.world.work,
            env=self.world.env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(write_fd,), text=True, start_new_session=True,
        )
        os.close(write_fd)
        self.results = os.fdopen(read_fd, "r", encoding="utf-8")
        assert self._read(CASE_DEADLINE_S) == {"ready": True}

    def _read(self, deadline: float) -> dict[str, Any] | None:
        ready, _, _ = select.select([self.results], [], [], deadline)
        line = self.results.readline() if ready else ""
        return json.loads(line) if line else None

    def stop(self) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, 9)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=30)
            self.results.close()
            self.proc = None

    def run(self, argv: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
        """``{"code", "output", "traceback"}``, or ``{"hang": True}`` after CASE_DEADLINE_S."""
        if self.proc is None:
            self.start()
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"argv": argv, "env": env or {}}) + "\n")
        self.proc.stdin.flush()
        result = self._read(CASE_DEADLINE_S)
        if result is None:
            self.stop()
            return {"hang": True, "output": "", "traceback": None}
        return result


# --- invariants ---------------------------------------------------------------------------------
def tree_digest(root: Path, skip: tuple[str, ...] = ()) -> dict[bytes, str]:
    """Relative path (bytes) -> sha256 of every file under ``root`` (names in ``skip`` left out)."""
    found = {}
    base = os.fsencode(root)
    for dirpath, _, files in os.walk(base):
        for name in files:
            if name.decode("utf-8", "surrogateescape") in skip or name.startswith(b"manifest.sqlite"):
                continue
            full = os.path.join(dirpath, name)
            with open(full, "rb") as fh:
                found[os.path.relpath(full, base)] = hashlib.sha256(fh.read()).hexdigest()
    return found


DATASET_BOOKKEEPING = (".selfiescope-key", ".selfiescope.lock", "DATASET.md", "datacard.json", "face-area-thresholds.png")


def snapshot(world: World) -> dict[str, Any]:
    return {
        "photos": tree_digest(world.photos),
        "dataset": tree_digest(world.data, DATASET_BOOKKEEPING),
        "settings": tree_digest(world.user, ()).get(b"settings.toml"),
    }


def _names(world: World, command: tuple[str, ...], argv: list[str], folder: Path) -> bool:
    """Whether ``argv`` asks ``command`` to write into ``folder`` (a writing option, or export's
    folder, names it or a place inside it)."""
    targets = [value for option, value in zip(argv, argv[1:]) if option in WRITING_OPTIONS]
    if command == ("export",):
        targets += [a for a in argv if not a.startswith("-")]
    inside = os.path.realpath(folder)
    return any(os.path.commonpath([inside, os.path.realpath(os.path.join(world.work, os.path.expanduser(t)))]) == inside
               for t in targets if t)


def problems_with(world: World, command: tuple[str, ...], argv: list[str], result: dict[str, Any],
                  before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Every broken promise of one case, as text (empty when it kept them all)."""
    problems = []
    if result.get("hang") and command not in SERVES_UNTIL_INTERRUPTED:
        problems.append(f"did not end within {CASE_DEADLINE_S} s")
    if result.get("traceback"):
        problems.append("an exception escaped:\n" + result["traceback"][-3000:])
    if "Traceback" in (result.get("output") or ""):
        problems.append("a traceback in the output:\n" + result["output"][-3000:])
    if not result.get("hang") and result.get("code") not in ALLOWED_CODES:
        problems.append(f"exit code {result.get('code')}")
    asked_to_move = any(a in ("--delete-rejected", "--move-rejected-to") for a in argv)
    if before["photos"] != after["photos"] and not asked_to_move and not _names(world, command, argv, world.photos):
        problems.append("changed the user's photos folder without being asked")
    if before["dataset"] != after["dataset"] and command not in WRITES_DATASET:
        problems.append("changed the dataset's stored files")
    if before["settings"] != after["settings"]:
        problems.append("changed the settings file")
    return problems


def restore(world: World, before: dict[str, Any], after: dict[str, Any]) -> None:
    """Put the user folder back as prepared (after a case that was allowed to change it)."""
    if before == after:
        return
    os.chmod(world.user, 0o755)
    shutil.rmtree(world.user)
    shutil.copytree(world.pristine, world.user, symlinks=True)
