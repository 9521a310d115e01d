"""Seasonal totals: a precipitation series forecast as monthly totals at leads of months and as
the total of a season (e.g. California's November-March, a monsoon's June-September) issued from
inits in the months before it, each with tercile probabilities. A problem of this kind is one
small subclass that names its season, its inits, its leads and its data (``california_rainfall``).

init_time t means precipitation (and any predictor) of month t is known. The target at lead L
is the precipitation total of month t+L; the baseline is the calendar-month climatology of the
training window, so ACC is the correlation of departures from it.

The season forecast is derived from the monthly ones: for an init in ``season_inits`` it is the
season's months already observed at the init plus the forecast totals of the others. Forecasts
are also probabilistic. The training window's values for the valid calendar month (or its season
totals) are moved to the deterministic forecast and scaled by r, the model's root-mean-square
error in units of the climatological standard deviation over its own earlier out-of-sample
forecasts, i.e. those verified before the fold's training cut-off (r = 1 until
``min_past_errors`` such errors, ``min_past_seasons`` for the season, exist); the share of these
members in each tercile is its probability. Rainfall keeps its skew, and a climatological
forecast gets 1/3 each. The tercile edges come from the training window only. A model with
members adds their spread to the monthly totals' r (``probabilities.combined_spread``, in units
of the climatological standard deviation); the season total keeps the r of its past errors,
because members are not independent draws month by month and their season totals spread about
twice as wide as the totals err (272 against 140 mm for the rainfall ConvLSTM on nClimDiv).

Predictors at init t: precipitation departures at ``precip_lags``, predictor indices (e.g. Nino
3.4 from an SST data set given as a predictor) as departures from their training climatology at
``predictor_lags`` plus their 3-month mean ``enso`` (for Nino 3.4), the calendar month and
``baseline`` (init_time, lead): the training-window mean of the valid calendar month. An SST
field given as a predictor is also kept as coarse maps over ``field_region`` whose anomalies at
``field_lags`` (``field_anomaly``) spatial models read (the rainfall ConvLSTM); tabular models
leave maps out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
import xarray as xr

from climate_ml.errors import ClimateMLError
from climate_ml.features import anomalies, coarsen_field, fit_climatology, lagged, trailing_mean
from climate_ml.probabilities import combined_spread, reliability
from climate_ml.problems.base import (
    FoldData,
    Problem,
    feature_dataset,
    field_anomaly_features,
    lead_stack,
    predictor_features,
)
from climate_ml.regions import REGIONS
from climate_ml.schema import INIT, LEAD, MEMBER, TIME, add_months, add_valid_time
from climate_ml.scores import (
    brier_score_upper_tercile,
    brier_skill_upper_tercile,
    observed_category,
    ranked_probability_skill,
    shifted_climatology_probabilities,
    tercile_edges,
)

MONTH_ABBR = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass
class SeasonalTotals(Problem):
    """A precipitation problem with a season total; subclasses set ``name``, ``description``,
    ``leads``, ``season_months``, ``season_inits``, ``references`` and their default data."""

    leads: tuple[int, ...] = tuple(range(1, 8))
    target_units: str = "mm"
    plausible_range: tuple[float, float] = (0.0, 3000.0)
    references: tuple[str, ...] = ("climatology",)
    season_months: tuple[int, ...] = (11, 12, 1, 2, 3)
    season_inits: tuple[int, ...] = (8, 9, 10, 11)
    precip_lags: tuple[int, ...] = tuple(range(6))
    predictor_lags: tuple[int, ...] = (0, 1, 2, 3)
    min_past_errors: int = 12
    min_past_seasons: int = 5
    field_lags: tuple[int, ...] = (0, 1, 2, 3)  # SST anomaly maps for spatial models, from an SST predictor
    field_resolution: float = 5.0
    target_variable: str | None = None
    field_region: ClassVar[str] = "pacific"
    default_predictors: ClassVar[tuple[str, ...]] = ()
    panels: ClassVar[tuple[str, ...]] = ("season",)

    def __post_init__(self):
        start = self.season_months[0]
        if list(self.season_months) != [(start - 1 + k) % 12 + 1 for k in range(len(self.season_months))]:
            raise ClimateMLError(f"{self.name}: season months {self.season_months} are not consecutive calendar months")
        last_offset = (self.season_months[-1] - start) % 12 + (start - min(self.season_inits))
        if last_offset > max(self.leads):
            raise ClimateMLError(f"{self.name}: leads up to {max(self.leads)} do not reach the season's end from the "
                                 "earliest init")

    @property
    def season_label(self) -> str:
        """The season's months as people write them, e.g. ``Nov-Mar``."""
        return f"{MONTH_ABBR[self.season_months[0] - 1]}-{MONTH_ABBR[self.season_months[-1] - 1]}"

    # -- inputs ------------------------------------------------------------------------------

    def prepare_target(self, obs: xr.Dataset) -> xr.Dataset:
        names = [v for v in obs.data_vars if obs[v].dims == (TIME,)]
        if len(names) != 1:
            raise ClimateMLError(f"{self.name} needs one precipitation series over time; the dataset has "
                                 f"{sorted(obs.data_vars)}")
        pr = obs[names[0]]
        units = pr.attrs.get("units")
        if units != "mm":
            raise ClimateMLError(f"{self.name} needs precipitation in mm; {names[0]!r} has units {units!r}")
        return xr.Dataset({"precip": pr.astype("float64")}).compute()

    def prepare(self, obs: xr.Dataset, predictors: dict[str, xr.Dataset] | None = None) -> xr.Dataset:
        """As ``Problem.prepare``; an SST field among the predictor data sets is also kept as a
        coarse map over ``field_region`` (``field``), for spatial models (``field_anomaly``)."""
        prepared = super().prepare(obs, predictors)
        maps = [ds[v] for ds in (predictors or {}).values() for v in ds.data_vars
                if ds[v].dims == (TIME, "lat", "lon")]
        if maps and self.field_lags:
            box = REGIONS[self.field_region]
            sst = maps[0].where(box.mask(maps[0]["lat"], maps[0]["lon"]), drop=True)
            field = coarsen_field(sst, self.field_resolution).astype("float64").compute()
            prepared["field"] = field.reindex({TIME: prepared[TIME].values})
        return prepared

    def _climatology(self, prepared: xr.Dataset, fit_end) -> xr.DataArray:
        return fit_climatology(prepared["precip"], fit_end)

    def target(self, prepared: xr.Dataset, fit_end) -> xr.DataArray:
        return add_valid_time(lead_stack(prepared["precip"], self.leads, "precipitation total of the month valid_time",
                                         self.target_units))

    def target_end(self, inits) -> xr.DataArray:
        inits = pd.DatetimeIndex(inits)
        return xr.DataArray(add_months(inits, self.leads), dims=(INIT, LEAD), coords={INIT: inits, LEAD: list(self.leads)})

    def _valid_month_table(self, times: pd.DatetimeIndex, table: np.ndarray) -> np.ndarray:
        """table[month-1, ...] looked up at each (init, lead)'s valid calendar month."""
        valid_month = (times.month.values[:, None] - 1 + np.asarray(self.leads)[None, :]) % 12
        return table[valid_month]

    def baseline(self, prepared: xr.Dataset, fit_end) -> xr.DataArray:
        times = pd.DatetimeIndex(prepared[TIME].values)
        clim = self._climatology(prepared, fit_end).sel(month=range(1, 13)).values
        return xr.DataArray(self._valid_month_table(times, clim), dims=(INIT, LEAD),
                            coords={INIT: times, LEAD: list(self.leads)},
                            attrs={"units": self.target_units, "long_name": "training-window climatology at valid_time"})

    def fold_data(self, prepared: xr.Dataset, fit_end) -> FoldData:
        fit_end = pd.Timestamp(fit_end)
        pr = prepared["precip"]
        feats = {"precip_anomaly": lagged(anomalies(pr, self._climatology(prepared, fit_end)), self.precip_lags),
                 **predictor_features(prepared, fit_end, self.predictor_lags)}
        if "pred_nino34" in feats:  # the ENSO state: the latest 3-month mean Nino 3.4 anomaly
            feats["enso"] = trailing_mean(feats["pred_nino34"].sel(predictor_lag=0, drop=True), 3)
        if "field" in prepared:  # SST anomaly maps, for spatial models (tabular ones leave maps out)
            feats["field_anomaly"] = field_anomaly_features(prepared["field"], fit_end, self.field_lags)
        X = feature_dataset(feats)
        X["baseline"] = self.baseline(prepared, fit_end)
        times = pd.DatetimeIndex(prepared[TIME].values)
        return FoldData(fit_end, X, self.target(prepared, fit_end), self.target_end(times))

    # -- the wet season ----------------------------------------------------------------------

    def _season_offsets(self, init_month: int) -> list[int]:
        """Months from an init in ``init_month`` to each month of the season that follows it."""
        start = self.season_months[0]
        first = (start - init_month) % 12
        return [first + k for k in range(len(self.season_months))]

    def season_totals(self, precip: xr.DataArray) -> xr.DataArray:
        """Observed season totals labelled by the season's first month (NaN if incomplete)."""
        n = len(self.season_months)
        total = precip.rolling({TIME: n}, min_periods=n).sum().shift({TIME: -(n - 1)})
        return total.where(precip[TIME].dt.month == self.season_months[0])

    def scoring_context(self, prepared: xr.Dataset, fit_end) -> dict[str, xr.DataArray]:
        """Training-window samples (dim ``sample``) of each pair's valid calendar month and of the
        season totals; the season's known part, lead weights and observed total for inits in the
        season's init months (NaN for other inits)."""
        fit_end = pd.Timestamp(fit_end)
        pr = prepared["precip"]
        times = pd.DatetimeIndex(pr[TIME].values)
        train = pr.sel({TIME: slice(None, fit_end)})
        by_month = [train.values[train[TIME].dt.month.values == m] for m in range(1, 13)]
        width = len(times) // 12 + 1  # the same for every fold, so folds concatenate
        table = np.full((12, width), np.nan)
        for m, v in enumerate(by_month):
            table[m, : len(v)] = v
        samples = xr.DataArray(self._valid_month_table(times, table), dims=(INIT, LEAD, "sample"),
                               coords={INIT: times, LEAD: list(self.leads)})
        seasons = self.season_totals(pr)
        last_start = fit_end - pd.DateOffset(months=len(self.season_months) - 1)  # seasons complete by fit_end
        past = seasons.sel({TIME: slice(None, last_start)}).values
        past = past[np.isfinite(past)]
        if past.size < 10:
            raise ClimateMLError(f"{self.name}: only {past.size} complete seasons before {fit_end:%Y-%m}; start the test period later")

        weights = np.zeros((len(times), len(self.leads)))
        known = np.full(len(times), np.nan)
        observed = np.full(len(times), np.nan)
        season_end = np.full(len(times), np.datetime64("NaT"), dtype="datetime64[ns]")
        season_by_start = seasons.to_series()
        pr_values = pr.values
        for i, t in enumerate(times):
            if t.month not in self.season_inits:
                continue
            offsets = self._season_offsets(t.month)
            known[i] = sum(pr_values[i + o] for o in offsets if o <= 0)
            for o in offsets:
                if o >= 1:
                    weights[i, self.leads.index(o)] = 1.0
            observed[i] = season_by_start.get(t + pd.DateOffset(months=offsets[0]), np.nan)
            season_end[i] = np.datetime64(t + pd.DateOffset(months=offsets[-1]), "ns")
        init = {INIT: times}
        return {
            "climate_samples": samples,
            "season_weights": xr.DataArray(weights, dims=(INIT, LEAD), coords={**init, LEAD: list(self.leads)}),
            "season_known": xr.DataArray(known, dims=INIT, coords=init),
            "season_obs": xr.DataArray(observed, dims=INIT, coords=init),
            "season_end": xr.DataArray(season_end, dims=INIT, coords=init),
            "season_samples": xr.DataArray(np.broadcast_to(np.pad(past, (0, width - past.size), constant_values=np.nan),
                                                           (len(times), width)), dims=(INIT, "sample"), coords=init),
        }

    # -- probabilistic forecasts and scores --------------------------------------------------

    @staticmethod
    def _past_rms(errors: xr.DataArray, verified_by: xr.DataArray, fit_end: xr.DataArray, minimum: int) -> xr.DataArray:
        """For each init, the RMS of ``errors`` over pairs verified by that init's fold cut-off
        (out-of-sample errors of earlier folds); 1 where fewer than ``minimum`` exist."""
        out = xr.ones_like(errors)
        for f in np.unique(fit_end.values):
            past = errors.where(verified_by <= f)
            n = past.notnull().sum(INIT)
            rms = np.sqrt((past**2).mean(INIT)).where(n >= minimum, 1.0)
            rows = fit_end == f
            out = xr.where(rows, rms, out)
        return out.transpose(*errors.dims)

    def monthly_probabilities(self, result, name: str) -> xr.DataArray:
        """Tercile probabilities (init_time, lead, category) of a backtested model's monthly totals."""
        fc = _mean(result.forecasts[name])
        samples = result.context["climate_samples"]
        spread = np.maximum(samples.std("sample", skipna=True), 0.1)
        errors = (fc - result.obs) / spread
        ratio = self._past_rms(errors, self.target_end(fc[INIT].values), result.fit_end, self.min_past_errors)
        ratio = combined_spread(ratio, result.members.get(name), spread)
        return shifted_climatology_probabilities(fc, samples, ratio)

    def season_forecasts(self, result, name: str) -> xr.Dataset:
        """The wet-season total (deterministic and tercile probabilities) for each test init in
        the season's init months, with the observed total and the training-window edges."""
        ctx = result.context
        fc = _mean(result.forecasts[name])
        rows = ctx["season_known"].notnull()
        total = (ctx["season_known"] + (fc * ctx["season_weights"]).sum(LEAD)).where(rows)
        samples = ctx["season_samples"]
        errors = (total - ctx["season_obs"]) / np.maximum(samples.std("sample", skipna=True), 0.1)
        ratio = self._past_rms(errors, ctx["season_end"], result.fit_end, self.min_past_seasons)
        probs = shifted_climatology_probabilities(total, samples, ratio)
        ds = xr.Dataset({"forecast": total, "observed": ctx["season_obs"], "probability": probs,
                         "edges": tercile_edges(samples)}).isel({INIT: rows.values})
        ds["forecast"].attrs = {"units": self.target_units, "long_name": f"{self.season_label} precipitation total"}
        return ds

    def outlook(self, prepared: xr.Dataset, forecast: xr.DataArray, recent, name: str) -> dict:
        """Tercile probabilities for a live forecast (one init): monthly totals at every lead and,
        from an init in the season's init months, the wet-season total. The spread ratio comes
        from ``recent``, a backtest of the same model on data up to the init (its out-of-sample
        errors); the tercile edges from the data up to the init."""
        init = pd.Timestamp(forecast[INIT].values[0])
        known = prepared.sel({TIME: slice(None, init)})
        ctx = {k: v.sel({INIT: [init]}) for k, v in self.scoring_context(known, init).items()}
        fc = _mean(forecast).sel({INIT: [init]})
        samples = ctx["climate_samples"]
        spread = np.maximum(recent.context["climate_samples"].std("sample", skipna=True), 0.1)
        errors = (_mean(recent.forecasts[name]) - recent.obs) / spread
        n = errors.notnull().sum(INIT)
        ratio = np.sqrt((errors**2).mean(INIT)).where(n >= self.min_past_errors, 1.0)
        if MEMBER in forecast.dims:  # the members' own spread joins the errors' (as in the backtest)
            ratio = combined_spread(ratio, forecast.sel({INIT: init}, drop=True),
                                    np.maximum(samples.std("sample", skipna=True), 0.1).isel({INIT: 0}, drop=True))
        probs = shifted_climatology_probabilities(fc, samples, ratio)
        monthly = {str(int(lead)): {c: round(float(probs.sel({LEAD: lead, "category": c}).values[0]), 3)
                                    for c in probs["category"].values}
                   for lead in fc[LEAD].values}
        out = {"init_time": f"{init:%Y-%m}", "monthly_terciles": monthly,
               "spread_ratio": {str(int(k)): round(float(v), 3) for k, v in zip(ratio[LEAD].values, ratio.values, strict=True)}}
        if init.month in self.season_inits:
            total = float((ctx["season_known"] + (fc * ctx["season_weights"]).sum(LEAD)).values[0])
            past = self.season_forecasts(recent, name)
            s_err = ((past["forecast"] - past["observed"]) / np.maximum(ctx["season_samples"].std("sample", skipna=True).values[0], 0.1)).values
            s_err = s_err[np.isfinite(s_err)]
            s_ratio = float(np.sqrt(np.mean(s_err**2))) if s_err.size >= self.min_past_seasons else 1.0
            p = shifted_climatology_probabilities(xr.DataArray([total], dims=INIT), ctx["season_samples"].drop_vars(INIT),
                                                  xr.DataArray([s_ratio], dims=INIT))
            edges = tercile_edges(ctx["season_samples"]).isel({INIT: 0}).values
            out["season"] = {"months": self.season_label, "forecast": round(total, 1), "units": self.target_units,
                             "tercile_edges": [round(float(e), 1) for e in edges], "spread_ratio": round(s_ratio, 3),
                             "probability": {c: round(float(p.sel(category=c).values[0]), 3) for c in p["category"].values},
                             "past_forecasts_in_spread": int(s_err.size)}
        return out

    def extra_scores(self, result, name: str) -> tuple[dict[str, dict[str, float]], dict]:
        probs = self.monthly_probabilities(result, name)
        onehot = observed_category(result.obs, tercile_edges(result.context["climate_samples"]))
        per_lead = {
            "brier_upper_tercile": _by_lead(brier_score_upper_tercile(probs, onehot)),
            "bss_upper_tercile": _by_lead(brier_skill_upper_tercile(probs, onehot)),
            "rpss": _by_lead(ranked_probability_skill(probs, onehot)),
        }
        return per_lead, {"season": season_scores(self.season_forecasts(result, name)),
                          "reliability": {c: reliability(probs, onehot, c) for c in ("above", "below")}}


def _mean(fc: xr.DataArray) -> xr.DataArray:
    return fc.mean(MEMBER) if MEMBER in fc.dims else fc


def _by_lead(da: xr.DataArray) -> dict[str, float | None]:
    return {str(int(k)): _round(v) for k, v in zip(da[LEAD].values, da.values, strict=True)}


def _round(v) -> float | None:
    v = float(v)
    return None if not np.isfinite(v) else round(v, 4)


def season_scores(ds: xr.Dataset) -> dict:
    """RMSE, correlation, Brier score and BSS (upper tercile) and RPSS of wet-season forecasts, per init month
    (``Aug``...) and over all init months (``all``)."""
    months = pd.DatetimeIndex(ds[INIT].values).month
    groups = {MONTH_ABBR[m - 1]: months == m for m in sorted(set(months))}
    groups["all"] = np.ones(len(months), dtype=bool)
    out: dict[str, dict] = {k: {} for k in ("n", "rmse", "correlation", "brier_upper_tercile", "bss_upper_tercile", "rpss")}
    for key, sel in groups.items():
        part = ds.isel({INIT: sel})
        ok = (part["forecast"].notnull() & part["observed"].notnull()).values
        part = part.isel({INIT: ok})
        f, o = part["forecast"].values, part["observed"].values
        onehot = observed_category(part["observed"], part["edges"])
        out["n"][key] = int(ok.sum())
        out["rmse"][key] = _round(np.sqrt(np.mean((f - o) ** 2))) if f.size else None
        out["correlation"][key] = _round(np.corrcoef(f, o)[0, 1]) if f.size > 2 else None
        out["brier_upper_tercile"][key] = _round(brier_score_upper_tercile(part["probability"], onehot))
        out["bss_upper_tercile"][key] = _round(brier_skill_upper_tercile(part["probability"], onehot))
        out["rpss"][key] = _round(ranked_probability_skill(part["probability"], onehot))
    return out


def season_skill_interval(problem: SeasonalTotals, result, name: str, reference: str = "climatology",
                          n_boot: int = 2000, seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """Point value and 95% bootstrap interval, resampling whole seasons (a season's Aug-Nov
    inits stay together), of the wet-season BSS (upper tercile), RPSS and RMSE skill against
    ``reference`` (1 - rmse / rmse_ref), over all init months."""
    fc, ref = problem.season_forecasts(result, name), problem.season_forecasts(result, reference)
    ok = (fc["forecast"].notnull() & fc["observed"].notnull() & ref["forecast"].notnull()).values
    fc, ref = fc.isel({INIT: ok}), ref.isel({INIT: ok})
    years = pd.DatetimeIndex(fc[INIT].values).year.values
    onehot = observed_category(fc["observed"], fc["edges"])
    obs = fc["observed"].values
    bs = ((fc["probability"].sel(category="above") - onehot.sel(category="above")) ** 2).values
    bs_ref = ((1 / 3 - onehot.sel(category="above")) ** 2).values
    cum = fc["probability"].cumsum("category").isel(category=slice(0, 2))
    cum_o = onehot.cumsum("category").isel(category=slice(0, 2))
    rps = ((cum - cum_o) ** 2).sum("category").values
    rps_ref = ((np.array([1 / 3, 2 / 3]) - cum_o.transpose(INIT, "category").values) ** 2).sum(1)
    se = (fc["forecast"].values - obs) ** 2
    se_ref = (ref["forecast"].values - obs) ** 2

    def stats(idx):
        return (1 - bs[idx].mean() / bs_ref[idx].mean(), 1 - rps[idx].mean() / rps_ref[idx].mean(),
                1 - np.sqrt(se[idx].mean() / se_ref[idx].mean()))

    uniq = np.unique(years)
    members = [np.flatnonzero(years == y) for y in uniq]
    rng = np.random.default_rng(seed)
    draws = np.array([stats(np.concatenate([members[k] for k in rng.integers(0, len(uniq), len(uniq))]))
                      for _ in range(n_boot)])
    point = stats(np.arange(len(years)))
    keys = ("bss_upper_tercile", "rpss", f"rmse_skill_vs_{reference}")
    return {k: (round(float(point[i]), 4), round(float(np.percentile(draws[:, i], 2.5)), 4),
                round(float(np.percentile(draws[:, i], 97.5)), 4)) for i, k in enumerate(keys)}
