"""Ingest: open a source in its own format, standardise it, write it to the Zarr store.

``ingest_entry`` takes a catalog entry; ``ingest_file`` takes a file a scientist already has.
Both are idempotent: re-running changes nothing; new months in the source are appended. A
source that gives other values for stored months is refused, unless its catalog entry says its
producer revises them (``revisions: accept``); a downloaded source is asked for again each time.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import xarray as xr

from climate_ml.catalog import ALL_VARIABLES, CatalogEntry, download, expand_path, sha256_file
from climate_ml.errors import ClimateMLError, IngestError
from climate_ml.ingest.openers import READERS, detect_format, open_source, reader
from climate_ml.ingest.standardise import standardise
from climate_ml.store import Store, StoreLike, WriteResult, write_obs
from climate_ml.synthetic import GENERATORS

__all__ = ["ingest_entry", "ingest_file", "load_standardised", "resolve_entry", "standardise", "READERS"]


def resolve_entry(entry: CatalogEntry, store: StoreLike) -> Path:
    """Return a local file for the entry: the local path, a generated file, or a download."""
    return _fetch(entry, store)[0]


def _fetch(entry: CatalogEntry, store: StoreLike, again: bool = False) -> tuple[Path, list[Path]]:
    """The entry's local file or folder, and the files this call downloaded. A downloaded source
    is asked for again each time (a conditional request: only a newer copy is transferred), so
    that the monthly job sees the months the producer has added since; a file pinned by its
    sha256 never changes and is kept. ``again``: every file downloaded whole, whatever is kept."""
    src = entry.source
    if src.path is not None:
        path = expand_path(src.path)
        if not path.exists():
            raise IngestError(f"{path}: file not found (catalog entry {entry.name!r})")
        return path, []
    if src.generator is not None:
        if src.generator not in GENERATORS:
            raise IngestError(f"catalog entry {entry.name!r}: unknown generator {src.generator!r}")
        path = Store.at(store).raw(entry.name) / f"{entry.name}.nc"
        if not path.exists():
            GENERATORS[src.generator](path)
        return path, []
    folder = Store.at(store).raw(entry.name)
    paths, fresh = [], []
    pinned = entry.sha256 if len(src.urls) == 1 else None  # a checksum can only be declared for a single-file source
    for url in src.urls:
        path = folder / Path(url.split("?")[0]).name
        if again:
            download(url, path, sha256=pinned)
            fresh.append(path)
        elif not (pinned and path.exists()) and download(url, path, sha256=pinned, refresh=True):
            fresh.append(path)
        paths.append(path)
    return (paths[0] if len(paths) == 1 else folder), fresh


def _per_variable(value, variable: str):
    """A catalog value given once for all variables or as a {variable: value} table."""
    return value.get(variable) if isinstance(value, dict) else value


def load_standardised(
    path: Path,
    variable,
    name: str | None,
    fmt: str | None = None,
    units=None,
    standard_name=None,
    land_value: float | None = None,
    subset=None,
    region: str | None = None,
    anomaly: bool = False,
) -> xr.Dataset:
    """Open and standardise one variable, a list of variables or every variable ("*") of a
    source. ``units`` and ``standard_name`` are one value or a {variable: value} table; with
    one variable it is stored under ``name``, otherwise under its own name."""
    raw = open_source(path, variable, fmt, region=region)
    names = [str(v) for v in raw.data_vars]
    single = len(names) == 1 and isinstance(variable, str) and variable != ALL_VARIABLES
    if isinstance(units, dict):
        missing = [v for v in names if v not in units]
        if missing:
            raise IngestError(f"{path}: no units declared for {', '.join(missing)}")
    parts = [standardise(raw, v, units=_per_variable(units, v), name=(name or v) if single else v,
                         standard_name=_per_variable(standard_name, v), land_value=land_value, source=str(path),
                         anomaly=anomaly)
             for v in names]
    ds = parts[0] if len(parts) == 1 else xr.Dataset({v: part[v] for part, v in zip(parts, names, strict=True)})
    if subset is not None:
        if subset.lat is not None:
            ds = ds.sel(lat=slice(*sorted(subset.lat)))
        if subset.lon is not None:
            ds = ds.sel(lon=slice(*subset.lon))
        if subset.time is not None:
            ds = ds.sel(time=slice(*subset.time))
    return ds


def ingest_entry(entry: CatalogEntry, store: StoreLike, name: str | None = None) -> WriteResult:
    """Ingest a catalog entry. A download kept from an earlier run that can no longer be stored
    (damaged on this disk, while the server's copy is unchanged) is downloaded whole once more
    before the error stands."""
    path, fresh = _fetch(entry, store)
    try:
        return _ingest_fetched(entry, store, name, path, fresh)
    except IngestError:  # the copy could not be read (a StoreError, e.g. a refused revision, is no reason)
        if not entry.source.urls or len(fresh) == len(entry.source.urls):
            raise  # nothing kept from before: the server's copy itself
    path, fresh = _fetch(entry, store, again=True)
    return _ingest_fetched(entry, store, name, path, fresh)


def _ingest_fetched(entry: CatalogEntry, store: StoreLike, name: str | None, path: Path,
                    fresh: list[Path]) -> WriteResult:
    try:
        digest = sha256_source(path)
        if entry.sha256 and digest != entry.sha256:
            raise IngestError(f"{path}: sha256 {digest[:12]}... does not match the catalog's {entry.sha256[:12]}...")
        ds = load_standardised(path, entry.variable, None, entry.format, entry.units,
                               entry.standard_name, entry.land_value, entry.subset, entry.region, entry.anomaly)
        prov = {
            "source": str(path),
            "source_urls": list(entry.source.urls),
            "source_sha256": digest,
            "catalog_entry": entry.name,
            "license": entry.license,
            "citation": entry.citation,
        }
        return _write(ds, store, name or entry.name, prov, path, entry.revisions)
    except ClimateMLError:
        for f in fresh:  # a download that could not be stored is fetched whole next time, not taken as current
            f.unlink(missing_ok=True)
        raise


def ingest_file(
    path: str | Path,
    variable,
    name: str,
    store: StoreLike,
    fmt: str | None = None,
    units=None,
    land_value: float | None = None,
    region: str | None = None,
    anomaly: bool = False,
) -> WriteResult:
    """Ad hoc ingest of a file (or a folder of NSIDC monthly CSVs) someone already has, without
    writing YAML first. Tabular formats know their variable, units and standard name.
    ``variable`` is a name, a list of names or "*"; ``units`` one value or {variable: units}."""
    path = Path(path)
    if not path.exists():
        raise IngestError(f"{path}: file not found")
    fmt = fmt or detect_format(path)
    source = reader(fmt, path)
    default_units, standard_name = source.units, source.standard_name
    variable = variable or source.variable
    if variable is None:
        raise IngestError(f"{path}: give --variable (the variable inside the {fmt} file, or '*' for all)")
    if isinstance(variable, list) and len(variable) == 1:
        variable = variable[0]
    ds = load_standardised(path, variable, None, fmt, units or default_units, standard_name, land_value,
                           region=region, anomaly=anomaly)
    prov = {"source": str(path.resolve()), "source_sha256": sha256_source(path), "catalog_entry": "",
            "format": fmt, **({"region": region} if region else {})}
    return _write(ds, store, name, prov, path)


def sha256_source(path: Path) -> str:
    """sha256 of a file, or of a folder's files (names and contents, sorted)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.iterdir() if p.is_file()):
        h.update(f.name.encode())
        h.update(bytes.fromhex(sha256_file(f)))
    return h.hexdigest()


def _write(ds: xr.Dataset, store: StoreLike, name: str, prov: dict, path: Path, revisions: str = "refuse") -> WriteResult:
    """Write lazily opened data. An error that only shows while streaming (a file cut short
    inside its data, a full disk) becomes a one-line IngestError; the store is left as it was."""
    try:
        return write_obs(ds, store, name, prov, revisions)
    except (OSError, RuntimeError, ValueError) as exc:
        if isinstance(exc, ClimateMLError):
            raise
        msg = f"{path}: ingest failed while streaming the data into the store ({type(exc).__name__}: {exc})"
        raise IngestError(msg.splitlines()[0]) from exc
