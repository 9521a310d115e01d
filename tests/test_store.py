"""Storage safety: atomic swaps, crash recovery, concurrent writers."""

import os
import subprocess
import sys

import pytest
import xarray as xr

from climate_ml import store as store_mod
from climate_ml.errors import IngestError
from climate_ml.ingest import ingest_file
from climate_ml.store import obs_path, open_obs
from conftest import tree_digest, write_ersst_like


def test_failed_write_leaves_store_and_no_temp(tmp_path, store, monkeypatch):
    ingest_file(write_ersst_like(tmp_path / "a.nc", n_months=24), "sst", "a", store)
    before = tree_digest(store / "obs")

    def boom(tmp, final):
        raise OSError("disk full (simulated)")
    monkeypatch.setattr(store_mod, "swap_in", boom)
    with pytest.raises(IngestError, match=r"b.nc: ingest failed while streaming .*disk full \(simulated\)"):
        ingest_file(write_ersst_like(tmp_path / "b.nc", n_months=36), "sst", "a", store)
    assert tree_digest(store / "obs") == before
    assert [p.name for p in (store / "obs").iterdir()] == ["a.zarr"]  # temp copy removed


def test_crash_between_renames_is_recovered(tmp_path, store):
    ingest_file(write_ersst_like(tmp_path / "a.nc"), "sst", "a", store)
    expected = open_obs(store, "a").load()
    final = obs_path(store, "a")
    os.replace(final, final.with_name(final.name + ".old"))  # as if killed after the first rename
    xr.testing.assert_identical(open_obs(store, "a").load(), expected)


def test_concurrent_ingests_are_serialised(tmp_path, store):
    f = write_ersst_like(tmp_path / "a.nc", n_months=60)
    code = ("import sys; from pathlib import Path; from climate_ml.ingest import ingest_file; "
            "print(ingest_file(Path(sys.argv[1]), 'sst', 'a', Path(sys.argv[2])).action)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(f), str(store)], stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    actions = sorted(p.communicate(timeout=120)[0].strip() for p in procs)
    assert actions == ["created", "unchanged", "unchanged"]
    assert open_obs(store, "a").sizes["time"] == 60
