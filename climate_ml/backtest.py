"""Rolling-origin backtests with an expanding window, and the no-lookahead guard.

Folds: the test period is cut into blocks of ``refit_every`` months. For a block starting at
T0 every learned statistic (climatology, EOFs, scalers, the model itself) is fitted on data up
to T0, on training pairs whose target is fully observed by T0; the model then forecasts every
init in the block from predictors at that init. Each model in a run sees the same folds.
"""

from __future__ import annotations

import copy
import functools
import multiprocessing
import os
import threading
import time as _time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from climate_ml.cluster import available_cpus
from climate_ml.errors import ClimateMLError, ModelError
from climate_ml.model_api import (
    FIELD_TARGET,
    check_prediction,
    load_model_factory,
    model_target,
    new_model,
)
from climate_ml.problems.base import FoldData, Problem
from climate_ml.schema import INIT, LEAD, MEMBER, add_valid_time
from climate_ml.scores import METRICS, N_VERIFIED, ensemble_scores, rank_histogram, skill_score

Factory = Callable[[], object]


def month_range(start, end, step: int = 1) -> pd.DatetimeIndex:
    return pd.date_range(pd.Timestamp(start), pd.Timestamp(end), freq=f"{step}MS")


def fold_starts(test_start, test_end, refit_every: int) -> list[pd.Timestamp]:
    if refit_every < 1:
        raise ClimateMLError("refit_every must be at least 1 month")
    if pd.Timestamp(test_end) < pd.Timestamp(test_start):
        raise ClimateMLError(f"test end {pd.Timestamp(test_end):%Y-%m} is before test start {pd.Timestamp(test_start):%Y-%m}"
                             " (the test period ends with the data, or at --test-end)")
    return list(month_range(test_start, test_end, refit_every))


def fit_predict(model: ModelSpec, fold: FoldData, inits, leads, name: str = "model") -> xr.DataArray:
    """Fit a fresh model (a factory, or a model file's path) on the fold's training set and
    forecast the given inits."""
    pred, X_test = _fit_and_predict(resolve_model(model), fold, inits, name)
    return check_prediction(pred, X_test, leads, where=name)


def _fit_and_predict(factory: Factory, fold: FoldData, inits, name: str):
    """(raw prediction, X of the inits), unchecked."""
    return _predict(_fit(factory, fold.training_set(), fold.fit_end, name), fold, inits, name)


def _fit(factory: Factory, training: tuple[xr.Dataset, xr.DataArray], fit_end: pd.Timestamp, name: str):
    """A fresh model fitted on ``training`` (X, y): the fold's training set."""
    X_train, y_train = training
    if X_train.sizes[INIT] < 24:
        raise ClimateMLError(
            f"only {X_train.sizes[INIT]} training inits before {fit_end:%Y-%m}; "
            "start the test period later"
        )
    if model_target(factory) == FIELD_TARGET:
        raise ModelError(f"{name}: forecasts concentration maps (TARGET = {FIELD_TARGET!r}), not an index; "
                         "backtest it without index models: `climate-ml backtest arctic_sea_ice FILE`")
    model = new_model(factory, name)
    try:
        model.fit(X_train, y_train)
    except ClimateMLError:
        raise
    except Exception as exc:
        raise ModelError(f"{name}: {type(exc).__name__} in fit/predict: {exc}") from exc
    return model


def _predict(model, fold: FoldData, inits, name: str):
    """(raw prediction of the inits, their X), unchecked."""
    X_test = fold.test_set(inits)
    try:
        pred = model.predict(X_test)
    except ClimateMLError:
        raise
    except Exception as exc:
        raise ModelError(f"{name}: {type(exc).__name__} in fit/predict: {exc}") from exc
    return pred, X_test


class ProbeFits:
    """The fits of the lookahead probes of one model and one cut-off. Each probe's data differ
    from the real data only after the probe init; a probe whose training set is identical to
    one already fitted (always, for a model whose features do not read ahead: the training set
    ends at the cut-off) gets a copy of that fitted model instead of a new fit, since a model
    is fitted from its training set alone. A training set that differs, because a feature
    reads ahead, is fitted afresh, so the verdict is the one a refit per probe would give.
    Every probe predicts with its own copy: what one ``predict`` might keep never reaches another."""

    def __init__(self, factory: Factory, name: str):
        self.factory, self.name, self.fitted = factory, name, []

    def model(self, fold: FoldData):
        training = fold.training_set()
        for seen, model in self.fitted:
            if seen[0].equals(training[0]) and seen[1].equals(training[1]):
                return self._copy(model, training, fold.fit_end)
        model = _fit(self.factory, training, fold.fit_end, self.name)
        self.fitted.append((training, model))
        return self._copy(model, training, fold.fit_end)

    def _copy(self, model, training, fit_end):
        try:
            return copy.deepcopy(model)
        except Exception:  # a model that cannot be copied is fitted again: the same verdict, slower
            return _fit(self.factory, training, fit_end, self.name)


@dataclass
class BacktestResult:
    """Out-of-sample forecasts per model (init_time, lead) and the matching observations."""

    problem: str
    forecasts: dict[str, xr.DataArray]
    obs: xr.DataArray
    failures: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    baseline: xr.DataArray | None = None  # (init_time, lead): scores use anomalies from it
    fit_end: xr.DataArray | None = None  # (init_time): the training cut-off of each init's fold
    context: dict[str, xr.DataArray] = field(default_factory=dict)  # the problem's scoring_context per init
    definition: Problem | None = None  # the problem object (for its extra scores)
    members: dict[str, xr.DataArray] = field(default_factory=dict)  # (init_time, lead, member) of ensemble models
    looked_ahead: dict[str, str] = field(default_factory=dict)  # models the lookahead guard refused, with the reason

    def _anomalies(self, fc: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray]:
        if self.baseline is None:
            return fc, self.obs
        return fc - self.baseline, self.obs - self.baseline

    def lead_scores(self, name: str) -> dict[str, xr.DataArray]:
        """One model's per-lead scores (metric name: DataArray over lead): the registered metrics
        (``METRICS``) of the forecast (the member mean for an ensemble), the number of verified
        pairs ``n``, for an ensemble its CRPS and spread/skill, and the problem's extra scores."""
        fc, obs = self._anomalies(self.forecasts[name])
        out = {m: metric.compute(fc, obs) for m, metric in METRICS.items()}
        out["n"] = N_VERIFIED.compute(fc, obs)
        if name in self.members:  # forecasts hold the ensemble mean; these use the members
            out.update(ensemble_scores(self.members[name], self.obs))
        if self.definition is not None:
            leads = fc[LEAD]
            for metric, per_lead in self.definition.extra_scores(self, name)[0].items():
                out[metric] = xr.DataArray([np.nan if per_lead.get(str(int(k))) is None else per_lead[str(int(k))]
                                            for k in leads.values], dims=LEAD, coords={LEAD: leads.values})
        return out

    def scores(self, name: str) -> dict[str, dict[str, float]]:
        """``lead_scores`` as plain numbers (rounded, None where undefined), as JSON and the
        tables show them."""
        return {k: _per_lead(v) for k, v in self.lead_scores(name).items()}

    def extra(self, name: str) -> dict:
        """Summaries beyond per-lead scores: problem-specific ones (e.g. the rainfall wet season)
        and, for an ensemble, the rank histogram of the observations among its members."""
        out = self.definition.extra_scores(self, name)[1] if self.definition is not None else {}
        if name in self.members:
            out = {**out, "rank_histogram": rank_histogram(self.members[name], self.obs)}
        return out

    def skill(self, name: str, reference: str, metric: str = "rmse") -> dict[str, float]:
        fc, obs = self._anomalies(self.forecasts[name])
        ref, _ = self._anomalies(self.forecasts[reference])
        return _per_lead(skill_score(METRICS[metric], fc, obs, ref))

    def evaluation(self, reference: str | None = None, by: str | None = None) -> xr.Dataset:
        """Every model's scores in one Dataset: ``score`` (model, metric, lead), NaN where a
        metric does not apply to a model (CRPS of a single forecast); with ``reference``, also
        ``skill`` (model, metric, lead) of each registered metric against that model on the
        same pairs (``scores.skill_score``). The coordinate ``better`` says per metric whether
        "lower" or "higher" values are better ("" for counts and ratios such as spread/skill).
        ``by="season"`` (the init's season, DJF..SON) or ``by="month"`` (the init's calendar
        month) adds a ``group`` dimension: "all" (every init, as without ``by``) and then each
        group of inits scored alone, e.g. the skill of forecasts made in spring, through the
        predictability barrier. The problem's own extra scores (e.g. the rainfall season) are
        for "all" only (NaN in the groups)."""
        if by is None:
            return self._evaluation(reference)
        if by not in INIT_GROUPS:
            raise ClimateMLError(f"bad grouping {by!r} ({', '.join(INIT_GROUPS)})")
        label = INIT_GROUPS[by]
        inits = pd.DatetimeIndex(self.obs[INIT].values)
        keys = np.array([label(t) for t in inits])
        names = ["all", *dict.fromkeys(label(pd.Timestamp(2001, m, 1)) for m in range(1, 13))]
        parts = [self._evaluation(reference)]
        for key in names[1:]:
            parts.append(self.subset(inits[keys == key])._evaluation(reference) if (keys == key).any()
                         else parts[0].isel(model=slice(0, 0)))
        base = parts[0]  # every model and metric (a group has no extra scores, an empty group no models)
        aligned = [p.drop_vars("better").reindex(model=base["model"].values, metric=base["metric"].values)
                   for p in parts]
        out = xr.concat(aligned, dim=pd.Index(names, name="group"))
        return out.assign_coords(better=base["better"], group_by=by).assign_attrs(base.attrs)

    def subset(self, inits) -> BacktestResult:
        """The same backtest on some of its inits only (scores of a group of inits). The
        problem's own extra scores are left out: they may need every init."""
        sel = {INIT: pd.DatetimeIndex(inits)}
        return BacktestResult(
            self.problem, {n: fc.sel(sel) for n, fc in self.forecasts.items()}, self.obs.sel(sel), dict(self.failures),
            dict(self.seconds), None if self.baseline is None else self.baseline.sel(sel),
            None if self.fit_end is None else self.fit_end.sel(sel), {k: v.sel(sel) for k, v in self.context.items()},
            None, {n: m.sel(sel) for n, m in self.members.items()})

    def _evaluation(self, reference: str | None = None) -> xr.Dataset:
        leads = self.obs[LEAD].values

        def on_leads(da: xr.DataArray | None) -> np.ndarray:
            return np.full(len(leads), np.nan) if da is None else da.reindex({LEAD: leads}).values.astype("float64")

        per_model = {name: self.lead_scores(name) for name in self.forecasts}
        metrics = list(dict.fromkeys(m for scores in per_model.values() for m in scores))
        score = np.stack([[on_leads(per_model[n].get(m)) for m in metrics] for n in per_model])
        better = ["lower" if m == "crps" or (m in METRICS and METRICS[m].lower_is_better) else
                  "higher" if m in METRICS else "" for m in metrics]
        coords = {"model": list(per_model), "metric": metrics, LEAD: leads, "better": ("metric", better)}
        out = xr.Dataset({"score": (("model", "metric", LEAD), score)}, coords=coords, attrs={"problem": self.problem})
        if reference is not None:
            if reference not in self.forecasts:
                raise ClimateMLError(f"reference {reference!r} is not among the backtested models")
            ref, _ = self._anomalies(self.forecasts[reference])
            skill = np.full(score.shape, np.nan)
            for i, name in enumerate(per_model):
                fc, obs = self._anomalies(self.forecasts[name])
                for j, m in enumerate(metrics):
                    if m in METRICS:
                        skill[i, j] = on_leads(skill_score(METRICS[m], fc, obs, ref))
            out["skill"] = (("model", "metric", LEAD), skill)
            out.attrs["reference"] = reference
        return out


SEASONS = ("DJF", "DJF", "MAM", "MAM", "MAM", "JJA", "JJA", "JJA", "SON", "SON", "SON", "DJF")
INIT_GROUPS: dict[str, Callable[[pd.Timestamp], str]] = {
    "season": lambda t: SEASONS[t.month - 1],
    "month": lambda t: f"{t:%b}",
}


def _per_lead(da: xr.DataArray) -> dict[str, float]:
    return {str(int(k)): (None if np.isnan(v) else round(float(v), 4)) for k, v in zip(da[LEAD].values, da.values, strict=True)}


ModelSpec = Factory | str | Path  # a factory, or a model file loaded by path (needed for processes)


def resolve_model(spec: ModelSpec) -> Factory:
    """A model's factory: the one given, or the model file's (loaded once per process and file version)."""
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        return _factory_cache(str(path), path.stat().st_mtime_ns if path.exists() else 0)
    return spec


@functools.lru_cache(maxsize=64)
def _factory_cache(path: str, mtime_ns: int) -> Factory:  # mtime in the key: an edited file is reloaded
    return load_model_factory(path)


@dataclass(frozen=True)
class RollingOrigin:
    """The cross-validation of every backtest: an expanding training window and a test period
    cut into blocks of ``refit_every`` months; the model is fitted on data up to each block's
    first init (``fit_end``) and forecasts every init of the block. The test period ends at the
    problem's last init with every input known."""

    test_start: pd.Timestamp
    test_end: pd.Timestamp
    refit_every: int = 12

    def folds(self, problem: Problem, prepared: xr.Dataset) -> list[tuple[pd.Timestamp, pd.DatetimeIndex]]:
        """(fit_end, test inits) of each fold, in time order."""
        times = pd.DatetimeIndex(prepared["time"].values)
        if pd.Timestamp(self.test_start) < times[0]:
            raise ClimateMLError(f"test start {pd.Timestamp(self.test_start):%Y-%m} is before the data starts "
                                 f"({times[0]:%Y-%m})")
        return self.blocks(min(pd.Timestamp(self.test_end), problem.last_init(prepared)))

    def blocks(self, last_init=None) -> list[tuple[pd.Timestamp, pd.DatetimeIndex]]:
        """(fit_end, test inits) of each fold, the test period ending at ``last_init`` if earlier."""
        test_end = pd.Timestamp(self.test_end) if last_init is None else min(pd.Timestamp(self.test_end), last_init)
        return [(t0, month_range(t0, min(t0 + pd.DateOffset(months=self.refit_every - 1), test_end)))
                for t0 in fold_starts(self.test_start, test_end, self.refit_every)]


# Worker state for process pools: the prepared data and problem are sent once per worker,
# and the most recent fold is reused by the next model of the same fold.
_WORKER: dict = {}


def _init_worker(problem: Problem, prepared: xr.Dataset, threads: int | None = None,
                 backtest_pid: int | None = None) -> None:
    """A worker process's state; ``threads``: the most threads its BLAS and OpenMP pools may use
    (``LocalProcesses`` gives each worker its share of the CPUs); ``backtest_pid``: the process
    running the backtest, whose end ends this worker (``exit_with``)."""
    if backtest_pid is not None:
        exit_with(backtest_pid)
    if threads is not None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads)  # for the life of the worker
    _WORKER.clear()
    _WORKER.update(problem=problem, prepared=prepared, fold=None)


def exit_with(pid: int, every: float = 1.0) -> threading.Thread:
    """End this process within ``every`` seconds of process ``pid`` ending. A backtest's worker
    processes come from the fork server, not from the backtest's process, and nothing else
    stops them when a signal that cannot be caught (SIGKILL) or is not (SIGTERM: an operator
    cancelling a run, a flow run cancelled) ends the backtest: without this they would compute
    their units on, for as long as an hour for a ConvLSTM fold."""

    def watch() -> None:
        while True:
            _time.sleep(every)
            try:
                os.kill(pid, 0)
            except (ProcessLookupError, PermissionError):  # gone (or its PID reused by another user)
                os._exit(1)

    thread = threading.Thread(target=watch, name="climate-ml-exit-with-backtest", daemon=True)
    thread.start()
    return thread


def unit_inputs(problem, data):
    """The problem and data of a unit of work: those it was handed, else the ones its worker
    process received once (``LocalProcesses``)."""
    if data is None:
        return _WORKER["problem"], _WORKER["prepared"]
    return problem, data


def _fold(problem: Problem, prepared: xr.Dataset, t0: pd.Timestamp, cache: dict) -> FoldData:
    fold = cache.get("fold")
    if fold is None or fold.fit_end != t0:
        fold = problem.fold_data(prepared, fit_end=t0)
        cache["fold"] = fold
    return fold


def _unit(name: str, spec: ModelSpec, t0: pd.Timestamp, inits: pd.DatetimeIndex,
          problem: Problem | None = None, prepared: xr.Dataset | None = None,
          cache: dict | None = None, *, guard: Guard | None = None) -> tuple[str, object, float]:
    """One (model, fold): fit and predict. Returns (name, prediction or error text, seconds).
    When ``guard`` probes this (model, fold), the same fit then forecasts the fold again on each
    probe's data (``Guard.probe``) and the result is a ``Probed``: the prediction and what the
    probes gave, or the error text that probing raised."""
    problem, prepared = unit_inputs(problem, prepared)
    cache = _WORKER if cache is None else cache
    tic = _time.perf_counter()
    try:
        fold = _fold(problem, prepared, t0, cache)
        if guard is None or not guard.probes_unit(name, t0):
            pred = fit_predict(resolve_model(spec), fold, inits, problem.leads, name)
            return name, pred, _time.perf_counter() - tic
        fits = ProbeFits(resolve_model(spec), name)
        pred = check_prediction(*_predict(fits.model(fold), fold, inits, name), problem.leads, where=name)
    except ModelError as exc:
        return name, str(exc), _time.perf_counter() - tic
    return name, Probed(pred, guard.probe(name, fits, problem, prepared, inits, cache)), _time.perf_counter() - tic


Unit = tuple[str, ModelSpec, pd.Timestamp, pd.DatetimeIndex]  # (model name, model, fit_end, test inits)


class Outcomes:
    """What the executors report into: each unit's forecast, a model's first failure (its later
    units are skipped where possible), and the seconds spent per model."""

    def __init__(self, names, time_limit: float | None = None,
                 consume: Callable[[str, pd.Timestamp, object], None] | None = None):
        self.done: dict[tuple[str, pd.Timestamp], object] = {}
        self.failures: dict[str, str] = {}
        self.seconds = dict.fromkeys(names, 0.0)
        self.time_limit = time_limit
        self.consume = consume  # takes each unit's result as it arrives instead of keeping it (a field unit's scores)

    def add(self, name: str, t0: pd.Timestamp, out, secs: float) -> None:
        self.seconds[name] += secs
        if name in self.failures:
            return
        if isinstance(out, str):
            self.failures[name] = out
        elif self.consume is not None:
            self.consume(name, t0, out)
            self.done[(name, t0)] = True
        else:
            self.done[(name, t0)] = out

    def check_members(self, name: str, sizes: dict[pd.Timestamp, int]) -> bool:
        """Fail ``name`` when its forecasts (fit_end: number of members) do not all have the
        same number of members; True when they do."""
        first = next(iter(sizes.items()))
        other = next(((t, m) for t, m in sizes.items() if m != first[1]), None)
        if other is not None:
            self.failures.setdefault(name, f"{name}: members of unequal size: {first[1]} from the fit up to "
                                           f"{first[0]:%Y-%m}, {other[1]} from the fit up to {other[0]:%Y-%m}; "
                                           "return the same members every time")
        return other is None

    def timed_out(self, name: str, t0: pd.Timestamp) -> None:
        self.failures.setdefault(name, f"{name}: exceeded the time limit of {self.time_limit:g} s "
                                       f"(fold fitted up to {t0:%Y-%m})")


class InProcess:
    """Every (model, fold) unit in this process, fold after fold (each fold's features once).

    Executors call ``work(name, spec, fit_end, inits[, problem, data, cache])`` for each unit:
    ``_unit`` (an index model on the problem's features) unless told otherwise, e.g.
    ``sea_ice_fields.field_unit`` for map models."""

    def run(self, problem: Problem, prepared: xr.Dataset, units: list[Unit], out: Outcomes,
            progress: Callable[[str], None], work: Callable | None = None) -> None:
        work = work or _unit
        cache: dict = {}
        folds = sorted({u[2] for u in units})
        for k, t0 in enumerate(folds):
            for name, spec, _, inits in (u for u in units if u[2] == t0):
                if name not in out.failures:
                    r = work(name, spec, t0, inits, problem, prepared, cache)
                    out.add(r[0], t0, r[1], r[2])
            progress(f"fold {k + 1}/{len(folds)} (fit up to {t0:%Y-%m})")


def units_done(units: list[Unit], done: int) -> str:
    """Progress of fold-major ``units`` of which the first ``done`` are finished:
    ``8/72 model-folds, 1/12 folds``. The folds come last because a pace is read from the last
    count (``ProgressLines``): the models of one fold differ in cost by orders of magnitude (a
    reference in a second, a network in minutes), whole folds do not."""
    folds = list(dict.fromkeys(u[2] for u in units))
    pending = {u[2] for u in units[done:]}
    return f"{done}/{len(units)} model-folds, {sum(t0 not in pending for t0 in folds)}/{len(folds)} folds"


@functools.lru_cache(maxsize=1)
def process_context():
    """How worker processes start: forked from a fork server that imported the heavy modules
    once (a freshly spawned worker spends seconds importing torch and LightGBM before its first
    unit), or spawned where there is no fork server (Windows). Either way a worker starts clean,
    never as a fork of this process and its threads."""
    try:
        ctx = multiprocessing.get_context("forkserver")
    except ValueError:
        return multiprocessing.get_context("spawn")
    ctx.set_forkserver_preload(["climate_ml.backtest", "climate_ml.sea_ice_fields", "climate_ml.layers",
                                "climate_ml.boosting"])
    return ctx


def start_workers_early(n_jobs: int = 1, scheduler: str | None = None, time_limit: float | None = None) -> None:
    """Start the fork server now when a backtest with these options will run in local worker
    processes: it imports the heavy modules (LightGBM, torch) in the background while the caller
    still prepares the data, instead of after, when the first worker is asked for."""
    if isinstance(choose_executor(n_jobs, scheduler, time_limit), LocalProcesses):
        ctx = process_context()
        if ctx.get_start_method() == "forkserver":
            from multiprocessing import forkserver

            forkserver.ensure_running()


@dataclass
class LocalProcesses:
    """Units in ``n_jobs`` worker processes (``process_context``; each receives the problem and
    data once); with a ``time_limit``, a unit that runs longer fails its model and the pool is
    killed at the end."""

    n_jobs: int = 2
    time_limit: float | None = None

    def run(self, problem: Problem, prepared: xr.Dataset, units: list[Unit], out: Outcomes,
            progress: Callable[[str], None], work: Callable | None = None) -> None:
        work = work or _unit
        ctx = process_context()
        # each worker's BLAS and OpenMP pools get its share of the CPUs: with a pool per worker as
        # wide as the machine, small matrix products in the workers wait on each other's threads
        threads = max(1, available_cpus() // max(1, self.n_jobs))
        pool = ctx.Pool(max(1, self.n_jobs), initializer=_init_worker,
                        initargs=(problem, prepared, threads, os.getpid()))
        stuck, finished = False, False
        try:
            handles = [pool.apply_async(work, (u[0], u[1], u[2], u[3])) for u in units]
            progress(units_done(units, 0))  # the units start now: the time left is paced from here
            for k, (name, _, t0, _) in enumerate(units):
                # a handle keeps its result: each is let go once taken, so that a unit's maps (a
                # field backtest's hindcasts) are held only until consumed, not to the end
                h, handles[k] = handles[k], None
                if name in out.failures and not h.ready():
                    stuck = stuck or "time limit" in out.failures[name]
                    continue
                try:
                    r = h.get(timeout=self.time_limit)
                    out.add(r[0], t0, r[1], r[2])
                except multiprocessing.TimeoutError:
                    out.timed_out(name, t0)
                    stuck = True
                h = r = None
                progress(units_done(units, k + 1))
            finished = True
        finally:
            if stuck or not finished:
                pool.terminate()  # a model still running past its limit, or all of them after Ctrl-C
            else:
                pool.close()
            pool.join()


@dataclass
class DaskCluster:
    """Units on a dask.distributed scheduler (``tcp://host:port``): the data are scattered to
    every worker once, each unit is one task."""

    address: str
    time_limit: float | None = None

    def run(self, problem: Problem, prepared: xr.Dataset, units: list[Unit], out: Outcomes,
            progress: Callable[[str], None], work: Callable | None = None) -> None:
        from dask.distributed import TimeoutError as DaskTimeout

        from climate_ml.cluster import connect

        with connect(self.address) as client:
            [prep_f] = client.scatter([prepared], broadcast=True)
            futures = [client.submit(work or _unit, u[0], u[1], u[2], u[3], problem, prep_f, pure=False)
                       for u in units]
            progress(units_done(units, 0))
            for k, (name, _, t0, _) in enumerate(units):
                fut, futures[k] = futures[k], None  # released once taken: the workers forget its result
                try:
                    r = fut.result(timeout=self.time_limit)
                    out.add(r[0], t0, r[1], r[2])
                except DaskTimeout:
                    out.timed_out(name, t0)
                    fut.cancel()
                fut = r = None
                progress(units_done(units, k + 1))


def default_jobs(limit: int = 4) -> int:
    """Local worker processes for the shells' own backtests (the run and monthly flows): the
    CPUs this process may use, at most ``limit`` (each worker holds a copy of the data)."""
    return max(1, min(limit, available_cpus()))


def choose_executor(n_jobs: int = 1, scheduler: str | None = None, time_limit: float | None = None):
    """The executor the options ask for: a Dask scheduler, local processes (also whenever a time
    limit must be enforced), or this process."""
    if scheduler:
        return DaskCluster(scheduler, time_limit)
    if n_jobs > 1 or time_limit is not None:
        return LocalProcesses(n_jobs, time_limit)
    return InProcess()


def backtest(
    problem: Problem,
    models: dict[str, ModelSpec],
    prepared: xr.Dataset,
    test_start,
    test_end,
    refit_every: int = 12,
    progress: Callable[[str], None] | None = None,
    n_jobs: int = 1,
    scheduler: str | None = None,
    time_limit: float | None = None,
    executor=None,
    guard: Iterable[str] = (),
    n_probes: int = 2,
    seed: int = 0,
) -> BacktestResult:
    """Backtest several models on the same folds (``RollingOrigin``). Work is split into (model,
    fold) units run by ``executor`` (default from the options: in this process with
    ``n_jobs=1``, in ``n_jobs`` local processes, or on a Dask cluster at ``scheduler``); results
    are assembled in fold order, so the numbers do not depend on the executor. A model that
    raises, returns a bad forecast or runs longer than ``time_limit`` seconds in a fold becomes
    a failure with its reason; the others still run. The models named in ``guard`` go through
    the lookahead guard (``Guard``, ``n_probes`` probe inits) with their fit of the last fold: one
    that looks ahead is a failure (its reason also in ``looked_ahead``), never a score."""
    plan = RollingOrigin(test_start, test_end, refit_every).folds(problem, prepared)
    probing = Guard.over(plan, [n for n in guard if n in models], n_probes, seed)
    out, looked = _run_plan(problem, models, prepared, plan, executor or choose_executor(n_jobs, scheduler, time_limit),
                            progress or (lambda msg: None), probing, time_limit)
    out.failures.update(looked)
    res = assemble_result(problem, prepared, plan, models, out)
    res.looked_ahead = looked
    return res


def _run_plan(problem: Problem, models: dict[str, ModelSpec], prepared: xr.Dataset, plan, executor,
              progress: Callable[[str], None], probing: Guard, time_limit: float | None) -> tuple[Outcomes, dict]:
    """Every (model, fold) unit of ``plan`` on ``executor``, the guarded ones probed: (outcomes
    with plain forecasts, the guard's verdicts)."""
    units = [(name, spec, t0, inits) for t0, inits in plan for name, spec in models.items()]
    out = Outcomes(models, time_limit)
    if probing.models:  # executors run ``work`` per unit when given one (the public contract has no ``work``)
        executor.run(problem, prepared, units, out, progress, work=functools.partial(_unit, guard=probing))
    else:
        executor.run(problem, prepared, units, out, progress)
    return out, probing.verdicts(out)


def assemble_result(problem: Problem, prepared: xr.Dataset, plan, models, out: Outcomes) -> BacktestResult:
    """The backtest's result from its units' outcomes, in fold order: forecasts (ensemble means,
    with the members kept aside), observations, baselines, each init's fit_end and the
    problem's scoring context. A model whose folds return different numbers of members fails."""
    for name in models:
        if name not in out.failures:
            out.check_members(name, {t0: out.done[(name, t0)].sizes.get(MEMBER, 1) for t0, _ in plan})
    forecasts = {
        name: add_valid_time(xr.concat([out.done[(name, t0)] for t0, _ in plan], dim=INIT))
        for name in models if name not in out.failures
    }
    members = {name: fc for name, fc in forecasts.items() if MEMBER in fc.dims}
    forecasts = {name: fc.mean(MEMBER) if name in members else fc for name, fc in forecasts.items()}
    obs = xr.concat([problem.target(prepared, t0).sel({INIT: inits}) for t0, inits in plan], dim=INIT)
    baselines = [problem.baseline(prepared, t0) for t0, _ in plan]
    baseline = None
    if baselines[0] is not None:
        baseline = xr.concat([b.sel({INIT: inits}) for b, (_, inits) in zip(baselines, plan, strict=True)], dim=INIT)
        baseline = baseline.drop_vars("valid_time", errors="ignore")
    fit_end = xr.concat([xr.DataArray(np.full(len(inits), np.datetime64(t0, "ns")), dims=INIT, coords={INIT: inits})
                         for t0, inits in plan], dim=INIT)
    contexts = [problem.scoring_context(prepared, t0) for t0, _ in plan]
    context = {k: xr.concat([c[k].sel({INIT: inits}) for c, (_, inits) in zip(contexts, plan, strict=True)], dim=INIT)
               for k in contexts[0]}
    return BacktestResult(problem.name, forecasts, obs, out.failures, out.seconds, baseline, fit_end, context, problem,
                          members)


def observed_init(prepared: xr.Dataset, init) -> pd.Timestamp:
    """``init`` as a timestamp, once it is a month of the data (a forecast starts from data)."""
    init = pd.Timestamp(init)
    times = pd.DatetimeIndex(prepared["time"].values)
    if init not in times:
        raise ClimateMLError(
            f"no observations for init {init:%Y-%m} (data cover {times[0]:%Y-%m}..{times[-1]:%Y-%m})"
        )
    return init


def issue_forecast(problem: Problem, factory: Factory, prepared: xr.Dataset, init, name: str = "model") -> xr.DataArray:
    """Train on everything known at ``init`` and forecast that init at every lead."""
    init = observed_init(prepared, init)
    fold = problem.fold_data(prepared.sel(time=slice(None, init)), fit_end=init)
    missing = missing_inputs(fold.test_set([init]))
    if missing:
        raise ClimateMLError(f"inputs missing at init {init:%Y-%m} ({', '.join(missing)}): refusing to forecast from "
                             "missing data; pick an earlier init or complete the data set")
    return add_valid_time(fit_predict(factory, fold, [init], problem.leads, name))


def issue_forecasts(problem: Problem, models: dict[str, ModelSpec], prepared: xr.Dataset, init,
                    n_jobs: int = 1, scheduler: str | None = None, time_limit: float | None = None,
                    executor=None) -> tuple[dict[str, xr.DataArray], dict[str, str]]:
    """``issue_forecast`` for several models, each a unit of work for the backtest's executors
    (in this process, ``n_jobs`` local processes or a Dask ``scheduler``): (forecasts, failures
    with their reasons). A forecast does not depend on which executor made it."""
    init = pd.Timestamp(init)
    units = [(name, spec, init, pd.DatetimeIndex([init])) for name, spec in models.items()]
    out = Outcomes(models, time_limit)
    executor = executor or choose_executor(n_jobs, scheduler, time_limit)
    executor.run(problem, prepared, units, out, lambda msg: None, work=_issue_unit)
    return {name: out.done[(name, init)] for name in models if name not in out.failures}, out.failures


def _issue_unit(name: str, spec: ModelSpec, init: pd.Timestamp, inits: pd.DatetimeIndex,
                problem: Problem | None = None, prepared: xr.Dataset | None = None,
                cache: dict | None = None) -> tuple[str, object, float]:
    """One model's forecast from ``init`` (``issue_forecast``): (name, forecast or error, seconds)."""
    problem, prepared = unit_inputs(problem, prepared)
    tic = _time.perf_counter()
    try:
        return name, issue_forecast(problem, resolve_model(spec), prepared, init, name), _time.perf_counter() - tic
    except ClimateMLError as exc:
        return name, str(exc), _time.perf_counter() - tic


def missing_inputs(X: xr.Dataset) -> list[str]:
    """Variables of X with a missing (NaN) value at any of its inits."""
    return sorted(str(v) for v in X.data_vars if bool(X[v].isnull().any()))


def guard_backtest(problem: Problem, models: dict[str, ModelSpec], prepared: xr.Dataset, test_start, test_end,
                   refit_every: int, n_probes: int = 2, seed: int = 0, n_jobs: int = 1, scheduler: str | None = None,
                   time_limit: float | None = None, executor=None) -> dict[str, str]:
    """The lookahead guard alone (``Guard``), without the rest of the backtest: the last fold of
    the plan, each model fitted and probed there. Returns {model: reason} for the models that
    look ahead or fail (in that fold or while probed). A backtest with ``guard=`` reaches the
    same verdicts (and saves the fit: its last fold is this fold). The units run on the same
    executors as the backtest's (``n_jobs``, ``scheduler``, ``time_limit``, ``executor``): the
    verdicts do not depend on which runs them."""
    plan = RollingOrigin(test_start, test_end, refit_every).folds(problem, prepared)[-1:]
    out, looked = _run_plan(problem, models, prepared, plan, executor or choose_executor(n_jobs, scheduler, time_limit),
                            lambda msg: None, Guard.over(plan, models, n_probes, seed), time_limit)
    failed = {name: f"{name}: failed under the lookahead guard: {reason}"
              for name, reason in out.failures.items() if name not in looked}
    return {name: {**failed, **looked}[name] for name in models if name in failed or name in looked}


@dataclass(frozen=True)
class Probed:
    """A guarded unit's outcome: its forecast of the fold, and per probe init the ensemble-mean
    forecast for that init on the probe's data (or the error text that probing raised)."""

    forecast: xr.DataArray
    probes: dict[pd.Timestamp, xr.DataArray] | str


@dataclass(frozen=True)
class Guard:
    """The lookahead guard as every backtest runs it (RAMP checks every submission): in the
    last fold of the plan each guarded model forecasts the fold's whole block of inits, as in
    the backtest, once on the data and once per probe init on data whose every value after that
    init is noise; the forecast for the probe init must not change. ``probes``: inits spread over
    the block, so a model that reads the rows of later inits inside ``predict`` is caught as well
    as a feature that reads ahead. The probes reuse the backtest's own fit of that fold
    (``ProbeFits``); only a probe whose training set differs (a feature reads ahead) is fitted
    afresh. Only the probe init must be a valid forecast: later inits hold noise on purpose, and
    a model may well forecast garbage from garbage."""

    models: frozenset[str]
    fit_end: pd.Timestamp
    probes: tuple[pd.Timestamp, ...]
    seed: int = 0

    @classmethod
    def over(cls, plan: list[tuple[pd.Timestamp, pd.DatetimeIndex]], models: Iterable[str], n_probes: int = 2,
             seed: int = 0) -> Guard:
        t0, block = plan[-1]
        picks = np.linspace(0, len(block) - 1, min(n_probes, len(block))).round().astype(int)
        return cls(frozenset(models), pd.Timestamp(t0), tuple(pd.Timestamp(p) for p in block[picks]), seed)

    def probes_unit(self, name: str, t0: pd.Timestamp) -> bool:
        return name in self.models and pd.Timestamp(t0) == self.fit_end

    def probe(self, name: str, fits: ProbeFits, problem: Problem, prepared: xr.Dataset, block: pd.DatetimeIndex,
              cache: dict) -> dict[pd.Timestamp, xr.DataArray] | str:
        """Per probe init, the ensemble-mean forecast for it when the model (``fits``) forecasts
        the whole ``block`` from the probe's data; the error text if a probe raises."""
        got = {}
        try:
            for probe in self.probes:
                key = (probe, self.fit_end, self.seed)
                hit = cache.get("probe")
                if hit is None or hit[0] != key:  # read and written as one tuple: safe on a threaded worker
                    hit = (key, problem.fold_data(perturb_after(prepared, probe, seed=self.seed), self.fit_end))
                    cache["probe"] = hit
                raw, X_test = _predict(fits.model(hit[1]), hit[1], block, name)
                if not isinstance(raw, xr.DataArray) or INIT not in raw.dims:
                    raise ModelError(f"{name}: predict must return a DataArray with init_time")
                got[probe] = _mean(check_prediction(raw.sel({INIT: [probe]}), X_test.sel({INIT: [probe]}),
                                                    problem.leads, where=name))
        except ModelError as exc:
            return str(exc)
        return got

    def verdicts(self, out: Outcomes) -> dict[str, str]:
        """{model: reason} for the guarded models that look ahead or fail while probed. Each
        guarded outcome (a ``Probed``) is replaced by its plain forecast in ``out``."""
        bad: dict[str, str] = {}
        for name in sorted(self.models):
            done = out.done.get((name, self.fit_end))
            if not isinstance(done, Probed):
                continue  # failed before it could be probed: a failure of the backtest itself
            out.done[(name, self.fit_end)] = done.forecast
            if isinstance(done.probes, str):
                bad[name] = f"{name}: failed under the lookahead guard: {done.probes}"
                continue
            ref = _mean(done.forecast)
            for init in self.probes:
                want, got = ref.sel({INIT: [init]}), done.probes[init]
                if not np.allclose(want.values, got.values, rtol=0, atol=1e-9):
                    diff = float(np.max(np.abs(want.values - got.values)))
                    bad[name] = (f"{name}: looks ahead: its forecast for init {init:%Y-%m} changed by up to {diff:.3g} "
                                 f"when only data after that init changed (lookahead guard; fold fitted up to "
                                 f"{self.fit_end:%Y-%m})")
                    break
        return bad


def _mean(fc: xr.DataArray) -> xr.DataArray:
    return fc.mean(MEMBER) if MEMBER in fc.dims else fc


def perturb_after(prepared: xr.Dataset, after, seed: int = 0, scale: float = 5.0) -> xr.Dataset:
    """Replace every value after ``after`` with large random noise (the lookahead probe)."""
    rng = np.random.default_rng(seed)
    out = prepared.copy(deep=True)
    later = out["time"] > np.datetime64(pd.Timestamp(after))
    for v in out.data_vars:
        da = out[v]
        noise = rng.normal(0, scale, da.shape)
        mask = np.broadcast_to(
            later.values.reshape([-1 if d == "time" else 1 for d in da.dims]), da.shape
        )
        out[v] = da.copy(data=np.where(mask, noise, da.values))
    return out


def lookahead_violations(
    problem: Problem,
    factory: Factory,
    prepared: xr.Dataset,
    inits: Iterable,
    fit_end,
    seed: int = 0,
) -> list[str]:
    """RAMP's check: for each init, perturb all data after it and assert the forecast for that
    init (fitted up to ``fit_end`` <= init) does not change. Returns the violations found."""
    fit_end = pd.Timestamp(fit_end)
    base = problem.fold_data(prepared, fit_end)
    fits = ProbeFits(factory, "model")  # one fit for every probe whose training set is the real one
    bad = []
    for init in pd.DatetimeIndex(list(inits)):
        if init < fit_end:
            raise ClimateMLError("lookahead check needs inits at or after fit_end")
        ref = check_prediction(*_predict(fits.model(base), base, [init], "model"), problem.leads, where="model")
        probe = problem.fold_data(perturb_after(prepared, init, seed=seed), fit_end)
        got = check_prediction(*_predict(fits.model(probe), probe, [init], "model"), problem.leads, where="model")
        if not np.allclose(ref.values, got.values, rtol=0, atol=1e-9):
            diff = float(np.max(np.abs(ref.values - got.values)))
            bad.append(f"init {init:%Y-%m}: forecast changed by up to {diff:.3g} when later data changed")
    return bad
