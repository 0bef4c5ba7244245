"""An example third-party plugin: a chain step that drops images below a file size, a
``selfiescope sizegate`` command that says which files the step would drop, and a
"File size" facet in ``selfiescope review``.

Installed through the ``selfiescope`` entry-point group (see pyproject.toml), it shows
up in ``selfiescope plugins`` and can be placed in any pipeline's ``chain``. It imports
only from the public API, :mod:`selfiescope.api`.
"""

from pathlib import Path

from selfiescope.api import ImageEvent, Options, Reject, ReviewFacet, Step, hookimpl


class SizeGateOptions(Options):
    min_bytes: int = 1024


class SizeGate(Step):
    name = "sizegate"
    Options = SizeGateOptions

    def process(self, event: ImageEvent) -> None:
        if event.size < self.options.min_bytes:
            raise Reject("too_few_bytes", f"{event.size} bytes < min_bytes {self.options.min_bytes}")
        event.notes["sizegate"] = "passed"


@hookimpl
def selfiescope_steps():
    return [SizeGate]


@hookimpl
def selfiescope_commands(app):
    import typer

    @app.command("sizegate")
    def sizegate_command(
        files: list[Path] = typer.Argument(..., help="image files to check"),
        min_bytes: int = typer.Option(SizeGateOptions().min_bytes, help="the smallest size kept"),
    ) -> None:
        """Say which FILES the sizegate step would drop; exit 1 if any."""
        dropped = [f for f in files if f.stat().st_size < min_bytes]
        for f in files:
            typer.echo(f"{'drop' if f in dropped else 'keep'} {f}")
        raise typer.Exit(1 if dropped else 0)


def file_size(row):
    """An image's file-size band (the review app calls it once per image with its manifest row)."""
    size = row.get("size")
    if size is None:
        return None
    return "under 10 kB" if size < 10_000 else "10 kB to 1 MB" if size < 1_000_000 else "1 MB or more"


@hookimpl
def selfiescope_review_facets():
    return [ReviewFacet("file_size", "File size", file_size)]
