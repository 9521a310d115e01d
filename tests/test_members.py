"""Ensemble members through the index contract: the backtest scores the member mean and the
members (CRPS, spread/skill, rank histogram by xskillscore), the lookahead guard probes the
mean, and the archive keeps the members of every hindcast."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from climate_ml.archive import query, to_records
from climate_ml.backtest import backtest, guard_backtest
from climate_ml.boosting import LightGBMLagged
from climate_ml.errors import ClimateMLError
from climate_ml.ingest import standardise
from climate_ml.model_api import centred_members, clipped_spread_scale, member_offsets
from climate_ml.problems.el_nino import ElNino
from climate_ml.scores import ensemble_scores, rank_histogram
from climate_ml.synthetic import toy_ocean
from climate_ml.workflows import MODELS_DIR, archive_backtest

PROBLEM = ElNino(leads=(1, 3, 6))

ENSEMBLE = '''
import numpy as np
import xarray as xr

PROBLEMS = ("el_nino",)


class Ensemble:
    """Persistence of the latest anomaly, with members spread by the training error at each lead."""

    def __init__(self, n_members={n}):
        self.n_members = n_members

    def fit(self, X, y):
        err = y - X["persistence"]
        self.sigma_ = err.std("init_time").values
        return self

    def predict(self, X):
        base = X["persistence"].values[:, None]
        z = np.linspace(-1.5, 1.5, self.n_members) * {scale}
        out = base[:, :, None] + self.sigma_[None, :, None] * z[None, None, :]
        out = np.broadcast_to(out, (X.sizes["init_time"], len(self.sigma_), self.n_members))
        return xr.DataArray(out, dims=("init_time", "lead", "member"),
                            coords={{"init_time": X["init_time"].values, "lead": [1, 3, 6]}})


def make_model():
    return Ensemble()
'''


@pytest.fixture(scope="module")
def prepared():
    return PROBLEM.prepare(standardise(toy_ocean(start="1960-01", end="1999-12"), "sst"))


def _model(tmp_path: Path, name: str, scale: float, n: int = 9) -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(ENSEMBLE.format(n=n, scale=scale))
    return path


def test_member_models_are_scored_on_the_mean_and_the_members(prepared, tmp_path):
    wide, narrow = _model(tmp_path, "wide", 1.0), _model(tmp_path, "narrow", 0.1)
    res = backtest(PROBLEM, {"wide": wide, "narrow": narrow, "persistence": MODELS_DIR / "persistence.py"},
                   prepared, "1985-01", "1998-12", refit_every=60)
    assert res.failures == {}
    assert set(res.members) == {"wide", "narrow"} and res.members["wide"].sizes["member"] == 9
    assert "member" not in res.forecasts["wide"].dims
    xr.testing.assert_allclose(res.forecasts["wide"], res.members["wide"].mean("member"))
    wide_s, narrow_s, pers_s = res.scores("wide"), res.scores("narrow"), res.scores("persistence")
    # the two ensembles share their mean (persistence), so the deterministic scores agree
    assert wide_s["rmse"] == narrow_s["rmse"] == pers_s["rmse"]
    assert "crps" not in pers_s
    for lead in ("3", "6"):
        # members spread like the errors are near calibrated; a tenth of that is over-confident
        assert 0.6 < wide_s["spread_skill"][lead] < 1.4, wide_s["spread_skill"]
        assert narrow_s["spread_skill"][lead] < 0.2
        assert wide_s["crps"][lead] < narrow_s["crps"][lead] < narrow_s["rmse"][lead]
    hist = res.extra("narrow")["rank_histogram"]
    assert len(hist) == 10 and sum(hist) == int(res.obs.notnull().sum())
    assert hist[0] + hist[-1] > 0.5 * sum(hist)  # U-shaped: the observation falls outside


def test_evaluation_is_one_dataset_of_every_model_metric_and_lead(prepared, tmp_path):
    """``BacktestResult.evaluation``: the numbers of ``scores()`` as (model, metric, lead), NaN
    where a metric does not apply, and skill against a reference from the same pairs."""
    wide = _model(tmp_path, "wide", 1.0)
    res = backtest(PROBLEM, {"wide": wide, "persistence": MODELS_DIR / "persistence.py",
                             "climatology": MODELS_DIR / "climatology.py"}, prepared, "1985-01", "1998-12", refit_every=60)
    ev = res.evaluation(reference="climatology")
    assert ev["score"].dims == ("model", "metric", "lead") and list(ev["lead"].values) == list(PROBLEM.leads)
    assert {"acc", "rmse", "mae", "n", "crps", "spread_skill"} <= set(ev["metric"].values.tolist())
    better = dict(zip(ev["metric"].values.tolist(), ev["better"].values.tolist(), strict=True))
    assert better["rmse"] == better["crps"] == "lower" and better["acc"] == "higher" and better["spread_skill"] == ""
    for name in res.forecasts:
        for metric, per_lead in res.scores(name).items():
            for lead, value in per_lead.items():
                got = float(ev["score"].sel(model=name, metric=metric, lead=int(lead)))
                assert (value is None and np.isnan(got)) or got == pytest.approx(value, abs=6e-5), (name, metric, lead)
    assert bool(ev["score"].sel(model="persistence", metric="crps").isnull().all())  # a single forecast
    for lead, value in res.skill("persistence", "climatology", "rmse").items():
        assert float(ev["skill"].sel(model="persistence", metric="rmse", lead=int(lead))) == pytest.approx(value, abs=6e-5)
    assert float(abs(ev["skill"].sel(model="climatology", metric="rmse")).max()) < 1e-12  # no skill over itself
    assert bool(ev["skill"].sel(metric="crps").isnull().all())  # skill only of the registered metrics
    path = tmp_path / "scores.nc"
    ev.to_netcdf(path)
    xr.testing.assert_identical(xr.load_dataset(path), ev)
    # grouped by the init's season: "all" is the ungrouped evaluation, each season is the same
    # evaluation of that season's inits alone
    by = res.evaluation(reference="climatology", by="season")
    assert list(by["group"].values) == ["all", "DJF", "MAM", "JJA", "SON"] and by.attrs["reference"] == "climatology"
    assert by["score"].dims == ("group", "model", "metric", "lead")
    xr.testing.assert_identical(by.sel(group="all", drop=True).drop_vars("group_by"), ev)
    spring = pd.DatetimeIndex(res.obs["init_time"].values)
    spring = spring[spring.month.isin([3, 4, 5])]
    alone = res.subset(spring)
    for name in res.forecasts:
        for metric, per_lead in alone.scores(name).items():
            for lead, value in per_lead.items():
                got = float(by["score"].sel(group="MAM", model=name, metric=metric, lead=int(lead)))
                assert (value is None and np.isnan(got)) or got == pytest.approx(value, abs=6e-5), (name, metric, lead)
    assert int(by["score"].sel(group="MAM", model="wide", metric="n", lead=1)) == len(spring)
    assert not np.allclose(by["score"].sel(group="MAM", metric="acc"), by["score"].sel(group="SON", metric="acc"))
    months = res.evaluation(by="month")
    assert list(months["group"].values)[:3] == ["all", "Jan", "Feb"] and months.sizes["group"] == 13
    with pytest.raises(ClimateMLError, match="bad grouping 'decade'"):
        res.evaluation(by="decade")


def test_members_of_unequal_size_fail_their_model_with_the_reason(prepared, tmp_path):
    """A model that returns 9 members in one fold and 5 in the next is a FAILED row that says so
    (its folds cannot be put together); the others still score."""
    path = tmp_path / "fickle.py"
    path.write_text(ENSEMBLE.format(n=9, scale=1.0).replace(
        "        return self\n", "        self.n_members = 9 if int(X['init_time'].dt.year[-1]) < 1987 else 5\n"
                                 "        return self\n", 1))
    res = backtest(PROBLEM, {"fickle": path, "persistence": MODELS_DIR / "persistence.py"}, prepared,
                   "1985-01", "1994-12", refit_every=60)
    assert set(res.forecasts) == {"persistence"}
    assert res.failures["fickle"].startswith("fickle: members of unequal size: 9 from the fit up to 1985-01, "
                                             "5 from the fit up to 1990-01")


def test_guard_probes_member_models(prepared, tmp_path):
    path = _model(tmp_path, "wide", 1.0)
    assert guard_backtest(PROBLEM, {"wide": path}, prepared, "1990-01", "1994-12", 60) == {}


def test_members_are_archived_and_queried(prepared, tmp_path):
    path = _model(tmp_path, "wide", 1.0, n=3)
    res = backtest(PROBLEM, {"wide": path}, prepared, "1995-01", "1996-12", refit_every=12)
    obs = xr.Dataset({"sst": ("time", np.zeros(3))}, coords={"time": pd.date_range("1995-01", periods=3, freq="MS")})
    root = tmp_path / "store"
    actions = archive_backtest(root, PROBLEM, res, obs, "toy", {"wide": path})
    assert actions == {"wide": "created"}
    ds = query(root, "el_nino", "wide", init="1996-03", dataset="toy")
    assert ds.sizes["member"] == 3
    np.testing.assert_allclose(ds["forecast"].sel(lead=3).values.ravel(),
                               res.members["wide"].sel(init_time="1996-03", lead=3).values.ravel())
    rows = to_records(ds)
    assert len(rows) == 3 * 3 and set(rows["member"]) == {0, 1, 2}


def test_ensemble_scores_by_hand():
    """Two members at 0 and 2, observation 1: CRPS = E|X - y| - E|X - X'|/2 = 1 - 0.5 = 0.5;
    spread sqrt(3/2 * 2) against an error of 0."""
    members = xr.DataArray([[[0.0, 2.0]], [[1.0, 3.0]]], dims=("init_time", "lead", "member"),
                           coords={"init_time": pd.date_range("2000-01", periods=2, freq="MS"), "lead": [1]})
    obs = xr.DataArray([[1.0], [np.nan]], dims=("init_time", "lead"), coords={"init_time": members["init_time"], "lead": [1]})
    s = ensemble_scores(members, obs)
    assert float(s["crps"].sel(lead=1)) == pytest.approx(0.5)
    assert np.isinf(float(s["spread_skill"].sel(lead=1)))  # perfect mean, so no error to compare
    assert rank_histogram(members, obs) == [0, 1, 0]


def test_rank_histogram_breaks_ties_the_same_way_every_time():
    """Observations tied with members (dry months: members and observation at 0 mm) take a
    random rank among the tied ones, so that ties spread evenly; the same forecasts must still
    give the same histogram whatever NumPy's global generator did before, and leave it as it was."""
    rng = np.random.default_rng(1)
    inits = pd.date_range("2000-01", periods=200, freq="MS")
    wet = rng.gamma(2.0, 20.0, size=(200, 2, 5))
    members = xr.DataArray(np.where(rng.random((200, 2, 1)) < 0.4, 0.0, wet), dims=("init_time", "lead", "member"),
                           coords={"init_time": inits, "lead": [1, 2]})
    obs = xr.DataArray(np.where(members.isel(member=0) == 0, 0.0, rng.gamma(2.0, 20.0, size=(200, 2))),
                       dims=("init_time", "lead"), coords={"init_time": inits, "lead": [1, 2]})
    hists = []
    for seed in (1, 2, 3):
        np.random.seed(seed)
        before = np.random.get_state()[1].copy()
        hists.append(rank_histogram(members, obs))
        assert np.array_equal(np.random.get_state()[1], before)  # the caller's generator is untouched
    assert hists[0] == hists[1] == hists[2] and sum(hists[0]) == 400
    tied = int((obs == 0).sum())
    assert tied > 100 and min(hists[0]) > 0  # the ~160 tied cases are spread over all six ranks


def test_lightgbm_members_keep_the_mean_forecast_and_add_a_learned_spread(prepared):
    """The LightGBM ensemble's mean is lightgbm_lagged's forecast; its spread (from quantile
    boosters) varies by init, is never negative, and is scored by CRPS and spread/skill."""
    files = {n: MODELS_DIR / f"{n}.py" for n in ("lightgbm_lagged", "lightgbm_members")}
    res = backtest(PROBLEM, files, prepared, "1990-01", "1999-06", 60)
    assert res.failures == {}
    members = res.members["lightgbm_members"]
    assert members.sizes["member"] == 10
    np.testing.assert_allclose(res.forecasts["lightgbm_members"].values, res.forecasts["lightgbm_lagged"].values,
                               rtol=0, atol=1e-12)
    spread = members.std("member")
    assert float(spread.min()) >= 0 and float(spread.std("init_time").mean()) > 0  # not one constant spread
    np.testing.assert_allclose(members.mean("member").values, res.forecasts["lightgbm_lagged"].values, atol=1e-12)
    scores = res.scores("lightgbm_members")
    for lead in ("1", "3", "6"):
        assert 0 < scores["crps"][lead] < scores["mae"][lead]  # a spread that helps: CRPS below the MAE of the mean
        assert 0.2 < scores["spread_skill"][lead] < 3


def test_interleaved_offsets_give_every_member_its_own_level():
    """Dealt out in turn, the normal quantiles give m distinct levels, symmetric as a whole, with
    every network holding one member in each of its ``draws`` slices of the distribution; all
    offsets together sum to zero with variance m/(m+1). The default keeps one set of ``draws``
    levels for every network, each network's set summing to zero."""
    offsets = member_offsets(3, 3, interleave=True)
    levels = np.sort(offsets.ravel())
    assert offsets.shape == (3, 3) and np.diff(levels).min() > 0.2
    np.testing.assert_allclose(levels, -levels[::-1], atol=1e-12)
    assert abs(offsets.sum()) < 1e-12 and offsets.ravel().var(ddof=1) == pytest.approx(9 / 10)
    ranks = np.argsort(np.argsort(offsets.ravel())).reshape(3, 3)
    assert (ranks // 3 == np.arange(3)[None, :]).all()
    same = member_offsets(3, 3)
    assert (same == same[0]).all() and np.allclose(same.sum(axis=1), 0)
    assert (member_offsets(2, 1, interleave=True) == 0).all()


@settings(max_examples=200, deadline=None)
@given(centre=st.lists(st.floats(-20, 300), min_size=1, max_size=6),
       spread=st.lists(st.floats(0, 200), min_size=1, max_size=6), draws=st.integers(2, 9))
def test_members_with_a_lower_bound_stay_above_it_and_keep_their_mean(centre, spread, draws):
    """Rainfall-like members (a lower bound of 0, none above): no member below 0, the members'
    mean is the forecast (or 0 where the forecast itself is negative), where no member reaches
    0 they are the forecast plus the offsets, and no forecast depends on another."""
    n = min(len(centre), len(spread))
    c = np.array(centre[:n])[:, None]
    offsets = member_offsets(1, draws)[0][None, :] * np.array(spread[:n])[:, None]
    members = centred_members(np.maximum(c, 0.0), offsets, 0.0, np.inf, axis=-1)
    assert members.shape == (n, draws) and members.min() >= 0
    np.testing.assert_allclose(members.mean(axis=-1), np.maximum(c[:, 0], 0.0), atol=1e-6)
    free = (c + offsets).min(axis=-1) >= 0
    np.testing.assert_allclose(members[free], (c + offsets)[free])
    # each forecast on its own gives the same members, bit for bit: no forecast depends on the
    # others in the array (the lookahead guard caught one whose bracket did)
    alone = [centred_members(np.maximum(c[i:i + 1], 0.0), offsets[i:i + 1], 0.0, np.inf, axis=-1) for i in range(n)]
    assert np.array_equal(np.concatenate(alone), members)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(5, 300), low=st.floats(0.0, 0.9), width=st.floats(0.05, 1.0),
       sd=st.floats(0.01, 0.4), wider=st.floats(0.3, 2.5), draws=st.integers(2, 5))
def test_spread_scale_makes_clipped_members_spread_as_far_as_the_forecasts_erred(seed, n, low, width, sd, wider,
                                                                                draws):
    """Concentration-like members (0-1): the factor that ``clipped_spread_scale`` returns widens
    the members until their weighted variance, clipped as the members are, is the forecasts'
    squared error, to its tolerance, unless it is held at its cap; where no member is clipped it
    is the plain ratio sqrt(error2 / sum(w sigma^2)); and a larger error never gets a smaller factor."""
    rng = np.random.default_rng(seed)
    centres = np.clip(rng.uniform(low, low + width, n), 1e-3, 1 - 1e-3)
    sigmas, weights = rng.uniform(0.2, 1.0, n) * sd, rng.uniform(0.5, 1.5, n)
    offsets = member_offsets(3, draws).ravel()
    m = offsets.size
    error2 = float(weights @ (wider * sigmas) ** 2)
    s = clipped_spread_scale(centres, sigmas, offsets, weights, error2, 0.0, 1.0)
    plain = np.sqrt(error2 / float(weights @ sigmas ** 2))
    members = centred_members(centres[None], offsets[:, None] * (s * sigmas)[None], 0.0, 1.0, axis=0)
    variance = float(weights @ members.var(axis=0, ddof=1)) * (m + 1) / m
    assert plain * (1 - 1e-9) <= s <= 3 * plain * (1 + 1e-9)  # clipping only ever narrows the members
    if s < 3 * plain * (1 - 1e-9):
        assert variance == pytest.approx(error2, rel=2e-3)
    unclipped = (centres[None] + offsets[:, None] * (s * sigmas)[None])
    if unclipped.min() >= 0 and unclipped.max() <= 1:
        assert s == pytest.approx(plain, rel=1e-9)
    assert clipped_spread_scale(centres, sigmas, offsets, weights, 1.5 * error2, 0.0, 1.0) >= s * (1 - 1e-9)
    with pytest.raises(ValueError, match="at least two members, some spread and some error"):
        clipped_spread_scale(centres, sigmas, offsets, weights, 0.0, 0.0, 1.0)


def test_further_lightgbm_parameters_reach_every_lead_s_booster():
    """``LightGBMLagged(**params)`` passes parameters it does not name on to LightGBM (the
    settings of benchmarks/lightgbm_settings.py): each lead's booster gets them, the named
    defaults stay, and the forecast changes with them."""
    rng = np.random.default_rng(0)
    inits = pd.date_range("1950-01", periods=240, freq="MS")
    x = rng.normal(size=(240, 3))
    X = xr.Dataset({"a": (("init_time", "k"), x)}, coords={"init_time": inits, "k": [0, 1, 2]})
    y = xr.DataArray(np.column_stack([x[:, 0] + 0.1 * rng.normal(size=240) for _ in range(3)]),
                     dims=("init_time", "lead"), coords={"init_time": inits, "lead": [1, 2, 3]})
    plain = LightGBMLagged(n_estimators=20).fit(X, y)
    extra = LightGBMLagged(n_estimators=20, extra_trees=True, max_bin=15).fit(X, y)
    assert all(b.get_params()["extra_trees"] is True and b.get_params()["max_bin"] == 15 for b in extra.boosters_)
    assert all(b.get_params()["num_leaves"] == 8 and "extra_trees" not in b.get_params() for b in plain.boosters_)
    assert not np.allclose(plain.predict(X).values, extra.predict(X).values)


def test_pooled_leads_share_a_booster_that_tells_the_leads_apart():
    """``LightGBMLagged(lead_group=k)`` fits one booster per run of k adjacent leads on their
    stacked rows, with the lead as one more predictor: three boosters for five leads in pairs,
    one for any k of at least the number of leads, and each lead is forecast by its own run's
    booster, which learns a relation that changes sign from one lead to the next."""
    rng = np.random.default_rng(1)
    n = 400
    inits = pd.date_range("1950-01", periods=n, freq="MS")
    x = rng.normal(size=(n, 2))
    X = xr.Dataset({"a": (("init_time", "k"), x)}, coords={"init_time": inits, "k": [0, 1]})
    sign = np.array([1, -1, 1, -1, 1])
    target = x[:, :1] * sign[None] + 0.05 * rng.normal(size=(n, 5))
    target[:30, 3] = np.nan  # a lead with fewer verified rows
    y = xr.DataArray(target, dims=("init_time", "lead"), coords={"init_time": inits, "lead": [1, 2, 3, 4, 5]})
    per_lead = LightGBMLagged(n_estimators=60, colsample_bytree=1.0).fit(X, y)
    assert len(per_lead.boosters_) == 5 and all(b.n_features_in_ == 2 for b in per_lead.boosters_)
    pairs = LightGBMLagged(n_estimators=60, colsample_bytree=1.0, lead_group=2).fit(X, y)
    assert len(pairs.boosters_) == 3 and all(b.n_features_in_ == 3 for b in pairs.boosters_)
    assert len(LightGBMLagged(n_estimators=5, lead_group=18).fit(X, y).boosters_) == 1
    pred = pairs.predict(X)
    for j, s in enumerate(sign):
        assert s * np.corrcoef(pred.values[:, j], x[:, 0])[0, 1] > 0.9
    assert not np.allclose(pred.values, per_lead.predict(X).values)
    with pytest.raises(ValueError, match="lead_group must be at least 1"):
        LightGBMLagged(lead_group=0)
