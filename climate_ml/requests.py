"""Typed requests: what a shell (the CLI, a flow, the HTTP service) asks the library for, checked
once here, so that the shells parse their own syntax and nothing else.

Each request's ``checked(spell=..., **values)`` validates the values and raises a one-line
``QueryError`` that names the bad parameter the way the caller's users write it: ``spell``
turns a field name into that spelling (``cli_option``: ``n_boot`` -> ``--n-boot``; the default
keeps ``n_boot``, as an HTTP query parameter is written).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from climate_ml.errors import QueryError

if TYPE_CHECKING:
    from climate_ml.store import StoreLike

N_BOOT_RANGE = (100, 5000)  # bootstrap resamples: fewer give ragged intervals, more only cost time


def as_given(name: str) -> str:
    return name


CLI_NAMES = {"predictors": "--predictor-dataset", "models": "--model"}  # where an option is not the field's name


def cli_option(name: str) -> str:
    return CLI_NAMES.get(name, "--" + name.replace("_", "-"))


def parse_month(text, what: str) -> pd.Timestamp | None:
    """A month given as YYYY-MM (or a Timestamp, from code) as the first of that month."""
    if text is None or isinstance(text, pd.Timestamp):
        return text
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", str(text)):
        raise QueryError(f"bad {what} {text!r}: expected YYYY-MM")
    if not 1678 <= int(text[:4]) <= 2261:
        raise QueryError(f"bad {what} {text!r}: year outside 1678..2261")
    return pd.Timestamp(text + "-01")


def field_contract(prob, model_paths, verb: str) -> bool:
    """True when the model files are field models (TARGET = "sea_ice_concentration"), False for
    index models; mixing the two, or field models for a problem without a field target, is a
    one-line error (so is a path that is not a model file)."""
    from climate_ml.model_api import FIELD_TARGET, load_model_factory, model_target

    targets = {model_target(load_model_factory(path)) for path in model_paths}
    if FIELD_TARGET not in targets:
        return False
    if len(targets) > 1:
        raise QueryError("give field models (TARGET = 'sea_ice_concentration') and index models in separate runs")
    if not prob.field_references:
        from climate_ml.problems import problem_classes

        with_maps = ", ".join(sorted(name for name, cls in problem_classes().items() if cls.field_references))
        raise QueryError(f"field models forecast sea-ice concentration maps: {verb} them on a problem with a field "
                         f"target ({with_maps}), not {prob.name}")
    return True


def _frozen(values: dict, *names: str) -> dict:
    """A request's list values as tuples (model files as paths), so that requests are hashable."""
    for name in names:
        if values.get(name) is not None:
            values[name] = tuple(Path(v) for v in values[name]) if name == "model_paths" else tuple(values[name])
    return values


@dataclass(frozen=True)
class BacktestRequest:
    """A backtest of model files against the problem's references (``workflows.run_backtest_request``),
    as `climate-ml backtest` and the run flow ask for it. ``fields`` is worked out from the model
    files: True when they forecast concentration maps (the field backtest)."""

    problem: str
    model_paths: tuple[Path, ...] = ()
    dataset: str | None = None
    predictors: tuple[str, ...] | None = None
    target_variable: str | None = None
    test_start: pd.Timestamp = pd.Timestamp("1990-01-01")
    test_end: pd.Timestamp | None = None
    refit_every: int = 12
    n_jobs: int = 1
    scheduler: str | None = None
    time_limit: float | None = None
    blend: bool = True
    record: bool = True
    archive: bool = False
    replace: bool = False
    guard: bool = True
    fields: bool = False

    @classmethod
    def checked(cls, spell: Callable[[str], str] = as_given, **values) -> BacktestRequest:
        _frozen(values, "model_paths", "predictors")
        for name in ("test_start", "test_end"):
            if name in values:
                values[name] = parse_month(values[name], spell(name))
        req = cls(**values)
        prob = req.definition()
        fields = field_contract(prob, req.model_paths, "backtest")  # fails fast on a broken path
        for name in ("refit_every", "n_jobs"):
            if getattr(req, name) < 1:
                raise QueryError(f"bad {spell(name)} {getattr(req, name)}: must be at least 1")
        if req.time_limit is not None and not req.time_limit > 0:
            raise QueryError(f"bad {spell('time_limit')} {req.time_limit}: must be positive")
        if req.test_end is not None and req.test_end < req.test_start:
            raise QueryError(f"bad {spell('test_end')} {req.test_end:%Y-%m}: before {spell('test_start')} "
                             f"{req.test_start:%Y-%m}")
        _check_data_names(req, spell)
        if req.replace and not fields:
            raise QueryError(f"{spell('replace')} is for field models (maps); these are index models")
        return dataclasses.replace(req, fields=fields)

    def definition(self):
        """The problem object this request is about."""
        from climate_ml.problems import get_problem

        return get_problem(self.problem, target_variable=self.target_variable)


@dataclass(frozen=True)
class LeaderboardRequest:
    """A leaderboard: models x leads of one score over the recorded backtests of one work."""

    problem: str
    score: str = "acc"
    dataset: str | None = None
    reference: str | None = None
    n_boot: int = 1000
    work: str | None = None

    @classmethod
    def checked(cls, spell: Callable[[str], str] = as_given, **values) -> LeaderboardRequest:
        from climate_ml.problems import get_problem
        from climate_ml.scores import MAP_METRICS, METRICS
        from climate_ml.store import check_name

        req = cls(**values)
        get_problem(req.problem)
        if req.score not in METRICS and req.score not in MAP_METRICS:
            raise QueryError(f"bad {spell('score')} {req.score!r} ({', '.join(METRICS)}; "
                             f"for maps {', '.join(MAP_METRICS)})")
        low, high = N_BOOT_RANGE
        if not low <= req.n_boot <= high:
            raise QueryError(f"bad {spell('n_boot')} {req.n_boot}: between {low} and {high}")
        for name in ("dataset", "reference", "work"):
            if getattr(req, name) is not None:
                check_name(getattr(req, name), spell(name))
        return req

    def table(self, store: StoreLike) -> dict:
        """The leaderboard as a dict (``leaderboard.leaderboard_table``)."""
        from climate_ml.leaderboard import leaderboard_table

        return leaderboard_table(store, self.problem, self.score, self.dataset, self.reference, self.n_boot, self.work)


@dataclass(frozen=True)
class ArchiveQuery:
    """A query of the forecast archive, as `climate-ml archive query` and HTTP ``/forecasts`` ask
    it: every parameter checked before the store is touched (``as_of`` needs the archive itself
    and is checked when it is read), then ``export(root)`` runs it (``archive.query`` and
    ``archive.export``)."""

    problem: str
    model: str | None = None
    init: str | None = None
    lead: str | None = None
    valid: str | None = None
    as_of: str | None = None
    dataset: str | None = None
    box: str | None = None
    format: str = "csv"

    @classmethod
    def checked(cls, spell: Callable[[str], str] = as_given, **values) -> ArchiveQuery:
        from climate_ml.archive import FORMATS, parse_init_range, parse_leads
        from climate_ml.problems import get_problem
        from climate_ml.regions import parse_box
        from climate_ml.store import check_name

        req = cls(**values)
        if req.format not in FORMATS:
            raise QueryError(f"bad {spell('format')} {req.format!r} ({', '.join(FORMATS)})")
        get_problem(req.problem)
        for name in ("init", "valid"):
            parse_init_range(getattr(req, name), spell(name))
        parse_leads(req.lead, spell("lead"))
        if req.box is not None:
            parse_box(req.box, spell("box"))
        for name in ("model", "dataset"):
            if getattr(req, name) is not None:
                check_name(getattr(req, name), spell(name))
        return req

    def export(self, store: StoreLike, provenance: bool = True) -> bytes:
        """The matching forecasts with their observed outcomes, serialised in ``format``."""
        from climate_ml.archive import export, query

        return export(query(store, self.problem, self.model, self.init, self.lead, dataset=self.dataset,
                            valid=self.valid, as_of=self.as_of, provenance=provenance, box=self.box), self.format)


def _check_data_names(req, spell: Callable[[str], str]) -> None:
    """A request's data set and predictor data set names become paths: checked here."""
    from climate_ml.store import check_name

    if req.dataset is not None:
        check_name(req.dataset, spell("dataset"))
    for name in req.predictors or ():
        check_name(name, spell("predictors"))


@dataclass(frozen=True)
class ForecastRequest:
    """Forecasts from model files, as `climate-ml forecast` asks for them: one init
    (``init_end`` None), or every init from ``init`` to ``init_end`` refitting every
    ``refit_every`` months (index models only). ``fields`` is worked out from the model files:
    True when they forecast concentration maps."""

    problem: str
    model_paths: tuple[Path, ...]
    init: pd.Timestamp
    init_end: pd.Timestamp | None = None
    refit_every: int = 12
    dataset: str | None = None
    predictors: tuple[str, ...] | None = None
    target_variable: str | None = None
    replace: bool = False
    fields: bool = False

    @classmethod
    def checked(cls, spell: Callable[[str], str] = as_given, **values) -> ForecastRequest:
        """``init`` may be YYYY-MM or a range YYYY-MM:YYYY-MM (split into init and init_end)."""
        values.setdefault("model_paths", ())
        _frozen(values, "model_paths", "predictors")
        init = values.get("init")
        if isinstance(init, str) and ":" in init:
            span = init.split(":")
            if len(span) != 2:
                raise QueryError(f"bad {spell('init')} {init!r}: expected YYYY-MM or a range YYYY-MM:YYYY-MM")
            values["init"] = parse_month(span[0], f"{spell('init')} start")
            values["init_end"] = parse_month(span[1], f"{spell('init')} end")
            if values["init_end"] < values["init"]:
                raise QueryError(f"bad {spell('init')} {init!r}: end before start")
        else:
            values["init"] = parse_month(init, spell("init"))
        if values["init"] is None:
            raise QueryError(f"missing {spell('init')}: the month to forecast from (YYYY-MM)")
        req = cls(**values)
        if not req.model_paths:
            raise QueryError("give at least one model file")
        if req.refit_every < 1:
            raise QueryError(f"bad {spell('refit_every')} {req.refit_every}: must be at least 1")
        _check_data_names(req, spell)
        fields = field_contract(req.definition(), req.model_paths, "forecast")  # fails fast on a broken path
        if fields and req.init_end is not None:
            raise QueryError(f"field models forecast one init at a time ({spell('init')} YYYY-MM); "
                             "`climate-ml backtest arctic_sea_ice FILE` runs them over a test period")
        return dataclasses.replace(req, fields=fields)

    def definition(self):
        from climate_ml.problems import get_problem

        return get_problem(self.problem, target_variable=self.target_variable)


@dataclass(frozen=True)
class OutlookRequest:
    """The multi-model outlook, as `climate-ml outlook` and the monthly flow ask for it: the
    registered models named in ``models`` (all of them when None) from ``init`` (the latest month
    when None)."""

    problem: str
    models: tuple[str, ...] | None = None
    init: pd.Timestamp | None = None
    dataset: str | None = None
    predictors: tuple[str, ...] | None = None
    target_variable: str | None = None

    @classmethod
    def checked(cls, spell: Callable[[str], str] = as_given, **values) -> OutlookRequest:
        _frozen(values, "models", "predictors")
        values["init"] = parse_month(values.get("init"), spell("init"))
        req = cls(**values)
        _check_data_names(req, spell)
        req.model_paths()
        return req

    def definition(self):
        from climate_ml.problems import get_problem

        return get_problem(self.problem, target_variable=self.target_variable)

    def model_paths(self) -> dict[str, Path]:
        """The requested registered models' files; an unknown name is a one-line error."""
        from climate_ml.workflows import registered_models

        available = registered_models(self.definition().name)
        unknown = sorted(set(self.models or ()) - set(available))
        if unknown:
            raise QueryError(f"unknown model {unknown[0]!r} for {self.problem} (models: {', '.join(available)})")
        return {m: available[m] for m in (self.models or available)}


@dataclass(frozen=True)
class VerifyRequest:
    """Verification of the archived forecasts of one work, as `climate-ml verify`, the run flow
    and the monthly flow ask for it (``workflows.verify_forecasts``)."""

    problem: str
    dataset: str | None = None
    predictors: tuple[str, ...] | None = None
    target_variable: str | None = None

    @classmethod
    def checked(cls, spell: Callable[[str], str] = as_given, **values) -> VerifyRequest:
        req = cls(**_frozen(values, "predictors"))
        req.definition()
        _check_data_names(req, spell)
        return req

    def definition(self):
        from climate_ml.problems import get_problem

        return get_problem(self.problem, target_variable=self.target_variable)
