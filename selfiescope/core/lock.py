"""One writer per storage root: an advisory lock file beside the manifest.

Two imports into the same root at once would each check "is this photo stored?" before
the other had written it and store near-duplicates twice. A run that writes takes
``<root>/.selfiescope.lock`` (``fcntl.flock``, released by the kernel when the process
ends, however it ends: a SIGKILL leaves no stale lock) and writes its pid into it, so a
second run can say who holds it. It then fails at once, or waits with ``wait_s``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path

from .errors import UsageError

LOCK_NAME = ".selfiescope.lock"


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (one of another user counts): a temp file or
    staging folder named after a live pid is someone's work in progress, never tidied."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


class RootBusy(UsageError):
    """Another live process holds the storage root; phrased for the user."""

    def __init__(self, root: Path, pid: int | None) -> None:
        self.root, self.pid = root, pid
        who = f"pid {pid}" if pid else "another process"
        super().__init__(
            f"{root}/ is in use by {who} (another selfiescope run writes there); wait for it to finish, "
            "or pass --wait to queue behind it"
        )


class RootLock:
    """``with RootLock(root): ...``; re-entrant within one process is not supported (use one per run)."""

    def __init__(self, root: Path | str, *, wait_s: float = 0.0, poll_s: float = 0.2) -> None:
        self.root = Path(root)
        self.path = self.root / LOCK_NAME
        self.wait_s = wait_s
        self.poll_s = poll_s
        self._fd: int | None = None

    def holder(self) -> int | None:
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return int(text) if text.isdigit() else None

    def acquire(self) -> "RootLock":
        self.root.mkdir(parents=True, exist_ok=True)
        # O_CREAT without O_TRUNC: a waiting process must not wipe the holder's pid.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise RootBusy(self.root, self.holder()) from None
                time.sleep(self.poll_s)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
        except OSError:  # e.g. a full disk: do not keep holding a lock nobody will release
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RootLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def root_in_use(root: Path) -> bool:
    """Whether a live process holds ``root``'s lock (this one included), found without writing
    anything: a shared probe of the lock file, which is not created when absent."""
    try:
        fd = os.open(Path(root) / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False  # no lock file: nobody ever wrote here, or it was removed
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EAGAIN, errno.EACCES)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def when_alone(root: Path, tidy: Callable[[], int]) -> int:
    """Run ``tidy`` (removing a killed run's temp files) only when no other process can be
    writing under ``root``: this process holds its lock (a collect run), or takes it for the
    moment of tidying (a reader such as train or export, which may run beside a collect run
    whose temp files are live). Returns what ``tidy`` returns, 0 when it did not run."""
    if not root.is_dir():
        return 0
    lock = RootLock(root)
    if lock.holder() == os.getpid():
        return tidy()
    try:
        lock.acquire()
    except (RootBusy, OSError):  # busy, or a root this process cannot write (read-only): nothing to tidy
        return 0
    try:
        return tidy()
    finally:
        lock.release()
