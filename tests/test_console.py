"""Output that is not a terminal is never wrapped: a message stays one line (for grep, CI logs)."""

from __future__ import annotations

from selfiescope.cli.collect import print_stats
from selfiescope.cli.common import console, out


def test_lines_are_not_wrapped_when_output_is_not_a_terminal(monkeypatch) -> None:  # noqa: ANN001
    assert not out.is_terminal and not console.is_terminal  # pytest captures both
    error = "instagram gamma: #gamma: 7 of 16 posts could not be downloaded " + "x" * 150 + " rerun to retry them"
    with out.capture() as captured:
        print_stats({"status": "finished_with_errors", "errors": [error]}, "scrape: stored under data")
    assert any(error in line for line in captured.get().splitlines())
    with console.capture() as captured:
        console.print("gamma: " + "y" * 200, highlight=False, markup=False)
    assert len(captured.get().strip().splitlines()) == 1
    from selfiescope.cli.common import make_console

    monkeypatch.setenv("COLUMNS", "60")  # asked for a width: kept
    assert make_console().width == 60
