"""The data catalog: one YAML file per source in ``catalog/``, validated into ``CatalogEntry``.

An entry names where the data comes from (official URLs, a local path, or the embedded
generator), its format, the variable inside the source and its units. Paths may use
``${CLIMATE_ML_REAL_DATA}`` (default: ``../shared/data`` beside the project root).
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import http.client
import os
import re
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from climate_ml.errors import CatalogError, DownloadError

PROJECT_ROOT = Path(__file__).resolve().parents[1]

ALL_VARIABLES = "*"  # ``variable: "*"`` takes every data variable of the source


class Source(BaseModel):
    model_config = ConfigDict(extra="forbid")
    urls: list[str] = Field(default_factory=list, description="official download URLs")
    path: str | None = Field(None, description="a local file or folder; may use ${CLIMATE_ML_REAL_DATA}")
    generator: str | None = Field(None, description="name of an embedded data generator")

    @model_validator(mode="after")
    def _one_kind(self):
        kinds = sum([bool(self.urls), self.path is not None, self.generator is not None])
        if kinds != 1:
            raise ValueError("source needs exactly one of 'urls', 'path' or 'generator'")
        return self


class Subset(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lat: tuple[float, float] | None = None
    lon: tuple[float, float] | None = None
    time: tuple[str, str] | None = None


class CatalogEntry(BaseModel):
    """One data source. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    description: str
    source: Source
    format: str = Field(description="the source format: a reader in climate_ml.ingest.openers.READERS")
    variable: str | list[str] = Field(
        description='variable name inside the source file, a list of names, or "*" for every variable')
    units: str | dict[str, str] = Field(
        description="units as the source declares them: one for every variable, or one per variable")
    standard_name: str | dict[str, str] = "sea_surface_temperature"
    anomaly: bool = Field(False, description="the values are already anomalies (whatever their units attribute says)")
    license: str
    citation: str
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    land_value: float | None = Field(
        None, description="a code the source uses for land instead of a fill value (e.g. 0)"
    )
    subset: Subset | None = None
    region: str | None = Field(None, description="which series of a multi-series file (nClimDiv: e.g. california)")
    revisions: Literal["refuse", "accept"] = Field(
        "refuse", description="accept: the producer revises months it has published (a later copy may give other "
        "values for stored months), and the store takes them; refuse: such a copy is an error")

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        from climate_ml.ingest.openers import READERS  # the one list of formats

        if value not in READERS:
            raise ValueError(f"unknown format {value!r} (known: {', '.join(READERS)})")
        return value

    @model_validator(mode="after")
    def _per_variable_keys(self):
        names = self.variable if isinstance(self.variable, list) else [self.variable]
        if not names or any(not n for n in names):
            raise ValueError("'variable' needs at least one name")
        for key in ("units", "standard_name"):
            table = getattr(self, key)
            if isinstance(table, dict) and self.variable != ALL_VARIABLES:
                unknown = sorted(set(table) - set(names))
                if unknown:
                    raise ValueError(f"'{key}' names variables that are not ingested: {unknown}")
                if key == "units" and set(names) - set(table):
                    raise ValueError(f"'units' has no entry for {sorted(set(names) - set(table))}")
        return self


def real_data_dir() -> Path:
    """Where the local copies of real data live (``CLIMATE_ML_REAL_DATA`` or ../shared/data)."""
    env = os.environ.get("CLIMATE_ML_REAL_DATA")
    return Path(env) if env else PROJECT_ROOT.parent / "shared" / "data"


def catalog_dir() -> Path:
    env = os.environ.get("CLIMATE_ML_CATALOG")
    return Path(env) if env else PROJECT_ROOT / "catalog"


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        return f"unknown key {loc!r}"
    if err["type"] == "missing":
        return f"missing key {loc!r}"
    return f"key {loc!r}: {err['msg']}"


def load_entry(path: str | Path) -> CatalogEntry:
    """Parse and validate one catalog YAML file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise CatalogError(f"{path}: malformed YAML{where}") from exc
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read ({exc.strerror})") from exc
    if not isinstance(raw, dict):
        raise CatalogError(f"{path}: expected a mapping of keys, got {type(raw).__name__}")
    try:
        entry = CatalogEntry.model_validate(raw)
    except ValidationError as exc:
        raise CatalogError(f"{path}: {_first_error(exc)}") from exc
    if entry.name != path.stem:
        raise CatalogError(f"{path}: entry name {entry.name!r} must match the file name")
    return entry


def load_catalog(directory: str | Path | None = None) -> dict[str, CatalogEntry]:
    """All entries of a catalog directory, by name."""
    directory = Path(directory) if directory else catalog_dir()
    if not directory.is_dir():
        raise CatalogError(f"{directory}: catalog directory not found")
    return {e.name: e for e in (load_entry(p) for p in sorted(directory.glob("*.yaml")))}


def get_entry(name: str, directory: str | Path | None = None) -> CatalogEntry:
    entries = load_catalog(directory)
    if name not in entries:
        raise CatalogError(
            f"unknown catalog entry {name!r} (known: {', '.join(sorted(entries))})"
        )
    return entries[name]


def expand_path(path: str) -> Path:
    """Expand ``${CLIMATE_ML_REAL_DATA}`` and other environment variables in a path."""

    def sub(m: re.Match) -> str:
        var = m.group(1)
        if var == "CLIMATE_ML_REAL_DATA":
            return str(real_data_dir())
        if var not in os.environ:
            raise CatalogError(f"path {path!r} uses ${{{var}}}, which is not set")
        return os.environ[var]

    return Path(re.sub(r"\$\{(\w+)\}", sub, path)).expanduser()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: Path, sha256: str | None = None, retries: int = 3, refresh: bool = False) -> bool:
    """Download ``url`` to ``dest`` atomically (temp file, then rename); verify sha256. With
    ``refresh``, a ``dest`` already there is fetched again only when the server has a newer copy
    (``If-Modified-Since`` with the time of ``dest``, which is set from the server's
    ``Last-Modified``). True when ``dest`` was written, False when the server had nothing newer."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    headers = {}
    if refresh and dest.exists():
        headers["If-Modified-Since"] = email.utils.formatdate(dest.stat().st_mtime, usegmt=True)
    last: Exception | None = None
    modified = None
    for attempt in range(retries):
        try:
            request = urllib.request.Request(url, headers=headers)
            with urllib.request.urlopen(request, timeout=60) as resp, open(tmp, "wb") as out:
                shutil.copyfileobj(resp, out)
                modified = resp.headers.get("Last-Modified")
            break
        except urllib.error.HTTPError as exc:
            tmp.unlink(missing_ok=True)
            if exc.code == 304:  # not modified since our copy
                return False
            last = exc
        except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException) as exc:  # e.g. IncompleteRead
            last = exc
            tmp.unlink(missing_ok=True)
        if attempt + 1 < retries:
            time.sleep(0.5 * 2**attempt)
    else:
        raise DownloadError(f"{url}: download failed after {retries} tries ({last})")
    if sha256 is not None:
        got = sha256_file(tmp)
        if got != sha256:
            tmp.unlink(missing_ok=True)
            raise DownloadError(f"{url}: sha256 mismatch (expected {sha256[:12]}..., got {got[:12]}...)")
    os.replace(tmp, dest)
    with contextlib.suppress(TypeError, ValueError, OverflowError):  # no or a malformed Last-Modified: keep now
        stamp = email.utils.parsedate_to_datetime(modified).timestamp()
        os.utime(dest, (stamp, stamp))
    return True
