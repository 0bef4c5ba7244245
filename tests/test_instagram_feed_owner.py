"""The owner of a grid post, read from the tile's alt text: a user name or nothing."""

from __future__ import annotations

from hypothesis import given, strategies as st

from selfiescope.plugins.instagram.feed import owner_from_alt


def test_alt_texts_instagram_writes() -> None:
    assert owner_from_alt("Photo by user_123") == "user_123"
    assert owner_from_alt("Photo by jane.doe on March 3, 2024. May be an image of 1 person") == "jane.doe"
    assert owner_from_alt("Photo shared by @bob. on May 1") == "bob"
    assert owner_from_alt("Photo by bob, tagging @alice") == "bob"
    # A display name is not a user name: no owner rather than a wrong one.
    assert owner_from_alt("Photo shared by Jane Doe on March 3") is None
    for alt in (None, "", "A sunset", "Photo by ", "Photo by " + "a" * 31, "Photo by x\u00e9y"):
        assert owner_from_alt(alt) is None


@given(st.text(max_size=60))
def test_an_owner_read_from_any_alt_is_a_user_name_it_contains(alt: str) -> None:
    owner = owner_from_alt(alt)
    if owner is not None:
        assert owner in alt and 1 <= len(owner) <= 30
        assert all(c.isascii() and (c.isalnum() or c in "._") for c in owner) and not owner.endswith(".")
