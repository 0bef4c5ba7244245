"""Runs ``selfiescope`` command lines in one process for the CLI fuzz test (tests/test_cli_fuzz.py).

Each line read from stdin is a JSON object ``{"argv": [...], "env": {...}}``; after running it
through the application that ``selfiescope`` builds (plugin commands included), one JSON line
goes to the file descriptor named by ``argv[1]``: the exit code, the output, and the traceback
of an exception that escaped the command (a bug). Results travel on their own descriptor so
that anything a command or a native library writes to stdout cannot corrupt them. The parent
bounds every case with a deadline and kills this process on a hang.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback


def _fresh_logging() -> None:
    """Drop the handlers a previous case installed: they hold that case's closed streams."""
    for logger in (logging.getLogger(), logging.getLogger("selfiescope")):
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
    logging.getLogger().setLevel(logging.WARNING)


def main() -> None:
    from typer.testing import CliRunner

    from selfiescope.cli.build import make_app

    results = os.fdopen(int(sys.argv[1]), "w", encoding="utf-8")
    app, _ = make_app()
    runner = CliRunner()
    results.write(json.dumps({"ready": True}) + "\n")
    results.flush()
    for line in sys.stdin:
        case = json.loads(line)
        _fresh_logging()
        result = runner.invoke(app, case["argv"], env=case.get("env") or {}, input="", catch_exceptions=True)
        escaped = None
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            escaped = "".join(traceback.format_exception(*result.exc_info))
        output = result.output
        try:
            output += result.stderr
        except ValueError:  # stderr mixed into output already
            pass
        results.write(json.dumps({"code": result.exit_code, "output": output, "traceback": escaped}) + "\n")
        results.flush()


if __name__ == "__main__":
    main()
