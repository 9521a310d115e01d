"""El Nino category probabilities: P(La Nina / neutral / El Nino) from deterministic forecasts,
calibrated on the model's own earlier out-of-sample errors, and their scores."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from climate_ml.backtest import backtest, perturb_after
from climate_ml.cli import main
from climate_ml.ingest import standardise
from climate_ml.probabilities import (
    combined_spread,
    gaussian_category_probabilities,
    member_spread,
    observed_categories,
    past_error_spread,
    rpss,
)
from climate_ml.problems.el_nino import ElNino
from climate_ml.report import probability_tables
from climate_ml.schema import INIT, LEAD, MEMBER
from climate_ml.synthetic import toy_heat_content, toy_ocean
from climate_ml.workflows import probabilistic_outlook, registered_models

LABELS = ("la_nina", "neutral", "el_nino")
PROBLEM = ElNino(leads=(1, 3, 6))


@settings(max_examples=60, deadline=None)
@given(f=st.floats(-4, 4), df=st.floats(0.01, 3), sigma=st.floats(0.05, 3))
def test_probabilities_sum_to_one_and_move_with_the_forecast(f, df, sigma):
    fc = xr.DataArray([[f, f + df]], dims=(INIT, LEAD))
    p = gaussian_category_probabilities(fc, xr.full_like(fc, sigma), (-0.5, 0.5), LABELS)
    np.testing.assert_allclose(p.sum("category").values, 1.0, atol=1e-12)
    assert (p.values >= 0).all()
    # a warmer forecast never lowers P(El Nino) nor raises P(La Nina)
    assert p.sel(category="el_nino").values[0, 1] >= p.sel(category="el_nino").values[0, 0]
    assert p.sel(category="la_nina").values[0, 1] <= p.sel(category="la_nina").values[0, 0]


def test_observed_categories_and_rpss_on_known_values():
    obs = xr.DataArray([[-1.0], [0.0], [1.0]], dims=(INIT, LEAD))
    onehot = observed_categories(obs, (-0.5, 0.5), LABELS)
    np.testing.assert_array_equal(onehot.transpose(INIT, LEAD, "category").values[:, 0], np.eye(3))
    perfect = onehot.copy()
    clim = xr.full_like(onehot, 1 / 3)
    assert float(rpss(perfect, onehot, clim).item()) == pytest.approx(1.0)
    assert float(rpss(clim, onehot, clim).item()) == pytest.approx(0.0)


@settings(max_examples=25, deadline=None)
@given(cut=st.integers(40, 150), seed=st.integers(0, 1000))
def test_the_spread_only_uses_errors_verified_by_the_cut_off(cut, seed):
    """Changing any error whose target was not yet observed at a fold's cut-off never changes
    that fold's spread: no lookahead in the calibration."""
    rng = np.random.default_rng(seed)
    inits = pd.date_range("1990-01", periods=200, freq="MS")
    leads = [1, 6]
    errors = xr.DataArray(rng.normal(0, 1, (200, 2)), dims=(INIT, LEAD), coords={INIT: inits, LEAD: leads})
    verified = PROBLEM.target_end(inits).sel({LEAD: leads})
    cut_off = inits[cut]
    fit_end = xr.DataArray(np.where(inits >= cut_off, cut_off, inits[0]).astype("datetime64[ns]"), dims=INIT,
                           coords={INIT: inits})
    fallback = xr.full_like(errors, 9.0)
    sigma = past_error_spread(errors, verified, fit_end, fallback, min_errors=5)
    changed = errors.where(verified <= np.datetime64(cut_off), errors + 100 * rng.normal(size=errors.shape))
    sigma2 = past_error_spread(changed, verified, fit_end, fallback, min_errors=5)
    rows = inits >= cut_off
    np.testing.assert_allclose(sigma.values[rows], sigma2.values[rows])
    assert (sigma.values[~rows] == 9.0).all()  # nothing verified before the first fold: the fallback


def _spread_by_definition(errors, verified, fit_end, fallback, min_errors):
    """past_error_spread written out cell by cell: for each init and lead, the RMS of the errors
    of that lead whose target was verified by the init's cut-off and whose valid month is within
    one month of the init's valid month; the fallback below ``min_errors`` of them."""
    inits = pd.DatetimeIndex(errors[INIT].values)
    leads = errors[LEAD].values
    out = fallback.values.astype(float).copy()
    for i, cut in enumerate(fit_end.values):
        for j, lead in enumerate(leads):
            month = (inits[i].month - 1 + lead) % 12
            pool = [errors.values[k, j] for k in range(len(inits))
                    if verified.values[k, j] <= cut and np.isfinite(errors.values[k, j])
                    and ((inits[k].month - 1 + lead) % 12 - month) % 12 in (0, 1, 11)]
            if len(pool) >= min_errors:
                out[i, j] = np.sqrt(np.mean(np.square(pool)))
    return out


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), refit=st.sampled_from([1, 5, 12, 30]), min_errors=st.integers(1, 8),
       gaps=st.floats(0, 0.4))
def test_the_spread_is_the_rms_of_the_season_s_verified_errors(seed, refit, min_errors, gaps):
    """The vectorised spread equals its definition, cell by cell, with missing errors and any
    refit interval."""
    rng = np.random.default_rng(seed)
    inits = pd.date_range("1990-01", periods=72, freq="MS")
    leads = [1, 2, 6, 11]
    e = rng.normal(0, 1, (72, 4))
    e[rng.random(e.shape) < gaps] = np.nan
    errors = xr.DataArray(e, dims=(INIT, LEAD), coords={INIT: inits, LEAD: leads})
    verified = xr.DataArray(inits.values[:, None] + pd.to_timedelta(np.array(leads) * 31, "D").values,
                            dims=(INIT, LEAD), coords={INIT: inits, LEAD: leads})
    starts = inits[::refit]
    fit_end = xr.DataArray(starts[np.searchsorted(starts, inits, side="right") - 1].values, dims=INIT,
                           coords={INIT: inits})
    fallback = xr.full_like(errors, -1.0)
    got = past_error_spread(errors, verified, fit_end, fallback, min_errors=min_errors)
    np.testing.assert_allclose(got.values, _spread_by_definition(errors, verified, fit_end, fallback, min_errors),
                               rtol=1e-12)


@settings(max_examples=60, deadline=None)
@given(sigma=st.floats(0.05, 3), width=st.floats(0.0, 3), wider=st.floats(1.0, 3), m=st.integers(2, 12))
def test_members_join_the_error_spread(sigma, width, wider, m):
    """sigma^2 becomes the mean of the error variance and the members' predictive variance
    ((m+1)/m times their variance); wider members never give a sharper forecast; a single
    member adds nothing."""
    offsets = np.linspace(-1, 1, m)
    members = xr.DataArray(0.3 + width * offsets[None, None, :], dims=(INIT, LEAD, MEMBER))
    err = xr.DataArray([[sigma]], dims=(INIT, LEAD))
    got = combined_spread(err, members)
    expected = np.sqrt((sigma**2 + (m + 1) / m * width**2 * offsets.var(ddof=1)) / 2)
    np.testing.assert_allclose(got.values, expected, rtol=1e-12)
    assert float(combined_spread(err, 0.3 + wider * (members - 0.3)).item()) >= float(got.item()) - 1e-12
    np.testing.assert_allclose(combined_spread(err, members, scale=2.0).values,
                               np.sqrt((sigma**2 + (m + 1) / m * (width / 2) ** 2 * offsets.var(ddof=1)) / 2))
    assert combined_spread(err, members.isel({MEMBER: [0]})) is err and member_spread(members.isel({MEMBER: 0})) is None


@pytest.fixture(scope="module")
def toy():
    sst = standardise(toy_ocean(start="1950-01", end="2010-12"), "sst")
    heat = standardise(toy_heat_content(start="1950-01", end="2010-12"), "WWV", units="m")
    return PROBLEM.prepare(sst, {"toy-heat-content": heat})


def test_backtest_scores_the_categories(toy):
    paths = registered_models()
    res = backtest(PROBLEM, {n: paths[n] for n in ("climatology", "damped_persistence", "xro")}, toy,
                   "1985-01", "2008-12", refit_every=48)
    s = {n: res.scores(n) for n in res.forecasts}
    assert abs(s["climatology"]["rpss"]["1"]) < 0.05  # climatology has no probabilistic skill
    assert s["xro"]["rpss"]["6"] > 0.2 and s["xro"]["rpss"]["6"] > s["damped_persistence"]["rpss"]["6"]
    rel = res.extra("xro")["reliability"]["el_nino"]
    assert sum(b["n"] for b in rel) == int(res.obs.notnull().sum())  # every verified (init, lead) in one bin
    probs = PROBLEM.category_probabilities(res, "xro")
    np.testing.assert_allclose(probs.sum("category").values, 1.0, atol=1e-9)
    table = probability_tables(res, [1, 3, 6], [3, 6])  # what benchmarks/real_skill_el_nino.py prints
    row = next(line for line in table.splitlines() if line.startswith("| xro |"))
    assert row.split(" | ")[3] == f"{s['xro']['rpss']['6']:.2f}"
    assert "reliability of P(El Nino) from xro" in table and "reliability of P(La Nina) from xro" in table


def test_a_backtest_with_members_uses_their_spread(toy):
    """A model with members: its category probabilities are the Gaussian with the combined
    spread (past errors and members), members that spread wider give flatter probabilities,
    and the members' mean still sets the centre."""
    paths = registered_models()
    res = backtest(PROBLEM, {"damped_persistence": paths["damped_persistence"]}, toy, "1985-01", "2008-12",
                   refit_every=48)
    fc = res.forecasts["damped_persistence"]
    bare = PROBLEM.category_probabilities(res, "damped_persistence")
    offsets = xr.DataArray(np.linspace(-1, 1, 6), dims=MEMBER)
    obs = res.obs.drop_vars("valid_time", errors="ignore")
    sigma = past_error_spread(fc.drop_vars("valid_time", errors="ignore") - obs, PROBLEM.target_end(fc[INIT].values),
                              res.fit_end, res.context["clim_std"], PROBLEM.min_errors)
    flat = {}
    for width in (0.2, 1.5):
        res.members["damped_persistence"] = fc + width * offsets
        probs = PROBLEM.category_probabilities(res, "damped_persistence")
        s2 = (sigma**2 + 7 / 6 * width**2 * float(offsets.var(ddof=1))) / 2
        direct = gaussian_category_probabilities(fc.drop_vars("valid_time", errors="ignore"), np.sqrt(s2),
                                                 PROBLEM.thresholds, PROBLEM.categories)
        np.testing.assert_allclose(probs.transpose(*direct.dims).values, direct.values, atol=1e-12)
        flat[width] = float(probs.max("category").mean())
    assert flat[1.5] < flat[0.2]  # wider members: less confident
    assert not np.allclose(bare.values, probs.values)  # without members the errors alone set the spread


def test_live_outlook_with_members_uses_their_spread(toy):
    from climate_ml.backtest import issue_forecast
    from climate_ml.model_api import load_model_factory

    path = registered_models()["damped_persistence"]
    init = pd.Timestamp("2005-03-01")
    fc = issue_forecast(PROBLEM, load_model_factory(path), toy, init)
    recent = backtest(PROBLEM, {"damped_persistence": path}, toy.sel(time=slice(None, init)), "1990-01", "1999-12",
                      refit_every=60)
    bare = PROBLEM.outlook(toy, fc, recent, "damped_persistence")
    wide = PROBLEM.outlook(toy, fc + xr.DataArray([-3.0, 0.0, 3.0], dims=MEMBER), recent, "damped_persistence")
    for lead in ("1", "3", "6"):
        s_m2 = 4 / 3 * 9.0  # (m+1)/m x the members' variance
        assert wide["spread"][lead] == pytest.approx(np.sqrt((bare["spread"][lead] ** 2 + s_m2) / 2), abs=2e-3)
        centre = fc.sel({LEAD: int(lead)}).values[0]
        direct = gaussian_category_probabilities(xr.DataArray(centre), xr.DataArray(wide["spread"][lead]),
                                                 PROBLEM.thresholds, PROBLEM.categories)
        for c, p in wide["categories"][lead].items():  # the members' mean in the centre, their spread in sigma
            assert p == pytest.approx(float(direct.sel(category=c)), abs=5e-3)


def test_live_outlook_has_categories_and_ignores_later_data(toy):
    from climate_ml.backtest import issue_forecast
    from climate_ml.model_api import load_model_factory

    path = registered_models()["xro"]
    init = pd.Timestamp("2005-03-01")
    fc = issue_forecast(PROBLEM, load_model_factory(path), toy, init)
    out = probabilistic_outlook(PROBLEM, path, toy, fc)
    assert set(out["categories"]) == {"1", "3", "6"} and out["valid_season"]["6"] == "ASO 2005"
    for p in out["categories"].values():
        assert abs(sum(p.values()) - 1) < 2e-3
    later = perturb_after(toy, init, seed=3)
    fc2 = issue_forecast(PROBLEM, load_model_factory(path), later, init)
    assert probabilistic_outlook(PROBLEM, path, later, fc2)["categories"] == out["categories"]


def test_cli_forecast_prints_enso_probabilities(tmp_path, capsys):
    code = main(["forecast", "el_nino", "models/xro.py", "--init", "2020-06", "--json", "--store", str(tmp_path / "s")])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    row = out["forecast"][5]
    assert row["lead"] == 6 and row["season"] == "NDJ 2020" and set(row["categories"]) == set(LABELS)
    code = main(["forecast", "el_nino", "models/xro.py", "--init", "2020-06", "--store", str(tmp_path / "s")])
    assert code == 0 and "P(La Nina/neutral/El Nino)" in capsys.readouterr().out


def test_outlook_command_prints_the_table_and_draws_the_png(tmp_path, capsys):
    png = tmp_path / "outlook.png"
    code = main(["outlook", "el_nino", "--model", "xro", "--model", "damped_persistence", "--init", "2020-06",
                 "--output", str(png), "--json", "--store", str(tmp_path / "s")])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and set(out["models"]) == {"xro", "damped_persistence"} and out["failed"] == {}
    assert set(out["consensus"]) == {str(k) for k in range(1, 19)}
    for lead, p in out["consensus"].items():  # the mean of the two models' probabilities
        assert abs(sum(p.values()) - 1) < 5e-3
        want = np.mean([out["models"][m]["categories"][lead]["el_nino"] for m in out["models"]])
        assert p["el_nino"] == pytest.approx(want, abs=1e-3)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    code = main(["outlook", "el_nino", "--model", "xro", "--init", "2020-06", "--output", str(png),
                 "--store", str(tmp_path / "s")])
    text = capsys.readouterr().out
    assert code == 0 and "| 6 | 2020-12 | NDJ 2020 |" in text and "P(el_nino)" in text
    code = main(["outlook", "el_nino", "--model", "nobody", "--store", str(tmp_path / "s")])
    assert code == 2 and "unknown model 'nobody'" in capsys.readouterr().err
    # an init outside the data was one failure per model, a PNG of nothing and exit 3
    code = main(["outlook", "el_nino", "--init", "2030-01", "--store", str(tmp_path / "s")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1] == "error: no observations for init 2030-01 (data cover 1950-01..2024-12)", err
    assert not (tmp_path / "s" / "runs").exists()  # the two outlooks above wrote to --output


def test_a_broken_model_is_one_failure_in_the_outlook(tmp_path):
    """The monthly flow issues its outlook through multi_model_outlook: a broken model file is
    one recorded failure, the other models still forecast."""
    from climate_ml.workflows import multi_model_outlook, problem_inputs

    broken = tmp_path / "broken.py"
    broken.write_text("raise ImportError('a broken model file')\n")
    problem = ElNino(leads=(1, 3))
    root = tmp_path / "store"
    name, obs, prepared = problem_inputs(root, problem)
    out = multi_model_outlook(root, problem, {"broken": broken, "xro": registered_models()["xro"]}, obs, prepared, name,
                              "2020-06")
    assert set(out.summaries) == {"xro"} and "import failed" in out.failures["broken"]
    assert set(out.consensus) == {"1", "3"}
    assert "| 3 | 2020-09 | ASO 2020 |" in out.table()
    # the outlook calibrates every model on one shared backtest (here in two processes): the
    # probabilities are those of the model's own calibration backtest, issued alone
    from climate_ml.workflows import issue_with_outlook

    alone, _ = issue_with_outlook(root, problem, registered_models()["xro"], obs, prepared, name, "2020-06")
    spawned = multi_model_outlook(root, problem, {"xro": registered_models()["xro"]}, obs, prepared, name, "2020-06",
                                  n_jobs=2)
    assert alone["categories"] == out.summaries["xro"]["categories"] == spawned.summaries["xro"]["categories"]


def test_outlook_calibrated_on_a_given_backtest_ignores_outcomes_after_the_init(toy):
    """The run calibrates its issued forecasts on its own backtest: outcomes observed after the
    init must not move the probabilities; outcomes known by then must."""
    import dataclasses

    from climate_ml.backtest import issue_forecast
    from climate_ml.model_api import load_model_factory

    path = registered_models()["damped_persistence"]
    res = backtest(PROBLEM, {"damped_persistence": path}, toy, "1985-01", "2008-12", refit_every=48)
    init = pd.Timestamp("2000-06-01")
    fc = issue_forecast(PROBLEM, load_model_factory(path), toy, init)
    out = probabilistic_outlook(PROBLEM, path, toy, fc, recent=res)
    ends = PROBLEM.target_end(res.obs["init_time"].values)
    after = dataclasses.replace(res, obs=res.obs.where(ends <= init, res.obs + 3.0))
    assert probabilistic_outlook(PROBLEM, path, toy, fc, recent=after)["categories"] == out["categories"]
    before = dataclasses.replace(res, obs=res.obs.where(ends > init, res.obs + 3.0))
    assert probabilistic_outlook(PROBLEM, path, toy, fc, recent=before)["categories"] != out["categories"]
