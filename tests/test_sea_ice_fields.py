"""Concentration-field forecasts and their scores: IIEE, extent error, binary accuracy."""

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from climate_ml.catalog import PROJECT_ROOT as ROOT
from climate_ml.cli import main
from climate_ml.errors import ClimateMLError
from climate_ml.model_api import load_model_factory
from climate_ml.sea_ice_fields import (
    EDGE_GRID,
    THRESHOLD,
    EdgeCalibration,
    ExtentForecast,
    FieldRows,
    PerCellReference,
    concentration_field,
    field_backtest,
    field_forecast_maps,
    field_scores,
    fit_fields,
    reference_models,
    remap_edge,
    summarise_field_scores,
    threshold_at_extent,
)
from climate_ml.synthetic import toy_sea_ice


def test_scores_on_a_hand_made_grid():
    """Four cells of 1, 2, 3 and 4 (10^6 km^2): the forecast puts ice in cells 0 and 1, the
    observation in cells 1 and 2, cell 3 is land in the observation."""
    area = np.array([1.0, 2.0, 3.0, 4.0]) * 1e12
    fc = np.array([0.8, 0.5, 0.1, 0.9])
    obs = np.array([0.1, 0.9, 0.2, np.nan])
    s = field_scores(fc, obs, area)
    assert s["iiee"] == pytest.approx(1.0 + 3.0)  # over in cell 0, under in cell 2; land ignored
    assert s["sie_error"] == pytest.approx((1 + 2) - (2 + 3))
    assert s["binary_accuracy"] == pytest.approx(1 - 4.0 / 5.0)  # scoring region: the observed ice, cells 1-2
    active = np.array([False, False, False, False])
    perfect = field_scores(obs, obs, area, active)
    assert np.isnan(perfect.pop("spread"))  # one map: no spread
    assert perfect == {"iiee": 0.0, "sie_error": 0.0, "binary_accuracy": 1.0, "ice_brier": 0.0, "crps": 0.0,
                       "sq_error": 0.0}
    # absolute error over cells 0-2 (cell 0's forecast ice costs, but adds no area), per area of cells 1-2
    assert s["crps"] == pytest.approx((1 * 0.7 + 2 * 0.4 + 3 * 0.1) / 5)


@pytest.fixture(scope="module")
def ice():
    return toy_sea_ice(start="1990-01", end="2012-12", resolution_m=100_000.0)


def test_field_forecasts_do_not_look_ahead(ice):
    conc = ice["cdr_seaice_conc"]
    init = pd.Timestamp("2008-06-01")
    ref = field_forecast_maps(conc, init, 3)
    probe = conc.where(conc.time <= np.datetime64(init), 0.5)  # every later month changed
    got = field_forecast_maps(probe, init, 3)
    for method in ref:
        xr.testing.assert_equal(ref[method], got[method])
    assert np.isnan(ref["linear_trend"].values).any()  # land stays land


def test_field_backtest_scores_and_references(ice):
    extra = {name: load_model_factory(ROOT / "models" / f"{name}.py") for name in
             ("damped_anomaly_persistence_edge", "damped_anomaly_persistence_per_cell",
              "damped_anomaly_persistence_per_cell_edge")}
    scores = field_backtest(ice["cdr_seaice_conc"], ice["cell_area"], range(1, 7), "2005-01", "2011-12", 24,
                            models={**reference_models(), **extra})
    assert scores.sizes == {"method": 7, "init_time": 84, "lead": 6}
    table = summarise_field_scores(scores)
    trend, damped, clim = (table[m]["iiee"] for m in ("linear_trend", "damped_anomaly_persistence", "climatology"))
    # the toy retreats northwards: a trend beats climatology; its anomalies persist for months
    assert trend["3"] < clim["3"] and damped["1"] < trend["1"]
    # the damped maps blur the edge: drawing it where the training forecasts matched best pays at every lead
    calibrated = table["damped_anomaly_persistence_edge"]
    assert all(calibrated["iiee"][k] < damped[k] for k in damped)
    per_cell = table["damped_anomaly_persistence_per_cell"]["iiee"]
    assert all(table["damped_anomaly_persistence_per_cell_edge"]["iiee"][k] < per_cell[k] for k in damped)
    assert per_cell["1"] < 0.95 * damped["1"]  # each cell damped on its own: as on the real maps, better at lead 1
    assert all(calibrated["sie_rmse"][k] < table["damped_anomaly_persistence"]["sie_rmse"][k] for k in damped)
    assert all(0.5 < table[m]["binary_accuracy"]["1"] <= 1 for m in table)
    sie = scores["sie_error"].sel({"method": "linear_trend"})
    assert float(abs(sie).mean()) <= float(scores["iiee"].sel({"method": "linear_trend"}).mean()) + 1e-12


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), gap=st.integers(0, 30), n_gap=st.integers(0, 9), end=st.integers(60, 140),
       shuffled=st.booleans())
def test_damping_is_the_regression_of_later_departures_on_the_init_months(seed, gap, n_gap, end, shuffled):
    """The damping of each (init month, lead) is sum(a0 * a1) / sum(a0^2) over the training
    inits of that month and the rows ``lead`` later that are training rows too (NaN left out),
    with a0, a1 the departures from the per-month trend; clipped to 0-1. Computed plainly here
    on a record with a gap of months and missing cells (its rows in time order or not), it must
    equal fit_fields' to rounding (fit_fields sums month by month, streamed over blocks of
    months); and read in blocks of any size, the fit is the same bit for bit. The per-cell
    damping is the same regression on each cell's own pairs (the pooled one where a cell's
    departures at the init are all 0 or missing)."""
    rng = np.random.default_rng(seed)
    times = pd.date_range("1990-01", periods=160, freq="MS")
    times = times.delete(slice(gap, gap + n_gap))  # a gap of months: rows are not months apart
    if shuffled:
        times = times[rng.permutation(len(times))]
    conc = np.clip(0.5 + 0.3 * rng.standard_normal((len(times), 7)).cumsum(0) / 10, 0, 1)
    conc[rng.random(conc.shape) < 0.05] = np.nan
    leads = [1, 2, 3, 6, 12]
    fit_end = times.sort_values()[end]
    fit = fit_fields(conc, times, fit_end, leads)
    cells = fit_fields(conc, times, fit_end, leads, per_cell=True)
    anom = conc - fit.trend(times)
    for m in range(12):
        inits = np.flatnonzero((times <= fit_end) & (times.month == m + 1))
        for j, lead in enumerate(leads):
            pairs = [(i, i + lead) for i in inits if i + lead < len(times) and times[i + lead] <= fit_end]
            a0 = anom[[i for i, _ in pairs]]
            a1 = anom[[k for _, k in pairs]]
            num, den = np.nansum(a0 * a1), np.nansum(a0 * a0)
            want = np.clip(num / den, 0, 1) if den > 0 else 0.0
            assert fit.damping[m, j] == pytest.approx(want, rel=1e-12, abs=1e-15), (m, lead)
            for c in range(conc.shape[1]):  # per cell: the same regression on the cell's own pairs
                num, den = np.nansum(a0[:, c] * a1[:, c]), np.nansum(a0[:, c] ** 2)
                want = np.clip(num / den, 0, 1) if den > 0 else fit.damping[m, j]
                assert cells.cell_damping[m, j, c] == pytest.approx(want, rel=1e-12, abs=1e-15), (m, lead, c)
    block = 1 + seed % 23
    blocked = fit_fields(FieldRows(xr.DataArray(conc, dims=("time", "cell"), coords={"time": times}),
                                   block_months=block), times, fit_end, leads, per_cell=True)
    for name in ("mean", "slope", "intercept", "ever_ice", "damping", "cell_damping"):
        np.testing.assert_array_equal(getattr(blocked, name), getattr(cells, name), err_msg=f"{name}, blocks of {block}")
    for name in ("mean", "slope", "intercept", "ever_ice", "damping"):  # the pooled fit is the same either way
        np.testing.assert_array_equal(getattr(cells, name), getattr(fit, name), err_msg=name)
    assert fit.cell_damping is None


def test_field_scores_count_only_cells_with_ice_or_the_active_region(ice):
    """The backtest scores each map on the cells a score can count (ice observed or forecast,
    or the active region): the numbers of scoring the whole grid, exactly."""
    from climate_ml.sea_ice_fields import active_region, crps_per_cell

    conc, area = ice["cdr_seaice_conc"], ice["cell_area"]
    init = pd.Timestamp("2010-07-01")
    kept = {}
    scores = field_backtest(conc, area, [1, 3], "2010-01", "2011-06", 12,
                            models={"damped_anomaly_persistence": reference_models()["damped_anomaly_persistence"]},
                            on_forecast=lambda name, t, maps: kept.update({t: maps}))
    times = pd.DatetimeIndex(conc["time"].values)
    flat = conc.values.reshape(len(times), -1)
    ocean = np.isfinite(flat).any(0)
    observed = flat[times.get_loc(pd.Timestamp("2010-10-01")), ocean]
    # the forecast in float64, made here as the backtest's unit makes it (fitted up to the fold's
    # start); the maps handed back for archiving are the same in float32
    model = PerCellReference("damped_anomaly_persistence").fit(conc.sel(time=slice(None, "2010-01")), area, [1, 3])
    forecast = model.predict(conc.sel(time=slice(None, init))).sel(lead=3).values.ravel()[ocean]
    assert kept[init].dtype == np.float32
    np.testing.assert_array_equal(kept[init][0, 1].ravel()[ocean], forecast.astype("float32"))  # member 0, lead 3
    active = active_region(flat[:, ocean], times, "2010-01")[9]
    whole = field_scores(forecast, observed, area.values.ravel()[ocean], active,
                         crps=crps_per_cell(forecast[None], observed))
    got = scores.sel({"method": "damped_anomaly_persistence", "init_time": init, "lead": 3})
    assert whole["crps"] > 0 and whole["iiee"] > 0
    for k, v in whole.items():
        assert float(got[k]) == v or (np.isnan(v) and np.isnan(float(got[k]))), k


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), t=st.sampled_from([float(v) for v in EDGE_GRID]))
def test_edge_remap_moves_the_threshold_to_15_percent_and_keeps_the_order(seed, t):
    rng = np.random.default_rng(seed)
    c = np.concatenate([rng.uniform(0, 1, 300), [0.0, 1.0, t, np.nextafter(t, 0.0), np.nextafter(t, 1.0), np.nan]])
    out = remap_edge(np.stack([c, c]), np.array([t, 0.15]))  # two leads: the second keeps 15%
    ok = np.isfinite(c)
    assert np.isnan(out[:, ~ok]).all()  # land stays land
    assert np.array_equal(out[0, ok] >= 0.15, c[ok] >= t)  # ice exactly where the forecast reached the threshold
    assert np.array_equal(out[1, ok] >= 0.15, c[ok] >= 0.15)
    np.testing.assert_allclose(out[1, ok], c[ok], rtol=0, atol=1e-15)  # a threshold of 15% changes nothing
    order = np.argsort(c[ok], kind="stable")
    assert (np.diff(out[0, ok][order]) >= 0).all()  # the order of concentrations is kept
    assert out[0, 300] == 0.0 and out[0, 301] == pytest.approx(1.0, abs=1e-15) and out[0, ok].max() <= 1.0


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), shift=st.sampled_from([-0.08, 0.0, 0.06, 0.12]))
def test_edge_calibration_sums_the_iiee_of_each_threshold_and_finds_a_planted_bias(seed, shift):
    """Forecasts that are the observed maps shifted by ``shift`` draw the observed edge exactly at
    15% + shift: the calibration finds it, and its sums are the IIEE of every threshold."""
    rng = np.random.default_rng(seed)
    area = rng.uniform(0.5, 2.0, 400)
    cal, pairs = EdgeCalibration(2), []
    for _ in range(6):
        observed = rng.uniform(0, 1, 400) ** 2
        observed[rng.random(400) < 0.1] = np.nan  # land or a gap: never counted
        forecast = np.clip(observed + shift, 0.0, 1.0)
        cal.add(0, 3, forecast, observed, area)
        pairs.append((forecast, observed))
    for k, t in enumerate(cal.grid):
        direct = sum(area[np.isfinite(o) & ((f >= t) != (o >= 0.15))].sum() for f, o in pairs)
        assert cal.error[0, 3, k] == pytest.approx(direct, rel=1e-12, abs=1e-12)
    best = cal.thresholds()
    assert best[0, 3] == pytest.approx(0.15 + shift) and cal.error[0, 3].min() == pytest.approx(0.0, abs=1e-9)
    assert best[0, 2] == best[0, 4] == best[0, 3]  # pooled with the months either side
    assert (np.delete(best[0], [2, 3, 4]) == 0.15).all() and (best[1] == 0.15).all()  # nothing added: 15%


def test_edge_calibrated_reference_draws_its_edge_from_training_forecasts(ice):
    """The calibrated reference moves only where its own training forecasts say, and its 15%
    contour is the uncalibrated map's contour at the chosen thresholds."""
    conc, area = ice["cdr_seaice_conc"], ice["cell_area"]
    train = conc.sel(time=slice(None, "2008-12"))
    plain = PerCellReference("damped_anomaly_persistence").fit(train, area, range(1, 7))
    edge = PerCellReference("damped_anomaly_persistence", calibrate_edge=True).fit(train, area, range(1, 7))
    assert plain.edge_ is None and edge.edge_.shape == (6, 12) and set(np.unique(edge.edge_)) <= set(EDGE_GRID)
    a, b = plain.predict(train).values, edge.predict(train).values  # from 2008-12: valid 2009-01 .. 2009-06
    t = edge.edge_[np.arange(6), np.arange(6)][:, None, None]
    ok = np.isfinite(a)
    assert np.array_equal(np.isfinite(b), ok)
    assert np.array_equal((b >= 0.15)[ok], np.broadcast_to(a >= t, a.shape)[ok])
    with pytest.raises(ClimateMLError, match="unknown field method"):
        PerCellReference("persistence", calibrate_edge=True)


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 10_000), share=st.floats(0.0, 1.0), n=st.integers(1, 60))
def test_the_edge_drawn_at_an_extent_encloses_the_least_area_that_reaches_it(seed, share, n):
    """``remap_edge`` at ``threshold_at_extent``'s threshold draws the ice edge around the
    highest concentrations first: its ice covers at least the extent asked for, and without the
    cells at the threshold itself less than it (the least such area the map's order allows);
    land stays out, and a NaN extent leaves 15%."""
    rng = np.random.default_rng(seed)
    maps = rng.uniform(0.01, 0.99, (2, n)).round(2)  # rounded: ties at the threshold happen
    maps[:, rng.random(n) < 0.2] = np.nan
    area = rng.uniform(0.5, 2.0, n)
    ok = np.isfinite(maps[0])
    extent = np.array([share * area[ok].sum(), np.nan])
    t = threshold_at_extent(maps, area, extent, bounds=(0.001, 0.999))
    assert t[1] == THRESHOLD
    ice = remap_edge(maps, t)[0] >= THRESHOLD
    assert not ice[~ok].any()
    if ok.any():
        assert area[ice].sum() >= extent[0] - 1e-9
        assert area[ok & (maps[0] > t[0])].sum() < extent[0] + 1e-9 or share == 0
        assert np.array_equal(ice[ok], maps[0][ok] >= t[0])
        # no ice asked for: the highest concentration, but the map is moved no further than the bounds
        assert threshold_at_extent(maps[:1], area, np.array([0.0]))[0] == np.clip(np.nanmax(maps[0]), EDGE_GRID[0], EDGE_GRID[-1])
    else:
        assert t[0] == THRESHOLD  # nothing but land: left as it is


def test_extent_forecast_is_damped_anomaly_persistence_of_the_ice_covered_fraction():
    """Checked against a direct computation: the ice-covered share of the ocean area per month,
    a linear trend per calendar month (least squares), the departure at the init scaled by the
    regression of departures ``lead`` months apart on those at inits of the same calendar month."""
    rng = np.random.default_rng(5)
    times = pd.date_range("1990-01", periods=12 * 15, freq="MS")
    n_cells = 40
    area = rng.uniform(0.5, 2.0, n_cells)
    level = 0.5 + 0.3 * np.cos(2 * np.pi * times.month.values / 12) - 0.004 * (times.year.values - 1990)
    conc = np.clip(level[:, None] + rng.normal(0, 0.2, (len(times), n_cells)), 0, 1)
    leads = [1, 2, 3]
    fc = ExtentForecast(FieldRows(conc, times), area, leads)
    share = (conc >= THRESHOLD) @ area / area.sum()
    np.testing.assert_allclose(fc.fraction(conc), share, rtol=1e-12)
    years = times.year.values
    trend = np.empty(len(times))
    for m in range(1, 13):
        sel = times.month.values == m
        slope, intercept = np.polyfit(years[sel], share[sel], 1)
        trend[sel] = intercept + slope * years[sel]
    anom = share - trend
    i = len(times) - 1  # the last training month as the init
    for j, lead in enumerate(leads):
        pairs = [r for r in range(len(times) - lead) if times.month.values[r] == times.month.values[i]]
        a = np.clip(sum(anom[r] * anom[r + lead] for r in pairs) / sum(anom[r] ** 2 for r in pairs), 0, 1)
        valid = times[i] + pd.DateOffset(months=lead)
        sel = times.month.values == valid.month
        slope, intercept = np.polyfit(years[sel], share[sel], 1)
        direct = intercept + slope * valid.year + a * anom[i]
        assert fc.predict(conc[i], times[i])[j] == pytest.approx(np.clip(direct, 0, 1) * area.sum(), rel=1e-9)
    gap = conc.copy()
    gap[30] = np.nan  # a month with no data has no fraction, and its calendar month no forecast
    assert np.isnan(ExtentForecast(FieldRows(gap, times), area, leads).fraction(gap)[30])
    assert np.isnan(ExtentForecast(FieldRows(gap, times), area, leads).predict(conc[-7], times[-7])).any()


def test_extent_series_is_not_a_field(store):
    ds = xr.Dataset({"extent": ("time", np.ones(24))}, coords={"time": pd.date_range("2000-01", periods=24, freq="MS")})
    with pytest.raises(ClimateMLError, match="concentration field"):
        concentration_field(ds)


def test_cli_backtest_of_the_map_references_json_and_bad_input(tmp_path, capsys):
    """A per-cell reference file given alone to `backtest` runs the references only."""
    store = tmp_path / "store"
    ref = str(ROOT / "models" / "fields" / "damped_anomaly_persistence.py")
    rc = main(["backtest", "arctic_sea_ice", ref, "--test-start", "2020-01", "--refit-every", "60", "--json",
               "--store", str(store)])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["scores"]) == {"climatology", "linear_trend", "trend_persistence", "damped_anomaly_persistence"}
    assert set(out["scores"]["linear_trend"]) == {"iiee", "sie_rmse", "binary_accuracy", "ice_brier", "conc_crps",
                                                  "spread_skill"}
    assert set(out["scores"]["linear_trend"]["spread_skill"].values()) == {None}  # one map, no members
    rc = main(["backtest", "arctic_sea_ice", ref, "--test-start", "2020-13", "--store", str(store)])
    assert rc == 2 and "bad --test-start '2020-13'" in capsys.readouterr().err
    rc = main(["backtest", "arctic_sea_ice", ref, "--refit-every", "0", "--store", str(store)])
    assert rc == 2 and "bad --refit-every 0" in capsys.readouterr().err
