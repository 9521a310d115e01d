"""The forecast archive: one Icechunk repository per problem, ``archive/<problem>.icechunk`` in
the store, or ``<CLIMATE_ML_ARCHIVE_URL>/<problem>.icechunk`` in an S3-compatible object store
(``store.RepoAt``).

Inside it, one group per data set and model, ``<dataset>/<model>``, holding
``forecast(init_time, lead[, member])`` with ``valid_time(init_time, lead)``, the verifying
``observed(init_time, lead)`` where it is known (hindcasts), and the provenance of every init as
variables along ``init_time`` (``PROVENANCE``): an init keeps its own model checksum, training
window and data set whatever is written after it. Names and attributes follow CF-1.11.

Every write is one Icechunk commit (message and metadata carry its provenance), made under the
store's lock because Icechunk's local-filesystem storage does not serialise commits itself (on
object storage Icechunk refuses a commit whose parent moved, a one-line error here). A
new init is appended (the cost does not grow with the archive); writing the same forecast again
changes nothing; a different forecast for an archived init replaces it only with
``replace=True``. Readers see one snapshot, never half a write, and may ask for the archive as it
stood at a date or tag (``as_of``). Loaded snapshots are cached by snapshot id, so repeated
queries read nothing but the branch reference.

Readable without climate-ml: ``xr.open_zarr(session.store, group="toy-ocean/xro")`` or
``xr.open_datatree(session.store, engine="zarr")`` with an Icechunk read-only session (the
snapshot holds the metadata of every group in one object, which is what consolidated metadata
gives a plain Zarr store).
"""

from __future__ import annotations

import datetime as _dt
import itertools
import json
import re
import tempfile
import threading
import warnings
from collections import OrderedDict
from pathlib import Path

import icechunk
import numpy as np
import pandas as pd
import xarray as xr
import zarr

from climate_ml import __version__, code_version
from climate_ml.errors import DamagedError, QueryError, StoreError
from climate_ml.schema import (
    CATEGORY,
    INIT,
    LEAD,
    MEMBER,
    MODEL,
    TIME,
    VALID,
    add_months,
    add_valid_time,
    validate_forecast,
)
from climate_ml.store import NETCDF_LOCK, RepoAt, Store, StoreLike, check_name, commit, repository

MIN_YEAR, MAX_YEAR = 1678, 2261  # what datetime64[ns] can hold, whole years
BRANCH = "main"
OBSERVED = "observed"
PROBABILITY = "probability"
SEASON_FORECAST, SEASON_PROBABILITY = "season_forecast", "season_probability"  # rainfall: the Nov-Mar total
OPTIONAL = (PROBABILITY, SEASON_FORECAST, SEASON_PROBABILITY)  # variables along init_time a write may lack
KINDS = ("forecast", "hindcast", "imported")
# Provenance of each init, stored as string variables along init_time: name -> long_name.
PROVENANCE = {
    "kind": "forecast (issued live), hindcast (out-of-sample backtest) or imported (made elsewhere)",
    "model_sha256": "sha256 of the model file (of the imported file for imported forecasts)",
    "code_version": "climate-ml version that made or imported the forecast",
    "dataset": "data set the model was fitted on and the target is defined on",
    "dataset_sha256": "sha256 of that data set's source file(s)",
    "train_start": "first month of the training window (YYYY-MM)",
    "train_end": "last month of data the model saw (YYYY-MM): the training cut-off",
    "fold": "backtest fold (k/K) the hindcast came from; empty for live forecasts",
    "written_at": "UTC time the forecast was written to the archive",
    "details": "further provenance as JSON (predictors, catalog entry, notes)",
}
GLOBAL_ATTRS = {
    "Conventions": "CF-1.11",
    "institution": "climate-ml forecast archive",
    "references": "https://www.cpc.ncep.noaa.gov/products/analysis_monitoring/ensostuff/ONI_v5.php ; "
                  "Ham et al. 2019 doi:10.1038/s41586-019-1559-7 ; Zhao et al. 2024 (XRO) doi:10.1038/s41586-024-07534-6",
}
# Chunks along init_time: five years of monthly inits, fewer for fields (about _CHUNK_BYTES).
# Appending an init writes (or rewrites) one chunk per variable, whatever the archive's size.
_INITS_PER_CHUNK = 60
_CHUNK_BYTES = 2_000_000

warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification.*")
warnings.filterwarnings("ignore", message=".*Consolidated metadata is currently not part.*")
icechunk.set_logs_filter("error")  # its warning about local-filesystem commits: we hold the store lock


def default_dataset(problem: str) -> str:
    """The data set a problem's commands use when none is named (its embedded default)."""
    from climate_ml.problems import get_problem

    return get_problem(problem).default_dataset


def _group(problem: str, model: str, dataset: str | None) -> tuple[str, str, str]:
    """(dataset, model, "<dataset>/<model>"): names checked before they reach the store."""
    try:
        dataset = check_name(dataset or default_dataset(problem), "dataset")
        model = check_name(model, "model")
    except StoreError as exc:
        raise QueryError(str(exc)) from exc
    return dataset, model, f"{dataset}/{model}"


# --------------------------------------------------------------------------- repositories

def _repository(at: RepoAt, create: bool = False) -> icechunk.Repository | None:
    """The archive's Icechunk repository at ``at`` (opened once per process), or None."""
    return repository(at, create, "forecast archive")


def _commit(session, at: RepoAt, message: str, metadata: dict) -> str:
    """Commit ``session``; a writer elsewhere that committed first is a one-line error, and
    nothing is written."""
    return commit(session, at, message, metadata, "archive")


def _utc(text: str) -> _dt.datetime:
    """A date (the end of that UTC day) or an ISO time (UTC unless it says otherwise)."""
    ts = pd.Timestamp(text)
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        ts = ts + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)
    return ts.to_pydatetime()


def _snapshot_id(repo: icechunk.Repository, path: RepoAt, as_of: str | None) -> str:
    """The snapshot of the branch now, at a UTC date/time, or at a tag."""
    if as_of is None:
        return repo.lookup_branch(BRANCH)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}([T ][\d:.]+([+-]\d{2}:?\d{2}|Z)?)?", as_of):
        try:
            when = _utc(as_of)
        except ValueError as exc:
            raise QueryError(f"bad as_of {as_of!r}: not a date (YYYY-MM-DD) or ISO time") from exc
        first = list(repo.ancestry(branch=BRANCH))[-1].written_at
        if when < first:
            raise QueryError(f"bad as_of {as_of!r}: the archive of {path.stem} begins {first:%Y-%m-%dT%H:%M:%SZ}")
        return repo.readonly_session(BRANCH, as_of=when).snapshot_id
    try:
        check_name(as_of, "tag")
        return repo.lookup_tag(as_of)
    except Exception as exc:  # noqa: BLE001
        tags = sorted(repo.list_tags())
        raise QueryError(f"bad as_of {as_of!r}: neither a date (YYYY-MM-DD) nor a tag of the {path.stem} archive "
                         f"(tags: {', '.join(tags) or 'none'})") from exc


class _Snapshot:
    """One snapshot's groups, each loaded (and sorted by init) the first time it is asked for."""

    def __init__(self, repo: icechunk.Repository, snapshot_id: str):
        self.id = snapshot_id
        self.store = repo.readonly_session(snapshot_id=snapshot_id).store
        root = zarr.open_group(self.store, mode="r")
        groups = {d: sorted(m for m, _ in g.groups()) for d, g in root.groups()}
        self.monitored = {kind: groups.pop(group, []) for kind, group in MONITORING_GROUPS.items()}
        self.groups = groups
        self._data: dict[str, xr.Dataset] = {}
        self._lock = threading.Lock()

    def load(self, dataset: str, model: str) -> xr.Dataset:
        key = f"{dataset}/{model}"
        with self._lock:
            if key not in self._data:
                try:
                    ds = xr.open_zarr(self.store, group=key, consolidated=False)
                except Exception as exc:  # noqa: BLE001 - zarr and icechunk raise their own error types
                    raise damaged_archive(f"the archive's {key}", self.id, exc) from exc
                # index forecasts, outcomes, provenance and a map's lat/lon are small: in memory; maps stay lazy
                small = [n for n, v in ds.variables.items() if set(v.dims) <= {INIT, LEAD, MEMBER, CATEGORY}]
                ds = ds.assign({n: ds[n].load() for n in small if n not in ds.dims})
                ds = ds.assign_coords({n: ds[n].load() for n in ("lat", "lon") if n in ds.coords and n not in ds.dims})
                if INIT in ds.dims:
                    ds = ds.isel({INIT: np.argsort(ds[INIT].values, kind="stable")})
                ds = ds.assign({n: v.astype(object) for n, v in ds.data_vars.items() if v.dtype.kind == "T"})
                for var in ds.variables.values():  # shared by every query of this snapshot: never written to
                    if isinstance(var.data, np.ndarray):
                        var.data.flags.writeable = False
                self._data[key] = ds
            return self._data[key]


def _writable_session(repo, path) -> object:
    """A session on the archive's branch, once its snapshot reads: a damaged one is a one-line
    error before anything is written (a root that cannot be found is fine only in a repository
    without commits)."""
    session = repo.writable_session(BRANCH)
    try:
        zarr.open_group(session.store, mode="r")
    except zarr.errors.GroupNotFoundError as exc:
        try:
            fresh = len(list(itertools.islice(repo.ancestry(branch=BRANCH), 2))) == 1
        except Exception:  # noqa: BLE001 - icechunk raises its own error types
            fresh = False
        if not fresh:
            raise damaged_archive(path, session.snapshot_id, exc) from exc
    except Exception as exc:  # noqa: BLE001 - zarr and icechunk raise their own error types
        raise damaged_archive(path, session.snapshot_id, exc) from exc
    return session


def damaged_archive(where, snapshot: str, exc: Exception) -> DamagedError:
    why = re.sub(r" in store <[^>]*>", "", f"{type(exc).__name__}: {exc}".splitlines()[0])[:200]
    return DamagedError(f"{where}: the forecast archive cannot be read at its snapshot {snapshot} ({why}); restore it "
                      "from a backup (a tagged earlier state may still be read with --as-of TAG)")


_SNAPSHOTS: OrderedDict[tuple[str, str], _Snapshot] = OrderedDict()
_SNAPSHOTS_LOCK = threading.Lock()
_SNAPSHOTS_KEPT = 8


def _snapshot(store: StoreLike, problem: str, as_of: str | None = None) -> _Snapshot | None:
    path = Store.at(store).archive(problem)
    repo = _repository(path)
    if repo is None:
        return None
    sid = _snapshot_id(repo, path, as_of)
    key = (str(path), sid)
    with _SNAPSHOTS_LOCK:
        snap = _SNAPSHOTS.get(key)
        if snap is not None:
            _SNAPSHOTS.move_to_end(key)
            return snap
    try:
        snap = _Snapshot(repo, sid)
    except Exception as exc:  # noqa: BLE001 - zarr and icechunk raise their own error types
        raise damaged_archive(path, sid, exc) from exc
    with _SNAPSHOTS_LOCK:
        _SNAPSHOTS[key] = snap
        while len(_SNAPSHOTS) > _SNAPSHOTS_KEPT:
            _SNAPSHOTS.popitem(last=False)
    return snap


# --------------------------------------------------------------------------- writing

def _strings(values, n: int) -> np.ndarray:
    if isinstance(values, (np.ndarray, pd.Index, pd.Series, xr.DataArray)):
        values = np.asarray(values)
        if np.issubdtype(values.dtype, np.datetime64):  # months, as everywhere else in provenance
            values = pd.DatetimeIndex(values).strftime("%Y-%m").values
        out = values.astype(str).astype(object)
        if out.shape != (n,):
            raise StoreError(f"provenance has {out.size} values for {n} inits")
        return out
    text = values if isinstance(values, str) else ("" if values is None else json.dumps(_plain(values)))
    return np.array([text] * n, dtype=object)


def _plain(v):
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    return str(v)


def provenance_variables(provenance: dict, inits: pd.DatetimeIndex) -> dict[str, xr.Variable]:
    """``PROVENANCE`` as string variables along ``init_time``. A value is the same for every
    init, or an array with one value per init (e.g. each hindcast's training cut-off). Keys
    outside ``PROVENANCE`` go into ``details`` (JSON)."""
    n = len(inits)
    prov = dict(provenance)
    details = {k: _plain(prov.pop(k)) for k in list(prov) if k not in PROVENANCE}
    if isinstance(prov.get("details"), dict):
        details = {**_plain(prov.pop("details")), **details}
    if details:
        prov["details"] = json.dumps(details, sort_keys=True)
    prov["kind"] = prov.get("kind") or "forecast"
    for k in np.unique(_strings(prov["kind"], n)):
        if k not in KINDS:
            raise StoreError(f"provenance kind {k!r} is not one of {', '.join(KINDS)}")
    prov.setdefault("code_version", code_version())
    prov.setdefault("written_at", _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    return {f"prov_{name}": xr.Variable((INIT,), _strings(prov.get(name, ""), n), {"long_name": meaning})
            for name, meaning in PROVENANCE.items()}


def _cf(ds: xr.Dataset, problem: str, model: str, dataset: str, units: str) -> xr.Dataset:
    """CF-1.11 attributes on every variable and the group."""
    ds[INIT].attrs.update(standard_name="forecast_reference_time",
                          long_name="forecast initialisation: the last month whose observations were used")
    ds[LEAD].attrs.update(standard_name="forecast_period", long_name="lead time", units="months")
    ds[VALID].attrs.update(standard_name="time", long_name="month the forecast is valid for")
    if MEMBER in ds.dims:
        ds[MEMBER].attrs.update(standard_name="realization", long_name="ensemble member")
    ds["forecast"].attrs = {"long_name": f"{problem} forecast by {model}", "units": units}
    if PROBABILITY in ds:
        ds[PROBABILITY].attrs = {"long_name": "forecast probability of each category (El Nino: the 3-month season "
                                              "centred on valid_time; rainfall: terciles of the month; sea ice: a new "
                                              "record low / below last year / at or above last year for the month)",
                                 "units": "1"}
    if CATEGORY in ds.coords:
        ds[CATEGORY].attrs = {"long_name": "forecast category"}
    if SEASON_FORECAST in ds:
        months = ds[SEASON_FORECAST].attrs.get("season", "season")  # e.g. Nov-Mar: the season that follows the init
        ds[SEASON_FORECAST].attrs = {"long_name": f"forecast {months} total (the season that follows the init)",
                                     "units": units, "season": months}
        ds[SEASON_PROBABILITY].attrs = {"long_name": f"forecast probability of each tercile of the {months} total",
                                        "units": "1"}
    ds[OBSERVED].attrs = {"long_name": f"observed {problem} target at valid_time, in the forecast's anomaly "
                                           "convention (empty while not yet observed)", "units": units}
    ds.attrs = {**GLOBAL_ATTRS, "title": f"climate-ml {problem} forecasts by {model} on {dataset}",
                "source": f"climate-ml {__version__}, model {model}", "problem": problem, "model": model,
                "dataset": dataset, "featureType": "timeSeries" if _is_index(ds) else ""}
    if not ds.attrs["featureType"]:
        del ds.attrs["featureType"]
    return ds


def _is_index(ds: xr.Dataset) -> bool:
    return set(ds["forecast"].dims) <= {INIT, LEAD, MEMBER}


def _encoding(ds: xr.Dataset) -> dict:
    """Chunks along init_time of about ``_CHUNK_BYTES``, whole along the other dims."""
    enc = {}
    for name, var in ds.variables.items():
        if INIT in var.dims and name != INIT:
            per_init = max(1, var.dtype.itemsize if var.dtype != object else 64) * int(
                np.prod([ds.sizes[d] for d in var.dims if d != INIT]))
            chunk = int(np.clip(_CHUNK_BYTES // per_init, 1, _INITS_PER_CHUNK))
            enc[name] = {"chunks": tuple(chunk if d == INIT else ds.sizes[d] for d in var.dims)}
    return enc


def _same(a: xr.DataArray, b: xr.DataArray) -> bool:
    return bool(np.allclose(a.values, b.values, equal_nan=True, atol=1e-9))


def write_forecast(
    store: StoreLike, problem: str, model: str, forecast: xr.DataArray, provenance: dict, replace: bool = False,
    dataset: str | None = None, observed: xr.DataArray | None = None, probabilities: xr.DataArray | None = None,
    season: xr.Dataset | None = None,
) -> str:
    """Write ``forecast(init_time, lead[, member][, grid])`` into the archive under its data set
    (``dataset``, else ``provenance['dataset']``, else the problem's default) in one commit, with
    its provenance per init and, optionally, the ``observed`` outcome (init_time, lead) and
    category ``probabilities`` (init_time, lead, category) and the ``season`` outlook
    (``season_forecast(init_time)``, ``season_probability(init_time, category)``: rainfall's
    November-March total). Returns "created", "updated" or "unchanged"."""
    from climate_ml.problems import get_problem

    validate_forecast(forecast)
    dataset = dataset or provenance.get("dataset") or default_dataset(problem)
    dataset, model, group = _group(problem, model, dataset)
    inits = pd.DatetimeIndex(forecast[INIT].values)
    if inits.has_duplicates:
        raise StoreError(f"{model}: the forecast has init {inits[inits.duplicated()][0]:%Y-%m} twice")
    # a map keeps its grid's own coordinates (2-D lat/lon of a projected grid): what a region box reads
    grid = {c for c in forecast.coords if c not in forecast.dims and forecast[c].dims
            and not {INIT, LEAD, MEMBER} & set(forecast[c].dims)}
    new = forecast.drop_vars([c for c in forecast.coords if c not in forecast.dims and c not in grid]
                             ).rename("forecast").to_dataset()
    shape = new["forecast"].isel({d: 0 for d in new["forecast"].dims if d not in (INIT, LEAD)}, drop=True)
    new[OBSERVED] = (xr.full_like(shape, np.nan, dtype=float) if observed is None else  # filled as outcomes arrive
                     observed.drop_vars([c for c in observed.coords if c not in observed.dims]).reindex_like(shape))
    if probabilities is not None:
        new[PROBABILITY] = probabilities.drop_vars([c for c in probabilities.coords if c not in probabilities.dims]
                                                   ).reindex({INIT: new[INIT].values, LEAD: new[LEAD].values})
        new = new.assign_coords({CATEGORY: new[CATEGORY].astype(object)})
    if season is not None:
        if PROBABILITY in new and [str(c) for c in season[CATEGORY].values] != [str(c) for c in new[CATEGORY].values]:
            raise StoreError(f"{model}: season categories {list(season[CATEGORY].values)} differ from the monthly ones")
        new = new.assign({v: season[v].reindex({INIT: new[INIT].values}) for v in (SEASON_FORECAST, SEASON_PROBABILITY)})
        new = new.assign_coords({CATEGORY: new[CATEGORY].astype(object)})
    new = new.assign(provenance_variables({**provenance, "dataset": dataset}, inits))
    units = forecast.attrs.get("units") or get_problem(problem).target_units  # maps say their own ("1")
    new = _cf(add_valid_time(new), problem, model, dataset, units)
    path = Store.at(store).archive(problem)
    with Store.at(store).locked(f"archive-{check_name(problem, 'problem')}"):
        repo = _repository(path, create=True)
        session = _writable_session(repo, path)
        try:
            old = xr.open_zarr(session.store, group=group, consolidated=False)
        except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError):
            old = None
        if old is None:
            new.to_zarr(session.store, group=group, mode="w", consolidated=False, encoding=_encoding(new))
            action, fresh, replaced = "created", inits, []
        else:
            first_time = [v for v in OPTIONAL if v in new and v not in old]
            if first_time:  # the group's first probabilities or season outlook: empty for the inits before
                empty = {}
                for v in first_time:
                    one = new[v].isel({INIT: 0}, drop=True)
                    one = xr.full_like(one.drop_vars([c for c in one.coords if c not in one.dims]), np.nan)
                    one = one.expand_dims({INIT: old[INIT].values}).transpose(*new[v].dims)
                    empty[v] = (one.reindex({LEAD: old[LEAD].values}) if LEAD in one.dims else one).assign_attrs(new[v].attrs)
                xr.Dataset(empty).to_zarr(session.store, group=group, mode="a", consolidated=False)
                old = xr.open_zarr(session.store, group=group, consolidated=False)
            new = _conform(new, old, group)
            old_inits = pd.DatetimeIndex(old[INIT].values)
            common = inits.intersection(old_inits)
            replaced = []
            if len(common):
                a = old["forecast"].sel({INIT: common}).load()
                b = new["forecast"].sel({INIT: common})
                replaced = [t for t in common if not _same(a.sel({INIT: t}), b.sel({INIT: t}))]
                if replaced and not replace:
                    raise StoreError(f"{path.name}/{group}: a different {model} forecast for init {replaced[0]:%Y-%m} "
                                     "is archived; pass replace=True (--replace) to overwrite it")
            fresh = inits.difference(old_inits)
            if not len(fresh) and not replaced:
                return "unchanged"
            if len(fresh):
                new.sel({INIT: fresh}).to_zarr(session.store, group=group, append_dim=INIT, consolidated=False)
            for t in replaced:
                part = new.sel({INIT: [t]})
                part = part.drop_vars([v for v in part.variables if INIT not in part[v].dims and v not in part.dims])
                part.to_zarr(session.store, group=group, region="auto", consolidated=False)
            action = "updated"
        kinds = sorted(set(new["prov_kind"].values.tolist()))
        span = f"{inits.min():%Y-%m}..{inits.max():%Y-%m}"
        message = (f"{'/'.join(kinds)} {model} on {dataset}: {len(fresh)} new init(s)"
                   + (f", {len(replaced)} replaced" if replaced else "") + f" within {span}")
        metadata = {"problem": problem, "model": model, "dataset": dataset, "action": action,
                    "inits_added": [f"{t:%Y-%m}" for t in fresh][:1200],
                    "inits_replaced": [f"{t:%Y-%m}" for t in replaced],
                    **{k: sorted(set(new[f"prov_{k}"].values.tolist()))[:50]
                       for k in ("kind", "model_sha256", "code_version", "dataset_sha256", "train_end")}}
        _commit(session, path, message, metadata)
    return action


def _conform(new: xr.Dataset, old: xr.Dataset, group: str) -> xr.Dataset:
    """``new`` on the archived group's leads and members, or a clear refusal."""
    if set(new["forecast"].dims) != set(old["forecast"].dims):
        raise StoreError(f"{group}: the archive holds forecasts over {tuple(old['forecast'].dims)}, "
                         f"this one is over {tuple(new['forecast'].dims)}")
    for d in set(new["forecast"].dims) - {INIT, LEAD, MEMBER}:
        if new.sizes[d] != old.sizes[d] or not np.array_equal(new[d].values, old[d].values):
            raise StoreError(f"{group}: the forecast's {d!r} grid differs from the archived one")
    extra = sorted(set(new[LEAD].values.tolist()) - set(old[LEAD].values.tolist()))
    if extra:
        raise StoreError(f"{group}: lead {extra[0]} is not among the archived leads "
                         f"{int(old[LEAD].min())}..{int(old[LEAD].max())}")
    if MEMBER in old.dims and not np.array_equal(new[MEMBER].values, old[MEMBER].values):
        raise StoreError(f"{group}: {new.sizes[MEMBER]} members, the archive holds {old.sizes[MEMBER]}")
    if CATEGORY in old.dims:
        cats = [str(c) for c in old[CATEGORY].values]
        if CATEGORY in new.dims and [str(c) for c in new[CATEGORY].values] != cats:
            raise StoreError(f"{group}: categories {list(new[CATEGORY].values)}, the archive holds {cats}")
    for v in OPTIONAL:  # a forecast without probabilities (or a season outlook) in a group that has some
        if v in old and v not in new:
            dims = old[v].dims
            sizes = {**{d: old.sizes[d] for d in dims}, INIT: new.sizes[INIT], **({LEAD: new.sizes[LEAD]} if LEAD in dims else {})}
            new = new.assign({v: xr.DataArray(np.full([sizes[d] for d in dims], np.nan), dims=dims, attrs=old[v].attrs)})
            if CATEGORY in dims:
                new = new.assign_coords({CATEGORY: np.array([str(c) for c in old[CATEGORY].values], dtype=object)})
    return add_valid_time(new.drop_vars(VALID).reindex({LEAD: old[LEAD].values}))


def write_observed(store: StoreLike, problem: str, observed: xr.DataArray | None, dataset: str | None = None,
                   maps: xr.DataArray | None = None) -> int:
    """Record outcomes that have arrived: ``observed(init_time, lead)`` (in the forecasts'
    convention) fills the still-empty ``observed`` values of every index model archived on
    ``dataset``, and ``maps(time, <grid>)`` (the observed fields) those of every map model at
    their valid months, in one commit. A value already recorded is never changed. Returns the
    values filled."""
    dataset, _, _ = _group(problem, "any", dataset)
    path = Store.at(store).archive(problem)
    repo = _repository(path)
    if repo is None:
        return 0
    filled = 0
    with Store.at(store).locked(f"archive-{check_name(problem, 'problem')}"):
        session = _writable_session(repo, path)
        root_group = zarr.open_group(session.store, mode="r")
        models = sorted(m for m, _ in root_group[dataset].groups()) if dataset in dict(root_group.groups()) else []
        for model in models:
            group = f"{dataset}/{model}"
            old = xr.open_zarr(session.store, group=group, consolidated=False)
            have = old[OBSERVED].load()
            if set(have.dims) == {INIT, LEAD}:
                if observed is None:
                    continue
                new = observed.reindex({INIT: old[INIT].values, LEAD: old[LEAD].values})
                new = new.drop_vars([c for c in new.coords if c not in new.dims]).transpose(*have.dims)
            else:  # maps: the observed field at each (init, lead)'s valid month
                if maps is None:
                    continue
                grid = [d for d in have.dims if d not in (INIT, LEAD)]
                valid = add_months(pd.DatetimeIndex(old[INIT].values), old[LEAD].values).ravel()
                seen = maps.transpose(TIME, *grid).reindex({TIME: valid}).values
                new = xr.DataArray(seen.reshape(have.shape[0], have.shape[1], *seen.shape[1:]).astype(have.dtype),
                                   dims=(INIT, LEAD, *grid)).transpose(*have.dims)
                new = new.assign_coords({d: have[d].values for d in have.dims})
            fill = have.isnull() & new.notnull()
            rows = np.flatnonzero(fill.any([d for d in fill.dims if d != INIT]).values)
            if not len(rows):
                continue
            merged = have.where(~fill, new)
            part = merged.isel({INIT: slice(rows[0], rows[-1] + 1)}).to_dataset(name=OBSERVED)
            part.drop_vars([c for c in part.coords if c != INIT]).to_zarr(
                session.store, group=group, region={INIT: slice(int(rows[0]), int(rows[-1]) + 1)}, consolidated=False)
            filled += int(fill.sum())
        if filled:
            _commit(session, path, f"observed outcomes on {dataset}: {filled} value(s)",
                    {"problem": problem, "dataset": dataset, "action": "observed", "filled": filled})
    return filled


MONITORING = "_monitoring"  # root group of the running skill; its leading "_" is never a data set name
# the running skill of live index forecasts, and that of live concentration maps (scored by IIEE)
MONITORING_GROUPS = {"index": MONITORING, "maps": f"{MONITORING}_maps"}


def _monitoring_group(kind: str) -> str:
    if kind not in MONITORING_GROUPS:
        raise QueryError(f"bad monitoring kind {kind!r} (known: {', '.join(MONITORING_GROUPS)})")
    return MONITORING_GROUPS[kind]


def write_monitoring(store: StoreLike, problem: str, dataset: str, skill: xr.Dataset, kind: str = "index") -> None:
    """Keep the latest running skill of the live forecasts (``verify.monitor_skill``; with
    ``kind="maps"`` that of the live concentration maps, ``verify.monitor_field_skill``) in the
    archive, one commit per update: its history is the archive's history."""
    group = _monitoring_group(kind)
    dataset, _, _ = _group(problem, "any", dataset)
    path = Store.at(store).archive(problem)
    with Store.at(store).locked(f"archive-{check_name(problem, 'problem')}"):
        repo = _repository(path, create=True)
        session = _writable_session(repo, path)
        out = skill.assign_coords({MODEL: skill[MODEL].astype(object)})  # text as variable-length UTF-8
        out.to_zarr(session.store, group=f"{group}/{dataset}", mode="w", consolidated=False)
        drift = int((skill["status"] == "drift").sum())
        what = "running skill" if kind == "index" else "running skill of maps"
        _commit(session, path, f"{what} on {dataset} through {skill.attrs.get('verified_through', '?')}: "
                f"{drift} (model, lead) drifting", {"problem": problem, "dataset": dataset, "action": "monitoring",
                                                    "kind": kind, "drift": drift})


def read_monitoring(store: StoreLike, problem: str, dataset: str | None = None, kind: str = "index") -> xr.Dataset | None:
    """The running skill last written for ``dataset`` (None if never), of index forecasts or
    (``kind="maps"``) of concentration maps."""
    group = _monitoring_group(kind)
    dataset, _, _ = _group(problem, "any", dataset)
    snap = _snapshot(store, problem)
    if snap is None or dataset not in snap.monitored[kind]:
        return None
    return snap.load(group, dataset)


def tag(store: StoreLike, problem: str, name: str) -> str:
    """Name the archive's current state (e.g. before a season's outcome is known); returns the snapshot id."""
    check_name(name, "tag")
    path = Store.at(store).archive(problem)
    repo = _repository(path)
    if repo is None:
        raise QueryError(f"no forecasts archived for problem {problem!r}")
    with Store.at(store).locked(f"archive-{check_name(problem, 'problem')}"):
        if name in repo.list_tags():
            raise StoreError(f"tag {name!r} already names a state of the {problem} archive")
        sid = repo.lookup_branch(BRANCH)
        repo.create_tag(name, sid)
    return sid


def history(store: StoreLike, problem: str) -> list[dict]:
    """Every commit of the problem's archive, newest first: id, time, message, metadata, tags."""
    path = Store.at(store).archive(problem)
    repo = _repository(path)
    if repo is None:
        raise QueryError(f"no forecasts archived for problem {problem!r}")
    tags: dict[str, list[str]] = {}
    try:
        for t in repo.list_tags():
            tags.setdefault(repo.lookup_tag(t), []).append(t)
        return [{"id": s.id, "written_at": s.written_at.isoformat(), "message": s.message,
                 "metadata": s.metadata, "tags": sorted(tags.get(s.id, []))}
                for s in repo.ancestry(branch=BRANCH)]
    except Exception as exc:  # noqa: BLE001 - icechunk raises its own error types
        raise damaged_archive(path, repo.lookup_branch(BRANCH), exc) from exc


# --------------------------------------------------------------------------- reading

def snapshot_id(store: StoreLike, problem: str) -> str | None:
    """The id of the archive's current state (None when nothing is archived): a cache key."""
    repo = _repository(Store.at(store).archive(problem))
    return repo.lookup_branch(BRANCH) if repo is not None else None


def list_datasets(store: StoreLike, problem: str, as_of: str | None = None) -> list[str]:
    """The data sets a problem has archived forecasts for."""
    snap = _snapshot(store, problem, as_of)
    return sorted(snap.groups) if snap else []


def list_models(store: StoreLike, problem: str, dataset: str | None = None, as_of: str | None = None,
                kind: str | None = None) -> list[str]:
    """The models archived on a data set; ``kind`` "index" or "maps" keeps only those."""
    snap = _snapshot(store, problem, as_of)
    dataset = dataset or default_dataset(problem)
    models = list(snap.groups.get(dataset, [])) if snap else []
    if kind is None:
        return models
    return [m for m in models if ("index" if _is_index(snap.load(dataset, m)) else "maps") == kind]


def contents(store: StoreLike, problem: str, dataset: str | None = None) -> dict:
    """What the archive holds on one data set: per model the inits, their span and kinds, and
    when it was last written; the archived data sets; the last commits."""
    dataset, _, _ = _group(problem, "any", dataset)
    snap = _snapshot(store, problem)
    if snap is None:
        return {"problem": problem, "dataset": dataset, "datasets": [], "models": [], "history": []}
    models = []
    for m in snap.groups.get(dataset, []):
        ds = snap.load(dataset, m)
        inits = pd.DatetimeIndex(ds[INIT].values)
        kinds, counts = np.unique(ds["prov_kind"].values.astype(str), return_counts=True)
        models.append({"model": m, "n_inits": len(inits), "first": f"{inits.min():%Y-%m}", "last": f"{inits.max():%Y-%m}",
                       "kinds": {str(k): int(c) for k, c in zip(kinds, counts, strict=True)},
                       "observed": int(ds[OBSERVED].notnull().any([d for d in ds[OBSERVED].dims if d != INIT]).sum()),
                       "last_written": max(ds["prov_written_at"].values.astype(str))})
    return {"problem": problem, "dataset": dataset, "datasets": sorted(snap.groups), "snapshot": snap.id,
            "models": models, "history": history(store, problem)[:5]}


def latest_forecasts(store: StoreLike, problem: str, dataset: str | None = None, history_months: int = 24) -> dict:
    """What a plume is drawn from: every model's live forecast (kind "forecast") from the latest
    init any model was issued at, by lead (the ensemble mean, and the members where there are
    some), and the observed target of the ``history_months`` before it (the lead-1 outcomes
    recorded in the archive, averaged over the models that recorded them)."""
    from climate_ml.problems import get_problem

    prob = get_problem(problem)
    dataset, _, _ = _group(problem, "any", dataset)
    out = {"problem": problem, "dataset": dataset, "units": prob.target_units, "init": None, "models": [],
           "observed": [], "thresholds": list(getattr(prob, "thresholds", []))}
    snap = _snapshot(store, problem)
    groups = {m: snap.load(dataset, m) for m in snap.groups.get(dataset, [])} if snap else {}
    groups = {m: ds for m, ds in groups.items() if _is_index(ds)}  # maps are drawn by latest_verified_map
    live = {m: ds.isel({INIT: ds["prov_kind"].values.astype(str) == "forecast"}) for m, ds in groups.items()}
    issued = [pd.Timestamp(ds[INIT].values[-1]) for ds in live.values() if ds.sizes[INIT]]
    if not issued:
        return out
    init = max(issued)
    out["init"] = f"{init:%Y-%m}"
    for m, ds in live.items():
        if init not in ds.indexes[INIT]:
            continue
        fc = ds["forecast"].sel({INIT: init})
        row = {"model": m, "leads": [int(v) for v in ds[LEAD].values],
               "valid": [str(v)[:7] for v in ds[VALID].sel({INIT: init}).values],
               "mean": [None if np.isnan(v) else round(float(v), 4) for v in (fc.mean(MEMBER) if MEMBER in fc.dims else fc).values]}
        if PROBABILITY in ds and bool(ds[PROBABILITY].sel({INIT: init}).notnull().any()):
            p = ds[PROBABILITY].sel({INIT: init})
            row["probabilities"] = {str(int(k)): {str(c): round(float(p.sel({LEAD: k, CATEGORY: c})), 4)
                                                  for c in ds[CATEGORY].values}
                                    for k in ds[LEAD].values if bool(p.sel({LEAD: k}).notnull().all())}
        if MEMBER in fc.dims:
            row["members"] = [[None if np.isnan(v) else round(float(v), 4) for v in fc.sel({MEMBER: k}).values]
                              for k in fc[MEMBER].values]
        out["models"].append(row)
    first = init - pd.DateOffset(months=history_months)
    seen = [ds[OBSERVED].sel({LEAD: 1}).to_series().dropna() for ds in groups.values() if 1 in ds.indexes[LEAD]]
    if seen:
        obs = pd.concat(seen).groupby(level=0).mean()
        obs.index = pd.DatetimeIndex(obs.index) + pd.DateOffset(months=1)  # the valid month of a lead-1 outcome
        obs = obs[(obs.index > first) & (obs.index <= init)]
        out["observed"] = [{"valid": f"{t:%Y-%m}", "value": round(float(v), 4)} for t, v in obs.items()]
    return out


def season_outlooks(store: StoreLike, problem: str, dataset: str | None = None) -> list[dict]:
    """Each model's latest archived season outlook (e.g. rainfall's November-March total): init,
    total and tercile probabilities, newest inits first."""
    dataset, _, _ = _group(problem, "any", dataset)
    snap = _snapshot(store, problem)
    out = []
    for m in snap.groups.get(dataset, []) if snap else []:
        ds = snap.load(dataset, m)
        if SEASON_FORECAST not in ds:
            continue
        have = np.flatnonzero(np.isfinite(ds[SEASON_FORECAST].values))
        if not len(have):
            continue
        one = ds.isel({INIT: int(have[-1])})
        out.append({"model": m, "init": f"{pd.Timestamp(one[INIT].values):%Y-%m}",
                    "forecast": round(float(one[SEASON_FORECAST]), 1),
                    "probability": {str(c): round(float(one[SEASON_PROBABILITY].sel({CATEGORY: c})), 3)
                                    for c in ds[CATEGORY].values}})
    return sorted(out, key=lambda r: (r["init"], r["model"]), reverse=True)


def latest_verified_map(store: StoreLike, problem: str, dataset: str | None = None, model: str | None = None,
                        lead: int = 1) -> xr.Dataset:
    """A field model's maps from its latest init whose lead-``lead`` outcome is observed: the
    forecast (``member``, grid) and the observed map at the valid month, with the grid's lat/lon;
    attributes model, init, valid, lead. ``model`` defaults to the first field model archived."""
    dataset, _, _ = _group(problem, model or "any", dataset)
    snap = _snapshot(store, problem)
    names = snap.groups.get(dataset, []) if snap else []
    fields = [m for m in names if not _is_index(snap.load(dataset, m))]
    hint = f"; archive some with `climate-ml backtest {problem} MAPS.py --archive`"
    if model is not None and model not in fields:
        raise QueryError(f"no concentration maps from model {model!r} for {problem} on {dataset}"
                         + (f" (models with maps: {', '.join(fields)})" if fields else hint))
    if not fields:
        raise QueryError(f"no concentration maps archived for {problem} on {dataset}{hint}")
    model = model or fields[0]
    ds = snap.load(dataset, model)
    if lead not in ds.indexes[LEAD]:
        raise QueryError(f"lead {lead} not archived (leads: {int(ds[LEAD].min())}..{int(ds[LEAD].max())})")
    observed = ds[OBSERVED].sel({LEAD: lead})
    latest = next((k for k in range(ds.sizes[INIT] - 1, -1, -1)  # newest first: reads a map or two, not all
                   if bool(observed.isel({INIT: k}).notnull().any())), None)
    if latest is None:
        raise QueryError(f"no map of {model!r} has an observed outcome at lead {lead} yet")
    one = ds.isel({INIT: latest}).sel({LEAD: lead})
    init = pd.Timestamp(one[INIT].values)
    out = xr.Dataset({"forecast": one["forecast"].load(), OBSERVED: one[OBSERVED].load()})
    out = out.drop_vars([c for c in out.coords if c not in out.dims and c not in ("lat", "lon")])
    out.attrs = {"problem": problem, "dataset": dataset, "model": model, "init": f"{init:%Y-%m}", "lead": int(lead),
                 "valid": f"{init + pd.DateOffset(months=int(lead)):%Y-%m}", "units": ds["forecast"].attrs.get("units", "")}
    return out


def parse_init_range(text: str | None, what: str = "init") -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    """``YYYY-MM``, ``YYYY`` (the whole year), ``A:B`` with A and B either form, ``:B`` or ``A:``;
    errors name the parameter as ``what`` (e.g. ``valid``, ``--init``)."""
    if not text:
        return None, None
    parts = text.split(":")
    if len(parts) > 2:
        raise QueryError(f"bad {what} {text!r}: expected YYYY-MM, YYYY or a range A:B of them")
    if len(parts) == 1:
        parts = [parts[0], parts[0]]
    out = []
    for k, p in enumerate(parts):
        if p == "":
            out.append(None)
            continue
        if not re.fullmatch(r"\d{4}(-\d{2})?", p) or (len(p) == 7 and not 1 <= int(p[5:]) <= 12):
            raise QueryError(f"bad {what} {text!r}: {p!r} is not YYYY-MM or YYYY")
        if not MIN_YEAR <= int(p[:4]) <= MAX_YEAR:
            raise QueryError(f"bad {what} {text!r}: year {p[:4]} is outside {MIN_YEAR}..{MAX_YEAR}")
        if len(p) == 4:  # a year: from its January, or up to its December
            p = f"{p}-01" if k == 0 else f"{p}-12"
        out.append(pd.Timestamp(p + "-01"))
    if out[0] is not None and out[1] is not None and out[1] < out[0]:
        raise QueryError(f"bad {what} {text!r}: end before start")
    return out[0], out[1]


def parse_leads(lead, what: str = "lead") -> list[int] | None:
    """None (every lead), an int, or a comma list such as ``1,3,6``; errors name ``what``."""
    if lead is None or lead == "":
        return None
    items = [lead] if isinstance(lead, int) else (lead if isinstance(lead, (list, tuple)) else str(lead).split(","))
    out = []
    for item in items:
        try:
            k = int(str(item).strip())
        except ValueError as exc:
            raise QueryError(f"bad {what} {lead!r}: expected whole months such as 3 or 1,3,6") from exc
        if k < 1:
            raise QueryError(f"bad {what} {k}: leads are positive months")
        out.append(k)
    return sorted(set(out))


def _init_slice(index: pd.DatetimeIndex, start, end) -> slice:
    lo = 0 if start is None else int(index.searchsorted(start, "left"))
    hi = len(index) if end is None else int(index.searchsorted(end, "right"))
    return slice(lo, hi)


def query(
    store: StoreLike,
    problem: str,
    model: str | None = None,
    init: str | None = None,
    lead=None,
    dataset: str | None = None,
    valid: str | None = None,
    as_of: str | None = None,
    provenance: bool = True,
    box: str | None = None,
    kind: str | None = None,
) -> xr.Dataset:
    """Archived forecasts on one data set (default: the problem's) as a Dataset over
    (model, init_time, lead[, member]) with valid_time, the observed outcome where known and each
    init's provenance. ``init`` and ``valid`` are month ranges (``parse_init_range``), ``lead`` one
    or several leads, ``as_of`` a UTC date/time or a tag: the archive as it stood then.
    ``provenance=False`` leaves the provenance variables out (tables do not show them). ``box``
    (maps only): a region name or ``lat_min,lat_max,lon_min,lon_max``; the maps are cut to the
    rows and columns that touch it and cells outside it are NaN. ``kind`` "index" or "maps"
    keeps only the models of that kind (a data set may hold both)."""
    from climate_ml.problems import get_problem
    from climate_ml.regions import parse_box

    region = parse_box(box) if box is not None else None

    prob = get_problem(problem)
    start, end = parse_init_range(init)
    vstart, vend = parse_init_range(valid)
    leads = parse_leads(lead)
    dataset, _, _ = _group(problem, model or "any", dataset)
    snap = _snapshot(store, problem, as_of)
    models = snap.groups.get(dataset, []) if snap else []
    if kind is not None:
        models = [m for m in models if ("index" if _is_index(snap.load(dataset, m)) else "maps") == kind]
    if not models:
        others = sorted(snap.groups) if snap else []
        raise QueryError(f"no forecasts archived for problem {problem!r} on dataset {dataset!r}"
                         + (f" (archived data sets: {', '.join(others)}; give --dataset)" if others else ""))
    if model is not None:
        if model not in models:
            raise QueryError(f"no forecasts from model {model!r} for {problem!r} (archived: {', '.join(models)})")
        models = [model]
    parts = []
    for m in models:
        ds = snap.load(dataset, m)
        if not provenance:
            ds = ds[["forecast", OBSERVED]]
        ds = ds.isel({INIT: _init_slice(ds.indexes[INIT], start, end)})
        if leads is not None:
            missing = [k for k in leads if k not in ds.indexes[LEAD]]
            if missing:
                raise QueryError(f"lead {missing[0]} not archived (leads: {int(ds[LEAD].min())}..{int(ds[LEAD].max())})")
            ds = ds.sel({LEAD: leads})
        if vstart is not None or vend is not None:
            vt = ds[VALID]
            keep = (vt >= (vstart or vt.min())) & (vt <= (vend or vt.max()))
            ds = ds.isel({INIT: keep.any(LEAD).values})
            ds = ds.assign({v: ds[v].where(keep) for v in ("forecast", OBSERVED) if v in ds})
        if region is not None:
            ds = _in_box(ds, region, m)
        parts.append(ds)
    kinds = {m: "index" if _is_index(p) else "maps" for p, m in zip(parts, models, strict=True)}
    if len(set(kinds.values())) > 1:
        raise QueryError(f"{problem} on {dataset} holds index forecasts ({', '.join(m for m, k in kinds.items() if k == 'index')})"
                         f" and maps ({', '.join(m for m, k in kinds.items() if k == 'maps')}); give --model")
    units = parts[0]["forecast"].attrs.get("units", prob.target_units)
    if len(parts) == 1:
        out = parts[0].expand_dims({MODEL: models})  # coordinates (valid_time) are not expanded
    else:
        out = xr.concat([p.drop_vars(VALID).expand_dims({MODEL: [m]}) for p, m in zip(parts, models, strict=True)],
                        dim=MODEL, join="outer", combine_attrs="drop", coords="minimal")
        out = add_valid_time(out)
        for v in out.variables:
            out[v].attrs = next((dict(p[v].attrs) for p in parts if v in p.variables and p[v].attrs), {})
    out["forecast"].attrs.update(units=units, long_name=f"{problem} forecast")
    out[MODEL].attrs = {"long_name": "forecasting model (file name in the archive)"}
    out.attrs = {**GLOBAL_ATTRS, "title": f"climate-ml {problem} forecasts on {dataset}", "problem": problem,
                 "dataset": dataset, "snapshot": snap.id,
                 "source": f"climate-ml {__version__} forecast archive",
                 "history": f"{_dt.datetime.now(_dt.UTC):%Y-%m-%dT%H:%M:%SZ} queried from archive snapshot {snap.id}"}
    return out


def _in_box(ds: xr.Dataset, region, model: str) -> xr.Dataset:
    """The maps of ``ds`` cut to the bounding rows / columns of ``region``, NaN outside it."""
    if _is_index(ds):
        raise QueryError(f"a box selects part of a map; {model!r} forecasts an index (leave the box out)")
    if "lat" not in ds.coords or "lon" not in ds.coords:
        raise QueryError(f"{model!r}: its archived maps carry no lat/lon coordinates, so a box cannot select them")
    inside = region.mask(ds["lat"], ds["lon"] % 360.0)
    grid = list(inside.dims)
    if not bool(inside.any()):
        raise QueryError(f"box {region.name!r} contains no cell of {model!r}'s grid")
    cut = {d: np.flatnonzero(inside.any([e for e in grid if e != d]).values) for d in grid}
    cut = {d: slice(int(i[0]), int(i[-1]) + 1) for d, i in cut.items()}
    ds, inside = ds.isel(cut), inside.isel(cut)
    return ds.assign({v: ds[v].where(inside) for v in ("forecast", OBSERVED) if v in ds and set(grid) <= set(ds[v].dims)})


def to_records(ds: xr.Dataset) -> pd.DataFrame:
    """One row per (model, init, lead[, member]) with its valid month, the forecast and, where
    the archive knows it, the observed outcome."""
    fc = ds["forecast"]
    keys = [d for d in (MODEL, INIT, LEAD, MEMBER) if d in fc.dims]
    fc = fc.transpose(*keys, ...)
    if fc.ndim != len(keys):
        raise QueryError("field forecasts have no table form: ask for NetCDF (--format netcdf, or format=netcdf over HTTP)")
    at = np.unravel_index(np.arange(fc.size), fc.shape)
    cols = {d: ds[d].values[at[k]] for k, d in enumerate(keys)}
    months = ds[INIT].values.astype("datetime64[M]")[at[keys.index(INIT)]]
    cols[INIT] = np.datetime_as_string(months, unit="M")
    cols[VALID] = np.datetime_as_string(months + cols[LEAD].astype("timedelta64[M]"), unit="M")
    cols["forecast"] = fc.values.ravel()
    if OBSERVED in ds and bool(ds[OBSERVED].notnull().any()):
        cols[OBSERVED] = ds[OBSERVED].broadcast_like(fc).transpose(*keys).values.ravel()
    order = keys[:3] + [VALID] + keys[3:] + [c for c in ("forecast", OBSERVED) if c in cols]
    df = pd.DataFrame({c: cols[c] for c in order})
    return df[df["forecast"].notna()].reset_index(drop=True)  # rows in key order already: query sorts every dim


FORMATS = ("csv", "json", "netcdf", "climpred", "weatherbench2")


def _netcdf_ready(ds: xr.Dataset) -> xr.Dataset:
    """Strings as plain text (empty where missing), attributes as text or numbers."""
    out = ds.copy()
    for name, var in out.variables.items():
        if var.dtype.kind in ("O", "U", "T") and name != MODEL:
            out[name] = var.copy(data=np.where(pd.isna(var.values), "", var.values.astype(object)).astype(str))
    if MODEL in out.dims:  # CF: a coordinate variable is numeric; names are an auxiliary label
        out = out.rename_vars({MODEL: "model_name"})
        out["model_name"] = out["model_name"].astype(str).assign_attrs(long_name="forecasting model")
    for name in (INIT, VALID, "init", "time"):
        if name in out.variables and np.issubdtype(out[name].dtype, np.datetime64):
            out[name].attrs["units_metadata"] = "leap_seconds: none"
    out.attrs = {k: v if isinstance(v, (str, int, float)) else json.dumps(v) for k, v in out.attrs.items()}
    return out


def _to_netcdf(ds: xr.Dataset) -> bytes:
    with tempfile.TemporaryDirectory() as tmp, NETCDF_LOCK:
        path = Path(tmp) / "query.nc"
        ds.to_netcdf(path, format="NETCDF4")
        return path.read_bytes()


def export(ds: xr.Dataset, fmt: str) -> bytes:
    """Serialise a query result: csv, json, netcdf (CF-1.11), climpred (NetCDF a climpred
    ``HindcastEnsemble`` opens: one variable per model over init, lead[, member]) or
    weatherbench2 (NetCDF in WeatherBench 2's layout: time, prediction_timedelta as timedelta64,
    realization)."""
    if fmt == "csv":
        return to_records(ds).to_csv(index=False, float_format="%.4f").encode()
    if fmt == "json":  # NaN is not JSON: null
        return to_records(ds).to_json(orient="records", double_precision=4).encode()
    if fmt == "netcdf":
        return _to_netcdf(_netcdf_ready(ds))
    if fmt == "climpred":
        return _to_netcdf(_netcdf_ready(to_climpred(ds)))
    if fmt == "weatherbench2":
        return _to_netcdf(_netcdf_ready(to_weatherbench(ds)))
    raise QueryError(f"unknown format {fmt!r} ({', '.join(FORMATS)})")


def to_climpred(ds: xr.Dataset) -> xr.Dataset:
    """climpred's hindcast layout: ``init`` (datetime), ``lead`` (units months), ``member``;
    one data variable per model (climpred verifies every variable against the same-named
    observation, so each model is its own variable)."""
    fc = ds["forecast"]
    out = xr.Dataset({str(m): fc.sel({MODEL: m}, drop=True) for m in ds[MODEL].values})
    out = out.drop_vars(VALID, errors="ignore").rename({INIT: "init"})
    for var in out.data_vars.values():
        var.encoding.pop("coordinates", None)
    out["lead"].attrs = {"units": "months", "standard_name": "forecast_period", "long_name": "lead time"}
    out["init"].attrs = {"standard_name": "forecast_reference_time", "long_name": "forecast initialisation"}
    out.attrs = dict(ds.attrs)
    return out


def to_weatherbench(ds: xr.Dataset) -> xr.Dataset:
    """WeatherBench 2's forecast layout: ``time`` (init), ``prediction_timedelta``
    (timedelta64: the lead in months times the mean month, 30.44 days, since a timedelta cannot
    say "one month"; ``lead_months`` keeps the exact lead) and ``realization``."""
    out = ds[["forecast"]].drop_vars(VALID, errors="ignore")
    mean_month = np.timedelta64(int(30.436875 * 86400), "s")
    out = out.rename({INIT: "time", LEAD: "prediction_timedelta"})
    months = out["prediction_timedelta"].values
    out = out.assign_coords(prediction_timedelta=(months * mean_month).astype("timedelta64[ns]"),
                            lead_months=("prediction_timedelta", months, {"units": "months", "long_name": "lead time in months"}))
    out["prediction_timedelta"].attrs = {"standard_name": "forecast_period", "long_name": "lead time (mean months)"}
    out["prediction_timedelta"].encoding = {"units": "seconds", "dtype": "int64", "_FillValue": None}
    out["time"].attrs = {"long_name": "forecast initialisation time (WeatherBench 2 calls it time)"}
    out["forecast"].encoding.pop("coordinates", None)
    if MEMBER in out.dims:
        out = out.rename({MEMBER: "realization"})
    out.attrs = dict(ds.attrs)
    return out


def read_external_forecasts(path: Path, problem, column: str | None = None,
                            model: str | None = None) -> tuple[xr.DataArray, list[int]]:
    """Forecasts issued by another system: a CSV with columns ``init`` (or ``init_time``,
    YYYY-MM or a date), ``lead`` (months), optionally ``member``, and a value column (``column``,
    else the model name, else ``forecast``); or a NetCDF with such a variable over
    (init_time|init, lead[, member]). Checked against the problem's target definition.
    Returns the forecasts on the problem's leads and the leads dropped (beyond the problem's)."""
    path = Path(path)
    if not path.is_file():
        raise QueryError(f"{path}: file not found")
    if path.suffix.lower() in (".nc", ".nc4", ".netcdf"):
        try:
            with NETCDF_LOCK:
                ds = xr.load_dataset(path)
        except Exception as exc:
            raise QueryError(f"{path}: not a readable NetCDF file ({type(exc).__name__})") from exc
        ds = ds.rename({"init": INIT}) if "init" in ds.dims else ds
        name = column or (model if model in ds.data_vars else "forecast")
        if name not in ds.data_vars:
            raise QueryError(f"{path}: variable {name!r} not found (variables: {', '.join(map(str, ds.data_vars))})")
        da = ds[name]
        for dim in (INIT, LEAD):
            if dim not in da.dims:
                raise QueryError(f"{path}: variable {name!r} has no {dim!r} dimension")
        inits = pd.DatetimeIndex(da[INIT].values)
    else:
        try:
            df = pd.read_csv(path)
        except Exception as exc:
            raise QueryError(f"{path}: not a readable CSV file ({type(exc).__name__}: {exc})".splitlines()[0]) from exc
        init_col = "init" if "init" in df.columns else INIT
        for needed, label in ((init_col, "'init' (or 'init_time')"), (LEAD, "'lead'")):
            if needed not in df.columns:
                raise QueryError(f"{path}: missing column {label} (columns: {', '.join(df.columns)})")
        name = column or (model if model in df.columns else "forecast")
        if name not in df.columns:
            raise QueryError(f"{path}: no forecast column {name!r} (columns: {', '.join(df.columns)}); use --column")
        try:
            df[INIT] = pd.to_datetime(df[init_col].astype(str).str.slice(0, 7) + "-01", format="%Y-%m-%d")
        except ValueError as exc:
            raise QueryError(f"{path}: column {init_col!r} has values that are not YYYY-MM dates") from exc
        if not pd.api.types.is_integer_dtype(df[LEAD]):
            raise QueryError(f"{path}: column 'lead' must hold whole months")
        keys = [INIT, LEAD] + (["member"] if "member" in df.columns else [])
        dup = df.duplicated(keys)
        if dup.any():
            row = df[dup].iloc[0]
            raise QueryError(f"{path}: duplicate forecast for init {row[INIT]:%Y-%m} lead {row[LEAD]}")
        values = pd.to_numeric(df[name], errors="coerce")
        wrong = values.isna() & df[name].notna()
        if wrong.any():
            raise QueryError(f"{path}: column {name!r} holds {df[name][wrong].iloc[0]!r} on line "
                             f"{int(np.flatnonzero(wrong.values)[0]) + 2}, not a number (leave a missing forecast empty)")
        df[name] = values.astype(float)
        da = df.set_index(keys)[name].to_xarray()
        inits = pd.DatetimeIndex(da[INIT].values)
    if not (inits == inits.to_period("M").to_timestamp()).all():
        raise QueryError(f"{path}: init times must be months")
    leads = [int(v) for v in da[LEAD].values]
    if min(leads) < 1:
        raise QueryError(f"{path}: lead {min(leads)} is not a positive number of months")
    dropped = sorted(set(leads) - set(problem.leads))
    if len(dropped) == len(set(leads)):
        raise QueryError(f"{path}: none of the leads {leads[0]}..{leads[-1]} are leads of {problem.name}")
    da = da.sel({LEAD: [k for k in leads if k in problem.leads]})
    if np.isinf(da.values).any():
        raise QueryError(f"{path}: {name!r} holds infinite values (missing forecasts must be empty or NaN)")
    values = da.values[np.isfinite(da.values)]
    if values.size == 0:
        raise QueryError(f"{path}: no forecast values in {name!r}")
    lo, hi = getattr(problem, "plausible_range", (-np.inf, np.inf))
    if values.min() < lo or values.max() > hi:
        raise QueryError(
            f"{path}: values in {name!r} range {values.min():.2f}..{values.max():.2f} {problem.target_units}, outside "
            f"{lo}..{hi}: not the {problem.name} target ({problem.description})"
        )
    da = da.reindex({LEAD: list(problem.leads)}).transpose(INIT, LEAD, ...)
    return add_valid_time(da.rename("forecast").drop_vars([c for c in da.coords if c not in da.dims])), dropped


def import_forecasts(store: StoreLike, problem, path: Path, model: str, column: str | None = None,
                     note: str = "", replace: bool = False, dataset: str | None = None) -> tuple[xr.DataArray, str, list[int]]:
    """Check and archive forecasts made elsewhere, with their provenance, under ``dataset`` (the
    observations their target is defined on; default: the problem's default data set)."""
    from climate_ml.catalog import sha256_file

    fc, dropped = read_external_forecasts(path, problem, column, model)
    provenance = {
        "kind": "imported", "model_sha256": sha256_file(path), "dataset": dataset or problem.default_dataset,
        "details": {"source_file": str(Path(path).resolve()), "source_column": column or (model if model else "forecast"),
                    "dropped_leads": dropped, "target": problem.description, "note": note},
    }
    return fc, write_forecast(store, problem.name, model, fc, provenance, replace=replace), dropped


def imported_forecasts(store: StoreLike, problem: str, dataset: str | None = None) -> dict[str, xr.DataArray]:
    """The inits whose provenance says they were imported (ensemble mean if members), of one data
    set, or of every data set when ``dataset`` is None."""
    out = {}
    snap = _snapshot(store, problem)
    if snap is None:
        return out
    for d in [dataset] if dataset else sorted(snap.groups):
        for m in snap.groups.get(d, []):
            ds = snap.load(d, m)
            mine = ds["prov_kind"].values.astype(str) == "imported"
            if mine.any():
                fc = ds["forecast"].isel({INIT: mine})
                out[m] = (fc.mean(MEMBER) if MEMBER in fc.dims else fc).drop_vars(VALID, errors="ignore")
    return out
