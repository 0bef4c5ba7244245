"""``selfiescope scrape``: hashtags straight from the command line, through any source.

Logging in is the source plugin's business (the Instagram plugin's ``login`` command and
its source's login at a login wall), not this pipeline's.
"""

from __future__ import annotations

from typing import Any

from ...core.app import App
from ...core.plugins import Registry
from ...core.settings import SCRAPE_SOURCE, ScrapePipeline
from ...core.stats import RunStats
from ...core.text import site_url_problem
from .collect import collect


def url_option_of(registry: Registry, source: str) -> str | None:
    """The option of source ``source`` that a ``--base-url`` sets: its ``url_option`` capability
    (None: it takes none). A source no plugin provides answers ``""``: the run reports it."""
    cls = registry.sources.get(source)
    return "" if cls is None else cls.url_option


def scrape_pipeline(registry: Registry, tags: list[str], label: str, *, limit: int | None = None, source: str = SCRAPE_SOURCE,
                    base_url: str | None = None, chain: list[str] | None = None,
                    url_option: str | None = None, stop_after_known: int | None = None,
                    since: str | None = None) -> ScrapePipeline:
    """The pipeline the original script ran, for many tags at once.

    ``base_url`` goes into the source's ``url_option`` (asked of the source class when not
    given). Raises pydantic's ValidationError, or ValueError for a ``base_url`` the source
    cannot take.
    """
    fields: dict[str, Any] = {"kind": "scrape", "source": source, "hashtags": tags, "label": label, "limit": limit}
    if chain:
        fields["chain"] = chain
    if stop_after_known is not None:
        fields["stop_after_known"] = stop_after_known
    if since is not None:
        fields["since"] = since
    if base_url:
        if problem := site_url_problem(base_url):
            raise ValueError(f"--base-url: {problem}")
        key = url_option or url_option_of(registry, source)
        if key is None:
            raise ValueError(f"--base-url: the {source} source takes no site URL")
        if key:
            fields["options"] = {source: {key: base_url}}
    return ScrapePipeline.model_validate(fields)


async def scrape(app: App, tags: list[str], label: str, **kwargs: Any) -> RunStats:
    return await collect(app, "scrape", pipeline=scrape_pipeline(app.registry, tags, label, **kwargs))
