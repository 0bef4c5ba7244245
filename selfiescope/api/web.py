"""For sources that browse a site: the shared browser pool, the account's request budget,
image downloads with retries, and deadlines on everything that crosses to the browser or the
network (docs/plugins.md, "A source"; docs/architecture.md, "Web sources").

::

    from selfiescope.api.web import browser_pool, fetch_image, leased_events, within
"""

from __future__ import annotations

from ..core.browser import (
    BrowserPool, BrowserStartTimeout, Lease, browser_pool, leased_events, load_session, save_session, session_path,
)
from ..core.browser_lookup import BrowserNotFound
from ..core.proxy import proxy_problem
from ..core.secrets import credential
from ..core.web import (
    ACCEPT, DECLINE, Deadline, DownloadError, Fetched, RateLimited, SiteUnreachable, TokenBucket, choose_dismiss_button,
    click_dialog_buttons, fetch_image, largest_from_srcset, open_dialogs, parse_retry_after, scroll_and_wait, settle_failed_download, within,
)

__all__ = [
    "ACCEPT",
    "BrowserNotFound",
    "BrowserPool",
    "BrowserStartTimeout",
    "DECLINE",
    "Deadline",
    "DownloadError",
    "Fetched",
    "Lease",
    "RateLimited",
    "SiteUnreachable",
    "TokenBucket",
    "browser_pool",
    "choose_dismiss_button",
    "click_dialog_buttons",
    "credential",
    "fetch_image",
    "largest_from_srcset",
    "leased_events",
    "load_session",
    "open_dialogs",
    "parse_retry_after",
    "proxy_problem",
    "save_session",
    "scroll_and_wait",
    "session_path",
    "settle_failed_download",
    "within",
]
