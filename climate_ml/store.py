"""The on-disk store (``Store``): one root (``./climate-ml-data`` or ``CLIMATE_ML_STORE``)
holding ``raw/`` (downloads, generated files), ``obs/<dataset>.zarr``,
``archive/<problem>.icechunk`` and ``runs/``.

Every write goes to a temporary directory beside the target and is swapped in with renames,
under a per-target file lock, so a crash never leaves a half-written store that reads as valid
and concurrent writers are serialised.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import re
import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import xarray as xr
import zarr
from filelock import FileLock

from climate_ml import __version__
from climate_ml.errors import StoreError
from climate_ml.schema import TIME, validate_obs

DEFAULT_ROOT = "climate-ml-data"
# HDF5 (under netCDF4) is not thread-safe: two threads in it at once crash the process (seen with
# concurrent HTTP requests). Every NetCDF read or write in the package holds this lock.
NETCDF_LOCK = threading.RLock()
OBS_TIME_CHUNK = 120  # months per chunk: ~8 MB for a 2-degree global float32 field
OBS_CHUNK_BYTES = 64 * 2**20  # ... but fewer months where a month is large (0.25 degree: 16 months, 64 MB)


SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}")  # letters, digits, '_', '.', '-'; no path in it


def check_name(name: str, what: str = "dataset") -> str:
    """Every name that becomes part of a path (data sets, models, problems) passes here: no
    separators, no '..', no absolute paths, nothing empty, hidden or over 100 characters.
    Returns the name; raises a one-line StoreError otherwise."""
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name) or ".." in name:
        shown = repr(name) if len(str(name)) <= 60 else repr(str(name)[:60] + "...")
        raise StoreError(f"invalid {what} name {shown}: use 1-100 letters, digits, '_', '.' or '-', starting with a "
                         "letter or digit, without '..'")
    return name


RECORD_KINDS = ("backtests", "field-backtests")  # the leaderboard's records under runs/


class Store:
    """The store: the one place that knows its folder layout, its locks and how a write is made
    atomic, and that checks every name before it becomes a path. Each shell (CLI command, flow,
    HTTP app) makes one with ``Store.at(where)`` and hands it to the library; library functions
    take it as ``store`` (a plain folder is accepted too and made a Store by ``Store.at``).

    Layout under ``root``: ``raw/<source>/`` (downloads, generated files), ``obs/<dataset>.zarr``,
    ``archive/<problem>.icechunk``, ``runs/<kind>/<problem>/<stamp>-<key>/`` (the leaderboard's
    records), ``runs/<stamp>-<label>/`` (run reports), ``.locks/`` and ``.scratch/`` (what a
    run spills to disk while it runs).
    """

    __slots__ = ("root", "archive_url")

    def __init__(self, root: str | os.PathLike, archive_url: str | None = None):
        text = os.fspath(root)
        scheme = re.match(r"([A-Za-z][A-Za-z0-9+.\-]*)://", text)
        if scheme and scheme.group(1).lower() == "file":
            text = text[len(scheme.group(0)):]  # file:///data/store is the folder /data/store
        elif scheme:  # else Path() would make a local folder named e.g. "s3:" and write there
            raise StoreError(f"store root {text!r}: {scheme.group(1)}:// URLs are not supported yet; give a local or "
                             f"shared file-system folder (or a file:// URL); the forecast archive alone can live in "
                             f"object storage ({ARCHIVE_URL_ENV}=s3://bucket/prefix)")
        self.root = Path(text).expanduser().resolve()
        url = archive_url if archive_url is not None else os.environ.get(ARCHIVE_URL_ENV, "")
        self.archive_url = _check_archive_url(url) if url else None

    @classmethod
    def at(cls, where: Store | str | os.PathLike | None = None) -> Store:
        """The store ``where`` names; by default ``CLIMATE_ML_STORE`` or ``./climate-ml-data``;
        its forecast archive in object storage where ``CLIMATE_ML_ARCHIVE_URL`` says so."""
        if isinstance(where, Store):
            return where
        return cls(where or os.environ.get("CLIMATE_ML_STORE") or DEFAULT_ROOT)

    def __fspath__(self) -> str:
        return str(self.root)

    def __str__(self) -> str:
        return str(self.root)

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r}" + (f", archive_url={self.archive_url!r})" if self.archive_url else ")")

    def __eq__(self, other) -> bool:
        return isinstance(other, Store) and (other.root, other.archive_url) == (self.root, self.archive_url)

    def __hash__(self) -> int:
        return hash((self.root, self.archive_url))

    def __reduce__(self):  # pickled as its root (and archive URL), for worker processes
        return (Store, (str(self.root), self.archive_url or ""))

    # -- layout --
    def obs(self, name: str) -> Path:
        """``obs/<name>.zarr``: one observation data set."""
        return self.root / "obs" / f"{check_name(name)}.zarr"

    def obs_names(self) -> list[str]:
        folder = self.root / "obs"
        return sorted(p.stem for p in folder.glob("*.zarr")) if folder.exists() else []

    def archive(self, problem: str) -> ArchiveAt:
        """Where the forecast archive of one problem lives: ``archive/<problem>.icechunk`` in
        the store, or ``<archive_url>/<problem>.icechunk`` in object storage."""
        name = f"{check_name(problem, 'problem')}.icechunk"
        if self.archive_url:
            return ArchiveAt(f"{self.archive_url}/{name}", None)
        return ArchiveAt(str(self.root / "archive" / name), self.root / "archive" / name)

    def raw(self, source: str) -> Path:
        """``raw/<source>/``: the downloaded or generated files of one catalog entry."""
        return self.root / "raw" / check_name(source, "catalog entry")

    def records(self, problem: str, kind: str = "backtests") -> Path:
        """``runs/<kind>/<problem>/``: the leaderboard's records of one problem."""
        if kind not in RECORD_KINDS:
            raise StoreError(f"unknown record kind {kind!r} (known: {', '.join(RECORD_KINDS)})")
        return self.root / "runs" / kind / check_name(problem, "problem")

    def record_files(self, problem: str, kind: str = "backtests") -> list[Path]:
        """Every complete record (its ``record.json``) of one problem, oldest first."""
        base = self.records(problem, kind)
        return sorted(base.glob("*/record.json")) if base.exists() else []

    def run_dir(self, label: str) -> Path:
        """A new ``runs/<UTC stamp>-<label>/`` folder for one run's report (made here)."""
        stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        path = self.root / "runs" / f"{stamp}-{check_name(label, 'run')}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    # -- locks and atomic writes --
    @contextlib.contextmanager
    def locked(self, key: str, timeout: float = 600):
        """Serialise writers of one store target across processes."""
        lock_dir = self.root / ".locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(lock_dir / f"{key.replace('/', '_')}.lock"), timeout=timeout):
            yield

    @contextlib.contextmanager
    def scratch(self, label: str):
        """A private temporary folder ``.scratch/<label>-<random>/`` in the store (on its file
        system, where the room for its data is), removed when the body returns or raises. For
        what a run spills to disk before it writes it, e.g. a backtest's hindcast maps. Each
        folder's owner holds a lock on ``<folder>.lock`` while it lives; the operating system
        drops that lock when the owner dies, so the folders a killed run left are removed by the
        next run that asks for one (``sweep_scratch``), and a live run's never are."""
        base = self.root / ".scratch"
        base.mkdir(parents=True, exist_ok=True)
        sweep_scratch(base)
        path = base / f"{check_name(label, 'scratch')}-{uuid.uuid4().hex[:8]}"
        lock = FileLock(f"{path}.lock")
        lock.acquire()  # before the folder exists: a sweep never sees it unowned
        try:
            path.mkdir()
            yield path
        finally:
            discard(path)
            lock.release()
            Path(f"{path}.lock").unlink(missing_ok=True)

    @contextlib.contextmanager
    def new_record(self, problem: str, key: str, kind: str = "backtests"):
        """Write a record folder atomically. Yields ``(folder, final)``: the body fills the
        temporary ``folder``, which is renamed to ``final``
        (``runs/<kind>/<problem>/<UTC stamp>-<key>``) when the body returns and removed if it
        raises, so a reader never sees half a record."""
        now = _dt.datetime.now(_dt.UTC)
        final = self.records(problem, kind) / f"{now:%Y%m%dT%H%M%S%fZ}-{check_name(key, 'work key')}"
        tmp = temp_beside(final)
        tmp.mkdir()
        try:
            yield tmp, final
            os.replace(tmp, final)
        except BaseException:
            discard(tmp)
            raise


StoreLike = Store | str | os.PathLike  # what library functions accept as ``store``

ARCHIVE_URL_ENV = "CLIMATE_ML_ARCHIVE_URL"


def _check_archive_url(url: str) -> str:
    """``s3://bucket[/prefix]`` (any S3-compatible store), without a trailing slash, or a
    one-line StoreError."""
    m = re.fullmatch(r"s3://([a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(/[A-Za-z0-9_.\-/]*)?", url.strip())
    if not m or ".." in url:
        raise StoreError(f"archive URL {url!r} ({ARCHIVE_URL_ENV}): give s3://bucket or s3://bucket/prefix (an S3 "
                         "bucket name, then letters, digits, '_', '.', '-' or '/'); other object stores are not wired in")
    return url.strip().rstrip("/")


def _s3_endpoint() -> str | None:
    """The S3 endpoint the AWS variables name (None: AWS itself)."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


@dataclass(frozen=True)
class ArchiveAt:
    """Where one problem's forecast archive (an Icechunk repository) lives: a folder of the
    store (``path``) or a prefix in an S3-compatible object store (``path`` None; the endpoint
    and credentials come from the usual ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
    ``AWS_SECRET_ACCESS_KEY`` and ``AWS_REGION``). ``url`` is what messages name."""

    url: str
    path: Path | None

    @property
    def name(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]

    @property
    def stem(self) -> str:
        return self.name.removesuffix(".icechunk")

    def __str__(self) -> str:
        return self.url

    def storage(self):
        """The Icechunk storage of this location."""
        import icechunk

        if self.path is not None:
            return icechunk.local_filesystem_storage(str(self.path))
        bucket, _, prefix = self.url[len("s3://"):].partition("/")
        endpoint = _s3_endpoint()
        return icechunk.s3_storage(
            bucket=bucket, prefix=prefix, endpoint_url=endpoint,
            region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
            allow_http=bool(endpoint and endpoint.startswith("http://")),
            force_path_style=bool(endpoint),  # MinIO, Ceph and the like serve buckets as paths
            access_key_id=os.environ.get("AWS_ACCESS_KEY_ID") or None,
            secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY") or None,
            session_token=os.environ.get("AWS_SESSION_TOKEN") or None)

    def exists(self) -> bool:
        """Is there a repository here? (A local folder is checked without Icechunk.)"""
        import icechunk

        if self.path is not None:
            return self.path.exists()
        try:
            return bool(icechunk.Repository.exists(self.storage()))
        except Exception as exc:  # noqa: BLE001 - icechunk raises its own error types (network, credentials)
            endpoint = _s3_endpoint() or "AWS S3"
            reason = re.sub(r"^[\s|x]+", "", (str(exc).strip().splitlines() or [""])[0])[:200]  # icechunk's "  x ..."
            raise StoreError(f"{self.url}: the object store at {endpoint} cannot be reached ({reason})") from exc


def recover(final: Path) -> None:
    """Finish a swap that a crash interrupted between its two renames."""
    old = final.with_name(final.name + ".old")
    if not final.exists() and old.exists():
        os.replace(old, final)
    elif old.exists():
        shutil.rmtree(old, ignore_errors=True)


def temp_beside(final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    return final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")


def swap_in(tmp: Path, final: Path) -> None:
    """Atomically (two renames) replace ``final`` with the fully written ``tmp``."""
    old = final.with_name(final.name + ".old")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def discard(tmp: Path) -> None:
    shutil.rmtree(tmp, ignore_errors=True)


def sweep_temporaries(final: Path) -> int:
    """Remove what killed writers left beside ``final`` (call under its lock: any temporary
    of this target then belongs to a writer that is gone). Returns how many were removed."""
    stale = list(final.parent.glob(f".{final.name}.tmp-*")) if final.parent.exists() else []
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return len(stale)


def sweep_scratch(base: Path) -> int:
    """Remove the scratch folders under ``base`` whose owner is gone (its lock is free).
    Returns how many were removed."""
    from filelock import Timeout

    removed = 0
    for folder in [p for p in base.iterdir() if p.is_dir()] if base.exists() else []:
        lock = FileLock(f"{folder}.lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            continue  # a live run's
        try:
            discard(folder)
            removed += 1
        finally:
            lock.release()
            Path(f"{folder}.lock").unlink(missing_ok=True)
    return removed


@dataclass(frozen=True)
class WriteResult:
    path: Path
    action: str  # "created" | "appended" | "unchanged"
    n_time: int
    n_new: int


def _same_values(a: xr.DataArray, b: xr.DataArray) -> bool:
    """Equal within 1e-6 with NaN == NaN; evaluated chunk by chunk for Dask input."""
    differs = (abs(a - b) > 1e-6) | (a.isnull() != b.isnull())
    return not bool(differs.any().compute())


def write_obs(ds: xr.Dataset, store: StoreLike, name: str, provenance: dict) -> WriteResult:
    """Write canonical observations to ``obs/<name>.zarr``.

    Idempotent: months already stored must hold the same values (else StoreError, nothing
    changed); months after the stored ones are appended; if there are none the store is not
    touched at all.
    """
    validate_obs(ds)
    store = Store.at(store)
    final = store.obs(name)
    with store.locked(f"obs-{name}"):
        recover(final)
        sweep_temporaries(final)
        now = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        if not final.exists():
            tmp = temp_beside(final)
            try:
                out = ds.copy()
                out.attrs = {**ds.attrs, **provenance, "ingest_time": now, "climate_ml_version": __version__,
                             "history": [f"{now} created from {provenance.get('source', '?')}"]}
                step = time_chunk(ds)
                out = out.chunk({d: (step if d == TIME else -1) for d in out.dims})
                encoding = {v: {"chunks": _chunks(ds[v], step)} for v in ds.data_vars}
                write = out.to_zarr(tmp, mode="w", zarr_format=3, consolidated=False, encoding=encoding, compute=False)
                # one pass over the source: the write and the count of valid values per variable
                _, counts = dask.compute(write, {v: out[v].count() for v in out.data_vars})
                empty = sorted(v for v, c in counts.items() if int(c) == 0)
                if empty:
                    raise StoreError(f"{provenance.get('source', name)}: variable {empty[0]!r} has no valid values "
                                     "(all missing); nothing stored")
                swap_in(tmp, final)
            except BaseException:
                discard(tmp)
                raise
            return WriteResult(final, "created", ds.sizes[TIME], ds.sizes[TIME])

        existing = xr.open_zarr(final, consolidated=False)
        _check_compatible(existing, ds, final)
        old_times = pd.DatetimeIndex(existing[TIME].values)
        new_times = pd.DatetimeIndex(ds[TIME].values)
        overlap = new_times.intersection(old_times)
        for v in ds.data_vars:
            if len(overlap) and not _same_values(existing[v].sel(time=overlap), ds[v].sel(time=overlap)):
                diff = _first_differing_month(existing[v].sel(time=overlap), ds[v].sel(time=overlap))
                raise StoreError(
                    f"{final}: the source has different values for months already stored "
                    f"(variable {v!r}, first at {diff}); refusing to overwrite"
                )
        if new_times[0] > old_times[-1] + pd.DateOffset(months=1):
            raise StoreError(
                f"{final}: new data starts {new_times[0]:%Y-%m}, leaving a gap after the stored {old_times[-1]:%Y-%m}"
            )
        if new_times[0] > old_times[0] and new_times[0] not in old_times:
            raise StoreError(f"{final}: new data does not line up with stored months")
        if new_times[0] < old_times[0]:
            raise StoreError(
                f"{final}: new data starts {new_times[0]:%Y-%m}, before the stored start {old_times[0]:%Y-%m}"
            )
        extra = ds.sel(time=new_times[new_times > old_times[-1]])
        if extra.sizes[TIME] == 0:
            return WriteResult(final, "unchanged", existing.sizes[TIME], 0)
        tmp = temp_beside(final)
        try:
            shutil.copytree(final, tmp)
            step = existing[next(iter(existing.data_vars))].encoding.get("chunks", (OBS_TIME_CHUNK,))[0]
            extra = extra.chunk({d: (step if d == TIME else -1) for d in extra.dims})
            extra.attrs = {}
            extra.to_zarr(tmp, append_dim=TIME, zarr_format=3, consolidated=False)
            group = zarr.open_group(str(tmp), mode="r+")
            history = list(group.attrs.get("history", []))
            history.append(
                f"{now} appended {extra.sizes[TIME]} months "
                f"({extra[TIME].values[0]:.7}..{extra[TIME].values[-1]:.7}) from {provenance.get('source', '?')}"
            )
            group.attrs.update({**provenance, "history": history, "last_append_time": now})
            swap_in(tmp, final)
        except BaseException:
            discard(tmp)
            raise
        return WriteResult(final, "appended", existing.sizes[TIME] + extra.sizes[TIME], extra.sizes[TIME])


def time_chunk(ds: xr.Dataset) -> int:
    """Months per stored chunk: ``OBS_TIME_CHUNK``, fewer when that would exceed ``OBS_CHUNK_BYTES``."""
    per_month = max((v.dtype.itemsize * int(np.prod([ds.sizes[d] for d in v.dims if d != TIME]))
                     for v in ds.data_vars.values()), default=1)
    return int(np.clip(OBS_CHUNK_BYTES // max(per_month, 1), 1, OBS_TIME_CHUNK))


def _chunks(da: xr.DataArray, step: int) -> tuple[int, ...]:
    return tuple(min(step, n) if d == TIME else n for d, n in zip(da.dims, da.shape, strict=True))


def _check_compatible(existing: xr.Dataset, new: xr.Dataset, path: Path) -> None:
    if set(existing.data_vars) != set(new.data_vars):
        raise StoreError(f"{path}: stored variables {sorted(existing.data_vars)} differ from new {sorted(new.data_vars)}")
    for dim in new.dims:
        if dim == TIME:
            continue
        if dim not in existing.dims or existing.sizes[dim] != new.sizes[dim] or not np.allclose(
            existing[dim].values, new[dim].values
        ):
            raise StoreError(f"{path}: the {dim!r} grid differs from the stored one")


def _first_differing_month(a: xr.DataArray, b: xr.DataArray) -> str:
    differs = (abs(a - b) > 1e-6) | (a.isnull() != b.isnull())
    bad = differs.any([d for d in differs.dims if d != TIME]).compute().values
    return f"{pd.Timestamp(a[TIME].values[int(np.argmax(bad))]):%Y-%m}"


def open_obs(store: StoreLike, name: str, chunks: dict | None = None) -> xr.Dataset:
    """Open a stored observation dataset lazily (Dask, chunked by time)."""
    store = Store.at(store)
    final = store.obs(name)
    recover(final)
    if not final.exists():
        raise StoreError(
            f"unknown dataset {name!r} in {store} (stored: {', '.join(store.obs_names()) or 'none'}; ingest it first)"
        )
    return xr.open_zarr(final, consolidated=False, chunks=chunks if chunks is not None else {})
