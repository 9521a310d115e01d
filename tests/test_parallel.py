"""Many model files, folds in parallel (local processes or a real Dask cluster), failures as rows."""

import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr

from climate_ml.backtest import RollingOrigin, backtest, fit_predict
from climate_ml.errors import ModelError
from climate_ml.ingest import standardise
from climate_ml.problems.el_nino import ElNino
from climate_ml.synthetic import toy_ocean
from climate_ml.workflows import MODELS_DIR

PROBLEM = ElNino(leads=(1, 6))

HANG = """
import time
from climate_ml.model_api import to_table
class M:
    def fit(self, X, y):
        time.sleep(600)
        return self
    def predict(self, X):
        return None
def make_model():
    return M()
"""
RAISE = """
class M:
    def fit(self, X, y):
        raise RuntimeError("boom in fit")
    def predict(self, X):
        return None
def make_model():
    return M()
"""
NOT_A_MODEL = """
class M:
    def fit(self, X, y):
        return self
def make_model():
    return M()
"""
SLEEPY = """
import os, time
from pathlib import Path
class M:
    def fit(self, X, y):
        Path(os.environ["CLIMATE_ML_TEST_PIDS"], str(os.getpid())).touch()
        time.sleep(300)
        return self
    def predict(self, X):
        return None
def make_model():
    return M()
"""
WRONG_DIMS = """
import xarray as xr, numpy as np
class M:
    def fit(self, X, y):
        return self
    def predict(self, X):
        return xr.DataArray(np.zeros(X.sizes["init_time"]), dims=("init_time",), coords={"init_time": X.init_time.values})
def make_model():
    return M()
"""


@pytest.fixture(scope="module")
def prepared():
    return PROBLEM.prepare(standardise(toy_ocean(start="1950-01", end="1995-12"), "sst"))


def models():
    return {n: MODELS_DIR / f"{n}.py" for n in ("persistence", "damped_persistence", "lightgbm_lagged")}


class NewestFoldFirst:
    """A user's executor, through the public contract: units in reverse order, one at a time."""

    def __init__(self):
        self.seen = []

    def run(self, problem, prepared, units, out, progress):
        for name, spec, t0, inits in reversed(units):
            self.seen.append((name, t0))
            tic = time.perf_counter()
            fold = problem.fold_data(prepared, fit_end=t0)
            try:
                out.add(name, t0, fit_predict(spec, fold, inits, problem.leads, name), time.perf_counter() - tic)
            except ModelError as exc:
                out.add(name, t0, str(exc), time.perf_counter() - tic)


def test_numbers_do_not_depend_on_parallelism(prepared):
    args = (PROBLEM, models(), prepared, "1985-01", "1994-12", 36)
    serial = backtest(*args)
    in_procs = backtest(*args, n_jobs=2)
    for name in models():
        xr.testing.assert_identical(serial.forecasts[name], in_procs.forecasts[name])
    # the folds are the public cross-validation object's, and any executor may run the units
    plan = RollingOrigin("1985-01", "1994-12", 36).folds(PROBLEM, prepared)
    assert [f"{t0:%Y-%m}" for t0, _ in plan] == ["1985-01", "1988-01", "1991-01", "1994-01"]
    assert sum(len(inits) for _, inits in plan) == 120
    mine = NewestFoldFirst()
    other = backtest(*args, executor=mine)
    assert mine.seen[0] == ("lightgbm_lagged", plan[-1][0]) and len(mine.seen) == 3 * len(plan)
    for name in models():
        xr.testing.assert_identical(serial.forecasts[name], other.forecasts[name])
    xr.testing.assert_identical(serial.obs, in_procs.obs)


@pytest.mark.slow
def test_dask_cluster_gives_the_same_numbers(prepared):
    from dask.distributed import LocalCluster

    args = (PROBLEM, models(), prepared, "1988-01", "1993-12", 36)
    serial = backtest(*args)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        on_dask = backtest(*args, scheduler=cluster.scheduler_address)
    for name in models():
        xr.testing.assert_identical(serial.forecasts[name], on_dask.forecasts[name])


def test_broken_submissions_become_failed_rows(prepared, tmp_path):
    broken = {"hang": HANG, "raise": RAISE, "wrongdims": WRONG_DIMS, "nopredict": NOT_A_MODEL}
    for name, code in broken.items():
        (tmp_path / f"{name}.py").write_text(code)
    specs = {"persistence": MODELS_DIR / "persistence.py", **{n: tmp_path / f"{n}.py" for n in broken}}
    tic = time.perf_counter()
    res = backtest(PROBLEM, specs, prepared, "1990-01", "1991-12", 12, n_jobs=2, time_limit=20)
    assert time.perf_counter() - tic < 120  # the hanging model was killed, not waited for
    assert "exceeded the time limit of 20 s" in res.failures["hang"]
    assert "RuntimeError in fit/predict: boom in fit" in res.failures["raise"]
    assert "lacks dimension 'lead'" in res.failures["wrongdims"]
    assert res.failures["nopredict"] == "nopredict: make_model() returned M, which has no predict() method"
    assert set(res.forecasts) == {"persistence"}
    assert np.isfinite(res.forecasts["persistence"].values).all()


def test_the_fork_server_starts_early_only_for_local_worker_processes():
    """``start_workers_early`` starts the fork server (its imports then overlap the caller's data
    preparation) for a backtest in local processes, and not for one in this process or on a Dask
    scheduler; the workers of a later backtest come from that same server. In a fresh
    interpreter, so that no earlier test has started the server."""
    script = (
        "from multiprocessing import forkserver as f\n"
        "from climate_ml.backtest import start_workers_early, LocalProcesses, process_context\n"
        "start_workers_early(n_jobs=1); start_workers_early(n_jobs=2, scheduler='tcp://127.0.0.1:1')\n"
        "before = f._forkserver._forkserver_pid\n"
        "start_workers_early(n_jobs=2)\n"
        "early = f._forkserver._forkserver_pid\n"
        "p = process_context().Process(target=print); p.start(); p.join()\n"
        "print(before, early is not None, f._forkserver._forkserver_pid == early, p.exitcode)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split()[-4:] == ["None", "True", "True", "0"], out.stdout + out.stderr


def test_workers_end_when_their_backtest_is_killed(tmp_path):
    """A backtest in local worker processes that is interrupted (SIGINT, Ctrl-C) or ended by
    SIGTERM (an operator cancelling a run) or SIGKILL takes its workers with it within seconds;
    they come from the fork server, so nothing else would stop them computing on (here: a
    model that sleeps for 300 s), and after Ctrl-C the backtest used to wait for them."""
    import os
    import signal

    (tmp_path / "sleepy.py").write_text(SLEEPY)
    pids = tmp_path / "pids"
    pids.mkdir()
    script = (  # Ctrl-C as in a terminal: a process started in the background inherits SIGINT ignored
        "import signal\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "from climate_ml.backtest import backtest\n"
        "from climate_ml.ingest import standardise\n"
        "from climate_ml.problems.el_nino import ElNino\n"
        "from climate_ml.synthetic import toy_ocean\n"
        "if __name__ == '__main__':\n"
        "    p = ElNino(leads=(1, 6))\n"
        "    prepared = p.prepare(standardise(toy_ocean(start='1950-01', end='1995-12'), 'sst'))\n"
        f"    backtest(p, {{'sleepy': {str(tmp_path / 'sleepy.py')!r}}}, prepared, '1990-01', '1991-12', 12, n_jobs=2)\n"
    )
    (tmp_path / "run.py").write_text(script)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        for f in pids.iterdir():
            f.unlink()
        log = open(tmp_path / f"{sig.name}.log", "w+")
        parent = subprocess.Popen([sys.executable, str(tmp_path / "run.py")], stdout=log, stderr=subprocess.STDOUT,
                                  env={**os.environ, "CLIMATE_ML_TEST_PIDS": str(pids)})
        try:
            deadline = time.monotonic() + 180
            while len(list(pids.iterdir())) < 2 and time.monotonic() < deadline and parent.poll() is None:
                time.sleep(0.2)
            workers = [int(f.name) for f in pids.iterdir()]
            assert len(workers) == 2, f"the two workers did not start their units (exit {parent.poll()})"
        finally:
            parent.send_signal(sig)
            try:
                parent.wait(timeout=120)
            except subprocess.TimeoutExpired:  # it waited for its workers: fail, leaving nothing running
                parent.kill()
                parent.wait()
                log.seek(0)
                raise AssertionError(f"the backtest did not end within 120 s of {sig.name}: {log.read()[-2000:]}") from None
            finally:
                log.close()

        def alive(pid: int) -> bool:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return False
            return open(f"/proc/{pid}/stat").read().split()[2] != "Z"  # a zombie has ended

        deadline = time.monotonic() + 20
        while any(alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [w for w in workers if alive(w)]
        for w in left:  # a failing run leaves no sleeper behind
            os.kill(w, signal.SIGKILL)
        assert not left, f"workers {left} outlived their backtest ({sig.name})"
