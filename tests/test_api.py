"""The HTTP service as a client sees it: a real uvicorn server on loopback over a real store."""

import json
import time
import urllib.error
import urllib.request

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from climate_ml.archive import write_forecast
from climate_ml.schema import INIT, LEAD, add_valid_time
from conftest import running_api

pytestmark = pytest.mark.slow


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.headers.get("content-type"), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type"), e.read()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    store = tmp_path_factory.mktemp("api") / "store"
    inits = pd.date_range("2020-01", periods=3, freq="MS")
    fc = add_valid_time(xr.DataArray(np.arange(3 * 18, dtype=float).reshape(3, 18) / 10, dims=(INIT, LEAD),
                                     coords={INIT: inits, LEAD: list(range(1, 19))}))
    write_forecast(store, "el_nino", "m1", fc, {"model": "m1"})
    with running_api(store) as base:
        yield base


def test_forecasts_as_json_csv_and_netcdf(server, tmp_path):
    status, ctype, body = get(server + "/forecasts?problem=el_nino&init=2020-02:2020-03&lead=6")
    assert status == 200 and ctype.startswith("application/json")
    rows = json.loads(body)
    assert [(r["init_time"], r["lead"], r["valid_time"]) for r in rows] == [("2020-02", 6, "2020-08"), ("2020-03", 6, "2020-09")]
    assert rows[0]["forecast"] == pytest.approx(2.3)
    status, ctype, body = get(server + "/forecasts?problem=el_nino&model=m1&lead=1&format=csv")
    assert status == 200 and ctype.startswith("text/csv")
    assert body.decode().splitlines()[:2] == ["model,init_time,lead,valid_time,forecast", "m1,2020-01,1,2020-02,0.0000"]
    status, ctype, body = get(server + "/forecasts?problem=el_nino&format=netcdf")
    (tmp_path / "f.nc").write_bytes(body)
    assert status == 200 and xr.open_dataset(tmp_path / "f.nc").sizes[INIT] == 3


@pytest.mark.parametrize("query,message", [
    ("problem=snow", "unknown problem 'snow'"),
    ("problem=el_nino&init=2020-13", "bad init '2020-13'"),
    ("problem=el_nino&lead=0", "bad lead 0"),
    ("problem=el_nino&lead=40", "lead 40 not archived"),
    ("problem=el_nino&model=zz", "no forecasts from model 'zz'"),
    ("problem=el_nino&format=xml", "bad format 'xml'"),
])
def test_bad_query_parameters_are_400_with_one_line(server, query, message):
    status, ctype, body = get(server + "/forecasts?" + query)
    err = json.loads(body)["error"]
    assert status == 400 and message in err and "\n" not in err


def test_leaderboard_without_runs_is_a_clear_400(server):
    status, _, body = get(server + "/leaderboard?problem=el_nino")
    assert status == 400 and "no backtests recorded for problem 'el_nino'" in json.loads(body)["error"]
    status, _, body = get(server + "/leaderboard?problem=el_nino&score=brier")
    assert status == 400 and "bad score 'brier'" in json.loads(body)["error"]


@pytest.mark.parametrize("query,message", [
    ("problem=el_nino&init=0001-01", "year 0001 is outside 1678..2261"),
    ("problem=el_nino&init=2300", "year 2300 is outside 1678..2261"),
    ("problem=el_nino&lead=six", "bad lead 'six'"),
    ("problem=el_nino&lead=1.5", "bad lead '1.5'"),
    ("problem=el_nino&lead=1,0", "bad lead 0"),
    ("problem=el_nino&valid=2020-13", "bad valid '2020-13'"),
    ("problem=el_nino&as_of=yesterday", "bad as_of 'yesterday': neither a date"),
    ("problem=el_nino&as_of=../../etc", "bad as_of '../../etc'"),
    ("problem=el_nino&as_of=1999-01-01", "the archive of el_nino begins"),
    ("problem=el_nino&format=zarr", "bad format 'zarr'"),
    ("problem=el_nino&box=north", "bad box 'north'"),
    ("problem=el_nino&box=10,0,0,30", "latitudes must satisfy"),
    ("problem=el_nino&box=0,10,0,30", "'m1' forecasts an index"),
])
def test_every_bad_input_is_a_400_in_one_shape(server, query, message):
    """Out-of-range years were a 500, type errors FastAPI's 422 {"detail": ...}."""
    status, _, body = get(server + "/forecasts?" + query)
    payload = json.loads(body)
    assert status == 400 and set(payload) == {"error"} and message in payload["error"], payload
    status, _, body = get(server + "/leaderboard?problem=el_nino&n_boot=many")
    assert status == 400 and "bad n_boot 'many'" in json.loads(body)["error"]
    status, _, body = get(server + "/nowhere")
    assert status == 404 and set(json.loads(body)) == {"error"}


@pytest.mark.parametrize("path,message", [
    # a misspelt parameter used to be ignored: ?modle=zz answered with every model's forecasts
    ("/forecasts?problem=el_nino&modle=zz", "unknown query parameter 'modle' for /forecasts (known: problem, model,"),
    ("/plume?problem=el_nino&init=2020-01", "unknown query parameter 'init' for /plume (known: problem, dataset)"),
    ("/archive/history?problem=el_nino&limit=5&since=2020", "unknown query parameter 'since' for /archive/history"),
    ("/health?verbose=1", "unknown query parameter 'verbose' for /health (known: none)"),
    ("/forecasts?lead=1", "missing query parameter 'problem'"),
    ("/leaderboard", "missing query parameter 'problem'"),
])
def test_unknown_and_missing_parameters_are_a_400_naming_them(server, path, message):
    status, _, body = get(server + path)
    payload = json.loads(body)
    assert status == 400 and set(payload) == {"error"} and message in payload["error"], payload
    # the page keeps its own parameters (the form's state), and the same queries spelt right still answer
    status, ctype, _ = get(server + "/?problem=el_nino&score=rmse")
    assert status == 200 and ctype.startswith("text/html")
    status, _, body = get(server + "/forecasts?problem=el_nino&model=m1&lead=1")
    assert status == 200 and len(json.loads(body)) == 3


def test_history_several_leads_and_the_standard_layouts(server, tmp_path):
    status, _, body = get(server + "/archive/history?problem=el_nino")
    log = json.loads(body)
    assert status == 200 and log[0]["message"].startswith("forecast m1 on toy-ocean: 3 new init(s)")
    status, _, body = get(server + f"/forecasts?problem=el_nino&lead=1,18&as_of={log[0]['written_at'][:10]}")
    rows = json.loads(body)
    assert status == 200 and sorted({r["lead"] for r in rows}) == [1, 18] and len(rows) == 6
    for fmt, dim in (("climpred", "init"), ("weatherbench2", "prediction_timedelta")):
        status, ctype, body = get(server + f"/forecasts?problem=el_nino&format={fmt}")
        (tmp_path / f"{fmt}.nc").write_bytes(body)
        assert status == 200 and ctype == "application/x-netcdf" and dim in xr.open_dataset(tmp_path / f"{fmt}.nc").dims
    status, _, body = get(server + "/archive?problem=el_nino")
    assert status == 200 and [(m["model"], m["n_inits"], m["kinds"]) for m in json.loads(body)["models"]] == \
        [("m1", 3, {"forecast": 3})]
    status, _, body = get(server + "/monitoring?problem=el_nino")
    assert status == 200 and json.loads(body)["rows"] == []


@pytest.mark.parametrize("args,message", [
    ("in use", "cannot listen on 127.0.0.1:{port}: Address already in use"),
    (["--host", "192.0.2.1"], "cannot listen on 192.0.2.1:8000: Cannot assign requested address"),  # not this machine's
    (["--host", "no-such-host.invalid"], "bad --host 'no-such-host.invalid': "),
])
def test_serve_api_that_cannot_listen_is_one_line(server, tmp_path, args, message):
    """uvicorn logged 'ERROR: [Errno 98] ...' and exited 3."""
    import subprocess
    import sys

    port = int(server.rsplit(":", 1)[1])  # the running server's port
    if args == "in use":
        args = ["--port", str(port)]
    p = subprocess.run([sys.executable, "-m", "climate_ml.cli", "serve-api", *args, "--store", str(tmp_path / "s")],
                       capture_output=True, text=True, timeout=120)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: " + message.format(port=port)), p.stderr
    assert get(server + "/health")[0] == 200 and not (tmp_path / "s").exists()


def test_damaged_stored_data_is_a_500_that_names_no_path(tmp_path):
    """A damaged archive was a 400, as if the request were wrong, with the store's paths in it."""
    import icechunk

    from climate_ml.store import Store

    store = tmp_path / "store"
    inits = pd.date_range("2020-01", periods=2, freq="MS")
    for k in range(2):
        fc = add_valid_time(xr.DataArray(np.zeros((1, 18)), dims=(INIT, LEAD),
                                         coords={INIT: inits[k:k + 1], LEAD: list(range(1, 19))}))
        write_forecast(store, "el_nino", "m1", fc, {"model": "m1"})
    folder = Store.at(store).archive("el_nino").path
    latest = folder / "snapshots" / icechunk.Repository.open(icechunk.local_filesystem_storage(str(folder))).lookup_branch("main")
    latest.write_bytes(latest.read_bytes()[:50])
    with running_api(store) as base:
        status, _, body = get(base + "/forecasts?problem=el_nino")
        assert status == 500 and json.loads(body) == {
            "error": "stored data needed for this request cannot be read (damaged); the server log names it"}
        assert get(base + "/health")[0] == 200


def test_health_shows_no_internals(server):
    status, _, body = get(server + "/health")
    assert status == 200 and set(json.loads(body)) == {"status", "version", "warm"}
    assert "/" not in json.loads(body)["version"]
    for _ in range(120):  # the server warms its caches (archive snapshots, default leaderboards) at start
        if json.loads(get(server + "/health")[2])["warm"]:
            break
        time.sleep(0.25)
    else:
        raise AssertionError("the server never finished warming up")


def test_concurrent_mixed_load_never_crashes_the_server(server, tmp_path):
    """HDF5 under netCDF4 is not thread-safe: concurrent NetCDF downloads used to kill the
    server with a segmentation fault. 8 clients x 30 mixed requests: no error, no crash."""
    import concurrent.futures

    urls = [server + "/forecasts?problem=el_nino&format=netcdf", server + "/forecasts?problem=el_nino&format=csv",
            server + "/forecasts?problem=el_nino&lead=3", server + "/leaderboard?problem=el_nino", server + "/"]
    expected = {0: 200, 1: 200, 2: 200, 3: 400, 4: 200}  # no backtest is recorded in this store: a clear 400

    def client(k):
        return [(i % len(urls), get(urls[i % len(urls)])[0]) for i in range(k, k + 30)]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = [r for batch in pool.map(client, range(8)) for r in batch]
    assert len(results) == 240
    assert all(status == expected[i] for i, status in results), [r for r in results if r[1] != expected[r[0]]][:3]
    assert get(server + "/health")[0] == 200  # still alive


def test_leaderboard_is_cached_but_follows_new_records(tmp_path):
    """The board is computed once per state; a newly recorded backtest shows at once."""
    from climate_ml.backtest import backtest
    from climate_ml.ingest import standardise
    from climate_ml.leaderboard import record_backtest
    from climate_ml.problems.el_nino import ElNino
    from climate_ml.synthetic import toy_ocean
    from climate_ml.workflows import MODELS_DIR

    store = tmp_path / "store"
    problem = ElNino(leads=(1, 3))
    prepared = problem.prepare(standardise(toy_ocean(start="1960-01", end="1990-12"), "sst"))

    def record(names):
        files = {n: MODELS_DIR / f"{n}.py" for n in names}
        res = backtest(problem, files, prepared, "1984-01", "1989-12", 72)
        record_backtest(store, problem, res, "toy", "sha", "1984-01", "1989-12", 72, files)

    record(["persistence", "climatology"])
    with running_api(store) as base:
        url = base + "/leaderboard?problem=el_nino&reference=persistence&n_boot=100"
        first = json.loads(get(url)[2])
        assert json.loads(get(url)[2]) == first  # the cached table is the computed one
        assert {r["model"] for r in first["rows"]} == {"persistence", "climatology"}
        record(["damped_persistence"])
        assert {r["model"] for r in json.loads(get(url)[2])["rows"]} == {"persistence", "climatology", "damped_persistence"}
