"""Library-level steps that the CLI and the Prefect flows both call (so neither re-implements
the other): open or ingest a dataset, backtest models against the references, issue and
archive forecasts. Each step takes and returns plain values or xarray objects."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import xarray as xr

from climate_ml.archive import write_forecast
from climate_ml.backtest import (
    BacktestResult,
    backtest,
    issue_forecast,
    issue_forecasts,
    observed_init,
    start_workers_early,
)
from climate_ml.catalog import PROJECT_ROOT, load_catalog
from climate_ml.errors import ClimateMLError, ModelError, QueryError, StoreError
from climate_ml.ingest import ingest_entry
from climate_ml.model_api import FIELD_TARGET, file_sha256, load_model_factory, model_name
from climate_ml.problems import Problem, get_problem
from climate_ml.store import Store, StoreLike, check_name, open_obs

MODELS_DIR = PROJECT_ROOT / "models"
FIELD_MODELS_DIR = MODELS_DIR / "fields"  # the per-cell concentration-map references
# a field backtest holds a stack of maps up to this size in memory (read once: a model's forecast
# from a lazy stack decompresses the stored chunk of its last month at every init); a larger one
# stays in the store, and the fits and the scoring read it a block of months at a time
FIELD_HELD_BYTES = 2 * 2**30
_PROBLEMS_LINE = re.compile(r"^PROBLEMS\s*=\s*\(([^)]*)\)", re.MULTILINE)
_FIELD_LINE = re.compile(r"^TARGET\s*=\s*[\"']" + FIELD_TARGET + r"[\"']", re.MULTILINE)


def reference_paths(problem: Problem | str = "el_nino") -> dict[str, Path]:
    """The problem's reference model files."""
    prob = get_problem(problem) if isinstance(problem, str) else problem
    return {name: MODELS_DIR / f"{name}.py" for name in prob.references}


def model_problems(path: Path) -> tuple[str, ...] | None:
    """The problems a model file declares with ``PROBLEMS = (...)``; None means any problem.
    Read from the text, so listing models imports nothing."""
    m = _PROBLEMS_LINE.search(Path(path).read_text())
    return tuple(re.findall(r"[\"']([a-z_]+)[\"']", m.group(1))) if m else None


def registered_models(problem: str = "el_nino", fields: bool = False) -> dict[str, Path]:
    """Model files in models/ that serve ``problem`` (the template excluded): index models, or
    with ``fields`` the field models (files that say ``TARGET = "sea_ice_concentration"``)."""
    out = {}
    for p in sorted(MODELS_DIR.glob("*.py")):
        if p.stem.startswith("_") or p.stem == "template":
            continue
        if bool(_FIELD_LINE.search(p.read_text())) != fields:
            continue
        declared = model_problems(p)
        if declared is None or problem in declared:
            out[p.stem] = p
    return out


def ensure_dataset(store: StoreLike, name: str, log: Callable[[str], None] = lambda s: None) -> xr.Dataset:
    """Open a stored dataset; a catalog entry not yet stored is ingested first."""
    if not Store.at(store).has_obs(name):
        entries = load_catalog()
        if name not in entries:
            open_obs(store, name)  # raises the clear "unknown dataset" error
        log(f"ingesting catalog entry {name!r} into {store}")
        ingest_entry(entries[name], store)
    return open_obs(store, name)


def problem_inputs(store: StoreLike, problem: Problem, dataset: str | None = None, predictors: list[str] | None = None,
                   log: Callable[[str], None] = lambda s: None) -> tuple[str, xr.Dataset, xr.Dataset]:
    """(dataset name, stored target observations, prepared inputs) for a problem. Without a
    dataset, the problem's embedded default and its default predictors are used; ``predictors``
    names further stored datasets or catalog entries (e.g. an SST data set for rainfall)."""
    if predictors is None:
        predictors = list(problem.default_predictors) if dataset is None else []
    name = problem.default_dataset if dataset is None else dataset
    for n in [name, *predictors]:  # names become paths: refuse a bad one before any work
        check_name(n)
    obs = ensure_dataset(store, name, log=log)
    extra = {p: ensure_dataset(store, p, log=log) for p in predictors}
    try:
        prepared = problem.prepare(obs, extra)
    except ClimateMLError as exc:  # name the data sets and the problem in the one-line error
        used = name + (f" with predictors {', '.join(predictors)}" if predictors else "")
        raise type(exc)(f"{used} for {problem.name}: {exc}") from exc
    if extra:
        obs = obs.assign_attrs(predictors=", ".join(predictors))
    return name, obs, prepared


def dataset_provenance(obs: xr.Dataset) -> dict:
    return {k: obs.attrs.get(k) for k in ("source", "source_sha256", "catalog_entry", "predictors") if k in obs.attrs}


def run_backtest(
    problem: Problem,
    model_paths: list[Path],
    prepared: xr.Dataset,
    test_start,
    test_end,
    refit_every: int = 12,
    **options,
) -> BacktestResult:
    """Backtest model files together with the reference models on the same folds.
    ``options`` go to ``backtest.backtest`` (progress, n_jobs, scheduler, time_limit)."""
    paths = {**reference_paths(problem), **{model_name(p): Path(p) for p in model_paths}}
    return backtest(problem, paths, prepared, test_start, test_end, refit_every, **options)


@dataclass
class Evaluation:
    """What one backtest produced: the result (the blend included), the blend's contributivity,
    the record's folder, the hindcasts archived and the models the lookahead guard refused."""

    result: BacktestResult
    files: dict[str, Path]
    contributivity: dict[str, float] | None = None
    record_dir: Path | None = None
    archived: dict[str, str] = field(default_factory=dict)
    looked_ahead: dict[str, str] = field(default_factory=dict)
    dataset: str = ""  # the target's data set and the last test init the run reached
    test_end: pd.Timestamp | None = None


def run_backtest_request(store: StoreLike, request, prepared: xr.Dataset | None = None, obs: xr.Dataset | None = None,
                         progress: Callable[[str], None] | None = None, log: Callable[[str], None] = lambda s: None,
                         on_forecast: Callable | None = None):
    """A checked ``requests.BacktestRequest`` as every shell runs it: the field backtest
    (``field_backtest_run``, a ``FieldRun``) when its model files forecast maps, else ``evaluate``
    on the problem's inputs (``prepared`` and ``obs`` when the caller built them, e.g. on a Dask
    cluster) up to the problem's last init with every input known (an ``Evaluation``)."""
    prob = request.definition()
    options = {"n_jobs": request.n_jobs, "scheduler": request.scheduler, "time_limit": request.time_limit}
    start_workers_early(**options)  # their imports overlap the data preparation below
    if request.fields:
        return field_backtest_run(store, request.dataset or prob.default_dataset, request.test_start, request.test_end,
                                  request.refit_every, request.model_paths, archive=request.archive,
                                  replace=request.replace, on_forecast=on_forecast, progress=progress, log=log,
                                  problem=prob, **options)
    if prepared is None:
        predictors = None if request.predictors is None else list(request.predictors)
        dataset, obs, prepared = problem_inputs(store, prob, request.dataset, predictors, log=log)
    else:
        dataset = request.dataset or prob.default_dataset
        obs = obs if obs is not None else ensure_dataset(store, dataset, log=log)
    end = prob.last_init(prepared) if request.test_end is None else min(request.test_end, prob.last_init(prepared))
    ev = evaluate(store, prob, list(request.model_paths), prepared, obs, dataset, request.test_start, end,
                  request.refit_every, blend=request.blend, record=request.record, archive=request.archive,
                  guard=request.guard, progress=progress, **options)
    ev.dataset, ev.test_end = dataset, end
    return ev


def evaluate(store: StoreLike, problem: Problem, model_paths: list[Path], prepared: xr.Dataset, obs: xr.Dataset,
             dataset: str, test_start, test_end, refit_every: int = 12, *, blend: bool = True, record: bool = True,
             archive: bool = False, guard: bool = True, **options) -> Evaluation:
    """One backtest as the shells run it (the CLI and the run flow; the HTTP service only reads): backtest the
    model files with the problem's references on the same folds, the lookahead guard on every
    submitted model (a model that looks ahead becomes a FAILED row, never a score); add a
    Caruana blend selected inside each fold; record the run for the leaderboard; archive each
    model's out-of-sample hindcasts. ``options`` go to ``backtest.backtest``."""
    from climate_ml.backtest import fold_starts
    from climate_ml.blend import blend_backtest
    from climate_ml.leaderboard import record_backtest

    files = {**reference_paths(problem), **{model_name(p): Path(p) for p in model_paths}}
    submitted = [model_name(p) for p in model_paths if model_name(p) not in problem.references]
    if guard and submitted and options.get("progress"):
        options["progress"](f"lookahead guard on {len(submitted)} model(s), with their fits of the last fold")
    res = backtest(problem, files, prepared, test_start, test_end, refit_every, guard=submitted if guard else (),
                   **options)
    if res.forecasts and not np.isfinite(res.obs.values).any():  # e.g. --test-start at the data's last month
        raise ClimateMLError(f"no outcome of the test period {_month(test_start)}..{_month(test_end)} is observed "
                             f"yet (the data end {_month(prepared['time'].values[-1])}): nothing to score and "
                             "nothing recorded; give an earlier --test-start")
    looked = res.looked_ahead
    out = Evaluation(res, files, looked_ahead=looked)
    if blend and len(res.forecasts) >= 2:
        prior = [n for n in submitted if n in res.forecasts]
        b = blend_backtest(problem, res.forecasts, res.obs, fold_starts(test_start, test_end, refit_every),
                           prior=prior or None)
        res.forecasts["blend"] = b.forecast
        files["blend"] = Path("blend")
        out.contributivity = b.contributivity()
    if record:
        out.record_dir = record_backtest(store, problem, res, dataset, obs.attrs.get("source_sha256", ""), test_start,
                                         test_end, refit_every, files)
    if archive:
        out.archived = archive_backtest(store, problem, res, obs, dataset, {n: p for n, p in files.items() if n != "blend"})
    return out


def backtest_summary(
    result: BacktestResult, model: str, dataset: str, test_start, test_end, refit_every: int, leads
) -> dict:
    """The ``--json`` object of ``climate-ml backtest``."""
    references = get_problem(result.problem).references
    refs = {r: {**{k: v for k, v in result.scores(r).items() if k != "n"}, **result.extra(r)}
            for r in references if r in result.forecasts}
    out = {
        "problem": result.problem,
        "model": model,
        "dataset": dataset,
        "test_period": [f"{pd.Timestamp(test_start):%Y-%m}", f"{pd.Timestamp(test_end):%Y-%m}"],
        "refit_every_months": refit_every,
        "leads": [int(x) for x in leads],
        "references": refs,
    }
    if model in result.failures:
        out["error"] = result.failures[model]
        return out
    scores = result.scores(model)
    out["n_verified"] = scores.pop("n")
    out["scores"] = scores
    out.update(result.extra(model))
    out["skill"] = {f"rmse_vs_{r}": result.skill(model, r, "rmse") for r in references if r in result.forecasts}
    return out


def _month(t) -> str:
    return f"{pd.Timestamp(t):%Y-%m}"


def forecast_provenance(problem: Problem, model_path: Path, obs: xr.Dataset, dataset: str, train_end,
                        kind: str, fold="") -> dict:
    """Provenance of forecasts (``archive.PROVENANCE``). ``train_end`` and ``fold`` may hold one
    value per init (hindcasts of several folds)."""
    ends = np.array([_month(t) for t in np.atleast_1d(train_end)]) if np.ndim(train_end) else _month(train_end)
    source = dataset_provenance(obs)
    return {
        "kind": kind,
        "model_sha256": file_sha256(model_path),
        "dataset": dataset,
        "dataset_sha256": source.pop("source_sha256", ""),
        "train_start": _month(obs["time"].values[0]),
        "train_end": ends,
        "fold": fold,
        "details": {"input": source, "units": problem.target_units,
                    "anomaly_convention": "departure from the monthly climatology of the training window"},
    }


def forecast_and_archive(
    store: StoreLike, problem: Problem, model_path: Path, obs: xr.Dataset, prepared: xr.Dataset,
    dataset: str, init, replace: bool = False, outlook: bool = False, recent: BacktestResult | None = None,
    forecast: xr.DataArray | None = None,
) -> tuple[xr.DataArray, str, dict | None]:
    """Forecast from ``init``, with the problem's probabilities when ``outlook`` (El Nino
    categories, rainfall terciles), and archive both. Returns (forecast, action, outlook).
    ``recent``: a backtest holding the model, to calibrate the probabilities on. ``forecast``:
    the model's ``issue_forecast`` from ``init`` when the caller made it already (e.g. with
    ``issue_forecasts``, several models at once)."""
    fc = forecast if forecast is not None else issue_forecast(problem, load_model_factory(model_path), prepared, init,
                                                              name=model_name(model_path))
    summary = probabilistic_outlook(problem, model_path, prepared, fc, recent=recent) if outlook else None
    provenance = forecast_provenance(problem, model_path, obs, dataset, init, "forecast")
    action = write_forecast(store, problem.name, model_name(model_path), fc, provenance, replace=replace,
                            probabilities=outlook_probabilities(summary, fc), season=outlook_season(summary, fc))
    return fc, action, summary


def outlook_season(outlook: dict | None, fc: xr.DataArray) -> xr.Dataset | None:
    """The season outlook of a forecast (e.g. rainfall's November-March total and its tercile
    probabilities) as ``season_forecast(init_time)`` and ``season_probability(init_time,
    category)`` for the archive; None when the outlook has none (problems without a season,
    inits outside the season's init months)."""
    season = (outlook or {}).get("season")
    if not season:
        return None
    cats = list(season["probability"])
    inits = fc["init_time"].values
    return xr.Dataset({"season_forecast": ("init_time", [float(season["forecast"])], {"season": season["months"]}),
                       "season_probability": (("init_time", "category"), [[season["probability"][c] for c in cats]])},
                      coords={"init_time": inits, "category": cats})


def outlook_probabilities(outlook: dict | None, fc: xr.DataArray) -> xr.DataArray | None:
    """The category probabilities of an outlook (El Nino categories or monthly terciles) as
    ``probability(init_time, lead, category)`` for the archive; None when there are none."""
    by_lead = (outlook or {}).get("categories") or (outlook or {}).get("monthly_terciles")
    if not by_lead:
        return None
    leads = [int(v) for v in fc["lead"].values]
    cats = list(next(iter(by_lead.values())))
    values = np.array([[by_lead.get(str(k), {}).get(c, np.nan) for c in cats] for k in leads], dtype=float)
    return xr.DataArray(values[None], dims=("init_time", "lead", "category"),
                        coords={"init_time": fc["init_time"].values, "lead": leads, "category": cats})


def forecast_range(store: StoreLike, problem: Problem, model_paths: list[Path], obs: xr.Dataset, prepared: xr.Dataset,
                   dataset: str, start, end, refit_every: int = 12, replace: bool = False,
                   progress: Callable[[str], None] | None = None) -> tuple[BacktestResult, dict[str, str]]:
    """Forecasts from every init in ``start..end`` in one call, fitting once per ``refit_every``
    months (the backtest's folds: each init sees only data up to its fold's cut-off and its own
    predictors), archived as forecasts with their per-init provenance and observed outcome."""
    paths = {model_name(p): Path(p) for p in model_paths}
    result = backtest(problem, paths, prepared, start, end, refit_every, progress=progress)
    if result.failures:
        raise ModelError(next(iter(result.failures.values())))
    return result, archive_backtest(store, problem, result, obs, dataset, paths, kind="forecast", replace=replace)


def issue_with_outlook(store: StoreLike, problem: Problem, model_path: Path, obs: xr.Dataset, prepared: xr.Dataset,
                       dataset: str, init, recent: BacktestResult | None = None,
                       forecast: xr.DataArray | None = None) -> tuple[dict, xr.DataArray]:
    """One model's forecast from ``init``, archived, with the problem's probabilities (rainfall
    terciles, El Nino categories): the summary the run and monthly flows report, and the forecast.
    ``recent``: a backtest holding the model (the run's evaluation), to calibrate them on;
    ``forecast``: the forecast when already made (``forecast_and_archive``)."""
    fc, action, outlook = forecast_and_archive(store, problem, model_path, obs, prepared, dataset, init, outlook=True,
                                               recent=recent, forecast=forecast)
    mean = fc.mean("member") if "member" in fc.dims else fc
    out = {"model": model_name(model_path), "init": f"{pd.Timestamp(init):%Y-%m}", "archive": action,
           "forecast": {int(k): round(float(v), 3) for k, v in zip(mean["lead"].values, mean.values[0], strict=True)}}
    if outlook and "monthly_terciles" in outlook:  # rainfall, calibrated on the model's recent out-of-sample errors
        out["terciles"] = outlook["monthly_terciles"]
        if "season" in outlook:
            out["season"] = outlook["season"]
    if outlook and "categories" in outlook:  # El Nino: La Nina / neutral / El Nino; sea ice: record low / last year
        out["categories"] = outlook["categories"]
        for key in ("valid_season", "thresholds"):
            if isinstance(outlook.get(key), dict):
                out[key] = outlook[key]
    return out, fc


@dataclass
class Outlook:
    """Every model's forecast from one init, with the problem's probabilities and their
    multi-model consensus (the mean of the models' probabilities, lead by lead)."""

    problem: str
    dataset: str
    init: pd.Timestamp
    summaries: dict[str, dict]
    forecasts: dict[str, xr.DataArray]
    failures: dict[str, str]
    consensus: dict[str, dict[str, float]]  # lead -> category -> probability
    observed: pd.Series  # the target before the init, in the forecasts' convention

    def table(self) -> str:
        """Markdown: one row per lead, every model's forecast, the consensus probabilities."""
        names = list(self.summaries)
        first = self.summaries[names[0]] if names else {}
        cats = list(next(iter(self.consensus.values()))) if self.consensus else []
        head = ["lead", "valid", *(["season"] if "valid_season" in first else []), *names, *[f"P({c})" for c in cats]]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for lead in sorted(first.get("forecast", {})):
            valid = self.init + pd.DateOffset(months=int(lead))
            row = [str(lead), f"{valid:%Y-%m}", *([first["valid_season"][str(lead)]] if "valid_season" in first else [])]
            sign = "+" if get_problem(self.problem).target_is_anomaly else ""  # an extent is not an anomaly
            row += [f"{self.summaries[n]['forecast'][lead]:{sign}.2f}" for n in names]
            row += [f"{self.consensus[str(lead)][c]:.2f}" for c in cats]
            lines.append("| " + " | ".join(row) + " |")
        return "\n".join(lines)


def multi_model_outlook(store: StoreLike, problem: Problem, model_paths: dict[str, Path], obs: xr.Dataset,
                        prepared: xr.Dataset, dataset: str, init=None, **options) -> Outlook:
    """Forecast (and archive) from ``init`` (default: the last month with every input) with each
    model; a model that fails is recorded, the others go on. The models' probabilities are
    calibrated on one backtest of them all (``calibration_backtest``), whose fits run as
    ``options`` say (n_jobs, scheduler)."""
    init = observed_init(prepared, init) if init is not None else problem.last_init(prepared)
    summaries, forecasts = {}, {}
    made, failures = issue_forecasts(problem, model_paths, prepared, init, **options)
    recent = None
    if hasattr(problem, "outlook") and made:
        recent = calibration_backtest(problem, {n: model_paths[n] for n in made}, prepared, init, **options)
    for name, path in model_paths.items():
        if name in failures:
            continue
        if recent is not None and name in recent.failures:
            failures[name] = recent.failures[name]
            continue
        try:
            summaries[name], forecasts[name] = issue_with_outlook(store, problem, path, obs, prepared, dataset, init,
                                                                  recent=recent, forecast=made[name])
        except ClimateMLError as exc:
            failures[name] = str(exc)
    key = "categories" if any("categories" in s for s in summaries.values()) else "terciles"
    probs = [s[key] for s in summaries.values() if key in s]
    consensus = {}
    if probs:
        for lead in probs[0]:
            consensus[lead] = {c: round(float(np.mean([p[lead][c] for p in probs])), 3) for c in probs[0][lead]}
    return Outlook(problem.name, dataset, init, summaries, forecasts, failures, consensus,
                   observed_history(problem, prepared, init))


def calibration_backtest(problem: Problem, model_paths: dict[str, Path], prepared: xr.Dataset, init,
                         years: int = 20, **options) -> BacktestResult:
    """The models' out-of-sample forecasts over the ``years`` before ``init`` whose targets are
    observed by the init (data up to the init only, refit every 5 years): what a live forecast's
    probabilities are calibrated on when no backtest of the model is at hand."""
    init = pd.Timestamp(init)
    last = init - pd.DateOffset(months=max(problem.leads))  # targets of these inits are observed by init
    first = last - pd.DateOffset(years=years) + pd.DateOffset(months=1)
    return backtest(problem, model_paths, prepared.sel(time=slice(None, init)), first, last, refit_every=60, **options)


def probabilistic_outlook(problem: Problem, model_path: Path, prepared: xr.Dataset, forecast: xr.DataArray,
                          years: int = 20, recent: BacktestResult | None = None) -> dict | None:
    """Category probabilities for a live forecast (El Nino categories, sea-ice record low and
    last year, rainfall terciles), for problems that issue them. The spread is calibrated on the
    model's own out-of-sample errors: those of ``recent``, a backtest that holds the model (the
    run's own evaluation), else of a backtest on the ``years`` before the init (data up to the
    init only, refit every 5 years). Only errors verified by the init count either way. None for
    other problems. An ensemble's mean is the forecast here, and its members' spread joins that
    of the errors (``probabilities.combined_spread``)."""
    if not hasattr(problem, "outlook"):
        return None
    name = model_name(model_path)
    init = pd.Timestamp(forecast["init_time"].values[0])
    known = prepared.sel(time=slice(None, init))
    if recent is None or name not in recent.forecasts:
        recent = calibration_backtest(problem, {name: model_path}, prepared, init, years)
        if recent.failures:
            raise ModelError(next(iter(recent.failures.values())))
    else:  # outcomes observed after the init are not known at the init: they never set the spread
        ends = problem.target_end(recent.obs["init_time"].values)
        recent = dataclasses.replace(recent, obs=recent.obs.where(ends <= init))
    return problem.outlook(known, forecast, recent, name)


def archive_backtest(store: StoreLike, problem: Problem, result: BacktestResult, obs: xr.Dataset, dataset: str,
                     paths: dict[str, Path], kind: str = "hindcast", replace: bool = False) -> dict[str, str]:
    """Archive each model's out-of-sample forecasts (each made without lookahead) with the
    observed outcome and, per init, the training cut-off and fold it came from."""
    actions = {}
    for name, fc in result.forecasts.items():
        if name not in paths:
            continue
        fc = result.members.get(name, fc)  # an ensemble is archived with its members
        fit_end = (result.fit_end.sel(init_time=fc["init_time"]).values if result.fit_end is not None
                   else np.full(fc.sizes["init_time"], fc["init_time"].values[0]))
        cuts = pd.DatetimeIndex(fit_end)
        order = {t: k for k, t in enumerate(sorted(set(cuts)))}
        folds = np.array([f"{order[t] + 1}/{len(order)}" for t in cuts])
        provenance = forecast_provenance(problem, paths[name], obs, dataset, cuts, kind, folds)
        try:
            actions[name] = write_forecast(store, problem.name, name, fc, provenance, replace=replace,
                                           observed=result.obs.sel(init_time=fc["init_time"]))
        except StoreError as exc:
            actions[name] = f"kept existing ({exc})"
    return actions


@dataclass
class FieldRun:
    """One field backtest (``field_backtest_run``): per-sample scores (method, init, lead), their
    per-lead summary, the models that failed and why, what was archived, and its record."""

    scores: xr.Dataset
    summary: dict
    failures: dict[str, str]
    archived: dict[str, str]
    record: Path
    concentration: xr.DataArray
    end: pd.Timestamp


def field_backtest_run(store: StoreLike, dataset: str, test_start, test_end=None, refit_every: int = 12,
                       model_paths=(), archive: bool = False, replace: bool = False,
                       on_forecast: Callable | None = None, progress: Callable[[str], None] | None = None,
                       log: Callable[[str], None] = lambda s: None, problem: Problem | str = "arctic_sea_ice",
                       **options) -> FieldRun:
    """Backtest concentration-map forecasts on a stored sea-ice field: the per-cell references
    and the field model files in ``model_paths`` on the same folds, at the problem's leads;
    record the per-sample scores (the field leaderboard reads them) and, with ``archive``, archive
    each model's out-of-sample maps as hindcasts. What `climate-ml backtest` of field models and
    the run flow both do. ``options`` (n_jobs, scheduler, time_limit) go to ``field_backtest``."""
    from climate_ml.backtest import fold_starts
    from climate_ml.leaderboard import record_field_backtest
    from climate_ml.model_api import model_target
    from climate_ml.sea_ice_fields import (
        MapSpool,
        concentration_field,
        field_backtest,
        summarise_field_scores,
    )

    if archive and not model_paths:
        raise ClimateMLError("--archive needs a field model file: the per-cell references are not archived")
    problem = get_problem(problem) if isinstance(problem, str) else problem
    paths = {model_name(p): Path(p) for p in model_paths}
    refs = {n: FIELD_MODELS_DIR / f"{n}.py" for n in problem.field_references}
    clash = sorted(n for n in set(paths) & set(refs) if paths[n].resolve() != refs[n].resolve())
    if clash:
        raise ClimateMLError(f"field model {clash[0]!r} has the name of a per-cell reference (models/fields/); rename the file")
    refs = {n: p for n, p in refs.items() if n not in paths}  # a reference given as a model runs once
    models = {}
    for name, path in {**refs, **paths}.items():
        factory = load_model_factory(path)
        if model_target(factory) != FIELD_TARGET:
            raise ClimateMLError(f"{path}: not a field model (its file must say TARGET = {FIELD_TARGET!r}); "
                                 "backtest index models and field models in separate runs")
        models[name] = path  # by path: worker processes load the file themselves
    obs = ensure_dataset(store, dataset, log=log)
    conc, area = concentration_field(obs)
    if conc.nbytes <= FIELD_HELD_BYTES:  # read once here; else the models and the scoring read the
        conc = conc.load()               # maps from the store a block of months at a time
    last = pd.Timestamp(conc["time"].values[-1])
    end = min(pd.Timestamp(test_end), last) if test_end is not None else last
    leads = list(problem.leads)
    with contextlib.ExitStack() as stack:
        # each model's maps go to disk as they arrive (a fold at a time in memory), then to the archive
        spill = stack.enter_context(Store.at(store).scratch("hindcast-maps")) if archive else None
        hindcasts = {name: MapSpool(spill / f"model-{k}") for k, name in enumerate(paths)} if archive else {}

        def keep(name, init, maps):
            if name in hindcasts:  # the references are not archived
                hindcasts[name].add(init, maps)
            if on_forecast:
                on_forecast(name, init, maps)

        wants_maps = bool(hindcasts) or on_forecast is not None  # else only the scores come back from the units
        scores = field_backtest(conc, area, leads, test_start, end, refit_every, models=models,
                                on_forecast=keep if wants_maps else None,
                                progress=progress, **options)
        failures = json.loads(scores.attrs["failures"])
        archived = {}
        for name, maps in hindcasts.items():
            if name not in failures and len(maps):
                archived[name] = archive_field_maps(store, paths[name], maps, conc, obs, dataset, leads,
                                                    fold_starts(test_start, end, refit_every), replace=replace)
                log(f"archived {name}: {archived[name]} ({len(maps)} inits x {len(leads)} leads of maps)")
    record = record_field_backtest(store, problem.name, scores, dataset, obs.attrs.get("source_sha256", ""),
                                   test_start, end, refit_every, {**refs, **paths})
    return FieldRun(scores, summarise_field_scores(scores), failures, archived, record, conc, end)


def archive_field_maps(store: StoreLike, model_path: Path, maps, concentration: xr.DataArray, obs: xr.Dataset,
                       dataset: str, leads, starts, replace: bool = False, kind: str = "hindcast") -> str:
    """Archive a field model's maps (``maps``: init -> (member, lead, grid cells), as
    ``field_backtest``'s ``on_forecast`` hands them, or a ``MapSpool`` of them on disk, which is
    written to the archive one init at a time) as forecasts of ``arctic_sea_ice`` on ``dataset``
    of ``kind`` (hindcast, or a live forecast): (init_time, lead, member, <grid>) in units of 1,
    with the grid's lat/lon, the observed maps at each valid month where known, and per init the
    training cut-off (the fold start in ``starts`` it was fitted at) and the fold."""
    import dask.array as dsa

    from climate_ml.schema import INIT, LEAD, MEMBER, add_months, add_valid_time
    from climate_ml.sea_ice_fields import MapSpool

    if isinstance(maps, MapSpool):
        inits, data = maps.inits_and_maps()  # lazy (init, member, lead, cells)
    else:
        inits = pd.DatetimeIndex(sorted(maps))
        data = np.stack([np.asarray(maps[t], dtype="float32") for t in inits])
    leads = [int(k) for k in leads]
    spatial = [d for d in concentration.dims if d != "time"]
    shape = [concentration.sizes[d] for d in spatial]
    data = data.reshape(len(inits), data.shape[1], len(leads), *shape).swapaxes(1, 2)
    valid = add_months(inits, leads).ravel()
    # the observed map at each (init, lead), NaN where not yet observed; read lazily where the
    # maps are lazy, so that neither side is held whole
    lazy = isinstance(data, dsa.Array)
    source = concentration.chunk({"time": 1}) if lazy and concentration.chunks is None else concentration
    seen = source.reindex(time=valid).data
    seen = (dsa.asarray(seen) if lazy else np.asarray(seen)).reshape(len(inits), len(leads), *shape).astype("float32")
    if lazy:  # one init per chunk, as the archive writes them
        data, seen = (a.rechunk((1, *a.shape[1:])) for a in (data, seen))
    grid = {d: concentration[d].values for d in spatial}
    grid_coords = {c: concentration[c] for c in ("lat", "lon") if c in concentration.coords}
    fc = xr.DataArray(data, dims=(INIT, LEAD, MEMBER, *spatial), attrs={"units": "1"},
                      coords={INIT: inits, LEAD: leads, MEMBER: np.arange(data.shape[2]), **grid, **grid_coords})
    fc = add_valid_time(fc)
    observed = xr.DataArray(seen, dims=(INIT, LEAD, *spatial), coords={INIT: inits, LEAD: leads, **grid})
    starts = pd.DatetimeIndex(starts)
    fold = starts.searchsorted(inits, "right") - 1
    problem = get_problem("arctic_sea_ice")
    provenance = forecast_provenance(problem, model_path, obs, dataset, starts[fold], kind,
                                     np.array([f"{k + 1}/{len(starts)}" for k in fold]))
    provenance["details"].update(units="1", anomaly_convention="none: sea-ice concentration maps (fraction of the cell)")
    with dask.config.set(scheduler="threads"):  # the archive's session lives in this process, not on a cluster
        return write_forecast(store, problem.name, model_name(model_path), fc, provenance, replace=replace,
                              dataset=dataset, observed=observed)


def field_forecast_and_archive(store: StoreLike, dataset: str, model_path: Path, init, replace: bool = False,
                               log: Callable[[str], None] = lambda s: None) -> dict:
    """A field model's live concentration maps from ``init``: fitted on the maps up to the init,
    checked as in the field backtest and archived (kind "forecast", its own provenance). Returns
    a summary: the archive action, the members, and per lead the extent of the member-mean map
    and the share of members with ice averaged over the ice-covered area (10^6 km^2), with the
    observed extent where the valid month is in the record."""
    from climate_ml.sea_ice_fields import (
        THRESHOLD,
        check_field_prediction,
        concentration_field,
        fit_field_model,
        predict_field_model,
    )

    problem = get_problem("arctic_sea_ice")
    obs = ensure_dataset(store, dataset, log=log)
    conc, area = concentration_field(obs)  # lazy: the model reads the maps from the store a block of months at a time
    times = pd.DatetimeIndex(conc["time"].values)
    init = pd.Timestamp(init)
    if init not in times:
        raise ClimateMLError(f"init {init:%Y-%m} is not in {dataset} ({times[0]:%Y-%m}..{times[-1]:%Y-%m})")
    known = conc.sel(time=slice(None, init))
    leads = list(problem.leads)
    name = model_name(model_path)
    model = fit_field_model(load_model_factory(model_path), known, area, leads, name)
    grid = [d for d in conc.dims if d != "time"]
    maps = check_field_prediction(predict_field_model(model, known, name), grid,
                                  tuple(conc.sizes[d] for d in grid), leads, name)
    action = archive_field_maps(store, model_path, {init: maps}, conc, obs, dataset, leads, [init], replace=replace,
                                kind="forecast")
    a = np.asarray(area.transpose(*grid).values, dtype="float64").ravel() / 1e12
    rows = []
    for j, lead in enumerate(leads):
        valid = init + pd.DateOffset(months=lead)
        mean = maps[:, j].mean(0)
        row = {"lead": lead, "valid_time": f"{valid:%Y-%m}",
               "extent": round(float(a[np.nan_to_num(mean) >= THRESHOLD].sum()), 3)}
        if valid in times:
            seen = conc.sel(time=valid).transpose(*grid).values.ravel()
            row["observed_extent"] = round(float(a[np.nan_to_num(seen) >= THRESHOLD].sum()), 3)
        rows.append(row)
    return {"problem": problem.name, "model": name, "init_time": f"{init:%Y-%m}", "dataset": dataset,
            "archive": action, "members": int(maps.shape[0]), "units": "1e6 km2", "forecast": rows}


@dataclass
class Verification:
    """What ``verify_forecasts`` did and found, for a shell to show."""

    dataset: str
    index: list[dict] | None  # scores of the archived index forecasts per model and lead (None: none archived)
    maps: list[dict] | None  # field scores of the archived concentration maps (None: none archived)
    outcomes_recorded: int  # index outcomes newly written beside their forecasts
    map_values_recorded: int  # observed map values newly written
    monitoring: list[dict]  # running skill of the live forecasts (index, then maps) against the backtest (``drift_records``)
    skill: xr.Dataset | None = None  # the same as a Dataset (``verify.monitor_skill``), kept in the archive
    map_skill: xr.Dataset | None = None  # the live maps' running IIEE against the field backtest (``monitor_field_skill``), kept too

    @property
    def drifting(self) -> list[dict]:
        return [r for r in self.monitoring if r["status"] == "drift"]


def verify_forecasts(store: StoreLike, request, obs: xr.Dataset | None = None, prepared: xr.Dataset | None = None,
                     log: Callable[[str], None] = lambda s: None) -> Verification:
    """The one verification step (`climate-ml verify`, the run and monthly flows): record the
    outcomes observed since the forecasts were archived (index values and maps), score every
    archived forecast whose target has been observed, and keep the live forecasts' running skill
    against their backtest in the archive (live maps: their IIEE against the newest recorded
    field backtest). ``request``: a ``requests.VerifyRequest``."""
    from climate_ml.archive import list_models, write_monitoring
    from climate_ml.sea_ice_fields import concentration_field
    from climate_ml.verify import (
        drift_records,
        field_score_samples,
        field_verification_rows,
        monitor_field_skill,
        monitor_skill,
        record_field_outcomes,
        record_outcomes,
        verification_records,
        verify_archive,
    )

    problem = request.definition()
    name = request.dataset or problem.default_dataset
    index_models = list_models(store, problem.name, name, kind="index")
    map_models = list_models(store, problem.name, name, kind="maps")
    if not index_models and not map_models:  # said before any data work
        raise QueryError(f"no forecasts archived for {problem.name} on {name}")
    if prepared is None or obs is None:
        name, obs, prepared = problem_inputs(store, problem, request.dataset,
                                             None if request.predictors is None else list(request.predictors), log=log)
    out = Verification(name, None, None, 0, 0, [])
    if index_models:
        out.outcomes_recorded = record_outcomes(store, problem, prepared, name)
        out.index = verification_records(verify_archive(store, problem, prepared, name))
        out.skill = monitor_skill(store, problem, prepared, name)
        write_monitoring(store, problem.name, name, out.skill)
        out.monitoring = drift_records(out.skill)
    if map_models:
        conc, area = concentration_field(obs)
        if conc.nbytes <= FIELD_HELD_BYTES:  # else read from the store a block of months at a time
            conc = conc.load()
        out.map_values_recorded = record_field_outcomes(store, problem, conc, name)
        scored = field_score_samples(store, problem, conc, area, name)
        out.maps = field_verification_rows(scored)
        live_maps = field_verification_rows(scored, kinds=("forecast",))
        out.map_skill = monitor_field_skill(store, problem, live_maps, name, f"{pd.Timestamp(conc['time'].values[-1]):%Y-%m}")
        write_monitoring(store, problem.name, name, out.map_skill, kind="maps")
        out.monitoring = out.monitoring + drift_records(out.map_skill)
    return out


def seasonal_cycle(extent: xr.DataArray, years: int = 3, climatology: tuple[int, int] = (1981, 2010)) -> dict:
    """What a sea-ice extent chart is drawn from (NSIDC's "Charctic" view): by calendar month, the
    last ``years`` years of the series, the record low of each month with its year, and the mean
    of the ``climatology`` years (of every year when the record does not cover them)."""
    series = extent.to_series().dropna()
    idx = pd.DatetimeIndex(series.index)
    last = idx[-1].year
    out = {"units": extent.attrs.get("units", ""), "last": f"{idx[-1]:%Y-%m}", "years": {}, "record_low": [],
           "climatology": []}
    for year in range(last - years + 1, last + 1):
        part = series[idx.year == year]
        out["years"][str(year)] = [{"month": int(t.month), "value": round(float(v), 3)} for t, v in part.items()]
    first, final = climatology
    base = series[(idx.year >= first) & (idx.year <= final)]
    if pd.DatetimeIndex(base.index).year.nunique() < final - first + 1:
        base, first, final = series, idx[0].year, last
    out["climatology_years"] = [int(first), int(final)]
    for month in range(1, 13):
        part = series[idx.month == month]
        if len(part):
            out["record_low"].append({"month": month, "value": round(float(part.min()), 3),
                                      "year": int(pd.Timestamp(part.idxmin()).year)})
        clim = base[pd.DatetimeIndex(base.index).month == month]
        if len(clim):
            out["climatology"].append({"month": month, "value": round(float(clim.mean()), 3)})
    return out


def wet_season(problem: Problem, prepared: xr.Dataset) -> dict:
    """The season as a rainfall user follows it: the months of the current (or, outside it, the
    last) season of the problem (e.g. November-March) observed so far with their running total,
    and the terciles of the season total over every complete season in the record."""
    pr = prepared["precip"].to_series().dropna()
    idx = pd.DatetimeIndex(pr.index)
    last = idx[-1]
    first_month, n = problem.season_months[0], len(problem.season_months)
    start = pd.Timestamp(year=last.year - (last.month < first_month), month=first_month, day=1)
    months = pd.date_range(start, periods=n, freq="MS")
    seen = [(t, float(pr[t])) for t in months if t in pr.index]
    totals = problem.season_totals(prepared["precip"]).to_series().dropna()
    edges = np.quantile(totals.values, [1 / 3, 2 / 3]) if len(totals) >= 10 else [np.nan, np.nan]
    running = np.cumsum([v for _, v in seen]).tolist()
    return {"season": f"{months[0]:%b %Y}-{months[-1]:%b %Y}", "season_months": problem.season_label, "last": f"{last:%Y-%m}",
            "complete": len(seen) == n, "units": prepared["precip"].attrs.get("units", "mm"),
            "months": [{"month": f"{t:%Y-%m}", "value": round(v, 1), "total": round(c, 1)}
                       for (t, v), c in zip(seen, running, strict=True)],
            "so_far": round(running[-1], 1) if running else 0.0,
            "tercile_edges": [None if not np.isfinite(e) else round(float(e), 1) for e in edges],
            "n_seasons": int(len(totals)), "season_mean": round(float(totals.mean()), 1) if len(totals) else None}


def observed_history(problem: Problem, prepared: xr.Dataset, init, months: int = 24) -> pd.Series:
    """The observed target, in the convention of a forecast issued at ``init`` (anomalies against
    the climatology of data up to the init), for the ``months`` valid months up to the init:
    what a plume is drawn against. Values not yet fully observed at the init are left out."""
    init = pd.Timestamp(init)
    known = prepared.sel(time=slice(None, init))
    y = problem.target(known, init).isel(lead=0)
    valid = pd.DatetimeIndex(y["valid_time"].values)
    series = pd.Series(y.values, index=valid)
    return series[(series.index <= init) & (series.index > init - pd.DateOffset(months=months))].dropna()
