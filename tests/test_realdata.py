"""Real observational data from ../shared/data (skipped when absent)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from climate_ml.archive import import_forecasts, imported_forecasts
from climate_ml.catalog import load_catalog
from climate_ml.ingest import ingest_entry
from climate_ml.leaderboard import assemble, record_backtest, score_board
from climate_ml.problems import get_problem
from climate_ml.store import open_obs
from climate_ml.workflows import reference_paths, run_backtest

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def real_store(real_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    cat = load_catalog()
    for name in ("kaplan-local", "ersst-anom-detrended-local", "ersst-v5-local", "oisst-nino34-local"):
        ingest_entry(cat[name], root)
    return root


def test_every_real_sst_file_ingests_canonically(real_store):
    expect = {
        "kaplan-local": ("1856-01", "2014-10", (12, 22)),
        "ersst-anom-detrended-local": ("1980-01", "2018-12", (24, 72)),  # 360_day calendar
        "ersst-v5-local": ("2010-01", "2020-08", (89, 180)),  # latitude descending in source
        "oisst-nino34-local": ("1981-11", "2020-12", ()),  # 'Celsius_scale' units
    }
    for name, (start, end, shape) in expect.items():
        ds = open_obs(real_store, name)
        var = ds[next(iter(ds.data_vars))]
        t = pd.DatetimeIndex(ds.time.values)
        assert (f"{t[0]:%Y-%m}", f"{t[-1]:%Y-%m}") == (start, end), name
        assert var.shape[1:] == shape, name
        assert var.attrs["units"] == "degC"
        if "lat" in ds.dims:
            assert (np.diff(ds.lat.values) > 0).all() and 0 <= ds.lon.min() and ds.lon.max() < 360
    assert 24 < float(open_obs(real_store, "oisst-nino34-local").sst.mean()) < 30
    assert 10 < float(open_obs(real_store, "ersst-v5-local").sst.mean()) < 20


@pytest.fixture(scope="module")
def kaplan_backtest(real_store):
    """Train from 1856, test inits 1984-01..2014-10 (coarser refit than the README table: every
    5 years), LightGBM and the references on the same folds."""
    problem = get_problem("el_nino")
    prepared = problem.prepare(open_obs(real_store, "kaplan-local"))
    res = run_backtest(problem, ["models/lightgbm_lagged.py"], prepared, "1984-01", "2014-10", refit_every=60)
    assert res.failures == {}
    return problem, res


def test_kaplan_backtest_lightgbm_beats_damped_persistence(kaplan_backtest):
    """References must match the numbers measured for this setup in the issue, and LightGBM
    must beat damped persistence at every lead from 3 up."""
    _, res = kaplan_backtest
    acc = {n: res.scores(n)["acc"] for n in res.forecasts}
    assert acc["persistence"]["6"] == pytest.approx(0.32, abs=0.03)
    assert acc["persistence"]["12"] == pytest.approx(-0.08, abs=0.03)
    assert acc["damped_persistence"]["6"] == pytest.approx(0.48, abs=0.04)
    for lead in range(3, 19):
        assert acc["lightgbm_lagged"][str(lead)] > acc["damped_persistence"][str(lead)], lead


def test_ham2019_cnn_import_on_the_leaderboard(kaplan_backtest, real_data, tmp_path):
    """The published CNN forecasts, imported, are scored on exactly the backtest's inits."""
    problem, res = kaplan_backtest
    files = {**reference_paths(), "lightgbm_lagged": Path("models/lightgbm_lagged.py")}
    record_backtest(tmp_path, problem, res, "kaplan-local", "x", "1984-01", "2014-10", 60, files)
    _, action, dropped = import_forecasts(tmp_path, problem, real_data / "forecasts" / "ham2019_cnn_nino34_by_init_lead.csv",
                                          "cnn", note="Ham, Kim & Luo 2019")
    assert action == "created" and dropped == [19, 20, 21, 22, 23]
    table = score_board(assemble(tmp_path, "el_nino", imported=imported_forecasts(tmp_path, "el_nino")), "acc", n_boot=300)
    rows = {r["model"]: r["leads"] for r in table["rows"]}
    assert set(rows) == {"cnn", "lightgbm_lagged", "persistence", "climatology", "damped_persistence", "xro"}
    assert table["n_pairs"]["6"] == 363  # inits 1984-01..2014-10 whose lead-6 target is observed
    assert rows["cnn"]["6"]["score"] == pytest.approx(0.81, abs=0.02)
    assert rows["cnn"]["12"]["score"] == pytest.approx(0.66, abs=0.02)
    assert rows["cnn"]["6"]["significantly_better_than_reference"]
    assert rows["cnn"]["12"]["leader"]


def test_oisst_index_backtest_runs_on_a_1d_index(real_store):
    problem = get_problem("el_nino")
    prepared = problem.prepare(open_obs(real_store, "oisst-nino34-local"))
    res = run_backtest(problem, [], prepared, "2005-01", "2019-12", refit_every=60)
    acc = res.scores("damped_persistence")["acc"]
    assert acc["1"] > 0.8
    # XRO needs a recharge state: a lone SST index has none, which is a clear FAILED row
    assert list(res.failures) == ["xro"] and "heat-content predictor" in res.failures["xro"]


def test_xro_on_the_oras5_indices_is_fitted_right(real_store):
    """Work O (the XRO indices file alone, test inits from 1995): XRO reaches ACC > 0.7 at lead
    6 (0.79 with yearly refits in the README; refits every 5 years here), far above damped
    persistence, and the file's quirks are handled (anomalies labelled 'C', a 'month'
    coordinate, non-CF standard names)."""
    ingest_entry(load_catalog()["xro-oras5-indices-local"], real_store)
    ds = open_obs(real_store, "xro-oras5-indices-local")
    assert len(ds.data_vars) == 10 and "month" not in ds.coords
    assert ds["WWV"].attrs["units"] == "m" and ds["Nino34"].attrs["source_standard_name"] == "Sea Surface temperature"
    problem = get_problem("el_nino")
    prepared = problem.prepare(ds)
    assert {"nino34", "pred_WWV", "pred_IOD"} <= set(prepared.data_vars)
    res = run_backtest(problem, [], prepared, "1995-01", "2024-12", refit_every=60)
    assert res.failures == {}
    acc = {n: res.scores(n)["acc"] for n in res.forecasts}
    assert acc["xro"]["6"] > 0.7 and acc["xro"]["6"] > acc["damped_persistence"]["6"] + 0.15


def test_pmel_cpc_file_gives_the_live_init(real_store):
    """The PMEL/CPC table through 2026-05: every chosen series starts in a different year, and
    the last init at which every input is known is 2026-05."""
    ingest_entry(load_catalog()["pmel-cpc-enso-local"], real_store)
    ds = open_obs(real_store, "pmel-cpc-enso-local")
    assert ds["wwv_c"].attrs["units"] == "m3" and 1e14 < float(ds["wwv_c"].mean()) < 1e16
    problem = get_problem("el_nino")
    prepared = problem.prepare(ds)
    assert problem.last_init(prepared) == pd.Timestamp("2026-05-01")
    X, _ = problem.fold_data(prepared, "2000-01").training_set()
    assert pd.Timestamp(X["init_time"].values[0]) >= pd.Timestamp("1982-01-01")  # OISST starts in 1982


def test_california_rainfall_on_nclimdiv_with_kaplan_predictors(real_store):
    """Wet seasons 1985/86-2014/15 from Aug-Nov inits, trained on all earlier years (refit every
    2 years here, yearly in the README). The data reproduce the issue's weak ENSO link, and the
    ENSO LightGBM is not worse than climatology by more than the sampling noise of 30 seasons."""
    from climate_ml.problems.california_rainfall import (
        enso_rain_correlation,
        season_skill_interval,
        season_table,
        tercile_skill_from,
    )

    ingest_entry(load_catalog()["nclimdiv-precip-california-local"], real_store)
    problem = get_problem("california_rainfall")
    prepared = problem.prepare(open_obs(real_store, "nclimdiv-precip-california-local"),
                               {"kaplan-local": open_obs(real_store, "kaplan-local")})
    assert problem.last_init(prepared) == pd.Timestamp("2014-10-01")  # the SST record ends there
    assert enso_rain_correlation(prepared) == pytest.approx(0.21, abs=0.03)
    # the README's bound (benchmarks/rain_predictability.py): even the observed Nov-Mar Nino 3.4,
    # a perfect ENSO forecast, stays below the rainfall aims over the test seasons
    seasons = season_table(prepared)
    oracle = seasons[["nino34_nov_mar", "total"]].loc[1985:2014].dropna()
    assert len(oracle) == 29 and oracle.corr().iloc[0, 1] == pytest.approx(0.18, abs=0.02)
    for spread in ("gaussian", "residuals"):
        bound = tercile_skill_from(seasons, ["nino34_nov_mar"], 1985, spread=spread)
        assert bound["seasons"] == 29 and bound["bss_upper_tercile"] < 0.10 and bound["correlation"] < 0.3, bound
    res = run_backtest(problem, ["models/lightgbm_enso_rain.py"], prepared, "1985-01", "2014-10", refit_every=24)
    assert res.failures == {}
    season = res.extra("lightgbm_enso_rain")["season"]
    assert season["n"]["Aug"] == 30 and season["n"]["Oct"] == 30
    interval = season_skill_interval(problem, res, "lightgbm_enso_rain", n_boot=1000)
    for key in ("bss_upper_tercile", "rpss", "rmse_skill_vs_climatology"):
        point, lo, hi = interval[key]
        assert lo <= point <= hi and hi > 0, (key, interval[key])
    assert res.extra("lightgbm_enso_rain")["season"]["correlation"]["Aug"] > 0


def test_monthly_flow_on_todays_pmel_data(real_data, tmp_path):
    """The operational monthly flow on the PMEL/CPC data through 2026-05: ingest, forecast from
    the latest month with El Nino probabilities, archive, verify (a real Prefect flow run)."""
    from flows.monthly import monthly_forecast

    out = monthly_forecast(problem="el_nino", dataset="pmel-cpc-enso-local", store=str(tmp_path / "store"),
                           models=["xro", "damped_persistence"])
    issued = {f["model"]: f for f in out["forecasts"]}
    assert set(issued) == {"xro", "damped_persistence"}
    assert all(f["init"] == "2026-05" and f["archive"] == "created" for f in issued.values())
    probs = issued["xro"]["categories"]["6"]
    assert abs(sum(probs.values()) - 1) < 2e-3 and issued["xro"]["valid_season"]["6"] == "OND 2026"
