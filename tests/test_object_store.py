"""A store in object storage (moto's S3 server, a real S3 endpoint in its own process on
loopback). With ``CLIMATE_ML_OBS_URL`` every data set is an Icechunk repository in a bucket:
ingest creates, is idempotent and appends there, one commit each; what it stores reads back
equal to the same ingest on disk; a backtest and a Dask cluster's worker processes read it; bad
input and bad URLs are one-line errors that leave the stored data set as it was. With
``--store s3://bucket/prefix`` the whole store is there: two machines (two local sides) share
the data sets and the leaderboard's records."""

import json
import pickle
import time

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from climate_ml.cli import main
from climate_ml.errors import ClimateMLError, StoreError
from climate_ml.ingest import ingest_file
from climate_ml.store import Store, obs_version, open_obs, repository, write_obs
from conftest import bucket_keys, new_bucket, write_ersst_like


@pytest.fixture
def object_obs(s3_endpoint, tmp_path, monkeypatch):
    """(store root on disk, bucket): the store's observations live under s3://bucket/obs."""
    bucket = new_bucket(s3_endpoint, monkeypatch, "obs")
    monkeypatch.setenv("CLIMATE_ML_OBS_URL", f"s3://{bucket}/obs")
    return tmp_path / "store", bucket


@pytest.fixture(scope="module")
def object_obs_session(s3_endpoint, tmp_path_factory):
    """A store whose observations live in one bucket for the whole module (hypothesis runs many
    examples in one test call, where a function-scoped monkeypatch does not fit)."""
    with pytest.MonkeyPatch.context() as mp:
        bucket = new_bucket(s3_endpoint, mp, "prop")
        yield Store(tmp_path_factory.mktemp("prop-store"), obs_url=f"s3://{bucket}/obs")


def _ingest(path, store, name="sst"):
    return ingest_file(path, "sst", name, store)


def _same(a: xr.Dataset, b: xr.Dataset) -> None:
    xr.testing.assert_identical(a.drop_attrs().load(), b.drop_attrs().load())


def test_ingest_creates_is_idempotent_and_appends_in_the_bucket_as_on_disk(object_obs, s3_endpoint, tmp_path,
                                                                           monkeypatch):
    root, bucket = object_obs
    first = write_ersst_like(tmp_path / "a.nc", n_months=36)
    longer = write_ersst_like(tmp_path / "b.nc", n_months=60)  # the same 36 months, then 24 more
    store = Store.at(root)
    assert store.obs_where("sst") == f"s3://{bucket}/obs/sst.icechunk"

    created = _ingest(first, root)
    assert (created.action, created.n_time, created.path) == ("created", 36, f"s3://{bucket}/obs/sst.icechunk")
    v1 = obs_version(root, "sst")
    assert v1 and store.has_obs("sst") and not store.has_obs("other")
    assert _ingest(first, root).action == "unchanged"
    assert obs_version(root, "sst") == v1  # nothing committed
    appended = _ingest(longer, root)
    assert (appended.action, appended.n_time, appended.n_new) == ("appended", 60, 24)
    assert obs_version(root, "sst") != v1

    keys = bucket_keys(s3_endpoint, bucket)
    assert keys and all(k.startswith("obs/sst.icechunk/") for k in keys)
    assert not (root / "obs").exists()  # nothing of the data set on disk

    # the same two ingests into a store on disk give the same data set
    monkeypatch.delenv("CLIMATE_ML_OBS_URL")
    disk = tmp_path / "disk"
    _ingest(first, disk)
    _ingest(longer, disk)
    monkeypatch.setenv("CLIMATE_ML_OBS_URL", f"s3://{bucket}/obs")
    s3 = open_obs(root, "sst")
    _same(s3, xr.open_zarr(disk / "obs" / "sst.zarr", consolidated=False))
    assert [h.split(" ", 1)[1].split(" from ")[0] for h in s3.attrs["history"]] == \
        ["created", "appended 24 months (2003-01..2004-12)"]
    assert s3.attrs["source"].endswith("b.nc") and s3.attrs["source_sha256"]
    # the repository's history: one commit per write that changed something
    repo = repository(store.obs_repo("sst"), what="data set")
    messages = [s.message for s in repo.ancestry(branch="main")]
    assert messages[0].startswith("appended 24 months") and messages[1].startswith("created from")


def test_revised_months_in_the_bucket_are_one_commit_and_the_one_before_keeps_the_old_values(object_obs, tmp_path):
    from climate_ml.catalog import CatalogEntry
    from climate_ml.ingest import ingest_entry

    root, _ = object_obs
    _ingest(write_ersst_like(tmp_path / "a.nc", n_months=36), root)
    later = write_ersst_like(tmp_path / "b.nc", n_months=38)
    ds = xr.open_dataset(later, decode_times=False).load()
    ds.close()
    ds["sst"][35] = ds["sst"][35] - 0.25  # the producer revises the last stored month
    ds.to_netcdf(later)
    entry = CatalogEntry(name="sst", description="x", source={"path": str(later)}, format="cf-netcdf", variable="sst",
                         units="degC", license="x", citation="x", revisions="accept")
    res = ingest_entry(entry, root)
    assert (res.action, res.n_revised, res.n_new, res.n_time) == ("revised", 1, 2, 38)
    repo = repository(Store.at(root).obs_repo("sst"), what="data set")
    snapshots = list(repo.ancestry(branch="main"))
    assert snapshots[0].message.startswith("revised 1 month (2002-12..2002-12; largest change sst 0.25 degC); "
                                           "appended 2 months from ")
    old = xr.open_zarr(repo.readonly_session(snapshot_id=snapshots[1].id).store, consolidated=False).load()
    new = open_obs(root, "sst").load()
    assert float(abs(old.sst.isel(time=35) - new.sst.isel(time=35) - 0.25).max()) < 1e-5
    _same(old.isel(time=slice(0, 35)), new.isel(time=slice(0, 35)))


def test_bad_input_is_a_one_line_error_and_the_stored_data_set_stays_as_it_was(object_obs, s3_endpoint, tmp_path):
    root, bucket = object_obs
    _ingest(write_ersst_like(tmp_path / "a.nc", n_months=36), root)
    version, before = obs_version(root, "sst"), open_obs(root, "sst").load()

    cases = [
        # other values for months already stored
        (write_ersst_like(tmp_path / "other.nc", n_months=48, seed=7), "different values for months already stored"),
        # a gap after the stored months
        (write_ersst_like(tmp_path / "gap.nc", n_months=12, start="2004-01"), "leaving a gap after the stored 2002-12"),
        # another variable name inside the file (no 'sst')
        (write_ersst_like(tmp_path / "var.nc", variable="temp"), "variable 'sst' not found \\(variables: temp\\)"),
    ]
    for path, message in cases:
        with pytest.raises(ClimateMLError, match=message) as err:
            _ingest(path, root)
        assert "\n" not in str(err.value)
        assert obs_version(root, "sst") == version
        _same(open_obs(root, "sst"), before)

    # a data set whose only variable has no valid value: refused before anything is committed
    with pytest.raises(StoreError, match="variable 'sst' has no valid values") as err:
        write_obs(xr.full_like(open_obs(root, "sst"), np.nan).load(), root, "blank", {"source": "blank"})
    assert "\n" not in str(err.value)
    assert not Store.at(root).has_obs("blank") and obs_version(root, "blank") is None
    with pytest.raises(StoreError, match=r"unknown dataset 'blank': nothing stored at s3://.*/obs/blank.icechunk "
                                         r"\(stored: sst; ingest it first\)"):
        open_obs(root, "blank")
    assert Store.at(root).obs_names() == ["sst"]
    assert not [k for k in bucket_keys(s3_endpoint, bucket) if "blank" in k]  # nothing of 'blank' reached the bucket


def test_a_writer_elsewhere_that_commits_first_wins_and_this_ingest_is_a_one_line_error(object_obs, tmp_path,
                                                                                      monkeypatch):
    """The store's file lock does not reach another machine: there Icechunk refuses the second
    commit. Here the other writer's commit lands while this ingest is between opening its
    session and committing (a real commit to the same repository)."""
    import zarr

    import climate_ml.store as store_module

    root, _ = object_obs
    _ingest(write_ersst_like(tmp_path / "a.nc", n_months=36), root)
    at = Store.at(root).obs_repo("sst")
    plan = store_module._months_to_append

    def planned_while_another_commits(existing, ds, where, revisions):
        extra = plan(existing, ds, where, revisions)
        theirs = repository(at, what="data set").writable_session("main")
        zarr.open_group(theirs.store, mode="r+").attrs.update({"reviewed_by": "another machine"})
        theirs.commit("theirs")
        return extra

    monkeypatch.setattr(store_module, "_months_to_append", planned_while_another_commits)
    with pytest.raises(StoreError, match="another writer changed the data set while this one wrote; nothing was "
                                         "written") as err:
        _ingest(write_ersst_like(tmp_path / "b.nc", n_months=60), root)
    assert "\n" not in str(err.value)
    ds = open_obs(root, "sst")
    assert ds.sizes["time"] == 36 and ds.attrs["reviewed_by"] == "another machine"  # theirs stands, mine is absent


def test_a_backtest_reads_the_bucket_and_gives_the_numbers_of_the_store_on_disk(object_obs, tmp_path, monkeypatch,
                                                                                 capsys):
    """``backtest`` ingests the catalog's toy data set into the bucket (it is not stored yet) and
    scores the same as a store on disk."""
    root, bucket = object_obs
    args = ["backtest", "el_nino", "models/damped_persistence.py", "--test-start", "2015-01", "--test-end",
            "2016-12", "--json"]
    assert main([*args, "--store", str(root)]) == 0
    s3 = json.loads(capsys.readouterr().out)
    assert Store.at(root).has_obs("toy-ocean") and not (root / "obs").exists()
    monkeypatch.delenv("CLIMATE_ML_OBS_URL")
    assert main([*args, "--store", str(tmp_path / "disk")]) == 0
    disk = json.loads(capsys.readouterr().out)
    assert s3["scores"] == disk["scores"] and s3["n_verified"] == disk["n_verified"]
    assert min(s3["n_verified"].values()) > 0


def test_worker_processes_of_a_dask_cluster_read_the_bucket(object_obs, tmp_path):
    from dask.distributed import Client, LocalCluster, get_task_stream

    root, _ = object_obs
    _ingest(write_ersst_like(tmp_path / "a.nc", n_months=36), root)
    store = Store.at(root)
    assert pickle.loads(pickle.dumps(store)) == store  # a worker's store reads the same bucket
    ds = open_obs(store, "sst")
    local = float(ds["sst"].mean().compute(scheduler="sync"))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        with get_task_stream(client) as stream:
            on_workers = float(ds["sst"].mean().compute())
        workers = set(client.scheduler_info()["workers"])
    assert on_workers == pytest.approx(local, rel=1e-12)
    assert stream.data and {t["worker"] for t in stream.data} <= workers  # the reads ran in the worker processes


@pytest.mark.parametrize("url", ["s3://Bad_Bucket/obs", "gs://bucket/obs", "s3://bucket/../obs"])
def test_bad_obs_urls_are_one_line_errors(url, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CLIMATE_ML_OBS_URL", url)
    assert main(["ingest", "toy-ocean", "--store", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert "CLIMATE_ML_OBS_URL" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "s" / "obs").exists()


def test_a_whole_store_in_a_bucket_is_shared_by_two_machines(s3_endpoint, tmp_path, monkeypatch, capsys):
    """Machine A backtests into ``s3://bucket/team``; machine B (another local side) sees its
    data set and its leaderboard record, and prints the same leaderboard as A. A record that is
    still being uploaded (no ``record.json`` yet) is not read."""
    bucket = new_bucket(s3_endpoint, monkeypatch, "team")
    url = f"s3://{bucket}/team"
    monkeypatch.setenv("CLIMATE_ML_LOCAL_DIR", str(tmp_path / "a"))
    assert main(["backtest", "el_nino", "models/damped_persistence.py", "--test-start", "2015-01", "--test-end",
                 "2016-12", "--store", url]) == 0
    err = capsys.readouterr().err
    assert f"recorded in {url}/runs/backtests/el_nino/" in err
    assert main(["leaderboard", "el_nino", "--json", "--store", url]) == 0
    board_a = json.loads(capsys.readouterr().out)

    keys = bucket_keys(s3_endpoint, bucket)
    assert any(k.startswith("team/obs/toy-ocean.icechunk/") for k in keys)
    records = sorted(k for k in keys if k.startswith("team/runs/backtests/el_nino/"))
    assert [k.rsplit("/", 1)[1] for k in records] == ["evaluation.nc", "forecasts.nc", "record.json"]
    assert not (tmp_path / "a" / "obs").exists()  # the local side holds downloads, locks, the cache

    monkeypatch.setenv("CLIMATE_ML_LOCAL_DIR", str(tmp_path / "b"))
    store_b = Store.at(url)
    assert store_b.has_obs("toy-ocean") and store_b.root == tmp_path / "b"
    assert main(["leaderboard", "el_nino", "--json", "--store", url]) == 0
    assert json.loads(capsys.readouterr().out) == board_a
    cached = store_b.record_files("el_nino")
    assert len(cached) == 1 and cached[0].is_relative_to(tmp_path / "b")

    # an upload in progress: its other files are there, its record.json not yet
    import boto3

    half = "team/runs/backtests/el_nino/29991231T000000000000Z-unfinished/forecasts.nc"
    boto3.client("s3", endpoint_url=s3_endpoint).put_object(Bucket=bucket, Key=half, Body=b"partial")
    assert store_b.record_files("el_nino") == cached
    assert not (tmp_path / "b" / "runs" / "backtests" / "el_nino" / "29991231T000000000000Z-unfinished").exists()

    # many readers of one machine fetching the same new record at once: each sees it, none fails
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setenv("CLIMATE_ML_LOCAL_DIR", str(tmp_path / "c"))
    with ThreadPoolExecutor(8) as pool:
        seen = list(pool.map(lambda _: [f.parent.name for f in Store.at(url).record_files("el_nino")], range(16)))
    assert seen == [[cached[0].parent.name]] * 16
    assert sorted(p.name for p in (tmp_path / "c" / "runs" / "backtests" / "el_nino").iterdir()) == \
        [cached[0].parent.name]  # one copy, no temporaries left

    # a flow's run report: written on the local side, then its copy kept in the bucket
    report = store_b.run_dir("monthly-el_nino")
    (report / "monthly.json").write_text("{}")
    (report / "plots").mkdir()
    (report / "plots" / "outlook.png").write_bytes(b"png")
    assert store_b.publish_run(report) == f"{url}/runs/{report.name}"
    assert {k for k in bucket_keys(s3_endpoint, bucket) if f"/{report.name}/" in k} == \
        {f"team/runs/{report.name}/monthly.json", f"team/runs/{report.name}/plots/outlook.png"}
    disk = Store.at(tmp_path / "disk")
    assert disk.publish_run(disk.run_dir("x")).startswith(str(tmp_path / "disk" / "runs"))  # on disk: the folder


def test_an_unreachable_object_store_is_a_one_line_error(tmp_path, monkeypatch):
    from conftest import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
                 "CLIMATE_ML_LOCAL_DIR": str(tmp_path / "local")}.items():
        monkeypatch.setenv(k, v)
    # (the archive's Icechunk path to an unreachable endpoint: tests/test_object_archive.py)
    with pytest.raises(StoreError, match=r"^s3://nowhere/team/runs/backtests/el_nino: the object store at "
                                         r"http://127.0.0.1:\d+ refused or cannot be reached") as caught:
        Store.at("s3://nowhere/team").record_files("el_nino")
    assert "\n" not in str(caught.value)


@settings(max_examples=8, deadline=None)
@given(n1=st.integers(12, 30), extra=st.integers(0, 14), repeats=st.integers(1, 2))
def test_ingest_into_the_bucket_is_idempotent_property(object_obs_session, tmp_path_factory, n1, extra, repeats):
    """In object storage as on disk: a prefix of the months, then the whole file (any number of
    times), equals the whole file ingested once; each re-ingest that adds nothing commits
    nothing. (Appends land inside a partly filled chunk or past it, as ``n1`` falls.)"""
    d = tmp_path_factory.mktemp("prop")
    full = write_ersst_like(d / "full.nc", n_months=n1 + extra)
    part = write_ersst_like(d / "part.nc", n_months=n1)
    name = f"x{time.time_ns()}"
    _ingest(part, object_obs_session, name)
    versions = set()
    for _ in range(repeats):
        _ingest(full, object_obs_session, name)
        versions.add(obs_version(object_obs_session, name))
    assert len(versions) == 1  # the repeats after the first made no commit
    once = f"y{time.time_ns()}"
    _ingest(full, object_obs_session, once)
    _same(open_obs(object_obs_session, name), open_obs(object_obs_session, once))
