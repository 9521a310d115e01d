"""Field models: the map contract, members and the probability of ice, bad input, and the
sea-ice ConvLSTM learning a planted signal that per-cell references cannot see."""

import json
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from climate_ml.backtest import backtest
from climate_ml.cli import main
from climate_ml.model_api import load_model_factory
from climate_ml.problems import get_problem
from climate_ml.sea_ice_fields import (
    FIELD_SCORES,
    THRESHOLD,
    FieldRows,
    MapSpool,
    ScoredMaps,
    field_backtest,
    field_scores,
    field_unit,
    reference_models,
    summarise_field_scores,
)
from climate_ml.workflows import registered_models

ROOT = Path(__file__).resolve().parents[1]
CONVLSTM = ROOT / "models" / "convlstm_sea_ice.py"

PERSISTENCE_MODEL = '''
import numpy as np
import xarray as xr

TARGET = "sea_ice_concentration"
SEEN = []
LAZY = []  # per fit: were the maps handed over lazily (Dask over the store's Zarr)?


class Persist:
    def fit(self, conc, cell_area, leads):
        LAZY.append(conc.chunks is not None)
        self.leads = list(leads)
        return self

    def predict(self, conc):
        SEEN.append(conc["time"].values[-1])
        last = conc.isel(time=-1).drop_vars("time")
        members = [np.clip(last + d, 0, 1).where(last.notnull()) for d in (-0.1, 0.0, 0.1)]
        out = xr.concat(members, dim="member").expand_dims(lead=self.leads)
        return out{suffix}


def make_model():
    return Persist()
'''


@pytest.fixture(scope="module")
def _toy_sea_ice_obs(tmp_path_factory) -> Path:
    from climate_ml.workflows import ensure_dataset

    root = tmp_path_factory.mktemp("sea-ice") / "store"
    ensure_dataset(root, "toy-sea-ice")  # ~14 s: ingested once for the tests of this module
    return root


@pytest.fixture
def sea_ice_store(tmp_path, _toy_sea_ice_obs) -> Path:
    """A fresh store holding the embedded toy-sea-ice data set."""
    import shutil

    shutil.copytree(_toy_sea_ice_obs, tmp_path / "store")
    return tmp_path / "store"


def _write_model(tmp_path: Path, name: str, suffix: str = "") -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(PERSISTENCE_MODEL.replace("{suffix}", suffix))
    return path


def advecting_ice(n_years: int = 20, size: int = 16, seed: int = 3) -> xr.Dataset:
    """A planted signal: the ice edge carries anomalies that move one cell east every month
    (AR(1) with memory 0.9, wrapping around), plus a seasonal cycle. Per-cell persistence sees
    only the anomaly at its own cell; a convolution can follow the anomaly to the next cell."""
    rng = np.random.default_rng(seed)
    time = pd.date_range("1990-01", periods=12 * n_years, freq="MS")
    r = np.zeros((len(time), size))
    for t in range(1, len(time)):
        r[t] = 0.9 * np.roll(r[t - 1], 1) + 0.45 * rng.normal(size=size)
    season = 2.0 * np.cos(2 * np.pi * (time.month.values - 3) / 12)
    edge = size / 2 + season[:, None] + 2.0 * r  # (time, x): rows north of the edge have ice
    y = np.arange(size)[None, :, None]
    conc = np.clip(1 / (1 + np.exp(-(y - edge[:, None, :]) / 0.7)), 0, 1).astype("float32")
    conc[:, :2, :2] = np.nan  # a corner of land
    area = np.full((size, size), 1e10)
    return xr.Dataset({"conc": (("time", "y", "x"), conc, {"units": "1", "standard_name": "sea_ice_area_fraction"})},
                      coords={"time": time, "y": np.arange(size), "x": np.arange(size),
                              "cell_area": (("y", "x"), area, {"units": "m2"})})


def test_probability_of_ice_scores_members():
    """Brier score of the probability of ice by hand: two cells of 1 and 3 (10^6 km^2); the
    members say ice in cell 0 with p 2/3, cell 1 with p 1/3; the observation has ice in cell 0
    only, so the scoring region is cell 0 and cell 1's error is added per that area."""
    area = np.array([1.0, 3.0]) * 1e12
    obs = np.array([0.9, 0.0])
    members = np.array([[0.5, 0.2], [0.3, 0.0], [0.0, 0.0]])
    s = field_scores(members.mean(0), obs, area, members=members)
    assert s["ice_brier"] == pytest.approx((1 * (2 / 3 - 1) ** 2 + 3 * (1 / 3) ** 2) / 1)
    det = field_scores(members.mean(0), obs, area)
    assert det["ice_brier"] == pytest.approx(1 - det["binary_accuracy"])  # 0/1 probabilities
    wide = field_scores(members.mean(0), obs, area, np.array([True, True]), members=members)
    assert wide["ice_brier"] == pytest.approx((1 * (2 / 3 - 1) ** 2 + 3 * (1 / 3) ** 2) / 4)  # active: both cells


def test_crps_and_spread_of_members_by_hand():
    """CRPS of an ensemble = mean |x_i - y| - mean |x_i - x_j| / 2 per cell, area-weighted over
    the cells of the scoring region (cell 0: the observed ice) and those where the members give
    ice (both cells), per area of the scoring region; spread = (m+1)/m x the area-weighted
    member variance; sq_error of the member mean; a single map's CRPS is its absolute error."""
    area = np.array([1.0, 3.0]) * 1e12
    obs = np.array([0.9, 0.0])
    members = np.array([[0.5, 0.2], [0.3, 0.0], [0.1, 0.4]])
    s = field_scores(members.mean(0), obs, area, members=members)

    def crps(x, y):
        return np.abs(x - y).mean() - np.abs(x[:, None] - x[None, :]).mean() / 2

    w = area / area[0]
    assert s["crps"] == pytest.approx(w @ [crps(members[:, 0], 0.9), crps(members[:, 1], 0.0)])
    assert s["spread"] == pytest.approx(4 / 3 * (w @ members.var(0, ddof=1)))
    assert s["sq_error"] == pytest.approx(w @ (members.mean(0) - obs) ** 2)
    det = field_scores(members.mean(0), obs, area)
    assert det["crps"] == pytest.approx(w @ np.abs(members.mean(0) - obs)) and np.isnan(det["spread"])


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), p_far=st.sampled_from([0.2, 0.4, 0.6]))
def test_far_off_probabilities_of_ice_never_improve_the_scores(seed, p_far):
    """A forecast that adds a small probability of ice in cells outside the scoring region (no
    observed ice, outside the active region) scores no better on any area-mean score: the
    region, and so the area each score is divided by, does not depend on the forecast."""
    rng = np.random.default_rng(seed)
    n, m = 16, 5
    obs = rng.uniform(0, 1, n) * (rng.uniform(size=n) < 0.5)
    area = rng.uniform(1, 4, n) * 1e12
    active = rng.uniform(size=n) < 0.3
    outside = ~active & (obs < THRESHOLD)
    members = rng.uniform(0, 1, (m, n))
    members[:, outside] = 0.0
    bold = members.copy()
    bold[: int(round(p_far * m)), outside] = 0.3  # ice in some members, in every far-off cell
    s0 = field_scores(members.mean(0), obs, area, active, members=members)
    s1 = field_scores(bold.mean(0), obs, area, active, members=bold)
    if outside.any():
        assert s1["ice_brier"] > s0["ice_brier"] and s1["crps"] > s0["crps"]
    else:
        assert s1 == s0
    assert s1["binary_accuracy"] <= s0["binary_accuracy"] + 1e-12
    d0 = field_scores(members.mean(0), obs, area, active)
    d1 = field_scores(bold.mean(0), obs, area, active)
    assert d1["ice_brier"] >= d0["ice_brier"] - 1e-12 and d1["crps"] >= d0["crps"] - 1e-12


def test_field_model_gets_members_scored_and_never_sees_the_future(tmp_path):
    ice = advecting_ice(n_years=8, size=8)
    factory = load_model_factory(_write_model(tmp_path, "persist"))
    scores = field_backtest(ice["conc"], ice["cell_area"], [1, 2], "1995-01", "1996-06", 12,
                            models={**reference_models(("damped_anomaly_persistence",)), "persist": factory})
    assert list(scores["method"].values) == ["damped_anomaly_persistence", "persist"]
    assert json.loads(scores.attrs["failures"]) == {}
    # predict saw data up to each init and no further: the last month it got is the init
    seen = pd.DatetimeIndex(__import__("sys").modules[factory.__module__].SEEN)
    assert list(seen) == list(pd.date_range("1995-01", "1996-06", freq="MS"))
    table = summarise_field_scores(scores)
    assert set(table["persist"]) == {"iiee", "sie_rmse", "binary_accuracy", "ice_brier", "conc_crps", "spread_skill"}
    assert all(v is not None and v > 0 for v in table["persist"]["spread_skill"].values())  # 3 members
    assert set(table["damped_anomaly_persistence"]["spread_skill"].values()) == {None}  # one map
    brier = scores["ice_brier"].sel({"method": "persist"})
    assert bool((brier >= 0).all()) and bool((brier <= 1).all())


def test_field_backtest_runs_on_the_engine_executors_with_the_same_numbers(tmp_path):
    """Field models are (model, fold) units of the backtest engine: in two worker processes,
    or in reverse order through a custom executor, the scores are identical to in-process; a
    time limit fails a slow model with its reason and the others still score."""
    from climate_ml.backtest import InProcess

    ice = advecting_ice(n_years=8, size=8)
    refs = {n: ROOT / "models" / "fields" / f"{n}.py" for n in ("climatology", "damped_anomaly_persistence")}
    models = {**refs, "persist": _write_model(tmp_path, "persist")}
    args = (ice["conc"], ice["cell_area"], [1, 2], "1994-01", "1996-06", 12)
    local = field_backtest(*args, models=models)

    class Reversed(InProcess):
        def run(self, problem, prepared, units, out, progress, work=None):
            for name, spec, t0, inits in reversed(units):
                r = work(name, spec, t0, inits, problem, prepared, {})
                out.add(r[0], t0, r[1], r[2])

    xr.testing.assert_identical(field_backtest(*args, models=models, n_jobs=2), local)
    xr.testing.assert_identical(field_backtest(*args, models=models, executor=Reversed()), local)
    slow = tmp_path / "slow.py"
    slow.write_text(PERSISTENCE_MODEL.replace("{suffix}", "").replace(  # slow in its first fold
        "self.leads = list(leads)", "self.leads = list(leads)\n        if conc.time.dt.year[-1] < 1995:\n"
                                    "            __import__('time').sleep(60)"))
    timed = field_backtest(*args, models={**refs, "slow": slow}, time_limit=8, n_jobs=2)
    assert "exceeded the time limit of 8 s (fold fitted up to 1994-01)" in json.loads(timed.attrs["failures"])["slow"]
    for name in timed.data_vars:
        xr.testing.assert_identical(timed[name], local[name].sel({"method": list(refs)}))


def test_field_units_score_where_they_run_and_send_maps_back_only_when_asked(tmp_path):
    """Each (model, fold) unit scores its own maps and hands back the scores; the maps come back
    only for ``on_forecast`` (one fold of real-grid maps is hundreds of MB, which cost more to
    send between processes than the fits). Maps handed over from worker processes are those of
    an in-process run, and the scores are the same with or without them."""
    ice = advecting_ice(n_years=8, size=8)
    models = {"damped_anomaly_persistence": ROOT / "models" / "fields" / "damped_anomaly_persistence.py",
              "persist": _write_model(tmp_path, "persist")}
    args = (ice["conc"], ice["cell_area"], [1, 2], "1995-01", "1996-06", 12)
    remote, local = {}, {}
    plain = field_backtest(*args, models=models, n_jobs=2)
    with_maps = field_backtest(*args, models=models, n_jobs=2,
                               on_forecast=lambda name, init, maps: remote.__setitem__((name, init), maps))
    xr.testing.assert_identical(with_maps, plain)
    xr.testing.assert_identical(field_backtest(*args, models=models), plain)
    field_backtest(*args, models=models, on_forecast=lambda name, init, maps: local.__setitem__((name, init), maps))
    inits = pd.date_range("1995-01", "1996-06", freq="MS")
    assert set(remote) == set(local) == {(n, t) for n in models for t in inits}
    assert all(np.array_equal(remote[k], local[k], equal_nan=True) for k in local)
    assert remote[("persist", inits[0])].shape == (3, 2, ice["conc"][0].size)  # (member, lead, grid cells)

    # one unit on its own: scores per init (lead, score), the number of members, no maps unless asked
    data = xr.Dataset({"conc": ice["conc"]}, attrs={"leads": [1, 2], "truth_token": "unit-test", "return_maps": 0})
    data["unit_cell_area"] = ice["cell_area"]
    block = pd.date_range("1995-01", "1995-12", freq="MS")
    name, res, _ = field_unit("persist", models["persist"], pd.Timestamp("1995-01"), block, None, data)
    assert name == "persist" and isinstance(res, ScoredMaps) and res.maps is None and res.members == 3
    for init in block:
        expected = np.stack([plain[s].sel({"method": "persist", "init_time": init}).values for s in FIELD_SCORES], -1)
        np.testing.assert_array_equal(res.scores[init], expected)
    data.attrs["return_maps"] = 1
    _, res, _ = field_unit("persist", models["persist"], pd.Timestamp("1995-01"), block, None, data)
    assert set(res.maps) == set(block) and np.array_equal(res.maps[block[0]], local[("persist", block[0])], equal_nan=True)


def test_field_backtest_reads_a_stack_from_the_store_with_the_numbers_of_one_held(tmp_path, monkeypatch):
    """A stack of maps left in the Zarr store (larger than ``FIELD_HELD_BYTES``) is read by the
    models and by the scoring a block of months at a time (``FieldTruth`` over ``FieldRows``),
    in this process and in worker processes: the scores are those of the stack held in memory,
    bit for bit, and scoring a fold holds a small part of the stack, where the scoring once held
    all of it as float64 (twice the stored float32)."""
    import tracemalloc

    from climate_ml import sea_ice_fields, workflows
    from climate_ml.store import write_obs
    from climate_ml.synthetic import toy_sea_ice

    ice = advecting_ice(n_years=8, size=8)
    ice.chunk({"time": 12}).to_zarr(tmp_path / "ice.zarr", consolidated=False)
    lazy = xr.open_zarr(tmp_path / "ice.zarr", consolidated=False)
    assert lazy["conc"].chunks is not None
    models = {n: ROOT / "models" / "fields" / f"{n}.py" for n in ("climatology", "damped_anomaly_persistence")}
    models["persist"] = _write_model(tmp_path, "persist")
    held = field_backtest(ice["conc"], ice["cell_area"], [1, 2], "1994-01", "1996-06", 12, models=models)
    for n_jobs in (1, 2):
        xr.testing.assert_identical(field_backtest(lazy["conc"], lazy["cell_area"], [1, 2], "1994-01", "1996-06", 12,
                                                   models=models, n_jobs=n_jobs), held)

    # the workflow (what `climate-ml backtest` and the run flow call) leaves a large stack in the store
    write_obs(ice, tmp_path / "store", "advecting", {"source": "advecting_ice"})
    loaded = workflows.field_backtest_run(tmp_path / "store", "advecting", "1994-01", "1996-06", 12,
                                          model_paths=[models["persist"]])
    monkeypatch.setattr(workflows, "FIELD_HELD_BYTES", 0)
    streamed = workflows.field_backtest_run(tmp_path / "store", "advecting", "1994-01", "1996-06", 12,
                                            model_paths=[models["persist"]])
    assert loaded.concentration.chunks is None and streamed.concentration.chunks is not None
    xr.testing.assert_identical(streamed.scores, loaded.scores)

    # memory: the truth of a long stack, its active region and a fold's scores, read in blocks
    toy = toy_sea_ice(start="1900-01", end="2006-12", resolution_m=100_000.0)
    toy[["cdr_seaice_conc"]].chunk({"time": 12}).to_zarr(tmp_path / "long.zarr", consolidated=False)
    stack = xr.open_zarr(tmp_path / "long.zarr", consolidated=False)["cdr_seaice_conc"]

    def truth(conc):
        return sea_ice_fields.FieldTruth(conc, toy["cell_area"], [1, 2, 3])

    t0 = pd.Timestamp("2005-01")
    rng = np.random.default_rng(0)
    cells = stack.isel(time=0).size
    maps = {t: rng.uniform(0, 1, (3, 3, cells)) for t in pd.date_range(t0, periods=12, freq="MS")}
    monkeypatch.setattr(sea_ice_fields, "BLOCK_BYTES", 2 * 2**20)
    truth(stack.isel(time=slice(0, 48))).score({t0: maps[t0]}, t0)  # the imports and first reads
    tracemalloc.start()
    try:
        from_store = truth(stack)
        scores = from_store.score(maps, t0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 0.25 * stack.nbytes, (peak / 1e6, stack.nbytes / 1e6)
    in_memory = truth(stack.load())
    for t, rows in in_memory.score(maps, t0).items():
        np.testing.assert_array_equal(scores[t], rows)
    values = stack.values.reshape(stack.sizes["time"], -1)[:, from_store.ocean]
    for fit_end in ("1900-01", "1950-06", "2006-12"):
        np.testing.assert_array_equal(from_store.active(pd.Timestamp(fit_end)),
                                      sea_ice_fields.active_region(values, from_store.times, fit_end))


def test_field_members_of_unequal_size_fail_their_model(tmp_path):
    """Three members before 1996 and two after, across folds or within one: a failure that says
    so; the references still score."""
    ice = advecting_ice(n_years=8, size=8)
    fickle = tmp_path / "fickle.py"
    fickle.write_text(PERSISTENCE_MODEL.replace("{suffix}", "").replace(
        "for d in (-0.1, 0.0, 0.1)]", "for d in ((-0.1, 0.0, 0.1) if conc.time.dt.year[-1] < {year} else (0.0, 0.1))]"))
    for year, refit, says in ((1996, 12, "3 from the fit up to 1994-01, 2 from the fit up to 1996-01"),
                              (1995, 24, "3 at 1994-01, 2 at 1995-01")):
        path = tmp_path / f"fickle{year}.py"
        path.write_text(fickle.read_text().replace("{year}", str(year)))
        scores = field_backtest(ice["conc"], ice["cell_area"], [1], "1994-01", "1996-06", refit,
                                models={**reference_models(("climatology",)), "fickle": path})
        reason = json.loads(scores.attrs["failures"])["fickle"]
        assert "members of unequal size" in reason and says in reason, reason
        assert list(scores["method"].values) == ["climatology"]


def test_field_model_on_the_wrong_grid_fails_with_its_reason(tmp_path):
    ice = advecting_ice(n_years=8, size=8)
    bad = load_model_factory(_write_model(tmp_path, "cropped", suffix=".isel(x=slice(0, 5))"))
    scores = field_backtest(ice["conc"], ice["cell_area"], [1], "1995-01", "1995-03", 12,
                            models={**reference_models(("climatology",)), "cropped": bad})
    failures = json.loads(scores.attrs["failures"])
    assert "does not match the data set's grid" in failures["cropped"]
    assert list(scores["method"].values) == ["climatology"]  # the reference still scored


def test_field_and_index_models_refuse_the_other_contract(tmp_path, store, capsys):
    """Field and index models in one backtest, a field model reaching the index backtest, field
    models on an index-only problem, --plot with index models: each a one-line error that names
    the way to run it."""
    assert "convlstm_sea_ice" in registered_models("arctic_sea_ice", fields=True)
    assert "convlstm_sea_ice" not in registered_models("arctic_sea_ice")
    field_ref = str(ROOT / "models" / "fields" / "climatology.py")
    for args, says in ((["arctic_sea_ice", str(ROOT / "models" / "persistence.py"), field_ref], "separate runs"),
                       (["el_nino", field_ref], "not el_nino"),
                       (["el_nino", str(ROOT / "models" / "persistence.py"), "--plot", str(tmp_path / "p.png")],
                        "--plot is for field models")):
        rc = main(["backtest", *args, "--store", str(store)])
        err = capsys.readouterr().err
        assert rc == 2 and says in err and len(err.strip().splitlines()) == 1, err
    problem = get_problem("arctic_sea_ice")
    from climate_ml.workflows import problem_inputs

    _, _, prepared = problem_inputs(store, problem)
    field = _write_model(tmp_path, "maps")
    res = backtest(problem, {"maps": field}, prepared, "2015-01", "2016-12", 24)
    assert "forecasts concentration maps" in res.failures["maps"] and "backtest arctic_sea_ice FILE" in res.failures["maps"]


def test_cli_backtest_of_a_field_model(tmp_path, sea_ice_store, capsys):
    store = sea_ice_store
    path = _write_model(tmp_path, "persist")
    png = tmp_path / "probability.png"
    rc = main(["backtest", "arctic_sea_ice", str(path), "--test-start", "2022-01", "--refit-every", "60",
               "--plot", str(png), "--json", "--store", str(store)])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["failed"] == {}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert out["scores"]["persist"]["ice_brier"]["1"] is not None
    assert out["scores"]["persist"]["iiee"]["1"] > 0
    # the run is recorded: the field leaderboard ranks the model and the per-cell references on
    # the same (init, lead) pairs, with the numbers the run printed
    for score in ("iiee", "sie_rmse", "binary_accuracy", "ice_brier", "conc_crps"):
        assert main(["leaderboard", "arctic_sea_ice", "--score", score, "--json", "--n-boot", "200",
                     "--store", str(store)]) == 0
        board = json.loads(capsys.readouterr().out)
        assert board["reference"] == "damped_anomaly_persistence" and board["lower_is_better"] == (score != "binary_accuracy")
        rows = {r["model"]: r["leads"] for r in board["rows"]}
        assert set(rows) == {"persist", "climatology", "linear_trend", "trend_persistence", "damped_anomaly_persistence"}
        for name, leads in rows.items():
            for lead, cell in leads.items():
                assert cell["score"] == pytest.approx(out["scores"][name][score][lead], abs=2e-4), (score, name, lead)
                assert cell["ci"][0] <= cell["score"] <= cell["ci"][1]
    assert main(["leaderboard", "arctic_sea_ice", "--score", "iiee", "--lead", "1", "--store", str(store)]) == 0
    assert "damped_anomaly_persistence" in capsys.readouterr().out
    assert main(["leaderboard", "el_nino", "--score", "iiee", "--store", str(store)]) != 0
    assert "no field backtests recorded for problem 'el_nino'" in capsys.readouterr().err
    bad = _write_model(tmp_path, "broken", suffix=" + 2")
    rc = main(["backtest", "arctic_sea_ice", str(bad), "--test-start", "2024-01", "--store", str(store)])
    printed = capsys.readouterr().out
    assert rc == 3 and "FAILED broken" in printed and "outside 0-1" in printed


def test_convlstm_learns_advection_that_per_cell_references_miss():
    """On fields whose anomalies move one cell a month, the ConvLSTM (full resolution, a small
    net) beats damped anomaly persistence on integrated ice-edge error at lead 1 by a clear
    margin; its members (two networks x three draws of their out-of-bag error, scaled by a
    hold-out model's error) give a better probability of ice than the reference's 0/1 and a
    lower CRPS, and their spread is of the size of their error (the two bare networks'
    spread/skill was 0.24 and 0.19; with the out-of-bag error alone 0.66 and 0.65)."""
    ice = advecting_ice()
    factory = load_model_factory(CONVLSTM)
    module = __import__("sys").modules[factory.__module__]

    def small():
        return module.SeaIceConvLSTM(coarsen=1, hidden=8, frames=2, epochs=40, seeds=(0, 1))

    small.__module__ = factory.__module__
    scores = field_backtest(ice["conc"], ice["cell_area"], [1, 2], "2005-01", "2009-11", 36,
                            models={**reference_models(("damped_anomaly_persistence",)), "convlstm": small})
    assert json.loads(scores.attrs["failures"]) == {}
    iiee = scores["iiee"].mean("init_time")
    ref, net = (iiee.sel({"method": m}) for m in ("damped_anomaly_persistence", "convlstm"))
    assert float(net.sel(lead=1)) < 0.8 * float(ref.sel(lead=1)), (float(net.sel(lead=1)), float(ref.sel(lead=1)))
    brier = scores["ice_brier"].mean("init_time").sel(lead=1)
    assert float(brier.sel({"method": "convlstm"})) < float(brier.sel({"method": "damped_anomaly_persistence"}))
    crps = scores["crps"].mean("init_time")
    assert (crps.sel({"method": "convlstm"}) < 0.8 * crps.sel({"method": "damped_anomaly_persistence"})).all()
    ratio = summarise_field_scores(scores)["convlstm"]["spread_skill"]
    assert all(0.75 < ratio[k] < 1.3 for k in ("1", "2")), ratio


def test_sea_ice_convlstm_can_correct_the_per_cell_damped_reference():
    """``SeaIceConvLSTM(per_cell_damping=True)`` builds on damped anomaly persistence with one
    damping per cell: untrained (its last layer starts at zero) its map is that reference's,
    and the residuals it would learn are the block means of the 25 km residuals of that
    reference (their spread is the model's target scale, computed here directly). The model file
    ``models/convlstm_sea_ice_per_cell.py`` is that option, a field model taking the same options."""
    from climate_ml.model_api import FIELD_TARGET, model_target
    from climate_ml.sea_ice_fields import PerCellReference

    ice = advecting_ice(n_years=8, size=8)
    known = ice["conc"].sel(time=slice(None, "1996-03"))
    factory = load_model_factory(ROOT / "models" / "convlstm_sea_ice_per_cell.py")
    assert model_target(factory) == FIELD_TARGET
    net = factory(coarsen=2, hidden=4, frames=2, epochs=0, seeds=(0,), draws=1)
    assert net.per_cell_damping and type(net).__name__ == "SeaIceConvLSTM"
    net.fit(known, ice["cell_area"], [1, 3])
    ref = PerCellReference("damped_anomaly_persistence", per_cell_damping=True).fit(known, ice["cell_area"], [1, 3])
    np.testing.assert_allclose(net.predict(known).isel(member=0).values, ref.predict(known).values, rtol=0, atol=1e-12)
    pooled = PerCellReference("damped_anomaly_persistence").fit(known, ice["cell_area"], [1, 3]).predict(known)
    assert not np.allclose(net.predict(known).isel(member=0).values, pooled.values, equal_nan=True)

    times = pd.DatetimeIndex(known.time.values)
    flat = known.values.reshape(len(times), -1)[:, net.ocean_].astype("float64")
    anom = net.ref_.departures(flat, times)
    residuals = [net._blocks(anom[i + lead][None] - net.ref_.cell_damping[times[i].month - 1, j][None] * anom[i][None])[0]
                 for i in range(1, len(times) - 1) for j, lead in enumerate([1, 3]) if i + lead < len(times)]
    assert net.target_scale_ == pytest.approx(float(np.std(residuals)) + 1e-6, rel=1e-5)


def test_sea_ice_convlstm_trains_from_a_zarr_store_a_block_of_months_at_a_time(tmp_path):
    """Fitted on maps opened lazily from a Zarr store (Dask), the sea-ice ConvLSTM reads them a
    block of months at a time (``FieldRows``): the most memory it allocates (traced, after a
    warm-up fit has done the imports) stays under half the size of the float32 stack, where
    holding the stack as float64, as the fit once did, takes twice it. The model it fits (the
    per-cell reference, the scales, the spread, the hold-out ratio, the forecast) is the one
    fitted on the same maps in memory, bit for bit."""
    import tracemalloc

    from climate_ml.synthetic import toy_sea_ice

    path = tmp_path / "ice.zarr"
    toy = toy_sea_ice(start="1900-01", end="2006-12", resolution_m=100_000.0)
    toy[["cdr_seaice_conc"]].chunk({"time": 12}).to_zarr(path)
    lazy = xr.open_zarr(path)["cdr_seaice_conc"]
    assert lazy.chunks is not None and lazy.sizes["time"] == 1284
    module = sys.modules[load_model_factory(CONVLSTM).__module__]
    options = dict(coarsen=16, hidden=4, frames=3, epochs=1, seeds=(0,), draws=2, holdout=0.05)
    module.SeaIceConvLSTM(**options).fit(lazy.isel(time=slice(0, 120)), toy["cell_area"], [1, 2])  # the imports
    tracemalloc.start()
    try:
        streamed = module.SeaIceConvLSTM(**options, block_months=24).fit(lazy, toy["cell_area"], [1, 2])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 0.5 * lazy.nbytes, (peak / 1e6, lazy.nbytes / 1e6)
    held = module.SeaIceConvLSTM(**options).fit(lazy.load(), toy["cell_area"], [1, 2])
    assert held.block_months is None and streamed.block_months == 24
    for name in ("mean", "slope", "intercept", "ever_ice", "damping"):
        np.testing.assert_array_equal(getattr(streamed.ref_, name), getattr(held.ref_, name), err_msg=name)
    assert (streamed.anom_scale_, streamed.target_scale_) == (held.anom_scale_, held.target_scale_)
    np.testing.assert_array_equal(streamed.sigma_, held.sigma_)
    np.testing.assert_array_equal(streamed.holdout_ratio_, held.holdout_ratio_)
    np.testing.assert_array_equal(streamed.edge_, held.edge_)
    xr.testing.assert_identical(streamed.predict(lazy), held.predict(lazy.load()))
    # the ice edge: drawn where the out-of-bag maps of the last ten training years matched best;
    # without the calibration the same network's map, whose t-contour is the calibrated 15% one
    plain = module.SeaIceConvLSTM(**options, calibrate_edge=False).fit(lazy.load(), toy["cell_area"], [1, 2])
    assert plain.edge_ is None and held.edge_.shape == (2, 12)
    # the shape of the spread is the out-of-bag error of the plain maps; only its widening, set on
    # the hold-out maps with their edge placed, differs
    np.testing.assert_allclose(plain.sigma_ / plain.holdout_ratio_[:, None, None],
                               held.sigma_ / held.holdout_ratio_[:, None, None], rtol=1e-6)
    a, b = (m.predict(lazy.load()).mean("member").values for m in (plain, held))  # one network: its map
    t = held.edge_[[0, 1], [0, 1]][:, None, None]  # from 2006-12: valid 2007-01 and 2007-02
    ok = np.isfinite(a)
    assert np.array_equal((b[ok] >= 0.15 - 1e-12), np.broadcast_to(a >= t, a.shape)[ok])
    with pytest.raises(ValueError, match="block_months must be at least 1, got 0"):
        FieldRows(lazy, block_months=0)


def test_sea_ice_convlstm_can_draw_its_edge_at_the_extent_forecast():
    """``match_extent="forecast"``: the 15% contour of the member-mean map encloses the extent
    forecast (damped anomaly persistence of the ice-covered fraction, fitted on the training
    months) to within one cell, and its ice is the same network's highest concentrations: where
    the plain model's map is above some value (the networks are the same; only the edge moves).
    ``match_extent="mean"``: the contour encloses the mean of that forecast and the plain map's
    own extent, again within one cell."""
    from climate_ml.synthetic import toy_sea_ice

    module = sys.modules[load_model_factory(CONVLSTM).__module__]
    toy = toy_sea_ice(start="1975-01", end="2006-12", resolution_m=100_000.0)
    conc, area = toy["cdr_seaice_conc"].load(), toy["cell_area"].values.ravel()
    options = dict(coarsen=16, hidden=4, frames=3, epochs=1, seeds=(0,), draws=2, holdout=0.1)
    train = conc.sel(time=slice(None, "2004-12"))
    plain = module.SeaIceConvLSTM(**options).fit(train, toy["cell_area"], [1, 2, 3])
    matched = module.SeaIceConvLSTM(**options, match_extent="forecast").fit(train, toy["cell_area"], [1, 2, 3])
    halfway = module.SeaIceConvLSTM(**options, match_extent="mean").fit(train, toy["cell_area"], [1, 2, 3])
    assert plain.extent_ is None and matched.extent_.fit.fit_end == pd.Timestamp("2004-12")
    moved = 0
    for init in ("2005-03", "2005-09", "2006-01"):
        upto = conc.sel(time=slice(None, init))
        p, m, h = (model.predict(upto).mean("member").values.reshape(3, -1) for model in (plain, matched, halfway))
        target = matched.extent_.predict(upto.isel(time=-1).values.ravel()[matched.ocean_], pd.Timestamp(init))
        ok = np.isfinite(p[0])
        for j in range(3):
            ice, own = (m[j] >= THRESHOLD) & ok, area[(p[j] >= THRESHOLD) & ok].sum()
            assert abs(area[ice].sum() - target[j]) <= area[ok].max(), (init, j)
            assert p[j][ice].min() > p[j][ok & ~ice].max()
            moved += abs(area[ice].sum() - own) > area[ok].max()
            assert abs(area[(h[j] >= THRESHOLD) & ok].sum() - 0.5 * (target[j] + own)) <= area[ok].max(), (init, j)
    assert moved >= 6  # the option does move the plain model's edge
    with pytest.raises(ValueError, match="match_extent must be one of"):
        module.SeaIceConvLSTM(match_extent=True)


@pytest.mark.parametrize("name, per_cell, edge", [
    ("convlstm_sea_ice", False, None),
    ("convlstm_sea_ice_extent_mean", False, "mean"),
    ("convlstm_sea_ice_per_cell", True, None),
    ("convlstm_sea_ice_per_cell_extent_mean", True, "mean"),
])
def test_each_sea_ice_convlstm_file_is_the_combination_its_name_says(name, per_cell, edge):
    """The sea-ice ConvLSTM's model files differ only in the base reference (one damping per
    cell or pooled) and where the edge is drawn (``match_extent``); the README compares them
    by file name, so each file must build that combination and pass a benchmark's other
    options through."""
    from climate_ml.model_api import FIELD_TARGET, model_target

    factory = load_model_factory(ROOT / "models" / f"{name}.py")
    assert model_target(factory) == FIELD_TARGET
    net = factory(coarsen=4)
    assert type(net).__name__ == "SeaIceConvLSTM"
    assert (net.per_cell_damping, net.match_extent, net.coarsen) == (per_cell, edge, 4)


def test_convlstm_members_are_its_networks_widened_by_normal_quantiles():
    """Each network's map gets ``draws`` offsets: normal quantiles, symmetric, the same for every
    network, with variance m/(m+1) over all m members (members and an observation from one
    distribution); one draw leaves the bare networks."""
    module = sys.modules[load_model_factory(CONVLSTM).__module__]
    offsets = module.member_offsets(3, 3)
    assert offsets.shape == (3, 3) and (offsets == offsets[0]).all()
    assert offsets[0] == pytest.approx(-offsets[0][::-1]) and offsets[0, 1] == 0
    assert offsets.ravel().var(ddof=1) == pytest.approx(9 / 10)
    assert np.diff(module.member_offsets(2, 5)[0]).min() > 0
    assert (module.member_offsets(3, 1) == 0).all()
    with pytest.raises(ValueError, match="draws must be at least 1"):
        module.SeaIceConvLSTM(draws=0)


@settings(max_examples=200, deadline=None)
@given(centre=st.lists(st.floats(0, 1), min_size=1, max_size=8),
       sigma=st.lists(st.floats(0, 0.6), min_size=1, max_size=8), draws=st.integers(1, 6))
def test_centred_members_stay_in_range_and_keep_the_networks_map_as_their_mean(centre, sigma, draws):
    """Whatever the map and its spread: every member is a concentration (0-1), the members'
    mean is the network's map (so the deterministic scores do not change), and away from 0
    and 1 the members are the map plus the offsets, unshifted."""
    module = sys.modules[load_model_factory(CONVLSTM).__module__]
    n = min(len(centre), len(sigma))
    c, sd = np.array(centre[:n])[None, None, :], np.array(sigma[:n])[None, None, :]
    offsets = module.member_offsets(1, draws)[:, :, None] * sd
    members = module.centred_members(c, offsets, 0.0, 1.0, axis=1)
    assert members.shape == (1, draws, n) and members.min() >= 0 and members.max() <= 1
    np.testing.assert_allclose(members.mean(1), c[:, 0], atol=1e-8)
    inside = ((c + offsets).min(1) >= 0) & ((c + offsets).max(1) <= 1)
    np.testing.assert_allclose(members[..., inside[0]], (c + offsets)[..., inside[0]], atol=1e-12)


def test_backtest_takes_field_models_through_the_field_backtest(tmp_path, sea_ice_store, capsys):
    """One command for both contracts: `backtest arctic_sea_ice MAPS.py` runs the field backtest
    (scores, record, leaderboard); mixing contracts or another problem is a one-line error."""
    path = _write_model(tmp_path, "persist")
    rc = main(["backtest", "arctic_sea_ice", str(path), "--test-start", "2024-01", "--json", "--store", str(sea_ice_store)])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["failed"] == {} and set(out["scores"]) >= {"persist", "damped_anomaly_persistence"}
    assert out["scores"]["persist"]["iiee"]["1"] > 0
    assert main(["leaderboard", "arctic_sea_ice", "--score", "ice_brier", "--json", "--n-boot", "100",
                 "--store", str(sea_ice_store)]) == 0
    assert "persist" in {r["model"] for r in json.loads(capsys.readouterr().out)["rows"]}
    for args, message in (([str(path), str(ROOT / "models" / "persistence.py")], "in separate runs"),):
        assert main(["backtest", "arctic_sea_ice", *args, "--store", str(sea_ice_store)]) != 0
        assert message in capsys.readouterr().err
    assert main(["backtest", "el_nino", str(path), "--store", str(sea_ice_store)]) != 0
    assert "backtest them on a problem with a field target (arctic_sea_ice), not el_nino" in capsys.readouterr().err
    # the per-cell references are model files like any other: one given by hand runs once, with
    # the scores it has as a reference; another file with a reference's name is refused
    dap = ROOT / "models" / "fields" / "damped_anomaly_persistence.py"
    assert main(["backtest", "arctic_sea_ice", str(dap), "--test-start", "2024-01", "--json",
                 "--store", str(sea_ice_store)]) == 0
    again = json.loads(capsys.readouterr().out)
    assert list(again["scores"]) == ["climatology", "linear_trend", "trend_persistence", "damped_anomaly_persistence"]
    assert again["scores"] == {k: v for k, v in out["scores"].items() if k != "persist"}
    impostor = _write_model(tmp_path, "linear_trend")
    assert main(["backtest", "arctic_sea_ice", str(impostor), "--store", str(sea_ice_store)]) != 0
    assert "has the name of a per-cell reference" in capsys.readouterr().err


def test_forecast_takes_field_models_and_archives_their_maps(tmp_path, sea_ice_store, capsys):
    """`forecast arctic_sea_ice MAPS.py --init`: the model sees the maps up to the init only (lazily,
    from the store), its members are archived as a live forecast with its own provenance, and the printed extents are
    those of the archived mean map; ranges, mixed contracts and a missing init are one-line errors."""
    from climate_ml.archive import query

    store = sea_ice_store
    path = _write_model(tmp_path, "persist")
    assert main(["forecast", "arctic_sea_ice", str(path), "--init", "2024-03", "--json", "--store", str(store)]) == 0
    out = json.loads(capsys.readouterr().out)
    module = next(m for m in list(sys.modules.values()) if getattr(m, "__file__", None) == str(path))
    assert module.SEEN == [np.datetime64("2024-03-01")]  # predicted from the init's map, never a later one
    assert module.LAZY == [True]  # the store's maps, read by the model as it needs them (never loaded whole first)
    assert (out["model"], out["init_time"], out["archive"], out["members"]) == ("persist", "2024-03", "created", 3)
    assert [r["valid_time"] for r in out["forecast"]] == [f"2024-{m:02d}" for m in range(4, 10)]
    ds = query(store, "arctic_sea_ice", "persist", init="2024-03", dataset="toy-sea-ice").isel(model=0)
    assert ds["prov_kind"].values.tolist() == ["forecast"] and ds["prov_train_end"].values.tolist() == ["2024-03"]
    conc = xr.open_zarr(store / "obs" / "toy-sea-ice.zarr", consolidated=False)["cdr_seaice_conc"].load()
    np.testing.assert_allclose(ds["forecast"].sel(lead=1, member=1).squeeze().values, conc.sel(time="2024-03").squeeze().values,
                               equal_nan=True, atol=1e-6)
    mean = ds["forecast"].sel(lead=2).squeeze().mean("member")
    area = xr.open_zarr(store / "obs" / "toy-sea-ice.zarr", consolidated=False)["cell_area"].load()
    extent = float(area.where(mean.values >= 0.15).sum()) / 1e12
    assert out["forecast"][1]["extent"] == pytest.approx(extent, abs=1e-3)
    seen = float(area.where(conc.sel(time="2024-05").squeeze().values >= 0.15).sum()) / 1e12
    assert out["forecast"][1]["observed_extent"] == pytest.approx(seen, abs=1e-3)
    assert main(["forecast", "arctic_sea_ice", str(path), "--init", "2024-03", "--store", str(store)]) == 0
    assert "unchanged in archive" in capsys.readouterr().out
    for args, message in (
        ([str(path), "--init", "2024-01:2024-03"], "field models forecast one init at a time"),
        ([str(path), "--init", "1900-01"], "init 1900-01 is not in toy-sea-ice"),
        ([str(path), str(ROOT / "models" / "persistence.py"), "--init", "2024-03"], "in separate runs"),
    ):
        assert main(["forecast", "arctic_sea_ice", *args, "--store", str(store)]) != 0
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert main(["forecast", "el_nino", str(path), "--init", "2024-03", "--store", str(store)]) != 0
    assert "forecast them on a problem with a field target (arctic_sea_ice), not el_nino" in capsys.readouterr().err


def test_verify_scores_archived_maps_once_their_month_is_observed(tmp_path, sea_ice_store, capsys):
    """Maps forecast when only the init's month was known: `verify` records the observed maps that
    arrive later beside them (never changing a recorded one) and scores them as the field
    backtest does."""
    from climate_ml.archive import query
    from climate_ml.sea_ice_fields import active_region, concentration_field, field_scores
    from climate_ml.store import open_obs, write_obs
    from climate_ml.verify import field_score_samples

    store = sea_ice_store
    full = open_obs(store, "toy-sea-ice").load()
    write_obs(full.sel(time=slice(None, "2024-03")), store, "early", {"source": "test"})
    path = _write_model(tmp_path, "persist")
    assert main(["forecast", "arctic_sea_ice", str(path), "--init", "2024-03", "--dataset", "early", "--json",
                 "--store", str(store)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert all("observed_extent" not in r for r in out["forecast"])  # nothing after the init is known yet
    write_obs(full, store, "early", {"source": "test"})  # the later months arrive
    assert main(["verify", "arctic_sea_ice", "--dataset", "early", "--json", "--store", str(store)]) == 0
    captured = capsys.readouterr()
    assert "newly observed map value(s)" in captured.err
    rows = {r["lead"]: r for r in json.loads(captured.out)["maps"]}
    ds = query(store, "arctic_sea_ice", "persist", dataset="early").isel(model=0)
    conc = full["cdr_seaice_conc"]
    for lead in (1, 4):
        valid = pd.Timestamp("2024-03") + pd.DateOffset(months=lead)
        np.testing.assert_allclose(ds["observed"].sel(lead=lead).squeeze().values, conc.sel(time=valid).values,
                                   equal_nan=True, atol=1e-6)
        members = ds["forecast"].sel(lead=lead).squeeze().transpose("member", "y", "x").values.reshape(3, -1)
        times = pd.DatetimeIndex(conc.time.values)
        flat = conc.values.reshape(len(times), -1)
        want = field_scores(members.mean(0), flat[times.get_loc(valid)], full["cell_area"].values.ravel(),
                            active_region(flat, times, "2024-03")[valid.month - 1], members=members)
        assert rows[lead]["n"] == 1
        assert rows[lead]["iiee"] == pytest.approx(want["iiee"], abs=1e-4)
        assert rows[lead]["ice_brier"] == pytest.approx(want["ice_brier"], abs=1e-4)
        assert rows[lead]["sie_rmse"] == pytest.approx(abs(want["sie_error"]), abs=1e-4)
    assert main(["verify", "arctic_sea_ice", "--dataset", "early", "--json", "--store", str(store)]) == 0
    assert "newly observed" not in capsys.readouterr().err  # recorded once
    # a stack left in the store (as `verify` leaves one above FIELD_HELD_BYTES) scores the same, bit for bit
    lazy, area = concentration_field(open_obs(store, "early"))
    assert lazy.chunks is not None
    from_store, held = (field_score_samples(store, get_problem("arctic_sea_ice"), c, area, "early")
                        for c in (lazy, lazy.load()))
    assert len(from_store["persist"]["samples"]) == 6
    assert json.dumps(from_store, sort_keys=True) == json.dumps(held, sort_keys=True)


def test_live_maps_are_monitored_against_the_field_backtest(tmp_path, sea_ice_store, capsys):
    """`verify` compares the running IIEE of the maps issued live with the model's recorded field
    backtest: a model whose live maps are far worse than its backtest (here a file of the same
    name that forecasts no ice) is flagged as drift by lead, with the live value being the mean
    IIEE of its verified live maps; fewer cases than ``min_cases`` are "too few cases"."""
    from climate_ml.leaderboard import record_field_backtest
    from climate_ml.requests import VerifyRequest
    from climate_ml.sea_ice_fields import field_backtest, reference_models
    from climate_ml.store import open_obs
    from climate_ml.verify import drift_records, monitor_field_skill
    from climate_ml.workflows import field_forecast_and_archive, verify_forecasts

    store = sea_ice_store
    honest = _write_model(tmp_path, "persist")
    (tmp_path / "live").mkdir()
    degraded = _write_model(tmp_path / "live", "persist", suffix=" * 0.0")  # the same name, no ice at all
    conc = open_obs(store, "toy-sea-ice")["cdr_seaice_conc"].load()
    area = open_obs(store, "toy-sea-ice")["cell_area"].load()
    scores = field_backtest(conc, area, [1, 2, 3, 4, 5, 6], "2023-07", "2024-06", 12,
                            models={**reference_models(("damped_anomaly_persistence",)), "persist": honest})
    record_field_backtest(store, "arctic_sea_ice", scores, "toy-sea-ice", "", "2023-07", "2024-06", 12,
                          {"damped_anomaly_persistence": None, "persist": honest})
    for init in pd.date_range("2023-01", "2023-12", freq="MS"):
        field_forecast_and_archive(store, "toy-sea-ice", degraded, init)
    done = verify_forecasts(store, VerifyRequest.checked(problem="arctic_sea_ice", dataset="toy-sea-ice"))
    rows = {r["lead"]: r for r in done.monitoring if r["model"] == "persist"}
    assert sorted(rows) == [1, 2, 3, 4, 5, 6]
    for lead, r in rows.items():
        backtest = scores["iiee"].sel({"method": "persist", "lead": lead}).mean().item()
        assert r["score"] == "iiee" and r["n"] == 12 and r["status"] == "drift"
        assert r["backtest"] == pytest.approx(backtest, abs=1e-4) and r["live"] > r["backtest_ci"][1]
    # a map without ice misses all the observed ice: its IIEE is the observed extent of the valid month
    extent = ((conc >= THRESHOLD) * area).sum(("y", "x")).to_series() / 1e12
    for lead, r in rows.items():
        valid = pd.date_range("2023-01", "2023-12", freq="MS") + pd.DateOffset(months=lead)
        assert r["live"] == pytest.approx(extent.loc[valid].mean(), abs=1e-3)
    live = [{"model": m, "lead": r["lead"], "n": r["n"], "iiee": r["live"]}
            for m, r in ((r["model"], r) for r in done.monitoring)]
    few = monitor_field_skill(store, get_problem("arctic_sea_ice"), live, "toy-sea-ice", "2024-12", min_cases=13)
    assert {r["status"] for r in drift_records(few)} == {"too few cases"}
    assert main(["verify", "arctic_sea_ice", "--dataset", "toy-sea-ice", "--store", str(store)]) == 0
    assert "DRIFT: persist lead 1: live iiee" in capsys.readouterr().err
    # kept in the archive (one commit per verify) and served beside the index forecasts' skill
    from climate_ml.archive import history, read_monitoring
    from climate_ml.errors import QueryError
    from conftest import running_api

    kept = read_monitoring(store, "arctic_sea_ice", "toy-sea-ice", kind="maps")
    assert drift_records(kept) == drift_records(done.map_skill)
    assert read_monitoring(store, "arctic_sea_ice", "toy-sea-ice") is None  # no index forecast on the maps' data set
    assert [c["metadata"].get("kind") for c in history(store, "arctic_sea_ice")[:2]] == ["maps", "maps"]
    with pytest.raises(QueryError, match="bad monitoring kind 'fields'"):
        read_monitoring(store, "arctic_sea_ice", "toy-sea-ice", kind="fields")
    with running_api(store) as base:
        served = json.loads(urllib.request.urlopen(f"{base}/monitoring?problem=arctic_sea_ice&dataset=toy-sea-ice").read())
    assert served["scores"] == ["iiee"] and served["rows"] == drift_records(done.map_skill)


def test_the_reference_model_files_forecast_what_the_per_cell_methods_do():
    """Each file in models/fields is a field model whose map is the per-cell method's, computed
    directly from the fitted statistics, with land NaN; its name is the method's."""
    from climate_ml.model_api import load_model_factory, model_target
    from climate_ml.sea_ice_fields import FIELD_METHODS, fit_fields, forecast_fields

    ice = advecting_ice(n_years=8, size=8)
    conc = ice["conc"]
    known = conc.sel(time=slice(None, "1996-03"))
    times = pd.DatetimeIndex(known.time.values)
    flat = known.values.reshape(len(times), -1).astype("float64")
    ocean = np.isfinite(flat).any(0)
    fit = fit_fields(flat[:, ocean], times, times[-1], [1, 3])
    files = sorted((ROOT / "models" / "fields").glob("*.py"))
    assert sorted(f.stem for f in files) == sorted(FIELD_METHODS)
    for f in files:
        factory = load_model_factory(f)
        assert model_target(factory) == "sea_ice_concentration"
        maps = factory().fit(known, ice["cell_area"], [1, 3]).predict(known)
        assert maps.dims == ("lead", *conc.dims[1:]) and maps.lead.values.tolist() == [1, 3]
        want = forecast_fields(fit, flat[-1, ocean], times[-1], [1, 3], f.stem)
        got = maps.values.reshape(2, -1)
        np.testing.assert_allclose(got[:, ocean], want, rtol=1e-12, atol=1e-12)
        assert np.isnan(got[:, ~ocean]).all()


def test_damped_anomaly_persistence_per_cell_damps_each_cell_s_own_departure():
    """models/damped_anomaly_persistence_per_cell.py forecasts the trend at the valid month plus
    each cell's departure at the init times that cell's own damping (computed here from the
    departures directly), clipped to 0-1; its maps differ from the pooled reference's; the
    option is refused for a method without damping."""
    from climate_ml.errors import ClimateMLError
    from climate_ml.sea_ice_fields import PerCellReference, fit_fields

    ice = advecting_ice(n_years=8, size=8)
    known = ice["conc"].sel(time=slice(None, "1996-03"))
    times = pd.DatetimeIndex(known.time.values)
    flat = known.values.reshape(len(times), -1).astype("float64")
    ocean = np.isfinite(flat).any(0)
    fit = fit_fields(flat[:, ocean], times, times[-1], [1, 3])
    anom = flat[:, ocean] - fit.trend(times)
    maps = load_model_factory(ROOT / "models" / "damped_anomaly_persistence_per_cell.py")().fit(
        known, ice["cell_area"], [1, 3]).predict(known).values.reshape(2, -1)
    pooled = PerCellReference("damped_anomaly_persistence").fit(known, ice["cell_area"], [1, 3]).predict(known)
    init_month = times[-1].month
    for j, lead in enumerate([1, 3]):
        inits = [i for i in np.flatnonzero(times.month == init_month) if i + lead < len(times)]
        a0, a1 = np.nan_to_num(anom[inits]), np.nan_to_num(anom[[i + lead for i in inits]])
        num, den = (a0 * a1).sum(0), (a0 * a0).sum(0)
        damping = np.where(den > 0, np.clip(num / np.where(den > 0, den, 1), 0, 1), fit.damping[init_month - 1, j])
        valid = pd.DatetimeIndex([times[-1] + pd.DateOffset(months=lead)])
        want = np.clip(fit.trend(valid)[0] + damping * anom[-1], 0, 1)
        np.testing.assert_allclose(maps[j, ocean], want, rtol=1e-10, atol=1e-12)
        assert np.isnan(maps[j, ~ocean]).all()
    assert not np.allclose(maps[:, ocean], pooled.values.reshape(2, -1)[:, ocean])
    with pytest.raises(ClimateMLError, match="per_cell_damping is for damped_anomaly_persistence, not 'linear_trend'"):
        PerCellReference("linear_trend", per_cell_damping=True)


def test_field_hindcasts_are_archived_with_members_observations_and_a_box(tmp_path, sea_ice_store, capsys):
    """`backtest arctic_sea_ice MAPS.py --archive`: every out-of-sample map with its members, the observed map,
    its own training cut-off; queries return maps cut to a box, over the CLI and HTTP."""
    from climate_ml.archive import query
    from climate_ml.errors import QueryError
    from conftest import running_api

    store = sea_ice_store
    path = _write_model(tmp_path, "persist")
    args = ["backtest", "arctic_sea_ice", str(path), "--test-start", "2024-01", "--refit-every", "6", "--archive",
            "--json", "--store", str(store)]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["archived"] == {"persist": "created"}
    ds = query(store, "arctic_sea_ice", "persist", dataset="toy-sea-ice").isel(model=0)
    conc = xr.open_zarr(store / "obs" / "toy-sea-ice.zarr", consolidated=False)["cdr_seaice_conc"].load()
    inits = pd.DatetimeIndex(ds.init_time.values)
    assert inits[0] == pd.Timestamp("2024-01") and ds.sizes["member"] == 3 and ds.sizes["lead"] == 6
    assert ds["forecast"].attrs["units"] == "1" and {"lat", "lon"} <= set(ds.coords)
    t = inits[5]
    np.testing.assert_allclose(ds["forecast"].sel(init_time=t, lead=2, member=1).values,
                               conc.sel(time=t).values, equal_nan=True, atol=1e-6)  # persistence of the init's map
    np.testing.assert_allclose(ds["observed"].sel(init_time=t, lead=2).values,
                               conc.sel(time=t + pd.DateOffset(months=2)).values, equal_nan=True, atol=1e-6)
    assert ds["prov_train_end"].sel(init_time="2024-09").item() == "2024-07"  # fitted at its fold's start
    assert ds["prov_fold"].sel(init_time="2024-09").item() == "2/2"
    assert set(ds["prov_kind"].values.tolist()) == {"hindcast"}
    assert not list((store / ".scratch").iterdir())  # the maps spilled to disk while it ran are gone
    assert main(args) == 0 and json.loads(capsys.readouterr().out)["archived"] == {"persist": "unchanged"}

    boxed = query(store, "arctic_sea_ice", "persist", init="2024-06", lead=1, dataset="toy-sea-ice",
                  box="80,90,0,360").isel(model=0)
    assert boxed.sizes["y"] * boxed.sizes["x"] < ds.sizes["y"] * ds.sizes["x"]
    fc = boxed["forecast"].isel(init_time=0, lead=0, member=1)
    assert fc.notnull().sum() > 0 and float(boxed["lat"].where(fc.notnull()).min()) >= 80
    with pytest.raises(QueryError, match="contains no cell"):
        query(store, "arctic_sea_ice", "persist", dataset="toy-sea-ice", box="-20,-10,0,360")
    rc = main(["archive", "query", "--problem", "arctic_sea_ice", "--dataset", "toy-sea-ice", "--model", "persist",
               "--box", "80,70,0,360", "--store", str(store)])
    assert rc != 0 and "latitudes must satisfy" in capsys.readouterr().err
    with running_api(store) as base:
        url = (f"{base}/forecasts?problem=arctic_sea_ice&dataset=toy-sea-ice&model=persist&init=2024-06&lead=1"
               "&box=arctic&format=netcdf")
        with urllib.request.urlopen(url, timeout=30) as r:
            (tmp_path / "box.nc").write_bytes(r.read())
    over_http = xr.open_dataset(tmp_path / "box.nc")
    assert over_http["forecast"].notnull().sum() > 0
    assert float(over_http["lat"].where(over_http["forecast"].notnull().any(["model", "init_time", "lead", "member"])
                                        ).min()) >= 60


def test_the_sea_ice_hold_out_model_is_fitted_before_the_months_it_forecasts(monkeypatch):
    """The hold-out model that scales the out-of-bag spread sees only the months before its
    hold-out (the last tenth of the training window, at least 24 months) and is the first network
    alone, without members of its own; its error ratio scales the spread per lead."""
    ice = advecting_ice()
    module = sys.modules[load_model_factory(CONVLSTM).__module__]
    fitted, fit = [], module.SeaIceConvLSTM.fit

    def spy(self, conc, cell_area, leads):
        fitted.append((self.seeds, self.draws, pd.Timestamp(conc["time"].values[-1]), conc.sizes["time"]))
        return fit(self, conc, cell_area, leads)

    monkeypatch.setattr(module.SeaIceConvLSTM, "fit", spy)
    conc = ice["conc"].sel(time=slice(None, "2004-12"))
    model = module.SeaIceConvLSTM(coarsen=1, hidden=8, frames=2, epochs=5, seeds=(0, 1)).fit(conc, ice["cell_area"], [1, 2])
    n_t = conc.sizes["time"]
    assert [(seeds, draws) for seeds, draws, _, _ in fitted] == [((0, 1), 3), ((0,), 1)]
    assert fitted[1][3] == n_t - max(24, round(0.1 * n_t))
    assert fitted[1][2] == pd.Timestamp(conc["time"].values[fitted[1][3] - 1])
    assert model.holdout_ratio_.shape == (2,) and (model.holdout_ratio_ > 0).all()
    bare = module.SeaIceConvLSTM(coarsen=1, hidden=8, frames=2, epochs=5, seeds=(0, 1), holdout=0).fit(
        conc, ice["cell_area"], [1, 2])
    np.testing.assert_allclose(model.sigma_, bare.sigma_ * model.holdout_ratio_[:, None, None].astype("float32"),
                               rtol=1e-6)


@settings(max_examples=25, deadline=None)
@given(order=st.permutations(range(7)), members=st.integers(1, 3))
def test_a_map_spool_gives_back_every_init_in_order_whatever_order_they_came_in(tmp_path_factory, order, members):
    """Folds finish in any order on several workers: the spool on disk hands back the maps in
    init order, each exactly as handed, one init per chunk; a second copy of an init or maps of
    another shape are one-line errors that leave what was spooled as it was."""
    from climate_ml.errors import ClimateMLError

    rng = np.random.default_rng(len(order) * members)
    inits = pd.date_range("2001-01", periods=7, freq="MS")
    maps = {t: rng.random((members, 2, 5)).astype("float32") for t in inits}
    maps[inits[3]][0, 1, 2] = np.nan
    spool = MapSpool(tmp_path_factory.mktemp("spool") / "maps")
    for k in order:
        spool.add(inits[k], maps[inits[k]])
    got_inits, data = spool.inits_and_maps()
    assert list(got_inits) == list(inits) and data.chunks[0] == (1,) * 7
    np.testing.assert_array_equal(data.compute(), np.stack([maps[t] for t in inits]))
    with pytest.raises(ClimateMLError, match="init 2001-03 was handed twice"):
        spool.add(inits[2], maps[inits[2]])
    with pytest.raises(ClimateMLError, match=r"maps of init 2002-01 are \(1, 2, 4\)"):
        spool.add("2002-01", np.zeros((1, 2, 4)))
    assert len(spool) == 7 and spool.inits_and_maps()[1].shape == (7, members, 2, 5)


def test_a_field_model_that_fails_late_archives_nothing_and_leaves_the_archive_as_it_was(tmp_path, sea_ice_store,
                                                                                        capsys):
    """`--archive --replace` of a model whose second fold fails (its members change): the
    archive keeps the maps of its earlier run, no commit is made, and its spilled maps are
    removed; the failure is reported."""
    from climate_ml.archive import history, query

    store = sea_ice_store
    path = _write_model(tmp_path, "persist")
    args = ["backtest", "arctic_sea_ice", str(path), "--test-start", "2024-01", "--refit-every", "6", "--archive",
            "--json", "--store", str(store)]
    assert main(args) == 0 and json.loads(capsys.readouterr().out)["archived"] == {"persist": "created"}
    before = query(store, "arctic_sea_ice", "persist", dataset="toy-sea-ice").load()
    commits = len(history(store, "arctic_sea_ice"))
    late = tmp_path / "late"
    late.mkdir()
    (late / "persist.py").write_text(PERSISTENCE_MODEL.replace("{suffix}", "").replace(
        "for d in (-0.1, 0.0, 0.1)]", "for d in ((-0.2, 0.0, 0.2) if conc.time.dt.month[-1] < 7 or "
        "conc.time.dt.year[-1] < 2024 else (0.0, 0.1))]"))
    rc = main([*args[:2], str(late / "persist.py"), *args[3:], "--replace"])
    out = json.loads(capsys.readouterr().out)
    assert rc != 0 and "members of unequal size" in json.dumps(out) and out["archived"] == {}
    assert len(history(store, "arctic_sea_ice")) == commits
    after = query(store, "arctic_sea_ice", "persist", dataset="toy-sea-ice").load()
    xr.testing.assert_equal(after, before)
    assert after.attrs["history"].split("snapshot")[1] == before.attrs["history"].split("snapshot")[1]
    assert not list((store / ".scratch").iterdir())
