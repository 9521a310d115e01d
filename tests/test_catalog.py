import http.server
import threading
from functools import partial

import pandas as pd
import pytest
import xarray as xr

from climate_ml.catalog import download, get_entry, load_catalog, load_entry, sha256_file
from climate_ml.errors import CatalogError, IngestError

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


@pytest.fixture
def http_server(tmp_path):
    (tmp_path / "served").mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "served"))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path / "served", f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_from_loopback_server_checks_sha256(http_server, tmp_path):
    served, url = http_server
    (served / "data.txt").write_bytes(b"1990 1991\n")
    digest = sha256_file(served / "data.txt")
    dest = download(f"{url}/data.txt", tmp_path / "dl" / "data.txt", sha256=digest)
    assert dest.read_bytes() == b"1990 1991\n"
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
