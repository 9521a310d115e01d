"""Storage safety: atomic swaps, crash recovery, concurrent writers."""

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from climate_ml import store as store_mod
from climate_ml.errors import IngestError, StoreError
from climate_ml.ingest import ingest_file
from climate_ml.store import Store, open_obs
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
    final = Store.at(store).obs("a")
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


# -- the Store object: layout, names, atomic records --

NAMES = st.one_of(st.text(max_size=120), st.sampled_from(["..", "../evil", "/etc/passwd", "a/b", "a\\b", "", ".hidden",
                                                           "x" * 101, "sst..", "ñame", "ok-name_1.v2"]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=NAMES)
def test_every_path_the_store_makes_is_inside_it_or_a_one_line_error(tmp_path, name):
    store = Store(tmp_path / "store")
    for make in (store.obs, store.archive, store.raw, store.records, store.run_dir):
        try:
            path = make(name)
            path = path.path if make == store.archive else path  # the archive's folder (no archive URL set)
        except StoreError as exc:
            assert "\n" not in str(exc) and "name" in str(exc)
            continue
        assert path.resolve().is_relative_to(store.root) and path.resolve() != store.root
        assert name in path.name  # the name is the last part, never a folder above it


def test_the_store_is_made_once_and_travels_by_its_folder(tmp_path, monkeypatch):
    store = Store(tmp_path / "s")
    assert Store.at(store) is store  # a shell's Store passes through the library untouched
    assert Store.at(tmp_path / "s") == store and Store.at(str(tmp_path / "s")) == store
    monkeypatch.setenv("CLIMATE_ML_STORE", str(tmp_path / "env"))
    assert Store.at(None).root == (tmp_path / "env").resolve()
    assert pickle.loads(pickle.dumps(store)) == store  # to worker processes
    assert os.fspath(store) == str(store.root)
    with pytest.raises(StoreError, match="unknown record kind 'nope'"):
        store.records("el_nino", "nope")


def test_a_record_appears_whole_or_not_at_all(tmp_path):
    store = Store(tmp_path / "s")
    with pytest.raises(RuntimeError, match="killed while writing"):
        with store.new_record("el_nino", "abc123") as (folder, final):
            (folder / "forecasts.nc").write_bytes(b"half")
            assert not final.exists() and store.record_files("el_nino") == []  # readers see nothing yet
            raise RuntimeError("killed while writing")
    assert not final.exists() and list(store.records("el_nino").iterdir()) == []  # no temporary left
    with store.new_record("el_nino", "abc123") as (folder, final):
        (folder / "record.json").write_text("{}")
    assert store.record_files("el_nino") == [final / "record.json"]
    assert final.parent == store.records("el_nino") and final.name.endswith("-abc123")


def test_a_store_root_is_a_folder_a_file_url_or_an_s3_url_and_nothing_else(tmp_path, monkeypatch):
    """``--store gs://bucket/x`` used to become a local folder named 'gs:'; now it is a one-line
    error and nothing is written; a file:// URL is its folder; an s3:// URL is a store in object
    storage whose local side is CLIMATE_ML_LOCAL_DIR."""
    assert Store.at(f"file://{tmp_path}/s").root == tmp_path / "s"
    monkeypatch.setenv("CLIMATE_ML_LOCAL_DIR", str(tmp_path / "local"))
    s3 = Store.at("s3://bucket/store")
    assert (s3.url, s3.root, str(s3)) == ("s3://bucket/store", tmp_path / "local", "s3://bucket/store")
    assert (s3.obs_url, s3.archive_url, s3.records_url) == ("s3://bucket/store/obs", "s3://bucket/store/archive",
                                                            "s3://bucket/store/runs")
    assert pickle.loads(pickle.dumps(s3)) == s3
    monkeypatch.delenv("CLIMATE_ML_LOCAL_DIR")
    assert Store.at("s3://bucket/store").root.parts[-3:] == ("climate-ml", "bucket", "store")
    with pytest.raises(StoreError) as caught:
        Store.at("s3://Bad_Bucket/store")
    assert "(the store root)" in str(caught.value) and "\n" not in str(caught.value)
    p = subprocess.run([sys.executable, "-m", "climate_ml.cli", "archive", "history", "el_nino", "--store",
                        "gs://bucket/store"], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert p.returncode == 2 and p.stderr.strip() == ("error: store root 'gs://bucket/store': gs:// URLs are not "
                                                      "supported; give a local or shared file-system folder (or a "
                                                      "file:// URL), or an object store (s3://bucket/prefix "
                                                      "for S3-compatible stores, az://container/prefix for Azure "
                                                      "Blob Storage)")
    assert not (tmp_path / "gs:").exists()  # no 'gs:' folder in the working directory


def test_scratch_folders_are_private_and_gone_after_the_body_returns_or_raises(tmp_path):
    """What a run spills to disk lives in its own folder under the store's ``.scratch/`` and is
    removed however the run ends; a bad label is a one-line error and makes nothing."""
    s = Store(tmp_path / "root")
    with s.scratch("maps") as a, s.scratch("maps") as b:
        assert a != b and a.parent == b.parent == s.root / ".scratch" and a.is_dir() and b.is_dir()
        (a / "part").write_bytes(b"x" * 10)
    assert not a.exists() and not b.exists()
    with pytest.raises(RuntimeError, match="boom"), s.scratch("maps") as c:
        (c / "part").write_bytes(b"x")
        raise RuntimeError("boom")
    assert not c.exists() and not list((s.root / ".scratch").iterdir())
    with pytest.raises(StoreError, match="invalid scratch name"), s.scratch("../up"):
        pass
    assert not (tmp_path / "up").exists()


def test_scratch_left_by_a_killed_run_is_swept_and_a_live_runs_is_not(tmp_path):
    """A run killed while it spills (SIGKILL: no cleanup runs) leaves its scratch folder; the
    next run that asks for one removes it, because the operating system freed the dead run's
    lock. A run still alive in another process keeps its folder and its data."""
    import signal

    root = tmp_path / "root"
    code = (f"import sys, time; from climate_ml.store import Store\n"
            f"with Store({str(root)!r}).scratch('maps') as p:\n"
            f"    (p / 'part').write_bytes(b'x' * 1000); print(p, flush=True); time.sleep(600)\n")
    dead = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    live = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        dead_dir, live_dir = Path(dead.stdout.readline().strip()), Path(live.stdout.readline().strip())
        os.kill(dead.pid, signal.SIGKILL)
        dead.wait(timeout=30)
        assert (dead_dir / "part").exists()  # nothing cleaned up after a SIGKILL
        with Store(root).scratch("maps") as mine:
            assert not dead_dir.exists() and (live_dir / "part").read_bytes() == b"x" * 1000 and mine.is_dir()
        assert store_mod.sweep_scratch(root / ".scratch") == 0 and live_dir.is_dir()
    finally:
        live.kill()
        live.wait(timeout=30)
    assert store_mod.sweep_scratch(root / ".scratch") == 1 and not live_dir.exists()
    assert sorted(p.name for p in (root / ".scratch").iterdir()) == []


def test_a_record_being_written_is_not_listed_until_it_is_renamed_into_place(tmp_path):
    """A writer fills a hidden temporary folder, ``record.json`` included, before its rename: a
    reader listing the records meanwhile must not take it (it used to, ``*/record.json`` matching
    the temporary too)."""
    store = Store.at(tmp_path / "s")
    with store.new_record("el_nino", "key1") as (folder, final):
        (folder / "record.json").write_text("{}")
        assert store.record_files("el_nino") == []
    assert store.record_files("el_nino") == [final / "record.json"]


@pytest.mark.parametrize("damage,why", [
    (lambda d: (d / "sst" / "zarr.json").write_text("{bad"), "JSONDecodeError"),
    (lambda d: (d / "zarr.json").unlink(), "GroupNotFoundError"),
    (lambda d: (d / "sst" / "zarr.json").write_text("{}"), "MetadataValidationError"),
    (lambda d: (d / "time" / "zarr.json").unlink(), "its 'time' coordinate is missing or unreadable"),  # read as 1970
    (lambda d: __import__("shutil").rmtree(d / "lat"), "its 'lat' coordinate is missing or unreadable"),
    (lambda d: __import__("shutil").rmtree(d / "sst"), "it holds no variable"),
])
def test_a_damaged_data_set_is_named_and_never_appended_to(tmp_path, store, damage, why):
    """Damaged metadata was a bare JSONDecodeError or StopIteration (exit 1), and a lost time
    coordinate was read silently as months from 1970."""
    ingest_file(write_ersst_like(tmp_path / "a.nc", n_months=24), "sst", "a", store)
    damage(store / "obs" / "a.zarr")
    before = tree_digest(store / "obs")
    pattern = rf"^stored data set 'a' is damaged \(.*a\.zarr: {why}.*\); restore it from a backup, or delete the folder"
    with pytest.raises(StoreError, match=pattern):
        open_obs(store, "a")
    with pytest.raises(StoreError, match=pattern):
        ingest_file(write_ersst_like(tmp_path / "b.nc", n_months=36), "sst", "a", store)
    assert tree_digest(store / "obs") == before


def _first_chunk(folder):
    return sorted(p for p in (folder / "sst" / "c").rglob("*") if p.is_file())[0]


@pytest.mark.parametrize("damage,found", [
    (lambda f: f.unlink(), "1 files of"),  # read back as a run of missing months
    (lambda f: f.write_bytes(f.read_bytes()[:100]), "2 files of"),  # truncated: a decompression error, not named
])
def test_a_lost_or_truncated_chunk_is_found_on_open(tmp_path, store, damage, found):
    """Each write on disk records how many chunk files of how many bytes each array has. A lost
    chunk file used to read silently as missing values (Zarr's fill value), and a truncated one
    as a codec error that named no file."""
    ingest_file(write_ersst_like(tmp_path / "a.nc", n_months=150), "sst", "a", store)  # 2 chunks of 120 months
    ingest_file(write_ersst_like(tmp_path / "b.nc", n_months=160), "sst", "a", store)  # an append records it again
    assert open_obs(store, "a").sizes["time"] == 160 and "chunk_files" not in open_obs(store, "a").attrs
    damage(_first_chunk(store / "obs" / "a.zarr"))
    with pytest.raises(StoreError, match=rf"^stored data set 'a' is damaged \(.*a\.zarr: the chunks of 'sst' are not "
                                         rf"those written: {found} \d+ bytes, where 2 files of \d+ bytes were written"):
        open_obs(store, "a")
