"""Openers for tabular observation products (one series per file, or per folder):

- ``nsidc-monthly-csv``: NSIDC Sea Ice Index G02135 v4 monthly files ``N_MM_extent_v4.0.csv``
  (one per calendar month, space-padded columns, -9999 for missing months); PATH is the folder
  of the twelve files (or one of them).
- ``nsidc-daily-csv``: the G02135 daily extent CSV (a units row under the header, every other
  day before 1987, a Missing column); averaged to months with a coverage rule.
- ``nclimdiv-text``: NOAA nClimDiv fixed-width files: a 10-character id (state code 3 digits,
  division 1, element 2, year 4) then 12 monthly values of 7 characters; -9.99 is missing.

Each returns an xarray Dataset with one variable over ``time`` (first of month) in the source's
units; standardise() converts them. Problems in the file raise IngestError naming the file,
the line and what is wrong.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from climate_ml.errors import IngestError

NSIDC_MISSING = -9999.0
NCLIMDIV_MISSING = -9.99
STATE_CODES = {"arizona": "002", "california": "004", "nevada": "026", "oregon": "035", "washington": "045"}  # nClimDiv statewide codes (alphabetical, 48 states)
MIN_DAILY_COVERAGE = 0.4  # a month needs data on 40% of its days (every other day passes) ...
EDGE_DAYS = 5  # ... and data within 5 days of its start and of its end


def read_lines(path: Path) -> list[str]:
    """The lines of a text source, with one-line errors for a missing or binary file."""
    try:
        return Path(path).read_text().splitlines()
    except FileNotFoundError as exc:
        raise IngestError(f"{path}: file not found") from exc
    except UnicodeDecodeError as exc:
        raise IngestError(f"{path}: not a text file") from exc


def _series(values: np.ndarray, times: pd.DatetimeIndex, variable: str) -> xr.Dataset:
    return xr.Dataset({variable: ("time", values.astype("float64"))}, coords={"time": times})


def _complete_months(path: Path, times: pd.DatetimeIndex) -> None:
    """Duplicates and disorder are errors (gaps become NaN months later)."""
    months = times.year * 12 + times.month
    steps = np.diff(np.asarray(months))
    if (steps == 0).any():
        raise IngestError(f"{path}: month {times[1:][steps == 0][0]:%Y-%m} appears twice")
    if (steps < 0).any():
        raise IngestError(f"{path}: month {times[1:][steps < 0][0]:%Y-%m} is out of order")


def _monthly_index(series: pd.Series) -> pd.Series:
    full = pd.date_range(series.index[0], series.index[-1], freq="MS")
    return series.reindex(full)


# --- NSIDC monthly ------------------------------------------------------------------------

def _read_nsidc_month_file(path: Path, variable: str) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, skipinitialspace=True, dtype=str)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise IngestError(f"{path}: not an NSIDC monthly CSV ({type(exc).__name__})") from exc
    df.columns = [c.strip() for c in df.columns]
    need = ["year", "mo", variable]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise IngestError(f"{path}: missing column {missing[0]!r} (columns: {', '.join(df.columns)})")
    if df[need].isna().any().any():
        row = int(np.argmax(df[need].isna().any(axis=1).values))
        raise IngestError(f"{path}: line {row + 2}: truncated row")
    try:
        year = df["year"].astype(int).values
        month = df["mo"].astype(int).values
        value = df[variable].astype(float).values
    except ValueError as exc:
        raise IngestError(f"{path}: non-numeric value ({exc})".splitlines()[0]) from exc
    if (year == NSIDC_MISSING).any() or (month == NSIDC_MISSING).any():
        raise IngestError(f"{path}: missing-value code -9999 in the year or month column")
    bad = (value < 0) & (value != NSIDC_MISSING)
    if bad.any():
        i = int(np.argmax(bad))
        raise IngestError(f"{path}: line {i + 2}: unexpected {variable} {value[i]} (missing months are -9999)")
    if not ((year > 1900) & (year < 2200)).all() or not ((month >= 1) & (month <= 12)).all():
        raise IngestError(f"{path}: year or month out of range")
    value = np.where(value == NSIDC_MISSING, np.nan, value)
    return pd.DataFrame({"year": year, "month": month, "value": value})


def open_nsidc_monthly(path: Path, variable: str = "extent", hemisphere: str = "N") -> xr.Dataset:
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob(f"{hemisphere}_[0-1][0-9]_extent_v*.csv"))
        found = {int(f.name[2:4]) for f in files}
        absent = sorted(set(range(1, 13)) - found)
        if absent:
            raise IngestError(f"{path}: NSIDC monthly files missing for months {absent} ({hemisphere}_MM_extent_v4.0.csv)")
    elif path.is_file():
        files = [path]
    else:
        raise IngestError(f"{path}: file not found")
    frames = []
    for f in files:
        df = _read_nsidc_month_file(f, variable)
        m = re.match(r"[NS]_(\d\d)_", f.name)
        if m and not (df["month"] == int(m.group(1))).all():
            raise IngestError(f"{f}: column 'mo' does not match the month in the file name")
        frames.append(df)
    df = pd.concat(frames)
    times = pd.DatetimeIndex(pd.to_datetime(dict(year=df["year"], month=df["month"], day=1)))
    s = pd.Series(df["value"].values, index=times).sort_index()
    _complete_months(path, pd.DatetimeIndex(s.index))
    s = _monthly_index(s)
    return _series(s.values, pd.DatetimeIndex(s.index), variable)


# --- NSIDC daily --------------------------------------------------------------------------

def open_nsidc_daily(path: Path, variable: str = "extent") -> xr.Dataset:
    """Daily extent averaged to months. A month counts only if it has data on at least 40% of
    its days and within 5 days of both its ends; otherwise it is missing (NaN), never averaged
    from a few days."""
    path = Path(path)
    lines = read_lines(path)
    if len(lines) < 3 or not lines[0].replace(" ", "").lower().startswith("year,month,day,extent"):
        raise IngestError(f"{path}: not an NSIDC daily extent CSV (header 'Year, Month, Day, Extent, Missing, ...')")
    if not lines[1].strip().startswith("YYYY"):
        raise IngestError(f"{path}: line 2 should be the units row ('YYYY, MM, DD, 10^6 sq km, ...')")
    rows = []
    for k, line in enumerate(lines[2:], start=3):
        parts = [p.strip() for p in line.split(",", 5)]
        # every row ends with its source files as a closed list: a row cut short does not
        if len(parts) < 6 or any(p == "" for p in parts[:5]) or not parts[5].rstrip().endswith(("]", ']"')):
            raise IngestError(f"{path}: line {k}: truncated row")
        try:
            y, m, d = int(parts[0]), int(parts[1]), int(parts[2])
            extent, missing = float(parts[3]), float(parts[4])
        except ValueError as exc:
            raise IngestError(f"{path}: line {k}: non-numeric value") from exc
        if extent < 0 or missing < 0:
            raise IngestError(f"{path}: line {k}: negative extent or missing value ({extent}, {missing})")
        rows.append((y, m, d, extent, missing))
    df = pd.DataFrame(rows, columns=["year", "month", "day", "extent", "missing"])
    try:
        dates = pd.to_datetime(df[["year", "month", "day"]])
    except ValueError as exc:
        raise IngestError(f"{path}: invalid date ({exc})".splitlines()[0]) from exc
    diffs = np.diff(dates.values).astype("timedelta64[D]").astype(int)
    if (diffs == 0).any():
        raise IngestError(f"{path}: day {dates.iloc[1:][diffs == 0].iloc[0]:%Y-%m-%d} appears twice")
    if (diffs < 0).any():
        raise IngestError(f"{path}: day {dates.iloc[1:][diffs < 0].iloc[0]:%Y-%m-%d} is out of order")
    # "Missing" is the area the sensor did not see; a day with missing area is not used
    value = np.where(df["missing"].values > 0, np.nan, df["extent"].values)
    s = pd.Series(value, index=pd.DatetimeIndex(dates)).dropna()
    month = s.index.to_period("M")
    g = s.groupby(month)
    stats = pd.DataFrame({"mean": g.mean(), "n": g.size(), "first": g.apply(lambda x: x.index.day.min()),
                          "last": g.apply(lambda x: x.index.day.max())})
    days_in = stats.index.to_timestamp().days_in_month
    ok = (stats["n"] >= MIN_DAILY_COVERAGE * days_in) & (stats["first"] <= EDGE_DAYS) & (stats["last"] > days_in - EDGE_DAYS)
    monthly = stats["mean"].where(ok)
    monthly.index = monthly.index.to_timestamp()
    monthly = _monthly_index(monthly)
    # trailing incomplete months (the current month) are not data yet
    last_valid = np.flatnonzero(np.isfinite(monthly.values))
    if last_valid.size == 0:
        raise IngestError(f"{path}: no month has enough daily data")
    monthly = monthly.iloc[: last_valid[-1] + 1]
    ds = _series(monthly.values, pd.DatetimeIndex(monthly.index), variable)
    ds[variable].attrs["cell_methods"] = (f"time: mean of daily values (months with data on fewer than "
                                          f"{MIN_DAILY_COVERAGE:.0%} of days or none within {EDGE_DAYS} days of an end are missing)")
    return ds


# --- nClimDiv -----------------------------------------------------------------------------

def open_nclimdiv(path: Path, variable: str = "precip", region: str | None = "california") -> xr.Dataset:
    """One state's statewide series from an nClimDiv fixed-width file (element 01 = precipitation)."""
    path = Path(path)
    if region is None:
        raise IngestError(f"{path}: nClimDiv files hold every state: give --region (e.g. california)")
    state = STATE_CODES.get(region, region if re.fullmatch(r"\d{3}", str(region)) else None)
    if state is None:
        raise IngestError(f"{path}: unknown region {region!r} for nClimDiv (known: {', '.join(STATE_CODES)} or a 3-digit state code)")
    lines = read_lines(path)
    states = set()
    years, values = [], []
    for k, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        ident = line[:10]
        if not re.fullmatch(r"\d{10}", ident):
            raise IngestError(f"{path}: line {k}: expected a 10-digit id (state, division, element, year), got {ident!r}")
        states.add(ident[:3])
        if ident[:3] != state:
            continue
        if ident[3] != "0":
            raise IngestError(f"{path}: line {k}: division {ident[3]} is not statewide (0)")
        parts = line[10:].split()
        if len(parts) != 12:
            raise IngestError(f"{path}: line {k}: truncated: expected 12 monthly values, found {len(parts)}")
        try:
            vals = [float(p) for p in parts]
        except ValueError as exc:
            raise IngestError(f"{path}: line {k}: non-numeric value") from exc
        years.append(int(ident[6:10]))
        values.append(vals)
    if not years:
        have = f"{min(states)}..{max(states)}" if states else "none"
        raise IngestError(f"{path}: state code {state} ({region}) not found (state codes present: {have})")
    yrs = np.asarray(years)
    steps = np.diff(yrs)
    if (steps == 0).any():
        raise IngestError(f"{path}: year {yrs[1:][steps == 0][0]} appears twice for state {state}")
    if (steps < 0).any():
        raise IngestError(f"{path}: year {yrs[1:][steps < 0][0]} is out of order for state {state}")
    if (steps > 1).any():
        raise IngestError(f"{path}: years missing after {yrs[:-1][steps > 1][0]} for state {state}")
    data = np.asarray(values).ravel()
    missing = np.isclose(data, NCLIMDIV_MISSING)
    bad = (data < 0) & ~missing
    if bad.any():
        i = int(np.argmax(bad))
        raise IngestError(f"{path}: negative precipitation {data[i]} at {yrs[0] + i // 12}-{i % 12 + 1:02d} (missing is -9.99)")
    valid = np.flatnonzero(~missing)
    if valid.size == 0:
        raise IngestError(f"{path}: no valid values for state {state}")
    inner = missing[: valid[-1] + 1]
    if inner.any():
        i = int(np.argmax(inner))
        raise IngestError(f"{path}: missing-value code -9.99 at {yrs[0] + i // 12}-{i % 12 + 1:02d}, before later "
                          "valid months (nClimDiv only marks months not yet observed)")
    data = data[: valid[-1] + 1]
    times = pd.date_range(f"{yrs[0]}-01", periods=data.size, freq="MS")
    return _series(data, times, variable)


# --- monthly CSV (one column per series) --------------------------------------------------

def open_monthly_csv(path: Path, variables) -> xr.Dataset:
    """A table of monthly series: the first column holds the month (a date; its header may be
    empty), every other column one series; empty cells are missing. ``variables`` is a list of
    column names or "*" for all. Series may start and end at different months (empty cells
    around them); a missing month inside a series stays NaN here and is refused where the series
    is used as a predictor."""
    path = Path(path)
    lines = read_lines(path)
    if len(lines) < 3:
        raise IngestError(f"{path}: a monthly CSV needs a header row and at least two months")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise IngestError(f"{path}: not a readable CSV ({type(exc).__name__})") from exc
    date_col = df.columns[0]
    columns = [c for c in df.columns[1:]]
    wanted = columns if variables == "*" else [variables] if isinstance(variables, str) else list(variables)
    unknown = [v for v in wanted if v not in columns]
    if unknown:
        raise IngestError(f"{path}: variable {unknown[0]!r} not found (columns: {', '.join(columns)})")
    try:
        dates = pd.to_datetime(df[date_col], format="mixed")
    except (ValueError, TypeError) as exc:
        raise IngestError(f"{path}: the first column must hold dates ({exc})".splitlines()[0]) from exc
    times = pd.DatetimeIndex(dates)
    if not (times == times.to_period("M").to_timestamp()).all():
        bad = times[times != times.to_period("M").to_timestamp()][0]
        raise IngestError(f"{path}: {bad:%Y-%m-%d} is not the first day of a month")
    _complete_months(path, times)
    out = {}
    for v in wanted:
        raw = df[v].str.strip()
        values = pd.to_numeric(raw.replace("", np.nan), errors="coerce")
        bad = values.isna() & raw.ne("")
        if bad.any():
            i = int(np.argmax(bad.values))
            raise IngestError(f"{path}: line {i + 2}: column {v!r} has a non-numeric value {raw.iloc[i]!r}")
        out[v] = values.values.astype("float64")
    table = pd.DataFrame(out, index=times)
    # months without a row are missing months; months before the first and after the last value
    # of the chosen series are not part of the record
    rows = np.flatnonzero(table.notna().any(axis=1).values)
    if rows.size == 0:
        raise IngestError(f"{path}: no values in {', '.join(wanted)}")
    table = table.iloc[rows[0]: rows[-1] + 1]
    table = table.reindex(pd.date_range(table.index[0], table.index[-1], freq="MS"))
    return xr.Dataset({v: ("time", table[v].values) for v in wanted}, coords={"time": table.index})
