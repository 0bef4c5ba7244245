"""FeedReader without a browser: what a feed answer says about the session, and where a
reloaded feed resumes."""

from __future__ import annotations

import asyncio
from typing import Any

from selfiescope.plugins.instagram.feed import FeedPage, FeedReader, request_cursor, with_cursor


class Emitter:
    def on(self, event: str, handler: Any) -> None:
        self.handler = handler

    def remove_listener(self, event: str, handler: Any) -> None:
        pass


class Request:
    def __init__(self, url: str, post_data: str | None = None) -> None:
        self.url, self.post_data = url, post_data


class Response:
    def __init__(self, status: int, body: Any, url: str = "http://x.test/api/v1/tags/a/sections/?max_id=Q1") -> None:
        self.status, self.body, self.url, self.request = status, body, url, Request(url)

    async def json(self) -> Any:
        return self.body

    async def header_value(self, name: str) -> str | None:
        return None


def read(status: int, body: Any) -> FeedReader:
    reader = FeedReader(Emitter(), "http://x.test")
    asyncio.run(reader._read(Response(status, body)))
    return reader


def test_a_401_or_login_required_is_a_lost_login_and_a_403_is_not() -> None:
    assert read(401, {"message": "login_required", "status": "fail"}).login_lost
    assert read(401, {"message": "Please wait a few minutes before you try again.", "require_login": True}).login_lost
    assert read(400, {"message": "login_required", "status": "fail"}).login_lost
    assert not read(403, {"message": "CSRF token missing or incorrect", "status": "fail"}).login_lost
    assert not read(403, None).login_lost


def test_a_reloaded_feed_resumes_after_the_last_page_whose_posts_were_all_handled() -> None:
    reader = FeedReader(Emitter(), "http://x.test")
    assert reader.resume_point(set()) is None  # nothing read: from the top
    reader.pages = [FeedPage(None, ["a", "b"], "C1"), FeedPage("C1", ["c", "d"], "C2"), FeedPage("C2", ["e"], "C3")]
    assert reader.resume_point({"a", "b", "c", "d", "e"}) == "C3"
    assert reader.resume_point({"a", "b", "c"}) == "C1"  # "d" was not handled: its page again
    assert reader.resume_point({"c", "d", "e"}) is None  # the first page's posts: from the top


def test_the_cursor_is_replaced_where_the_request_carries_it() -> None:
    url = "http://x.test/api/v1/tags/a/sections/?max_id=Q1&page=1"
    assert request_cursor(url, None) == "Q1"
    new_url, body = with_cursor(url, None, "Q9")
    assert request_cursor(new_url, body) == "Q9" and "page=1" in new_url and body is None
    form = "include_persistent=0&max_id=Q1&page=1&surface=grid&tab=recent"
    same, new_form = with_cursor("http://x.test/api/v1/tags/a/sections/", form, "Q9")
    assert same.endswith("/sections/") and request_cursor(same, new_form) == "Q9" and "tab=recent" in new_form
    assert request_cursor("http://x.test/api/v1/tags/a/sections/", None) is None
