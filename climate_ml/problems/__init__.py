"""Forecasting problems by name: the registry.

A problem is one module: every concrete ``Problem`` subclass that sets its ``name`` in a module of
this package, or in a ``*.py`` file of a folder listed in ``CLIMATE_ML_PROBLEMS`` (folders joined
by ``os.pathsep``), is a problem. Nothing else lists them: the CLI, the flows, the HTTP service
and the page ask ``problem_names()``.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import pkgutil
import re
import sys
from pathlib import Path

from climate_ml.errors import ClimateMLError, QueryError
from climate_ml.problems.base import FoldData, Problem

PROBLEMS_ENV = "CLIMATE_ML_PROBLEMS"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")  # a problem's name becomes a path (archive/<name>.icechunk)
_CACHE: dict[str, dict[str, type[Problem]]] = {}


def _classes_in(module) -> list[type[Problem]]:
    return [obj for obj in vars(module).values()
            if isinstance(obj, type) and issubclass(obj, Problem) and obj.__module__ == module.__name__
            and not inspect.isabstract(obj) and isinstance(vars(obj).get("name"), str)]


def _load_file(path: Path):
    name = f"climate_ml_problem_files.{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickle look the module up by name
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # a user's file: say which one broke and how, in one line
        del sys.modules[name]
        raise ClimateMLError(f"problem file {path}: {type(exc).__name__}: {exc}") from exc
    return module


def _discover(extra: str) -> dict[str, type[Problem]]:
    modules = [importlib.import_module(f"{__name__}.{m.name}") for m in pkgutil.iter_modules(__path__)
               if not m.name.startswith("_") and m.name != "base"]
    for folder in filter(None, extra.split(os.pathsep)):
        if not Path(folder).is_dir():
            raise ClimateMLError(f"{PROBLEMS_ENV}: {folder} is not a folder")
        modules += [_load_file(f) for f in sorted(Path(folder).glob("*.py")) if not f.name.startswith("_")]
    found: dict[str, type[Problem]] = {}
    for module in modules:
        for cls in _classes_in(module):
            name = vars(cls)["name"]
            if not _NAME.match(name):
                raise ClimateMLError(f"problem {cls.__qualname__} in {module.__name__}: name {name!r} must be lower-case "
                                     "letters, digits and underscores, starting with a letter")
            if name in found and found[name] is not cls:
                raise ClimateMLError(f"two problems are named {name!r}: {found[name].__module__} and {module.__name__}")
            found[name] = cls
    return dict(sorted(found.items(), key=lambda kv: (kv[1].listing_order, kv[0])))


def problem_classes() -> dict[str, type[Problem]]:
    """Every problem's class by name (built-in ones first, then those of ``CLIMATE_ML_PROBLEMS``)."""
    key = os.environ.get(PROBLEMS_ENV, "")
    if key not in _CACHE:
        _CACHE[key] = _discover(key)
    return _CACHE[key]


def problem_names() -> list[str]:
    return list(problem_classes())


def get_problem(name: str, **options) -> Problem:
    classes = problem_classes()
    if name not in classes:
        raise QueryError(f"unknown problem {name!r} (known: {', '.join(classes)})")
    return classes[name](**options)


__all__ = ["FoldData", "Problem", "PROBLEMS_ENV", "get_problem", "problem_classes", "problem_names"]
