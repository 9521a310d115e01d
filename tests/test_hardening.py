"""Bad data is refused, not stored; failures say so (exit codes, one line, nothing changed)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import netCDF4
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from climate_ml.archive import export, import_forecasts, query
from climate_ml.backtest import issue_forecast
from climate_ml.cli import main
from climate_ml.errors import ClimateMLError, IngestError, QueryError
from climate_ml.ingest import ingest_file
from climate_ml.model_api import load_model_factory
from climate_ml.problems.el_nino import ElNino
from climate_ml.store import Store, open_obs
from climate_ml.workflows import registered_models
from conftest import expect_clean_error, tree_digest, write_ersst_like


def write_field(path, values, units, name="conc"):
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("time", values.shape[0])
        nc.createDimension("lat", values.shape[1])
        nc.createDimension("lon", values.shape[2])
        t = nc.createVariable("time", "f8", ("time",))
        t.units, t.calendar = "days since 2000-01-01", "standard"
        t[:] = [(pd.Timestamp("2000-01-01") + pd.DateOffset(months=k) - pd.Timestamp("2000-01-01")).days
                for k in range(values.shape[0])]
        for dim, vals in (("lat", np.linspace(60, 80, values.shape[1])), ("lon", np.linspace(0, 300, values.shape[2]))):
            v = nc.createVariable(dim, "f4", (dim,))
            v[:] = vals
        v = nc.createVariable(name, "f4", ("time", "lat", "lon"), fill_value=np.float32(-999))
        v.units = units
        v[:] = values
    return path


def test_kelvin_labelled_degc_is_refused(tmp_path, store):
    f = write_ersst_like(tmp_path / "k.nc", units="K")
    with netCDF4.Dataset(f, "a") as nc:
        nc["sst"].units = "degC"  # the wrong label: ~300 "degC"
    ingest_file(write_ersst_like(tmp_path / "ok.nc"), "sst", "keep", store)
    expect_clean_error(store, tree_digest(store), IngestError,
                       "variable 'sst' has values such as 30\\d.* degC, outside the plausible range -20..45 degC",
                       lambda: ingest_file(f, "sst", "bad", store))
    assert not Store.at(store).obs("bad").exists()


@pytest.fixture
def filled(tmp_path, store):
    """A store that already holds a data set (which a refused ingest must leave as it was)."""
    ingest_file(write_ersst_like(tmp_path / "ok.nc"), "sst", "keep", store)
    return store


def test_percent_labelled_as_fraction_is_refused(tmp_path, filled):
    store = filled
    values = np.random.default_rng(0).uniform(0, 100, (24, 3, 4))  # percent
    f = write_field(tmp_path / "ice.nc", values, "1")
    expect_clean_error(store, tree_digest(store), IngestError, "outside the plausible range 0..1 1",
                       lambda: ingest_file(f, "conc", "ice", store))
    ok = write_field(tmp_path / "ice_pct.nc", values, "percent")  # the same data labelled right
    ingest_file(ok, "conc", "ice", store)
    assert 0.0 <= float(open_obs(store, "ice")["conc"].max()) <= 1.0


def test_an_all_missing_field_is_refused(tmp_path, filled):
    store = filled
    f = write_field(tmp_path / "nan.nc", np.full((24, 3, 4), -999.0), "1")
    expect_clean_error(store, tree_digest(store), ClimateMLError, "variable 'conc' has no valid values",
                       lambda: ingest_file(f, "conc", "empty", store))
    assert not Store.at(store).obs("empty").exists()
    assert not list((store / "obs").glob(".*tmp*"))


def test_killed_ingests_leave_nothing_behind_after_the_next_write(tmp_path, store):
    f = write_ersst_like(tmp_path / "a.nc", n_months=36)
    ingest_file(f, "sst", "a", store)
    stale = Store.at(store).obs("a").with_name(".a.zarr.tmp-dead1234")
    (stale / "sst").mkdir(parents=True)
    (stale / "sst" / "junk").write_bytes(b"x" * 1000)  # what a SIGKILLed writer leaves
    ingest_file(write_ersst_like(tmp_path / "b.nc", n_months=40), "sst", "a", store)
    assert not stale.exists()


def test_forecast_from_missing_inputs_is_refused():
    from climate_ml.ingest import standardise
    from climate_ml.synthetic import toy_ocean

    problem = ElNino(leads=(1, 3))
    obs = standardise(toy_ocean(start="1950-01", end="1999-12"), "sst")
    prepared = problem.prepare(obs)
    gappy = prepared.copy(deep=True)
    gappy["nino34"] = gappy["nino34"].where(gappy.time < np.datetime64("1999-01-01"))  # the last 12 months NaN
    factory = load_model_factory(registered_models()["lightgbm_lagged"])
    with pytest.raises(ClimateMLError, match="inputs missing at init 1999-12 \\(.*nino34.*\\): refusing to forecast"):
        issue_forecast(problem, factory, gappy, "1999-12")
    assert np.isfinite(issue_forecast(problem, factory, prepared, "1999-12").values).all()


def test_archive_import_refuses_infinite_values_and_json_stays_valid(tmp_path, store):
    csv = tmp_path / "f.csv"
    csv.write_text("init,lead,forecast\n2020-01,1,0.5\n2020-01,2,inf\n")
    expect_clean_error(store, tree_digest(store), QueryError, "infinite values",
                       lambda: import_forecasts(store, ElNino(), csv, "bad"))
    csv.write_text("init,lead,forecast\n2020-01,1,0.5\n2020-02,2,0.7\n")
    import_forecasts(store, ElNino(), csv, "good")
    body = export(query(store, "el_nino"), "json").decode()
    assert "NaN" not in body and "Infinity" not in body
    assert json.loads(body)[0]["forecast"] == 0.5


BROKEN = textwrap.dedent("""
    import numpy as np
    import xarray as xr
    PROBLEMS = ("el_nino",)
    class Broken:
        def fit(self, X, y):
            self.leads_ = y["lead"].values
            return self
        def predict(self, X):
            raise RuntimeError("something inside the model went wrong")
    def make_model():
        return Broken()
""")

INTERRUPTED = BROKEN.replace('raise RuntimeError("something inside the model went wrong")', "raise KeyboardInterrupt")


def test_exit_codes(tmp_path, capsys):
    """A backtest whose model FAILED exits 3 (it exited 0); Ctrl-C exits 130 with a line; bad
    input 2; success 0."""
    store = tmp_path / "store"
    args = ["--test-start", "2015-01", "--refit-every", "60", "--store", str(store), "--no-blend", "--no-record"]
    (tmp_path / "broken.py").write_text(BROKEN)
    assert main(["backtest", "el_nino", str(tmp_path / "broken.py"), *args]) == 3
    assert "FAILED broken: broken: RuntimeError in fit/predict: something inside the model went wrong" in capsys.readouterr().out
    (tmp_path / "interrupted.py").write_text(INTERRUPTED)
    assert main(["backtest", "el_nino", str(tmp_path / "interrupted.py"), *args]) == 130
    assert "aborted" in capsys.readouterr().err
    assert main(["backtest", "el_nino", "models/persistence.py", *args, "--test-start", "2015-13"]) == 2
    assert main(["backtest", "el_nino", "models/persistence.py", *args, "--json"]) == 0


def test_out_of_range_init_year_is_a_clear_cli_error(tmp_path, capsys):
    for init in ("0001-01", "2300-01"):
        code = main(["archive", "query", "--problem", "el_nino", "--init", init, "--store", str(tmp_path)])
        assert code == 2 and "outside 1678..2261" in capsys.readouterr().err
    code = main(["forecast", "el_nino", "models/persistence.py", "--init", "1500-01", "--store", str(tmp_path)])
    assert code == 2 and "year outside 1678..2261" in capsys.readouterr().err


HOSTILE = ["..", "../evil", "../../evil", "/tmp/climate-ml-evil", "a/b", "a\\b", "", ".hidden", "x" * 300,
           "évil", "na\x00me", "a b", "-rf", "ok/../../evil", "~/evil"]


def _outside(tmp_path) -> set:
    """Everything outside the store that a traversal could create."""
    found = {p for p in tmp_path.rglob("*") if "store" not in p.relative_to(tmp_path).parts}
    return found | {p for p in (Path("/tmp").glob("climate-ml-evil*"))}


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.one_of(st.sampled_from(HOSTILE),
                      st.text(alphabet=st.sampled_from(list("./\\~ é-_a")), min_size=0, max_size=12)))
def test_hostile_names_never_reach_the_file_system(tmp_path, capsys, name):
    """Every command that takes a name that becomes a path: a one-line error (exit 2), nothing
    written outside the store (`ingest --name ../evil` used to write <store>/../evil.zarr)."""
    from climate_ml.store import SAFE_NAME
    if SAFE_NAME.fullmatch(name) and ".." not in name:
        return  # an ordinary name: not hostile
    store = tmp_path / "store"
    src = tmp_path / "src.nc"
    if not src.exists():
        write_ersst_like(src)
    before = _outside(tmp_path)
    commands = [
        ["ingest", "--file", str(src), "--variable", "sst", "--name", name],
        ["backtest", "el_nino", "models/persistence.py", "--dataset", name, "--no-record"],
        ["backtest", "el_nino", "models/persistence.py", "--predictor-dataset", name, "--no-record"],
        ["forecast", "el_nino", "models/persistence.py", "--init", "2020-01", "--dataset", name],
        ["archive", "query", "--problem", "el_nino", "--model", name],
        ["leaderboard", "el_nino", "--dataset", name],
    ]
    for args in commands:
        code = main([*args, "--store", str(store)])
        err = capsys.readouterr().err.strip()
        assert code == 2, (args, err)
        assert err.startswith("error:") and "\n" not in err, (args, err)
    assert _outside(tmp_path) == before
    assert not (tmp_path / "evil.zarr").exists() and not Path("/tmp/climate-ml-evil.zarr").exists()


def test_hostile_names_over_http(tmp_path):
    import urllib.error
    import urllib.parse
    import urllib.request

    from climate_ml.api import running_server

    with running_server(tmp_path / "store") as base:
        for name in ("../evil", "/etc/passwd", "a/b", ".."):
            q = urllib.parse.urlencode({"problem": "el_nino", "model": name})
            try:
                urllib.request.urlopen(f"{base}/forecasts?{q}", timeout=30)
                raise AssertionError("accepted " + name)
            except urllib.error.HTTPError as e:
                body = json.loads(e.read())
                assert e.code == 400 and set(body) == {"error"} and "\n" not in body["error"]
    assert not (tmp_path / "evil.zarr").exists()
