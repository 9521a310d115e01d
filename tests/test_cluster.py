"""The same code on a Dask cluster that a user starts by hand: `dask scheduler` and two
`dask worker` processes on loopback. Ingest (CLIMATE_ML_DASK_SCHEDULER) and a backtest
(--scheduler) give the numbers of the local run, and their tasks ran on the cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import xarray as xr

from climate_ml.synthetic import write_toy_ocean
from conftest import free_port

pytestmark = pytest.mark.slow
DASK = Path(sys.executable).parent / "dask"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from dask.distributed import Client

    address = f"tcp://127.0.0.1:{free_port()}"
    logs = tmp_path_factory.mktemp("dask")
    procs = [subprocess.Popen([str(DASK), "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                               "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=open(logs / "scheduler.log", "w"))]
    procs.append(subprocess.Popen([str(DASK), "worker", address, "--nworkers", "2", "--nthreads", "1", "--no-dashboard",
                                   "--local-directory", str(logs)], stdout=subprocess.DEVNULL,
                                  stderr=open(logs / "workers.log", "w")))
    try:
        deadline = time.time() + 60
        while True:
            try:
                with Client(address, timeout=5) as client:
                    client.wait_for_workers(2, timeout=max(1, deadline - time.time()))
                break
            except (OSError, TimeoutError):
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(timeout=30)


def cli(*args, store, env=None):
    p = subprocess.run([sys.executable, "-m", "climate_ml.cli", *map(str, args)], capture_output=True, text=True,
                       env={**os.environ, "CLIMATE_ML_STORE": str(store), **(env or {})}, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout


def _task_prefixes(address) -> set[str]:
    from dask.distributed import Client

    with Client(address) as client:
        return set(client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.task_prefixes)))


def test_ingest_and_backtest_on_a_cluster_equal_the_local_run(cluster, tmp_path):
    raw = write_toy_ocean(tmp_path / "toy.nc", start="1960-01", end="1995-12")
    local, remote = tmp_path / "local", tmp_path / "remote"
    cli("ingest", "--file", raw, "--variable", "sst", "--name", "toy", store=local)
    before = _task_prefixes(cluster)
    cli("ingest", "--file", raw, "--variable", "sst", "--name", "toy", store=remote,
        env={"CLIMATE_ML_DASK_SCHEDULER": cluster})
    ingest_tasks = _task_prefixes(cluster) - before
    assert ingest_tasks, "the ingest ran no task on the cluster"
    a = xr.open_zarr(local / "obs" / "toy.zarr", consolidated=False).load()
    b = xr.open_zarr(remote / "obs" / "toy.zarr", consolidated=False).load()
    xr.testing.assert_identical(a.drop_attrs(), b.drop_attrs())

    args = ("backtest", "el_nino", "models/damped_persistence.py", "models/lightgbm_lagged.py", "--dataset", "toy",
            "--test-start", "1991-01", "--test-end", "1993-12", "--refit-every", "36", "--no-blend", "--no-guard", "--json")
    on_local = json.loads(cli(*args, store=local))
    on_cluster = json.loads(cli(*args, "--scheduler", cluster, store=remote))
    prefixes = _task_prefixes(cluster)
    assert "unit" in prefixes, sorted(prefixes)  # the (model, fold) units ran on the workers
    assert set(on_local["models"]) == {"damped_persistence", "lightgbm_lagged"}
    assert on_local["models"] == on_cluster["models"] and on_local["references"] == on_cluster["references"]


def test_the_flows_local_cluster_leaves_the_environment_as_it_was():
    """Starting a LocalCluster writes its workers' settings (MALLOC_TRIM_THRESHOLD_,
    OMP_NUM_THREADS, PYTHONHASHSEED...) into this process's environment, where the backtests'
    worker processes started later would inherit them (they halved the ConvLSTMs' speed there).
    ``cluster.local_cluster`` computes on real worker processes and puts the environment back."""
    import dask.array as da

    from climate_ml.cluster import local_cluster

    before = dict(os.environ)
    with local_cluster(2) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        assert float(da.ones((1000, 1000), chunks=100).sum().compute()) == 1e6  # on the cluster
        assert os.environ.get("MALLOC_TRIM_THRESHOLD_") is not None  # what the cluster wrote, while it runs
    assert dict(os.environ) == before


def test_field_backtest_on_a_cluster_equals_the_local_run(cluster, tmp_path):
    """Field models' units run on the cluster's workers, each scoring its maps there (several
    units per worker process share one copy of the observed maps); the scores equal the local run's."""
    from test_field_models import ROOT, _write_model, advecting_ice

    from climate_ml.sea_ice_fields import field_backtest

    ice = advecting_ice(n_years=8, size=8)
    models = {"damped_anomaly_persistence": ROOT / "models" / "fields" / "damped_anomaly_persistence.py",
              "persist": _write_model(tmp_path, "persist")}
    args = (ice["conc"], ice["cell_area"], [1, 2], "1994-01", "1996-06", 12)
    before = _task_prefixes(cluster)
    on_cluster = field_backtest(*args, models=models, scheduler=cluster)
    assert "field_unit" in _task_prefixes(cluster) - before
    xr.testing.assert_identical(on_cluster, field_backtest(*args, models=models))


def test_a_scheduler_that_does_not_answer_is_a_one_line_error(tmp_path):
    """An address nobody listens on was `OSError: Timed out trying to connect ... after 30 s`
    (exit 1); a malformed one a ValueError. Both name the address now, after at most 10 s,
    given as --scheduler or in the environment, and nothing is stored."""
    from conftest import tree_digest

    store = tmp_path / "store"
    raw = write_toy_ocean(tmp_path / "toy.nc", start="1980-01", end="1995-12")
    cli("ingest", "--file", raw, "--variable", "sst", "--name", "toy", store=store)
    before = tree_digest(store / "obs")
    ingest = ["ingest", "--file", raw, "--variable", "sst", "--name", "toy2"]
    silent = f"tcp://127.0.0.1:{free_port()}"
    for args, env in (([*ingest, "--scheduler", silent], {}), (ingest, {"CLIMATE_ML_DASK_SCHEDULER": "nope"}),
                      (["backtest", "el_nino", "models/persistence.py", "--dataset", "toy", "--test-start", "1994-01",
                        "--scheduler", silent], {})):
        tic = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "climate_ml.cli", *map(str, args)], capture_output=True, text=True,
                           env={**os.environ, "CLIMATE_ML_STORE": str(store), **env}, timeout=300)
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 2 and len(lines) == 1, p.stderr
        assert lines[0].startswith("error: cannot reach the Dask scheduler at "), lines
        assert time.perf_counter() - tic < 60
    assert tree_digest(store / "obs") == before
