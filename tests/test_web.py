"""The leaderboard web page in a real browser: headless Chromium (Debian's chromium and
chromium-driver, installed by `make test`) driven by Selenium against `climate-ml serve-api`
on loopback, over a store with a recorded backtest."""

import json
import urllib.error
import urllib.request

import pytest

from climate_ml.backtest import backtest
from climate_ml.ingest import standardise
from climate_ml.leaderboard import record_backtest
from climate_ml.problems.el_nino import ElNino
from climate_ml.synthetic import toy_ocean
from climate_ml.workflows import MODELS_DIR
from conftest import board_cells as _table
from conftest import keep_screenshot, running_api
from conftest import wait_until as _wait

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    store = tmp_path_factory.mktemp("web") / "store"
    problem = ElNino(leads=(1, 3, 6))
    prepared = problem.prepare(standardise(toy_ocean(start="1950-01", end="1995-12"), "sst"))
    files = {n: MODELS_DIR / f"{n}.py" for n in ("persistence", "climatology", "damped_persistence", "lightgbm_lagged")}
    res = backtest(problem, files, prepared, "1980-01", "1994-12", 60)
    record_backtest(store, problem, res, "toy", "sha", "1980-01", "1994-12", 60, files)
    archive_and_monitor(store, res)
    with running_api(store) as base:
        yield base


def archive_and_monitor(store, res):
    """Hindcasts of two models in the archive, and a running skill with one drifting lead."""
    import numpy as np
    import xarray as xr

    from climate_ml.archive import write_forecast, write_monitoring
    from climate_ml.schema import add_valid_time

    for name in ("lightgbm_lagged", "persistence"):
        write_forecast(store, "el_nino", name, res.forecasts[name], {"kind": "hindcast"}, observed=res.obs)
        live = res.forecasts[name].isel(init_time=[-1])  # issued live from the month after the hindcasts
        live = live.assign_coords(init_time=live.init_time + np.timedelta64(31, "D")).drop_vars("valid_time")
        live = live.assign_coords(init_time=live.init_time.dt.floor("D") - (live.init_time.dt.day - 1) * np.timedelta64(1, "D"))
        probs = xr.DataArray(np.array([[[0.2, 0.3, 0.5], [0.25, 0.35, 0.4], [0.3, 0.4, 0.3]]]),
                             dims=("init_time", "lead", "category"),
                             coords={"init_time": live.init_time.values, "lead": [1, 3, 6],
                                     "category": ["la_nina", "neutral", "el_nino"]})
        write_forecast(store, "el_nino", name, add_valid_time(live), {"kind": "forecast"},
                       probabilities=probs if name == "lightgbm_lagged" else None)
    status = np.array([["ok", "drift", "too few cases"]], dtype=object)
    skill = xr.Dataset({"live": (("model", "lead"), [[0.3, 0.9, np.nan]]), "n": (("model", "lead"), [[20, 20, 3]]),
                        "backtest": (("model", "lead"), [[0.3, 0.4, 0.5]]),
                        "backtest_lo": (("model", "lead"), [[0.25, 0.35, 0.45]]),
                        "backtest_hi": (("model", "lead"), [[0.35, 0.45, 0.55]]), "status": (("model", "lead"), status)},
                       coords={"model": ["lightgbm_lagged"], "lead": [1, 3, 6]},
                       attrs={"problem": "el_nino", "dataset": "toy-ocean", "score": "rmse", "min_cases": 12,
                              "verified_through": "1995-12"})
    write_monitoring(store, "el_nino", "toy-ocean", skill)
    maps = skill.assign(live=(("model", "lead"), [[0.4, 0.5, 2.5]]), n=(("model", "lead"), [[14, 14, 14]]),
                        status=(("model", "lead"), np.array([["ok", "ok", "drift"]], dtype=object)))
    maps = maps.assign_coords(model=["convlstm_sea_ice"]).assign_attrs(problem="arctic_sea_ice", dataset="toy-sea-ice",
                                                                         score="iiee", verified_through="2024-12")
    write_monitoring(store, "arctic_sea_ice", "toy-sea-ice", maps, kind="maps")  # live concentration maps


def test_page_shows_the_leaderboard_table_and_chart(browser, site, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(site + "/?problem=el_nino&score=acc")
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#board tbody tr")) == 4)
    api = json.loads(urllib.request.urlopen(site + "/leaderboard?problem=el_nino&score=acc").read())
    table = _table(browser)
    assert set(table) == {"persistence", "climatology", "damped_persistence", "lightgbm_lagged"}
    for row in api["rows"]:  # the page shows exactly what the API computed
        assert table[row["model"]] == [f"{row['leads'][k]['score']:.2f}" for k in ("1", "3", "6")]
    assert len(browser.find_elements(By.CSS_SELECTOR, "#board td.leader")) == 3  # one leader per lead
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chart path.series")) == 4
    assert "damped_persistence" in browser.find_element(By.ID, "meta").text
    # the score menu is every registered metric, then the map scores, as /metrics lists them
    from climate_ml.scores import MAP_METRICS, METRICS

    options = [o.get_attribute("value") for o in browser.find_elements(By.CSS_SELECTOR, "#score option")]
    assert options == [*METRICS, *MAP_METRICS]
    # switch to RMSE through the form, as a user would
    Select(browser.find_element(By.ID, "score")).select_by_value("rmse")
    browser.find_element(By.ID, "load").click()
    api = json.loads(urllib.request.urlopen(site + "/leaderboard?problem=el_nino&score=rmse").read())
    want = {r["model"]: [f"{r['leads'][k]['score']:.2f}" for k in ("1", "3", "6")] for r in api["rows"]}
    _wait(browser, lambda d: _table(d) == want)
    assert "score=rmse" in browser.current_url
    shot = keep_screenshot(browser, "leaderboard")
    assert shot.stat().st_size > 10_000


def test_page_draws_reliability_diagrams_of_the_recorded_backtest(browser, site, tmp_path):
    """One diagram per scored category; every model's dots are exactly the bins the backtest
    recorded; another problem (nothing recorded) clears them."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(site + "/?problem=el_nino&score=acc")
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#reliability svg.reliability")) == 2)
    api = json.loads(urllib.request.urlopen(site + "/leaderboard?problem=el_nino&score=acc").read())
    drawn = browser.execute_script(
        "const out = {}; for (const c of document.querySelectorAll('#reliability circle.rel-point')) {"
        " const key = c.closest('svg').dataset.category + '/' + c.dataset.model;"
        " (out[key] = out[key] || []).push(Number(c.dataset.n)); } return out;")
    want = {f"{cat}/{row['model']}": [b["n"] for b in bins if b["n"] > 0]
            for row in api["rows"] for cat, bins in row["source"]["reliability"].items()}
    assert set(want) == {f"{c}/{m}" for c in ("el_nino", "la_nina")
                         for m in ("persistence", "climatology", "damped_persistence", "lightgbm_lagged")}
    assert drawn == want
    assert len(browser.find_elements(By.CSS_SELECTOR, "#reliability path.rel-line")) == 8
    browser.execute_script("arguments[0].scrollIntoView()", browser.find_element(By.ID, "reliability"))
    assert keep_screenshot(browser.find_element(By.ID, "reliability"), "reliability").stat().st_size > 5_000
    Select(browser.find_element(By.ID, "problem")).select_by_value("arctic_sea_ice")
    browser.find_element(By.ID, "load").click()
    _wait(browser, lambda d: not d.find_elements(By.CSS_SELECTOR, "#reliability svg"))
    assert browser.find_element(By.ID, "reliability-meta").text == ""


def test_page_lists_the_archive_with_downloads_and_the_live_skill(browser, site, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(site + "/?problem=el_nino")
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#archive tbody tr")) == 2)
    rows = browser.execute_script("return Array.from(document.querySelectorAll('#archive tbody tr'))"
                                  ".map(r => Array.from(r.cells).map(c => c.textContent))")
    api = json.loads(urllib.request.urlopen(site + "/archive?problem=el_nino").read())
    assert [r[:6] for r in rows] == [[m["model"], str(m["n_inits"]), m["first"], m["last"],
                                      ", ".join(f"{k} {n}" for k, n in m["kinds"].items()), str(m["observed"])]
                                     for m in api["models"]]
    assert rows[0][0] == "lightgbm_lagged" and rows[0][2:5] == ["1980-01", "1995-01", "forecast 1, hindcast 180"]
    link = browser.find_element(By.CSS_SELECTOR, "#archive tbody tr[data-model=persistence] a:last-child").get_attribute("href")
    with urllib.request.urlopen(link) as r:  # the download link works and is the model's CSV
        lines = r.read().decode().splitlines()
    assert lines[0] == "model,init_time,lead,valid_time,forecast,observed" and lines[1].startswith("persistence,1980-01,1,")
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#monitoring tbody tr")) == 3)
    drift = browser.find_elements(By.CSS_SELECTOR, "#monitoring td.drift")
    assert [d.text for d in drift] == ["drift"]
    assert "1 (model, lead) drifting" in browser.find_element(By.ID, "monitoring-meta").text
    cells = browser.execute_script("return Array.from(document.querySelectorAll('#monitoring tbody tr'))"
                                   ".map(r => r.cells[2].textContent)")
    assert cells == ["rmse", "rmse", "rmse"]  # each row names its score
    keep_screenshot(browser, "archive")
    # the live concentration maps' running IIEE, kept by verify beside the index forecasts' skill
    browser.get(site + "/?problem=arctic_sea_ice&dataset=toy-sea-ice")
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#monitoring tbody tr")) == 3)
    rows = browser.execute_script("return Array.from(document.querySelectorAll('#monitoring tbody tr'))"
                                  ".map(r => Array.from(r.cells).map(c => c.textContent))")
    assert [r[:4] for r in rows] == [["convlstm_sea_ice", "1", "iiee", "0.40"], ["convlstm_sea_ice", "3", "iiee", "0.50"],
                                     ["convlstm_sea_ice", "6", "iiee", "2.50"]] and rows[2][-1] == "drift"
    meta = browser.find_element(By.ID, "monitoring-meta").text
    assert meta.startswith("iiee of forecasts issued live, verified through 2024-12") and "1 (model, lead) drifting" in meta


def test_page_draws_the_latest_forecasts_with_the_observed_history(browser, site, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(site + "/?problem=el_nino")
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#plume path.forecast")) == 2)
    api = json.loads(urllib.request.urlopen(site + "/plume?problem=el_nino").read())
    assert api["init"] == "1995-01" and [f["model"] for f in api["models"]] == ["lightgbm_lagged", "persistence"]
    assert len(api["observed"]) == 24 and api["observed"][-1]["valid"] == "1995-01"
    drawn = browser.execute_script("return Array.from(document.querySelectorAll('#plume path')).map(p => "
                                   "[p.getAttribute('class'), p.getAttribute('d').split(' ').length])")
    assert sorted(drawn) == [["forecast", 3], ["forecast", 3], ["observed", 24]]  # 3 leads each, 24 months seen
    assert len(browser.find_elements(By.CSS_SELECTOR, "#plume line.threshold")) == 2  # -0.5 and +0.5
    assert "from 1995-01" in browser.find_element(By.ID, "plume-meta").text
    bars = browser.execute_script("return Array.from(document.querySelectorAll('#probs rect.prob')).map(r => "
                                  "[r.dataset.lead, r.dataset.category, Number(r.dataset.value), r.getBBox().height])")
    assert [(b[0], b[1], b[2]) for b in bars[:3]] == [("1", "la_nina", 0.2), ("1", "neutral", 0.3), ("1", "el_nino", 0.5)]
    assert len(bars) == 9 and "mean of lightgbm_lagged" in browser.find_element(By.ID, "probs-meta").text
    for lead in ("1", "3", "6"):  # each lead's bar is full height: the probabilities sum to one
        assert sum(b[3] for b in bars if b[0] == lead) == pytest.approx(124, abs=0.01)
    plot = browser.find_element(By.ID, "plume")
    browser.execute_script("arguments[0].scrollIntoView()", plot)
    keep_screenshot(plot, "plume")
    # another problem, another drawing: nothing is archived for sea ice here
    Select(browser.find_element(By.ID, "problem")).select_by_value("arctic_sea_ice")
    browser.find_element(By.ID, "load").click()
    _wait(browser, lambda d: "no live forecast of arctic_sea_ice" in d.find_element(By.ID, "plume-meta").text)
    assert browser.find_elements(By.CSS_SELECTOR, "#plume path") == []


def test_page_shows_bad_parameters_as_one_line(browser, site):
    from selenium.webdriver.common.by import By

    browser.get(site + "/?problem=snow")
    _wait(browser, lambda d: d.find_element(By.ID, "error").text != "")
    assert "unknown problem 'snow'" in browser.find_element(By.ID, "error").text
    assert browser.find_elements(By.CSS_SELECTOR, "#board tbody tr") == []
    browser.get(site + "/?problem=el_nino&reference=nobody")
    _wait(browser, lambda d: d.find_element(By.ID, "error").text != "")
    assert "reference 'nobody' is not on this leaderboard" in browser.find_element(By.ID, "error").text


HOSTILE_MODEL = 'x<img src=x onerror="document.title=\'pwned\'">'


@pytest.fixture(scope="module")
def ice_site(tmp_path_factory):
    """Four-member concentration maps of a field model on a 12 x 16 polar grid, three inits, the
    last not yet verified: ice west of column 8 in every member, half the members at column 8,
    open water east of it; the observed ice stops at column 7; three land cells."""
    import numpy as np
    import pandas as pd
    import xarray as xr

    from climate_ml.archive import write_forecast
    from climate_ml.schema import add_valid_time

    store = tmp_path_factory.mktemp("ice") / "store"
    ny, nx, inits = 12, 16, pd.date_range("2020-01", periods=3, freq="MS")
    conc = np.zeros((3, 6, 4, ny, nx))
    conc[..., :8] = 0.9
    conc[..., :2, :, 8] = 0.9
    conc[..., 0, :3] = np.nan
    seen = np.zeros((3, 6, ny, nx))
    seen[..., :7] = 0.8
    seen[..., 0, :3] = np.nan
    seen[2] = np.nan  # the last init's outcomes are not observed yet
    lat, lon = np.meshgrid(np.linspace(85, 60, ny), np.linspace(0, 300, nx), indexing="ij")
    coords = {"init_time": inits, "lead": list(range(1, 7)), "y": np.arange(ny), "x": np.arange(nx)}
    fc = add_valid_time(xr.DataArray(conc, dims=("init_time", "lead", "member", "y", "x"), attrs={"units": "1"},
                                     coords={**coords, "member": np.arange(4), "lat": (("y", "x"), lat),
                                             "lon": (("y", "x"), lon)}))
    observed = xr.DataArray(seen, dims=("init_time", "lead", "y", "x"), coords=coords)
    write_forecast(store, "arctic_sea_ice", "icemodel", fc, {"kind": "hindcast"}, dataset="toy-sea-ice",
                   observed=observed)
    # an extent record for the seasonal cycle (1979-01..2020-10) and a live forecast from its last month
    from climate_ml.store import write_obs

    t = pd.date_range("1979-01", "2020-10", freq="MS")
    extent = 12 + 3.5 * np.cos(2 * np.pi * (t.month.values - 3) / 12) - 0.05 * (t.year.values - 1979)
    extent[t == pd.Timestamp("2012-09")] -= 1.5  # a record September
    write_obs(xr.Dataset({"extent": ("time", extent, {"units": "1e6 km2"})}, coords={"time": t}), store, "toy-sea-ice",
              {"source": "test"})
    live = add_valid_time(xr.DataArray(extent[-1] + np.arange(1.0, 7.0)[None], dims=("init_time", "lead"),
                                       coords={"init_time": t[-1:], "lead": list(range(1, 7))}))
    write_forecast(store, "arctic_sea_ice", "damped", live, {"kind": "forecast"}, dataset="toy-sea-ice")
    with running_api(store) as base:
        yield base


def test_page_draws_the_seasonal_cycle_with_records_and_forecasts(browser, ice_site):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    d = json.loads(urllib.request.urlopen(ice_site + "/seasonal?problem=arctic_sea_ice").read())
    assert list(d["years"]) == ["2018", "2019", "2020"] and len(d["years"]["2020"]) == 10
    assert d["climatology_years"] == [1981, 2010] and len(d["record_low"]) == 12
    september = next(r for r in d["record_low"] if r["month"] == 9)
    assert september["year"] == 2012
    assert d["forecasts"]["init"] == "2020-10" and [f["model"] for f in d["forecasts"]["models"]] == ["damped"]
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(ice_site + "/seasonal?problem=el_nino")
    assert err.value.code == 400 and "drawn for arctic_sea_ice" in json.loads(err.value.read())["error"]

    browser.get(ice_site + "/?problem=arctic_sea_ice")
    _wait(browser, lambda dr: len(dr.find_elements(By.CSS_SELECTOR, "#seasonal path.year")) == 3)
    paths = {p.get_attribute("data-key"): p.get_attribute("d") for p in browser.find_elements(By.CSS_SELECTOR, "#seasonal path")}
    assert paths["record"].count("L") == 11 and paths["climatology"].count("L") == 11  # one point a month
    assert paths["2020"].count("L") == 9  # January to October
    assert paths["damped"].count("M") == 2  # November-December, then January-April: wraps at the year's end
    assert "observed to 2020-10, with the forecasts from 2020-10" in browser.find_element(By.ID, "seasonal-meta").text
    keep_screenshot(browser.find_element(By.ID, "seasonal"), "seasonal-cycle")
    Select(browser.find_element(By.ID, "problem")).select_by_value("el_nino")
    browser.find_element(By.ID, "load").click()
    _wait(browser, lambda dr: not dr.find_elements(By.CSS_SELECTOR, "#seasonal path"))


def test_page_maps_the_probability_of_ice_with_the_observed_edge(browser, ice_site):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    d = json.loads(urllib.request.urlopen(ice_site + "/icemap?problem=arctic_sea_ice").read())
    assert (d["model"], d["init"], d["valid"], d["shape"], d["members"]) == ("icemodel", "2020-02", "2020-03", [12, 16], 4)
    p = d["probability"]
    assert p[0] is None and p[16 + 0] == 1.0 and p[16 + 8] == 0.5 and p[16 + 9] == 0.0
    for query, message in (("step=0", "bad step 0"), ("model=zz", "no concentration maps from model 'zz'"),
                           ("lead=9", "lead 9 not archived")):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(ice_site + "/icemap?problem=arctic_sea_ice&" + query)
        assert err.value.code == 400 and message in json.loads(err.value.read())["error"]

    browser.get(ice_site + "/?problem=arctic_sea_ice")
    _wait(browser, lambda dr: dr.find_element(By.ID, "icemap").get_attribute("data-cells") not in (None, "0"))
    canvas = browser.find_element(By.ID, "icemap")
    assert int(canvas.get_attribute("data-cells")) == sum(v is not None for v in p) == 12 * 16 - 3
    assert int(canvas.get_attribute("data-ice")) == sum(v is not None and v >= 0.5 for v in p) == 12 * 9 - 3
    # the observed edge: ice at column 6 beside open water at column 7, in every row
    assert int(canvas.get_attribute("data-edge")) == 12
    scale = int(canvas.get_attribute("data-scale"))

    def pixel(i, j):
        return browser.execute_script(
            "const c = document.getElementById('icemap');"
            "return Array.from(c.getContext('2d').getImageData(arguments[0], arguments[1], 1, 1).data.slice(0, 3));",
            j * scale + scale // 2, i * scale + scale // 2)

    assert pixel(0, 0) == [200, 200, 200]  # land
    assert pixel(5, 2) == [8, 48, 107]  # every member has ice
    assert pixel(5, 12) == [255, 255, 255]  # no member has ice
    assert pixel(5, 6) == [214, 39, 40]  # the observed edge
    assert "2020-03, from 2020-02 (lead 1)" in browser.find_element(By.ID, "icemap-meta").text
    browser.execute_script("arguments[0].scrollIntoView()", canvas)
    keep_screenshot(canvas, "ice-probability")
    Select(browser.find_element(By.ID, "problem")).select_by_value("el_nino")
    browser.find_element(By.ID, "load").click()
    _wait(browser, lambda dr: dr.find_element(By.ID, "icemap").get_attribute("data-cells") == "0")
    assert "no concentration maps archived for el_nino" in browser.find_element(By.ID, "icemap-meta").text


@pytest.fixture(scope="module")
def rain_site(tmp_path_factory):
    """Monthly precipitation 1950-01..2021-01 (the 2020-21 season three months in) and one model's
    archived season outlook from 2020-08."""
    import numpy as np
    import pandas as pd
    import xarray as xr

    from climate_ml.archive import write_forecast
    from climate_ml.problems import get_problem
    from climate_ml.schema import add_valid_time
    from climate_ml.store import write_obs

    store = tmp_path_factory.mktemp("rain") / "store"
    t = pd.date_range("1950-01", "2021-01", freq="MS")
    rng = np.random.default_rng(4)
    wet = np.isin(t.month, [11, 12, 1, 2, 3])
    precip = np.where(wet, rng.gamma(2.0, 45.0, len(t)), rng.gamma(1.0, 5.0, len(t)))
    write_obs(xr.Dataset({"precip": ("time", precip, {"units": "mm"})}, coords={"time": t}), store,
              get_problem("california_rainfall").default_dataset, {"source": "test"})
    init = pd.DatetimeIndex(["2020-08-01"])
    fc = add_valid_time(xr.DataArray(np.full((1, 7), 30.0), dims=("init_time", "lead"),
                                     coords={"init_time": init, "lead": list(range(1, 8))}))
    season = xr.Dataset({"season_forecast": ("init_time", [400.0]),
                         "season_probability": (("init_time", "category"), [[0.2, 0.3, 0.5]])},
                        coords={"init_time": init, "category": ["below", "near", "above"]})
    write_forecast(store, "california_rainfall", "seasonmodel", fc, {"kind": "forecast"}, season=season)
    with running_api(store) as base:
        yield base, pd.Series(precip, index=t)


def test_page_follows_the_wet_season_with_the_archived_outlooks(browser, rain_site):
    import numpy as np
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    base, precip = rain_site
    d = json.loads(urllib.request.urlopen(base + "/rainseason?problem=california_rainfall").read())
    assert (d["season"], d["last"], d["complete"]) == ("Nov 2020-Mar 2021", "2021-01", False)
    assert d["so_far"] == pytest.approx(precip["2020-11":"2021-01"].sum(), abs=0.1)
    totals = [precip[f"{y}-11":f"{y + 1}-03"].sum() for y in range(1950, 2020)]
    assert d["n_seasons"] == 70 and d["tercile_edges"] == pytest.approx(np.quantile(totals, [1 / 3, 2 / 3]), abs=0.1)
    assert d["outlooks"] == [{"model": "seasonmodel", "init": "2020-08", "forecast": 400.0,
                              "probability": {"below": 0.2, "near": 0.3, "above": 0.5}}]
    browser.get(base + "/?problem=california_rainfall")
    _wait(browser, lambda dr: dr.find_elements(By.CSS_SELECTOR, "#rain circle.outlook"))
    assert browser.find_element(By.CSS_SELECTOR, "#rain circle.outlook").get_attribute("data-total") == "400"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#rain rect.so-far")) == 1
    assert len(browser.find_elements(By.CSS_SELECTOR, "#rain line.tercile")) == 2
    texts = [t.text for t in browser.find_elements(By.CSS_SELECTOR, "#rain text")]
    assert "P(below/near/above) 0.20/0.30/0.50" in texts and "seasonmodel from 2020-08" in texts
    keep_screenshot(browser.find_element(By.ID, "rain"), "wet-season")
    Select(browser.find_element(By.ID, "problem")).select_by_value("el_nino")
    browser.find_element(By.ID, "load").click()
    _wait(browser, lambda dr: not dr.find_elements(By.CSS_SELECTOR, "#rain circle, #rain rect"))


@pytest.fixture(scope="module")
def hostile_site(tmp_path_factory):
    """A recorded backtest whose model and data set names are HTML: stored script injection if
    the page ever put names into the page as markup."""
    store = tmp_path_factory.mktemp("web-hostile") / "store"
    problem = ElNino(leads=(1, 3))
    prepared = problem.prepare(standardise(toy_ocean(start="1950-01", end="1990-12"), "sst"))
    files = {"persistence": MODELS_DIR / "persistence.py", HOSTILE_MODEL: MODELS_DIR / "damped_persistence.py"}
    res = backtest(problem, files, prepared, "1980-01", "1989-12", 60)
    record_backtest(store, problem, res, "<b>toy</b><script>document.title='pwned'</script>", "sha", "1980-01",
                    "1989-12", 60, files)
    with running_api(store) as base:
        yield base


def test_hostile_names_are_text_never_markup(browser, hostile_site, tmp_path):
    from selenium.webdriver.common.by import By

    with urllib.request.urlopen(hostile_site + "/") as r:
        csp = r.headers.get("Content-Security-Policy")
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    browser.get(hostile_site + "/?problem=el_nino&reference=persistence")
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#board tbody tr")) == 2)
    assert HOSTILE_MODEL in _table(browser)  # shown as its name, letter for letter
    assert browser.find_elements(By.CSS_SELECTOR, "#board img, #legend img, #meta b, #meta script") == []
    assert "<b>toy</b>" in browser.find_element(By.ID, "meta").text
    assert browser.title != "pwned"
    assert any(HOSTILE_MODEL in s.text for s in browser.find_elements(By.CSS_SELECTOR, "#legend span"))
    # the reliability diagrams name the same models: text there too
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#reliability svg.reliability"))
    assert any(HOSTILE_MODEL in s.text for s in browser.find_elements(By.CSS_SELECTOR, "#reliability-legend span"))
    assert browser.find_elements(By.CSS_SELECTOR, "#reliability img, #reliability-legend img, #reliability script") == []
    keep_screenshot(browser, "hostile-names")
