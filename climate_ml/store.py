"""The store (``Store``): one root (``./climate-ml-data`` or ``CLIMATE_ML_STORE``) holding
``raw/`` (downloads, generated files), ``obs/<dataset>.zarr``, ``archive/<problem>.icechunk``
and ``runs/``. The root may be in object storage (``s3://bucket/prefix`` for an S3-compatible
store, ``az://container/prefix`` for Azure Blob Storage; ``climate_ml.objects``: data sets and
archives are Icechunk repositories there, records are objects), or the observations or
the forecast archive alone may live there (``CLIMATE_ML_OBS_URL``, ``CLIMATE_ML_ARCHIVE_URL``).

On disk every write goes to a temporary directory beside the target and is swapped in with
renames, under a per-target file lock, so a crash never leaves a half-written store that reads
as valid and concurrent writers are serialised. In object storage, where there are no renames,
a write is an Icechunk transaction: readers see the last commit until the next one lands whole,
and a writer on another machine that commits first makes this one fail with nothing written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import os
import re
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import xarray as xr
import zarr
from filelock import FileLock

from climate_ml import __version__, objects
from climate_ml.errors import DamagedError, StoreError
from climate_ml.schema import LAT, LON, TIME, validate_obs

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

    A store in object storage (``Store("s3://bucket/prefix")``, ``Store("az://container/prefix")``;
    ``climate_ml.objects`` names the variables for endpoints and credentials) keeps its data sets
    (``obs/<dataset>.icechunk``), its archive (``archive/<problem>.icechunk``) and the
    leaderboard's records (``runs/<kind>/<problem>/<stamp>-<key>/``) under that prefix; ``root``
    is then its local side (``CLIMATE_ML_LOCAL_DIR``, by default under ``~/.cache/climate-ml``):
    downloads, locks, scratch, a cache of the records, run reports. ``obs_url``
    (``CLIMATE_ML_OBS_URL``) and ``archive_url`` (``CLIMATE_ML_ARCHIVE_URL``) put the data sets or
    the archive alone in object storage, or elsewhere than the store's prefix.
    """

    __slots__ = ("root", "url", "archive_url", "obs_url")

    def __init__(self, root: str | os.PathLike, archive_url: str | None = None, obs_url: str | None = None,
                 local: str | os.PathLike | None = None):
        text = os.fspath(root)
        scheme = re.match(r"([A-Za-z][A-Za-z0-9+.\-]*)://", text)
        self.url = None
        if scheme and scheme.group(1).lower() == "file":
            text = text[len(scheme.group(0)):]  # file:///data/store is the folder /data/store
        elif scheme and scheme.group(1).lower() in objects.SCHEMES:
            self.url = objects.check_url(text, "the store root")
            text = os.fspath(local or os.environ.get(LOCAL_DIR_ENV) or _default_local(self.url))
        elif scheme:  # else Path() would make a local folder named e.g. "gs:" and write there
            raise StoreError(f"store root {text!r}: {scheme.group(1)}:// URLs are not supported; give a local or "
                             f"shared file-system folder (or a file:// URL), or an object store (s3://bucket/prefix "
                             f"for S3-compatible stores, az://container/prefix for Azure Blob Storage)")
        self.root = Path(text).expanduser().resolve()
        # an explicit "" (a pickled store without one) is none: the environment is not read again
        url = archive_url if archive_url is not None else os.environ.get(ARCHIVE_URL_ENV, "")
        self.archive_url = objects.check_url(url, ARCHIVE_URL_ENV) if url else self._under("archive")
        url = obs_url if obs_url is not None else os.environ.get(OBS_URL_ENV, "")
        self.obs_url = objects.check_url(url, OBS_URL_ENV) if url else self._under("obs")

    def _under(self, part: str) -> str | None:
        return f"{self.url}/{part}" if self.url else None

    @property
    def records_url(self) -> str | None:
        """Where the leaderboard's records live in object storage (None: on disk)."""
        return self._under("runs")

    @classmethod
    def at(cls, where: Store | str | os.PathLike | None = None) -> Store:
        """The store ``where`` names (a folder, a ``file://`` URL, or an ``s3://`` or ``az://`` URL); by default
        ``CLIMATE_ML_STORE`` or ``./climate-ml-data``; its observations and forecast archive in
        object storage where ``CLIMATE_ML_OBS_URL`` and ``CLIMATE_ML_ARCHIVE_URL`` say so."""
        if isinstance(where, Store):
            return where
        return cls(where or os.environ.get("CLIMATE_ML_STORE") or DEFAULT_ROOT)

    def __fspath__(self) -> str:
        return str(self.root)

    def __str__(self) -> str:
        return self.url or str(self.root)

    def _key(self) -> tuple:
        return (self.url, self.root, self.archive_url, self.obs_url)

    def __repr__(self) -> str:
        urls = "".join(f", {k}={getattr(self, k)!r}" for k in ("archive_url", "obs_url") if getattr(self, k))
        return f"Store({self.url or str(self.root)!r}{urls}" + (f", local={str(self.root)!r})" if self.url else ")")

    def __eq__(self, other) -> bool:
        return isinstance(other, Store) and other._key() == self._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __reduce__(self):  # pickled as its root and object-store URLs, for worker processes
        return (Store, (self.url or str(self.root), self.archive_url or "", self.obs_url or "",
                        str(self.root) if self.url else None))

    # -- layout --
    def obs(self, name: str) -> Path:
        """``obs/<name>.zarr``: one observation data set on disk (see ``obs_repo`` for object
        storage)."""
        return self.root / "obs" / f"{check_name(name)}.zarr"

    def obs_repo(self, name: str) -> RepoAt | None:
        """Where data set ``name`` lives in object storage (``<obs_url>/<name>.icechunk``), or
        None when the observations are on disk (``obs(name)``)."""
        if not self.obs_url:
            return None
        return RepoAt(f"{self.obs_url}/{check_name(name)}.icechunk", None)

    def obs_where(self, name: str) -> str:
        """Data set ``name``'s location, as messages name it."""
        at = self.obs_repo(name)
        return at.url if at is not None else str(self.obs(name))

    def obs_names(self) -> list[str]:
        """The names of the stored data sets (in object storage: the repositories under
        ``obs_url``, whether or not their first write committed)."""
        if self.obs_url:
            return [name.removesuffix(".icechunk") for name in _list_folders(self.obs_url)
                    if name.endswith(".icechunk")]
        folder = self.root / "obs"
        return sorted(p.stem for p in folder.glob("*.zarr")) if folder.exists() else []

    def has_obs(self, name: str) -> bool:
        """Is data set ``name`` stored (a complete one: a repository whose first write never
        committed holds none)?"""
        at = self.obs_repo(name)
        if at is None:
            recover(self.obs(name))
            return self.obs(name).exists()
        return obs_version(self, name) is not None

    def archive(self, problem: str) -> RepoAt:
        """Where the forecast archive of one problem lives: ``archive/<problem>.icechunk`` in
        the store, or ``<archive_url>/<problem>.icechunk`` in object storage."""
        name = f"{check_name(problem, 'problem')}.icechunk"
        if self.archive_url:
            return RepoAt(f"{self.archive_url}/{name}", None)
        return RepoAt(str(self.root / "archive" / name), self.root / "archive" / name)

    def raw(self, source: str) -> Path:
        """``raw/<source>/``: the downloaded or generated files of one catalog entry."""
        return self.root / "raw" / check_name(source, "catalog entry")

    def records(self, problem: str, kind: str = "backtests") -> Path:
        """``runs/<kind>/<problem>/``: the leaderboard's records of one problem."""
        if kind not in RECORD_KINDS:
            raise StoreError(f"unknown record kind {kind!r} (known: {', '.join(RECORD_KINDS)})")
        return self.root / "runs" / kind / check_name(problem, "problem")

    def record_files(self, problem: str, kind: str = "backtests") -> list[Path]:
        """Every complete record (its ``record.json``) of one problem, oldest first. In object
        storage the records not yet in the local cache are fetched first (a record never changes
        once written)."""
        base = self.records(problem, kind)
        if self.records_url:
            _fetch_records(f"{self.records_url}/{kind}/{check_name(problem, 'problem')}", base)
        # not the hidden temporaries (``.<name>.tmp-*``) that writers and fetchers fill before their rename
        return sorted(p for p in base.glob("*/record.json") if not p.parent.name.startswith(".")) if base.exists() else []

    def run_dir(self, label: str) -> Path:
        """A new ``runs/<UTC stamp>-<label>/`` folder for one run's report (made here)."""
        stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        path = self.root / "runs" / f"{stamp}-{check_name(label, 'run')}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def publish_run(self, path: Path) -> str:
        """Where a finished run report is kept: its folder (``run_dir``) on disk, or, for a store
        in object storage, its copy uploaded to ``<url>/runs/<folder name>/`` (the local folder
        stays too). Returns that location, for messages."""
        if not self.url:
            return str(path)
        url = f"{self._under('runs')}/{check_name(Path(path).name, 'run')}"
        _upload_folder(Path(path), url)
        return url

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
        url = f"{self.records_url}/{kind}/{problem}/{final.name}" if self.records_url else None
        try:
            yield tmp, (url or final)
            if url:
                _put_record(tmp, url)
                _settle_record(tmp, final)  # the local cache's copy (a reader may have fetched it already)
            else:
                os.replace(tmp, final)
        except BaseException:
            discard(tmp)
            raise


StoreLike = Store | str | os.PathLike  # what library functions accept as ``store``

ARCHIVE_URL_ENV = "CLIMATE_ML_ARCHIVE_URL"
OBS_URL_ENV = "CLIMATE_ML_OBS_URL"
LOCAL_DIR_ENV = "CLIMATE_ML_LOCAL_DIR"


def _default_local(url: str) -> Path:
    """The local side of a store in object storage: ``~/.cache/climate-ml/<bucket>/<prefix>``
    (``<scheme>/<bucket>/<prefix>`` for providers other than S3)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    scheme, rest = url.split("://", 1)
    return cache / "climate-ml" / (rest if scheme == "s3" else f"{scheme}/{rest}")


def _list_folders(url: str) -> list[str]:
    """The names of the "folders" (common prefixes) directly under ``url``, sorted."""
    bucket, prefix = objects.split(url)
    store = objects.provider(url)
    with store.errors(url):
        return store.folders(bucket, f"{prefix}/")


def _upload_folder(folder: Path, url: str, last: str | None = None) -> None:
    """Upload every file under ``folder`` to the prefix ``url`` (sub-folders kept), the file
    named ``last`` after all others."""
    bucket, prefix = objects.split(url)
    files = sorted((p for p in folder.rglob("*") if p.is_file()), key=lambda p: (p.name == last, str(p)))
    store = objects.provider(url)
    with store.errors(url):
        for f in files:
            store.upload(str(f), bucket, f"{prefix}/{f.relative_to(folder).as_posix()}")


def _put_record(folder: Path, url: str) -> None:
    """Upload a finished record folder, ``record.json`` last: readers take a record whose
    ``record.json`` is there, and each object appears whole, so none sees half a record."""
    _upload_folder(folder, url, last="record.json")


def _fetch_records(url: str, base: Path) -> int:
    """Copy the complete records under ``url`` that ``base`` (the local cache) lacks; each lands
    whole (fetched beside, then renamed). Returns how many were fetched."""
    bucket, prefix = objects.split(url)
    store = objects.provider(url)
    with store.errors(url):
        keys: dict[str, list[str]] = {}
        for key in store.keys(bucket, f"{prefix}/"):
            name, _, file = key[len(prefix) + 1:].partition("/")
            if file and "/" not in file:
                keys.setdefault(name, []).append(file)
        fetched = 0
        for name, files in sorted(keys.items()):
            if "record.json" not in files or (base / name / "record.json").exists():
                continue  # still being written, or cached already
            final = base / check_name(name, "record")
            tmp = temp_beside(final)
            tmp.mkdir()
            try:
                for file in files:
                    store.download(bucket, f"{prefix}/{name}/{check_name(file, 'record file')}", str(tmp / file))
                fetched += _settle_record(tmp, final)
            except BaseException:
                discard(tmp)
                raise
    return fetched


def _settle_record(tmp: Path, final: Path) -> int:
    """Rename a complete record folder into place; if another process of this machine put the
    same record there first (two readers fetching it at once), keep theirs. Returns 1 if this
    one landed."""
    try:
        os.replace(tmp, final)
        return 1
    except OSError:
        if not (final / "record.json").exists():
            raise
        discard(tmp)
        return 0


@dataclass(frozen=True)
class RepoAt:
    """Where one Icechunk repository (a problem's forecast archive, or a data set in object
    storage) lives: a folder of the store (``path``) or a prefix in object storage (``path`` None;
    the endpoint and credentials come from the provider's usual variables, ``climate_ml.objects``).
    ``url`` is what messages name."""

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
        return objects.provider(self.url).storage(self.url)

    def exists(self) -> bool:
        """Is there a repository here? (A local folder is checked without Icechunk.)"""
        import icechunk

        if self.path is not None:
            return self.path.exists()
        try:
            return bool(icechunk.Repository.exists(self.storage()))
        except StoreError:
            raise
        except Exception as exc:  # noqa: BLE001 - icechunk raises its own error types (network, credentials)
            where = objects.provider(self.url).where()
            raise StoreError(f"{self.url}: the object store at {where} cannot be reached "
                             f"({objects.first_line(exc)})") from exc


_REPOS: dict[str, object] = {}
_REPOS_LOCK = threading.Lock()


def repository(at: RepoAt, create: bool = False, what: str = "forecast archive"):
    """The Icechunk repository at ``at`` (opened once per process), or None if there is none
    (made first with ``create``). ``what`` names it in the one-line error for one that cannot be
    read."""
    import icechunk

    with _REPOS_LOCK:
        if at.path is not None or at.url not in _REPOS:  # a local folder may have been removed since
            if not at.exists():
                _REPOS.pop(at.url, None)
                if not create:
                    return None
        repo = _REPOS.get(at.url)
        if repo is None:
            try:
                storage = at.storage()
                repo = icechunk.Repository.open_or_create(storage) if create else icechunk.Repository.open(storage)
            except Exception as exc:  # noqa: BLE001 - icechunk raises its own error types
                raise StoreError(f"{at}: not a readable {what} ({str(exc).splitlines()[0][:200]})") from exc
            _REPOS[at.url] = repo
        return repo


def commit(session, at: RepoAt, message: str, metadata: dict | None = None, what: str = "archive") -> str:
    """Commit an Icechunk ``session``; a writer elsewhere that committed first (possible in
    object storage, where the store's file lock does not reach) is a one-line error, and
    nothing of this session is written."""
    import icechunk

    try:
        return session.commit(message, metadata=metadata or {})
    except icechunk.ConflictError as exc:
        raise StoreError(f"{at}: another writer changed the {what} while this one wrote; nothing was written "
                         "(run it again)") from exc


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
    path: Path | str  # the folder on disk, or the repository's URL in object storage
    action: str  # "created" | "appended" | "revised" (stored months revised, maybe new ones too) | "unchanged"
    n_time: int
    n_new: int
    n_revised: int = 0


def _differs(a: xr.DataArray, b: xr.DataArray) -> xr.DataArray:
    """Where stored and new values differ: by more than 1e-6, or one of them missing."""
    return (abs(a - b) > 1e-6) | (a.isnull() != b.isnull())


def _same_values(a: xr.DataArray, b: xr.DataArray) -> bool:
    """Equal within 1e-6 with NaN == NaN; evaluated chunk by chunk for Dask input."""
    return not bool(_differs(a, b).any().compute())


REVISIONS = ("refuse", "accept")


def write_obs(ds: xr.Dataset, store: StoreLike, name: str, provenance: dict, revisions: str = "refuse") -> WriteResult:
    """Write canonical observations to ``obs/<name>.zarr`` (or, in object storage, the data
    set's Icechunk repository: ``Store.obs_repo``).

    Idempotent: months already stored must hold the same values (else StoreError, nothing
    changed); months after the stored ones are appended; if there are none the store is not
    touched at all. A variable with no valid value is refused before anything is stored.
    With ``revisions="accept"`` (a source whose producer revises months it has published, as
    the catalog entry says) months already stored that the source now gives other values for
    take the new values, and the data set's history says which months and by how much.
    """
    if revisions not in REVISIONS:
        raise StoreError(f"bad revisions {revisions!r} (one of {', '.join(REVISIONS)})")
    validate_obs(ds)
    store = Store.at(store)
    at = store.obs_repo(name)
    with store.locked(f"obs-{name}"):
        if at is not None:
            with _in_this_process():
                return _write_obs_repo(ds, at, provenance, revisions)
        return _write_obs_folder(ds, store.obs(name), provenance, revisions)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _first_write(ds: xr.Dataset, provenance: dict, now: str) -> tuple[xr.Dataset, dict]:
    """A new data set as it is stored: its attributes (provenance, history) and chunks by time,
    with the encoding that keeps those chunks."""
    out = ds.copy()
    out.attrs = {**ds.attrs, **provenance, "ingest_time": now, "climate_ml_version": __version__,
                 "history": [f"{now} created from {provenance.get('source', '?')}"]}
    step = time_chunk(ds)
    out = out.chunk({d: (step if d == TIME else -1) for d in out.dims})
    return out, {v: {"chunks": _chunks(ds[v], step)} for v in ds.data_vars}


def _refuse_empty(counts: dict, provenance: dict, name: str) -> None:
    empty = sorted(v for v, c in counts.items() if int(c) == 0)
    if empty:
        raise StoreError(f"{provenance.get('source', name)}: variable {empty[0]!r} has no valid values "
                         "(all missing); nothing stored")


@dataclass(frozen=True)
class Update:
    """What a write adds to a stored data set: the months after the stored ones (maybe none),
    and where revisions are accepted, the stored span the source revises (its first to its last
    revised month, with the source's values) with a line for the history."""

    extra: xr.Dataset
    revised: xr.Dataset | None = None
    n_revised: int = 0
    note: str = ""
    step: int = OBS_TIME_CHUNK  # the stored chunk length along time
    months: pd.DatetimeIndex | None = None  # the revised months

    @property
    def empty(self) -> bool:
        return self.extra.sizes[TIME] == 0 and self.revised is None


def _months_to_append(existing: xr.Dataset, ds: xr.Dataset, where: str, revisions: str = "refuse") -> Update:
    """What ``ds`` adds to ``existing``, chunked as the store is; a StoreError, before anything
    is written, when ``ds`` does not continue ``existing``: other variables or grid, other values
    for stored months (unless revisions are accepted), a gap, or months that do not line up."""
    _check_compatible(existing, ds, where)
    old_times = pd.DatetimeIndex(existing[TIME].values)
    new_times = pd.DatetimeIndex(ds[TIME].values)
    overlap = new_times.intersection(old_times)
    changed = np.zeros(len(overlap), bool)
    biggest = (0.0, None)
    for v in ds.data_vars:
        if len(overlap) and not _same_values(existing[v].sel(time=overlap), ds[v].sel(time=overlap)):
            if revisions != "accept":
                diff = _first_differing_month(existing[v].sel(time=overlap), ds[v].sel(time=overlap))
                raise StoreError(
                    f"{where}: the source has different values for months already stored "
                    f"(variable {v!r}, first at {diff}); refusing to overwrite (a catalog entry whose "
                    "producer revises its data says `revisions: accept`)"
                )
            old, new = existing[v].sel(time=overlap), ds[v].sel(time=overlap)
            other = [d for d in new.dims if d != TIME]
            changed |= _differs(old, new).any(other).compute().values
            size = float(abs(old - new).max().compute())
            if np.isfinite(size) and size > biggest[0]:
                biggest = (size, f"{v} {size:.3g} {ds[v].attrs.get('units', '')}".rstrip())
    if new_times[0] > old_times[-1] + pd.DateOffset(months=1):
        raise StoreError(
            f"{where}: new data starts {new_times[0]:%Y-%m}, leaving a gap after the stored {old_times[-1]:%Y-%m}"
        )
    if new_times[0] > old_times[0] and new_times[0] not in old_times:
        raise StoreError(f"{where}: new data does not line up with stored months")
    if new_times[0] < old_times[0]:
        raise StoreError(
            f"{where}: new data starts {new_times[0]:%Y-%m}, before the stored start {old_times[0]:%Y-%m}"
        )
    extra = ds.sel(time=new_times[new_times > old_times[-1]])
    step = existing[next(iter(existing.data_vars))].encoding.get("chunks", (OBS_TIME_CHUNK,))[0]
    extra = extra.chunk({d: (step if d == TIME else -1) for d in extra.dims})
    extra.attrs = {}
    if not changed.any():
        return Update(extra, step=step)
    months = overlap[changed]
    span = ds.sel(time=slice(months[0], months[-1]))  # lazy: a new version may revise the whole record
    span = span.drop_vars([c for c in span.coords if TIME not in span[c].dims])
    span.attrs = {}
    note = (f"revised {len(months)} month{'s' if len(months) != 1 else ''} ({months[0]:%Y-%m}..{months[-1]:%Y-%m}"
            + (f"; largest change {biggest[1]}" if biggest[1] else "") + ")")
    return Update(extra, span, len(months), note, step, months)


def _write_revised(update: Update, target, stored_times: pd.DatetimeIndex) -> None:
    """Write the revised span over the stored months it covers (``target``: a Zarr folder or an
    Icechunk session's store), chunked as the store is so that no two pieces share a chunk."""
    span, step = update.revised, update.step
    first = stored_times.get_loc(pd.Timestamp(span[TIME].values[0]))
    n = span.sizes[TIME]
    head = min(n, step - first % step)
    sizes = [head] + [step] * ((n - head) // step) + ([(n - head) % step] if (n - head) % step else [])
    span = span.chunk({d: (tuple(sizes) if d == TIME else -1) for d in span.dims})
    # each stored chunk is written by one task (partly, at the span's ends), so xarray's check for
    # pieces that share a chunk, which refuses any partial chunk, is not needed
    span.to_zarr(target, region={TIME: slice(first, first + n)}, zarr_format=3, consolidated=False, safe_chunks=False)


def _append_attrs(group: zarr.Group, stored: dict, update: Update, provenance: dict, now: str) -> None:
    """The attributes after an append or a revision: the ``stored`` ones (xarray's append has
    just replaced them with the appended part's), this source's provenance, one more line of
    history for the revision and one for the append."""
    history = list(stored.get("history", []))
    source = provenance.get("source", "?")
    if update.revised is not None:
        history.append(f"{now} {update.note} from {source}")
    extra = update.extra
    if extra.sizes[TIME]:
        history.append(f"{now} appended {extra.sizes[TIME]} months "
                       f"({extra[TIME].values[0]:.7}..{extra[TIME].values[-1]:.7}) from {source}")
    group.attrs.update({**stored, **provenance, "history": history, "last_append_time": now})


def _result(path, update: Update, n_stored: int) -> WriteResult:
    n_new = update.extra.sizes[TIME]
    return WriteResult(path, "revised" if update.revised is not None else "appended", n_stored + n_new, n_new,
                       update.n_revised)


def _write_obs_folder(ds: xr.Dataset, final: Path, provenance: dict, revisions: str = "refuse") -> WriteResult:
    """On disk: the first write and each append go to a copy beside ``final``, swapped in."""
    recover(final)
    sweep_temporaries(final)
    now = _now()
    if not final.exists():
        tmp = temp_beside(final)
        try:
            out, encoding = _first_write(ds, provenance, now)
            write = out.to_zarr(tmp, mode="w", zarr_format=3, consolidated=False, encoding=encoding, compute=False)
            # one pass over the source: the write and the count of valid values per variable
            _, counts = dask.compute(write, {v: out[v].count() for v in out.data_vars})
            _refuse_empty(counts, provenance, final.stem)
            _take_inventory(tmp)
            swap_in(tmp, final)
        except BaseException:
            discard(tmp)
            raise
        return WriteResult(final, "created", ds.sizes[TIME], ds.sizes[TIME])

    existing = _open_folder_obs(final, final.stem)
    update = _months_to_append(existing, ds, str(final), revisions)
    if update.empty:
        return WriteResult(final, "unchanged", existing.sizes[TIME], 0)
    tmp = temp_beside(final)
    kept = None
    try:
        if update.revised is not None:  # the values it replaces, kept beside the data set
            kept = _keep_replaced(existing, update.months, final, now)
            where = f"{final.parent.name}/{kept[1].parent.name}/{kept[1].name}"
            update = dataclasses.replace(update, note=f"{update.note[:-1]}; the replaced values in {where})")
        shutil.copytree(final, tmp)
        if update.revised is not None:
            _write_revised(update, tmp, pd.DatetimeIndex(existing[TIME].values))
        if update.extra.sizes[TIME]:
            update.extra.to_zarr(tmp, append_dim=TIME, zarr_format=3, consolidated=False)
        _append_attrs(zarr.open_group(str(tmp), mode="r+"), existing.attrs, update, provenance, now)
        _take_inventory(tmp)
        swap_in(tmp, final)
        if kept is not None:
            os.replace(*kept)
    except BaseException:
        discard(tmp)
        if kept is not None:
            kept[0].unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # the folder, if this revision was to be its first file
                kept[0].parent.rmdir()
        raise
    return _result(final, update, existing.sizes[TIME])


def revisions_folder(final: Path) -> Path:
    """Where the values that accepted revisions replaced are kept: ``obs/<dataset>.revisions/``."""
    return final.with_name(final.stem + ".revisions")


def _keep_replaced(existing: xr.Dataset, months: pd.DatetimeIndex, final: Path, now: str) -> tuple[Path, Path]:
    """Write the stored values of the revised ``months`` (every variable, as stored, with the data
    set's attributes) to a NetCDF file named by the time of the revision, first under a temporary
    name: (temporary, final) paths, the rename left to the caller once the revision is in."""
    folder = revisions_folder(final)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".*.tmp"):  # of a writer killed before its swap (under the data set's lock)
        stale.unlink(missing_ok=True)
    stamp = re.sub(r"[-:]", "", now.replace("+00:00", "Z"))
    name = next(n for n in (f"{stamp}-{k}.nc" if k else f"{stamp}.nc" for k in range(1000)) if not (folder / n).exists())
    old = existing.sel(time=months)
    for v in old.variables.values():
        v.encoding = {}
    old.attrs = {**{k: v for k, v in existing.attrs.items() if isinstance(v, str | int | float)},
                 "comment": f"the stored values of {len(months)} month(s) replaced by a revision at {now}"}
    tmp = folder / f".{name}.tmp"
    with NETCDF_LOCK, _in_this_process():  # a local file, read from the store in this process's threads
        old.to_netcdf(tmp, engine="netcdf4")
    return tmp, folder / name


def _write_obs_repo(ds: xr.Dataset, at: RepoAt, provenance: dict, revisions: str = "refuse") -> WriteResult:
    """In object storage: the first write and each append are one Icechunk commit, so a reader
    sees the data set before or after it, never half of it; an append writes only the new
    months (no copy of the stored ones). Runs on Dask's threads in this process."""
    repo = repository(at, what="data set")
    existing = _open_repo_obs(repo, at)
    now = _now()
    if existing is None:
        out, encoding = _first_write(ds, provenance, now)
        # counted before the write (an Icechunk write cannot share the source's pass), so an empty
        # variable is refused before anything reaches the bucket, the repository included
        (counts,) = dask.compute({v: out[v].count() for v in out.data_vars})
        _refuse_empty(counts, provenance, at.stem)
        session = (repo or repository(at, create=True, what="data set")).writable_session("main")
        out.to_zarr(session.store, mode="w", zarr_format=3, consolidated=False, encoding=encoding)
        commit(session, at, f"created from {provenance.get('source', '?')}", what="data set")
        return WriteResult(at.url, "created", ds.sizes[TIME], ds.sizes[TIME])
    session = repo.writable_session("main")  # before the checks: a commit elsewhere since then is a conflict
    update = _months_to_append(existing, ds, at.url, revisions)
    if update.empty:
        return WriteResult(at.url, "unchanged", existing.sizes[TIME], 0)
    if update.revised is not None:  # the snapshot before the commit keeps the values it replaces
        _write_revised(update, session.store, pd.DatetimeIndex(existing[TIME].values))
    extra = update.extra
    if extra.sizes[TIME]:
        extra.to_zarr(session.store, append_dim=TIME, zarr_format=3, consolidated=False, align_chunks=True)
    _append_attrs(zarr.open_group(session.store, mode="r+"), existing.attrs, update, provenance, now)
    what = "; ".join(([update.note] if update.revised is not None else [])
                     + ([f"appended {extra.sizes[TIME]} months"] if extra.sizes[TIME] else []))
    commit(session, at, f"{what} from {provenance.get('source', '?')}", what="data set")
    return _result(at.url, update, existing.sizes[TIME])


def _in_this_process():
    """Dask's threads in this process, even where a distributed client is the default, for a
    write to object storage: an Icechunk session's writes must reach the session that commits
    them (a worker process would write into a copy of it), and the source files are this
    machine's (a store in object storage assumes no shared file system)."""
    return dask.config.set(scheduler="threads")


def _open_repo_obs(repo, at: RepoAt, chunks: dict | None = None) -> xr.Dataset | None:
    """The data set on the repository's main branch now, lazily; None if none was committed."""
    if repo is None:
        return None
    try:
        ds = xr.open_zarr(repo.readonly_session("main").store, consolidated=False,
                          chunks=chunks if chunks is not None else {})
    except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError):  # an empty repository
        return None
    return ds if TIME in ds.coords else None


def obs_version(store: StoreLike, name: str) -> str | None:
    """A token that changes whenever data set ``name`` does (None: not stored): the folder's
    modification time on disk, the main branch's snapshot in object storage. For caches."""
    store = Store.at(store)
    at = store.obs_repo(name)
    if at is None:
        final = store.obs(name)
        return str(final.stat().st_mtime_ns) if final.exists() else None
    repo = repository(at, what="data set")
    if repo is None or _open_repo_obs(repo, at) is None:
        return None
    return repo.lookup_branch("main")


def time_chunk(ds: xr.Dataset) -> int:
    """Months per stored chunk: ``OBS_TIME_CHUNK``, fewer when that would exceed ``OBS_CHUNK_BYTES``."""
    per_month = max((v.dtype.itemsize * int(np.prod([ds.sizes[d] for d in v.dims if d != TIME]))
                     for v in ds.data_vars.values()), default=1)
    return int(np.clip(OBS_CHUNK_BYTES // max(per_month, 1), 1, OBS_TIME_CHUNK))


def _chunks(da: xr.DataArray, step: int) -> tuple[int, ...]:
    return tuple(min(step, n) if d == TIME else n for d, n in zip(da.dims, da.shape, strict=True))


def _check_compatible(existing: xr.Dataset, new: xr.Dataset, path: str) -> None:
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
    differs = _differs(a, b)
    bad = differs.any([d for d in differs.dims if d != TIME]).compute().values
    return f"{pd.Timestamp(a[TIME].values[int(np.argmax(bad))]):%Y-%m}"


def open_obs(store: StoreLike, name: str, chunks: dict | None = None) -> xr.Dataset:
    """Open a stored observation dataset lazily (Dask, chunked by time): on disk, or the last
    commit of its repository in object storage."""
    store = Store.at(store)
    at = store.obs_repo(name)
    if at is not None:
        ds = _open_repo_obs(repository(at, what="data set"), at, chunks)
        if ds is None:
            raise StoreError(f"unknown dataset {name!r}: nothing stored at {at} (stored: "
                             f"{', '.join(n for n in store.obs_names() if n != name) or 'none'}; ingest it first)")
        return ds
    final = store.obs(name)
    recover(final)
    if not final.exists():
        raise StoreError(
            f"unknown dataset {name!r} in {store} (stored: {', '.join(store.obs_names()) or 'none'}; ingest it first)"
        )
    return _open_folder_obs(final, name, chunks)


def _open_folder_obs(final: Path, name: str, chunks: dict | None = None) -> xr.Dataset:
    """A data set's Zarr folder, lazily; a DamagedError naming it when it is damaged: unreadable
    metadata, a lost coordinate (read as months from 1970, or as plain numbers), or chunk files
    other than those its last write recorded (a lost chunk reads as missing months)."""
    for attempt in range(3):
        try:
            ds = xr.open_zarr(final, consolidated=False, chunks=chunks if chunks is not None else {})
        except Exception as exc:  # zarr and xarray raise JSONDecodeError, ValueError, KeyError, TypeError...
            raise _damaged(name, final, f"{type(exc).__name__}: {exc}") from exc
        if not ds.data_vars:
            raise _damaged(name, final, "it holds no variable")
        lost = [d for d in (TIME, *ds.dims) if d in (TIME, LAT, LON) and d not in ds.coords]
        if lost or not np.issubdtype(ds[TIME].dtype, np.datetime64):
            raise _damaged(name, final, f"its {(lost or [TIME])[0]!r} coordinate is missing or unreadable")
        written = ds.attrs.pop(CHUNK_INVENTORY, None) or {}  # none: stored before the inventory was kept
        try:
            found = chunk_inventory(final) if written else {}
        except OSError:  # the folder was swapped out while it was counted
            found = {}
        wrong = next(((a, nb) for a, nb in written.items() if found.get(a, [0, 0]) != list(nb)), None)
        if wrong is None:
            return ds
        if attempt < 2:  # a write swapped a new copy in between the open and the count: open that one
            time.sleep(0.2)
            continue
        (array, (n, size)), have = wrong, found.get(wrong[0], [0, 0])
        raise _damaged(name, final, f"the chunks of {array!r} are not those written: {have[0]} files of "
                                    f"{have[1]} bytes, where {n} files of {size} bytes were written")
    raise AssertionError("unreachable")


CHUNK_INVENTORY = "chunk_files"  # attribute of a data set on disk: {array: [chunk files, their bytes]}


def chunk_inventory(folder: Path) -> dict[str, list[int]]:
    """The number of chunk files and their total size of each array of a Zarr folder: what a
    lost or truncated chunk changes (a missing chunk would otherwise read as missing values)."""
    out = {}
    for array in sorted(p for p in folder.iterdir() if (p / "zarr.json").is_file()):
        n = size = 0
        for root, _, files in os.walk(array / "c"):
            n += len(files)
            size += sum(os.stat(os.path.join(root, f)).st_size for f in files)
        out[array.name] = [n, size]
    return out


def _take_inventory(folder: Path) -> None:
    """Record the chunk inventory of a fully written copy (before it is swapped in)."""
    zarr.open_group(str(folder), mode="r+").attrs[CHUNK_INVENTORY] = chunk_inventory(folder)


def _damaged(name: str, final: Path, why: str) -> DamagedError:
    why = why.splitlines()[0][:300] if why else "?"
    return DamagedError(f"stored data set {name!r} is damaged ({final}: {why}); restore it from a backup, or delete "
                      "the folder and ingest it again")
