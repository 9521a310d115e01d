"""Where Dask work runs: a ``dask.distributed`` scheduler named by ``--scheduler`` or
``$CLIMATE_ML_DASK_SCHEDULER`` (workers started by ``dask scheduler`` / ``dask worker``,
dask-jobqueue or dask-gateway), else the caller's default (threads, or a LocalCluster in the
flows). The same code runs either way; only the address changes."""

from __future__ import annotations

import contextlib
import os

SCHEDULER_ENV = "CLIMATE_ML_DASK_SCHEDULER"


def available_cpus() -> int:
    """The CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def scheduler_address(explicit: str | None = None) -> str | None:
    """``explicit``, else ``$CLIMATE_ML_DASK_SCHEDULER``, else None."""
    return explicit or os.environ.get(SCHEDULER_ENV) or None


CONNECT_TIMEOUT = 10  # seconds to reach a scheduler: a cluster's scheduler answers at once when it is up


def connect(scheduler: str):
    """A ``dask.distributed`` client of the scheduler at ``scheduler``; a one-line
    ClimateMLError naming the address when none answers within ``CONNECT_TIMEOUT`` seconds."""
    from dask.distributed import Client

    from climate_ml.errors import ClimateMLError

    try:
        return Client(scheduler, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ClimateMLError(f"cannot reach the Dask scheduler at {scheduler!r} ({reason}); start one with "
                             "`dask scheduler` (and `dask worker ADDRESS`), or leave --scheduler and "
                             f"${SCHEDULER_ENV} out to compute here") from None


@contextlib.contextmanager
def dask_client(scheduler: str | None):
    """A client of the scheduler at ``scheduler`` (the default for Dask computations inside),
    or nothing when it is None."""
    if not scheduler:
        yield None
        return
    with connect(scheduler) as client:
        yield client


@contextlib.contextmanager
def local_cluster(n_workers: int = 2):
    """A ``dask.distributed`` LocalCluster of ``n_workers`` single-threaded worker processes and
    its client, for the flows' feature building. Starting one writes settings meant for its
    workers into this process's environment (``MALLOC_TRIM_THRESHOLD_``, ``OMP_NUM_THREADS``,
    ``PYTHONHASHSEED``...), where every process started later inherits them: the backtests'
    worker processes fitted the ConvLSTMs at half speed under that malloc setting (measured).
    The environment is put back as it was when the cluster closes."""
    import logging

    from dask.distributed import Client, LocalCluster

    saved = dict(os.environ)
    try:
        with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None,
                          silence_logs=logging.WARNING) as cluster, Client(cluster) as client:
            yield client
    finally:
        os.environ.clear()
        os.environ.update(saved)
