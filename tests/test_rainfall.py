"""California rainfall: targets, the wet-season product, tercile scores, the embedded default in
the nClimDiv format, predictors from another data set, and the no-lookahead guard."""

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from climate_ml.backtest import backtest, lookahead_violations
from climate_ml.cli import main
from climate_ml.errors import ClimateMLError
from climate_ml.ingest import standardise
from climate_ml.ingest.tabular import open_nclimdiv
from climate_ml.model_api import load_model_factory
from climate_ml.problems import get_problem
from climate_ml.schema import INIT, LEAD, MEMBER
from climate_ml.scores import (
    brier_skill_upper_tercile,
    observed_category,
    ranked_probability_skill,
    shifted_climatology_probabilities,
    tercile_edges,
)
from climate_ml.synthetic import toy_ocean, toy_precip, write_toy_precip
from climate_ml.workflows import registered_models

PROBLEM = get_problem("california_rainfall")


@pytest.fixture(scope="module")
def prepared():
    precip = toy_precip(end="2004-12")["precip_004"].assign_attrs(units="mm")
    ocean = standardise(toy_ocean(end="2004-12"), "sst")
    return PROBLEM.prepare(xr.Dataset({"precip": precip}), {"toy-ocean": ocean})


def test_prepare_adds_predictor_indices_on_the_precip_axis(prepared):
    assert {"precip", "pred_nino34", "pred_nino3", "pred_nino4"} <= set(prepared.data_vars)
    assert prepared.sizes["time"] == 55 * 12
    assert float(prepared["pred_nino34"].std()) > 0.3


def test_wrong_units_and_bad_predictors_are_clear_errors(prepared):
    pr = xr.Dataset({"precip": prepared["precip"].assign_attrs(units="inches")})
    with pytest.raises(ClimateMLError, match="mm.*inches"):
        PROBLEM.prepare(pr)
    good = xr.Dataset({"precip": prepared["precip"].assign_attrs(units="mm")})
    two = xr.Dataset({"a": prepared["precip"], "b": prepared["precip"]})
    assert {"pred_a", "pred_b"} <= set(PROBLEM.prepare(good, {"two": two}).data_vars)  # every variable predicts
    with pytest.raises(ClimateMLError, match="predictor 'pred_a' comes from two data sets \\('one' and 'two'\\)"):
        PROBLEM.prepare(good, {"one": two[["a"]], "two": two})
    cube = xr.Dataset({"a": prepared["precip"].expand_dims(level=[1, 2])})
    with pytest.raises(ClimateMLError, match="predictor dataset 'cube': variable 'a' is neither"):
        PROBLEM.prepare(good, {"cube": cube})


def test_target_is_the_monthly_total_at_valid_time(prepared):
    y = PROBLEM.target(prepared, "1990-01")
    t = pd.Timestamp("1980-08-01")
    for lead in PROBLEM.leads:
        want = float(prepared["precip"].sel(time=t + pd.DateOffset(months=lead)))
        assert float(y.sel({INIT: t, LEAD: lead})) == pytest.approx(want)
    assert pd.Timestamp(y.sel({INIT: t, LEAD: 3}).valid_time.values) == pd.Timestamp("1980-11-01")


def test_season_context_splits_known_and_forecast_months(prepared):
    ctx = PROBLEM.scoring_context(prepared, "1990-01")
    pr = prepared["precip"].to_series()
    w = ctx["season_weights"]
    aug, nov, jan = (pd.Timestamp(f"1985-{m}-01") for m in ("08", "11", "01"))
    assert list(w.sel({INIT: aug}).values) == [0, 0, 1, 1, 1, 1, 1]  # Nov..Mar = leads 3..7
    assert list(w.sel({INIT: nov}).values) == [1, 1, 1, 1, 0, 0, 0]  # Dec..Mar; Nov is known
    assert float(ctx["season_known"].sel({INIT: nov})) == pytest.approx(pr[nov])
    assert float(ctx["season_known"].sel({INIT: aug})) == 0.0
    assert np.isnan(float(ctx["season_known"].sel({INIT: jan})))
    season = pr["1985-11":"1986-03"].sum()
    assert float(ctx["season_obs"].sel({INIT: aug})) == pytest.approx(season)
    assert float(ctx["season_obs"].sel({INIT: nov})) == pytest.approx(season)


def test_tercile_samples_come_from_the_training_window_only(prepared):
    """Changing every month after the cut-off leaves the climatological samples unchanged."""
    fit_end = pd.Timestamp("1990-01-01")
    later = prepared.copy(deep=True)
    later["precip"] = later["precip"].where(later.time <= np.datetime64(fit_end), 9999.0)
    a, b = PROBLEM.scoring_context(prepared, fit_end), PROBLEM.scoring_context(later, fit_end)
    for key in ("climate_samples", "season_samples"):
        xr.testing.assert_identical(a[key], b[key])
    assert np.nanmax(a["climate_samples"].values) < 9999.0


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=0, max_value=2**31 - 1))
def test_climatological_forecast_scores_zero_and_perfect_scores_one(seed):
    rng = np.random.default_rng(seed)
    samples = xr.DataArray(rng.gamma(1.5, 40.0, (200, 60)), dims=(INIT, "sample"))
    obs = xr.DataArray(rng.gamma(1.5, 40.0, 200), dims=INIT)
    edges = tercile_edges(samples)
    onehot = observed_category(obs, edges)
    clim = xr.full_like(onehot, 1 / 3)
    assert float(ranked_probability_skill(clim, onehot)) == pytest.approx(0.0, abs=1e-12)
    assert float(brier_skill_upper_tercile(clim, onehot)) == pytest.approx(0.0, abs=1e-12)
    assert float(ranked_probability_skill(onehot, onehot)) == pytest.approx(1.0)
    assert float(brier_skill_upper_tercile(onehot, onehot)) == pytest.approx(1.0)
    # the climatological mean with unit spread gives the climatological 1/3 each
    probs = shifted_climatology_probabilities(samples.mean("sample"), samples, xr.ones_like(obs))
    np.testing.assert_allclose(probs.values, 1 / 3, atol=1 / 60 + 1e-9)
    np.testing.assert_allclose(probs.sum("category").values, 1.0)


def test_every_rainfall_model_passes_lookahead_guard(prepared):
    for name, path in registered_models("california_rainfall").items():
        factory = load_model_factory(path)
        bad = lookahead_violations(PROBLEM, factory, prepared, ["1990-01", "1990-09"], "1990-01")
        assert bad == [], f"{name}: {bad}"


def test_backtest_scores_the_season_and_terciles(prepared):
    paths = registered_models("california_rainfall")
    assert set(paths) == {"climatology", "enso_regression", "lightgbm_lagged", "lightgbm_enso_rain", "convlstm_rain"}
    paths.pop("convlstm_rain")  # the slow one: its season and terciles are checked in test_convlstm.py
    res = backtest(PROBLEM, paths, prepared, "1980-01", "2003-12", refit_every=48)
    assert res.failures == {}
    for name in paths:
        s = res.scores(name)
        assert set(s["bss_upper_tercile"]) == {str(k) for k in PROBLEM.leads}
        assert all(v is not None and v <= 1 for v in s["rpss"].values())
        season = res.extra(name)["season"]
        assert season["n"] == {"Aug": 24, "Sep": 24, "Oct": 24, "Nov": 24, "all": 96}
    clim = res.extra("climatology")["season"]
    # a climatological forecast has (close to) no probabilistic skill, by construction
    assert abs(clim["rpss"]["Aug"]) < 0.1 and abs(clim["bss_upper_tercile"]["Aug"]) < 0.1
    # the toy teleconnection is real: the ENSO-aware models find it in the season total
    enso = res.extra("enso_regression")["season"]
    assert enso["rmse"]["all"] < clim["rmse"]["all"] and enso["rpss"]["all"] > clim["rpss"]["all"]
    assert enso["correlation"]["all"] > 0.15
    seas = PROBLEM.season_forecasts(res, "lightgbm_lagged")
    assert (seas["probability"].sum("category") - 1).pipe(abs).max() < 1e-9
    assert set(pd.DatetimeIndex(seas[INIT].values).month) == {8, 9, 10, 11}
    # reliability of the monthly tercile probabilities: every verified (init, lead) in one bin, and a
    # climatological forecast is never sharp (about 1/3; the skewed totals move it a little)
    for name in res.forecasts:
        for category in ("above", "below"):
            bins = res.extra(name)["reliability"][category]
            assert sum(b["n"] for b in bins) == int(res.obs.notnull().sum())
    clim_bins = [b for b in res.extra("climatology")["reliability"]["above"] if b["n"]]
    assert all(0.3 <= b["bin"][0] < 0.5 for b in clim_bins)


def test_members_widen_the_monthly_terciles_but_not_the_season(prepared):
    """A rainfall model with members: the monthly terciles use r combined with the members'
    spread (in climatological standard deviations); the season total keeps its past-error r."""
    res = backtest(PROBLEM, {"enso_regression": registered_models("california_rainfall")["enso_regression"]},
                   prepared, "1985-01", "2003-12", refit_every=60)
    fc = res.forecasts["enso_regression"]
    samples = res.context["climate_samples"]
    spread = np.maximum(samples.std("sample", skipna=True), 0.1)
    r = PROBLEM._past_rms((fc - res.obs) / spread, PROBLEM.target_end(fc[INIT].values), res.fit_end,
                          PROBLEM.min_past_errors)
    season = PROBLEM.season_forecasts(res, "enso_regression")
    offsets = xr.DataArray([-20.0, 0.0, 20.0], dims=MEMBER)
    res.members["enso_regression"] = fc + offsets
    got = PROBLEM.monthly_probabilities(res, "enso_regression")
    ratio = np.sqrt((r**2 + (4 / 3 * 400.0) / spread**2) / 2)
    np.testing.assert_allclose(got.values, shifted_climatology_probabilities(fc, samples, ratio).values)
    assert not np.allclose(got.values, shifted_climatology_probabilities(fc, samples, r).values)
    xr.testing.assert_identical(PROBLEM.season_forecasts(res, "enso_regression"), season)


def test_toy_precip_is_a_wet_season_climate_with_a_weak_enso_link(tmp_path):
    path = write_toy_precip(tmp_path / "climdiv-pcpnst-toy.txt")
    first = path.read_text().splitlines()[0]
    assert first[:10] == "0020011950" and len(first.split()) == 13
    ca = open_nclimdiv(path, "precip", region="california")["precip"].to_series() * 25.4
    direct = toy_precip()["precip_004"].to_series()
    np.testing.assert_allclose(ca.values, direct.values, atol=0.005 * 25.4 + 1e-9)  # 2 decimals in inches
    by_month = ca.groupby(ca.index.month).mean()
    assert by_month[[11, 12, 1, 2, 3]].sum() > 0.7 * by_month.sum()
    ocean = toy_ocean()
    n34 = ocean["sst"].sel(lat=slice(5, -5), lon=slice(190, 240)).mean(["lat", "lon"]).to_series()
    n34 = n34.groupby(n34.index.month).transform(lambda s: s - s.mean())
    so = n34[n34.index.month.isin([9, 10])]
    so = so.groupby(so.index.year).mean()
    season = ca.rolling(5).sum().shift(-4)
    season = season[season.index.month == 11]
    season.index = season.index.year
    r = so.corr(season.reindex(so.index))
    assert 0.1 < r < 0.5, r


def test_cli_backtest_json_has_tercile_scores_and_references(tmp_path, capsys):
    store = tmp_path / "store"
    rc = main(["backtest", "california_rainfall", "models/lightgbm_lagged.py", "--test-start", "2000-01",
               "--refit-every", "60", "--json", "--no-blend", "--store", str(store)])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["problem"] == "california_rainfall" and out["dataset"] == "toy-california-precip"
    assert {"bss_upper_tercile", "rpss", "rmse", "acc"} <= set(out["scores"])
    assert set(out["references"]) == {"climatology", "enso_regression"}
    for ref in out["references"].values():
        assert {"bss_upper_tercile", "rpss", "season"} <= set(ref)
    assert set(out["season"]) == {"n", "rmse", "correlation", "brier_upper_tercile", "bss_upper_tercile", "rpss"}
    rc = main(["backtest", "california_rainfall", "models/lightgbm_lagged.py", "--predictor-dataset", "no-such-sst",
               "--store", str(store)])
    assert rc == 2
    assert "no-such-sst" in capsys.readouterr().err


def test_live_outlook_probabilities_use_only_data_up_to_the_init(prepared):
    from climate_ml.backtest import issue_forecast, perturb_after
    from climate_ml.workflows import probabilistic_outlook

    path = registered_models("california_rainfall")["lightgbm_enso_rain"]
    init = "1998-10"
    fc = issue_forecast(PROBLEM, load_model_factory(path), prepared, init)
    out = probabilistic_outlook(PROBLEM, path, prepared, fc, years=12)
    season = out["season"]
    assert season["months"] == "Nov-Mar" and season["past_forecasts_in_spread"] == 48  # 12 years x Aug-Nov
    assert sum(season["probability"].values()) == pytest.approx(1.0, abs=2e-3)
    assert season["tercile_edges"][0] < season["forecast"] + 1000 and season["tercile_edges"][0] < season["tercile_edges"][1]
    assert set(out["monthly_terciles"]) == {str(k) for k in PROBLEM.leads}
    later = perturb_after(prepared, init, scale=500.0)
    fc2 = issue_forecast(PROBLEM, load_model_factory(path), later, init)
    assert probabilistic_outlook(PROBLEM, path, later, fc2, years=12) == out
    # members around the same mean change the monthly spread ratios (wider members, wider ratios),
    # not the season outlook
    narrow, wide = (probabilistic_outlook(PROBLEM, path, prepared, fc + xr.DataArray([-w, 0.0, w], dims="member"),
                                          years=12) for w in (10.0, 60.0))
    assert narrow["season"] == wide["season"] == season
    for k, r in out["spread_ratio"].items():
        assert narrow["spread_ratio"][k] < wide["spread_ratio"][k] and narrow["spread_ratio"][k] != r
        # sqrt((r^2 + s^2) / 2): the members' part s grows 6-fold from the narrow to the wide members
        # (the ratios are rounded to 0.001)
        s_wide2 = 2 * wide["spread_ratio"][k] ** 2 - r**2
        assert 2 * narrow["spread_ratio"][k] ** 2 - r**2 == pytest.approx(s_wide2 / 36, abs=0.01)


def test_cli_forecast_prints_the_season_outlook(tmp_path, capsys):
    rc = main(["forecast", "california_rainfall", "models/enso_regression.py", "--init", "2020-08", "--json",
               "--store", str(tmp_path / "store")])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["season"]["units"] == "mm" and len(out["forecast"]) == 7
    assert all(abs(sum(r["terciles"].values()) - 1) < 2e-3 for r in out["forecast"])
    # the November-March outlook is archived with the forecast, beside the monthly terciles; a later
    # init outside August-November has none (NaN), and the earlier one is kept as it was
    from climate_ml.archive import query

    assert main(["forecast", "california_rainfall", "models/enso_regression.py", "--init", "2021-01", "--json",
                 "--store", str(tmp_path / "store")]) == 0
    capsys.readouterr()
    ds = query(tmp_path / "store", "california_rainfall", "enso_regression").isel(model=0)
    aug = ds.sel(init_time="2020-08-01")
    assert float(aug["season_forecast"]) == pytest.approx(out["season"]["forecast"], abs=0.05)
    assert [float(aug["season_probability"].sel(category=c)) for c in ("below", "near", "above")] == pytest.approx(
        [out["season"]["probability"][c] for c in ("below", "near", "above")], abs=1e-6)
    assert ds["season_forecast"].attrs["units"] == "mm"
    jan = ds.sel(init_time="2021-01-01")
    assert np.isnan(float(jan["season_forecast"])) and bool(jan["season_probability"].isnull().all())
    assert bool(jan["probability"].notnull().all())  # its monthly terciles are there


def test_expected_tercile_bss_matches_calibrated_gaussian_forecasts():
    """The attainable BSS of the upper tercile at a correlation r is that of calibrated
    forecasts of simulated Gaussian pairs, scored by the backtest's own Brier skill score; it is
    0 without correlation and grows with it."""
    from scipy.stats import norm

    from climate_ml.scores import expected_upper_tercile_bss

    assert abs(expected_upper_tercile_bss(0.0)) < 1e-9
    values = [expected_upper_tercile_bss(r) for r in (0.1, 0.3, 0.5, 0.7, 0.9)]
    assert np.all(np.diff(values) > 0)
    rng = np.random.default_rng(0)
    for r in (0.3, 0.6):
        x = rng.standard_normal(400_000)
        y = r * x + np.sqrt(1 - r * r) * rng.standard_normal(x.size)
        p = norm.sf((norm.ppf(2 / 3) - r * x) / np.sqrt(1 - r * r))
        probs = xr.DataArray(p[:, None], dims=(INIT, "category"), coords={"category": ["above"]})
        onehot = xr.DataArray((y > norm.ppf(2 / 3)).astype(float)[:, None], dims=(INIT, "category"),
                              coords={"category": ["above"]})
        assert float(brier_skill_upper_tercile(probs, onehot)) == pytest.approx(expected_upper_tercile_bss(r), abs=0.005)
    with pytest.raises(ValueError, match="strictly between -1 and 1"):
        expected_upper_tercile_bss(1.0)


def _seasons(n=80, strength=1.0, seed=0):
    rng = np.random.default_rng(seed)
    index = rng.standard_normal(n)
    total = 400 + 150 * (strength * index + rng.standard_normal(n))
    return pd.DataFrame({"nino34_nov_mar": index, "noise": rng.standard_normal(n), "total": total},
                        index=pd.Index(range(1900, 1900 + n), name="season"))


@pytest.mark.parametrize("spread", ["gaussian", "residuals"])
def test_tercile_skill_from_finds_a_planted_link_and_none_in_noise(spread):
    from climate_ml.problems.california_rainfall import tercile_skill_from

    strong = tercile_skill_from(_seasons(strength=3.0), ["nino34_nov_mar"], 1940, spread=spread)
    assert strong["seasons"] == 40 and strong["bss_upper_tercile"] > 0.3 and strong["correlation"] > 0.8
    none = tercile_skill_from(_seasons(strength=0.0), ["noise"], 1940, spread=spread)
    assert none["bss_upper_tercile"] < 0.1 and abs(none["correlation"]) < 0.4


@settings(max_examples=25, deadline=None)
@given(last=st.integers(1940, 1975), seed=st.integers(0, 1000), shift=st.floats(1, 500))
def test_tercile_skill_from_never_uses_the_season_or_later_ones(last, seed, shift):
    """Property: each season's P(above) is fitted on earlier seasons only. Changing the total of
    season ``last`` and everything after it (totals and indices) leaves every forecast up to
    ``last`` as it was, and the skill of the seasons before ``last`` too."""
    from climate_ml.problems.california_rainfall import tercile_skill_from

    seasons = _seasons(seed=seed)
    changed = seasons.copy()
    changed.loc[last:, "total"] += shift
    changed.loc[last + 1:, "nino34_nov_mar"] -= shift
    for spread in ("gaussian", "residuals"):
        before = tercile_skill_from(seasons, ["nino34_nov_mar"], 1930, last, spread=spread)
        after = tercile_skill_from(changed, ["nino34_nov_mar"], 1930, last, spread=spread)
        pd.testing.assert_series_equal(before["p_above"], after["p_above"])
        earlier = [tercile_skill_from(data, ["nino34_nov_mar"], 1930, last - 1, spread=spread)
                   for data in (seasons, changed)]
        assert earlier[0]["bss_upper_tercile"] == earlier[1]["bss_upper_tercile"]
        assert earlier[0]["correlation"] == earlier[1]["correlation"]


def test_season_table_sums_nov_to_mar_and_leaves_incomplete_seasons_out():
    from climate_ml.problems.california_rainfall import season_table, tercile_skill_from

    time = pd.date_range("2000-01-01", "2003-02-01", freq="MS")
    precip = xr.DataArray(np.arange(len(time), dtype=float), dims="time", coords={"time": time})
    nino = xr.DataArray(np.arange(len(time), dtype=float), dims="time", coords={"time": time})
    seasons = season_table(xr.Dataset({"precip": precip, "pred_nino34": nino}))
    # 2000/01: Nov 2000 (month index 10) to Mar 2001 (14)
    assert seasons.loc[2000, "total"] == sum(range(10, 15))
    # anomalies from the calendar months' means: Nov 10 - mean(10, 22, 34) = -12, Dec -12,
    # Jan 12 - mean(0, 12, 24, 36) = -6, Feb -6, Mar 14 - mean(2, 14, 26) = 0; Sep and Oct -12
    assert seasons.loc[2000, "nino34_nov_mar"] == pytest.approx(-7.2)
    assert seasons.loc[2000, "nino34_sep_oct"] == pytest.approx(-12.0)
    assert np.isnan(seasons.loc[2002, "total"]) and np.isnan(seasons.loc[2002, "nino34_nov_mar"])  # season runs past the data
    assert list(seasons.columns) == ["total", "nino34_sep_oct", "nino34_nov_mar"]
    with pytest.raises(ClimateMLError, match="too few seasons before 2001"):
        tercile_skill_from(seasons, ["nino34_nov_mar"], 2001)


def test_season_scatter_draws_a_png(tmp_path):
    from climate_ml.report import plot_season_scatter

    path = plot_season_scatter(_seasons(), {"nino34_nov_mar": "Nino 3.4", "noise": "noise"}, tmp_path / "a" / "s.png",
                               "seasons", label_seasons=(1950, 2100))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def _field(seed=0, years=60):
    """Monthly maps (time, lat, lon) whose Sep-Oct mean is a fixed pattern times a season series,
    plus noise, and one land cell (NaN)."""
    rng = np.random.default_rng(seed)
    time = pd.date_range("1900-01-01", periods=12 * years, freq="MS")
    lat, lon = np.array([-10.0, 0.0, 10.0]), np.array([200.0, 210.0, 220.0, 230.0])
    pattern = np.outer(np.cos(np.deg2rad(lat)), np.linspace(-1, 1, lon.size))
    series = rng.standard_normal(years)
    values = 0.2 * rng.standard_normal((time.size, lat.size, lon.size))
    values += 3 * series[time.year - 1900][:, None, None] * pattern
    values[:, 0, 0] = np.nan
    field = xr.DataArray(values, dims=("time", "lat", "lon"), coords={"time": time, "lat": lat, "lon": lon})
    return xr.Dataset({"field": field}), pd.Series(series, index=range(1900, 1900 + years))


def test_season_field_pcs_find_a_planted_pattern():
    from climate_ml.problems.california_rainfall import season_field_pcs

    prepared, series = _field()
    pcs = season_field_pcs(prepared, last_fit_season=1940, k=2)
    assert list(pcs.columns) == ["field_pc1", "field_pc2"] and pcs.index[0] == 1900 and pcs.index[-1] == 1959
    assert abs(np.corrcoef(pcs["field_pc1"], series.loc[pcs.index])[0, 1]) > 0.99
    with pytest.raises(ClimateMLError, match="too few complete seasons up to 1901"):
        season_field_pcs(prepared, last_fit_season=1901, k=3)


def test_season_field_pcs_of_maps_that_begin_after_the_rainfall_record_and_of_a_region():
    """Maps reindexed to a longer rainfall record (all missing before they begin, as ERSST from
    1980 beside nClimDiv from 1895) are fitted on the seasons they cover; ``region`` keeps the
    cells inside its box."""
    from climate_ml.problems.california_rainfall import season_field_pcs

    prepared, series = _field()
    later = prepared.copy(deep=True)
    later["field"] = later["field"].where(later["time"].dt.year >= 1920)
    pcs = season_field_pcs(later, last_fit_season=1945, k=2)
    assert pcs.loc[:1919].isna().all().all() and pcs.loc[1920:].notna().all().all()
    assert abs(np.corrcoef(pcs.loc[1920:, "field_pc1"], series.loc[1920:1959])[0, 1]) > 0.99
    # a stronger, unrelated signal off the equator: the whole map's PC1 follows it, the Nino 3.4
    # box's (5S-5N: the equator's row) follows the planted pattern
    rng = np.random.default_rng(1)
    other = rng.standard_normal(60)
    off = prepared.copy(deep=True)
    off["field"][:, [0, 2], :] += 20 * other[off["time"].dt.year.values - 1900][:, None, None]
    whole = season_field_pcs(off, last_fit_season=1940, k=1)
    box = season_field_pcs(off, last_fit_season=1940, k=1, region="nino34")
    assert abs(np.corrcoef(whole["field_pc1"], other)[0, 1]) > 0.99
    assert abs(np.corrcoef(box["field_pc1"], series.loc[box.index])[0, 1]) > 0.99
    with pytest.raises(ClimateMLError, match="unknown region 'atlantis'"):
        season_field_pcs(prepared, last_fit_season=1940, k=1, region="atlantis")


@settings(max_examples=15, deadline=None)
@given(last=st.integers(1915, 1950), seed=st.integers(0, 100), shift=st.floats(0.5, 5))
def test_season_field_pcs_fit_their_eofs_on_the_fit_seasons_only(last, seed, shift):
    """Property: changing the maps after ``last_fit_season`` leaves every PC of the fit seasons
    as it was (the EOFs and their centring come from those seasons only)."""
    from climate_ml.problems.california_rainfall import season_field_pcs

    prepared, _ = _field(seed=seed)
    changed = prepared.copy(deep=True)
    later = changed["time"].dt.year > last
    changed["field"] = changed["field"].where(~later, changed["field"] * (1 + shift) + shift)
    before = season_field_pcs(prepared, last, k=3).loc[:last]
    after = season_field_pcs(changed, last, k=3).loc[:last]
    pd.testing.assert_frame_equal(before, after)
