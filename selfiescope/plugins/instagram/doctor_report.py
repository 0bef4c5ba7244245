"""What ``selfiescope doctor`` reports (:class:`Report` of :class:`Check`), the facts it checks
against (docs/instagram.md), and the helpers that phrase what it found."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlparse

from pydantic import ValidationError

from ...api import Settings, UsageError
from ...api.web import Deadline
from .errors import explain
from .feed import find_medias
from .options import InstagramOptions
from .outcomes import printable

# Documented in docs/instagram.md ("The feed JSON"): what the source reads from a media object.
MEDIA_FIELDS = ("code", "pk", "image_versions2", "original_width", "original_height", "user", "taken_at")
PAGE_FIELDS = ("more_available", "next_max_id")
CHECKS = ("login_form", "login", "tag_page", "feed_json", "image_candidates", "popups")
MAX_429_WAITS = 2  # the source waits out a 429 and reloads; so does the doctor, this often


class DoctorError(UsageError, ValueError):
    """Bad input (a base URL that is not http(s), bad plugin options); a usage error."""


@dataclass
class Check:
    name: str
    status: str  # pass | fail | skip
    detail: str
    found: str = ""  # what the site offers instead, on failure
    elapsed_s: float = 0.0


@dataclass
class Report:
    base_url: str
    tag: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(c.status == "fail" for c in self.checks)

    def status(self, name: str) -> str | None:
        return next((c.status for c in self.checks if c.name == name), None)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "base_url": self.base_url, "tag": self.tag,
                "checks": [asdict(c) for c in self.checks]}


OnCheck = Callable[[Check], None]


def doctor_options(settings: Settings, base_url: str) -> InstagramOptions:
    """The source's options (``[plugins.instagram]``) with ``base_url``: the doctor waits and
    closes pop-ups exactly as a scrape with these settings would."""
    try:
        return InstagramOptions.model_validate({**settings.plugins.get("instagram", {}), "base_url": base_url})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise DoctorError(f"plugins.instagram.{where}: {first['msg']}") from None


def check_target(base_url: str, tag: str) -> None:
    """DoctorError unless ``base_url`` is an http(s) URL and ``tag`` a hashtag."""
    parsed = urlparse(base_url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise DoctorError(f"--base-url must be an http(s) URL, not {base_url!r}")
    if not tag or "/" in tag:
        raise DoctorError(f"--tag must be a hashtag, not {tag!r}")


def browser_failure(exc: BaseException, timeout_s: float) -> str:
    """One line for a browser call that failed, in the words the source uses (:func:`.errors.explain`);
    a timeout names the deadline. The browser's own text goes to the debug log only."""
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    if isinstance(exc, PlaywrightTimeout):
        return f"no answer within {timeout_s:g} s"
    return explain(exc)


def step_failure(exc: BaseException, timeout_s: float) -> str:
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    if isinstance(exc, PlaywrightTimeout | Deadline):
        return f"the site did not answer in time: {browser_failure(exc, timeout_s)}"
    return f"the browser failed: {browser_failure(exc, timeout_s)}"


def site_message(body: Any) -> str:
    """The site's own message in an error answer (JSON ``message``), else its first words."""
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            return printable(body)
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return printable(body["message"])
    return ""


def quote_outcome(outcome: str) -> str:
    """The page's message from an outcome such as ``"<reason>: <message>"``."""
    return repr(outcome.partition(": ")[2] or outcome)


def media_objects(data: Any) -> list[dict[str, Any]]:
    """Post-like objects: those with ``image_versions2`` (as the source finds them) and, when
    there are none (a changed shape), those with a shortcode and an id, to say what changed."""
    found = find_medias(data)
    if found:
        return found
    stack, out = [data], []
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if ("code" in node or "shortcode" in node) and ("pk" in node or "id" in node):
                out.append(node)
                continue
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return out
