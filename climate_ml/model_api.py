"""The forecaster contract and loading models by path, RAMP-style.

A model file in ``models/`` defines ``make_model()`` returning an object with
``fit(X, y) -> self`` and ``predict(X) -> DataArray(init_time, lead)``. (Field models, whose
file says ``TARGET = "sea_ice_concentration"``, follow the map contract of
``climate_ml.sea_ice_fields`` instead.) ``X`` is an
``xr.Dataset`` over ``init_time`` (the problem's features, only information available at each
init); ``y`` is a ``DataArray(init_time, lead)`` of targets, NaN where not available for
training. ``to_table`` turns X into a 2-D numpy matrix for tabular learners.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from climate_ml.errors import ModelError
from climate_ml.schema import INIT, LEAD

FACTORY = "make_model"
FIELD_TARGET = "sea_ice_concentration"  # a model file that forecasts concentration maps says TARGET = this


def load_model_factory(path: str | Path) -> Callable[[], object]:
    """Import a model file by path and return its ``make_model`` factory."""
    path = Path(path)
    if path.is_dir():
        raise ModelError(f"{path}: a folder, not a model file (give its .py files, e.g. {path}/*.py)")
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    mod_name = f"climate_ml_user_model_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise ModelError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise ModelError(f"{path}: import failed ({type(exc).__name__}: {exc})") from exc
    factory = getattr(module, FACTORY, None)
    if not callable(factory):
        raise ModelError(f"{path}: no {FACTORY}() function")
    return factory


def new_model(factory: Callable[[], object], name: str) -> object:
    """A fresh model from its factory, checked to have ``fit`` and ``predict`` (a ``make_model``
    that returns something else fails here, by name, not later inside a fold)."""
    try:
        model = factory()
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"{name}: {type(exc).__name__} in {FACTORY}(): {exc}") from exc
    missing = [m for m in ("fit", "predict") if not callable(getattr(model, m, None))]
    if missing:
        raise ModelError(f"{name}: {FACTORY}() returned {type(model).__name__}, which has no "
                         f"{' or '.join(m + '()' for m in missing)} method")
    return model


def model_target(factory: Callable[[], object]) -> str | None:
    """The ``TARGET`` a model file declares (``FIELD_TARGET`` for field models); None for the
    index models of the main contract."""
    module = sys.modules.get(getattr(factory, "__module__", ""), None)
    return getattr(module, "TARGET", None)


def model_name(path: str | Path) -> str:
    return Path(path).stem


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def to_table(X: xr.Dataset, fields: bool = False) -> tuple[np.ndarray, list[str]]:
    """Flatten X to (n_init, n_features) float64, with feature names. Maps (variables with lat
    and lon dimensions, e.g. ``field_anomaly``) are left out unless ``fields`` is True: they are
    for spatial models, and would swamp a tabular learner with thousands of columns."""
    cols, names = [], []
    for name in sorted(X.data_vars):
        if not fields and {"lat", "lon"} <= set(X[name].dims):
            continue
        da = X[name].transpose(INIT, ...)
        other = [d for d in da.dims if d != INIT]
        if not other:
            cols.append(da.values.reshape(-1, 1))
            names.append(name)
            continue
        stacked = da.stack(feature=other)
        cols.append(stacked.values)
        for idx in stacked["feature"].values:
            parts = idx if isinstance(idx, tuple) else (idx,)
            names.append(name + "_" + "_".join(f"{d}{v}" for d, v in zip(other, parts, strict=True)))
    return np.column_stack(cols).astype("float64"), names


def check_prediction(pred, X: xr.Dataset, leads, where: str = "model") -> xr.DataArray:
    """Validate a model's predict() output against the contract; return it in canonical order."""
    if not isinstance(pred, xr.DataArray):
        raise ModelError(f"{where}: predict must return an xarray.DataArray, got {type(pred).__name__}")
    for dim in (INIT, LEAD):
        if dim not in pred.dims:
            raise ModelError(f"{where}: prediction lacks dimension {dim!r} (dims: {pred.dims})")
    if pred.sizes[INIT] != X.sizes[INIT] or not np.array_equal(
        pd.DatetimeIndex(pred[INIT].values), pd.DatetimeIndex(X[INIT].values)
    ):
        raise ModelError(f"{where}: prediction init_time does not match the inits of X")
    if sorted(int(v) for v in pred[LEAD].values) != sorted(int(v) for v in leads):
        raise ModelError(f"{where}: prediction leads {list(pred[LEAD].values)} != problem leads {list(leads)}")
    if not np.isfinite(pred.values).all():
        raise ModelError(f"{where}: prediction contains NaN or infinite values")
    extra = [d for d in pred.dims if d not in (INIT, LEAD, "member", "quantile")]
    if extra:
        raise ModelError(f"{where}: prediction has unexpected dimensions {extra}")
    return pred.sel({LEAD: list(leads)}).transpose(INIT, LEAD, ...).astype("float64")


def member_offsets(networks: int, draws: int, interleave: bool = False) -> np.ndarray:
    """(network, draw): the multiples of an error estimate sigma added to each network's forecast
    to make members (``models/convlstm_sea_ice.py``, ``climate_ml.layers.ConvLSTMForecaster``),
    scaled so that the variance (ddof 1) of all m = networks x draws offsets is m / (m + 1),
    which is what m members and an observation drawn from one distribution have. One draw gives
    zeros: the bare networks.

    By default every network gets the same ``draws`` normal quantiles at (k + 1/2) / draws,
    which sum to zero, so each network's members keep its forecast as their mean. With
    ``interleave`` the m quantiles at (k + 1/2) / m are dealt out in turn (network i gets
    quantiles i, i + networks, ...), so that networks which differ little still give m distinct
    levels instead of ``draws`` clusters; only all m offsets together sum to zero, so the
    members' mean is the networks' mean when sigma is the same for every network."""
    from scipy.stats import norm

    if draws == 1:
        return np.zeros((networks, 1))
    m = networks * draws
    if interleave:
        z = norm.ppf((np.arange(draws)[None, :] * networks + np.arange(networks)[:, None] + 0.5) / m)
    else:
        z = np.tile(norm.ppf((np.arange(draws) + 0.5) / draws), (networks, 1))
    return z * np.sqrt(m / (m + 1) / z.ravel().var(ddof=1))


def centred_members(centre: np.ndarray, offsets: np.ndarray, lower: float, upper: float, axis: int,
                    iterations: int = 32) -> np.ndarray:
    """Members ``clip(centre + offsets + t, lower, upper)`` whose mean along ``axis`` is
    ``centre`` (size 1 along ``axis``; concentration 0-1, or rainfall 0-inf), with one shift
    ``t`` per forecast found by bisection within that forecast's own bracket (so a forecast never
    depends on the others in the array). Where no member leaves the bounds, t = 0 and the
    members are ``centre + offsets``; near a bound the members keep their skew (next to open
    water only the upper ones show ice; in a dry month only the wetter ones rain more), and the
    members' mean, which the deterministic scores use, stays ``centre``. A centre at a bound
    leaves no room for spread: every member is the bound."""
    c, d = (np.moveaxis(a, axis, -1) for a in np.broadcast_arrays(centre, offsets))  # members last
    out = np.clip(c + d, lower, upper)
    out[c[..., 0] <= lower], out[c[..., 0] >= upper] = lower, upper
    edge = (((c + d) < lower).any(-1) | ((c + d) > upper).any(-1)) & (c[..., 0] > lower) & (c[..., 0] < upper)
    if edge.any():
        cs, ds = c[edge][:, 0], d[edge]
        # each forecast's own bracket: members of other inits or cells must not move it
        span = upper - lower if np.isfinite(upper - lower) else np.where(np.isfinite(upper), upper - cs, cs - lower)
        lo = -span - np.abs(ds).max(axis=1)
        hi = -lo
        for _ in range(iterations):
            mid = (lo + hi) / 2
            above = np.clip(cs[:, None] + ds + mid[:, None], lower, upper).mean(1) > cs
            hi, lo = np.where(above, mid, hi), np.where(above, lo, mid)
        out[edge] = np.clip(cs[:, None] + ds + lo[:, None], lower, upper)
    return np.moveaxis(out, -1, axis)


def clipped_spread_scale(centres: np.ndarray, sigmas: np.ndarray, offsets: np.ndarray, weights: np.ndarray,
                         error2: float, lower: float, upper: float, iterations: int = 8, most: float = 3.0,
                         tolerance: float = 1e-3) -> float:
    """The factor s by which to widen ``sigmas`` so that the members ``centred_members(centre,
    s * sigma * offsets)`` (``offsets``: the m member offsets, their variance m/(m+1)) spread
    as far as the forecasts erred: their ``weights``-weighted member variance, times (m+1)/m,
    summed over the given cells (``centres``, ``sigmas``, ``weights``: 1-D, pooled over
    forecasts), equals ``error2``, the same weighted sum of the squared errors of the centres.
    Members that would leave [lower, upper] are clipped, which narrows them; without clipping
    s is sqrt(error2 / sum(weights * sigmas^2)). With clipping the variance grows more slowly
    than s^2, so s is refined, each step taking the variance as a power of s fitted to the last
    two steps, until the variance is within ``tolerance`` (relative) of ``error2`` or after
    ``iterations`` steps; s is at most ``most`` times its unclipped value. Cells at a bound keep
    no spread whatever s is and may be left out of the arrays; their errors stay in ``error2``."""
    offsets = np.asarray(offsets, dtype=float).ravel()
    m = offsets.size
    nominal = float(np.asarray(weights, dtype=float) @ np.square(np.asarray(sigmas, dtype=float)))
    if m < 2 or nominal <= 0 or not error2 > 0:
        raise ValueError("clipped_spread_scale needs at least two members, some spread and some error")

    def variance(scale: float) -> float:  # a block of cells at a time: the members' temporaries stay small
        total = 0.0
        for lo in range(0, len(centres), 1 << 16):
            part = slice(lo, lo + (1 << 16))
            members = centred_members(np.asarray(centres[part], dtype=float)[None],
                                      offsets[:, None] * (scale * np.asarray(sigmas[part], dtype=float))[None],
                                      lower, upper, axis=0)
            total += float(np.asarray(weights[part], dtype=float) @ members.var(axis=0, ddof=1))
        return total * (m + 1) / m

    first = s = float(np.sqrt(error2 / nominal))
    v, power, before = variance(s), 2.0, None
    for _ in range(iterations):
        if abs(v / error2 - 1) <= tolerance or not v > 0:
            break
        if before is not None and before[0] != s and before[1] > 0 and v != before[1]:
            power = float(np.clip(np.log(v / before[1]) / np.log(s / before[0]), 0.25, 2.0))
        before = (s, v)
        s = min(s * (error2 / v) ** (1 / power), most * first)
        if s == before[0]:  # held at the cap
            break
        v = variance(s)
    return s
