import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from climate_ml.archive import export, list_models, parse_init_range, query, write_forecast
from climate_ml.errors import QueryError, StoreError
from climate_ml.schema import INIT, LEAD, add_valid_time
from conftest import tree_digest


def fc(inits, value=0.5, leads=(1, 2, 3)):
    inits = pd.DatetimeIndex(inits)
    da = xr.DataArray(np.full((len(inits), len(leads)), value) + np.arange(len(leads)), dims=(INIT, LEAD),
                      coords={INIT: inits, LEAD: list(leads)})
    return add_valid_time(da)


def test_write_query_roundtrip_and_idempotent(store):
    assert write_forecast(store, "el_nino", "m1", fc(["2020-01-01", "2020-02-01"]), {"model": "m1"}) == "created"
    before = tree_digest(store / "archive")
    assert write_forecast(store, "el_nino", "m1", fc(["2020-01-01"]), {"model": "m1"}) == "unchanged"
    assert tree_digest(store / "archive") == before
    assert write_forecast(store, "el_nino", "m1", fc(["2020-03-01"]), {"model": "m1"}) == "updated"
    write_forecast(store, "el_nino", "m2", fc(["2020-02-01"], 1.0), {"model": "m2"})
    ds = query(store, "el_nino", init="2020-02:2020-03", lead=2)
    assert list(ds.model.values) == ["m1", "m2"]
    assert ds.sizes[INIT] == 2 and list(ds[LEAD].values) == [2]
    assert float(ds.forecast.sel(model="m2", init_time="2020-02-01", lead=2)) == pytest.approx(2.0)
    assert pd.Timestamp(ds.valid_time.sel(init_time="2020-03-01", lead=2).values) == pd.Timestamp("2020-05-01")
    assert list_models(store, "el_nino") == ["m1", "m2"]


def test_different_forecast_needs_replace(store):
    write_forecast(store, "el_nino", "m1", fc(["2020-01-01"]), {})
    before = tree_digest(store / "archive")
    with pytest.raises(StoreError, match="different m1 forecast for init 2020-01"):
        write_forecast(store, "el_nino", "m1", fc(["2020-01-01"], 9.0), {})
    assert tree_digest(store / "archive") == before
    assert write_forecast(store, "el_nino", "m1", fc(["2020-01-01"], 9.0), {}, replace=True) == "updated"
    assert float(query(store, "el_nino").forecast.max()) == pytest.approx(11.0)


def test_exports(store, tmp_path):
    write_forecast(store, "el_nino", "m1", fc(["2020-01-01"]), {"model": "m1", "input": {"a": 1}})
    ds = query(store, "el_nino")
    csv = export(ds, "csv").decode().splitlines()
    assert csv[0] == "model,init_time,lead,valid_time,forecast"
    assert csv[1] == "m1,2020-01,1,2020-02,0.5000"
    recs = json.loads(export(ds, "json"))
    assert recs[2] == {"model": "m1", "init_time": "2020-01", "lead": 3, "valid_time": "2020-04", "forecast": 2.5}
    (tmp_path / "q.nc").write_bytes(export(ds, "netcdf"))
    nc = xr.open_dataset(tmp_path / "q.nc")
    assert float(nc.forecast.sel(lead=3).squeeze()) == pytest.approx(2.5)


@pytest.mark.parametrize("text,pattern", [
    ("2020-13", "not YYYY-MM"), ("202", "not YYYY-MM"), ("2020-01:2019-01", "end before start"),
    ("a:b:c", "expected YYYY-MM"), ("0001-01", "year 0001 is outside 1678..2261"), ("9999", "outside 1678..2261"),
])
def test_bad_init_range(text, pattern):
    with pytest.raises(QueryError, match=pattern):
        parse_init_range(text)


def test_a_year_is_the_whole_year():
    assert parse_init_range("2020") == (pd.Timestamp("2020-01-01"), pd.Timestamp("2020-12-01"))
    assert parse_init_range("2019:2020-03") == (pd.Timestamp("2019-01-01"), pd.Timestamp("2020-03-01"))


def test_bad_query_parameters(store):
    with pytest.raises(QueryError, match="no forecasts archived for problem 'el_nino'"):
        query(store, "el_nino")
    write_forecast(store, "el_nino", "m1", fc(["2020-01-01"]), {})
    with pytest.raises(QueryError, match="no forecasts from model 'zz'.*archived: m1"):
        query(store, "el_nino", model="zz")
    with pytest.raises(QueryError, match="lead 40 not archived"):
        query(store, "el_nino", lead=40)
    with pytest.raises(QueryError, match="unknown format 'xml'"):
        export(query(store, "el_nino"), "xml")


def test_forecasts_from_different_data_sets_are_kept_apart(store):
    """The toy hindcasts of `make demo` and a real-data forecast for the same init used to
    collide (the second refused without --replace, or mixed into one series with it)."""
    toy = fc(["2014-10-01"])
    real = toy + 1.0
    assert write_forecast(store, "el_nino", "m", toy, {"dataset": "toy-ocean"}) == "created"
    assert write_forecast(store, "el_nino", "m", real, {"dataset": "kaplan-local"}) == "created"
    a = query(store, "el_nino", model="m")  # the problem's default data set
    b = query(store, "el_nino", model="m", dataset="kaplan-local")
    assert float(b.forecast.sel(lead=1).squeeze()) == pytest.approx(float(a.forecast.sel(lead=1).squeeze()) + 1.0)
    with pytest.raises(QueryError, match="no forecasts archived for problem 'el_nino' on dataset 'ersst-v5' "
                                         "\\(archived data sets: kaplan-local, toy-ocean; give --dataset\\)"):
        query(store, "el_nino", dataset="ersst-v5")


def test_queries_during_writes_see_only_complete_states(store):
    """Readers used to see half a swap (HTTP 500 'cannot reshape array'): queries running while a
    writer grows the archive init by init always get a complete, consistent state."""
    import threading

    inits = pd.date_range("2000-01", periods=40, freq="MS")
    write_forecast(store, "el_nino", "m", fc(inits[:1]), {"dataset": "toy-ocean"})
    errors, sizes = [], []

    def writer():
        for k in range(2, len(inits) + 1):
            write_forecast(store, "el_nino", "m", fc(inits[:k]), {"dataset": "toy-ocean"})

    def reader():
        for _ in range(25):
            try:
                ds = query(store, "el_nino", model="m")
                n = ds.sizes[INIT]
                assert ds["forecast"].shape == (1, n, 3) and bool(ds["forecast"].notnull().all())
                sizes.append(n)
            except Exception as exc:  # noqa: BLE001 - any failure of a reader is the bug
                errors.append(repr(exc))

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(sizes) == 75 and max(sizes) <= len(inits)


def _season(init, total, probs, cats=("below", "near", "above")):
    return xr.Dataset({"season_forecast": (INIT, [total]), "season_probability": ((INIT, "category"), [list(probs)])},
                      coords={INIT: pd.DatetimeIndex([init]), "category": list(cats)})


def _terciles(init, leads=(1, 2, 3)):
    return xr.DataArray(np.full((1, len(leads), 3), 1 / 3), dims=(INIT, LEAD, "category"),
                        coords={INIT: pd.DatetimeIndex([init]), LEAD: list(leads), "category": ["below", "near", "above"]})


def test_season_outlooks_join_a_group_that_had_none_and_leave_gaps_as_nan(store):
    """Rainfall's November-March outlook exists for August-November inits only: a group written
    without it gains it (empty for the earlier inits), a later init without it stays empty, and
    categories that differ from the group's are refused with nothing changed."""
    write_forecast(store, "california_rainfall", "m", fc(["2020-01-01"]), {"kind": "forecast"},
                   probabilities=_terciles("2020-01-01"))
    write_forecast(store, "california_rainfall", "m", fc(["2020-08-01"]), {"kind": "forecast"},
                   probabilities=_terciles("2020-08-01"), season=_season("2020-08-01", 410.0, (0.2, 0.3, 0.5)))
    write_forecast(store, "california_rainfall", "m", fc(["2021-02-01"]), {"kind": "forecast"},
                   probabilities=_terciles("2021-02-01"))
    ds = query(store, "california_rainfall", "m").isel(model=0)
    assert np.isnan(ds["season_forecast"].values[[0, 2]]).all() and float(ds["season_forecast"][1]) == 410.0
    assert ds["season_probability"].sel(init_time="2020-08-01").values.tolist() == [0.2, 0.3, 0.5]
    assert ds["season_forecast"].attrs["units"] == "mm"
    before = tree_digest(store / "archive")
    with pytest.raises(StoreError, match="season categories"):
        write_forecast(store, "california_rainfall", "m", fc(["2021-08-01"]), {"kind": "forecast"},
                       probabilities=_terciles("2021-08-01"),
                       season=_season("2021-08-01", 300.0, (0.3, 0.3, 0.4), cats=("dry", "normal", "wet")))
    assert tree_digest(store / "archive") == before
