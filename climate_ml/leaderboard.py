"""Backtest records and the leaderboard, with block-bootstrap confidence intervals.

Every backtest is recorded under ``runs/backtests/<problem>/<run_id>/``: ``record.json`` (the
problem definition, dataset and its checksum, test period, refit policy, code version, and each
model's file hash, status and time) and ``forecasts.nc`` (out-of-sample forecasts and the
observed target). Two records are comparable only when their *work key* (a hash of the problem
definition, the data checksum, the test period and the refit policy) is the same; the
leaderboard merges the newest result of each model within one work key, adds forecasts
imported into the archive, and scores every model on exactly the same (init, lead) pairs.

Significance: years of inits are resampled with replacement (block bootstrap by year, which
keeps the autocorrelation within a year); each score and each difference (model minus the
reference, model minus the leader) gets a percentile interval.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from climate_ml import code_version
from climate_ml.backtest import BacktestResult
from climate_ml.errors import DamagedError, QueryError
from climate_ml.model_api import file_sha256
from climate_ml.problems.base import Problem
from climate_ml.schema import INIT, LEAD, MODEL
from climate_ml.scores import MAP_METRICS, METRICS
from climate_ml.sea_ice_fields import FIELD_SCORING
from climate_ml.store import NETCDF_LOCK, Store, StoreLike

REFERENCE = "damped_persistence"
MIN_BOOTSTRAP_YEARS = 2  # one calendar year of inits: every resample is that year, so no interval


def problem_definition(problem: Problem) -> dict:
    d = dataclasses.asdict(problem) if dataclasses.is_dataclass(problem) else {"name": problem.name}
    return {"class": f"{type(problem).__module__}.{type(problem).__qualname__}", **{k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}}


def work_key(work: dict) -> str:
    return hashlib.sha256(json.dumps(work, sort_keys=True).encode()).hexdigest()[:12]


def record_backtest(store: StoreLike, problem: Problem, result: BacktestResult, dataset: str, data_sha256: str,
                    test_start, test_end, refit_every: int, model_files: dict[str, Path]) -> Path:
    """Write one backtest record: ``record.json`` (the work, each model's file, hash, status and
    time), ``forecasts.nc`` (every out-of-sample forecast and the observations) and
    ``evaluation.nc`` (``BacktestResult.evaluation`` by init season); returns its directory."""
    work = {
        "problem": problem_definition(problem),
        "dataset": dataset,
        "data_sha256": data_sha256,
        "test_period": [f"{pd.Timestamp(test_start):%Y-%m}", f"{pd.Timestamp(test_end):%Y-%m}"],
        "refit_every_months": refit_every,
    }
    key = work_key(work)
    now = _dt.datetime.now(_dt.UTC)
    models = {}
    for name, path in model_files.items():
        if name not in result.forecasts and name not in result.failures:
            continue  # not part of this run
        entry = {"file": str(path), "sha256": file_sha256(path) if Path(path).is_file() else None,
                 "seconds": round(result.seconds.get(name, 0.0), 2)}
        entry.update({"status": "failed", "error": result.failures[name]} if name in result.failures else {"status": "ok"})
        if name in result.forecasts and result.definition is not None:
            reliability = result.extra(name).get("reliability")  # category probabilities: drawn on the page
            if reliability:
                entry["reliability"] = reliability
        models[name] = entry
    record = {"problem": problem.name, "work_key": key, "work": work, "code_version": code_version(),
              "created": now.isoformat(timespec="seconds"), "models": models}
    if result.forecasts:
        ds = xr.Dataset({"forecast": xr.concat([result.forecasts[n].drop_vars("valid_time", errors="ignore")
                                                for n in result.forecasts],
                                               dim=pd.Index(list(result.forecasts), name=MODEL)),
                         "obs": result.obs.drop_vars("valid_time", errors="ignore")})
        if result.baseline is not None:
            ds["baseline"] = result.baseline
        # the scores of the run as one Dataset (group, model, metric, lead): every init ("all")
        # and the inits of each season (the spring barrier shows), with skill against the
        # problem's strongest reference in it
        present = [r for r in problem.references if r in result.forecasts]
        evaluation = result.evaluation(reference=present[-1] if present else None, by="season")
    with Store.at(store).new_record(problem.name, key) as (folder, final):
        if result.forecasts:
            with NETCDF_LOCK:
                ds.to_netcdf(folder / "forecasts.nc")
                evaluation.to_netcdf(folder / "evaluation.nc")
        (folder / "record.json").write_text(json.dumps(record, indent=1))
    return final


def list_records(store: StoreLike, problem: str, kind: str = "backtests") -> list[dict]:
    """The records of a problem, oldest first: ``kind`` "backtests" or "field-backtests"."""
    out = []
    for p in Store.at(store).record_files(problem, kind):
        try:
            rec = json.loads(p.read_text())
            if not isinstance(rec, dict) or not {"work_key", "work", "models"} <= set(rec):
                raise ValueError("not a record: work_key, work or models missing")
        except (OSError, ValueError) as exc:  # JSONDecodeError is a ValueError
            raise damaged_record(p.parent, exc) from exc
        rec["dir"] = str(p.parent)
        out.append(rec)
    return out


def damaged_record(folder: Path, exc: Exception | str) -> DamagedError:
    why = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    return DamagedError(f"the record {folder} is damaged ({str(why).splitlines()[0][:300]}); delete that folder (the "
                      "leaderboard then uses the other records) or restore it from a backup")


def _load_record_file(path: Path) -> xr.Dataset:
    try:
        with NETCDF_LOCK:
            return xr.load_dataset(path)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:  # netCDF4/HDF5 errors
        raise damaged_record(path.parent, f"{path.name}: {type(exc).__name__}: {exc}") from exc


@dataclass
class Board:
    problem: str
    work_key: str
    work: dict
    forecasts: dict[str, xr.DataArray]
    obs: xr.DataArray
    failed: dict[str, str] = field(default_factory=dict)
    sources: dict[str, dict] = field(default_factory=dict)
    baseline: xr.DataArray | None = None  # scores are taken on anomalies from it


def assemble(store: StoreLike, problem: str, key: str | None = None, dataset: str | None = None,
             imported: dict[str, xr.DataArray] | None = None) -> Board:
    """Merge the newest result of each model among records of one work key."""
    key, records = _one_work(store, problem, key, dataset, "backtests")
    forecasts: dict[str, xr.DataArray] = {}
    failed: dict[str, str] = {}
    sources: dict[str, dict] = {}
    obs = baseline = None
    for rec in records:  # oldest first: newer results replace older ones
        path = Path(rec["dir"]) / "forecasts.nc"
        ds = _load_record_file(path) if path.exists() else None
        if ds is None and any(meta.get("status") == "ok" for meta in rec["models"].values()):
            raise damaged_record(path.parent, "forecasts.nc is missing")
        if ds is not None and obs is None:
            obs = ds["obs"]
            baseline = ds["baseline"] if "baseline" in ds else None
        for name, meta in rec["models"].items():
            sources[name] = {**meta, "record": Path(rec["dir"]).name, "code_version": rec["code_version"]}
            if meta["status"] == "ok" and ds is not None:
                forecasts[name] = ds["forecast"].sel({MODEL: name}).drop_vars(MODEL)
                failed.pop(name, None)
            else:
                failed[name] = meta.get("error", "failed")
                forecasts.pop(name, None)
    if obs is None:
        raise QueryError(f"the backtests with work key {key!r} produced no forecasts")
    for name, fc in (imported or {}).items():
        fc = fc.reindex({INIT: obs[INIT].values, LEAD: obs[LEAD].values})
        forecasts[name] = fc
        sources[name] = {"status": "ok", "file": "archive (imported)"}
    return Board(problem, key, records[-1]["work"], forecasts, obs, failed, sources, baseline)


def _one_work(store: StoreLike, problem: str, key: str | None, dataset: str | None, kind: str) -> tuple[str, list[dict]]:
    """The records of one work key (default: the newest record's), optionally on one data set."""
    records = list_records(store, problem, kind)
    what, command = (("backtests", "climate-ml backtest") if kind == "backtests" else
                     ("field backtests", f"climate-ml backtest {problem} MAPS.py"))
    if dataset:
        records = [r for r in records if r["work"]["dataset"] == dataset]
    if not records:
        raise QueryError(f"no {what} recorded for problem {problem!r}" + (f" on dataset {dataset!r}" if dataset else "")
                         + f" (run `{command}` first)")
    key = key or records[-1]["work_key"]
    records = [r for r in records if r["work_key"] == key]
    if not records:
        raise QueryError(f"no {what} with work key {key!r} for {problem!r}")
    return key, records


def default_reference(problem: Problem, board: Board) -> str:
    """The problem's strongest reference (the last it lists) that is on the board."""
    present = [r for r in problem.references if r in board.forecasts]
    if not present:
        raise QueryError(f"none of {problem.name}'s references ({', '.join(problem.references)}) is on this leaderboard; "
                         "give --reference")
    return present[-1]


def _common_pairs(board: Board) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(model, init, lead) forecasts and (init, lead) obs, NaN wherever any model or obs is missing."""
    names = list(board.forecasts)
    F = np.stack([board.forecasts[n].transpose(INIT, LEAD).values for n in names])
    obs_arr = board.obs.transpose(INIT, LEAD).values.copy()
    if board.baseline is not None:
        base = board.baseline.transpose(INIT, LEAD).values
        F = F - base[None]
        obs_arr = obs_arr - base
    ok = np.isfinite(obs_arr) & np.isfinite(F).all(axis=0)
    obs_arr[~ok] = np.nan
    F[:, ~ok] = np.nan
    return F, obs_arr, names


def yearly_sums(metric, F: np.ndarray, obs_arr: np.ndarray, years: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The metric's per-pair statistics summed within each calendar year of the inits:
    S[year, model, lead, k] (the blocks the bootstrap resamples), and the years."""
    uy = np.unique(years)
    stats = metric.sample_stats(F, obs_arr[None])  # model, init, lead, k
    S = np.stack([stats[:, years == y].sum(axis=1) for y in uy])
    return S, uy


def score_board(board: Board, score: str = "acc", reference: str = REFERENCE, n_boot: int = 1000,
                seed: int = 0, level: float = 0.95) -> dict:
    """Scores per model and lead on common pairs, with block-bootstrap intervals for the score,
    the difference from ``reference`` and the difference from the leader at each lead. Any
    registered metric (``scores.METRICS``) works: its statistics are summed per resampled year."""
    if score not in METRICS:
        raise QueryError(f"unknown score {score!r} (known: {', '.join(METRICS)})")
    metric = METRICS[score]
    F, obs_arr, names = _common_pairs(board)
    years = pd.DatetimeIndex(board.obs[INIT].values).year.values
    S, uy = yearly_sums(metric, F, obs_arr, years)
    leads = [int(v) for v in board.obs[LEAD].values]

    def to_score(sums):
        with np.errstate(invalid="ignore", divide="ignore"):
            return metric.reduce(sums)

    return _table(board, names, leads, S, uy, to_score, score, metric.lower_is_better, reference,
                  np.isfinite(obs_arr).sum(axis=0), n_boot, seed, level)


def _table(board, names: list[str], leads: list[int], S: np.ndarray, uy: np.ndarray, to_score, score: str,
           lower_better: bool, reference: str, n_pairs: np.ndarray, n_boot: int, seed: int, level: float) -> dict:
    """The leaderboard from per-year statistics ``S[year, model, lead, k]`` and ``to_score``
    (statistics summed over years -> score): point scores, and a block bootstrap over years for
    the intervals of the score and of its differences from the reference and the leader."""
    if reference not in names:
        raise QueryError(f"reference {reference!r} is not on this leaderboard (models: {', '.join(names)})")
    point = to_score(S.sum(axis=0))  # model, lead
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(rng.integers(0, len(uy), len(uy)), minlength=len(uy)) for _ in range(n_boot)])
    boot = to_score(np.einsum("by,ymlk->bmlk", counts, S))  # boot, model, lead
    sign = -1.0 if lower_better else 1.0
    scored = np.isfinite(point).any(axis=0)  # a lead that no model could be scored at (no outcome yet) has no leader
    leader = np.where(np.isfinite(point), sign * point, -np.inf).argmax(axis=0)  # per lead
    ref = names.index(reference)
    a = (1 - level) / 2

    def q(x):
        with warnings.catch_warnings():  # a lead no model could be scored at has no interval
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanquantile(x, a, axis=0), np.nanquantile(x, 1 - a, axis=0)

    if len(uy) < MIN_BOOTSTRAP_YEARS:  # no intervals, so no model is called better than the reference
        boot = np.full_like(boot, np.nan)
    lo, hi = q(boot)
    d_ref = boot - boot[:, [ref], :]
    d_lead = boot - np.take_along_axis(boot, leader[None, None, :].repeat(boot.shape[0], 0), axis=1)
    dr_lo, dr_hi = q(d_ref)
    dl_lo, dl_hi = q(d_lead)
    rows = []
    for i, name in enumerate(names):
        per_lead = {}
        for j, lead in enumerate(leads):
            better_than_ref = (dr_lo[i, j] > 0) if not lower_better else (dr_hi[i, j] < 0)
            per_lead[str(lead)] = {
                "score": _r(point[i, j]), "ci": [_r(lo[i, j]), _r(hi[i, j])],
                "minus_reference": _r(point[i, j] - point[ref, j]), "minus_reference_ci": [_r(dr_lo[i, j]), _r(dr_hi[i, j])],
                "significantly_better_than_reference": bool(better_than_ref) and i != ref,
                "minus_leader": _r(point[i, j] - point[leader[j], j]), "minus_leader_ci": [_r(dl_lo[i, j]), _r(dl_hi[i, j])],
                "leader": bool(scored[j] and leader[j] == i),
            }
        rows.append({"model": name, "leads": per_lead, "source": board.sources.get(name, {})})
    mean_score = {r["model"]: [v["score"] for v in r["leads"].values() if v["score"] is not None] for r in rows}
    rows.sort(key=lambda r: sign * -np.mean(mean_score[r["model"]]) if mean_score[r["model"]] else np.inf)
    return {
        "problem": board.problem, "work_key": board.work_key, "dataset": board.work["dataset"],
        "test_period": board.work["test_period"], "refit_every_months": board.work["refit_every_months"],
        "score": score, "lower_is_better": lower_better, "reference": reference, "confidence": level,
        "bootstrap": {"blocks": "calendar years of init_time", "n_years": len(uy), "n_boot": n_boot,
                      "min_years": MIN_BOOTSTRAP_YEARS},
        "leads": leads, "n_pairs": {str(lead): int(n) for lead, n in zip(leads, n_pairs, strict=True)},
        "rows": rows, "failed": [{"model": k, "error": v} for k, v in board.failed.items()],
    }


# -- field (map) forecasts: per-sample scores of field backtests, averaged over (init, lead) --

FIELD_REFERENCE = "damped_anomaly_persistence"


def record_field_backtest(store: StoreLike, problem: str, scores: xr.Dataset, dataset: str, data_sha256: str, test_start,
                          test_end, refit_every: int, model_files: dict[str, Path | None]) -> Path:
    """Write one field backtest (per-sample scores over method x init x lead, from
    ``sea_ice_fields.field_backtest``) as a record; returns its directory."""
    work = {"problem": problem, "target": "sea_ice_concentration", "dataset": dataset, "data_sha256": data_sha256,
            "test_period": [f"{pd.Timestamp(test_start):%Y-%m}", f"{pd.Timestamp(test_end):%Y-%m}"],
            "refit_every_months": refit_every, "field_scoring": FIELD_SCORING}
    key = work_key(work)
    now = _dt.datetime.now(_dt.UTC)
    failures = json.loads(scores.attrs.get("failures", "{}"))
    models = {}
    for name, path in model_files.items():
        entry = {"file": str(path) if path else None, "sha256": file_sha256(path) if path and Path(path).is_file() else None,
                 "kind": "model file" if path else "per-cell reference"}
        entry.update({"status": "failed", "error": failures[name]} if name in failures else {"status": "ok"})
        models[name] = entry
    record = {"problem": problem, "work_key": key, "work": work, "code_version": code_version(),
              "created": now.isoformat(timespec="seconds"), "models": models}
    with Store.at(store).new_record(problem, key, "field-backtests") as (folder, final):
        with NETCDF_LOCK:
            scores.to_netcdf(folder / "scores.nc")
        (folder / "record.json").write_text(json.dumps(record, indent=1))
    return final


@dataclass
class FieldBoard:
    problem: str
    work_key: str
    work: dict
    scores: dict[str, xr.Dataset]  # model -> per-sample scores (init_time, lead)
    failed: dict[str, str] = field(default_factory=dict)
    sources: dict[str, dict] = field(default_factory=dict)


def assemble_fields(store: StoreLike, problem: str, key: str | None = None, dataset: str | None = None) -> FieldBoard:
    """The newest field-backtest result of each model among records of one work key."""
    key, records = _one_work(store, problem, key, dataset, "field-backtests")
    scores, failed, sources = {}, {}, {}
    for rec in records:  # oldest first: newer results replace older ones
        ds = _load_record_file(Path(rec["dir"]) / "scores.nc")
        for name, meta in rec["models"].items():
            sources[name] = {**meta, "record": Path(rec["dir"]).name, "code_version": rec["code_version"]}
            if meta["status"] == "ok" and name in ds["method"].values:
                scores[name] = ds.sel({"method": name}, drop=True)
                failed.pop(name, None)
            else:
                failed[name] = meta.get("error", "failed")
                scores.pop(name, None)
    return FieldBoard(problem, key, records[-1]["work"], scores, failed, sources)


def score_field_board(board: FieldBoard, score: str = "iiee", reference: str = FIELD_REFERENCE, n_boot: int = 1000,
                      seed: int = 0, level: float = 0.95) -> dict:
    """The leaderboard of a map metric (``scores.MAP_METRICS``) over the (init, lead) pairs
    every model has, with the same block bootstrap over years (``yearly_sums``) as
    ``score_board``."""
    if score not in MAP_METRICS:
        raise QueryError(f"unknown field score {score!r} (known: {', '.join(MAP_METRICS)})")
    metric = MAP_METRICS[score]
    names = [n for n in board.scores if metric.variable in board.scores[n]]  # records older than a metric lack it
    if not names:
        raise QueryError(f"no field model of {board.problem!r} has {score} scores in work {board.work_key}")
    X = np.stack([board.scores[n][metric.variable].transpose(INIT, LEAD).values for n in names])  # model, init, lead
    ok = np.isfinite(X).all(axis=0)
    first = board.scores[names[0]]
    years = pd.DatetimeIndex(first[INIT].values).year.values
    S, uy = yearly_sums(metric, np.where(ok[None], X, np.nan), np.where(ok, 0.0, np.nan), years)

    def to_score(sums):
        with np.errstate(invalid="ignore", divide="ignore"):
            return metric.reduce(sums)

    leads = [int(v) for v in first[LEAD].values]
    return _table(board, names, leads, S, uy, to_score, score, metric.lower_is_better, reference, ok.sum(axis=0), n_boot,
                  seed, level)


def leaderboard_table(store: StoreLike, problem: str, score: str = "acc", dataset: str | None = None,
                      reference: str | None = None, n_boot: int = 1000, work: str | None = None) -> dict:
    """The leaderboard the CLI and HTTP show: index scores (``METRICS``) from recorded backtests
    and imported forecasts, or map scores (``MAP_METRICS``) from recorded field backtests."""
    from climate_ml.archive import imported_forecasts
    from climate_ml.problems import get_problem

    prob = get_problem(problem)
    if score in MAP_METRICS:
        board = assemble_fields(store, problem, work, dataset)
        return score_field_board(board, score, reference or FIELD_REFERENCE, n_boot=n_boot)
    if score not in METRICS:
        raise QueryError(f"bad score {score!r} ({', '.join(METRICS)}; for maps {', '.join(MAP_METRICS)})")
    board = assemble(store, problem, work, dataset, imported=imported_forecasts(store, problem))
    return score_board(board, score, reference or default_reference(prob, board), n_boot=n_boot)


def bootstrap_note(table: dict) -> str:
    n = table["bootstrap"]["n_years"]
    if n < MIN_BOOTSTRAP_YEARS:
        return (f"no intervals: the inits span {n} calendar year{'s' if n != 1 else ''}, and the block bootstrap needs "
                f"at least {MIN_BOOTSTRAP_YEARS} (an earlier --test-start)")
    return (f"* = better than {table['reference']} with {table['confidence']:.0%} confidence "
            f"(block bootstrap over {n} years)")


def _r(x) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 4)


def _num(x: float | None, spec: str) -> str:
    return f"{'-':>{spec.lstrip('+').split('.')[0]}}" if x is None else format(x, spec)


def _interval(pair) -> str:
    return "[" + ", ".join("  -  " if t is None else f"{t:+.2f}" for t in pair) + "]"


def format_board(table: dict, lead: int | None = None) -> str:
    """Text table: models x leads (``*`` = significantly better than the reference), or one
    lead with intervals."""
    lines = [f"{table['problem']} leaderboard: {table['score'].upper()} "
             f"({'lower' if table['lower_is_better'] else 'higher'} is better), dataset {table['dataset']}, "
             f"inits {table['test_period'][0]}..{table['test_period'][1]}, refit every {table['refit_every_months']} months, "
             f"work {table['work_key']}"]
    width = max(len(r["model"]) for r in table["rows"]) + 2
    if lead is None:
        leads = [str(x) for x in table["leads"]]
        lines.append("model".ljust(width) + "".join(f"{'L' + x:>8}" for x in leads))
        for r in table["rows"]:
            cells = []
            for x in leads:
                v = r["leads"][x]
                mark = "*" if v["significantly_better_than_reference"] else " "
                cells.append(f"{v['score']:>7.2f}{mark}" if v["score"] is not None else f"{'-':>8}")
            lines.append(r["model"].ljust(width) + "".join(cells))
        lines.append(bootstrap_note(table))
    else:
        x = str(lead)
        if x not in table["rows"][0]["leads"]:
            raise QueryError(f"lead {lead} is not on this leaderboard (leads: {table['leads'][0]}..{table['leads'][-1]})")
        lines.append(f"lead {lead} months, {table['n_pairs'][x]} verified inits, {table['confidence']:.0%} intervals")
        lines.append("model".ljust(width) + f"{'score':>8} {'interval':>17} {'- ' + table['reference']:>26} {'- leader':>24}")
        for r in table["rows"]:
            v = r["leads"][x]
            lines.append(r["model"].ljust(width) + f"{_num(v['score'], '8.3f')} {_interval(v['ci']):>17} "
                         f"{_num(v['minus_reference'], '+8.3f')} {_interval(v['minus_reference_ci']):>17} "
                         f"{_num(v['minus_leader'], '+8.3f')} {_interval(v['minus_leader_ci']):>15}")
        if table["bootstrap"]["n_years"] < MIN_BOOTSTRAP_YEARS:
            lines.append(bootstrap_note(table))
    for f in table["failed"]:
        lines.append(f"FAILED {f['model']}: {f['error']}")
    return "\n".join(lines)
