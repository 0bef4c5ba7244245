"""Privacy: the per-dataset key, pseudonyms, tombstones keys, and the ingest gate.

Every image shows a person, so the dataset keeps as little about them as it can:

* owner names and ids are replaced by a keyed hash (HMAC-SHA256) **before the chain
  runs**, so no step, hook or log line ever sees them; the key is a random secret in
  ``<storage root>/.selfiescope-key`` (mode 0600), created on first use and never
  printed, logged, written to settings, the manifest, the card or an export;
* captions are dropped unless ``[privacy] store_captions = true``;
* ``selfiescope forget`` records *tombstones*: keyed hashes of content hashes, post
  ids and owners. :func:`forgotten` (called by every engine before the chain) and
  :meth:`Manifest.post_seen` (called by sources before a download) skip what they name;
  perceptual tombstones (sealed pHashes, :mod:`.likeness`) catch the photo's copies.

Location metadata is removed from stored copies by :mod:`.metadata`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import stat
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    from .events import ImageEvent, Origin
    from .manifest import Manifest

KEY_FILE = ".selfiescope-key"
PSEUDONYMISED = "_pseudonymised"  # marker in origin.extra: scrubbing is idempotent
# Keys of origin.extra that name a person; values become pseudonyms or are dropped.
OWNER_NAME_KEYS = ("owner", "username", "owner_username")
OWNER_ID_KEYS = ("owner_id", "user_id", "owner_pk")
DROPPED_KEYS = ("full_name", "owner_full_name", "profile_pic_url")
POST_IN_URL = re.compile(r"/(?:p|reel|tv)/([A-Za-z0-9_-]+)")


class PrivacyError(UsageError, RuntimeError):
    """The dataset key cannot be read or created (phrased for the user)."""


PROFILE_URL = re.compile(r"^(?:[a-z][a-z0-9+.-]*://)?(?:www\.)?[^/\s]*instagram\.com/@?([^/?#\s]+)", re.IGNORECASE)


def normalise_owner(name: str) -> str:
    """Instagram user names are case-insensitive and often written with an ``@``, or given as
    the profile's URL (``https://www.instagram.com/NAME/``)."""
    name = name.strip()
    if match := PROFILE_URL.match(name):
        name = match.group(1)
    return name.lstrip("@").strip().lower()


def post_code(value: str) -> str:
    """A post's id from its shortcode or any URL of it (``.../p/CODE/``)."""
    match = POST_IN_URL.search(value)
    return match.group(1) if match else value.strip().strip("/")


def load_or_create_key(root: Path) -> bytes:
    """Read the dataset key, creating it (0600, atomically) when the root has none."""
    path = Path(root) / KEY_FILE
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first: use theirs
        return _read_key(path)
    except OSError as exc:
        raise PrivacyError(
            f"cannot create the dataset key {path}: {exc.strerror or exc}. Owners are pseudonymised with it; "
            "make the storage root writable (or restore the key file) and run again"
        ) from None
    try:
        os.write(fd, secrets.token_hex(32).encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    return _read_key(path)


def _read_key(path: Path, *, narrow: bool = True) -> bytes:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if narrow and mode & 0o077:  # someone widened it: narrow it again rather than leak it
            os.chmod(path, 0o600)
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError) as exc:
        raise PrivacyError(f"cannot read the dataset key {path}: {exc}") from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < 16:
        raise PrivacyError(f"the dataset key {path} is damaged (expected 64 hex digits); restore it from a backup")
    return key


class KeyMissing(PrivacyError):
    """A read-only keyring found no key: nothing was ever pseudonymised or sealed with one."""


class Keyring:
    """Keyed hashes for one dataset. The key is loaded (or created) on first use only.

    ``read_only``: never create the key nor change its file (a dry run, a read-only
    dataset); a missing key raises :class:`KeyMissing`."""

    def __init__(self, root: Path | str, *, read_only: bool = False) -> None:
        self.root = Path(root)
        self.read_only = read_only
        self._key: bytes | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never the key
        return f"Keyring(root={str(self.root)!r})"

    @property
    def path(self) -> Path:
        return self.root / KEY_FILE

    def _secret(self) -> bytes:
        with self._lock:
            if self._key is None:
                if self.read_only:
                    try:
                        self._key = _read_key(self.path, narrow=False)
                    except FileNotFoundError:
                        raise KeyMissing(f"the dataset has no key ({self.path})") from None
                else:
                    self._key = load_or_create_key(self.root)
            return self._key

    def has_key(self) -> bool:
        return self._key is not None or self.path.is_file()

    def mac(self, purpose: str, data: bytes) -> bytes:
        """HMAC-SHA256 of ``data`` for one purpose (a keyed pseudo-random function)."""
        return hmac.new(self._secret(), purpose.encode() + b"\0" + data, hashlib.sha256).digest()

    def digest(self, kind: str, value: str) -> str:
        # surrogateescape: a name given as undecodable bytes (a non-UTF-8 argument) is hashed as those bytes
        return hmac.new(self._secret(), f"{kind}\0{value}".encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()

    def owner(self, name: str) -> str:
        """The pseudonym stored for an owner (also the key of an owner's tombstone)."""
        return self.digest("owner", normalise_owner(name))

    def owner_id(self, value: str) -> str:
        return self.digest("owner_id", str(value).strip())

    def post(self, post_id: str) -> str:
        return self.digest("post", post_code(post_id))

    def content(self, content_hash: str) -> str:
        return self.digest("content", content_hash.lower())


def scrub_origin(origin: "Origin", keyring: Keyring, store_captions: bool = False) -> None:
    """Pseudonymise the person in ``origin.extra`` in place (idempotent)."""
    extra = origin.extra
    if extra.get(PSEUDONYMISED):
        return
    for key in OWNER_NAME_KEYS:
        value = extra.pop(key, None)
        if value and "owner" not in extra:
            extra["owner"] = keyring.owner(str(value))
    for key in OWNER_ID_KEYS:
        value = extra.pop(key, None)
        if value not in (None, "") and "owner_id" not in extra:
            extra["owner_id"] = keyring.owner_id(str(value))
    for key in DROPPED_KEYS:
        extra.pop(key, None)
    if not store_captions:
        extra.pop("caption", None)
    extra[PSEUDONYMISED] = True


def tombstone_keys(event: "ImageEvent", keyring: Keyring) -> list[str]:
    """The tombstone keys an incoming event could match (content, post, owner)."""
    keys = [keyring.content(event.content_hash)]
    if event.origin.post_id:
        keys.append(keyring.post(event.origin.post_id))
    owner = event.origin.extra.get("owner")
    if owner:
        keys.append(owner)  # already a pseudonym: scrub_origin ran
    return keys


def forgotten(event: "ImageEvent", manifest: "Manifest", store_captions: bool = False) -> bool:
    """The ingest gate every engine calls before the chain: pseudonymise, then check tombstones.

    Returns True when a tombstone names this image, its post or its owner: the engine then
    drops it without recording anything (a forgotten image leaves no new trace).
    """
    scrub_origin(event.origin, manifest.keyring, store_captions)
    if not manifest.has_tombstones():
        return False
    return manifest.tombstoned(tombstone_keys(event, manifest.keyring))


def forget_reason() -> tuple[str, str, str]:
    return ("forget", "forgotten", "removed by `selfiescope forget`: not collected again")


def describe_extra(extra: dict[str, Any]) -> dict[str, Any]:
    """``origin.extra`` without the marker (what the manifest may keep)."""
    return {k: v for k, v in extra.items() if k != PSEUDONYMISED}
