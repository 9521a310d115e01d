"""The archive as a versioned scientific product: per-init provenance, one commit per write,
"as of" queries, appends that do not rewrite the past, CF-1.11 exports that compliance-checker,
climpred and WeatherBench 2 tooling accept, and writers killed at any moment."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from climate_ml.archive import (
    export,
    history,
    list_models,
    query,
    tag,
    write_forecast,
)
from climate_ml.errors import DamagedError, QueryError, StoreError
from climate_ml.schema import INIT, LEAD, add_valid_time
from climate_ml.store import Store


def fc(inits, value=0.5, leads=(1, 2, 3)):
    inits = pd.DatetimeIndex(inits)
    base = np.asarray([pd.Timestamp(t).year + pd.Timestamp(t).month / 100 for t in inits])[:, None]
    da = xr.DataArray(base * 0 + value + np.arange(len(leads)), dims=(INIT, LEAD), coords={INIT: inits, LEAD: list(leads)})
    return add_valid_time(da)


def test_each_init_keeps_its_own_provenance(store):
    """Measured on main before: a write replaced the group's attributes, so the 2010-01 forecast
    claimed the 2020-01 training period and lost its model checksum."""
    write_forecast(store, "el_nino", "m", fc(["2010-01-01"]),
                   {"kind": "forecast", "model_sha256": "a" * 64, "train_start": "1950-01", "train_end": "2010-01",
                    "dataset_sha256": "d1", "note": "first"})
    write_forecast(store, "el_nino", "m", fc(["2020-01-01"]),
                   {"kind": "forecast", "model_sha256": "b" * 64, "train_start": "1950-01", "train_end": "2020-01",
                    "dataset_sha256": "d2"})
    ds = query(store, "el_nino", model="m").sel(model="m")
    first, second = ds.sel(init_time="2010-01-01"), ds.sel(init_time="2020-01-01")
    assert str(first["prov_model_sha256"].values) == "a" * 64 and str(second["prov_model_sha256"].values) == "b" * 64
    assert str(first["prov_train_end"].values) == "2010-01" and str(second["prov_train_end"].values) == "2020-01"
    assert str(first["prov_dataset_sha256"].values) == "d1"
    assert json.loads(str(first["prov_details"].values)) == {"note": "first"}
    assert str(first["prov_kind"].values) == "forecast" and str(first["prov_dataset"].values) == "toy-ocean"


def test_hindcasts_carry_per_init_cutoffs_and_observations(store):
    inits = pd.date_range("2000-01", periods=24, freq="MS")
    cut = pd.DatetimeIndex([inits[0]] * 12 + [inits[12]] * 12)
    obs = fc(inits).drop_vars("valid_time") + 0.25
    write_forecast(store, "el_nino", "h", fc(inits), {"kind": "hindcast", "train_end": cut,
                                                      "fold": np.array(["1/2"] * 12 + ["2/2"] * 12)}, observed=obs)
    ds = query(store, "el_nino", model="h")
    assert list(ds["prov_train_end"].values[0][[0, 11, 12, 23]]) == ["2000-01", "2000-01", "2001-01", "2001-01"]
    lines = export(ds, "csv").decode().splitlines()
    assert lines[0] == "model,init_time,lead,valid_time,forecast,observed"
    assert lines[1] == "h,2000-01,1,2000-02,0.5000,0.7500"
    with pytest.raises(StoreError, match="provenance kind 'guess'"):
        write_forecast(store, "el_nino", "h2", fc(inits), {"kind": "guess"})


def test_one_commit_per_write_and_queries_as_of_a_time_or_tag(store):
    write_forecast(store, "el_nino", "m", fc(["2020-01-01"]), {"kind": "forecast"})
    tag(store, "el_nino", "before-2020-02")
    assert write_forecast(store, "el_nino", "m", fc(["2020-01-01"]), {"kind": "forecast"}) == "unchanged"
    time.sleep(1.1)
    write_forecast(store, "el_nino", "m", fc(["2020-02-01"]), {"kind": "forecast"})
    log = history(store, "el_nino")
    assert len(log) == 3  # two writes and the repository's first commit; "unchanged" commits nothing
    assert log[0]["message"].startswith("forecast m on toy-ocean: 1 new init(s)")
    assert log[0]["metadata"]["inits_added"] == ["2020-02"] and log[1]["tags"] == ["before-2020-02"]
    assert query(store, "el_nino").sizes[INIT] == 2
    assert list(query(store, "el_nino", as_of="before-2020-02")[INIT].dt.strftime("%Y-%m").values) == ["2020-01"]
    then = log[1]["written_at"]  # the first write's commit time: the second had not happened
    assert query(store, "el_nino", as_of=then).sizes[INIT] == 1
    with pytest.raises(QueryError, match="neither a date .* nor a tag of the el_nino archive \\(tags: before-2020-02\\)"):
        query(store, "el_nino", as_of="no-such-tag")
    with pytest.raises(QueryError, match="the archive of el_nino begins"):
        query(store, "el_nino", as_of="1999-01-01")
    with pytest.raises(StoreError, match="already names"):
        tag(store, "el_nino", "before-2020-02")


def _files(store) -> dict[Path, int]:
    return {p: p.stat().st_size for p in Store.at(store).archive("el_nino").path.rglob("*") if p.is_file()}


def _append_cost(store, da) -> tuple[int, float]:
    """Bytes of the files one append adds or changes, and its seconds."""
    before = _files(store)
    tic = time.perf_counter()
    write_forecast(store, "el_nino", "m", da, {"kind": "forecast"})
    seconds = time.perf_counter() - tic
    after = _files(store)
    return sum(size for p, size in after.items() if before.get(p) != size), seconds


def test_appending_an_init_costs_the_same_at_60_and_600_inits(store):
    """The old archive loaded and rewrote the whole group on every write; an append now writes
    new objects of a size that does not grow with the archive (measured in bytes, not time)."""
    inits = pd.date_range("1970-01", periods=602, freq="MS")
    rng = np.random.default_rng(1)
    noisy = fc(inits, leads=range(1, 19)) + xr.DataArray(rng.normal(size=(602, 18)), dims=(INIT, LEAD))
    write_forecast(store, "el_nino", "m", noisy.isel(init_time=slice(0, 60)), {"kind": "hindcast"})
    small, _ = _append_cost(store, noisy.isel(init_time=slice(60, 61)))
    write_forecast(store, "el_nino", "m", noisy.isel(init_time=slice(61, 601)), {"kind": "hindcast"})
    large, _ = _append_cost(store, noisy.isel(init_time=slice(601, 602)))
    rewrite = 602 * 18 * 8  # what rewriting the forecast variable alone would write, uncompressed
    # Both appends start a new 60-init chunk of each variable: the same chunk bytes. What grows is
    # the manifest's list of chunk references (about 30 bytes per chunk): 5.5 against 8.8 kB here.
    assert large < 2 * small and large < rewrite / 4, (small, large)
    assert query(store, "el_nino").sizes[INIT] == 602


def test_bad_writes_are_refused_and_change_nothing(store):
    write_forecast(store, "el_nino", "m", fc(["2020-01-01"]), {"kind": "forecast"})
    n = len(history(store, "el_nino"))
    with pytest.raises(StoreError, match="lead 4 is not among the archived leads 1..3"):
        write_forecast(store, "el_nino", "m", fc(["2020-02-01"], leads=(1, 4)), {})
    with pytest.raises(QueryError, match="model name '../evil'"):
        write_forecast(store, "el_nino", "../evil", fc(["2020-02-01"]), {})
    assert len(history(store, "el_nino")) == n and list_models(store, "el_nino") == ["m"]


def test_a_damaged_archive_is_one_line_for_readers_and_writers_and_is_never_written_over(store, monkeypatch):
    """A snapshot file cut short made queries and the leaderboard fail with 'GroupNotFoundError:
    No group found in store <icechunk.store.IcechunkStore object at 0x...>' (exit 1), and left
    the writers' 'nothing stored yet' path open on top of a damaged state. The repositories and
    snapshots this process holds in memory are dropped first, as a new process would start."""
    import icechunk

    import climate_ml.archive as archive_module
    import climate_ml.store as store_module
    from conftest import tree_digest

    write_forecast(store, "el_nino", "m", fc(["2020-01-01"]), {"kind": "forecast"})
    write_forecast(store, "el_nino", "m", fc(["2020-02-01"]), {"kind": "forecast"})
    folder = Store.at(store).archive("el_nino").path
    sid = icechunk.Repository.open(icechunk.local_filesystem_storage(str(folder))).lookup_branch("main")
    latest = folder / "snapshots" / sid
    latest.write_bytes(latest.read_bytes()[:50])
    monkeypatch.setattr(store_module, "_REPOS", {})
    monkeypatch.setattr(archive_module, "_SNAPSHOTS", type(archive_module._SNAPSHOTS)())
    before = tree_digest(folder)
    pattern = (rf"^{folder}: the forecast archive cannot be read at its snapshot {sid} \(.+\); restore it from a "
               r"backup \(a tagged earlier state may still be read with --as-of TAG\)$")
    for call in (lambda: query(store, "el_nino", model="m"), lambda: history(store, "el_nino"),
                 lambda: write_forecast(store, "el_nino", "m", fc(["2020-03-01"]), {"kind": "forecast"}),
                 lambda: write_forecast(store, "el_nino", "other", fc(["2020-03-01"]), {"kind": "forecast"})):
        with pytest.raises(DamagedError, match=pattern) as info:
            call()
        assert "object at 0x" not in str(info.value)
    assert tree_digest(folder) == before


def test_several_leads_and_valid_time_ranges(store):
    inits = pd.date_range("2020-01", periods=6, freq="MS")
    write_forecast(store, "el_nino", "m", fc(inits), {})
    ds = query(store, "el_nino", lead="1,3")
    assert list(ds[LEAD].values) == [1, 3]
    ds = query(store, "el_nino", valid="2020-04")  # forecasts for April 2020, from any init
    recs = [(r.split(",")[1], r.split(",")[2]) for r in export(ds, "csv").decode().splitlines()[1:]]
    assert recs == [("2020-01", "3"), ("2020-02", "2"), ("2020-03", "1")]
    with pytest.raises(QueryError, match="bad lead 'x'"):
        query(store, "el_nino", lead="x")


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(writes=st.lists(st.sets(st.integers(0, 11), min_size=1, max_size=5), min_size=1, max_size=5))
def test_any_sequence_of_writes_holds_each_init_once(tmp_path_factory, writes):
    """Property: whatever order and overlap of writes, the archive holds every written init
    exactly once with its values, and rewriting the same forecast commits nothing."""
    store = tmp_path_factory.mktemp("prop")
    inits = pd.date_range("2001-01", periods=12, freq="MS")
    for w in writes:
        write_forecast(store, "el_nino", "m", fc(inits[sorted(w)]), {"kind": "forecast"})
    written = sorted(set().union(*writes))
    n_commits = len(history(store, "el_nino"))
    assert write_forecast(store, "el_nino", "m", fc(inits[written]), {}) == "unchanged"
    assert len(history(store, "el_nino")) == n_commits
    ds = query(store, "el_nino")
    assert list(ds[INIT].values) == list(inits[written].values)
    np.testing.assert_allclose(ds["forecast"].sel(model="m").values, fc(inits[written]).values)


def test_netcdf_export_passes_cf_1_11_compliance_checker(store, tmp_path):
    from compliance_checker.runner import CheckSuite, ComplianceChecker

    inits = pd.date_range("2020-01", periods=4, freq="MS")
    write_forecast(store, "el_nino", "m1", fc(inits), {"kind": "hindcast"}, observed=fc(inits).drop_vars("valid_time"))
    write_forecast(store, "el_nino", "m2", fc(inits, 1.0), {"kind": "forecast"})
    path = tmp_path / "archive.nc"
    path.write_bytes(export(query(store, "el_nino"), "netcdf"))
    CheckSuite.load_all_available_checkers()
    report = tmp_path / "cf.json"
    ComplianceChecker.run_checker(str(path), ["cf:1.11"], 0, "normal", output_filename=str(report), output_format="json")
    result = json.loads(report.read_text())["cf:1.11"]
    errors = [(c["name"], c["msgs"]) for c in result["high_priorities"] if c["msgs"]]
    assert errors == []
    nc = xr.open_dataset(path)
    assert nc[INIT].attrs["standard_name"] == "forecast_reference_time"
    assert nc[LEAD].attrs == {"standard_name": "forecast_period", "long_name": "lead time", "units": "months"}
    assert nc["valid_time"].attrs["standard_name"] == "time" and nc.attrs["Conventions"] == "CF-1.11"
    for key in ("title", "institution", "source", "history", "references"):
        assert nc.attrs[key]


def test_climpred_and_weatherbench2_exports_open_in_their_tools(store, tmp_path, monkeypatch):
    climpred = pytest.importorskip("climpred")
    # climpred fetches the CF standard-name table on first use; offline, give it compliance-checker's copy
    import compliance_checker
    from pooch.utils import unique_file_name

    url = ("https://raw.githubusercontent.com/cf-convention/cf-convention.github.io/master/Data/cf-standard-names/"
           "current/src/cf-standard-name-table.xml")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "cache" / "pooch").mkdir(parents=True)
    shutil.copy(Path(compliance_checker.__file__).parent / "data" / "cf-standard-name-table.xml",
                tmp_path / "cache" / "pooch" / unique_file_name(url))

    inits = pd.date_range("2000-01", periods=48, freq="MS")
    rng = np.random.default_rng(0)
    truth = pd.Series(rng.normal(size=60), index=pd.date_range("2000-01", periods=60, freq="MS"))
    perfect = xr.DataArray(np.stack([truth.shift(-k).loc[inits].values for k in (1, 2, 3)], axis=1),
                           dims=(INIT, LEAD), coords={INIT: inits, LEAD: [1, 2, 3]})
    write_forecast(store, "el_nino", "perfect", add_valid_time(perfect), {"kind": "hindcast"})
    write_forecast(store, "el_nino", "noisy", add_valid_time(perfect + rng.normal(size=perfect.shape)), {"kind": "hindcast"})
    (tmp_path / "c.nc").write_bytes(export(query(store, "el_nino"), "climpred"))
    obs = xr.Dataset({m: ("time", truth.values) for m in ("perfect", "noisy")}, coords={"time": truth.index})
    hind = climpred.HindcastEnsemble(xr.open_dataset(tmp_path / "c.nc")).add_observations(obs)
    skill = hind.verify(metric="rmse", comparison="e2o", dim="init", alignment="same_verifs")
    assert float(skill["perfect"].max()) < 1e-9 and float(skill["noisy"].min()) > 0.5

    (tmp_path / "w.nc").write_bytes(export(query(store, "el_nino"), "weatherbench2"))
    wb = xr.open_dataset(tmp_path / "w.nc")
    assert {"time", "prediction_timedelta"} <= set(wb["forecast"].dims)
    assert wb["prediction_timedelta"].dtype.kind == "m" and list(wb["lead_months"].values) == [1, 2, 3]


WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    import numpy as np, pandas as pd, xarray as xr
    from climate_ml.archive import write_forecast
    from climate_ml.schema import INIT, LEAD, add_valid_time
    store, model = Path(sys.argv[1]), sys.argv[2]
    for t in pd.date_range("2000-01", periods=int(sys.argv[3]), freq="MS"):
        da = xr.DataArray(np.full((1, 3), t.month + 0.5), dims=(INIT, LEAD), coords={INIT: [t], LEAD: [1, 2, 3]})
        write_forecast(store, "el_nino", model, add_valid_time(da), {"kind": "forecast"})
        print(f"{t:%Y-%m}", flush=True)
""")


def _writer(store, model, n):
    return subprocess.Popen([sys.executable, "-c", WRITER, str(store), model, str(n)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def _assert_whole(store, model, n_max):
    ds = query(store, "el_nino", model=model).sel(model=model)
    inits = pd.DatetimeIndex(ds[INIT].values)
    assert not inits.has_duplicates and len(inits) <= n_max
    assert (inits == pd.date_range("2000-01", periods=len(inits), freq="MS")).all()  # a prefix: no gap, no half write
    np.testing.assert_allclose(ds["forecast"].values[:, 0], inits.month + 0.5)
    return len(inits)


def test_writers_killed_at_random_moments_leave_a_whole_archive(store):
    rng = np.random.default_rng(7)
    n = 40
    for _ in range(3):
        proc = _writer(store, "m", n)
        proc.stdout.readline()  # it has started writing
        time.sleep(float(rng.uniform(0.0, 0.6)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _assert_whole(store, "m", n)
    proc = _writer(store, "m", n)  # a re-run completes, without duplicates
    assert proc.wait(timeout=300) == 0, proc.stderr.read()[-2000:]
    assert _assert_whole(store, "m", n) == n


def test_two_concurrent_writers_both_land(store):
    procs = [_writer(store, m, 15) for m in ("a", "b")]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()[-2000:]
    assert list_models(store, "el_nino") == ["a", "b"]
    assert _assert_whole(store, "a", 15) == 15 and _assert_whole(store, "b", 15) == 15
    assert len(history(store, "el_nino")) == 31


def test_a_range_of_inits_fits_once_per_refit_and_matches_single_forecasts(store):
    """`forecast --init A:B`: the inits of a range share their fold's fit; at a fold's first init
    the forecast is the one a single `forecast --init` makes (the archive finds it unchanged)."""
    from climate_ml.problems import get_problem
    from climate_ml.workflows import (
        MODELS_DIR,
        forecast_and_archive,
        forecast_range,
        problem_inputs,
    )

    problem = get_problem("el_nino")
    dataset, obs, prepared = problem_inputs(store, problem)
    model = MODELS_DIR / "ridge_ocean.py"
    result, actions = forecast_range(store, problem, [model], obs, prepared, dataset, "2010-01", "2010-12", refit_every=6)
    assert actions == {"ridge_ocean": "created"}
    assert len(set(result.fit_end.values.tolist())) == 2
    ds = query(store, "el_nino", model="ridge_ocean").sel(model="ridge_ocean")
    assert set(ds["prov_kind"].values.tolist()) == {"forecast"}
    assert sorted(set(ds["prov_train_end"].values.tolist())) == ["2010-01", "2010-07"]
    for init in ("2010-01", "2010-07"):
        fc, action, _ = forecast_and_archive(store, problem, model, obs, prepared, dataset, pd.Timestamp(init))
        assert action == "unchanged"


def test_running_skill_of_live_forecasts_flags_drift(store):
    """The monthly flow's watch: outcomes that came due are recorded beside the live forecasts,
    their running skill is compared with each model's backtest interval, and a model whose live
    forecasts are far worse than its backtest is flagged; the skill is kept in the archive."""
    from climate_ml.archive import read_monitoring, write_monitoring
    from climate_ml.problems import get_problem
    from climate_ml.verify import drift_records, monitor_skill, observed_for, record_outcomes
    from climate_ml.workflows import MODELS_DIR, evaluate, forecast_range, problem_inputs

    problem = get_problem("el_nino")
    dataset, obs, prepared = problem_inputs(store, problem)
    evaluate(store, problem, [MODELS_DIR / "ridge_ocean.py"], prepared, obs, dataset, "2004-01", "2015-12", 48,
             blend=False, guard=False)
    forecast_range(store, problem, [MODELS_DIR / "ridge_ocean.py"], obs, prepared, dataset, "2017-01", "2020-12", 12)
    inits = pd.date_range("2017-01", "2020-12", freq="MS")
    truth = observed_for(problem, prepared, inits)
    write_forecast(store, "el_nino", "climatology", add_valid_time(truth + 3.0), {"kind": "forecast"})  # broken live
    write_forecast(store, "el_nino", "newcomer", add_valid_time(truth), {"kind": "forecast"})  # never backtested
    assert record_outcomes(store, problem, prepared, dataset) > 0
    assert record_outcomes(store, problem, prepared, dataset) == 0  # recorded once; never changed afterwards
    skill = monitor_skill(store, problem, prepared, dataset)
    status = skill["status"].to_series()
    assert (status.loc["climatology"] == "drift").all()
    assert (status.loc["newcomer"] == "no backtest").all()
    assert (skill["n"].sel(model="ridge_ocean") >= 12).all()
    assert set(status.loc["ridge_ocean"]) <= {"ok", "drift"}
    write_monitoring(store, "el_nino", dataset, skill)
    kept = read_monitoring(store, "el_nino", dataset)
    assert drift_records(kept) == drift_records(skill)
    assert list_models(store, "el_nino") == ["climatology", "newcomer", "ridge_ocean"]  # monitoring is no model
    assert history(store, "el_nino")[0]["message"].startswith(f"running skill on {dataset} through 2024-12: 18")


def test_field_forecasts_with_members_are_archived_and_exported(store, tmp_path):
    """A map forecast (init, lead, member, y, x) is stored and appended like an index; tables
    refuse it with a pointer to NetCDF, which carries it whole."""
    def field(inits, seed):
        rng = np.random.default_rng(seed)
        inits = pd.DatetimeIndex(inits)
        return add_valid_time(xr.DataArray(rng.random((len(inits), 6, 2, 20, 30)).astype("float32"),
                                           dims=(INIT, LEAD, "member", "y", "x"),
                                           coords={INIT: inits, LEAD: list(range(1, 7)), "member": [0, 1]}))
    assert write_forecast(store, "arctic_sea_ice", "maps", field(["2010-01-01", "2010-02-01"], 0), {}) == "created"
    assert write_forecast(store, "arctic_sea_ice", "maps", field(["2010-03-01"], 1), {}) == "updated"
    ds = query(store, "arctic_sea_ice", lead=2)
    assert ds["forecast"].shape == (1, 3, 1, 2, 20, 30) and ds["observed"].dims == ("model", INIT, LEAD)
    with pytest.raises(QueryError, match=r"field forecasts have no table form: ask for NetCDF \(--format netcdf, or format=netcdf over HTTP\)"):
        export(ds, "csv")
    (tmp_path / "maps.nc").write_bytes(export(ds, "netcdf"))
    nc = xr.open_dataset(tmp_path / "maps.nc")
    np.testing.assert_allclose(nc["forecast"].isel(model=0, init_time=2, lead=0).values,
                               field(["2010-03-01"], 1).isel(init_time=0, lead=1).values)
    assert nc["member"].attrs["standard_name"] == "realization"


def test_category_probabilities_live_beside_the_forecasts(store):
    """El Nino category probabilities are archived with the forecast they belong to; a group of
    hindcasts without them gains the variable (empty for the earlier inits)."""
    from climate_ml.archive import latest_forecasts

    write_forecast(store, "el_nino", "m", fc(["2020-01-01", "2020-02-01"]), {"kind": "hindcast"})
    live = fc(["2020-03-01"])
    cats = ["la_nina", "neutral", "el_nino"]
    probs = xr.DataArray([[[0.1, 0.3, 0.6], [0.2, 0.3, 0.5], [0.25, 0.35, 0.4]]], dims=(INIT, LEAD, "category"),
                         coords={INIT: live[INIT].values, LEAD: [1, 2, 3], "category": cats})
    assert write_forecast(store, "el_nino", "m", live, {"kind": "forecast"}, probabilities=probs) == "updated"
    ds = query(store, "el_nino").sel(model="m")
    assert ds["probability"].sel(init_time="2020-01-01").isnull().all()
    np.testing.assert_allclose(ds["probability"].sel(init_time="2020-03-01").values, probs.values[0])
    plume = latest_forecasts(store, "el_nino")
    assert plume["init"] == "2020-03" and plume["models"][0]["probabilities"]["1"] == {"la_nina": 0.1, "neutral": 0.3,
                                                                                    "el_nino": 0.6}
    write_forecast(store, "el_nino", "m", fc(["2020-04-01"]), {"kind": "forecast"})  # no probabilities this time
    assert query(store, "el_nino").sel(model="m")["probability"].sel(init_time="2020-04-01").isnull().all()
    with pytest.raises(StoreError, match="categories .* the archive holds"):
        write_forecast(store, "el_nino", "m", fc(["2020-05-01"]), {"kind": "forecast"},
                       probabilities=probs.assign_coords(category=["a", "b", "c"], init_time=[np.datetime64("2020-05-01")]))
