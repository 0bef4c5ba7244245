"""The whole extension surface of selfiescope.

Every built-in feature (the folder and Instagram sources, the decode, face-area, dedup
and store steps, the files backend, the feature groups, the Instagram commands) is a
plugin implementing these hooks, registered exactly like a third-party plugin. A
third-party package exposes a module in the ``selfiescope`` entry-point group and
implements any of them, importing what it needs from :mod:`selfiescope.api`::

    from selfiescope.api import Step, hookimpl

    @hookimpl
    def selfiescope_steps():
        return [MyFilter]

Registration hooks (``selfiescope_sources``, ``selfiescope_steps``,
``selfiescope_storage``, ``selfiescope_features``) return *classes*; settings pick
components by their ``name`` and the engine instantiates them per run with validated
options. We register classes rather than calling one hook per image because settings
choose *which* steps run and in *what order*, per pipeline; a plain pluggy hook call
would run every implementation in registration order.

``selfiescope_commands`` adds commands to the command line (datasette's
``register_commands``); it is called once, when the CLI is built.

Set ``SELFIESCOPE_TRACE_PLUGINS=1`` to log every hook call and its result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:  # pragma: no cover - annotations only: importing this module stays cheap
    import typer

    from .components import FeatureExtractor, Source, Step, Storage
    from .context import RunContext
    from .events import ImageEvent
    from .manifest import Manifest
    from .review_facets import ReviewFacet
    from .stats import RunStats

PROJECT = "selfiescope"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def selfiescope_sources() -> list[type[Source]]:
    """Return a list of :class:`~selfiescope.api.Source` subclasses.

    A source turns a pipeline's targets (hashtags, folders, URLs) into jobs and
    yields :class:`~selfiescope.api.ImageEvent` objects for each job. Jobs of
    one run execute concurrently; the engine applies backpressure, so a source simply
    ``yield``s and is paused while the chain is busy.
    """


@hookspec
def selfiescope_steps() -> list[type[Step]]:
    """Return a list of :class:`~selfiescope.api.Step` subclasses.

    A step is one link of the image chain. Its ``process(event)`` may annotate the
    event, or drop the image by raising :class:`~selfiescope.api.Reject` with a
    reason; the rest of the chain is then skipped for that image. Any other exception
    is a *failure*, not a decision: the image is marked ``failed`` (code: the
    exception's ``code`` attribute, else ``"error"``), the run goes on but ends with
    errors (exit 1), and a rerun retries the image. Synchronous ``process`` methods run
    in a worker thread, off the event loop.
    """


@hookspec
def selfiescope_storage() -> list[type[Storage]]:
    """Return a list of :class:`~selfiescope.api.Storage` subclasses.

    A storage backend writes accepted images (``write``), answers whether an id is
    already stored (``exists``) and lists what it holds (``iterate``). The settings key
    ``storage.backend`` chooses one by name.
    """


@hookspec
def selfiescope_features() -> list[type[FeatureExtractor]]:
    """Return a list of :class:`~selfiescope.api.FeatureExtractor` subclasses.

    Each extractor computes one named group of numeric features from a decoded image
    and its face annotations, for training and prediction. Its ``version`` is part of
    the feature-cache key and of a trained model's schema.

    ``extract(image, face)`` gets the decoded RGB ``uint8`` array (EXIF-oriented, as the
    ``decode`` step made it) and ``face``, a dict with ``box`` ([x, y, w, h] of the
    largest face, or ``None``), ``face_area`` (its share of the image area),
    ``n_faces`` and ``exif`` (the original file's raw EXIF block, or ``None``). It
    returns ``{name: float}`` for every name in ``feature_names()`` (``nan`` where a
    value cannot be computed). Extraction runs in worker processes, so an extractor
    must be picklable and should load heavy models lazily.
    """


@hookspec
def selfiescope_commands(app: typer.Typer) -> None:
    """Add commands or command groups to the ``selfiescope`` command line.

    Called once, when the CLI is built, for every loaded (not disabled) plugin. Register
    with ``@app.command()`` or ``app.add_typer(sub_app, name=...)``; every command on
    ``app`` ends through the CLI's guard (a known problem prints one line and exits with
    its code; so do the commands of a sub-app, even a plain ``typer.Typer``). A command name
    that is already taken is left out, with a warning naming both plugins; ``selfiescope
    plugins`` lists the commands each plugin adds. Import typer and your command code inside
    the hook, so that using the plugin from Python stays light. A command gets its application
    object (settings and plugins, as pipelines take it) with
    ``selfiescope.cli.common.load_app(settings_path)``, first, as the built-in commands do.

    :param app: the root :class:`typer.Typer` application of the ``selfiescope`` command.
    """


@hookspec
def selfiescope_review_facets() -> list[ReviewFacet]:
    """Facets of your own in the sidebar of ``selfiescope review``.

    Return :class:`~selfiescope.api.ReviewFacet` objects (name, title, and a function from an
    image's manifest row to its value or values). The app calls each function once per image
    when it reads the manifest, then counts and filters like its own facets (a value's count
    is taken under the other facets' filters). A function that raises gives that image no
    value (logged once per facet). Rejection codes of your steps need no facet of yours: they
    are values of the built-in "rejection reason" facet.
    """


@hookspec
def selfiescope_run_started(run: RunContext) -> None:
    """Called once when a run starts, before the first job.

    :param run: the run's :class:`~selfiescope.api.RunContext` (settings, manifest,
        storage, stats); ``run.stats.state_listeners`` takes callbacks for job states.
    """


@hookspec
def selfiescope_image_accepted(event: ImageEvent, run: RunContext) -> None:
    """Called after an image passed the whole chain (and was stored, if ``store`` is in it).

    :param event: the :class:`~selfiescope.api.ImageEvent`, with every step's annotations
        and, when stored, its ``location``.
    :param run: the :class:`~selfiescope.api.RunContext` of the run.
    """


@hookspec
def selfiescope_image_rejected(event: ImageEvent, run: RunContext) -> None:
    """Called when a step rejected an image.

    :param event: the :class:`~selfiescope.api.ImageEvent`; ``event.rejected_by`` names the
        step, ``event.reject_code`` and ``event.reject_reason`` say why.
    :param run: the :class:`~selfiescope.api.RunContext` of the run.
    """


@hookspec
def selfiescope_image_failed(event: ImageEvent, run: RunContext) -> None:
    """Called when an image could not be processed: a step raised an error (a write that
    failed, a plugin bug) or the source could not read it. Nothing was decided: the run
    ends with errors and a rerun retries the image.

    :param event: the :class:`~selfiescope.api.ImageEvent`; ``event.rejected_by`` names the
        step, ``event.reject_code`` and ``event.reject_reason`` say what broke.
    :param run: the :class:`~selfiescope.api.RunContext` of the run.
    """


@hookspec
def selfiescope_run_finished(run: RunContext, stats: RunStats) -> None:
    """Called once when a run ends, normally or cancelled.

    :param run: the :class:`~selfiescope.api.RunContext` of the run.
    :param stats: the run's final :class:`~selfiescope.core.stats.RunStats` (``status``,
        counts, ``errors``).
    """


@hookspec
def selfiescope_label_changed(manifest: Manifest, content_hash: str, old: str | None, new: str) -> None:
    """Called when a review edit (or its undo) changes an image's effective label, inside the
    edit's write transaction: a plugin that keeps the label in its own state updates it through
    ``manifest.state(...)`` so the edit and its copy commit or roll back together.

    :param manifest: the writable :class:`~selfiescope.core.manifest.Manifest` being edited.
    :param content_hash: the image's content hash.
    :param old: its effective label before the edit (None when unknown).
    :param new: its effective label after the edit.
    """


@hookspec
def selfiescope_linked_images(manifest: Manifest) -> list[tuple[str, str]]:
    """Return pairs of content hashes this plugin knows to be one photo (dedup: a photo met
    under two labels), read from its own state; the review groups them.

    :param manifest: the :class:`~selfiescope.core.manifest.Manifest` (possibly read-only).
    """
