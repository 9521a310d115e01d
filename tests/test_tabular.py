"""Sea-ice and precipitation readers on small files in the real formats, with their quirks."""

import http.server
import os
import subprocess
import sys
import threading
from functools import partial

import numpy as np
import pandas as pd
import pytest

from climate_ml.catalog import CatalogEntry
from climate_ml.errors import IngestError
from climate_ml.ingest import ingest_entry, ingest_file
from climate_ml.ingest.openers import detect_format
from climate_ml.store import open_obs
from conftest import expect_clean_error, tree_digest


def write_nsidc_monthly(folder, years=range(1979, 1991), missing=((1987, 12), (1988, 1)), hemisphere="N"):
    folder.mkdir(parents=True, exist_ok=True)
    for m in range(1, 13):
        rows = ["year, mo,source_dataset, region, extent,   area"]
        for y in years:
            if (y, m) in missing:
                rows.append(f"{y}, {m:2d},         -9999,      {hemisphere},  -9999,  -9999")
            else:
                ext = 12 + 3 * np.cos(2 * np.pi * (m - 3) / 12) - 0.05 * (y - 1979)
                rows.append(f"{y}, {m:2d},    NSIDC-0051,      {hemisphere}, {ext:6.2f}, {ext - 2:6.2f}")
        (folder / f"{hemisphere}_{m:02d}_extent_v4.0.csv").write_text("\n".join(rows) + "\n")
    return folder


def write_nsidc_daily(path, start="1986-01-01", end="1988-03-31", every_other_until="1987-08-20",
                      gap=("1987-12-03", "1988-01-12"), missing_day=None):
    lines = ["Year, Month, Day,     Extent,    Missing, Source Data",
             "YYYY,    MM,  DD, 10^6 sq km, 10^6 sq km, Source data product web sites: http://nsidc.org/data/nsidc-0081.html"]
    for i, d in enumerate(pd.date_range(start, end, freq="D")):
        if d <= pd.Timestamp(every_other_until) and i % 2:
            continue
        if gap and pd.Timestamp(gap[0]) <= d <= pd.Timestamp(gap[1]):
            continue
        ext = 12 + 3 * np.cos(2 * np.pi * (d.day_of_year - 70) / 365)
        miss = 0.5 if missing_day is not None and d == pd.Timestamp(missing_day) else 0.0
        lines.append(f"{d.year},    {d.month:02d},  {d.day:02d},     {ext:6.3f},      {miss:.3f}, ['/ecs/nt_{d:%Y%m%d}_f08_v1.1_n.bin']")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_nclimdiv(path, states=("001", "004", "005"), years=range(1990, 1996), tail_missing=3):
    lines = []
    for st in states:
        for y in years:
            vals = [1.0 + 0.5 * np.cos(2 * np.pi * m / 12) for m in range(12)]
            if y == years[-1] and tail_missing:
                vals[-tail_missing:] = [-9.99] * tail_missing
            lines.append(f"{st}001{y}" + "".join(f"{v:7.2f}" for v in vals) + "   ")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_nsidc_monthly_folder(tmp_path, store):
    folder = write_nsidc_monthly(tmp_path / "monthly")
    assert detect_format(folder) == "nsidc-monthly-csv"
    ingest_file(folder, None, "ice", store)
    ext = open_obs(store, "ice").extent.load()
    assert ext.attrs["units"] == "1e6 km2" and ext.attrs["standard_name"] == "sea_ice_extent"
    s = ext.to_series()
    assert list(s[s.isna()].index.strftime("%Y-%m")) == ["1987-12", "1988-01"]
    assert s.index[0] == pd.Timestamp("1979-01-01") and s.index[-1] == pd.Timestamp("1990-12-01")


def test_nsidc_daily_to_monthly_with_coverage_rule(tmp_path, store):
    f = write_nsidc_daily(tmp_path / "daily.csv", missing_day="1986-05-10")
    assert detect_format(f) == "nsidc-daily-csv"
    ingest_file(f, None, "iced", store)
    s = open_obs(store, "iced").extent.load().to_series()
    # every-other-day months are kept; the December 1987 - January 1988 gap is missing, not averaged
    assert np.isfinite(s["1986-02-01"]) and np.isfinite(s["1987-06-01"])
    assert np.isnan(s["1987-12-01"]) and np.isnan(s["1988-01-01"])
    # the monthly mean is the mean of the days with data (the day with missing area excluded)
    days = pd.read_csv(f, skiprows=[1], skipinitialspace=True)
    may = days[(days.Year == 1986) & (days.Month == 5) & (days.Missing == 0)]
    assert s["1986-05-01"] == pytest.approx(may.Extent.mean(), abs=1e-6)


def test_nclimdiv_california_inches_to_mm(tmp_path, store):
    f = write_nclimdiv(tmp_path / "climdiv-pcpnst-v1.0.0-20260205")
    assert detect_format(f) == "nclimdiv-text"
    ingest_file(f, None, "ca", store, region="california")
    pr = open_obs(store, "ca").precip.load()
    assert pr.attrs["units"] == "mm" and pr.sizes["time"] == 6 * 12 - 3  # trailing -9.99 are not data
    assert float(pr.isel(time=0)) == pytest.approx(1.5 * 25.4, abs=0.01)


@pytest.fixture
def populated(tmp_path, store):
    ingest_file(write_nsidc_monthly(tmp_path / "good"), None, "good", store)
    return store, tree_digest(store)


def _expect(populated, pattern, call):
    expect_clean_error(*populated, IngestError, pattern, call)


def test_truncated_daily_csv(tmp_path, populated):
    f = write_nsidc_daily(tmp_path / "d.csv")
    f.write_text(f.read_text()[:-20])  # a download cut inside the last row
    _expect(populated, r"d.csv: line \d+: (truncated row|non-numeric value)", lambda: ingest_file(f, None, "good", populated[0]))


def test_daily_csv_without_units_row(tmp_path, populated):
    f = write_nsidc_daily(tmp_path / "d.csv")
    lines = f.read_text().splitlines()
    f.write_text("\n".join([lines[0]] + lines[2:]) + "\n")
    _expect(populated, r"line 2 should be the units row", lambda: ingest_file(f, None, "new", populated[0], fmt="nsidc-daily-csv"))


def test_duplicated_and_out_of_order_days(tmp_path, populated):
    f = write_nsidc_daily(tmp_path / "d.csv")
    lines = f.read_text().splitlines()
    f.write_text("\n".join(lines[:10] + [lines[9]] + lines[10:]) + "\n")
    _expect(populated, r"day 1986-01-\d\d appears twice", lambda: ingest_file(f, None, "new", populated[0]))
    f.write_text("\n".join(lines[:10] + [lines[11], lines[10]] + lines[12:]) + "\n")
    _expect(populated, r"day 1986-01-\d\d is out of order", lambda: ingest_file(f, None, "new", populated[0]))


def test_missing_code_in_the_wrong_place(tmp_path, populated):
    folder = write_nsidc_monthly(tmp_path / "m")
    p = folder / "N_03_extent_v4.0.csv"
    p.write_text(p.read_text().replace("1980,  3,    NSIDC-0051,      N,", "-9999,  3,    NSIDC-0051,      N,"))
    _expect(populated, r"missing-value code -9999 in the year or month column", lambda: ingest_file(folder, None, "new", populated[0]))
    folder = write_nsidc_monthly(tmp_path / "m2")
    p = folder / "N_04_extent_v4.0.csv"
    text = p.read_text().splitlines()
    text[3] = text[3].rsplit(",", 2)[0] + ",    -99,  -9999"
    p.write_text("\n".join(text) + "\n")
    _expect(populated, r"N_04_extent_v4.0.csv: line 4: unexpected extent -99.0 \(missing months are -9999\)",
            lambda: ingest_file(folder, None, "new", populated[0]))
    f = write_nclimdiv(tmp_path / "climdiv", years=range(1990, 1993), tail_missing=0)
    f.write_text(f.read_text().replace("0040011991   1.50", "0040011991  -9.99"))
    _expect(populated, r"missing-value code -9.99 at 1991-01, before later valid months",
            lambda: ingest_file(f, None, "ca", populated[0], region="california"))


def test_month_out_of_order_or_duplicated(tmp_path, populated):
    folder = write_nsidc_monthly(tmp_path / "m")
    p = folder / "N_05_extent_v4.0.csv"
    lines = p.read_text().splitlines()
    p.write_text("\n".join(lines + [lines[3]]) + "\n")
    _expect(populated, r"month 1981-05 appears twice", lambda: ingest_file(folder, None, "new", populated[0]))
    p.write_text("\n".join(lines).replace("1980,  5,", "1980,  6,") + "\n")
    _expect(populated, r"column 'mo' does not match the month in the file name",
            lambda: ingest_file(folder, None, "new", populated[0]))
    (folder / "N_05_extent_v4.0.csv").unlink()
    _expect(populated, r"NSIDC monthly files missing for months \[5\]", lambda: ingest_file(folder, None, "new", populated[0]))
    f = write_nclimdiv(tmp_path / "climdiv")
    lines = f.read_text().splitlines()
    f.write_text("\n".join([lines[0], lines[7], lines[6]] + lines[8:]) + "\n")
    _expect(populated, r"year 1990 is out of order for state 004",
            lambda: ingest_file(f, None, "ca", populated[0], region="california"))


def test_state_code_not_there_and_truncated_line(tmp_path, populated):
    f = write_nclimdiv(tmp_path / "climdiv", states=("001", "005"))
    _expect(populated, r"state code 004 \(california\) not found \(state codes present: 001..005\)",
            lambda: ingest_file(f, None, "ca", populated[0], region="california"))
    f = write_nclimdiv(tmp_path / "climdiv2")
    lines = f.read_text().splitlines()
    lines[8] = lines[8][:40]
    f.write_text("\n".join(lines) + "\n")
    _expect(populated, r"line 9: truncated: expected 12 monthly values, found 4",
            lambda: ingest_file(f, None, "ca", populated[0], region="california"))
    _expect(populated, r"give --region", lambda: ingest_file(write_nclimdiv(tmp_path / "c3"), None, "ca", populated[0]))


def test_multi_file_catalog_entry_downloads_from_loopback(tmp_path, store):
    served = write_nsidc_monthly(tmp_path / "served")
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        entry = CatalogEntry(name="ice-remote", description="x", format="nsidc-monthly-csv", variable="extent",
                             units="10^6 sq km", standard_name="sea_ice_extent", license="x", citation="x",
                             source={"urls": [f"{url}/N_{m:02d}_extent_v4.0.csv" for m in range(1, 13)]})
        res = ingest_entry(entry, store)
    finally:
        server.shutdown()
    assert res.action == "created" and res.n_time == 12 * 12
    assert len(list((store / "raw" / "ice-remote").glob("N_*_extent_v4.0.csv"))) == 12


def test_cli_autodetects_formats(tmp_path):
    env = {**os.environ, "CLIMATE_ML_STORE": str(tmp_path / "s")}
    run = lambda *a: subprocess.run([sys.executable, "-m", "climate_ml.cli", "ingest", *map(str, a)],  # noqa: E731
                                    capture_output=True, text=True, env=env)
    ok = run("--file", write_nsidc_monthly(tmp_path / "m"), "--name", "ice")
    assert ok.returncode == 0 and "created" in ok.stdout
    ok = run("--file", write_nclimdiv(tmp_path / "c"), "--name", "ca", "--region", "california")
    assert ok.returncode == 0 and "(69 months)" in ok.stdout
    bad = run("--file", write_nclimdiv(tmp_path / "c2"), "--name", "tx", "--region", "texas")
    assert bad.returncode == 2 and "unknown region 'texas' for nClimDiv" in bad.stderr


@pytest.mark.realdata
def test_real_sea_ice_and_precip_files(real_data, store):
    from climate_ml.catalog import load_catalog

    cat = load_catalog()
    for name in ("nsidc-seaice-monthly-north-local", "nsidc-seaice-daily-north-local", "nclimdiv-precip-california-local"):
        ingest_entry(cat[name], store)
    m = open_obs(store, "nsidc-seaice-monthly-north-local").extent.load().to_series()
    d = open_obs(store, "nsidc-seaice-daily-north-local").extent.load().to_series()
    assert list(m[m.isna()].index.strftime("%Y-%m")) == ["1987-12", "1988-01"]
    assert {"1987-12", "1988-01"} <= set(d[d.isna()].index.strftime("%Y-%m"))
    both = (m - d).dropna()
    assert len(both) > 500 and both.abs().max() < 0.2  # monthly files vs daily-derived means
    pr = open_obs(store, "nclimdiv-precip-california-local").precip.load().to_series()
    assert pr.index[0] == pd.Timestamp("1895-01-01") and pr.isna().sum() == 0
    annual = pr["1981":"2010"].resample("YS").sum().mean()
    assert 450 < annual < 650  # California statewide normal is about 22 inches (560 mm)
