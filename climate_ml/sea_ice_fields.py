"""Sea-ice concentration-field forecasts and their scores.

Scores of a concentration forecast against the observed field (both fractions 0-1 on the same
grid, land NaN), with ice meaning concentration >= 15%:

- ``iiee``: integrated ice-edge error (Goessling et al. 2016), the area where forecast and
  observation disagree on ice / no ice, 10^6 km^2 (overestimate + underestimate);
- ``sie_error``: forecast minus observed sea-ice extent, 10^6 km^2.

The area means below share one scoring region: the ocean that had ice in that calendar month at
least once in the training window (the active region, after IceNet, Andersson et al. 2021) or
has ice in the observation. The forecast does not enter it, so every model of an (init, lead)
is divided by the same area. Errors in cells outside it where the forecast gives a probability
of ice above 0 are added to the sums (they cost, but never widen the region), so a model
cannot dilute its mean score with small probabilities of ice in far-off cells.

- ``binary_accuracy``: 1 - IIEE / the area of the scoring region, the area share classified
  correctly;
- ``ice_brier``: the area-weighted Brier score of the probability of ice (the share of members
  with ice; 0 or 1 for a single forecast, where it equals 1 - binary_accuracy);
- ``crps``: the area-weighted mean CRPS of concentration, from the members by xskillscore (the
  absolute error for a single forecast);
- ``spread`` and ``sq_error``: the area-weighted mean member variance, times (m+1)/m, and the
  mean squared error of the member mean; the spread/skill ratio sqrt(mean spread) /
  sqrt(mean sq_error) over the inits (Fortin et al. 2014) is 1 for a calibrated ensemble and
  below 1 for an over-confident one (NaN for a single forecast).

Deterministic scores (IIEE, extent error, binary accuracy) use the member mean.

The references: field forecasts fitted per grid cell and calendar month on the training window
(data up to ``fit_end``) and clipped to 0-1, each an ordinary field model file in
``models/fields/`` (``PerCellReference``):

- ``climatology``: the mean concentration of the valid calendar month;
- ``linear_trend``: a linear trend per calendar month, at the valid year;
- ``trend_persistence``: the trend at the valid month plus the departure from the trend at init;
- ``damped_anomaly_persistence``: as above with the departure scaled by a(m, L), one
  regression coefficient per init month and lead pooled over all cells.

``PerCellReference(method, calibrate_edge=True)`` (``models/damped_anomaly_persistence_edge.py``)
also moves its concentrations so that its 15% contour lies where its own forecasts of the last
ten training years drew the ice edge best (``EdgeCalibration``, ``remap_edge``); the sea-ice
ConvLSTM does the same from its out-of-bag maps.

Field models. A model file whose module says ``TARGET = "sea_ice_concentration"`` forecasts
maps: ``make_model()`` returns an object with

- ``fit(conc, cell_area, leads) -> self``: ``conc`` is ``DataArray(time, <grid>)`` holding only
  the months up to the fold's cut-off (land NaN), ``cell_area`` ``DataArray(<grid>)`` in m^2;
- ``predict(conc) -> DataArray(lead[, member], <grid>)``: the forecast from the last month of
  ``conc``, which holds only the months up to that init; concentration as a fraction.

Because a model is never handed a month after its init, it cannot look ahead.

Larger than memory. ``conc`` may be lazy (Dask over the store's Zarr chunks, as ``forecast``
hands it over). ``FieldRows`` reads such a stack a block of months at a time (64 MB of float64
by default) as rows of ocean cells, and ``fit_fields`` takes its sums month by month over those
blocks, so the per-cell references and the sea-ice ConvLSTM never hold the stack: what they keep
is per cell (12 calendar months of statistics) and, for the ConvLSTM, its coarse block means.
The sums run in row order whatever the block size, so a fit read in blocks from a store equals
the fit on the same maps in memory, bit for bit.

``field_backtest`` runs field models (the references among them) on the backtest engine: one
(model, fold) unit of ``field_unit`` per block of ``backtest.RollingOrigin`` (each forecast made
from data up to its init), run by the same executors as index backtests (this process, local
processes or a Dask cluster, with time limits). Each unit scores its own maps every (init, lead)
where it ran (``FieldTruth``) and hands back the scores; the maps travel back only when the
caller asks for them (``on_forecast``, e.g. to archive hindcasts).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import dask
import numpy as np
import pandas as pd
import xarray as xr

from climate_ml.backtest import RollingOrigin, month_range
from climate_ml.errors import ClimateMLError, ModelError
from climate_ml.model_api import FIELD_TARGET, model_target, new_model
from climate_ml.schema import INIT, LEAD, TIME, add_months

TARGET = FIELD_TARGET  # the factories of ``reference_models`` are field models
THRESHOLD = 0.15
FIELD_METHODS = ("climatology", "linear_trend", "trend_persistence", "damped_anomaly_persistence")
# Which definition the recorded field scores follow; part of a field backtest's work, so records
# scored another way are never ranked together. 2: the scoring region no longer includes the
# forecast's ice (it counts as error only).
FIELD_SCORING = 2
FIELD_SCORES = ("iiee", "sie_error", "binary_accuracy", "ice_brier", "crps", "spread", "sq_error")


def field_scores(forecast: np.ndarray, observed: np.ndarray, area: np.ndarray, active: np.ndarray | None = None,
                 threshold: float = THRESHOLD, members: np.ndarray | None = None,
                 crps: np.ndarray | None = None) -> dict[str, float]:
    """Scores of one forecast field against the observed one (arrays over the same cells);
    ``members`` (member, cells), when given, supplies the probability of ice. ``crps``: the
    per-cell CRPS of these members (or of the forecast) when already computed
    (``crps_per_cell``, for many fields at once). The area-mean scores divide by the area of
    the scoring region, which the forecast cannot change (see the module docstring)."""
    ocean = np.isfinite(observed) & np.isfinite(forecast)
    f_ice = (forecast >= threshold) & ocean
    o_ice = (observed >= threshold) & ocean
    a = np.where(ocean, area, 0.0) / 1e12
    over = float(a[f_ice & ~o_ice].sum())
    under = float(a[~f_ice & o_ice].sum())
    scored = ocean & (o_ice | (active if active is not None else False))
    scored_area = float(a[scored].sum())
    prob = f_ice.astype(float) if members is None else (members >= threshold).mean(0)
    counted = scored | (ocean & (prob > 0))  # the forecast's ice outside the region adds error, never area
    brier = float((a * (prob - o_ice) ** 2)[counted].sum()) / scored_area if scored_area > 0 else np.nan
    return {
        "iiee": over + under,
        "sie_error": float(a[f_ice].sum() - a[o_ice].sum()),
        "binary_accuracy": (1.0 - (over + under) / scored_area) if scored_area > 0 else np.nan,
        "ice_brier": brier,
        **ensemble_field_scores(forecast if members is None else members, observed, a, counted, scored_area, crps),
    }


def crps_per_cell(members: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """The CRPS of ``members`` (member, ...) against ``observed`` (...) in every cell (xskillscore)."""
    import xskillscore as xs

    dims = [f"d{k}" for k in range(observed.ndim)]
    return xs.crps_ensemble(xr.DataArray(observed, dims=dims), xr.DataArray(members, dims=("member", *dims)),
                            dim=[], keep_attrs=False).values


def ensemble_field_scores(members: np.ndarray, observed: np.ndarray, area: np.ndarray, counted: np.ndarray,
                          scored_area: float, crps: np.ndarray | None = None) -> dict:
    """``crps``, ``spread`` and ``sq_error`` (see the module docstring) of ``members`` (member,
    cells), or of one forecast (cells), against ``observed``: area-weighted sums over the cells
    of ``counted`` divided by ``scored_area`` (``crps``: per cell, when already computed)."""
    members = np.atleast_2d(members)[:, counted]
    if not counted.any() or not scored_area > 0:
        return {"crps": np.nan, "spread": np.nan, "sq_error": np.nan}
    w = area[counted] / scored_area
    obs = observed[counted]
    crps = crps_per_cell(members, obs) if crps is None else crps[counted]
    m = members.shape[0]
    spread = float(w @ members.var(0, ddof=1)) * (m + 1) / m if m > 1 else np.nan
    return {"crps": float(w @ crps), "spread": spread, "sq_error": float(w @ (members.mean(0) - obs) ** 2)}


def check_field_prediction(pred, grid: list[str], shape: tuple[int, ...], leads, where: str) -> np.ndarray:
    """Validate a field model's forecast; return it as (member, lead, cells)."""
    if not isinstance(pred, xr.DataArray):
        raise ModelError(f"{where}: predict must return an xarray.DataArray, got {type(pred).__name__}")
    expected = {LEAD, *grid}
    extra = set(pred.dims) - expected - {"member"}
    if not expected <= set(pred.dims) or extra:
        raise ModelError(f"{where}: a field forecast has dims (lead[, member], {', '.join(grid)}), got {pred.dims}")
    got_shape = tuple(pred.sizes[d] for d in grid)
    if got_shape != tuple(shape):
        raise ModelError(f"{where}: forecast grid {got_shape} does not match the data set's grid {tuple(shape)}")
    if sorted(int(v) for v in pred[LEAD].values) != sorted(int(v) for v in leads):
        raise ModelError(f"{where}: forecast leads {list(pred[LEAD].values)} != leads {list(leads)}")
    if "member" not in pred.dims:
        pred = pred.expand_dims(member=[0])
    values = pred.sel({LEAD: list(leads)}).transpose("member", LEAD, *grid).values.astype("float64")
    values = values.reshape(values.shape[0], values.shape[1], -1)
    finite = values[np.isfinite(values)]
    if finite.size and (finite.min() < -1e-6 or finite.max() > 1 + 1e-6):
        raise ModelError(f"{where}: concentration outside 0-1 (min {finite.min():.3g}, max {finite.max():.3g}); "
                         "forecast a fraction")
    return values


# the month-block reader and the streamed per-cell fit
BLOCK_BYTES = 64 * 2**20  # a block of months is read at a time: about this many bytes of float64


class FieldRows:
    """A concentration stack (time, <grid>) read as rows (month, ocean cells) of float64, one
    block of months at a time, so that no more than a block is ever held: from memory, or lazily
    from a Zarr store through Dask (``xr.open_zarr``), where only the chunks of a block are read
    and decompressed. ``ocean``: the cells with data in some month (land is NaN throughout),
    found in a first pass over the blocks. ``block_months``: months per block (default: as many
    as fit in ``BLOCK_BYTES`` of float64 over the whole grid, at least 12)."""

    def __init__(self, conc: xr.DataArray | np.ndarray, times: pd.DatetimeIndex | None = None,
                 block_months: int | None = None):
        if isinstance(conc, np.ndarray):  # (time, cells) already: every cell counts, rows are views
            self._conc, self.grid, self.shape = conc, ["cell"], conc.shape[1:]
            self.times = pd.DatetimeIndex(times)
        else:
            self.grid = [d for d in conc.dims if d != TIME]
            self._conc = conc.transpose(TIME, *self.grid)
            self.times = pd.DatetimeIndex(conc[TIME].values)
            self.shape = tuple(conc.sizes[d] for d in self.grid)
        n_cells = int(np.prod(self.shape))
        self._kept: tuple[int, np.ndarray | None] = (0, None)  # the block ``row`` reads from
        if block_months is not None and block_months < 1:
            raise ValueError(f"block_months must be at least 1, got {block_months}")
        self.block = int(block_months or max(12, BLOCK_BYTES // (8 * max(n_cells, 1))))
        if isinstance(conc, np.ndarray):
            self.ocean = np.ones(n_cells, dtype=bool)
        else:
            self.ocean = np.zeros(n_cells, dtype=bool)
            for start in range(0, len(self.times), self.block):
                self.ocean |= np.isfinite(self._raw(start, start + self.block)).any(0)

    def __len__(self) -> int:
        return len(self.times)

    def _raw(self, start: int, stop: int) -> np.ndarray:
        """Months ``start`` to ``stop`` of every cell, (months, cells) in the stored dtype."""
        if isinstance(self._conc, np.ndarray):
            return self._conc[start:stop]
        block = self._conc.isel({TIME: slice(start, stop)})
        if block.chunks is not None:  # lazy: read it in this thread (reader threads each kept their own heap)
            block = block.compute(scheduler="synchronous")
        values = block.values
        return values.reshape(values.shape[0], -1)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Months ``start`` to ``stop`` (exclusive) of the ocean cells, (months, cells) float64."""
        raw = self._raw(start, stop)
        return np.asarray(raw if self.ocean.all() else raw[:, self.ocean], dtype="float64")

    def row(self, i: int) -> np.ndarray:
        """Month ``i`` of the ocean cells, from the block of months kept from the last call (when
        ``i`` falls outside it, a block around ``i`` is read, reaching half a block back): for
        visits mostly in time order, with short steps back."""
        first, kept = self._kept
        if kept is None or not first <= i < first + len(kept):
            first = max(0, i - (self.block - 1) // 2)
            kept = self.read(first, min(first + self.block, len(self.times)))
            self._kept = (first, kept)
        return kept[i - first]

    def blocks(self, halo: int = 0):
        """(start, rows) for every block: rows are months ``start`` .. ``start + block + halo``
        (fewer at the end), so a statistic that pairs a month with one up to ``halo`` months
        later finds both in one block."""
        for start in range(0, len(self.times), self.block):
            yield start, self.read(start, min(start + self.block + halo, len(self.times)))


@dataclass
class FieldFit:
    """Per-cell statistics fitted on the training window: arrays (12, cells)."""

    fit_end: pd.Timestamp
    mean: np.ndarray
    slope: np.ndarray  # per year
    intercept: np.ndarray  # at year 0 (the calendar year number itself)
    ever_ice: np.ndarray  # bool: ice (>= 15%) at least once in that calendar month
    damping: np.ndarray  # (12 init months, n leads)
    cell_damping: np.ndarray | None = None  # (12 init months, n leads, cells), when fitted per cell

    def trend(self, times: pd.DatetimeIndex) -> np.ndarray:
        m = times.month.values - 1
        return self.intercept[m] + self.slope[m] * times.year.values[:, None]

    def departures(self, conc: np.ndarray, times: pd.DatetimeIndex) -> np.ndarray:
        """``conc - self.trend(times)``, the same numbers, month by month (no (time, cells) temporaries)."""
        out = np.empty(conc.shape)
        row = np.empty(conc.shape[1:])
        for k, (m, year) in enumerate(zip(times.month.values - 1, times.year.values, strict=True)):
            np.multiply(self.slope[m], year, out=row)
            np.add(self.intercept[m], row, out=row)
            np.subtract(conc[k], row, out=out[k])
        return out


def fit_fields(conc: FieldRows | np.ndarray, times: pd.DatetimeIndex, fit_end, leads, damping: bool = True,
               per_cell: bool = False) -> FieldFit:
    """Fit the per-cell climatology and trends on months up to ``fit_end``; ``conc`` is
    (time, cells) with NaN for land, or a ``FieldRows`` (then ``times`` are its own). Streamed:
    the sums are taken month by month in row order over blocks of months (one pass for the
    trends, one for the damping), so a stack larger than memory can be fitted, and the result
    does not depend on the block size. ``damping=False`` leaves the damping coefficients at 0
    (only damped anomaly persistence needs them). ``per_cell=True`` fits one damping per cell
    too (``cell_damping``: the same regression on each cell's own pairs, the pooled coefficient
    where a cell's departures at the init never varied)."""
    rows = conc if isinstance(conc, FieldRows) else FieldRows(conc, times)
    times = rows.times
    fit_end = pd.Timestamp(fit_end)
    train = np.asarray(times <= fit_end)
    if train.sum() < 36:
        raise ClimateMLError(f"field forecasts need 3 years of training data before {fit_end:%Y-%m}")
    month_of, year_of = times.month.values - 1, times.year.values.astype(float)
    ybar = np.array([year_of[train & (month_of == m)].mean() if (train & (month_of == m)).any() else np.nan
                     for m in range(12)])
    n_cells = int(rows.ocean.sum())
    total, count = np.zeros((12, n_cells)), np.zeros((12, n_cells), dtype=np.int64)
    moment = np.zeros((12, n_cells))  # sum of (year - the month's mean year) * concentration
    ever = np.zeros((12, n_cells), dtype=bool)
    for start, block in rows.blocks():
        for r, v in enumerate(block, start):
            if not train[r]:
                continue
            m = month_of[r]
            total[m] += np.nan_to_num(v)
            count[m] += np.isfinite(v)
            moment[m] += (year_of[r] - ybar[m]) * v  # NaN stays NaN: a cell with a gap has no trend
            ever[m] |= v >= THRESHOLD
    var = np.array([((year_of[train & (month_of == m)] - ybar[m]) ** 2).sum() for m in range(12)])
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    slope = np.where(var[:, None] > 0, moment / np.where(var > 0, var, 1.0)[:, None], 0.0)
    intercept = mean - slope * ybar[:, None]
    fit = FieldFit(fit_end, mean, slope, intercept, ever, np.zeros((12, len(leads))))
    if not damping:
        return fit
    # damping of the departure from the trend, one coefficient per init month and lead: each
    # training init paired with the row ``lead`` later when that is a training row too
    num, den = np.zeros((12, len(leads))), np.zeros((12, len(leads)))
    cell_num = np.zeros((12, len(leads), n_cells)) if per_cell else None
    cell_den = np.zeros((12, len(leads), n_cells)) if per_cell else None
    halo = max(int(k) for k in leads)
    for start, block in rows.blocks(halo=halo):
        anom = fit.departures(block, times[start:start + len(block)])
        for r in range(start, min(start + rows.block, len(times))):
            if not train[r]:
                continue
            a0 = anom[r - start]
            for j, lead in enumerate(leads):
                if r + lead < len(times) and train[r + lead]:
                    num[month_of[r], j] += _nansum_product(a0, anom[r + lead - start])
                    den[month_of[r], j] += _nansum_product(a0, a0)
                    if per_cell:
                        cell_num[month_of[r], j] += np.nan_to_num(a0 * anom[r + lead - start])
                        cell_den[month_of[r], j] += np.nan_to_num(a0 * a0)
    fit.damping[:] = _damping(num, den, 0.0)
    if per_cell:
        fit.cell_damping = _damping(cell_num, cell_den, fit.damping[:, :, None])
    return fit


def _damping(num: np.ndarray, den: np.ndarray, fallback) -> np.ndarray:
    """The regression coefficients num / den clipped to 0-1, ``fallback`` where den is 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, np.clip(num / np.where(den > 0, den, 1.0), 0.0, 1.0), fallback)


def _nansum_product(a: np.ndarray, b: np.ndarray) -> float:
    """``np.nansum(a * b)``, bit for bit, without nansum's copy of the product."""
    p = a * b
    p[np.isnan(p)] = 0.0
    return p.sum()


def forecast_fields(fit: FieldFit, latest: np.ndarray, init, leads, method: str) -> np.ndarray:
    """(lead, cells) forecast from ``init``, where ``latest`` is the observed map (cells) of the
    init month."""
    if method not in FIELD_METHODS:
        raise ClimateMLError(f"unknown field method {method!r} (known: {', '.join(FIELD_METHODS)})")
    init = pd.Timestamp(init)
    valid = pd.DatetimeIndex(add_months(pd.DatetimeIndex([init]), leads)[0])
    if method == "climatology":
        out = fit.mean[valid.month.values - 1]
    else:
        out = fit.trend(valid)
        if method != "linear_trend":
            anom0 = latest - fit.trend(pd.DatetimeIndex([init]))[0]
            if method == "trend_persistence":
                damp = np.ones((len(leads), 1))
            elif fit.cell_damping is not None:
                damp = fit.cell_damping[init.month - 1]
            else:
                damp = fit.damping[init.month - 1][:, None]
            out = out + damp * anom0[None, :]
    return np.clip(out, 0.0, 1.0)


EDGE_YEARS = 10  # the training years whose forecasts calibrate the ice edge
EDGE_GRID = np.round(np.arange(0.05, 0.505, 0.01), 2)  # the thresholds an edge calibration chooses from


class EdgeCalibration:
    """Where a forecast's ice edge should be drawn. A concentration forecast fitted for the
    squared error (a mean) need not put the ice edge where the 15% contour of that mean is: near
    the edge the forecasts of the per-cell references and of the networks are blurred (on the
    real maps, damped anomaly persistence drew the observed edge best at its 18-25% contours).
    ``add`` takes training forecasts with their observed maps; ``thresholds`` gives, per lead
    and valid calendar month (pooled with the months either side), the threshold of the
    forecast whose ice edge had the least integrated ice-edge error; ``remap_edge`` moves
    forecast concentrations monotonically so that this threshold becomes 15% (0 and 1 stay).
    Only ever fitted on training forecasts."""

    def __init__(self, n_leads: int, grid=EDGE_GRID):
        self.grid = np.asarray(grid, dtype=float)
        self.error = np.zeros((n_leads, 12, len(self.grid)))  # IIEE (area units of ``area``) per threshold

    def add(self, lead_index: int, month: int, forecast: np.ndarray, observed: np.ndarray, area: np.ndarray) -> None:
        """One training forecast (cells) of lead ``lead_index`` valid in calendar ``month`` (0-11)."""
        ok = np.isfinite(forecast) & np.isfinite(observed)
        f, ice, a = forecast[ok], observed[ok] >= THRESHOLD, area[ok]
        above = np.searchsorted(self.grid, f, side="right")  # f >= grid[k] exactly when k < above
        n = len(self.grid) + 1
        missed = np.cumsum(np.bincount(above[ice], weights=a[ice], minlength=n))[:-1]  # ice, forecast below
        false = np.cumsum(np.bincount(above[~ice], weights=a[~ice], minlength=n))[:-1]
        self.error[lead_index, month] += missed + (a[~ice].sum() - false)  # ... and open water forecast above

    def thresholds(self) -> np.ndarray:
        """(lead, 12 valid months): the best threshold; 15% where no forecast was added."""
        pooled = sum(np.roll(self.error, shift, axis=1) for shift in (-1, 0, 1))
        best = self.grid[pooled.argmin(-1)]
        return np.where(pooled.any(-1), best, THRESHOLD)


def remap_edge(maps: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Concentrations ``maps`` (..., lead, cells) moved so that ``thresholds`` (lead,) becomes
    15%, linearly on either side: ``remap_edge(c, t) >= 0.15`` exactly where ``c >= t``, 0 and 1
    stay, the order of values is kept and NaN stays NaN."""
    t = np.asarray(thresholds, dtype=float)[:, None]
    below = np.minimum(maps * (THRESHOLD / t), np.nextafter(THRESHOLD, 0.0))
    above = THRESHOLD + (maps - t) * ((1.0 - THRESHOLD) / (1.0 - t))
    return np.where(maps < t, below, np.minimum(above, 1.0))


class ExtentForecast:
    """The sea-ice extent of a month forecast by damped anomaly persistence of the ice-covered
    fraction of the ocean: the per-cell machinery (``fit_fields``) on one "cell", the share of
    the ocean area with ice (>= 15%) in each training month. Fitted on ``rows`` (a
    ``FieldRows``, read a block of months at a time) with ``area`` of its ocean cells; a month
    with no data has no fraction (and its calendar month then no forecast: NaN)."""

    def __init__(self, rows: FieldRows, area: np.ndarray, leads):
        self.area = np.asarray(area, dtype="float64")
        self.ocean_area = float(self.area.sum())
        self.leads = [int(k) for k in leads]
        fraction = np.concatenate([self.fraction(block) for _, block in rows.blocks()])
        self.fit = fit_fields(fraction[:, None], rows.times, rows.times[-1], self.leads)

    def fraction(self, maps: np.ndarray) -> np.ndarray:
        """(months,) the ice-covered share of the ocean area of each map (months, cells)."""
        maps = np.atleast_2d(maps)
        share = (np.nan_to_num(maps) >= THRESHOLD) @ self.area / self.ocean_area
        return np.where(np.isfinite(maps).any(1), share, np.nan)

    def predict(self, latest: np.ndarray, init) -> np.ndarray:
        """(lead,) the extent forecast from ``init``, whose map is ``latest`` (cells), in the
        units of ``area``."""
        share = forecast_fields(self.fit, self.fraction(latest), init, self.leads, "damped_anomaly_persistence")
        return share[:, 0] * self.ocean_area


def threshold_at_extent(maps: np.ndarray, area: np.ndarray, extent: np.ndarray,
                        bounds: tuple[float, float] = (EDGE_GRID[0], EDGE_GRID[-1])) -> np.ndarray:
    """(lead,) per map of ``maps`` (lead, cells): the concentration whose contour (the cells at
    or above it, highest first) encloses the area ``extent`` (lead,), kept within ``bounds`` (the
    thresholds an edge calibration chooses from) so that no map is moved further than that; 15%
    where the extent is NaN. ``remap_edge(maps, t)`` then draws the ice edge there."""
    out = np.full(len(maps), THRESHOLD)
    for j, (m, target) in enumerate(zip(maps, extent, strict=True)):
        ok = np.isfinite(m)
        if not np.isfinite(target) or not ok.any():
            continue
        values = m[ok]
        order = np.argsort(-values, kind="stable")
        k = min(int(np.searchsorted(np.cumsum(area[ok][order]), target)), len(order) - 1)
        out[j] = np.clip(values[order[k]], *bounds)
    return out


class PerCellReference:
    """A per-cell reference (one of ``FIELD_METHODS``) as a field model: the model files in
    ``models/fields/`` are one line around it."""

    def __init__(self, method: str, block_months: int | None = None, calibrate_edge: bool = False,
                 per_cell_damping: bool = False):
        if method not in FIELD_METHODS:
            raise ClimateMLError(f"unknown field method {method!r} (known: {', '.join(FIELD_METHODS)})")
        if per_cell_damping and method != "damped_anomaly_persistence":
            raise ClimateMLError(f"per_cell_damping is for damped_anomaly_persistence, not {method!r}")
        self.method, self.block_months, self.calibrate_edge = method, block_months, calibrate_edge
        self.per_cell_damping = per_cell_damping

    def fit(self, conc: xr.DataArray, cell_area: xr.DataArray, leads) -> PerCellReference:
        rows = FieldRows(conc, block_months=self.block_months)  # read in blocks of months (from a store: lazily)
        self.grid_, self.ocean_ = rows.grid, rows.ocean  # land cells are NaN throughout: left out
        self.leads_ = [int(k) for k in leads]
        self.fit_ = fit_fields(rows, rows.times, rows.times[-1], self.leads_,
                               damping=self.method == "damped_anomaly_persistence", per_cell=self.per_cell_damping)
        self.edge_ = None
        if self.calibrate_edge:  # the fit's own forecasts of the last EDGE_YEARS of training months
            area = np.asarray(cell_area.transpose(*self.grid_).values, dtype="float64").ravel()[self.ocean_]
            cal, times, n_t = EdgeCalibration(len(self.leads_)), rows.times, len(rows)
            for i in range(max(0, n_t - 12 * EDGE_YEARS - max(self.leads_)), n_t - 1):
                maps = forecast_fields(self.fit_, rows.row(i), times[i], self.leads_, self.method)
                for j, lead in enumerate(self.leads_):
                    if i + lead < n_t:
                        cal.add(j, times[i + lead].month - 1, maps[j], rows.row(i + lead), area)
            self.edge_ = cal.thresholds()
        return self

    def predict(self, conc: xr.DataArray) -> xr.DataArray:
        last = conc.isel({TIME: -1})
        latest = np.asarray(last.transpose(*self.grid_).values, dtype="float64").ravel()
        out = np.full((len(self.leads_), latest.size), np.nan)  # land stays NaN
        init = pd.Timestamp(last[TIME].values)
        maps = forecast_fields(self.fit_, latest[self.ocean_], init, self.leads_, self.method)
        if self.edge_ is not None:
            valid = pd.DatetimeIndex(add_months(pd.DatetimeIndex([init]), self.leads_)[0])
            maps = remap_edge(maps, self.edge_[np.arange(len(self.leads_)), valid.month.values - 1])
        out[:, self.ocean_] = maps
        shape = [last.sizes[d] for d in self.grid_]
        return xr.DataArray(out.reshape(len(self.leads_), *shape), dims=(LEAD, *self.grid_),
                            coords={LEAD: self.leads_})


def reference_models(methods=FIELD_METHODS) -> dict[str, Callable[[], PerCellReference]]:
    """The per-cell references as field-model factories, by name (what ``models/fields/`` holds)."""
    return {m: (lambda m=m: PerCellReference(m)) for m in methods}


def active_region(conc: np.ndarray, times: pd.DatetimeIndex, fit_end) -> np.ndarray:
    """(12, cells): ice (>= 15%) at least once in that calendar month up to ``fit_end``: with
    the observation's ice, the scoring region of the area-mean scores (``field_scores``)."""
    train = times <= pd.Timestamp(fit_end)
    return np.stack([(conc[train & (times.month.values == m + 1)] >= THRESHOLD).any(0) for m in range(12)])


@dataclass
class ScoredMaps:
    """A field unit's result: each init's scores (lead, ``FIELD_SCORES``), the number of
    members, and the maps themselves only when the caller asked for them (``on_forecast``)."""

    scores: dict
    members: int
    maps: dict | None = None


class MapSpool:
    """A field model's out-of-sample maps (init -> (member, lead, grid cells), as
    ``field_backtest``'s ``on_forecast`` hands them) written to a Zarr array in ``folder`` as
    they arrive, one init per chunk, so that a backtest holds one fold's maps at a time rather
    than every fold's. ``inits_and_maps()`` gives them back in init order as a Dask array
    (init, member, lead, cells) that reads one init at a time."""

    def __init__(self, folder):
        import threading

        self.folder = folder
        self._array = None
        self._inits: list[pd.Timestamp] = []
        self._lock = threading.Lock()

    def add(self, init, maps) -> None:
        import zarr

        maps = np.asarray(maps, dtype="float32")
        init = pd.Timestamp(init)
        with self._lock:
            if init in self._inits:
                raise ClimateMLError(f"map spool: init {init:%Y-%m} was handed twice")
            if self._array is None:
                self._array = zarr.create_array(str(self.folder), shape=(0, *maps.shape), chunks=(1, *maps.shape),
                                                dtype="float32", fill_value=np.nan)
            elif maps.shape != self._array.shape[1:]:
                raise ClimateMLError(f"map spool: maps of init {init:%Y-%m} are {maps.shape}, the earlier ones "
                                     f"{self._array.shape[1:]} (member, lead, cells)")
            n = len(self._inits)
            self._array.resize((n + 1, *maps.shape))
            self._array[n] = maps
            self._inits.append(init)

    def __len__(self) -> int:
        return len(self._inits)

    def inits_and_maps(self):
        """(inits in order, Dask array (init, member, lead, cells) read from the spool)."""
        import dask.array as dsa

        if self._array is None:
            raise ClimateMLError("map spool: no maps were handed")
        order = np.argsort(np.asarray(self._inits, dtype="datetime64[ns]"), kind="stable")
        data = dsa.from_zarr(self._array)
        return pd.DatetimeIndex(self._inits)[order], (data if (np.diff(order) == 1).all() else data[order])


class FieldTruth:
    """What scoring a field model's maps needs: the observed maps as rows (month, ocean cells)
    of float64 (``FieldRows``: from memory, or read lazily from a Zarr store a block of months
    at a time, so the stack is never held whole), the cell areas and the leads. Built once per
    process from a field backtest's data (``of``), so a unit scores its own maps where it ran and
    hands back only the scores (maps of a whole fold are hundreds of MB: sending them between
    processes cost more than the fits)."""

    # one backtest's truth per process, {token: FieldTruth}: dropped at the end of the backtest in
    # this process; a long-lived Dask worker keeps it until its next field backtest
    _cache: dict = {}

    def __init__(self, concentration: xr.DataArray, cell_area: xr.DataArray, leads=()):
        self.rows = FieldRows(concentration)
        self.times, self.ocean = self.rows.times, self.rows.ocean  # land cells are NaN throughout: left out
        area = cell_area.transpose(*self.rows.grid).values
        self.area = np.asarray(area, dtype="float64").ravel()[self.ocean]
        self.leads = [int(k) for k in np.atleast_1d(leads)]
        self._first_ice: np.ndarray | None = None

    @classmethod
    def of(cls, data: xr.Dataset) -> FieldTruth:
        """The truth of a field backtest's ``data`` (as ``field_backtest`` hands it to its units)."""
        token = data.attrs["truth_token"]
        if token not in cls._cache:
            cls._cache.clear()
            cls._cache[token] = cls(data["conc"], data["unit_cell_area"], data.attrs["leads"])
        return cls._cache[token]

    @classmethod
    def forget(cls) -> None:
        cls._cache.clear()

    def first_ice(self) -> np.ndarray:
        """(12, cells): the index of the first month of each calendar month with ice (>= 15%) in
        the cell, ``len(times)`` where there never was; one pass over the blocks of months."""
        first = self._first_ice
        if first is None:
            n = len(self.times)
            first = np.full((12, int(self.ocean.sum())), n, dtype=np.int64)
            months = self.times.month.values - 1
            for start, block in self.rows.blocks():
                for k in range(len(block)):
                    seen = first[months[start + k]]  # a view: set in place
                    seen[(block[k] >= THRESHOLD) & (seen == n)] = start + k
            self._first_ice = first  # one array, set whole: safe for units on threads
        return first

    def active(self, t0: pd.Timestamp) -> np.ndarray:
        """The active region of the fold fitted up to ``t0`` (``active_region`` of the months up to
        ``t0``), from ``first_ice``."""
        return self.first_ice() < self.times.searchsorted(pd.Timestamp(t0), side="right")

    def observed(self, valid: pd.DatetimeIndex) -> np.ndarray:
        """(len(valid), cells): the observed maps of those months, NaN where not observed."""
        out = np.full((len(valid), int(self.ocean.sum())), np.nan)
        for j, v in enumerate(valid):
            if v in self.times:
                out[j] = self.rows.row(self.times.get_loc(v))
        return out

    def score(self, maps: dict, t0: pd.Timestamp) -> dict:
        """Scores (lead, ``FIELD_SCORES``) of each init's maps (member, lead, grid cells) from
        the fold fitted up to ``t0``; NaN where the valid month is not observed."""
        times, leads = self.times, self.leads
        active = self.active(t0)
        out = {}
        for init, forecast in maps.items():
            members = forecast[..., self.ocean]
            mean = members.mean(0)
            valid = pd.DatetimeIndex(add_months(pd.DatetimeIndex([init]), leads)[0])
            seen = self.observed(valid)
            ensemble = members if members.shape[0] > 1 else mean[None]
            region = np.stack([active[v.month - 1] for v in valid])
            # the cells a score can count (field_scores' ``counted`` and every mask of it): ice
            # observed or forecast, or the active region. Scored on those cells alone, the numbers
            # are those of the whole grid (the same cells summed in the same order); CRPS per cell
            need = np.isfinite(seen) & ((seen >= THRESHOLD) | (ensemble >= THRESHOLD).any(0) | (mean >= THRESHOLD)
                                        | region)
            crps = np.full(seen.shape, np.nan)
            if need.any():
                crps[need] = crps_per_cell(ensemble[:, need], seen[need])  # every lead at once
            rows = np.full((len(leads), len(FIELD_SCORES)), np.nan)
            for j, v in enumerate(valid):
                if v in times:
                    c = need[j]
                    s = field_scores(mean[j, c], seen[j, c], self.area[c], region[j, c],
                                     members=members[:, j, c] if members.shape[0] > 1 else None, crps=crps[j, c])
                    rows[j] = [s[k] for k in FIELD_SCORES]
            out[init] = rows
        return out


def field_backtest(concentration: xr.DataArray, cell_area: xr.DataArray, leads, test_start, test_end,
                   refit_every: int = 12, models: dict[str, object] | None = None,
                   progress: Callable[[str], None] | None = None,
                   on_forecast: Callable[[str, pd.Timestamp, np.ndarray], None] | None = None,
                   n_jobs: int = 1, scheduler: str | None = None, time_limit: float | None = None,
                   executor=None) -> xr.Dataset:
    """Rolling-origin backtest of field ``models`` (name: factory or model file; the per-cell
    references are models too, see ``reference_models``) on the engine of the index backtests:
    (model, fold) units of ``field_unit`` on the folds of ``backtest.RollingOrigin``, run by
    ``executor`` (default from ``n_jobs`` / ``scheduler`` / ``time_limit``, as in
    ``backtest.backtest``); each unit scores its maps where it ran (``FieldTruth``) and hands
    back the scores. Returns scores (method, init_time, lead). A model that raises, returns a
    bad forecast or exceeds the time limit is left out, with its reason in
    ``attrs["failures"]`` (JSON). ``on_forecast(name, init, maps)`` is handed each model's
    checked forecast, (member, lead, grid cells) in float32, e.g. to keep one for a map or to
    archive it (only then do the maps travel back from the units)."""
    import uuid

    from climate_ml.backtest import Outcomes, choose_executor

    times = pd.DatetimeIndex(concentration[TIME].values)
    leads = [int(k) for k in leads]
    models = dict(models or {})
    if not models:
        raise ClimateMLError("field backtest: no field model to run")
    names = list(models)
    test_end = min(pd.Timestamp(test_end), times[-1])
    if pd.Timestamp(test_start) <= times[0]:
        raise ClimateMLError(f"test start {pd.Timestamp(test_start):%Y-%m} leaves no training data")
    plan = RollingOrigin(test_start, test_end, refit_every).blocks()
    inits = month_range(plan[0][0], test_end)
    row = {t: k for k, t in enumerate(inits)}
    out = np.full((len(names), len(inits), len(leads), len(FIELD_SCORES)), np.nan)
    n_members: dict[str, tuple[pd.Timestamp, int]] = {}  # model -> its first fold and number of members

    def score(name: str, t0: pd.Timestamp, scored: ScoredMaps) -> None:
        """Take one (model, fold)'s scores (and maps, handed to ``on_forecast``), in init order."""
        first = n_members.setdefault(name, (t0, scored.members))
        if not outcomes.check_members(name, {first[0]: first[1], t0: scored.members}):
            return
        for init, forecast in (scored.maps or {}).items():
            on_forecast(name, init, forecast)
        for init, rows in scored.scores.items():
            out[names.index(name), row[init]] = rows

    # what each unit (and worker) gets; the token names this backtest's ``FieldTruth``
    data = xr.Dataset({"conc": concentration},
                      attrs={"leads": leads, "truth_token": uuid.uuid4().hex, "return_maps": int(on_forecast is not None)})
    data["unit_cell_area"] = cell_area.drop_vars([c for c in cell_area.coords if c not in cell_area.dims])
    units = [(name, spec, t0, block) for t0, block in plan for name, spec in models.items()]
    outcomes = Outcomes(names, time_limit, consume=score)
    executor = executor or choose_executor(n_jobs, scheduler, time_limit)
    try:
        executor.run(None, data, units, outcomes, progress or (lambda msg: None), work=field_unit)
    finally:
        FieldTruth.forget()  # the observed maps scored in this process
    failures = outcomes.failures
    keep = [i for i, name in enumerate(names) if name not in failures]
    coords = {"method": [names[i] for i in keep], INIT: inits, LEAD: leads}
    return xr.Dataset({name: (("method", INIT, LEAD), out[keep][..., s]) for s, name in enumerate(FIELD_SCORES)},
                      coords=coords, attrs={"units_iiee": "1e6 km2", "units_sie_error": "1e6 km2",
                                            "failures": json.dumps(failures)})


def field_unit(name: str, spec, t0: pd.Timestamp, inits: pd.DatetimeIndex, problem=None, data: xr.Dataset | None = None,
               cache: dict | None = None) -> tuple[str, object, float]:
    """One (field model, fold) for the backtest engine's executors: fit on the maps up to
    ``t0``, forecast every init of the block from the maps up to that init, score the maps
    against the observed ones (``FieldTruth``). Returns (name, ``ScoredMaps`` or the error text,
    seconds)."""
    from climate_ml.backtest import resolve_model, unit_inputs

    _, data = unit_inputs(problem, data)
    tic = time.perf_counter()
    conc = data["conc"]
    leads = [int(k) for k in np.atleast_1d(data.attrs["leads"])]
    spatial = [d for d in conc.dims if d != TIME]
    shape = tuple(conc.sizes[d] for d in spatial)
    times = pd.DatetimeIndex(conc[TIME].values)
    # maps read lazily from a store are read here, in this unit's thread: inside a Dask worker the
    # default scheduler would be the cluster itself, and in a worker process it would start threads
    # (Dask's config is global: on a worker with several threads, two units overlapping may leave
    # the other's reads to the default; FieldRows and the recent months always read synchronously)
    with dask.config.set(scheduler="synchronous"):
        try:
            model = fit_field_model(resolve_model(spec), conc.isel({TIME: slice(0, times.get_loc(t0) + 1)}),
                                    data["unit_cell_area"], leads, name)
            recent = _recent_months_held(conc, times.get_loc(inits[0]), times.get_loc(inits[-1]))
            maps = {}
            for init in inits:
                raw = predict_field_model(model, recent.isel({TIME: slice(0, times.get_loc(init) + 1)}), name)
                maps[init] = check_field_prediction(raw, spatial, shape, leads, name)
                if maps[init].shape[0] != maps[inits[0]].shape[0]:
                    raise ModelError(f"{name}: members of unequal size: {maps[inits[0]].shape[0]} at "
                                     f"{inits[0]:%Y-%m}, {maps[init].shape[0]} at {init:%Y-%m}; return the same "
                                     "members every time")
        except ModelError as exc:
            return name, str(exc), time.perf_counter() - tic
        seconds = time.perf_counter() - tic  # the model's time; scoring is the harness's
        # scored here in float64; the maps travel back in float32, the precision the archive keeps
        scored = ScoredMaps(FieldTruth.of(data).score(maps, t0), maps[inits[0]].shape[0],
                            {t: m.astype("float32") for t, m in maps.items()} if data.attrs.get("return_maps") else None)
    return name, scored, seconds


RECENT_MONTHS = 24  # months before a fold's first init that its forecasts find in memory


def _recent_months_held(conc: xr.DataArray, first: int, last: int) -> xr.DataArray:
    """``conc`` up to month ``last``, its months from ``RECENT_MONTHS`` before ``first`` read into
    memory: the same values, but a forecast of a stack left in the store, which reads its last
    months, no longer decompresses their stored chunk (up to 120 months) at every init."""
    if conc.chunks is None:
        return conc
    start = max(0, first - RECENT_MONTHS)
    held = conc.isel({TIME: slice(start, last + 1)}).compute(scheduler="synchronous")
    return xr.concat([conc.isel({TIME: slice(0, start)}), held], dim=TIME) if start else held


def _call(fn, name: str, *args):
    try:
        return fn(*args)
    except ClimateMLError:
        raise
    except Exception as exc:
        raise ModelError(f"{name}: {type(exc).__name__} in fit/predict: {exc}") from exc


def predict_field_model(model, conc: xr.DataArray, name: str):
    """A fitted field model's raw forecast from the last month of ``conc`` (check it with
    ``check_field_prediction``); an exception inside the model is a ``ModelError``."""
    return _call(model.predict, name, conc)


def fit_field_model(factory, conc: xr.DataArray, cell_area: xr.DataArray, leads, name: str):
    """A fresh field model fitted on ``conc`` (the months up to the cut-off)."""
    if model_target(factory) != FIELD_TARGET:
        raise ModelError(f"{name}: not a field model (its file must say TARGET = {FIELD_TARGET!r}); "
                         f"backtest index models with `climate-ml backtest arctic_sea_ice`")
    model = new_model(factory, name)
    _call(model.fit, name, conc, cell_area, leads)
    return model


def summarise_field_scores(scores: xr.Dataset) -> dict[str, dict[str, dict[str, float | None]]]:
    """Per method and lead: mean IIEE, RMSE of the extent error, mean binary accuracy, mean
    Brier score of the probability of ice, mean CRPS and the spread/skill ratio (None for a
    model without members)."""
    table = {
        "iiee": scores["iiee"].mean(INIT),
        "sie_rmse": np.sqrt((scores["sie_error"] ** 2).mean(INIT)),
        "binary_accuracy": scores["binary_accuracy"].mean(INIT),
        "ice_brier": scores["ice_brier"].mean(INIT),
        "conc_crps": scores["crps"].mean(INIT),
        "spread_skill": np.sqrt(scores["spread"].mean(INIT) / scores["sq_error"].mean(INIT)),
    }
    out: dict = {}
    for method in scores["method"].values:
        out[str(method)] = {
            name: {str(int(lead)): (None if not np.isfinite(v) else round(float(v), 4))
                   for lead, v in zip(scores[LEAD].values, da.sel({"method": method}).values, strict=True)}
            for name, da in table.items()
        }
    return out


def ice_probability(forecast: xr.DataArray, threshold: float = THRESHOLD) -> xr.DataArray:
    """Probability of ice (concentration >= ``threshold``) per cell: the share of members at or
    above it (0 or 1 for a map without members); NaN where the forecast is NaN (land)."""
    ice = (forecast >= threshold).astype(float).where(forecast.notnull())
    out = ice.mean("member") if "member" in forecast.dims else ice
    out.attrs = {"long_name": f"probability of sea-ice concentration >= {threshold:.0%}", "units": "1"}
    return out


def concentration_field(obs: xr.Dataset) -> tuple[xr.DataArray, xr.DataArray]:
    """The concentration variable (fraction) and the cell area of a stored sea-ice dataset."""
    fields = [v for v in obs.data_vars if obs[v].attrs.get("standard_name") == "sea_ice_area_fraction"
              or obs[v].attrs.get("units") == "1"]
    if not fields or "cell_area" not in obs.coords:
        raise ClimateMLError("field forecasts need a sea-ice concentration field (fraction) with a 'cell_area' "
                             f"coordinate; the dataset has {sorted(obs.data_vars)}")
    return obs[fields[0]], obs["cell_area"]


def field_forecast_maps(concentration: xr.DataArray, init, lead: int, methods=FIELD_METHODS) -> dict[str, xr.DataArray]:
    """Each reference's forecast field (grid) from ``init`` at ``lead``, fitted on data up to init."""
    known = concentration.sel({TIME: slice(None, pd.Timestamp(init))})
    return {m: PerCellReference(m).fit(known, None, [lead]).predict(known).sel({LEAD: lead}, drop=True) for m in methods}
