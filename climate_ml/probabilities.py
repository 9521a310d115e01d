"""Category probabilities for forecasts, calibrated on the model's own out-of-sample errors
(and on its members' spread when it has members), and the scores that verify them.

A deterministic forecast f becomes a predictive distribution N(f, sigma^2), where sigma is the
root-mean-square error of the same model's earlier out-of-sample forecasts for the same lead and
target season (the valid calendar month and its two neighbours), counting only errors whose
target was observed by the fold's training cut-off. Until ``min_errors`` such errors exist,
sigma is the training window's standard deviation of the target for that season: the forecast
then carries no more confidence than climatology. Category probabilities are the predictive
mass below, between and above the thresholds (for El Nino: La Nina < -0.5 degC <= neutral <=
+0.5 degC < El Nino, on the 3-month mean Nino 3.4 anomaly, as CPC and IRI publish them).

A model that returns members (``member`` dim) adds its own per-forecast spread: sigma^2 is then
the mean of the out-of-sample error variance above and the members' predictive variance,
(m+1)/m times their variance about their mean (the spread an observation drawn like the members
has around their mean), so a forecast the members agree on is sharper than one they disagree
on. ``combined_spread`` does this for every problem's probabilities (rainfall's monthly terciles
as well). On the real-data backtests its RPSS was at least that of the errors' spread alone for
each of the three index models with members (README, "Category probabilities from members").

Scores: the ranked probability skill score and the Brier skill score of each category, both
against the climatological category frequencies of the training window (per target season),
and reliability tables (observed frequency against forecast probability, with counts).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr
from scipy.stats import norm

from climate_ml.schema import CATEGORY, INIT, LEAD, MEMBER


def valid_months(inits, leads) -> np.ndarray:
    """(init, lead) calendar month (1-12) of init + lead."""
    m = pd.DatetimeIndex(inits).month.values
    return (m[:, None] - 1 + np.asarray(leads)[None, :]) % 12 + 1


def _season_mask(months: np.ndarray, m: int) -> np.ndarray:
    return np.isin(months, [(m - 2) % 12 + 1, m, m % 12 + 1])


def past_error_spread(errors: xr.DataArray, verified_by: xr.DataArray, fit_end: xr.DataArray,
                      fallback: xr.DataArray, min_errors: int = 15) -> xr.DataArray:
    """sigma (init_time, lead): for the inits of each fold (``fit_end`` per init), the RMS of
    ``errors`` (init_time, lead) whose target was observed by that cut-off (``verified_by``),
    for the same lead and target season; ``fallback`` where fewer than ``min_errors`` exist."""
    months = valid_months(errors[INIT].values, errors[LEAD].values)
    e = errors.transpose(INIT, LEAD).values
    vb = verified_by.transpose(INIT, LEAD).values
    fe = fit_end.values
    out = fallback.transpose(INIT, LEAD).values.astype(float).copy()
    n_leads = e.shape[1]
    cell = np.arange(n_leads)[None, :] * 12 + months - 1  # (lead, valid month) of every error
    for f in np.unique(fe):
        known = (vb <= f) & np.isfinite(e)
        # squared errors and their counts per (lead, valid month), then per target season (the
        # month and its two neighbours)
        sq = np.bincount(cell[known], weights=e[known] ** 2, minlength=12 * n_leads).reshape(n_leads, 12)
        n = np.bincount(cell[known], minlength=12 * n_leads).reshape(n_leads, 12)
        sq = sq + np.roll(sq, 1, axis=1) + np.roll(sq, -1, axis=1)
        n = n + np.roll(n, 1, axis=1) + np.roll(n, -1, axis=1)
        rms = np.where(n >= min_errors, np.sqrt(sq / np.maximum(n, 1)), np.nan)
        rows = np.flatnonzero(fe == f)
        sigma = rms.ravel()[cell[rows]]
        out[rows] = np.where(np.isfinite(sigma), sigma, out[rows])
    return xr.DataArray(out, dims=(INIT, LEAD), coords={INIT: errors[INIT].values, LEAD: errors[LEAD].values})


def member_spread(members: xr.DataArray) -> xr.DataArray | None:
    """sqrt((m+1)/m x the variance of the m members) over the ``member`` dim: the spread of an
    observation drawn like the members around their mean; None for fewer than two members."""
    if MEMBER not in members.dims or members.sizes[MEMBER] < 2:
        return None
    m = members.sizes[MEMBER]
    return np.sqrt(members.var(MEMBER, ddof=1) * (m + 1) / m).drop_vars("valid_time", errors="ignore")


def combined_spread(sigma: xr.DataArray, members: xr.DataArray | None, scale=1.0) -> xr.DataArray:
    """sqrt((sigma^2 + s^2) / 2), where s is ``member_spread(members) / scale`` (``scale`` puts it
    in sigma's units, e.g. rainfall's climatological standard deviation); ``sigma`` itself when
    there are no members to add."""
    spread = None if members is None else member_spread(members)
    if spread is None:
        return sigma
    spread = (spread / scale).transpose(*sigma.dims)
    return np.sqrt((sigma**2 + spread**2) / 2)


def gaussian_category_probabilities(forecast: xr.DataArray, sigma: xr.DataArray, thresholds, labels) -> xr.DataArray:
    """P(category) under N(forecast, sigma^2): below thresholds[0], between, above thresholds[1]
    (dim ``category`` with ``labels``); sums to one, monotone in the forecast."""
    lo, hi = thresholds
    s = np.maximum(sigma, 1e-6)
    p_lo = xr.apply_ufunc(norm.cdf, (lo - forecast) / s)
    p_hi = xr.apply_ufunc(norm.sf, (hi - forecast) / s)
    p_mid = (1 - p_lo - p_hi).clip(min=0.0)  # rounding can leave -1e-45 when one tail holds everything
    probs = xr.concat([p_lo, p_mid, p_hi], dim=pd.Index(list(labels), name=CATEGORY))
    probs = probs / probs.sum(CATEGORY)
    return probs.where(forecast.notnull() & sigma.notnull())


def observed_categories(obs: xr.DataArray, thresholds, labels) -> xr.DataArray:
    """One-hot observed category (dim ``category``), NaN where the observation is."""
    lo, hi = thresholds
    cats = [obs < lo, (obs >= lo) & (obs <= hi), obs > hi]
    return xr.concat([c.astype(float) for c in cats], dim=pd.Index(list(labels), name=CATEGORY)).where(obs.notnull())


def climatological_probabilities(samples: np.ndarray, times: pd.DatetimeIndex, fit_end, inits, leads,
                                 thresholds) -> np.ndarray:
    """(init, lead, 3) category frequencies of the observed target series ``samples`` (over
    ``times``, the value valid at each month) up to ``fit_end``, per target season."""
    ok = (times <= pd.Timestamp(fit_end)) & np.isfinite(samples)
    v, m = samples[ok], times.month.values[ok]
    table = np.full((12, 3), 1 / 3)
    for month in range(1, 13):
        x = v[_season_mask(m, month)]
        if x.size >= 10:
            table[month - 1] = [(x < thresholds[0]).mean(), ((x >= thresholds[0]) & (x <= thresholds[1])).mean(),
                                (x > thresholds[1]).mean()]
    return table[valid_months(inits, leads) - 1]


def rpss(probs: xr.DataArray, onehot: xr.DataArray, reference: xr.DataArray, dim=INIT) -> xr.DataArray:
    """Ranked probability skill score against ``reference`` probabilities (same dims)."""
    def rps(p):
        cp = p.cumsum(CATEGORY).isel({CATEGORY: slice(0, -1)})
        co = onehot.cumsum(CATEGORY).isel({CATEGORY: slice(0, -1)})
        return ((cp - co) ** 2).sum(CATEGORY)
    ok = probs.notnull().all(CATEGORY) & onehot.notnull().all(CATEGORY) & reference.notnull().all(CATEGORY)
    return 1 - rps(probs).where(ok).mean(dim) / rps(reference).where(ok).mean(dim)


def brier_skill(probs: xr.DataArray, onehot: xr.DataArray, reference: xr.DataArray, category: str,
                dim=INIT) -> xr.DataArray:
    """Brier skill score of P(category) against the reference probability of that category."""
    p, o, r = (a.sel({CATEGORY: category}) for a in (probs, onehot, reference))
    ok = p.notnull() & o.notnull() & r.notnull()
    return 1 - ((p - o) ** 2).where(ok).mean(dim) / ((r - o) ** 2).where(ok).mean(dim)


PROBABILITY_BINS = np.linspace(0, 1, 11)


def reliability(probs: xr.DataArray, onehot: xr.DataArray, category: str, bins=PROBABILITY_BINS) -> list[dict]:
    """Reliability table of P(category), all leads pooled: per probability bin, the number of
    forecasts, their mean probability and the observed frequency."""
    p = probs.sel({CATEGORY: category}).values.ravel()
    o = onehot.sel({CATEGORY: category}).values.ravel()
    ok = np.isfinite(p) & np.isfinite(o)
    p, o = p[ok], o[ok]
    idx = np.clip(np.digitize(p, bins) - 1, 0, len(bins) - 2)
    return [{"bin": [round(float(bins[k]), 2), round(float(bins[k + 1]), 2)], "n": int((idx == k).sum()),
             "forecast": round(float(p[idx == k].mean()), 3) if (idx == k).any() else None,
             "observed": round(float(o[idx == k].mean()), 3) if (idx == k).any() else None}
            for k in range(len(bins) - 1)]


class GaussianCategories:
    """Three ordered categories for a problem's forecasts (a mixin for Problem classes),
    calibrated on each model's own out-of-sample errors (and its members' spread) as above. The
    problem sets ``categories`` (3 labels, low to high), ``scored_categories`` (those with a Brier skill score
    and a reliability table), ``min_errors``, ``target_end`` and a ``scoring_context`` with
    ``clim_probs`` (init, lead, category: the reference probabilities) and ``clim_std`` (init,
    lead: the spread before enough errors exist). ``category_bounds`` gives the two thresholds:
    constants (El Nino's +-0.5 degC) or per (init, lead) from the context (sea ice: the record low
    and last year's extent of the valid month, as known at the init)."""

    categories: tuple[str, str, str]
    scored_categories: tuple[str, ...]

    def category_bounds(self, context: dict) -> tuple:
        return self.thresholds

    def category_probabilities(self, result, name: str) -> xr.DataArray:
        """P(category) (init_time, lead, category) of a backtested model."""
        fc = result.forecasts[name]
        fc = (fc.mean("member") if "member" in fc.dims else fc).drop_vars("valid_time", errors="ignore")
        obs = result.obs.drop_vars("valid_time", errors="ignore")
        sigma = past_error_spread(fc - obs, self.target_end(fc[INIT].values), result.fit_end,
                                  result.context["clim_std"], self.min_errors)
        sigma = combined_spread(sigma, result.members.get(name))
        return gaussian_category_probabilities(fc, sigma, self.category_bounds(result.context), self.categories)

    def extra_scores(self, result, name: str) -> tuple[dict[str, dict[str, float]], dict]:
        """RPSS and the Brier skill score of each scored category per lead, against the
        context's reference probabilities; reliability tables (all leads pooled)."""
        probs = self.category_probabilities(result, name)
        onehot = observed_categories(result.obs.drop_vars("valid_time", errors="ignore"),
                                     self.category_bounds(result.context), self.categories)
        ref = result.context["clim_probs"]

        def by_lead(da):
            return {str(int(k)): (None if not np.isfinite(v) else round(float(v), 4))
                    for k, v in zip(da[LEAD].values, da.values, strict=True)}

        per_lead = {"rpss": by_lead(rpss(probs, onehot, ref)),
                    **{f"bss_{c}": by_lead(brier_skill(probs, onehot, ref, c)) for c in self.scored_categories}}
        return per_lead, {"reliability": {c: reliability(probs, onehot, c) for c in self.scored_categories}}

    def category_outlook(self, prepared: xr.Dataset, forecast: xr.DataArray, recent, name: str):
        """For a live forecast from one init: (init, the mean forecast, its spread sigma, P(category),
        the scoring context at the init). The spread comes from ``recent``, a backtest of the same
        model on data up to the init (errors by lead and target season), else the context's, and
        from the forecast's members when it has them (``combined_spread``)."""
        init = pd.Timestamp(forecast[INIT].values[0])
        known = prepared.sel({"time": slice(None, init)})
        ctx = {k: v.sel({INIT: [init]}) for k, v in self.scoring_context(known, init).items()}
        fc = forecast.mean("member") if "member" in forecast.dims else forecast
        fc = fc.sel({INIT: [init]}).drop_vars("valid_time", errors="ignore")
        past = recent.forecasts[name]
        past = (past.mean("member") if "member" in past.dims else past).drop_vars("valid_time", errors="ignore")
        errors = past - recent.obs.drop_vars("valid_time", errors="ignore")
        errors = errors.isel({INIT: errors[INIT].values < np.datetime64(init)})  # later inits: nothing verified yet
        both = xr.concat([errors, xr.full_like(fc, np.nan)], dim=INIT)
        verified = xr.concat([self.target_end(errors[INIT].values), self.target_end([init])], dim=INIT)
        fit_end = xr.DataArray(np.full(both.sizes[INIT], np.datetime64(init, "ns")), dims=INIT,
                               coords={INIT: both[INIT].values})
        fallback = xr.concat([xr.full_like(errors, np.nan), ctx["clim_std"]], dim=INIT)
        sigma = past_error_spread(both, verified, fit_end, fallback, self.min_errors).sel({INIT: [init]})
        if MEMBER in forecast.dims:
            sigma = combined_spread(sigma, forecast.sel({INIT: [init]}))
        probs = gaussian_category_probabilities(fc, sigma, self.category_bounds(ctx), self.categories)
        return init, fc, sigma, probs, ctx
