"""Where heavy work runs: this process (``[compute] engine = "local"``) or a Dask cluster.

``scheduler = "local"`` starts a :class:`distributed.LocalCluster` on this machine
(``workers`` processes x ``threads_per_worker`` threads); any other value is the address
of an existing scheduler (``tcp://host:8786``). Dask is an optional extra
(``pip install 'selfiescope[dask]'``) and is imported only here and only when asked for.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .settings import ComputeSettings, Settings, SettingsError

if TYPE_CHECKING:  # pragma: no cover
    from distributed import Client

log = logging.getLogger("selfiescope.compute")

INSTALL_HINT = "install the Dask extra: pip install 'selfiescope[dask]'"


class ComputeError(SettingsError):
    """The cluster cannot be used (Dask missing, scheduler unreachable); phrased for the user.

    A :class:`SettingsError` (about ``[compute]``), so every command reports it the same way.
    """

    def __init__(self, problem: str) -> None:
        super().__init__([problem], "[compute]")


def with_scheduler(settings: Settings, scheduler: str | None) -> Settings:
    """``--scheduler ADDRESS|local`` from the command line: run on Dask at that scheduler."""
    if not scheduler:
        return settings
    compute = settings.compute.model_copy(update={"engine": "dask", "scheduler": scheduler})
    return settings.model_copy(update={"compute": compute})


def uses_dask(settings: Settings) -> bool:
    return settings.compute.engine == "dask"


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise ComputeError(f"compute.engine: 'dask' needs Dask ({exc.name} is missing); {INSTALL_HINT}") from None
    return distributed


def start_local_cluster(compute: ComputeSettings) -> Any:
    distributed = _import_distributed()
    return distributed.LocalCluster(
        n_workers=compute.workers,
        threads_per_worker=compute.threads_per_worker,
        processes=True,
        dashboard_address=compute.dashboard or ":0",  # ":0": no fixed port to collide with
        silence_logs=logging.ERROR,
    )


@contextmanager
def dask_client(compute: ComputeSettings) -> Iterator["Client"]:
    """A connected :class:`distributed.Client`; a LocalCluster it started is closed on exit."""
    distributed = _import_distributed()
    cluster = None
    try:
        if compute.scheduler == "local":
            cluster = start_local_cluster(compute)
            client = distributed.Client(cluster)
        else:
            client = distributed.Client(compute.scheduler, timeout=compute.connect_timeout_s)
    except OSError as exc:  # includes TimeoutError: no scheduler at that address
        if cluster is not None:
            cluster.close()
        raise ComputeError(f"compute.scheduler: cannot reach the Dask scheduler at {compute.scheduler}: {exc}") from None
    log.info("dask: %s (dashboard %s)", client.scheduler.address, client.dashboard_link if compute.dashboard else "off")
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def worker_count(client: "Client") -> int:
    """Threads across the cluster: how many tasks run at once."""
    return max(1, sum(client.nthreads().values()))


def load_target(target: str | Any) -> Any:
    """``"package.module:attr"`` -> that object (anything else is returned as is).

    Engines name their executors by import path: the executor module imports the generic
    one, never the other way round (no import cycle), and an engine whose extra is not
    installed costs nothing until a run asks for it.
    """
    if not isinstance(target, str):
        return target
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
