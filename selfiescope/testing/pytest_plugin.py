"""pytest plugin (entry point ``pytest11``): fixtures for testing selfiescope plugins.

``mock_instagram``
    A started :class:`~selfiescope.testing.site.MockInstagram`, stopped after the test.
    Configure it with a marker, ``@pytest.mark.mock_instagram(latency_ms=50)``, or by
    indirect parametrisation with a dict of keyword arguments.

``selfiescope_run``
    Runs a chain of named steps on images in-process, like pytest's ``pytester``::

        def test_my_step(selfiescope_run):
            result = selfiescope_run(["decode", "my_step"], [jpeg_bytes, rgb_array])
            assert result[0].reject_code == "too_dark"

    ``await selfiescope_run.arun(...)`` does the same inside an async test. A chain or options
    that ``settings check`` would refuse (an unknown or disabled step, a step whose ``requires``
    no earlier step provides) raise ``SettingsError`` with the same problem lines.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # pragma: no cover
    from .runner import StepRunner
    from .site import MockInstagram


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "mock_instagram(**kwargs): keyword arguments for the mock_instagram fixture's MockInstagram"
    )


@pytest.fixture
def mock_instagram(request: pytest.FixtureRequest) -> Iterator["MockInstagram"]:
    from .site import MockInstagram

    kwargs: dict[str, Any] = {}
    marker = request.node.get_closest_marker("mock_instagram")
    if marker is not None:
        kwargs.update(marker.kwargs)
    kwargs.update(getattr(request, "param", None) or {})
    site = MockInstagram(**kwargs)
    site.start()
    try:
        yield site
    finally:
        site.stop()


@pytest.fixture
def selfiescope_run(tmp_path_factory: pytest.TempPathFactory) -> "StepRunner":
    from .runner import StepRunner

    return StepRunner(tmp_path_factory.mktemp("selfiescope_run"))
