"""Settings checked against the world: the paths they name and the components the loaded
plugins provide (names, options, ``[plugins] disable``, what each chain step requires).

:mod:`.settings` validates a file on its own; these checks need the filesystem or the
registry, so they run where a command has both. Each returns problems as ``key: problem``.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ValidationError

from .components import chain_stores, unmet_requirements
from .settings import PipelineBase, ScrapePipeline, Settings, TrainPipeline, format_validation_error
from .regular_files import regular_file_problem
from .text import printable

if TYPE_CHECKING:  # pragma: no cover
    from .plugins import Registry


def _path_problem(path: Path, want: Literal["dir", "file"]) -> str | None:
    """Why ``path`` cannot be used as a folder (``dir``) or a file to append to (``file``), or None.

    A file to append to must be a regular file (or the null device): a FIFO would block the
    open until a reader comes, and a device such as ``/dev/full`` fails every write."""
    shown = printable(path)
    if path.exists():
        if want == "dir" and not path.is_dir():
            return f"{shown} is a file, not a folder"
        if want == "file" and path.is_dir():
            return f"{shown} is a folder, not a file"
        if want == "file" and not stat.S_ISREG(path.stat().st_mode) and not path.samefile(os.devnull):
            return f"{shown} is not a regular file (a pipe, device or socket cannot be written to as a file)"
        if not os.access(path, os.W_OK | (os.X_OK if want == "dir" else 0)):
            return f"{shown} is not writable"
        return None
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                return f"{shown} is under {printable(parent)}, which is a file"
            if not os.access(parent, os.W_OK | os.X_OK):
                return f"{shown} cannot be created: {printable(parent)} is not writable"
            return None
    return None


def file_to_write_problem(path: Path) -> str | None:
    """Why ``path`` cannot be written as a regular file (a folder, a FIFO, a device, not
    writable, under a file), or None."""
    return _path_problem(path, "file")


def check_paths(settings: Settings) -> list[str]:
    """Problems with the paths settings name (the storage root, the log file), as ``key: problem``."""
    problems = []
    if why := _path_problem(Path(settings.storage.root), "dir"):
        problems.append(f"storage.root: {why}")
    if settings.logging.file is not None and (why := _path_problem(settings.logging.file, "file")):
        problems.append(f"logging.file: {why}")
    if settings.browser.replay_har is not None and (why := regular_file_problem(settings.browser.replay_har)):
        problems.append(f"browser.replay_har: {printable(settings.browser.replay_har)} {why}")
    return problems


def check_components(settings: Settings, registry: "Registry",
                     adhoc: tuple[str, PipelineBase] | None = None) -> list[str]:
    """Validate names and options that only the loaded plugins know, in settings and in the
    ``adhoc`` pipeline a command made from its options (``(name, pipeline)``). Returns problems.
    Reads ``registry`` only (``[plugins] disable`` was applied when it was built)."""
    problems: list[str] = []
    known_all = registry.all_names()
    for name, opts in settings.plugins.items():
        if name == "disable":
            continue
        if name not in known_all:
            problems.append(f"plugins.{name}: " + (registry.why_missing(name) or (
                f"no plugin provides a component named {name!r}")))
            continue
        problems += _check_options(registry.options_model(name), opts, f"plugins.{name}")
    for i, step in enumerate(settings.compute.worker_steps or []):
        if step in registry.steps and not registry.steps[step].worker_safe:
            problems.append(f"compute.worker_steps[{i}]: step {step!r} is not worker_safe (it needs the manifest "
                            "or storage), so it cannot run on Dask workers")
        elif step not in registry.steps:
            problems.append(f"compute.worker_steps[{i}]: unknown step {step!r} (available: {', '.join(sorted(registry.steps))})")
    backend = settings.storage.backend
    if backend not in registry.storage:
        problems.append("storage.backend: " + (registry.why_missing(backend) or (
            f"unknown backend {backend!r} (available: {', '.join(sorted(registry.storage))})")))
    else:
        problems += _storage_problems(settings, registry, backend)
    for pname, p in [*settings.pipelines.items(), *([adhoc] if adhoc is not None else [])]:
        problems += check_pipeline(settings, registry, pname, p)
    return problems


def check_pipeline(settings: Settings, registry: "Registry", pname: str, p: PipelineBase) -> list[str]:
    """Problems with one pipeline's component names and options."""
    problems: list[str] = []
    known_all = registry.all_names()
    base = f"pipelines.{pname}"
    if isinstance(p, ScrapePipeline):
        if p.source not in registry.sources:
            problems.append(f"{base}.source: " + (registry.why_missing(p.source) or (
                f"unknown source {p.source!r} (available: {', '.join(sorted(registry.sources))})")))
        if not p.targets():
            problems.append(f"{base}: give at least one of hashtags, paths or urls")
        problems += check_chain(registry, base, p.chain, must_store=not p._report_only)
        source_cls = registry.sources.get(p.source)
        if source_cls is not None and not source_cls.incremental:
            problems += [f"{base}.{key}: the {p.source} source cannot stop early by what the dataset holds or by "
                         "date; remove it" for key in ("stop_after_known", "since") if getattr(p, key) is not None]
    if isinstance(p, TrainPipeline):
        problems += train_pipeline_problems(pname, p)
        problems += [f"{base}.params: {why}" for why in lightgbm_param_problems(p.params)]
        for i, group in enumerate(p.features):
            if group not in registry.features:
                problems.append(f"{base}.features[{i}]: " + (registry.why_missing(group) or (
                    f"unknown feature group {group!r} (available: {', '.join(sorted(registry.features))})")))
    for cname in p.options:
        if cname not in known_all:
            problems.append(f"{base}.options.{cname}: " + (registry.why_missing(cname) or (
                f"no plugin provides a component named {cname!r}")))
            continue
        merged = settings.component_options(cname, p)
        problems += _check_options(registry.options_model(cname), merged, f"{base}.options.{cname}")
    return problems


def check_chain(registry: "Registry", base: str, chain: list[str], *, must_store: bool = True) -> list[str]:
    """Problems with a chain of step names: unknown or disabled steps, a step listed twice, a step
    whose ``requires`` no earlier step provides and, when ``must_store``, a chain that stores
    nothing. Settings ask it for every collect pipeline, the ``selfiescope_run`` fixture for the
    chain it is given; ``base`` is where the chain sits (``pipelines.NAME``)."""
    problems: list[str] = []
    for i, step in enumerate(chain):
        if step not in registry.steps:
            problems.append(f"{base}.chain[{i}]: " + (registry.why_missing(step) or (
                f"unknown plugin {step!r} (available: {', '.join(sorted(registry.steps))})")))
    if len(set(chain)) != len(chain):
        problems.append(f"{base}.chain: a step is listed twice")
    problems += _unmet_requirements(registry, base, chain)
    if must_store and all(step in registry.steps for step in chain) and not chain_stores(registry.steps, chain):
        problems.append(f"{base}.chain: the chain stores nothing: add 'store' (or another step that stores "
                        "images) at its end, or the images it accepts are counted and lost")
    return problems


def train_pipeline_problems(pname: str, p: TrainPipeline) -> list[str]:
    """What a train pipeline needs before any work (labels, features, parameters it cannot take,
    its dataset folder): ``settings check`` and ``train`` both ask this."""
    base = f"pipelines.{pname}"
    problems = []
    if len(p.labels) != 2 or len(set(p.labels)) != 2:
        problems.append(f"{base}.labels: give two labels (different ones), the positive one first (got {p.labels})")
    if not p.features:
        problems.append(f"{base}.features: choose at least one feature group")
    if any(p.params.get(key) not in (None, False, 0, "false") for key in ("linear_tree", "linear_trees")):
        problems.append(f"{base}.params.linear_tree: not supported (prediction checks every model before loading "
                        "it and knows no linear trees); remove it")
    if p.dataset_root is not None:
        root = Path(p.dataset_root).expanduser()
        if not root.is_dir():
            problems.append(f"{base}.dataset_root: {printable(root)} is not a folder" if root.exists()
                            else f"{base}.dataset_root: folder not found: {printable(root)}")
    return problems


def _storage_problems(settings: Settings, registry: "Registry", backend: str) -> list[str]:
    """The storage backend's own verdict on its options (``Storage.settings_problems``), also
    when settings leave them all to their defaults."""
    cls = registry.storage[backend]
    try:
        options = cls.Options.model_validate(settings.component_options(backend))
    except ValidationError as exc:  # reported once, by the [plugins.NAME] check, when that table exists
        return [] if backend in settings.plugins else [f"plugins.{backend}.{p}" for p in format_validation_error(exc)]
    return [f"plugins.{backend}.{p}" for p in cls.settings_problems(options)]


def _unmet_requirements(registry: "Registry", base: str, chain: list[str]) -> list[str]:
    """A step that requires an annotation (``Step.requires``) no earlier step provides."""
    return [f"{base}.chain[{i}]: step {name!r} requires {', '.join(sorted(missing))}, which no earlier step provides"
            for i, name, missing in unmet_requirements(registry.steps, chain)]


def _check_options(model: type[BaseModel], opts: dict[str, Any], where: str) -> list[str]:
    try:
        model.model_validate(opts)
    except ValidationError as exc:
        return [f"{where}.{p}" for p in format_validation_error(exc)]
    return []


# LightGBM's names for the number of boosting rounds and of threads: the train pipeline sets
# both itself, so they are checked here as numbers and not handed to the trial fit below.
_ROUNDS = ("n_estimators", "num_iterations", "num_iteration", "n_iter", "num_tree", "num_trees", "num_round",
           "num_rounds", "num_boost_round")
_THREADS = ("n_jobs", "num_threads", "num_thread", "nthread", "nthreads")


def lightgbm_param_problems(params: dict[str, Any]) -> list[str]:
    """What LightGBM itself says about ``params``: one boosting round on a tiny dataset, so
    ``learning_rate = "fast"`` fails here, with LightGBM's reason, before any feature is
    computed. Round and thread counts must be whole numbers (the fit takes them itself)."""
    problems = [f"{key}: must be a whole number of at least {low}, not {value!r}"
                for key, value in params.items()
                for low in [1 if key in _ROUNDS else 0] if key in (*_ROUNDS, *_THREADS)
                if isinstance(value, bool) or not isinstance(value, int) or value < low]
    trial = {k: v for k, v in params.items() if k not in (*_ROUNDS, *_THREADS)}
    if problems or not (why := _lightgbm_refuses(trial)):
        return problems
    alone = [f"{key} = {value!r}: {reason}" for key, value in trial.items() if (reason := _lightgbm_refuses({key: value}))]
    return alone or [f"LightGBM refuses them together: {why}"]


def _lightgbm_refuses(params: dict[str, Any]) -> str | None:
    """LightGBM's reason for refusing ``params`` in one round on 16 rows, or None."""
    if not params:
        return None
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the train pipeline imports it
    import re

    import lightgbm as lgb
    import numpy as np

    X = np.array([[float(i % 4), float(i % 3)] for i in range(16)])
    y = np.array([i % 2 for i in range(16)], dtype=float)
    try:
        with _native_stderr_silenced():  # LightGBM prints its own "[Fatal]" line: the problem line says it once
            lgb.train({"objective": "binary", **params, "verbose": -1, "num_threads": 1},
                      lgb.Dataset(X, label=y, params={"verbose": -1}), num_boost_round=1)
    except (lgb.basic.LightGBMError, TypeError, ValueError) as exc:
        reason = re.sub(r"\s+at \S+\.(?:cpp|h|hpp), line \d+\s*\.?", "", " ".join(str(exc).split()))
        return reason or type(exc).__name__
    return None


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """File descriptor 2 points at the null device for the block (native code writes there directly)."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
