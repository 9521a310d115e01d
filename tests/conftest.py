"""Shared fixtures: small datasets written in the real source formats, with their quirks."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import cftime
import netCDF4
import numpy as np
import pandas as pd
import pytest

from climate_ml.catalog import real_data_dir

# the tests make their own stores; an object-store URL or store from the caller's shell must not
# reach them (tests/test_object_archive.py and test_object_obs.py set their own, against a
# loopback S3 endpoint)
for _name in ("CLIMATE_ML_ARCHIVE_URL", "CLIMATE_ML_OBS_URL", "CLIMATE_ML_STORE"):
    os.environ.pop(_name, None)
os.environ.setdefault("PREFECT_HOME", str(Path(__file__).parent / ".prefect-home"))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # one Prefect home (and SQLite database) per test worker: two temporary Prefect servers on one
    # database file would lock each other out
    os.environ["PREFECT_HOME"] = str(Path(os.environ["PREFECT_HOME"]) / os.environ["PYTEST_XDIST_WORKER"])
Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)  # Prefect opens its database there, unmade

# The test files that take longest (minutes each: the whole run, a real Prefect deployment) run
# first, so that with several workers (`make test` runs `-n auto --dist loadfile
# --no-loadscope-reorder`, which keeps this order) the short files fill in beside them instead
# of leaving one worker alone with a long file at the end.
LONGEST_FIRST = ("test_flow.py", "test_deployment.py", "test_field_models.py", "test_backtest.py",
                 "test_rainfall.py", "test_cli.py", "test_realdata.py", "test_convlstm.py")  # measured, longest first


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        name = item.path.name
        if name in LONGEST_FIRST:
            return LONGEST_FIRST.index(name)
        return len(LONGEST_FIRST) + (0 if item.get_closest_marker("slow") else 1)

    items.sort(key=rank)  # stable: the order within a file is kept


def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto`: one worker per CPU, at most 4 (each worker's tests start processes of their own)."""
    from climate_ml.backtest import default_jobs

    return default_jobs()


@pytest.fixture
def store(tmp_path) -> Path:
    return tmp_path / "store"


@pytest.fixture(scope="session")
def real_data() -> Path:
    d = real_data_dir()
    if not (d / "sst").is_dir():
        pytest.skip(f"real data not found at {d} (set CLIMATE_ML_REAL_DATA)")
    return d


def open_archived(store: Path, problem: str, group: str, as_of: str | None = None):
    """An archived group read the way a user without climate-ml would: Icechunk and xarray only."""
    import icechunk
    import xarray as xr

    repo = icechunk.Repository.open(icechunk.local_filesystem_storage(str(store / "archive" / f"{problem}.icechunk")))
    session = repo.readonly_session("main") if as_of is None else repo.readonly_session(tag=as_of)
    return xr.open_zarr(session.store, group=group, consolidated=False)


def tree_digest(path: Path) -> str:
    """A digest of every file (name and bytes) under ``path``: equal digests = unchanged store."""
    h = hashlib.sha256()
    if not path.exists():
        return "absent"
    for p in sorted(path.rglob("*")):
        if p.is_file() and ".locks" not in p.parts:
            h.update(str(p.relative_to(path)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def expect_clean_error(store: Path, digest: str, exc, pattern: str, call) -> None:
    """``call`` must raise ``exc`` with a one-line message matching ``pattern`` and leave every
    file under ``store`` as it was (``digest`` from tree_digest before the call)."""
    with pytest.raises(exc, match=pattern) as info:
        call()
    assert "\n" not in str(info.value)
    assert tree_digest(store) == digest


def write_ersst_like(
    path: Path,
    n_months: int = 48,
    start: str = "2000-01",
    units: str = "degC",
    calendar: str = "proleptic_gregorian",
    lat_descending: bool = True,
    lon_180: bool = False,
    variable: str = "sst",
    land_value: float | None = None,
    times: list | None = None,
    seed: int = 0,
) -> Path:
    """A small NetCDF4 SST file in the layout of NOAA PSL / CDO products."""
    rng = np.random.default_rng(seed)
    lat = np.arange(-10.0, 10.1, 5.0)
    lon = np.arange(150.0, 280.1, 10.0)
    if lat_descending:
        lat = lat[::-1]
    if lon_180:
        lon = ((lon + 180) % 360) - 180
    t0 = pd.Timestamp(start)
    if times is None:
        dates = [cftime.datetime(t0.year + (t0.month - 1 + k) // 12, (t0.month - 1 + k) % 12 + 1, 15 if calendar != "360_day" else 1,
                                 calendar=calendar) for k in range(n_months)]
    else:
        dates = [cftime.datetime(t.year, t.month, t.day, calendar=calendar) for t in map(pd.Timestamp, times)]
    data = 27 + rng.normal(0, 1, (len(dates), lat.size, lon.size)).astype("float32")
    if units.lower().startswith("k"):
        data = data + 273.15
    if land_value is not None:
        data[:, 0, -1] = land_value
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        nc.createDimension("time", None)
        nc.createDimension("lat", lat.size)
        nc.createDimension("lon", lon.size)
        t = nc.createVariable("time", "f8", ("time",))
        t.units = "days since 1800-01-01" if calendar != "360_day" else "minutes since 1980-01-01 00:00"
        t.calendar = calendar
        t[:] = cftime.date2num(dates, t.units, calendar=calendar)
        la = nc.createVariable("lat", "f4", ("lat",))
        la.units = "degrees_north"
        la[:] = lat
        lo = nc.createVariable("lon", "f4", ("lon",))
        lo.units = "degrees_east"
        lo[:] = lon
        v = nc.createVariable(variable, "f4", ("time", "lat", "lon"), fill_value=np.float32(-9.96921e36))
        if units:
            v.units = units
        v.long_name = "Monthly Means of Sea Surface Temperature"
        v[:] = data
    return path


def write_psl_index(path: Path, first: int = 1990, last: int = 1994, missing: float = -99.99, n_missing_tail: int = 3) -> Path:
    rng = np.random.default_rng(1)
    lines = [f" {first} {last}"]
    for year in range(first, last + 1):
        vals = 26.5 + rng.normal(0, 1, 12)
        if year == last and n_missing_tail:
            vals[-n_missing_tail:] = missing
        lines.append(f" {year} " + " ".join(f"{v:8.2f}" for v in vals))
    lines += [f"  {missing}", "  Nino 3.4 index (test copy)", "  https://psl.noaa.gov/data/correlation/nina34.data"]
    path.write_text("\n".join(lines) + "\n")
    return path


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    """moto's S3 server (a real S3 endpoint) in its own process on loopback; yields its URL."""
    import subprocess
    import sys
    import time
    import urllib.request

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("moto server did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


AZURITE = Path(__file__).resolve().parents[1] / ".azurite" / "node_modules" / ".bin" / "azurite-blob"
# Azurite's well-known development account (public, in Microsoft's documentation)
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@pytest.fixture(scope="module")
def azure_endpoint(tmp_path_factory):
    """Azurite's blob service (Microsoft's Azure Storage emulator; a real blob endpoint) in its
    own process on loopback, installed by ``make azurite``; yields its account URL."""
    import subprocess
    import time
    import urllib.error
    import urllib.request

    if not AZURITE.exists():
        if os.environ.get("CI"):
            pytest.fail("Azurite is missing; `make test` installs it with npm (make azurite)")
        pytest.skip("Azurite not installed (make azurite installs it)")
    port = free_port()
    # --disableTelemetry: Azurite otherwise reports to Microsoft over the internet
    proc = subprocess.Popen([str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence",
                             "--skipApiVersionCheck", "--silent", "--loose", "--disableTelemetry"],
                            cwd=tmp_path_factory.mktemp("azurite"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
    try:
        for _ in range(300):
            if proc.poll() is not None:
                raise RuntimeError(f"Azurite exited with status {proc.returncode}")
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except urllib.error.HTTPError:  # it answers (an unsigned request is refused): it is up
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("Azurite did not start")
        yield url
    finally:
        proc.kill()  # in memory: nothing to keep (on SIGTERM it waits seconds for open connections)
        proc.wait(timeout=30)


def new_container(endpoint: str, monkeypatch, label: str) -> str:
    """A fresh container at the Azure ``endpoint``, with the Azure variables pointing at it."""
    import time

    from azure.storage.blob import BlobServiceClient

    container = f"{label}-{time.time_ns() % 10**12}"
    BlobServiceClient(endpoint, credential={"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY}
                      ).create_container(container)
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    for k, v in {"AZURE_STORAGE_ACCOUNT_NAME": AZURITE_ACCOUNT, "AZURE_STORAGE_ACCOUNT_KEY": AZURITE_KEY,
                 "AZURE_STORAGE_ENDPOINT": endpoint}.items():
        monkeypatch.setenv(k, v)
    return container


def container_keys(endpoint: str, container: str) -> list[str]:
    """Every blob name in ``container``."""
    from azure.storage.blob import BlobServiceClient

    client = BlobServiceClient(endpoint, credential={"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY})
    return [b.name for b in client.get_container_client(container).list_blobs()]


def small_forecast(inits, value=0.5, leads=(1, 2, 3)):
    """An index forecast (init_time, lead) to archive: ``value`` plus the lead's index."""
    import xarray as xr

    from climate_ml.schema import INIT, LEAD, add_valid_time

    inits = pd.DatetimeIndex(inits)
    da = xr.DataArray(np.full((len(inits), len(leads)), value) + np.arange(len(leads)), dims=(INIT, LEAD),
                      coords={INIT: inits, LEAD: list(leads)})
    return add_valid_time(da)


def new_bucket(endpoint: str, monkeypatch, label: str) -> str:
    """A fresh bucket at the S3 ``endpoint``, with the AWS variables pointing at it."""
    import time
    import urllib.request

    bucket = f"{label}-{time.time_ns() % 10**12}"
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{bucket}", method="PUT"), timeout=10)
    for k, v in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                 "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    return bucket


def bucket_keys(endpoint: str, bucket: str) -> list[str]:
    """Every key in ``bucket`` (an unsigned listing: moto does not check signatures)."""
    import re
    import urllib.request

    with urllib.request.urlopen(f"{endpoint}/{bucket}?list-type=2&max-keys=1000", timeout=10) as r:
        return re.findall(r"<Key>([^<]+)</Key>", r.read().decode())


def running_api(store: Path):
    """``climate-ml serve-api`` on a free loopback port over ``store``; yields the base URL."""
    from climate_ml.api import running_server

    return running_server(store)


# -- the web page in a real browser (headless Chromium from Debian's packages) --------------------

# Screenshots are kept as test artefacts (not in a temporary folder): test-artefacts/web/ in the
# checkout, or $CLIMATE_ML_TEST_ARTEFACTS/web; each run overwrites the previous one's.
ARTEFACTS = Path(os.environ.get("CLIMATE_ML_TEST_ARTEFACTS") or Path(__file__).resolve().parents[1] / "test-artefacts")


def keep_screenshot(target, name: str) -> Path:
    """Save a PNG of the browser window or of one element under ARTEFACTS/web; returns its path."""
    path = ARTEFACTS / "web" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    if hasattr(target, "save_screenshot"):
        target.save_screenshot(str(path))
    else:
        target.screenshot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return path


CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM and CHROMEDRIVER):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromedriver are missing; `make test` installs them from Debian's packages")
        pytest.skip("chromium/chromedriver not installed (make browser installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1200,900"):
        opts.add_argument(flag)
    # Chromium leaves its singleton socket folder in $TMPDIR: here, in pytest's own temporary folder
    tmp = tmp_path_factory.mktemp("chromium")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER, env={**os.environ, "TMPDIR": str(tmp)}), options=opts)
    yield driver
    driver.quit()


def wait_until(driver, condition, timeout=30):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # the page rebuilds the table on every load: an element read mid-rebuild is retried
    return WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(condition)


def board_cells(driver) -> dict[str, list[str]]:
    """The table's cells as the page shows them, read in one script call (atomic w.r.t. re-renders)."""
    rows = driver.execute_script(
        "return Array.from(document.querySelectorAll('#board tbody tr'))"
        ".map(r => Array.from(r.cells).map(c => c.textContent))")
    return {r[0]: r[1:] for r in rows}
