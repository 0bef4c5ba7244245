"""An example third-party plugin: a chain step that drops images below a file size.

Installed through the ``selfiescope`` entry-point group (see pyproject.toml), it shows
up in ``selfiescope plugins`` and can be placed in any pipeline's ``chain``.
"""

from selfiescope import hookimpl
from selfiescope.core.components import Options, Step
from selfiescope.core.events import ImageEvent, Reject


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
