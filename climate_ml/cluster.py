"""Where Dask work runs: a ``dask.distributed`` scheduler named by ``--scheduler`` or
``$CLIMATE_ML_DASK_SCHEDULER`` (workers started by ``dask scheduler`` / ``dask worker``,
dask-jobqueue or dask-gateway), else the caller's default (threads, or a LocalCluster in the
flows). The same code runs either way; only the address changes."""

from __future__ import annotations

import contextlib
import os

SCHEDULER_ENV = "CLIMATE_ML_DASK_SCHEDULER"


def scheduler_address(explicit: str | None = None) -> str | None:
    """``explicit``, else ``$CLIMATE_ML_DASK_SCHEDULER``, else None."""
    return explicit or os.environ.get(SCHEDULER_ENV) or None


@contextlib.contextmanager
def dask_client(scheduler: str | None):
    """A client of the scheduler at ``scheduler`` (the default for Dask computations inside),
    or nothing when it is None."""
    if not scheduler:
        yield None
        return
    from dask.distributed import Client

    with Client(scheduler) as client:
        yield client
