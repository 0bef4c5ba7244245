"""What ``clean`` may do to the user's originals, decided after the run from facts checked then.

The run only judges. Once it is over, :func:`build_plan` turns its judgements into a plan,
one entry per rejected file, and each entry is a removal (move or delete) only when the fact
that justifies it holds *at that moment*:

- a file rejected for its own content (too small, no face, not an image, GPS that cannot be
  removed...) may go, as long as its bytes are still the ones that were judged;
- a file rejected because of another image (``duplicate``, ``near_duplicate``,
  ``label_conflict``) may go only when that other image, the kept copy, is there now: read
  back through the storage backend with the bytes recorded for it (with ``--output``), or,
  without a dataset, still in the folder with the bytes it was judged with and not itself
  being removed. A step that rejects an image because of another one names it in
  ``event.notes["duplicate_of"]`` (its content hash); without that name the file stays.

Anything that cannot be verified stays where it is, and the plan says why.

:func:`execute` carries the plan out, last, one file at a time, so that a kill at any moment
leaves each photo whole in the folder or whole at the target: a move within one filesystem is
a hard link then an unlink; across filesystems the bytes go to a temporary name in the target
folder, are flushed to disk, get their real name (never over an existing file), and only then
is the original unlinked. A rerun judges the folder again and finds a move that was cut short
already done (the same bytes under the name, or a numbered one): it unlinks the original
instead of storing a second copy. No journal is kept on purpose: a rerun acts on facts it
checks again, never on a record of facts that were true before the crash.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import Any

from ...core.text import printable
from ...core.lock import pid_alive as _alive

#: Rejections that are about another image, not the file's own content.
RELATIONAL_CODES = frozenset({"duplicate", "near_duplicate", "label_conflict"})
#: Rejections that say nothing about the file (the chain or the settings were at fault).
NOT_ABOUT_THE_FILE = frozenset({"no_storage", "not_decoded"})
#: Rejections that are never grounds to remove a file, whoever gives them: decisions about the
#: dataset (a removal request), not about what the file holds.
NEVER_GROUNDS = frozenset({"forgotten"})
TEMP_PREFIX = ".selfiescope-move-"

KeptCheck = Callable[[str], "str | None"]  # content hash of the kept copy -> None if verified, else why not


def digest_of(path: Path) -> str | None:
    """sha256 of what ``path`` holds (a link: its target's), or None if it cannot be read."""
    try:
        with path.open("rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None


def still_judged(path: Path, content_hash: str) -> bool:
    """Whether ``path`` still holds the bytes that were judged."""
    return digest_of(path) == content_hash


def folder_check(files: list[dict[str, Any]], removing: set[str]) -> KeptCheck:
    """Without a dataset: the kept copy is an original in the folder. It counts while its bytes
    are unchanged and no file planned for removal is what it is (a link to a removed file)."""
    kept = {f["content_hash"]: f["path"] for f in files if f["outcome"] == "kept" and f["path"]}

    def check(content_hash: str) -> str | None:
        path = kept.get(content_hash)
        if path is None:
            return "the copy it duplicates was not kept"
        if os.path.realpath(path) in removing:
            return f"the copy it duplicates ({printable(path)}) is itself being removed"
        if not still_judged(Path(path), content_hash):
            return f"the copy it duplicates ({printable(path)}) changed or vanished"
        return None

    return check


def build_plan(files: list[dict[str, Any]], action: str, kept_check: Callable[[set[str]], KeptCheck],
               steps: Collection[str]) -> list[dict[str, Any]]:
    """One entry per rejected file: ``{"path", "code", "action": action | "keep", "why"}``.

    Only a rejection by one of the chain's ``steps`` (``item["rejected_by"]``) can make a file
    removable, and never one whose code is in :data:`NEVER_GROUNDS`: a rejection by anything
    else (the privacy gate, a source, a component added later) keeps the file.
    ``kept_check(removing)`` gives the check for a kept copy, told which real paths the
    own-content removals will take (decided first: they depend on nothing else)."""
    plan: list[dict[str, Any]] = []
    relational: list[dict[str, Any]] = []
    for item in files:
        if item["outcome"] != "rejected" or not item["path"]:
            continue  # kept or failed: a failure decided nothing about the file
        entry = {"path": item["path"], "code": item["code"], "content_hash": item["content_hash"],
                 "action": "keep", "why": ""}
        plan.append(entry)
        by = item.get("rejected_by")
        if item["code"] in NEVER_GROUNDS:
            entry["why"] = f"rejected {item['code']}: a decision about the dataset, not about the file"
        elif by not in steps:
            entry["why"] = f"rejected {item['code']} by {by or 'an unknown component'}, not by a step of the chain"
        elif not still_judged(Path(item["path"]), item["content_hash"]):
            entry["why"] = "changed or vanished since it was judged"
        elif item["code"] in NOT_ABOUT_THE_FILE:
            entry["why"] = f"rejected {item['code']}: a problem of the settings, not of the file"
        elif item["code"] in RELATIONAL_CODES or item.get("duplicate_of"):
            relational.append(entry)
            entry["duplicate_of"] = item.get("duplicate_of")
        else:
            entry["action"], entry["why"] = action, f"rejected {item['code']}"
    removing = {_real(e["path"]) for e in plan if e["action"] != "keep" and not os.path.islink(e["path"])}
    check = kept_check(removing)
    for entry in relational:
        if not entry["duplicate_of"]:
            entry["why"] = f"rejected {entry['code']}, but the run did not say of which image"
            continue
        problem = check(entry["duplicate_of"])
        if problem:
            entry["why"] = f"rejected {entry['code']}, but {problem}"
        else:
            entry["action"], entry["why"] = action, f"rejected {entry['code']}; the copy it duplicates is verified intact"
    return plan


def _real(path: str) -> str:
    return os.path.realpath(path)


def reason_folder(move_to: Path, code: str | None) -> Path:
    return move_to / (re.sub(r"[^A-Za-z0-9_-]+", "_", code or "") or "rejected")


def execute(plan: list[dict[str, Any]], move_to: Path | None) -> list[str]:
    """Carry out the plan's moves and deletions; return an error line per file that failed.

    Every file is checked once more just before it goes (its bytes still the judged ones)."""
    errors: list[str] = []
    for entry in plan:
        if entry["action"] == "keep":
            continue
        path = Path(entry["path"])
        if not still_judged(path, entry["content_hash"]):
            entry["action"], entry["why"] = "keep", "changed or vanished since it was judged"
            continue
        try:
            if entry["action"] == "move":
                assert move_to is not None
                entry["moved_to"] = printable(move_into(path, reason_folder(move_to, entry["code"]), entry["content_hash"]))
            else:
                path.unlink()  # a symbolic link: removes the link, never its target
                _fsync_dir(path.parent)
        except OSError as exc:
            what = "move" if entry["action"] == "move" else "delete"
            entry.update(action="keep", why=f"could not {what} it: {exc.strerror or exc}", error=True)
            errors.append(f"{printable(path)}: could not {what} it: {exc.strerror or exc}")
    return errors


# --- moving one file, crash-safe ------------------------------------------------------------
def _link_target(link: Path) -> str:
    """Where a symbolic link points, as an absolute path: a moved link keeps pointing there."""
    return os.path.normpath(os.path.join(link.parent, os.readlink(link)))


def _same_content(candidate: Path, source: Path, content_hash: str) -> bool:
    if source.is_symlink():
        return candidate.is_symlink() and _link_target(candidate) == _link_target(source)
    return not candidate.is_symlink() and candidate.is_file() and digest_of(candidate) == content_hash


def _candidates(folder: Path, name: str) -> Iterable[Path]:
    stem, suffix = Path(name).stem, Path(name).suffix
    yield folder / name
    n = 1
    while True:
        yield folder / f"{stem}-{n}{suffix}"
        n += 1


def move_into(source: Path, folder: Path, content_hash: str) -> Path:
    """Move ``source`` into ``folder`` under its name (numbered if another file has it);
    return where it is. A copy left there by a move that was cut short counts as the move."""
    folder.mkdir(parents=True, exist_ok=True)
    tidy_temps(folder)
    for target in _candidates(folder, source.name):
        if os.path.lexists(target):
            if _same_content(target, source, content_hash):
                _unlink_source(source)
                return target
            continue
        try:
            _place(source, target)
        except FileExistsError:
            continue  # taken meanwhile: the next name
        try:
            _unlink_source(source)
        except OSError:
            _withdraw(target)  # the original stays: the move did not happen, so its copy goes
            raise
        return target
    raise AssertionError("unreachable")


def _place(source: Path, target: Path) -> None:
    """Give ``target`` the whole of ``source`` (never a partial file under that name)."""
    if source.is_symlink():  # a new link to the same absolute target (a relative one would dangle there)
        _copy_then_link(source, target)
        _fsync_dir(target.parent)
        return
    try:
        os.link(source, target)
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            raise FileExistsError(str(target)) from None
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK):
            raise
        _copy_then_link(source, target)
    _fsync_dir(target.parent)


def _copy_then_link(source: Path, target: Path) -> None:
    temp = target.parent / f"{TEMP_PREFIX}{os.getpid()}-{target.name}.tmp"
    if os.path.lexists(temp):
        temp.unlink()
    try:
        if source.is_symlink():
            os.symlink(_link_target(source), temp)
        else:
            with source.open("rb") as src, open(temp, "xb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
            try:
                os.utime(temp, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns))
            except OSError:
                pass  # the times are a courtesy; the bytes are what matter
        try:
            os.link(temp, target, follow_symlinks=False)  # never over an existing file
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                raise FileExistsError(str(target)) from None
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EMLINK):
                raise
            if os.path.lexists(target):  # a filesystem without hard links: rename, after a last look
                raise FileExistsError(str(target)) from None
            os.rename(temp, target)
    finally:
        if os.path.lexists(temp):
            temp.unlink()


def _withdraw(copy: Path) -> None:
    """Remove the copy a move placed, when the original could not be removed after all."""
    try:
        copy.unlink()
    except OSError as exc:
        raise OSError(exc.errno, f"the original could not be removed and neither could its copy {printable(copy)}: "
                                 f"{exc.strerror or exc}") from None
    _fsync_dir(copy.parent)


def _unlink_source(source: Path) -> None:
    source.unlink()
    _fsync_dir(source.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot sync a directory; the rename is still atomic
    finally:
        os.close(fd)


def tidy_temps(folder: Path) -> None:
    """Remove temporary copies left in ``folder`` by moves of processes that are gone."""
    try:
        names = [n for n in os.listdir(folder) if n.startswith(TEMP_PREFIX) and n.endswith(".tmp")]
    except OSError:
        return
    for name in names:
        pid = name[len(TEMP_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            try:
                (folder / name).unlink()
            except OSError:
                pass

