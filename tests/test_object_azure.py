"""A store in Azure Blob Storage (``az://container/prefix``), against Azurite, Microsoft's
emulator of it (a real blob endpoint in its own process on loopback): a whole store there is
shared by two machines (data set, leaderboard record, run report), the forecast archive alone
there writes and reads back, and bad URLs, missing credentials and an unreachable endpoint are
one-line errors that write nothing. The same store code serves S3 (tests/test_object_store.py);
only ``climate_ml.objects`` knows the provider."""

import json

import pandas as pd
import pytest

from climate_ml.archive import history, query, write_forecast
from climate_ml.cli import main
from climate_ml.errors import StoreError
from climate_ml.objects import AzureAccount
from climate_ml.schema import INIT
from climate_ml.store import Store
from conftest import (
    AZURITE_ACCOUNT,
    AZURITE_KEY,
    container_keys,
    free_port,
    new_container,
    small_forecast,
)


def test_a_whole_store_in_an_azure_container_is_shared_by_two_machines(azure_endpoint, tmp_path, monkeypatch,
                                                                      capsys):
    container = new_container(azure_endpoint, monkeypatch, "team")
    url = f"az://{container}/team"
    monkeypatch.setenv("CLIMATE_ML_LOCAL_DIR", str(tmp_path / "a"))
    assert main(["backtest", "el_nino", "models/damped_persistence.py", "--test-start", "2015-01", "--test-end",
                 "2016-12", "--store", url]) == 0
    assert f"recorded in {url}/runs/backtests/el_nino/" in capsys.readouterr().err
    assert main(["leaderboard", "el_nino", "--json", "--store", url]) == 0
    board_a = json.loads(capsys.readouterr().out)
    assert "damped_persistence" in json.dumps(board_a)

    keys = container_keys(azure_endpoint, container)
    assert any(k.startswith("team/obs/toy-ocean.icechunk/") for k in keys)  # the data set, an Icechunk repository
    records = sorted(k for k in keys if k.startswith("team/runs/backtests/el_nino/"))
    assert [k.rsplit("/", 1)[1] for k in records] == ["evaluation.nc", "forecasts.nc", "record.json"]
    assert not (tmp_path / "a" / "obs").exists()

    # machine B: another local side sees the data set and the record, and ranks alike
    monkeypatch.setenv("CLIMATE_ML_LOCAL_DIR", str(tmp_path / "b"))
    store_b = Store.at(url)
    assert store_b.root == tmp_path / "b" and "toy-ocean" in store_b.obs_names() and store_b.has_obs("toy-ocean")
    assert main(["leaderboard", "el_nino", "--json", "--store", url]) == 0
    assert json.loads(capsys.readouterr().out) == board_a
    cached = store_b.record_files("el_nino")
    assert len(cached) == 1 and cached[0].is_relative_to(tmp_path / "b")

    # a record still being uploaded (no record.json yet) is not read
    from azure.storage.blob import BlobServiceClient

    half = "team/runs/backtests/el_nino/29991231T000000000000Z-unfinished/forecasts.nc"
    BlobServiceClient(azure_endpoint, credential={"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY}
                      ).get_container_client(container).upload_blob(half, b"partial")
    assert store_b.record_files("el_nino") == cached

    # a run report: kept on the local side, its copy in the container
    report = store_b.run_dir("monthly-el_nino")
    (report / "plots").mkdir()
    (report / "plots" / "outlook.png").write_bytes(b"png")
    (report / "monthly.json").write_text("{}")
    assert store_b.publish_run(report) == f"{url}/runs/{report.name}"
    assert {k for k in container_keys(azure_endpoint, container) if f"/{report.name}/" in k} == \
        {f"team/runs/{report.name}/monthly.json", f"team/runs/{report.name}/plots/outlook.png"}


def test_the_archive_alone_in_azure_writes_and_reads_back(azure_endpoint, tmp_path, monkeypatch):
    """``CLIMATE_ML_ARCHIVE_URL=az://...`` (given as a connection string, the way Azure's tools
    print one): the rest of the store stays on disk."""
    container = new_container(azure_endpoint, monkeypatch, "archive")
    for k in ("AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_ENDPOINT"):
        monkeypatch.delenv(k)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING",
                       f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
                       f"BlobEndpoint={azure_endpoint};")
    monkeypatch.setenv("CLIMATE_ML_ARCHIVE_URL", f"az://{container}/forecasts")
    root = tmp_path / "store"
    assert str(Store.at(root).archive("el_nino")) == f"az://{container}/forecasts/el_nino.icechunk"
    assert write_forecast(root, "el_nino", "m1", small_forecast(["2020-01-01", "2020-02-01"]), {"model": "m1"}) == "created"
    assert write_forecast(root, "el_nino", "m1", small_forecast(["2020-01-01"]), {"model": "m1"}) == "unchanged"
    assert write_forecast(root, "el_nino", "m1", small_forecast(["2020-03-01"], 2.0), {"model": "m1"}) == "updated"
    keys = container_keys(azure_endpoint, container)
    assert keys and all(k.startswith("forecasts/el_nino.icechunk/") for k in keys)
    assert not (root / "archive").exists()
    ds = query(root, "el_nino", model="m1")
    assert pd.DatetimeIndex(ds[INIT].values).strftime("%Y-%m").tolist() == ["2020-01", "2020-02", "2020-03"]
    assert float(ds.forecast.sel(model="m1", init_time="2020-03-01", lead=3)) == pytest.approx(4.0)
    assert [h["metadata"].get("action") for h in history(root, "el_nino")][:2] == ["updated", "created"]


def test_bad_azure_urls_missing_credentials_and_an_unreachable_endpoint_are_one_line_errors(tmp_path, monkeypatch,
                                                                                          capsys):
    for k in ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY",
              "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_ENDPOINT"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("CLIMATE_ML_LOCAL_DIR", str(tmp_path / "local"))
    # container names as Azure allows them: 3-63 lower-case letters, digits and single hyphens
    for url in ("az://Bad_Container/x", "az://ab/x", "az://a--b/x", "az://box/../x", "abfs://box/x"):
        monkeypatch.setenv("CLIMATE_ML_ARCHIVE_URL", url)
        assert main(["archive", "history", "el_nino", "--store", str(tmp_path / "s")]) != 0
        err = capsys.readouterr().err.strip()
        assert "CLIMATE_ML_ARCHIVE_URL" in err and len(err.splitlines()) == 1, err
    monkeypatch.delenv("CLIMATE_ML_ARCHIVE_URL")

    # no account named anywhere
    assert main(["leaderboard", "el_nino", "--store", "az://box/team"]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: az://box/team/") and err.endswith(
        ": an az:// store needs AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT_NAME with "
        "AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_TOKEN") and "\n" not in err, err

    # nothing listens at the endpoint: records and the archive both fail in one line, nothing written
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", AZURITE_ACCOUNT)
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", AZURITE_KEY)
    endpoint = f"http://127.0.0.1:{free_port()}/{AZURITE_ACCOUNT}"
    monkeypatch.setenv("AZURE_STORAGE_ENDPOINT", endpoint)
    with pytest.raises(StoreError, match=rf"^az://box/team/runs/backtests/el_nino: the object store at "
                                         rf"{endpoint} refused or cannot be reached") as caught:
        Store.at("az://box/team").record_files("el_nino")
    assert "\n" not in str(caught.value)
    monkeypatch.setenv("CLIMATE_ML_ARCHIVE_URL", "az://box/forecasts")
    root = tmp_path / "disk"
    with pytest.raises(StoreError, match=rf"object store at {endpoint} cannot be reached") as caught:
        write_forecast(root, "el_nino", "m1", small_forecast(["2020-01-01"]), {"model": "m1"})
    assert "\n" not in str(caught.value)
    assert not (root / "archive").exists()


def test_the_azure_account_comes_from_a_connection_string_or_the_separate_variables(monkeypatch):
    for k in ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY",
              "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_ENDPOINT"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING",
                       "DefaultEndpointsProtocol=https;AccountName=acme;AccountKey=a2V5;EndpointSuffix=core.windows.net")
    assert AzureAccount.from_env() == AzureAccount("acme", "https://acme.blob.core.windows.net", "a2V5", None)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "BlobEndpoint=https://blobs.example/acme/;"
                                                          "SharedAccessSignature=sv=2024&sig=x;AccountName=acme")
    assert AzureAccount.from_env() == AzureAccount("acme", "https://blobs.example/acme", None, "sv=2024&sig=x")
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "AccountKey=a2V5")
    with pytest.raises(StoreError, match="AZURE_STORAGE_CONNECTION_STRING: no AccountName"):
        AzureAccount.from_env()
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "acme")
    monkeypatch.setenv("AZURE_STORAGE_SAS_TOKEN", "?sv=2024&sig=y")
    assert AzureAccount.from_env() == AzureAccount("acme", "https://acme.blob.core.windows.net", None, "sv=2024&sig=y")
