"""The ``instagram`` plugin: the source (see :mod:`.source`, hashtags through a real browser)
and the ``login``, ``record`` and ``doctor`` commands (:mod:`.commands`).

:mod:`.feed` reads posts from the feed JSON and the DOM; :mod:`.login` logs in through
the web form; :mod:`.account` logs an account in again, once for all its jobs, when its session
ends; :mod:`.post_page` reads a post's fresh data as its page gets it; :mod:`.errors` turns browser
errors into what happened and what to do; :mod:`.session` is ``selfiescope login``; :mod:`.source`
runs one job per hashtag (:mod:`.options` holds its settings); :mod:`.doctor` (``selfiescope
doctor``) runs the source's own code against a site and reports, check by check (:mod:`.doctor_report`), what it relies on and what it found.
Its settings are ``[plugins.instagram]`` (:class:`InstagramOptions`) and the
environment variables :data:`USERNAME_ENV` / :data:`PASSWORD_ENV`.
"""

from __future__ import annotations

from ...api import hookimpl
from .feed import FeedReader, Post, find_medias, image_url_from_post_page, is_feed_url, post_from_media
from .login import CHALLENGE_PATHS, login_outcome, submit_login
from .source import (
    DISMISS_BUTTONS, PASSWORD_ENV, USERNAME_ENV, InstagramOptions, InstagramSource, JobFailed, SourceStopped,
)

__all__ = [
    "CHALLENGE_PATHS", "DISMISS_BUTTONS", "PASSWORD_ENV", "USERNAME_ENV", "FeedReader", "InstagramOptions",
    "InstagramSource", "JobFailed", "Post", "SourceStopped", "find_medias", "image_url_from_post_page",
    "is_feed_url", "login_outcome", "post_from_media", "submit_login",
]


@hookimpl
def selfiescope_sources():
    return [InstagramSource]


@hookimpl
def selfiescope_commands(app):  # noqa: ANN001 - typer.Typer; the command module loads only for the CLI
    from .commands import register

    register(app)
