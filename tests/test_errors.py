"""One error model: every exception selfiescope raises on purpose is a SelfiescopeError of a
family, says its own exit code and one line, and the CLI maps it in one place."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from selfiescope.api import (
    BrowserError, DeadlineExceeded, Reject, RunFailed, SelfiescopeError, SettingsError, SiteError, StorageError,
    UsageError,
)
from selfiescope.core.browser import BrowserStartTimeout
from selfiescope.core.errors import FilesystemError
from selfiescope.core.web import Deadline
from selfiescope.exits import EXIT_FAILED, EXIT_USAGE, classify

PACKAGE = Path(__file__).resolve().parents[1] / "selfiescope"
FAMILIES = [SelfiescopeError, UsageError, SettingsError, RunFailed, StorageError, BrowserError, SiteError]
NOT_ERRORS = {Reject}  # a step's decision about an image, not something that went wrong


def exception_classes() -> list[type[BaseException]]:
    """Every exception class defined in the package (found in the source, then imported)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        names = [node.name for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ClassDef)]
        if not names:
            continue
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        try:
            loaded = importlib.import_module(module)
        except ImportError:  # an optional extra that is not installed: its classes cannot be raised
            continue
        for name in names:
            cls = getattr(loaded, name, None)
            if isinstance(cls, type) and issubclass(cls, BaseException) and cls.__module__ == module:
                found.append(cls)
    return found


def test_every_project_exception_has_the_one_base() -> None:
    classes = exception_classes()
    assert len(classes) > 30  # the walk found them (a broken walk would pass the assertion below)
    strays = [f"{c.__module__}.{c.__qualname__}" for c in classes
              if c not in NOT_ERRORS and not issubclass(c, SelfiescopeError)]
    assert strays == []


def test_the_old_bases_still_catch_them() -> None:
    """A caller that catches the built-in base an error had keeps catching it."""
    from selfiescope.core.har import HarError
    from selfiescope.core.manifest_io import ManifestError
    from selfiescope.core.web import SiteUnreachable

    assert issubclass(HarError, ValueError) and issubclass(SiteUnreachable, ConnectionError)
    assert issubclass(ManifestError, OSError) and issubclass(Deadline, TimeoutError)
    from selfiescope.core import components, settings, settings_input

    assert components.StorageError is StorageError and settings.SettingsError is settings_input.SettingsError


@pytest.mark.parametrize("family", FAMILIES)
@given(text=st.text(max_size=200))
def test_classify_takes_the_code_and_one_line_from_the_error(family: type[SelfiescopeError], text: str) -> None:
    exc = family(["a: " + text]) if family is SettingsError else family(text)
    code, message = classify(exc)  # type: ignore[misc]
    assert code == exc.exit_code == (EXIT_USAGE if issubclass(family, UsageError) else EXIT_FAILED)
    assert message == exc.user_message() and message.strip()
    if family is not SettingsError:  # a settings error is its titled list of problems
        assert "\n" not in message and "\r" not in message
        assert message.isprintable() or not text.isprintable()


def test_an_error_a_plugin_defines_needs_no_registration() -> None:
    class QuotaGone(SiteError):
        pass

    class BadOption(UsageError):
        pass

    class Cheerful(RunFailed):
        exit_code = 0

    assert classify(QuotaGone("the API quota is\nspent")) == (EXIT_FAILED, "the API quota is spent")
    assert classify(BadOption("plugins.x.size: must be > 0")) == (EXIT_USAGE, "plugins.x.size: must be > 0")
    assert classify(Cheerful("lost every image")) == (EXIT_FAILED, "lost every image")  # an error never exits 0


def test_a_filesystem_error_of_ours_keeps_the_errno_rules() -> None:
    import errno

    assert classify(FilesystemError(errno.ENOSPC, "No space left", "/d/m.sqlite")) == (EXIT_FAILED, "disk full: /d/m.sqlite")
    assert classify(FilesystemError(errno.EACCES, "Permission denied", "/d")) == (EXIT_USAGE, "/d: Permission denied")


def test_a_deadline_says_what_it_guarded_and_its_limit() -> None:
    exc = Deadline("loading the tag page", 6, "browser.timeout_s")
    assert (exc.what, exc.limit_s, exc.setting) == ("loading the tag page", 6, "browser.timeout_s")
    assert str(exc) == "loading the tag page: no answer within 6 s (browser.timeout_s)"
    assert isinstance(exc, TimeoutError) and isinstance(exc, DeadlineExceeded)
    assert classify(exc) == (EXIT_FAILED, str(exc))


def test_a_slow_browser_start_is_not_a_site_timeout() -> None:
    exc = BrowserStartTimeout(60)
    assert not isinstance(exc, TimeoutError) and isinstance(exc, BrowserError) and isinstance(exc, DeadlineExceeded)
    assert exc.user_message().startswith("the browser (Chromium) did not start within 60 s (browser.launch_timeout_s)")
    assert exc.setting == "browser.launch_timeout_s" and exc.limit_s == 60


def test_the_cli_maps_errors_in_one_place() -> None:
    """No command module catches one of our errors only to print it and exit: the guard does."""
    offenders = []
    for path in [*PACKAGE.joinpath("cli").glob("*.py"), *PACKAGE.joinpath("plugins").rglob("commands.py")]:
        for handler in (n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ExceptHandler)):
            caught = ast.unparse(handler.type) if handler.type is not None else ""
            if any(name in caught for name in ("ModelError", "DatasetError", "FsckError", "ExportError", "ForgetError",
                                               "PrivacyError", "RootBusy", "DoctorError", "BrowserNotFound",
                                               "LoginError", "BrowserImportError", "ProfileNotFound")):
                offenders.append(f"{path.name}:{handler.lineno} except {caught}")
    assert offenders == []


def test_every_error_crosses_a_process_whole() -> None:
    """Pickled (a Dask worker, a child process) and back, whatever its __init__ takes."""
    import pickle

    from selfiescope.core.lock import RootBusy
    from selfiescope.core.web import DownloadError, SiteUnreachable

    for exc in (Deadline("reading the grid", 6, "browser.timeout_s"), BrowserStartTimeout(60),
                RootBusy(Path("/data"), 42), SiteUnreachable("http://x.test/a?sig=1", "no such host in DNS"),
                DownloadError("http://x.test/i.jpg", "timeout", transient=True), SettingsError(["a.b: bad"], "s.toml")):
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc) and back.args == exc.args and vars(back) == vars(exc)
        assert classify(back) == classify(exc)
