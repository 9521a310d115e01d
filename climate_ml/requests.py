"""Typed requests: what a shell (the CLI, a flow, the HTTP service) asks the library for, checked
once here, so that the shells parse their own syntax and nothing else.

Each request's ``checked(spell=..., **values)`` validates the values and raises a one-line
``QueryError`` that names the bad parameter the way the caller's users write it: ``spell``
turns a field name into that spelling (``cli_option``: ``n_boot`` -> ``--n-boot``; the default
keeps ``n_boot``, as an HTTP query parameter is written).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from climate_ml.errors import QueryError

N_BOOT_RANGE = (100, 5000)  # bootstrap resamples: fewer give ragged intervals, more only cost time


def as_given(name: str) -> str:
    return name


def cli_option(name: str) -> str:
    return "--" + name.replace("_", "-")


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

    def table(self, root: Path) -> dict:
        """The leaderboard as a dict (``leaderboard.leaderboard_table``)."""
        from climate_ml.leaderboard import leaderboard_table

        return leaderboard_table(root, self.problem, self.score, self.dataset, self.reference, self.n_boot, self.work)
