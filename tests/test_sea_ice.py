"""The arctic_sea_ice problem: trend baseline fitted on the training window, references,
lookahead guard for every sea-ice model, and real-data skill."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from climate_ml.backtest import lookahead_violations
from climate_ml.features import fit_monthly_trend, monthly_trend_at
from climate_ml.model_api import load_model_factory
from climate_ml.problems import get_problem
from climate_ml.synthetic import toy_sea_ice
from climate_ml.workflows import registered_models, run_backtest


def synthetic_extent(start="1979-01", end="2020-12", seed=0) -> xr.Dataset:
    """Seasonal cycle, a declining trend, and persistent (AR1, 4-month) anomalies."""
    rng = np.random.default_rng(seed)
    t = pd.date_range(start, end, freq="MS")
    anom = np.zeros(len(t))
    for i in range(1, len(t)):
        anom[i] = 0.78 * anom[i - 1] + rng.normal(0, 0.2)
    ext = 12 + 3.5 * np.cos(2 * np.pi * (t.month.values - 3) / 12) - 0.05 * (t.year.values - 1979) + anom
    return xr.Dataset({"extent": ("time", ext, {"units": "1e6 km2"})}, coords={"time": t})


@pytest.fixture(scope="module")
def prepared():
    return get_problem("arctic_sea_ice").prepare(synthetic_extent())


def test_monthly_trend_recovers_planted_trend(prepared):
    coef = fit_monthly_trend(prepared["extent"], "2010-12")
    assert coef[:, 1] == pytest.approx(np.full(12, -0.05), abs=0.02)
    later = prepared["extent"].copy()
    later.loc[{"time": slice("2011-01", None)}] += 5.0
    np.testing.assert_array_equal(coef, fit_monthly_trend(later, "2010-12"))  # training window only
    assert monthly_trend_at(np.array(["2000-03-01"], dtype="datetime64[ns]"), coef)[0] == pytest.approx(coef[2, 0])


def test_sea_ice_models_pass_the_lookahead_guard(prepared):
    problem = get_problem("arctic_sea_ice")
    models = registered_models("arctic_sea_ice")
    assert {"linear_trend", "trend_persistence", "damped_anomaly_persistence", "lightgbm_lagged", "climatology"} <= set(models)
    assert "damped_persistence" not in models  # declared for el_nino only
    for name, path in models.items():
        bad = lookahead_violations(problem, load_model_factory(path), prepared, ["2005-01", "2005-07"], "2005-01")
        assert bad == [], f"{name}: {bad}"


def test_references_on_synthetic_extent(prepared):
    problem = get_problem("arctic_sea_ice")
    res = run_backtest(problem, ["models/damped_anomaly_persistence.py"], prepared, "2005-01", "2020-06", 24)
    rmse = {n: res.scores(n)["rmse"] for n in res.forecasts}
    acc = {n: res.scores(n)["acc"] for n in res.forecasts}
    assert rmse["trend_persistence"]["1"] < rmse["linear_trend"]["1"] < rmse["climatology"]["1"]
    assert acc["linear_trend"]["1"] is None  # the trend has no anomaly: ACC is undefined, not faked
    assert acc["trend_persistence"]["1"] > 0.6  # AR1 anomalies persist (0.78 per month)
    for lead in range(1, 7):  # damping beats both references when anomalies are AR1
        best_ref = min(rmse["trend_persistence"][str(lead)], rmse["linear_trend"][str(lead)])
        assert rmse["damped_anomaly_persistence"][str(lead)] < best_ref, lead


def test_extent_problem_rejects_other_data():
    from climate_ml.errors import ClimateMLError
    from climate_ml.schema import mock_sst

    with pytest.raises(ClimateMLError, match="needs a sea-ice 'extent' series"):
        get_problem("arctic_sea_ice").prepare(mock_sst())


@pytest.mark.realdata
def test_real_sea_ice_skill(real_data, store):
    """Inits 2012-01..2024-12, training on all earlier months, refit yearly. References must
    match the figures measured for this setup in the issue."""
    from climate_ml.catalog import load_catalog
    from climate_ml.ingest import ingest_entry
    from climate_ml.store import open_obs

    ingest_entry(load_catalog()["nsidc-seaice-monthly-north-local"], store)
    problem = get_problem("arctic_sea_ice")
    prepared = problem.prepare(open_obs(store, "nsidc-seaice-monthly-north-local"))
    res = run_backtest(problem, ["models/damped_anomaly_persistence.py", "models/lightgbm_lagged.py"],
                       prepared, "2012-01", "2024-12", 12)
    assert res.failures == {}
    rmse = {n: res.scores(n)["rmse"] for n in res.forecasts}
    for lead in range(1, 7):
        assert rmse["linear_trend"][str(lead)] == pytest.approx(0.40, abs=0.02)
    for lead, quoted in ((1, 0.26), (2, 0.35), (3, 0.41), (6, 0.49)):
        assert rmse["trend_persistence"][str(lead)] == pytest.approx(quoted, abs=0.035)
    for lead in range(1, 6):
        best_ref = min(rmse["trend_persistence"][str(lead)], rmse["linear_trend"][str(lead)])
        assert rmse["damped_anomaly_persistence"][str(lead)] < best_ref, lead
    # LightGBM (departures from the trend) beats the trend up to lead 3 and trend persistence
    # from lead 2 on; it does not beat the better of the two at lead 1 (see README)
    for lead in range(1, 4):
        assert rmse["lightgbm_lagged"][str(lead)] < rmse["linear_trend"][str(lead)], lead
    for lead in range(2, 7):
        assert rmse["lightgbm_lagged"][str(lead)] < rmse["trend_persistence"][str(lead)], lead


def test_toy_sea_ice_field_is_nsidc_like_and_gives_extent(store, tmp_path):
    """The embedded default: polar stereographic (y, x) grid with 2-D lat/lon and cell area;
    extent has a March maximum, a September minimum and a declining September trend."""
    from climate_ml.catalog import load_catalog
    from climate_ml.ingest import ingest_entry
    from climate_ml.store import open_obs
    from climate_ml.synthetic import polar_stereographic_grid

    x, y, lat, lon, area = polar_stereographic_grid(100_000.0)
    assert polar_stereographic_grid()[2].shape == (448, 304)  # the NSIDC 25 km grid
    assert lat.max() > 89 and 30 < lat.min() < 35
    # cell areas sum to the spherical area of the domain's cap north of 60N (within 1%)
    cap = 2 * np.pi * 6_371_000.0**2 * (1 - np.sin(np.deg2rad(60)))
    assert area[lat >= 60].sum() == pytest.approx(cap, rel=0.01)
    ingest_entry(load_catalog()["toy-sea-ice"], store)
    ds = open_obs(store, "toy-sea-ice")
    conc = ds["cdr_seaice_conc"]
    assert conc.dims == ("time", "y", "x") and ds["lat"].dims == ("y", "x") and "cell_area" in ds.coords
    assert conc.shape[1:] == (448, 304)
    assert conc.attrs["units"] == "1" and float(conc.max()) <= 1.0
    ext = get_problem("arctic_sea_ice").prepare(ds)["extent"].to_series()
    by_month = ext.groupby(ext.index.month).mean()
    assert by_month.idxmax() == 3 and by_month.idxmin() == 9
    assert 13 < by_month[3] < 17 and 3 < by_month[9] < 8
    sept = ext[ext.index.month == 9]
    assert sept["2015":].mean() < sept[:"1988"].mean() - 1.0


def test_extent_counts_cells_at_or_above_15_percent():
    from climate_ml.features import sea_ice_extent

    conc = xr.DataArray([[[0.14, 0.15], [np.nan, 1.0]]], dims=("time", "y", "x"),
                        coords={"time": pd.date_range("2000-01", periods=1, freq="MS")})
    area = xr.DataArray([[1e12, 2e12], [4e12, 8e12]], dims=("y", "x"))
    assert float(sea_ice_extent(conc, area).item()) == pytest.approx(10.0)  # 2 + 8, land and 14% excluded


def test_percent_concentration_is_converted(tmp_path, store):
    from climate_ml.ingest import ingest_file
    from climate_ml.store import open_obs
    from climate_ml.synthetic import toy_sea_ice

    ds = toy_sea_ice(start="2000-01", end="2001-12")
    ds["cdr_seaice_conc"] = ds["cdr_seaice_conc"] * 100
    ds["cdr_seaice_conc"].attrs = {"units": "percent", "standard_name": "sea_ice_area_fraction"}
    ds.to_netcdf(tmp_path / "pct.nc")
    ingest_file(tmp_path / "pct.nc", "cdr_seaice_conc", "pct", store)
    conc = open_obs(store, "pct")["cdr_seaice_conc"]
    assert conc.attrs["units"] == "1" and 0.9 < float(conc.max()) <= 1.0


def test_record_low_and_last_year_thresholds_use_only_the_past(prepared):
    """The two thresholds of each (init, lead), checked by brute force, and unchanged when every
    month after the init is altered."""
    from climate_ml.backtest import perturb_after

    problem = get_problem("arctic_sea_ice")
    low, last = problem._bounds(prepared)
    ext = prepared["extent"].to_series()
    for init in pd.DatetimeIndex(["1985-02-01", "1999-11-01", "2012-06-01"]):
        for lead in problem.leads:
            valid = init + pd.DateOffset(months=lead)
            same = ext[(ext.index <= init) & (ext.index.month == valid.month)]
            assert low.sel(init_time=init, lead=lead).item() == pytest.approx(same.min())
            assert last.sel(init_time=init, lead=lead).item() == pytest.approx(ext[valid - pd.DateOffset(years=1)])
        later = perturb_after(prepared, init, seed=1)
        low2, last2 = problem._bounds(later)
        np.testing.assert_array_equal(low2.sel(init_time=init).values, low.sel(init_time=init).values)
        np.testing.assert_array_equal(last2.sel(init_time=init).values, last.sel(init_time=init).values)
    assert np.isnan(low.isel(init_time=0).values).all()  # a valid month with no year before it: no threshold


def test_probabilities_of_a_record_low_and_of_below_last_year(prepared):
    """Calibrated on each model's own earlier errors, scored against the trend climatology:
    persistent anomalies make trend persistence skilful at short leads, the trend itself is
    about as good as its own climatology, and every verified forecast is in the reliability table."""
    from climate_ml.backtest import issue_forecast
    from climate_ml.workflows import probabilistic_outlook

    problem = get_problem("arctic_sea_ice")
    res = run_backtest(problem, [], prepared, "1995-01", "2020-06", 24)
    s = {n: res.scores(n) for n in res.forecasts}
    assert s["trend_persistence"]["rpss"]["1"] > 0.25 and s["trend_persistence"]["rpss"]["1"] > s["linear_trend"]["rpss"]["1"] + 0.2
    assert all(abs(v) < 0.05 for v in s["linear_trend"]["rpss"].values())  # the reference's own distribution
    assert all(v < -0.3 for v in s["climatology"]["rpss"].values())  # a mean without the trend is worse than none
    assert s["trend_persistence"]["bss_above_last_year"]["1"] > 0.2
    probs = problem.category_probabilities(res, "trend_persistence")
    np.testing.assert_allclose(probs.sum("category").dropna("init_time", how="all").values, 1.0, atol=1e-9)
    rel = res.extra("trend_persistence")["reliability"]["above_last_year"]
    assert sum(b["n"] for b in rel) == int(res.obs.notnull().sum())
    assert all(abs(b["forecast"] - b["observed"]) < 0.15 for b in rel if b["n"] >= 20)  # reliable within 0.15

    path = registered_models("arctic_sea_ice")["trend_persistence"]
    init = pd.Timestamp("2015-08-01")
    fc = issue_forecast(problem, load_model_factory(path), prepared, init)
    out = probabilistic_outlook(problem, path, prepared, fc)
    assert set(out["categories"]) == {str(k) for k in problem.leads}
    for lead, p in out["categories"].items():
        assert abs(sum(p.values()) - 1) < 2e-3
        th = out["thresholds"][lead]
        assert th["record_low"] <= th["last_year"]


def test_outlook_command_gives_sea_ice_probabilities_and_a_png(tmp_path, capsys):
    """`climate-ml outlook arctic_sea_ice`: every model's extent and the mean P(record low / below
    last year / above last year) per lead, with the thresholds, in JSON and a PNG."""
    import json

    from climate_ml.cli import main
    from climate_ml.store import write_obs

    store = tmp_path / "store"
    write_obs(synthetic_extent(), store, "ext", {"source": "synthetic"})
    png = tmp_path / "outlook.png"
    rc = main(["outlook", "arctic_sea_ice", "--dataset", "ext", "--model", "damped_anomaly_persistence",
               "--model", "trend_persistence", "--init", "2015-06", "-o", str(png), "--json", "--store", str(store)])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["failed"] == {} and set(out["models"]) == {"damped_anomaly_persistence", "trend_persistence"}
    for lead, p in out["consensus"].items():
        assert set(p) == {"new_record_low", "below_last_year", "above_last_year"} and abs(sum(p.values()) - 1) < 5e-3
        th = out["models"]["trend_persistence"]["thresholds"][lead]
        assert th["record_low"] <= th["last_year"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_el_nino_rejects_a_sea_ice_field_and_a_heat_content_index():
    """`forecast el_nino ... --dataset toy-sea-ice` used to take the concentration field as the
    Nino 3.4 series and lag it cell by cell until the machine ran out of memory; a heat-content
    index (m) became the 'Nino 3.4' target without a word."""
    from climate_ml.errors import ClimateMLError
    from climate_ml.synthetic import toy_heat_content

    problem = get_problem("el_nino")
    ice = toy_sea_ice(start="2000-01", end="2000-12", resolution_m=400_000.0)
    with pytest.raises(ClimateMLError, match=r"variable 'cdr_seaice_conc' is in '1'"):
        problem.prepare(ice)
    with pytest.raises(ClimateMLError, match=r"has dims \(time, y, x\)"):
        problem.prepare(ice.assign(cdr_seaice_conc=ice["cdr_seaice_conc"].assign_attrs(units="degC")))
    heat = toy_heat_content()
    with pytest.raises(ClimateMLError, match=r"el_nino's target is a sea-surface temperature in degC; variable "
                                             r"'WWV' is in 'm'"):
        problem.prepare(heat)
