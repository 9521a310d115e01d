import http.server
import threading
from functools import partial

import pandas as pd
import pytest
import xarray as xr

from climate_ml.catalog import download, get_entry, load_catalog, load_entry, sha256_file
from climate_ml.errors import CatalogError, DownloadError, IngestError, StoreError
from climate_ml.ingest import ingest_entry
from climate_ml.store import open_obs
from conftest import tree_digest, write_ersst_like

GOOD = """\
name: {name}
description: test entry
source:
  path: /tmp/x.nc
format: cf-netcdf
variable: sst
units: degC
license: public domain
citation: nobody
"""


def test_shipped_catalog_is_valid():
    entries = load_catalog()
    for name in ("ersst-v5", "kaplan-sst-v2", "oisst-v2", "psl-nino34", "kaplan-local", "toy-ocean"):
        assert name in entries
    assert entries["ersst-v5"].source.urls[0].startswith("https://downloads.psl.noaa.gov/")
    assert entries["toy-ocean"].source.generator == "toy-ocean"


def test_malformed_yaml_names_file_and_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: bad\ndescription: [unclosed\n")
    with pytest.raises(CatalogError, match=r"bad.yaml: malformed YAML at line \d"):
        load_entry(p)


def test_unknown_key_is_an_error(tmp_path):
    p = tmp_path / "e.yaml"
    p.write_text(GOOD.format(name="e") + "colour: blue\n")
    with pytest.raises(CatalogError, match=r"e.yaml: unknown key 'colour'"):
        load_entry(p)


def test_missing_key_is_an_error(tmp_path):
    p = tmp_path / "e.yaml"
    p.write_text(GOOD.format(name="e").replace("units: degC\n", ""))
    with pytest.raises(CatalogError, match=r"missing key 'units'"):
        load_entry(p)


def test_name_must_match_file(tmp_path):
    p = tmp_path / "e.yaml"
    p.write_text(GOOD.format(name="other"))
    with pytest.raises(CatalogError, match="must match the file name"):
        load_entry(p)


def test_source_needs_exactly_one_kind(tmp_path):
    p = tmp_path / "e.yaml"
    p.write_text(GOOD.format(name="e").replace("  path: /tmp/x.nc\n", "  path: /tmp/x.nc\n  generator: toy-ocean\n"))
    with pytest.raises(CatalogError, match="exactly one of"):
        load_entry(p)


def test_unknown_entry_lists_known():
    with pytest.raises(CatalogError, match="unknown catalog entry 'nope'.*kaplan-local"):
        get_entry("nope")


class CountingHandler(http.server.SimpleHTTPRequestHandler):
    """Python's file server (it answers If-Modified-Since with 304), noting each answer's code."""

    codes: list[int] = []

    def log_request(self, code="-", size="-"):
        self.codes.append(int(code))

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server(tmp_path):
    (tmp_path / "served").mkdir()
    CountingHandler.codes = []
    handler = partial(CountingHandler, directory=str(tmp_path / "served"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path / "served", f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_from_loopback_server_checks_sha256(http_server, tmp_path):
    served, url = http_server
    (served / "data.txt").write_bytes(b"1990 1991\n")
    digest = sha256_file(served / "data.txt")
    assert download(f"{url}/data.txt", tmp_path / "dl" / "data.txt", sha256=digest)
    assert (tmp_path / "dl" / "data.txt").read_bytes() == b"1990 1991\n"
    with pytest.raises(IngestError, match="sha256 mismatch"):
        download(f"{url}/data.txt", tmp_path / "dl2" / "data.txt", sha256="0" * 64)
    assert not (tmp_path / "dl2" / "data.txt").exists()


def test_download_missing_file_fails_cleanly(http_server, tmp_path):
    _, url = http_server
    with pytest.raises(IngestError, match="download failed after 2 tries"):
        download(f"{url}/absent.nc", tmp_path / "x.nc", retries=2)
    assert not (tmp_path / "x.nc").exists()


def test_a_new_format_is_one_reader_line(tmp_path, monkeypatch):
    """A reader added to READERS is recognised, opened with its defaults, accepted by the
    catalog and ingested; an unknown format is a one-line error naming the known ones."""
    from climate_ml.ingest import ingest_file
    from climate_ml.ingest.openers import READERS, Reader, detect_format
    from climate_ml.store import open_obs

    def open_toy(path, variable, region):
        values = [float(v) for v in path.read_text().split()[1:]]
        return xr.Dataset({variable: ("time", values)},
                          coords={"time": pd.date_range("2000-01", periods=len(values), freq="MS")})

    toy = Reader("toy-series", open_toy, lambda path, head: head is not None and head.startswith(b"TOY"),
                 "amoc", "degC", "sea_surface_temperature", one_series=True)
    monkeypatch.setattr("climate_ml.ingest.openers.READERS", {"toy-series": toy, **READERS})
    f = tmp_path / "amoc.txt"
    f.write_text("TOY " + " ".join(str(15 + 0.1 * k) for k in range(30)))
    assert detect_format(f) == "toy-series"
    ingest_file(f, None, "amoc", tmp_path / "store")  # variable, units and standard name from the reader
    ds = open_obs(tmp_path / "store", "amoc")
    assert ds["amoc"].attrs["units"] == "degC" and ds.sizes["time"] == 30
    yml = tmp_path / "amoc.yaml"
    yml.write_text(f"name: amoc\ndescription: d\nsource: {{path: {f}}}\nformat: toy-series\nvariable: amoc\n"
                   "units: degC\nlicense: l\ncitation: c\n")
    assert load_entry(yml).format == "toy-series"
    monkeypatch.setattr("climate_ml.ingest.openers.READERS", READERS)  # the reader gone: the format is unknown
    with pytest.raises(CatalogError) as exc:
        load_entry(yml)
    assert str(exc.value) == (f"{yml}: key 'format': Value error, unknown format 'toy-series' (known: "
                              f"{', '.join(READERS)})")
    with pytest.raises(IngestError, match=r"amoc.txt: unknown format 'toy-series' \(known: nsidc-monthly-csv, "):
        ingest_file(f, "amoc", "amoc2", tmp_path / "store", fmt="toy-series")
    assert open_obs(tmp_path / "store", "amoc").sizes["time"] == 30  # nothing stored was changed


def test_a_downloaded_source_is_asked_again_and_only_a_newer_copy_is_fetched(http_server, tmp_path):
    """The monthly job ingests each entry again: a source downloaded once used to be kept for
    good, so the producer's new months never reached the store. Each ingest now asks the server
    again (If-Modified-Since): an unchanged file is a 304 and nothing moves, a newer one is fetched
    and its new months appended, and one that cannot be read is a one-line error that leaves the
    store as it was and is fetched whole next time."""
    import os
    import time

    served, url = http_server
    store = tmp_path / "store"
    source = served / "sst.nc"
    (tmp_path / "test-entry.yaml").write_text(GOOD.format(name="test-entry").replace(
        "  path: /tmp/x.nc", f"  urls:\n    - {url}/sst.nc"))
    entry = load_entry(tmp_path / "test-entry.yaml")

    def publish(path, when):  # the producer's new file, with its modification time
        os.utime(path, (when, when))

    write_ersst_like(source, n_months=24)
    publish(source, time.time() - 3600)
    first = ingest_entry(entry, store)
    assert (first.action, first.n_time) == ("created", 24) and CountingHandler.codes == [200]
    again = ingest_entry(entry, store)
    assert again.action == "unchanged" and CountingHandler.codes == [200, 304]

    kept = store / "raw" / "test-entry" / "sst.nc"  # the copy kept from the first run, damaged on this disk
    stamp = kept.stat().st_mtime
    kept.write_bytes(kept.read_bytes()[:500])
    os.utime(kept, (stamp, stamp))  # the server's copy is no newer: a 304, then the kept copy is found unreadable
    healed = ingest_entry(entry, store)
    assert healed.action == "unchanged" and CountingHandler.codes == [200, 304, 304, 200]  # fetched whole once more

    write_ersst_like(tmp_path / "next.nc", n_months=30)  # the next release: six more months
    os.replace(tmp_path / "next.nc", source)
    publish(source, time.time() - 1800)
    grown = ingest_entry(entry, store)
    assert (grown.action, grown.n_new, grown.n_time) == ("appended", 6, 30) and CountingHandler.codes[-1] == 200
    assert open_obs(store, "test-entry").sizes["time"] == 30

    before = tree_digest(store / "obs")
    source.write_bytes(source.read_bytes()[:500])  # a damaged release
    publish(source, time.time() - 900)
    with pytest.raises(IngestError, match="sst.nc: not a readable NetCDF file"):
        ingest_entry(entry, store)
    assert tree_digest(store / "obs") == before and not (store / "raw" / "test-entry" / "sst.nc").exists()
    write_ersst_like(source, n_months=30)  # mended upstream: fetched whole (no copy to compare with), nothing new
    publish(source, time.time() - 600)
    assert ingest_entry(entry, store).action == "unchanged" and CountingHandler.codes[-1] == 200

    revised = xr.open_dataset(source, decode_times=False).load()
    revised.close()
    revised["sst"][29] = revised["sst"][29] + 1.0  # the producer revises its last month
    revised.to_netcdf(source)
    publish(source, time.time() - 300)
    with pytest.raises(StoreError, match="different values for months already stored"):
        ingest_entry(entry, store)  # this entry does not say `revisions: accept`
    assert tree_digest(store / "obs") == before and not (store / "raw" / "test-entry" / "sst.nc").exists()
    accepting = entry.model_copy(update={"revisions": "accept"})
    res = ingest_entry(accepting, store)
    assert (res.action, res.n_revised, res.n_new) == ("revised", 1, 0)

    source.unlink()  # gone from the server: a download error, the one kind the monthly flow retries
    before = tree_digest(store / "obs")
    with pytest.raises(DownloadError, match="sst.nc: download failed after 3 tries"):
        ingest_entry(entry, store)
    assert tree_digest(store / "obs") == before


def test_the_monthly_flow_retries_downloads_only():
    from prefect.states import Failed

    from flows.monthly import ingest_new_months, only_downloads

    assert ingest_new_months.retries == 3 and ingest_new_months.retry_condition_fn is only_downloads
    assert only_downloads(None, None, Failed(data=DownloadError("x: download failed after 3 tries")))
    for exc in (IngestError("x.nc: not a readable NetCDF file"), ValueError("boom")):
        assert not only_downloads(None, None, Failed(data=exc))
