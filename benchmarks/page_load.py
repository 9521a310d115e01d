"""Load time of the web page in headless Chromium over a large archive: 10 models x 600 inits x
18 leads (the last init issued live, with category probabilities) and a recorded toy backtest.
Prints the time from navigation until the leaderboard, the plume, the probability bars and the
archive table are all drawn, for a cold and then warm server (median of --runs).

    python benchmarks/page_load.py [--runs 5]     # needs chromium and chromedriver (make browser)
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from load_api import record_toy_backtest  # benchmarks/ is on the path when run as a script

from climate_ml.api import running_server
from climate_ml.archive import write_forecast
from climate_ml.schema import INIT, LEAD, add_valid_time

READY = ("return document.querySelectorAll('#board tbody tr').length > 0 && "
         "document.querySelectorAll('#plume path.forecast').length === 10 && "
         "document.querySelectorAll('#probs rect.prob').length > 0 && "
         "document.querySelectorAll('#archive tbody tr').length === 10")


def build(root: Path) -> None:
    inits = pd.date_range("1975-01", periods=600, freq="MS")
    rng = np.random.default_rng(0)
    cats = ["la_nina", "neutral", "el_nino"]
    for m in range(10):
        fc = add_valid_time(xr.DataArray(rng.normal(0, 1, (600, 18)), dims=(INIT, LEAD),
                                         coords={INIT: inits, LEAD: list(range(1, 19))}))
        write_forecast(root, "el_nino", f"model{m:02d}", fc.isel({INIT: slice(0, -1)}), {"kind": "hindcast"})
        p = rng.dirichlet([2, 2, 2], size=(1, 18))
        probs = xr.DataArray(p, dims=(INIT, LEAD, "category"), coords={INIT: inits[-1:], LEAD: list(range(1, 19)),
                                                                        "category": cats})
        write_forecast(root, "el_nino", f"model{m:02d}", fc.isel({INIT: [-1]}), {"kind": "forecast"}, probabilities=probs)
    record_toy_backtest(root)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    root = Path(tempfile.mkdtemp(prefix="climate-ml-page-")) / "store"
    build(root)
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    try:
        started = time.perf_counter()
        with running_server(root, workers=2) as base:
            # the server warms its caches at start (archive snapshots, default leaderboards);
            # a visitor after that sees a warm server: wait until both processes answer warm
            streak = 0
            while streak < 10 and time.perf_counter() - started < 120:
                with urllib.request.urlopen(base + "/health", timeout=30) as r:
                    streak = streak + 1 if json.loads(r.read())["warm"] else 0
                time.sleep(0.05)
            warm_s = time.perf_counter() - started
            times = []
            for _ in range(args.runs + 1):
                tic = time.perf_counter()
                driver.get(base + "/?problem=el_nino")
                WebDriverWait(driver, 60, poll_frequency=0.01).until(lambda d: d.execute_script(READY))
                times.append(time.perf_counter() - tic)
    finally:
        driver.quit()
    print(f"page over 10 models x 600 inits x 18 leads: server started and warmed up in {warm_s:.1f} s; "
          f"first page load {times[0] * 1000:.0f} ms (a new browser session), then median "
          f"{statistics.median(times[1:]) * 1000:.0f} ms, max {max(times[1:]) * 1000:.0f} ms over {args.runs} loads "
          "(aim < 1 s)")


if __name__ == "__main__":
    main()
