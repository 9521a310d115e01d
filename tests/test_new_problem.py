"""A new problem is one problem file plus one catalog entry (issue 11).

A toy monsoon (June-September rainfall forecast from March-May inits, with terciles) is written
as a file in a folder named by ``CLIMATE_ML_PROBLEMS`` and its data as one catalog entry; then,
as a user would, through the real command line, HTTP service and browser page: it is listed,
ingested, backtested (with its reference, the lookahead guard and the blend), recorded, archived,
forecast with its season outlook, ranked on the leaderboard and drawn on the page. No file of
the project is touched: the test checks that too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from climate_ml.catalog import catalog_dir
from conftest import board_cells, keep_screenshot, running_api, wait_until

ROOT = Path(__file__).resolve().parents[1]

PROBLEM_FILE = '''
from dataclasses import dataclass
from typing import ClassVar

from climate_ml.problems.seasonal_totals import SeasonalTotals


@dataclass
class ToyMonsoon(SeasonalTotals):
    name: str = "toy_monsoon"
    description: str = "Toy monsoon rainfall (mm): monthly totals at leads 1-6 and the Jun-Sep total from Mar-May inits"
    leads: tuple[int, ...] = tuple(range(1, 7))
    season_months: tuple[int, ...] = (6, 7, 8, 9)
    season_inits: tuple[int, ...] = (3, 4, 5)
    references: tuple[str, ...] = ("climatology",)
    run_schedule: ClassVar[tuple] = (("1990-01", 12), ("2005-01", 60))
    default_dataset: ClassVar[str] = "toy-monsoon-precip"
'''

CATALOG_ENTRY = """name: toy-monsoon-precip
description: A toy monsoon's monthly rainfall (mm), wet June-September, with a persistent anomaly.
source:
  path: {path}
format: monthly-csv
variable: precip
units: mm
standard_name: precipitation_amount
license: MIT (synthetic data written by the test)
citation: Synthetic
"""


def monsoon_rain(start="1950-01", end="2020-05", seed=11) -> pd.Series:
    """Monthly rain with a June-September wet season; a slow anomaly (AR(1), phi 0.9) scales every
    month, so the spring months carry information about the monsoon that follows."""
    t = pd.date_range(start, end, freq="MS")
    rng = np.random.default_rng(seed)
    z = np.zeros(len(t))
    for i in range(1, len(t)):
        z[i] = 0.9 * z[i - 1] + np.sqrt(1 - 0.81) * rng.normal()
    clim = np.array([10, 10, 15, 25, 60, 220, 300, 280, 180, 50, 15, 10], dtype=float)
    rain = clim[t.month - 1] * np.exp(0.6 * z) * rng.gamma(20.0, 1 / 20.0, len(t))
    return pd.Series(np.round(rain, 1), index=t, name="precip")


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """A user's folders: the problem file, a catalog with the one new entry, the data, a store."""
    base = tmp_path_factory.mktemp("monsoon")
    (base / "problems").mkdir()
    (base / "problems" / "toy_monsoon.py").write_text(PROBLEM_FILE)
    rain = monsoon_rain()
    csv = base / "monsoon.csv"
    rain.to_frame().to_csv(csv, index_label="month", date_format="%Y-%m-%d")
    catalog = base / "catalog"
    shutil.copytree(catalog_dir(), catalog)
    (catalog / "toy-monsoon-precip.yaml").write_text(CATALOG_ENTRY.format(path=csv))
    env = {"CLIMATE_ML_PROBLEMS": str(base / "problems"), "CLIMATE_ML_CATALOG": str(catalog),
           "CLIMATE_ML_STORE": str(base / "store")}
    with pytest.MonkeyPatch.context() as mp:  # the server started below inherits them
        for k, v in env.items():
            mp.setenv(k, v)
        yield base, rain


def cli(*args, ok=True) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "climate_ml.cli", *map(str, args)], capture_output=True, text=True,
                       env={**os.environ}, timeout=900)
    if ok:
        assert p.returncode == 0, p.stderr[-3000:]
    return p


def project_state() -> str:
    """What git sees of the project's own files (tracked changes and new files, not caches)."""
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--", "climate_ml", "catalog",
                           "models", "flows", "pyproject.toml"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout + subprocess.run(["git", "diff"], cwd=ROOT, capture_output=True,
                                                              text=True, check=True).stdout


def get(base: str, path: str):
    with urllib.request.urlopen(base + path, timeout=60) as r:
        return json.loads(r.read())


@pytest.mark.slow
def test_a_new_problem_is_one_file_and_one_catalog_entry(user, browser):
    base, rain = user
    project = project_state()

    listed = {p["name"]: p for p in json.loads(cli("problems", "--json").stdout)}
    assert list(listed)[:3] == ["el_nino", "arctic_sea_ice", "california_rainfall"]
    assert listed["toy_monsoon"]["default_dataset"] == "toy-monsoon-precip"
    assert listed["toy_monsoon"]["leads"] == [1, 2, 3, 4, 5, 6]

    # backtest: the default data set is ingested from the new catalog entry on first use
    model = ROOT / "models" / "lightgbm_lagged.py"
    p = cli("backtest", "toy_monsoon", model, "--test-start", "1990-01", "--test-end", "2019-12", "--refit-every", "60",
            "--archive", "--json")
    out = json.loads(p.stdout)
    assert (out["problem"], out["dataset"], out["leads"]) == ("toy_monsoon", "toy-monsoon-precip", [1, 2, 3, 4, 5, 6])
    assert set(out["references"]) == {"climatology"}
    acc = out["scores"]["acc"]
    assert acc["1"] > 0.3, acc  # the planted persistence is found at lead 1...
    assert acc["1"] > out["references"]["climatology"]["acc"]["1"]  # ...which climatology cannot use
    season = out["season"]
    assert season["n"]["all"] == 3 * len(range(1990, 2020)), season["n"]  # Mar, Apr and May inits of 1990-2019
    assert set(season["n"]) == {"Mar", "Apr", "May", "all"}
    assert -1 <= season["correlation"]["all"] <= 1 and season["rpss"]["all"] is not None
    for k in ("bss_upper_tercile", "rpss"):
        assert out["scores"][k]["1"] is not None
    record = Path(out["record"])
    assert record.is_dir() and record.is_relative_to(base / "store")

    # the leaderboard ranks it against the reference, with bootstrap intervals
    board = json.loads(cli("leaderboard", "toy_monsoon", "--json", "--n-boot", "200").stdout)
    rows = {r["model"]: r for r in board["rows"]}
    assert {"lightgbm_lagged", "climatology", "blend"} <= set(rows)
    assert board["reference"] == "climatology" and board["score"] == "acc"
    one = rows["lightgbm_lagged"]["leads"]["1"]
    assert one["ci"][0] < one["score"] < one["ci"][1] and one["score"] == acc["1"]
    assert one["significantly_better_than_reference"] is True  # the planted signal, against climatology

    # a live forecast from April: monthly terciles and the Jun-Sep outlook, archived
    fc = json.loads(cli("forecast", "toy_monsoon", model, "--init", "2020-04", "--json").stdout)
    assert (fc["problem"], fc["init_time"], fc["archive"]) == ("toy_monsoon", "2020-04", "updated")
    assert [r["valid_time"] for r in fc["forecast"]] == [f"2020-{m:02d}" for m in range(5, 11)]
    assert fc["season"]["months"] == "Jun-Sep"
    probs = fc["season"]["probability"]
    assert set(probs) == {"below", "near", "above"} and sum(probs.values()) == pytest.approx(1, abs=0.002)
    nc = base / "hindcast-2000-04.nc"
    cli("archive", "query", "--problem", "toy_monsoon", "--model", "lightgbm_lagged", "--init", "2000-04",
        "--format", "netcdf", "-o", nc)
    with xr.open_dataset(nc) as hind:
        assert hind["prov_kind"].values.ravel().tolist() == ["hindcast"]
        assert hind["prov_dataset"].values.ravel().tolist() == ["toy-monsoon-precip"]
        assert float(hind["observed"].sel(lead=1).squeeze()) == pytest.approx(rain["2000-05"], abs=0.05)
    live = base / "forecast-2020-04.nc"
    cli("archive", "query", "--problem", "toy_monsoon", "--model", "lightgbm_lagged", "--init", "2020-04",
        "--format", "netcdf", "-o", live)
    with xr.open_dataset(live) as ds:
        assert ds["prov_kind"].values.ravel().tolist() == ["forecast"]
        assert float(ds["season_forecast"].squeeze()) == pytest.approx(fc["season"]["forecast"], abs=0.05)
        assert ds["season_forecast"].attrs["season"] == "Jun-Sep"

    # the HTTP service and the page know it without being told
    with running_api(base / "store") as url:
        problems = {p["name"]: p for p in get(url, "/problems")}
        assert problems["toy_monsoon"]["panels"] == ["season"]
        season_now = get(url, "/rainseason?problem=toy_monsoon")
        assert (season_now["season_months"], season_now["last"]) == ("Jun-Sep", "2020-05")
        assert season_now["outlooks"][0]["model"] == "lightgbm_lagged" and season_now["outlooks"][0]["init"] == "2020-04"
        served = get(url, "/leaderboard?problem=toy_monsoon&score=acc")
        assert {r["model"] for r in served["rows"]} == set(rows)

        from selenium.webdriver.common.by import By

        browser.get(url + "/?problem=toy_monsoon")
        wait_until(browser, lambda dr: "lightgbm_lagged" in board_cells(dr))
        assert "climatology" in board_cells(browser)
        wait_until(browser, lambda dr: dr.find_elements(By.CSS_SELECTOR, "#rain circle.outlook"))
        texts = [t.text for t in browser.find_elements(By.CSS_SELECTOR, "#rain text")]
        assert "Jun-Sep total (mm)" in texts and "lightgbm_lagged from 2020-04" in texts
        assert "drawn for arctic_sea_ice" in browser.find_element(By.ID, "seasonal-meta").text
        keep_screenshot(browser.find_element(By.ID, "rain"), "new-problem-season")

    assert project_state() == project


def test_a_broken_problem_file_is_a_one_line_error(tmp_path, monkeypatch):
    (tmp_path / "bad.py").write_text("from climate_ml.problems.base import Problem\nraise ValueError('oops')\n")
    monkeypatch.setenv("CLIMATE_ML_PROBLEMS", str(tmp_path))
    p = cli("problems", ok=False)
    assert p.returncode != 0
    assert p.stderr.strip().splitlines()[-1].endswith(f"problem file {tmp_path / 'bad.py'}: ValueError: oops")
    (tmp_path / "bad.py").write_text(PROBLEM_FILE.replace('"toy_monsoon"', '"el_nino"'))
    p = cli("problems", ok=False)
    assert p.returncode != 0 and "two problems are named 'el_nino'" in p.stderr
    (tmp_path / "bad.py").write_text(PROBLEM_FILE.replace('"toy_monsoon"', '"../evil"'))
    p = cli("problems", ok=False)
    assert p.returncode != 0 and "name '../evil' must be lower-case letters" in p.stderr
