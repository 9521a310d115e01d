import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from climate_ml.backtest import (
    backtest,
    guard_backtest,
    issue_forecast,
    issue_forecasts,
    lookahead_violations,
)
from climate_ml.ingest import standardise
from climate_ml.model_api import load_model_factory
from climate_ml.problems import get_problem
from climate_ml.problems.el_nino import ElNino
from climate_ml.schema import INIT, LEAD
from climate_ml.scores import METRICS, skill_score
from climate_ml.synthetic import toy_ocean
from climate_ml.workflows import MODELS_DIR, registered_models

PROBLEM = ElNino(leads=(1, 3, 6, 12))


@pytest.fixture(scope="module")
def prepared():
    raw = toy_ocean(start="1950-01", end="1999-12")
    return PROBLEM.prepare(standardise(raw, "sst"))


def test_every_registered_model_passes_lookahead_guard(prepared):
    """RAMP's check for every model file in models/: perturb all data after an init, the
    forecast for that init must not change (fit both at that init and a year earlier)."""
    for name, path in {**registered_models(), "template": MODELS_DIR / "template.py"}.items():
        factory = load_model_factory(path)
        for fit_end, inits in (("1990-01", ["1990-01", "1990-07"]), ("1993-05", ["1993-05"])):
            bad = lookahead_violations(PROBLEM, factory, prepared, inits, fit_end)
            assert bad == [], f"{name}: {bad}"


def test_guard_catches_a_leaky_feature(prepared, monkeypatch):
    """A centred rolling mean reads the next month: the guard must notice."""
    monkeypatch.setattr("climate_ml.problems.el_nino.trailing_mean",
                        lambda da, w: da.rolling(time=w, center=True, min_periods=1).mean())
    factory = load_model_factory(registered_models()["persistence"])
    bad = lookahead_violations(PROBLEM, factory, prepared, ["1990-07"], "1990-01")
    assert bad and "1990-07" in bad[0]


def test_training_targets_end_before_fit(prepared):
    fold = PROBLEM.fold_data(prepared, "1985-06")
    X, y = fold.training_set()
    ends = fold.target_end.sel({INIT: y[INIT]}).values[np.isfinite(y.values)]
    assert pd.Timestamp(ends.max()) == pd.Timestamp("1985-06-01")
    # lead 12 targets need 13 months after the init to be observed
    assert pd.Timestamp(y.sel(lead=12).dropna(INIT)[INIT].values[-1]) == pd.Timestamp("1984-05-01")


def test_backtest_models_share_folds_and_beat_persistence(prepared):
    paths = registered_models()
    facs = {n: load_model_factory(paths[n]) for n in ("persistence", "climatology", "damped_persistence", "lightgbm_lagged")}
    res = backtest(PROBLEM, facs, prepared, "1985-01", "1998-12", refit_every=48)
    assert res.failures == {}
    for fc in res.forecasts.values():
        assert fc.sizes[INIT] == 14 * 12 and list(fc[LEAD].values) == [1, 3, 6, 12]
    acc = {n: res.scores(n)["acc"] for n in facs}
    assert acc["persistence"]["1"] > 0.8
    assert abs(acc["climatology"]["6"]) < 0.3
    # the toy ocean carries real predictability: a good model beats persistence at lead 6
    assert acc["lightgbm_lagged"]["6"] > acc["persistence"]["6"] + 0.1
    assert res.skill("lightgbm_lagged", "persistence", "rmse")["6"] > 0.1


class _Broken:
    def fit(self, X, y):
        return self

    def predict(self, X):
        return xr.DataArray(np.full((X.sizes[INIT], 4), np.nan), dims=(INIT, LEAD),
                            coords={INIT: X[INIT].values, LEAD: [1, 3, 6, 12]})


def test_broken_model_is_a_failed_row_others_still_run(prepared):
    facs = {"persistence": load_model_factory(registered_models()["persistence"]), "broken": _Broken}
    res = backtest(PROBLEM, facs, prepared, "1990-01", "1991-12", refit_every=12)
    assert "NaN" in res.failures["broken"]
    assert "persistence" in res.forecasts


def test_issue_forecast_uses_only_data_up_to_init(prepared):
    factory = load_model_factory(registered_models()["damped_persistence"])
    fc = issue_forecast(PROBLEM, factory, prepared, "1995-03")
    fc2 = issue_forecast(PROBLEM, factory, prepared.sel(time=slice(None, "1995-03")), "1995-03")
    xr.testing.assert_allclose(fc, fc2)
    assert pd.Timestamp(fc.valid_time.sel(lead=6).values[0]) == pd.Timestamp("1995-09-01")


def test_metrics_on_known_values():
    inits = pd.date_range("2000-01", periods=4, freq="MS")
    obs = xr.DataArray([[1.0], [2.0], [3.0], [4.0]], dims=(INIT, LEAD), coords={INIT: inits, LEAD: [1]})
    fc = obs + xr.DataArray([[1.0], [-1.0], [1.0], [-1.0]], dims=(INIT, LEAD), coords=obs.coords)
    assert float(METRICS["rmse"].compute(fc, obs).item()) == pytest.approx(1.0)
    assert float(METRICS["mae"].compute(fc, obs).item()) == pytest.approx(1.0)
    assert float(METRICS["acc"].compute(obs * 2 + 1, obs).item()) == pytest.approx(1.0)
    assert float(skill_score(METRICS["rmse"], obs, obs, fc).item()) == pytest.approx(1.0)


def test_problem_registry_rejects_unknown():
    from climate_ml.errors import QueryError
    with pytest.raises(QueryError, match="unknown problem 'snow'"):
        get_problem("snow")


class CountingFits:
    """Persistence, counting its fits (the guard's cost)."""
    fits = 0

    def fit(self, X, y):
        CountingFits.fits += 1
        self.leads_ = y[LEAD].values
        return self

    def predict(self, X):
        return X["persistence"].expand_dims(lead=self.leads_).transpose(INIT, LEAD)


def test_the_guard_fits_once_per_training_set_and_refits_a_leak(prepared, monkeypatch):
    """Probes whose training set is the real one share one fit (a model is fitted from its
    training set alone); a feature that reads ahead changes the training set, so the probe is
    fitted afresh and the violation is still found."""
    CountingFits.fits = 0
    inits = ["1990-01", "1990-07", "1991-01"]
    assert lookahead_violations(PROBLEM, CountingFits, prepared, inits, "1990-01") == []
    assert CountingFits.fits == 1  # before: two fits per probe init (six)
    monkeypatch.setattr("climate_ml.problems.el_nino.trailing_mean",
                        lambda da, w: da.rolling(time=w, center=True, min_periods=1).mean())
    leaky = PROBLEM.prepare(standardise(toy_ocean(start="1950-01", end="1999-12"), "sst"))
    CountingFits.fits = 0
    bad = lookahead_violations(PROBLEM, CountingFits, leaky, inits, "1990-01")
    # the centred mean reads one month ahead: only the probe at the cut-off reaches the training
    # set (its last inits read 1990-02); that probe is fitted afresh, the later ones cannot differ
    assert CountingFits.fits == 2
    assert bad and all(any(i in b for b in bad) for i in inits)


def test_a_guarded_backtest_probes_with_its_own_fit_of_the_last_fold(prepared):
    """The guard inside a backtest adds no fit: its probes reuse the fit of the last fold."""
    models = {"counting": CountingFits}
    CountingFits.fits = 0
    res = backtest(PROBLEM, models, prepared, "1996-01", "1998-12", 12, guard=models)
    assert CountingFits.fits == 3 and res.looked_ahead == {} and set(res.forecasts) == {"counting"}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fit_offset=st.integers(300, 560), init_offset=st.integers(0, 30))
def test_no_lookahead_property(prepared, fit_offset, init_offset):
    """For any fit month and any init at or after it, data after the init never changes the forecast."""
    times = pd.DatetimeIndex(prepared["time"].values)
    fit_end = times[fit_offset]
    init = times[min(fit_offset + init_offset, len(times) - 1)]
    for name in ("persistence", "damped_persistence", "climatology"):
        factory = load_model_factory(registered_models()[name])
        assert lookahead_violations(PROBLEM, factory, prepared, [init], fit_end, seed=fit_offset) == [], name


PEEKING = '''
import numpy as np
import xarray as xr
PROBLEMS = ("el_nino",)
class Peek:
    """Forecasts each init with the Nino 3.4 anomaly of the init three months later: it reads
    the rows of later inits inside predict, which no per-init feature check can see."""
    def fit(self, X, y):
        self.leads_ = y["lead"].values
        return self
    def predict(self, X):
        now = X["nino34"].sel(lag=0).values
        later = np.concatenate([now[3:], np.repeat(now[-1:], min(3, len(now)))])[: len(now)]
        out = np.repeat(later[:, None], len(self.leads_), axis=1)
        return xr.DataArray(out, dims=("init_time", "lead"), coords={"init_time": X["init_time"].values, "lead": self.leads_})
def make_model():
    return Peek()
'''


def test_the_engine_guard_fails_a_model_that_peeks_at_later_inits(tmp_path, capsys):
    """`climate-ml backtest` runs the lookahead guard on every submitted model: one that uses
    later inits' rows is a FAILED row saying it looks ahead, and is never recorded as a score."""
    import json

    from climate_ml.cli import main
    from climate_ml.leaderboard import list_records

    (tmp_path / "peek.py").write_text(PEEKING)
    store = tmp_path / "store"
    code = main(["backtest", "el_nino", str(tmp_path / "peek.py"), "models/persistence.py", "--test-start", "2018-01",
                 "--refit-every", "24", "--store", str(store), "--json", "--no-blend"])
    out = json.loads(capsys.readouterr().out)
    assert code == 3
    assert "looks ahead" in out["models"]["peek"]["error"] and "scores" not in out["models"]["peek"]
    assert "scores" in out["models"]["persistence"]  # an honest model passes the same guard
    rec = list_records(store, "el_nino")[-1]
    assert rec["models"]["peek"]["status"] == "failed" and "looks ahead" in rec["models"]["peek"]["error"]
    # knowingly skipped, the cheat scores (and scores well): the guard is what stops it
    code = main(["backtest", "el_nino", str(tmp_path / "peek.py"), "--test-start", "2018-01", "--refit-every", "24",
                 "--store", str(store), "--json", "--no-blend", "--no-guard", "--no-record"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["scores"]["acc"]["1"] > 0.5


BROKEN = """
PROBLEMS = ("el_nino",)
class Broken:
    def fit(self, X, y):
        raise ValueError("no fit today")
    def predict(self, X):
        return None
def make_model():
    return Broken()
"""


def test_guard_verdicts_do_not_depend_on_the_executor(prepared, tmp_path):
    """The guard's units run on the backtest's executors: in this process and in two spawned
    processes it reaches the same verdicts, word for word: the peeking model looks ahead, the
    honest one passes, the broken one fails under the guard. A backtest that guards its models
    reaches them too, with its own fits of the last fold, and forecasts exactly what an
    unguarded backtest forecasts."""
    (tmp_path / "peek.py").write_text(PEEKING)
    (tmp_path / "broken.py").write_text(BROKEN)
    models = {"peek": tmp_path / "peek.py", "damped_persistence": registered_models()["damped_persistence"],
              "broken": tmp_path / "broken.py"}
    here = guard_backtest(PROBLEM, models, prepared, "1996-01", "1998-12", 12)
    spawned = guard_backtest(PROBLEM, models, prepared, "1996-01", "1998-12", 12, n_jobs=2)
    assert here == spawned
    assert set(here) == {"peek", "broken"}
    assert "looks ahead" in here["peek"] and "1998-" in here["peek"]
    assert here["broken"].startswith("broken: failed under the lookahead guard") and "no fit today" in here["broken"]
    honest = {n: models[n] for n in ("peek", "damped_persistence")}
    plain = backtest(PROBLEM, honest, prepared, "1996-01", "1998-12", 12)
    for n_jobs in (1, 2):
        guarded = backtest(PROBLEM, honest, prepared, "1996-01", "1998-12", 12, guard=honest, n_jobs=n_jobs)
        assert guarded.looked_ahead == {"peek": here["peek"]} and guarded.failures == guarded.looked_ahead
        assert set(guarded.forecasts) == {"damped_persistence"}
        xr.testing.assert_identical(guarded.forecasts["damped_persistence"], plain.forecasts["damped_persistence"])
    assert plain.looked_ahead == {} and set(plain.forecasts) == set(honest)  # unguarded, the cheat scores


def test_issue_forecasts_on_the_executors_equal_one_at_a_time(prepared, tmp_path):
    """The flows issue every model's forecast as units on the backtest's executors: each equals
    ``issue_forecast`` of that model alone, in this process or in two others, and a broken model
    is a failure with its reason while the others still forecast."""
    (tmp_path / "broken.py").write_text(BROKEN)
    paths = registered_models()
    models = {"damped_persistence": paths["damped_persistence"], "lightgbm_lagged": paths["lightgbm_lagged"],
              "broken": tmp_path / "broken.py"}
    here, failed = issue_forecasts(PROBLEM, models, prepared, "1998-06")
    spawned, failed_spawned = issue_forecasts(PROBLEM, models, prepared, "1998-06", n_jobs=2)
    assert set(here) == set(spawned) == {"damped_persistence", "lightgbm_lagged"}
    assert set(failed) == {"broken"} and failed == failed_spawned and "no fit today" in failed["broken"]
    for name in here:
        alone = issue_forecast(PROBLEM, load_model_factory(models[name]), prepared, "1998-06", name)
        xr.testing.assert_identical(here[name], alone)
        xr.testing.assert_identical(spawned[name], alone)


THREADS = '''
import numpy as np
import xarray as xr
from threadpoolctl import threadpool_info

PROBLEMS = ("el_nino",)


class Threads:
    """Forecasts the number of threads its process's BLAS pool may use."""

    def fit(self, X, y):
        self.leads = y["lead"].values
        return self

    def predict(self, X):
        blas = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
        return xr.DataArray(np.full((X.sizes["init_time"], len(self.leads)), float(max(blas))),
                            dims=("init_time", "lead"), coords={"init_time": X["init_time"].values, "lead": self.leads})


def make_model():
    return Threads()
'''


def test_worker_processes_share_the_cpus_between_their_blas_pools(prepared, tmp_path, monkeypatch):
    """Worker processes split the CPUs between their BLAS pools (at least one thread each), so
    the workers' small matrix products do not wait on each other's threads; here as if the
    machine had 8 CPUs, whatever the test suite's own thread budget is."""
    (tmp_path / "threads.py").write_text(THREADS)
    monkeypatch.setattr("climate_ml.backtest.available_cpus", lambda: 8)
    for n_jobs, share in ((2, 4), (3, 2)):
        made, failed = issue_forecasts(PROBLEM, {"threads": tmp_path / "threads.py"}, prepared, "1998-06",
                                       n_jobs=n_jobs)
        assert failed == {} and float(made["threads"].max()) == share
