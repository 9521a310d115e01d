"""The forecast archive in object storage: a real S3 endpoint (moto's server, a separate process
on loopback) holds the Icechunk repository when ``CLIMATE_ML_ARCHIVE_URL`` says so; the rest of
the store stays on disk. Writes, queries over the CLI and HTTP, history and worker pickling work
as on disk; a writer elsewhere that commits first, an unreachable endpoint and a bad URL are
one-line errors that leave the archive as it was."""

import json
import pickle
import urllib.request

import pandas as pd
import pytest

from climate_ml.archive import _commit, _repository, history, list_models, query, write_forecast
from climate_ml.cli import main
from climate_ml.errors import StoreError
from climate_ml.schema import INIT
from climate_ml.store import Store
from conftest import bucket_keys, free_port, new_bucket, running_api
from conftest import small_forecast as fc


@pytest.fixture
def object_archive(s3_endpoint, tmp_path, monkeypatch):
    """A store on disk whose archive lives in a fresh bucket of the S3 endpoint."""
    bucket = new_bucket(s3_endpoint, monkeypatch, "archive")
    monkeypatch.setenv("CLIMATE_ML_ARCHIVE_URL", f"s3://{bucket}/forecasts")
    root = tmp_path / "store"
    return root, bucket


def test_the_archive_lives_in_the_bucket_and_reads_back_over_the_cli_and_http(object_archive, s3_endpoint, capsys):
    root, bucket = object_archive
    store = Store.at(root)
    assert str(store.archive("el_nino")) == f"s3://{bucket}/forecasts/el_nino.icechunk"
    assert write_forecast(root, "el_nino", "m1", fc(["2020-01-01", "2020-02-01"]), {"model": "m1"}) == "created"
    assert write_forecast(root, "el_nino", "m1", fc(["2020-01-01"]), {"model": "m1"}) == "unchanged"
    assert write_forecast(root, "el_nino", "m1", fc(["2020-03-01"]), {"model": "m1"}) == "updated"
    keys = bucket_keys(s3_endpoint, bucket)
    assert keys and all(k.startswith("forecasts/el_nino.icechunk/") for k in keys)
    assert not (root / "archive").exists()  # nothing of the archive on disk
    ds = query(root, "el_nino", model="m1")
    assert pd.DatetimeIndex(ds[INIT].values).strftime("%Y-%m").tolist() == ["2020-01", "2020-02", "2020-03"]
    assert float(ds.forecast.sel(model="m1", init_time="2020-03-01", lead=3)) == pytest.approx(2.5)
    assert [h["metadata"].get("action") for h in history(root, "el_nino")][:2] == ["updated", "created"]
    assert list_models(root, "el_nino") == ["m1"]
    assert main(["archive", "query", "--problem", "el_nino", "--model", "m1", "--format", "json",
                 "--store", str(root)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 9 and rows[0]["forecast"] == pytest.approx(0.5)
    with running_api(root) as base, urllib.request.urlopen(f"{base}/forecasts?problem=el_nino&model=m1&format=json",
                                                           timeout=30) as r:
        assert json.loads(r.read()) == rows
    # a worker process gets the same store, archive location included
    again = pickle.loads(pickle.dumps(store))
    assert again == store and again.archive("el_nino") == store.archive("el_nino")


def test_a_writer_elsewhere_that_commits_first_is_a_one_line_error_and_its_commit_stands(object_archive):
    root, _ = object_archive
    write_forecast(root, "el_nino", "m1", fc(["2020-01-01"]), {"model": "m1"})
    at = Store.at(root).archive("el_nino")
    repo = _repository(at)
    mine, theirs = repo.writable_session("main"), repo.writable_session("main")
    fc(["2020-01-01"], 7.0).rename("forecast").to_dataset().drop_vars("valid_time").to_zarr(
        theirs.store, group="kaplan-local/other", mode="w", consolidated=False)
    fc(["2020-01-01"], 9.0).rename("forecast").to_dataset().drop_vars("valid_time").to_zarr(
        mine.store, group="kaplan-local/mine", mode="w", consolidated=False)
    theirs.commit("theirs")
    with pytest.raises(StoreError, match="another writer changed the archive while this one wrote; nothing was "
                                         "written") as err:
        _commit(mine, at, "mine", {})
    assert "\n" not in str(err.value)
    import zarr

    root_group = zarr.open_group(repo.readonly_session("main").store, mode="r")
    assert sorted(dict(root_group["kaplan-local"].groups())) == ["other"]  # theirs stands, mine is not there
    assert list_models(root, "el_nino") == ["m1"]  # nor is anything lost


def test_bad_archive_urls_and_an_unreachable_endpoint_are_one_line_errors(object_archive, monkeypatch, capsys):
    root, _ = object_archive
    for url in ("gs://bucket/x", "s3://", "s3://Bad_Bucket/x", "s3://bucket/../x"):
        monkeypatch.setenv("CLIMATE_ML_ARCHIVE_URL", url)
        with pytest.raises(StoreError, match=r"object-store URL .* \(CLIMATE_ML_ARCHIVE_URL\)"):
            Store.at(root)
        assert main(["archive", "history", "el_nino", "--store", str(root)]) != 0
        err = capsys.readouterr().err.strip()
        assert "CLIMATE_ML_ARCHIVE_URL" in err and len(err.splitlines()) == 1, err
    monkeypatch.setenv("CLIMATE_ML_ARCHIVE_URL", "s3://nowhere/forecasts")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with pytest.raises(StoreError, match=r"object store at http://127.0.0.1:\d+ cannot be reached") as err:
        write_forecast(root, "el_nino", "m1", fc(["2020-01-01"]), {"model": "m1"})
    assert "\n" not in str(err.value)
    assert not (root / "archive").exists()
