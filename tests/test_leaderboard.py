"""Leaderboard, block bootstrap, blending, imports of external forecasts, regime-shift stress."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from climate_ml.archive import import_forecasts, imported_forecasts, query
from climate_ml.backtest import backtest, fold_starts
from climate_ml.blend import blend_backtest, caruana_weights
from climate_ml.errors import ClimateMLError, QueryError
from climate_ml.ingest import standardise
from climate_ml.leaderboard import (
    assemble,
    format_board,
    leaderboard_table,
    record_backtest,
    score_board,
    yearly_sums,
)
from climate_ml.problems.el_nino import ElNino
from climate_ml.schema import INIT, LEAD
from climate_ml.scores import METRICS, Metric, register_metric
from climate_ml.stress import format_stress, stress_test
from climate_ml.synthetic import toy_ocean
from climate_ml.workflows import MODELS_DIR, verify_forecasts
from conftest import open_archived, tree_digest

PROBLEM = ElNino(leads=(1, 3, 6))
REFS = {n: MODELS_DIR / f"{n}.py" for n in ("persistence", "climatology", "damped_persistence")}


@pytest.fixture(scope="module")
def prepared():
    return PROBLEM.prepare(standardise(toy_ocean(start="1950-01", end="1999-12"), "sst"))


@pytest.fixture(scope="module")
def result(prepared):
    return backtest(PROBLEM, {**REFS, "lightgbm_lagged": MODELS_DIR / "lightgbm_lagged.py"}, prepared,
                    "1980-01", "1998-12", 24)


def test_caruana_prefers_the_accurate_model():
    rng = np.random.default_rng(0)
    y = rng.normal(size=500)
    preds = np.stack([y + rng.normal(0, 0.3, 500), y + rng.normal(0, 1.5, 500), -y])
    w = caruana_weights(preds, y)
    assert w.sum() == pytest.approx(1.0) and w[0] > 0.7 and w[0] > w[1] and w[2] < 0.1


def test_blend_never_uses_targets_observed_after_the_fold(result):
    starts = fold_starts("1980-01", "1998-12", 24)
    base = blend_backtest(PROBLEM, result.forecasts, result.obs, starts)
    changed = result.obs.copy()
    late = pd.DatetimeIndex(changed[INIT].values) >= pd.Timestamp("1990-01-01")
    changed.values[late] = 50.0  # only targets of inits from 1990 on change
    probe = blend_backtest(PROBLEM, result.forecasts, changed, starts)
    # weights for folds starting up to 1990-01 use only targets that ended by then
    early = pd.DatetimeIndex(base.weights["fold"].values) <= pd.Timestamp("1990-01-01")
    np.testing.assert_array_equal(base.weights.values[early], probe.weights.values[early])
    assert not np.array_equal(base.weights.values[~early], probe.weights.values[~early])
    c = base.contributivity()
    assert sum(c.values()) == pytest.approx(1.0, abs=1e-3) and c["lightgbm_lagged"] > c["climatology"]


def test_bootstrap_statistics_match_the_metric_objects(result):
    names = list(result.forecasts)
    F = np.stack([result.forecasts[n].transpose(INIT, LEAD).values for n in names])
    O = result.obs.transpose(INIT, LEAD).values  # noqa: E741
    years = pd.DatetimeIndex(result.obs[INIT].values).year.values
    for metric in ("acc", "rmse", "mae"):
        S, _ = yearly_sums(METRICS[metric], F, O, years)
        got = METRICS[metric].reduce(S.sum(axis=0))
        for i, n in enumerate(names):
            want = METRICS[metric].compute(result.forecasts[n], result.obs).values
            np.testing.assert_allclose(got[i], want, rtol=1e-9, atol=1e-12)


def test_a_metric_added_in_one_place_is_ranked_with_intervals(result, store):
    """One ``register_metric`` call: the backtest scores it and the leaderboard (the function the
    CLI and HTTP call) ranks by it with bootstrap intervals. MSE is RMSE squared on the same
    bootstrap draws: with 1001 resamples the 2.5% and 97.5% quantiles are exact order
    statistics, so its interval is the square of RMSE's."""

    class MSE(Metric):
        def stats(self, f, o):
            return [(f - o) ** 2]

        def reduce(self, sums):
            return sums[..., 1] / sums[..., 0]

    register_metric(MSE("mse", lower_is_better=True, description="mean squared error"))
    try:
        assert set(result.scores("persistence")) >= {"acc", "rmse", "mae", "mse"}
        record_backtest(store, PROBLEM, result, "toy", "abc", "1980-01", "1998-12", 24,
                        {**REFS, "lightgbm_lagged": MODELS_DIR / "lightgbm_lagged.py"})
        mse = leaderboard_table(store, "el_nino", "mse", n_boot=1001)
        rmse = leaderboard_table(store, "el_nino", "rmse", n_boot=1001)
    finally:
        METRICS.pop("mse")
    assert mse["lower_is_better"] is True and [r["model"] for r in mse["rows"]] == [r["model"] for r in rmse["rows"]]
    by_model = {r["model"]: r["leads"] for r in rmse["rows"]}
    for row in mse["rows"]:
        for lead, cell in row["leads"].items():
            want = by_model[row["model"]][lead]
            assert cell["score"] == pytest.approx(want["score"] ** 2, abs=2e-4)
            assert cell["ci"] == pytest.approx([v**2 for v in want["ci"]], abs=2e-4)
            assert cell["ci"][0] < cell["score"] < cell["ci"][1]
    with pytest.raises(ClimateMLError, match="taken"):
        register_metric(METRICS["acc"])


def test_leaderboard_merges_same_work_only(result, prepared, store):
    files = {**REFS, "lightgbm_lagged": MODELS_DIR / "lightgbm_lagged.py"}
    record_backtest(store, PROBLEM, result, "toy", "abc", "1980-01", "1998-12", 24, files)
    other = backtest(PROBLEM, {"persistence": REFS["persistence"], "damped_persistence": REFS["damped_persistence"]},
                     prepared, "1985-01", "1998-12", 24)
    record_backtest(store, PROBLEM, other, "toy", "abc", "1985-01", "1998-12", 24, REFS)
    newest = assemble(store, PROBLEM.name)  # the newest work: only its two models
    assert set(newest.forecasts) == {"persistence", "damped_persistence"}
    keys = {p.name.split("-")[-1] for p in (store / "runs" / "backtests" / "el_nino").iterdir()}
    assert len(keys) == 2
    full_key = next(k for k in keys if k != newest.work_key)
    board = assemble(store, PROBLEM.name, key=full_key)
    assert set(board.forecasts) == {"persistence", "climatology", "damped_persistence", "lightgbm_lagged"}
    table = score_board(board, "acc", n_boot=300)
    rows = {r["model"]: r["leads"] for r in table["rows"]}
    for name in rows:
        lo, hi = rows[name]["6"]["ci"]
        assert lo <= rows[name]["6"]["score"] <= hi
    assert rows["lightgbm_lagged"]["6"]["significantly_better_than_reference"]
    assert not rows["climatology"]["6"]["significantly_better_than_reference"]
    assert table["rows"][0]["model"] == "lightgbm_lagged"
    assert "lead 6 months" in format_board(table, lead=6)


def test_imported_forecasts_are_scored_on_the_same_pairs(result, store, tmp_path):
    files = {**REFS, "lightgbm_lagged": MODELS_DIR / "lightgbm_lagged.py"}
    record_backtest(store, PROBLEM, result, "toy", "abc", "1980-01", "1998-12", 24, files)
    # an external system that forecast only 1990-1994, perfectly
    inits = pd.date_range("1990-01", "1994-12", freq="MS")
    obs = result.obs.sel({INIT: inits})
    rows = [{"init": f"{t:%Y-%m}", "lead": int(k), "ext": float(obs.sel({INIT: t, LEAD: k}))}
            for t in inits for k in PROBLEM.leads]
    pd.DataFrame(rows).to_csv(tmp_path / "ext.csv", index=False)
    _, action, dropped = import_forecasts(store, PROBLEM, tmp_path / "ext.csv", "ext")
    assert action == "created" and dropped == []
    board = assemble(store, PROBLEM.name, imported=imported_forecasts(store, PROBLEM.name))
    table = score_board(board, "rmse", n_boot=200)
    assert table["n_pairs"]["6"] == 60  # every model scored on the 60 inits the external system covers
    rows = {r["model"]: r["leads"] for r in table["rows"]}
    assert rows["ext"]["6"]["score"] == pytest.approx(0.0, abs=1e-6) and rows["ext"]["6"]["leader"]


@pytest.mark.parametrize("content,pattern", [
    ("init,lead,x\n1990-01,1,0.1\n", r"no forecast column 'forecast'"),
    ("lead,forecast\n1,0.1\n", r"missing column 'init'"),
    ("init,lead,forecast\n1990-01,1,0.1\n1990-01,1,0.2\n", r"duplicate forecast for init 1990-01 lead 1"),
    ("init,lead,forecast\n1990-01,1,27.1\n", r"range 27.10..27.10 degC, outside -6.0..6.0: not the el_nino target"),
    ("init,lead,forecast\n1990-01,40,0.1\n", r"none of the leads 40..40 are leads of el_nino"),
    ("init,lead,forecast\nJan 1990,1,0.1\n", r"not YYYY-MM dates"),
    ("init,lead,forecast\n1990-01,1.5,0.1\n", r"'lead' must hold whole months"),
    # was an unexpected error (exit 1): ValueError: could not convert string to float
    ("init,lead,forecast\n1990-01,1,0.1\n1990-01,3,0.2o\n", r"column 'forecast' holds '0.2o' on line 3, not a number"),
])
def test_bad_imports_are_one_line_errors_and_archive_unchanged(store, tmp_path, content, pattern):
    import_forecasts(store, PROBLEM, _good_csv(tmp_path), "good")
    before = tree_digest(store)
    (tmp_path / "bad.csv").write_text(content)
    with pytest.raises(QueryError, match=pattern) as info:
        import_forecasts(store, PROBLEM, tmp_path / "bad.csv", "good")
    assert "\n" not in str(info.value)
    assert tree_digest(store) == before


def _good_csv(tmp_path):
    p = tmp_path / "good.csv"
    p.write_text("init,lead,forecast\n1990-01,1,0.1\n1990-01,3,0.2\n")
    return p


def test_stress_freezes_the_model(prepared):
    specs = {"persistence": REFS["persistence"], "damped_persistence": REFS["damped_persistence"]}
    rep = stress_test(PROBLEM, specs, prepared, "1969-12", "1985-01", "1998-12", refit_every=24)
    p, d = rep["models"]["persistence"], rep["models"]["damped_persistence"]
    assert p["in_regime"]["acc"] == p["out_of_regime"]["acc"]  # nothing to learn, nothing lost
    assert d["in_regime"]["acc"] != d["out_of_regime"]["acc"]  # coefficients frozen in 1969
    assert rep["n_inits"]["all"] == 14 * 12
    assert sum(rep["n_inits"][k] for k in ("el_nino", "la_nina", "neutral")) == rep["n_inits"]["all"]
    assert set(d["in_regime"]["by_target_season"]) == {"DJF", "MAM", "JJA", "SON"}
    assert "damped_persistence" in format_stress(rep, lead=6)
    with pytest.raises(ClimateMLError, match="must be before"):
        stress_test(PROBLEM, specs, prepared, "1990-01", "1985-01", "1998-12")


def cli(*args, store):
    env = {**os.environ, "CLIMATE_ML_STORE": str(store)}
    return subprocess.run([sys.executable, "-m", "climate_ml.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600)


def test_a_test_period_too_short_for_the_bootstrap_claims_no_significance(prepared, store):
    """Inits of one year (1999-07..12) used to make every interval zero-wide, so that any model
    ahead of the reference was 'better with 95% confidence'; and a lead no outcome had verified
    yet (6: its targets lie after the data) crashed the leaderboard (nanargmax of an all-NaN lead)."""
    one_year = backtest(PROBLEM, REFS, prepared, "1999-07", "1999-12", 12)
    record_backtest(store, PROBLEM, one_year, "toy", "abc", "1999-07", "1999-12", 12, REFS)
    table = score_board(assemble(store, PROBLEM.name), "acc", n_boot=200)
    assert table["bootstrap"]["n_years"] == 1 and table["n_pairs"]["1"] > 0 and table["n_pairs"]["6"] == 0
    cells = [r["leads"][lead] for r in table["rows"] for lead in ("1", "3", "6")]
    assert all(c["ci"] == [None, None] and not c["significantly_better_than_reference"] for c in cells)
    assert {r["model"]: r["leads"]["1"]["score"] is not None for r in table["rows"]} == dict.fromkeys(REFS, True)
    assert all(r["leads"]["6"]["score"] is None and not r["leads"]["6"]["leader"] for r in table["rows"])
    text = format_board(table)
    assert "*" not in text and "no intervals: the inits span 1 calendar year, and the block bootstrap needs at least 2" in text
    assert "no intervals" in format_board(table, lead=3) and "no intervals" in format_board(table, lead=6)
    # the same period from 1995: five years, so intervals again; damped persistence beats climatology at lead 1
    five = backtest(PROBLEM, REFS, prepared, "1995-01", "1999-12", 12)
    record_backtest(store, PROBLEM, five, "toy", "abc", "1995-01", "1999-12", 12, REFS)
    table = score_board(assemble(store, PROBLEM.name), "acc", n_boot=200, reference="climatology")
    rows = {r["model"]: r["leads"] for r in table["rows"]}
    assert table["bootstrap"]["n_years"] == 5 and rows["damped_persistence"]["1"]["significantly_better_than_reference"]
    assert "* = better than climatology" in format_board(table)


@pytest.mark.parametrize("damage,why", [
    (lambda d: (d / "record.json").write_text("{bad"), "JSONDecodeError"),
    (lambda d: (d / "record.json").write_text("[]"), "ValueError: not a record"),
    (lambda d: (d / "forecasts.nc").unlink(), "forecasts.nc is missing"),
    (lambda d: (d / "forecasts.nc").write_bytes((d / "forecasts.nc").read_bytes()[:300]), "forecasts.nc: OSError"),
])
def test_a_damaged_record_is_named(result, store, damage, why):
    """A damaged record was a bare JSONDecodeError (exit 1), and one whose forecasts file was lost
    took its models off the board without a word."""
    folder = record_backtest(store, PROBLEM, result, "toy", "abc", "1980-01", "1998-12", 24, REFS)
    damage(folder)
    with pytest.raises(ClimateMLError, match=rf"^the record {folder} is damaged \({why}.*\); delete that folder"):
        score_board(assemble(store, PROBLEM.name), "acc", n_boot=50)


def test_cli_backtest_many_then_leaderboard(tmp_path):
    from climate_ml.synthetic import write_toy_ocean
    store = tmp_path / "store"
    raw = write_toy_ocean(tmp_path / "toy.nc", start="1950-01", end="1995-12")
    assert cli("ingest", "--file", raw, "--variable", "sst", "--name", "toy", store=store).returncode == 0
    p = cli("backtest", "el_nino", "models/template.py", "models/damped_persistence.py", "--dataset", "toy",
            "--test-start", "1985-01", "--test-end", "1994-12", "--refit-every", "60", "--n-jobs", "2", "--json", store=store)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert set(out["models"]) == {"template", "damped_persistence", "blend"}
    assert sum(out["blend_contributivity"].values()) == pytest.approx(1.0, abs=1e-3)
    rec = json.loads((tmp_path / out["record"] / "record.json").read_text())
    assert rec["models"]["template"]["sha256"] and rec["work"]["dataset"] == "toy" and rec["code_version"]
    ev = xr.load_dataset(tmp_path / out["record"] / "evaluation.nc")  # the run's scores as one Dataset
    assert ev.attrs["reference"] == "xro" and set(ev["model"].values.tolist()) >= {"template", "blend", "xro"}
    assert list(ev["group"].values) == ["all", "DJF", "MAM", "JJA", "SON"]  # and by init season
    assert int(ev["score"].sel(group="all", model="template", metric="n", lead=1)) == sum(
        int(ev["score"].sel(group=g, model="template", metric="n", lead=1)) for g in ("DJF", "MAM", "JJA", "SON"))
    ev = ev.sel(group="all")
    for name in ("template", "blend"):
        for lead, value in out["models"][name]["scores"]["acc"].items():
            assert float(ev["score"].sel(model=name, metric="acc", lead=int(lead))) == pytest.approx(value, abs=6e-5)
    lb = cli("leaderboard", "el_nino", "--json", "--n-boot", "200", store=store)
    assert lb.returncode == 0, lb.stderr
    table = json.loads(lb.stdout)
    assert {r["model"] for r in table["rows"]} == {"template", "damped_persistence", "blend", "persistence", "climatology", "xro"}
    assert table["reference"] == "xro"  # the strongest reference by default
    bad = cli("leaderboard", "el_nino", "--score", "brier", store=store)
    assert bad.returncode == 2 and bad.stderr.strip() == ("error: bad --score 'brier' (acc, rmse, mae; "
                                                       "for maps iiee, sie_rmse, binary_accuracy, ice_brier, conc_crps)")
    bad = cli("leaderboard", "el_nino", "--lead", "40", store=store)
    assert bad.returncode == 2 and "lead 40 is not on this leaderboard" in bad.stderr


def test_archive_query_includes_imports(store, tmp_path):
    import_forecasts(store, PROBLEM, _good_csv(tmp_path), "good")
    ds = query(store, "el_nino", model="good")
    assert float(ds.forecast.sel(lead=3).squeeze()) == pytest.approx(0.2)
    archived = open_archived(store, "el_nino", "toy-ocean/good")
    assert set(archived["prov_kind"].values.tolist()) == {"imported"}
    assert len(archived["prov_model_sha256"].values[0]) == 64


def test_ensemble_import_keeps_members_and_scores_the_mean(result, store, tmp_path):
    files = {**REFS, "lightgbm_lagged": MODELS_DIR / "lightgbm_lagged.py"}
    record_backtest(store, PROBLEM, result, "toy", "abc", "1980-01", "1998-12", 24, files)
    inits = pd.date_range("1990-01", "1991-12", freq="MS")
    obs = result.obs.sel({INIT: inits})
    rows = [{"init": f"{t:%Y-%m}", "lead": int(k), "member": m, "forecast": float(obs.sel({INIT: t, LEAD: k})) + d}
            for t in inits for k in PROBLEM.leads for m, d in ((0, -0.5), (1, 0.5))]
    pd.DataFrame(rows).to_csv(tmp_path / "ens.csv", index=False)
    fc, _, _ = import_forecasts(store, PROBLEM, tmp_path / "ens.csv", "ens")
    assert fc.sizes["member"] == 2
    csv = query(store, "el_nino", model="ens", init="1990-01", lead=1)
    from climate_ml.archive import export
    lines = export(csv, "csv").decode().splitlines()
    assert lines[0] == "model,init_time,lead,valid_time,member,forecast" and len(lines) == 3
    table = score_board(assemble(store, PROBLEM.name, imported=imported_forecasts(store, PROBLEM.name)), "rmse", n_boot=200)
    ens = next(r for r in table["rows"] if r["model"] == "ens")
    assert ens["leads"]["3"]["score"] == pytest.approx(0.0, abs=1e-6)  # members -0.5/+0.5 around the truth


def test_leaderboard_requests_are_checked_once_for_every_shell():
    """The CLI and the HTTP service check a leaderboard request in one place
    (``requests.LeaderboardRequest``): the same rules, each error naming the parameter as that
    shell spells it."""
    from climate_ml.errors import ClimateMLError
    from climate_ml.requests import LeaderboardRequest, cli_option

    ok = LeaderboardRequest.checked(problem="arctic_sea_ice", score="conc_crps", dataset="toy-sea-ice", n_boot=5000)
    assert ok == LeaderboardRequest("arctic_sea_ice", "conc_crps", "toy-sea-ice", None, 5000)
    for values, http, cli_text in (
        ({"score": "brier"}, "bad score 'brier'", "bad --score 'brier'"),
        ({"n_boot": 99}, "bad n_boot 99: between 100 and 5000", "bad --n-boot 99: between 100 and 5000"),
        ({"n_boot": 5001}, "bad n_boot 5001", "bad --n-boot 5001"),
        ({"dataset": "../evil"}, "invalid dataset name '../evil'", "invalid --dataset name '../evil'"),
        ({"reference": "/etc/passwd"}, "invalid reference name", "invalid --reference name"),
        ({"problem": "nino34"}, "unknown problem 'nino34'", "unknown problem 'nino34'"),
    ):
        for spell, says in ((None, http), (cli_option, cli_text)):
            with pytest.raises(ClimateMLError) as caught:
                LeaderboardRequest.checked(**({"spell": spell} if spell else {}), **{"problem": "el_nino", **values})
            assert says in str(caught.value) and "\n" not in str(caught.value), str(caught.value)


def test_backtest_requests_are_checked_once_for_the_cli_and_the_flows(tmp_path):
    """``requests.BacktestRequest``: what `climate-ml backtest` and the run flow ask for,
    checked in one place; the CLI's errors name its options."""
    from climate_ml.errors import ClimateMLError
    from climate_ml.requests import BacktestRequest, cli_option

    models = Path(__file__).resolve().parents[1] / "models"
    req = BacktestRequest.checked(problem="el_nino", model_paths=[str(models / "persistence.py")], test_start="1990-01",
                                  test_end="1999-12", predictors=["kaplan-local"])
    assert req.test_start == pd.Timestamp("1990-01-01") and req.predictors == ("kaplan-local",) and not req.fields
    maps = BacktestRequest.checked(problem="arctic_sea_ice", model_paths=[models / "fields" / "climatology.py"],
                                   archive=True, replace=True)
    assert maps.fields
    for values, says in (
        ({"test_start": "1990-13"}, "bad --test-start '1990-13': expected YYYY-MM"),
        ({"test_end": "1980-01"}, "bad --test-end 1980-01: before --test-start 1990-01"),
        ({"refit_every": 0}, "bad --refit-every 0: must be at least 1"),
        ({"n_jobs": 0}, "bad --n-jobs 0: must be at least 1"),
        ({"time_limit": -5.0}, "bad --time-limit -5.0: must be positive"),
        ({"dataset": "../evil"}, "invalid --dataset name '../evil'"),
        ({"predictors": ["/abs/path"]}, "invalid --predictor-dataset name '/abs/path'"),
        ({"replace": True}, "--replace is for field models"),
        ({"model_paths": [tmp_path / "missing.py"]}, "missing.py"),
        ({"model_paths": [models / "fields" / "climatology.py"]}, "not el_nino"),
    ):
        with pytest.raises(ClimateMLError) as caught:
            BacktestRequest.checked(cli_option, **{"problem": "el_nino", "model_paths": [models / "persistence.py"],
                                                   **values})
        assert says in str(caught.value) and "\n" not in str(caught.value), str(caught.value)


def test_archive_queries_are_checked_once_for_the_cli_and_http(tmp_path):
    """``requests.ArchiveQuery``: `climate-ml archive query` and HTTP /forecasts check a query in
    one place, before the store is touched, each error naming the parameter as that shell spells
    it (a bad ``valid`` is named as such, not as an init)."""
    from climate_ml.errors import ClimateMLError
    from climate_ml.requests import ArchiveQuery, cli_option

    ok = ArchiveQuery.checked(problem="el_nino", init="2020:2021", lead="1,3", valid="2021-02", box="nino34",
                              format="netcdf")
    assert ok.lead == "1,3" and ok.format == "netcdf"
    for values, http, cli_text in (
        ({"init": "2020-13"}, "bad init '2020-13'", "bad --init '2020-13'"),
        ({"valid": "2021-05:2021-01"}, "bad valid '2021-05:2021-01': end before start",
         "bad --valid '2021-05:2021-01': end before start"),
        ({"lead": "0"}, "bad lead 0", "bad --lead 0"),
        ({"lead": "six"}, "bad lead 'six'", "bad --lead 'six'"),
        ({"box": "north"}, "bad box 'north'", "bad --box 'north'"),
        ({"format": "xml"}, "bad format 'xml'", "bad --format 'xml'"),
        ({"model": "../evil"}, "invalid model name '../evil'", "invalid --model name '../evil'"),
        ({"dataset": "/etc"}, "invalid dataset name '/etc'", "invalid --dataset name '/etc'"),
        ({"problem": "nino34"}, "unknown problem 'nino34'", "unknown problem 'nino34'"),
    ):
        for spell, says in ((None, http), (cli_option, cli_text)):
            with pytest.raises(ClimateMLError) as caught:
                ArchiveQuery.checked(**({"spell": spell} if spell else {}), **{"problem": "el_nino", **values})
            assert says in str(caught.value) and "\n" not in str(caught.value), str(caught.value)
    with pytest.raises(ClimateMLError, match="no forecasts archived for problem 'el_nino'"):
        ok.export(tmp_path / "store")  # a good query of an empty store: a one-line answer, not a crash


def test_forecast_outlook_and_verify_requests_are_checked_once(tmp_path):
    """``ForecastRequest``, ``OutlookRequest`` and ``VerifyRequest``: `climate-ml forecast`,
    `outlook`, `verify` and the flows check their requests in one place, before any data work,
    each error one line naming the parameter as that shell spells it."""
    from climate_ml.errors import ClimateMLError
    from climate_ml.requests import ForecastRequest, OutlookRequest, VerifyRequest, cli_option

    root = Path(__file__).resolve().parents[1]
    model = root / "models" / "persistence.py"
    one = ForecastRequest.checked(problem="el_nino", model_paths=[model], init="2020-05")
    assert one.init == pd.Timestamp("2020-05-01") and one.init_end is None and not one.fields
    span = ForecastRequest.checked(problem="el_nino", model_paths=[model], init="2019-01:2020-12", refit_every=6)
    assert (span.init, span.init_end) == (pd.Timestamp("2019-01-01"), pd.Timestamp("2020-12-01"))
    ice_maps = root / "models" / "fields" / "damped_anomaly_persistence.py"
    for values, plain, cli_text in (
        ({"init": "2020-13"}, "bad init '2020-13': expected YYYY-MM", "bad --init '2020-13'"),
        ({"init": "2020-05:2020-01"}, "bad init '2020-05:2020-01': end before start",
         "bad --init '2020-05:2020-01': end before start"),
        ({"init": "2020-01:2020-02:2020-03"}, "bad init '2020-01:2020-02:2020-03'", "bad --init '2020-01:2020-02"),
        ({"init": None}, "missing init", "missing --init"),
        ({"refit_every": 0}, "bad refit_every 0: must be at least 1", "bad --refit-every 0"),
        ({"dataset": "../evil"}, "invalid dataset name '../evil'", "invalid --dataset name '../evil'"),
        ({"predictors": ["/etc/passwd"]}, "invalid predictors name '/etc/passwd'",
         "invalid --predictor-dataset name '/etc/passwd'"),
        ({"model_paths": [tmp_path / "nope.py"]}, "nope.py", "nope.py"),
        ({"problem": "arctic_sea_ice", "model_paths": [ice_maps], "init": "2020-01:2020-06"},
         "field models forecast one init at a time (init YYYY-MM)", "one init at a time (--init YYYY-MM)"),
    ):
        for spell, says in ((None, plain), (cli_option, cli_text)):
            with pytest.raises(ClimateMLError) as caught:
                ForecastRequest.checked(**({"spell": spell} if spell else {}),
                                        **{"problem": "el_nino", "model_paths": [model], "init": "2020-01", **values})
            assert says in str(caught.value) and "\n" not in str(caught.value), str(caught.value)
    assert ForecastRequest.checked(problem="arctic_sea_ice", model_paths=[ice_maps], init="2020-01").fields

    assert set(OutlookRequest.checked(problem="el_nino").model_paths()) >= {"persistence", "xro", "convlstm"}
    assert OutlookRequest.checked(problem="el_nino", models=["xro"], init="2024-05").init == pd.Timestamp("2024-05-01")
    for values, says in (({"models": ["nobody"]}, "unknown model 'nobody' for el_nino (models: "),
                         ({"init": "May"}, "bad init 'May'"), ({"dataset": "a/b"}, "invalid dataset name 'a/b'"),
                         ({"problem": "snow"}, "unknown problem 'snow'")):
        with pytest.raises(ClimateMLError) as caught:
            OutlookRequest.checked(**{"problem": "el_nino", **values})
        assert says in str(caught.value) and "\n" not in str(caught.value), str(caught.value)
    assert VerifyRequest.checked(problem="el_nino", dataset="toy").dataset == "toy"
    with pytest.raises(ClimateMLError, match=r"^invalid --dataset name '\.\.'"):
        VerifyRequest.checked(cli_option, problem="el_nino", dataset="..")
    with pytest.raises(ClimateMLError, match="no forecasts archived for el_nino on toy-ocean"):
        verify_forecasts(tmp_path / "store", VerifyRequest.checked(problem="el_nino"))  # nothing to verify


def test_field_records_of_another_scoring_version_are_never_ranked_together(tmp_path, monkeypatch):
    """The field-score definition is part of a field backtest's work: a record scored by an older
    definition (another ``FIELD_SCORING``) has another work key, so the leaderboard of the newest
    record never mixes its scores with the old ones."""
    import climate_ml.leaderboard as lb
    from climate_ml.sea_ice_fields import FIELD_SCORES, FIELD_SCORING

    inits = pd.date_range("2010-01", periods=4, freq="MS")

    def scores(method, value):
        return xr.Dataset({s: (("method", INIT, LEAD), np.full((1, 4, 2), value)) for s in FIELD_SCORES},
                          coords={"method": [method], INIT: inits, LEAD: [1, 2]}, attrs={"failures": "{}"})

    args = ("arctic_sea_ice",)
    work = ("toy-sea-ice", "abc", "2010-01", "2010-04", 12)
    monkeypatch.setattr(lb, "FIELD_SCORING", FIELD_SCORING - 1)
    old = lb.record_field_backtest(tmp_path, *args, scores("damped_anomaly_persistence", 0.5), *work,
                                   {"damped_anomaly_persistence": None})
    monkeypatch.setattr(lb, "FIELD_SCORING", FIELD_SCORING)
    new = lb.record_field_backtest(tmp_path, *args, scores("climatology", 0.7), *work, {"climatology": None})
    old_rec, new_rec = (json.loads((d / "record.json").read_text()) for d in (old, new))
    assert new_rec["work"]["field_scoring"] == FIELD_SCORING and old_rec["work"]["field_scoring"] == FIELD_SCORING - 1
    assert old_rec["work_key"] != new_rec["work_key"]
    board = lb.assemble_fields(tmp_path, "arctic_sea_ice")
    assert board.work_key == new_rec["work_key"] and list(board.scores) == ["climatology"]
    assert lb.assemble_fields(tmp_path, "arctic_sea_ice", key=old_rec["work_key"]).scores.keys() == {
        "damped_anomaly_persistence"}


def test_code_version_says_when_the_work_tree_differs_from_its_commit(tmp_path):
    """Records and archived forecasts carry ``code_version``: the commit, and ``.dirty`` when a
    tracked file was changed after it (the code that ran is then not the commit's)."""
    from climate_ml import __version__, code_version, git_version

    assert git_version(tmp_path) == __version__  # not a git work tree
    git = ["git", "-C", str(tmp_path), "-c", "user.email=t@example.org", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "model.py").write_text("A = 1\n")
    subprocess.run([*git, "add", "model.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    sha = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert git_version(tmp_path) == f"{__version__}+{sha}"
    (tmp_path / "notes.txt").write_text("untracked files do not count\n")
    assert git_version(tmp_path) == f"{__version__}+{sha}"
    (tmp_path / "model.py").write_text("A = 2\n")
    assert git_version(tmp_path) == f"{__version__}+{sha}.dirty"
    assert code_version().startswith(__version__)
