import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from climate_ml.catalog import CatalogEntry
from climate_ml.errors import ClimateMLError, IngestError, StoreError
from climate_ml.ingest import ingest_entry, ingest_file
from climate_ml.store import open_obs
from conftest import expect_clean_error, tree_digest, write_ersst_like, write_psl_index


def test_standardises_descending_lat_and_kelvin(tmp_path, store):
    f = write_ersst_like(tmp_path / "k.nc", units="K")
    res = ingest_file(f, "sst", "k", store)
    ds = open_obs(store, "k").load()
    assert res.action == "created"
    assert (np.diff(ds.lat.values) > 0).all()
    assert ds.sst.attrs["units"] == "degC"
    assert 20 < float(ds.sst.mean()) < 35  # converted from ~300 K
    assert ds.sst.attrs["source_units"] == "K"


def test_wraps_longitudes_to_0_360(tmp_path, store):
    f = write_ersst_like(tmp_path / "w.nc", lon_180=True)
    ingest_file(f, "sst", "w", store)
    lon = open_obs(store, "w").lon.values
    assert lon.min() >= 0 and lon.max() < 360 and (np.diff(lon) > 0).all()


def test_360_day_calendar_to_month_starts(tmp_path, store):
    f = write_ersst_like(tmp_path / "c.nc", calendar="360_day", start="1980-01", n_months=30)
    ingest_file(f, "sst", "c", store)
    t = pd.DatetimeIndex(open_obs(store, "c").time.values)
    assert t[0] == pd.Timestamp("1980-01-01") and t[-1] == pd.Timestamp("1982-06-01")
    assert (t.day == 1).all()


def _iri_months_file(path, calendar: str, units: str = "months since 1960-01-01", n_months: int = 27):
    """SST in the IRI Data Library's layout: T in 'months since 1960-01-01' at mid-month
    (0.5, 1.5, ...), its calendar written "360", lat/lon named Y/X."""
    rng = np.random.default_rng(1)
    t = xr.Variable("T", np.arange(n_months) + 0.5, {"units": units, "calendar": calendar})
    xr.Dataset({"sst": (("T", "Y", "X"), 27 + rng.normal(0, 1, (n_months, 3, 4)).astype("float32"),
                        {"units": "Celsius_scale"})},
               coords={"T": t, "Y": [-5.0, 0.0, 5.0], "X": [190.0, 200.0, 210.0, 220.0]}).to_netcdf(path)
    return path


def test_iri_data_library_months_since_in_its_360_calendar(tmp_path, store):
    """xarray refused these files (calendar '360' is IRI's name for 360_day)."""
    ingest_file(_iri_months_file(tmp_path / "iri.nc", "360"), "sst", "iri", store, units="degC")
    ds = open_obs(store, "iri")
    t = pd.DatetimeIndex(ds.time.values)
    assert t[0] == pd.Timestamp("1960-01-01") and t[-1] == pd.Timestamp("1962-03-01") and t.size == 27
    assert ds.sst.dims == ("time", "lat", "lon")


@pytest.mark.parametrize("calendar,units,message", [
    ("standard", "months since 1960-01-01", "a 'months since' axis needs calendar 360_day"),
    ("360", "fortnights since 1960-01-01", "not CF time units"),
])
def test_unreadable_time_units_name_the_axis(tmp_path, store, calendar, units, message):
    ingest_file(write_ersst_like(tmp_path / "good.nc"), "sst", "good", store)
    f = _iri_months_file(tmp_path / "m.nc", calendar, units)
    expect_clean_error(store, tree_digest(store), IngestError,
                       rf"m.nc: cannot read the time axis 'T': units '{units}' with calendar '{calendar}': {message}",
                       lambda: ingest_file(f, "sst", "good", store, units="degC"))


def test_land_code_becomes_nan(tmp_path, store):
    f = write_ersst_like(tmp_path / "l.nc", land_value=0.0)
    entry = CatalogEntry(name="l", description="x", source={"path": str(f)}, format="cf-netcdf", variable="sst",
                         units="degC", license="x", citation="x", land_value=0.0)
    ingest_entry(entry, store)
    sst = open_obs(store, "l").sst.load()
    assert int(sst.isel(time=0).isnull().sum()) == 1
    assert int(sst.notnull().isel(time=0).sum()) == sst.lat.size * sst.lon.size - 1


def test_reingest_changes_nothing(tmp_path, store):
    f = write_ersst_like(tmp_path / "a.nc")
    ingest_file(f, "sst", "a", store)
    before = tree_digest(store / "obs")
    res = ingest_file(f, "sst", "a", store)
    assert res.action == "unchanged"
    assert tree_digest(store / "obs") == before


def test_new_months_are_appended(tmp_path, store):
    ingest_file(write_ersst_like(tmp_path / "a.nc", n_months=24), "sst", "a", store)
    first = open_obs(store, "a").load()
    res = ingest_file(write_ersst_like(tmp_path / "b.nc", n_months=30), "sst", "a", store)
    assert res.action == "appended" and res.n_new == 6
    ds = open_obs(store, "a").load()
    assert ds.sizes["time"] == 30
    xr.testing.assert_equal(ds.sst.isel(time=slice(0, 24)), first.sst)
    # the append keeps what the first write recorded (xarray's append used to replace it) and adds
    # one line of history and this source's provenance
    assert [h.split(" ", 1)[1].split(" from ")[0] for h in ds.attrs["history"]] == \
        ["created", "appended 6 months (2002-01..2002-06)"]
    assert ds.attrs["ingest_time"] == first.attrs["ingest_time"] and ds.attrs["climate_ml_version"]
    assert ds.attrs["source"].endswith("b.nc") and ds.attrs["last_append_time"]


def test_revised_values_are_refused_and_store_kept(tmp_path, store):
    ingest_file(write_ersst_like(tmp_path / "a.nc", seed=0), "sst", "a", store)
    before = tree_digest(store / "obs")
    with pytest.raises(StoreError, match="different values for months already stored"):
        ingest_file(write_ersst_like(tmp_path / "b.nc", seed=1), "sst", "a", store)
    assert tree_digest(store / "obs") == before


def _revise(path, months, by):
    """The file a producer republishes: ``by`` added to the given months (indices), nothing else."""
    ds = xr.open_dataset(path, decode_times=False).load()
    ds.close()
    ds["sst"][months] = ds["sst"][months] + by
    ds.to_netcdf(path)
    return path


def test_revisions_are_taken_where_the_source_says_its_producer_revises(tmp_path, store):
    """A producer that revises published months (ERSST's latest months, the Sea Ice Index when
    near-real-time months become final): with ``revisions="accept"`` the store takes the new
    values of exactly those months, appends the new ones in the same write, and its history says
    which months and by how much; the other months are untouched. The default still refuses."""
    first = write_ersst_like(tmp_path / "a.nc", n_months=36)
    ingest_file(first, "sst", "a", store)
    stored = open_obs(store, "a").load()
    later = _revise(write_ersst_like(tmp_path / "b.nc", n_months=40), [33, 35], 0.5)  # two of the last months, 4 new

    def write(revisions):
        entry = CatalogEntry(name="a", description="x", source={"path": str(later)}, format="cf-netcdf",
                             variable="sst", units="degC", license="x", citation="x", revisions=revisions)
        return ingest_entry(entry, store)

    before = tree_digest(store / "obs")
    with pytest.raises(StoreError, match=r"different values for months already stored \(variable 'sst', first at "
                                         r"2002-10\); refusing to overwrite \(a catalog entry whose producer revises"):
        write("refuse")
    assert tree_digest(store / "obs") == before
    res = write("accept")
    assert (res.action, res.n_revised, res.n_new, res.n_time) == ("revised", 2, 4, 40)
    now = open_obs(store, "a").load()
    xr.testing.assert_equal(now.sst.isel(time=slice(0, 33)), stored.sst.isel(time=slice(0, 33)))
    xr.testing.assert_equal(now.sst.isel(time=34), stored.sst.isel(time=34))  # between the two revised months
    assert float(abs(now.sst.isel(time=[33, 35]) - stored.sst.isel(time=[33, 35]) - 0.5).max()) < 1e-5
    kept = sorted((store / "obs" / "a.revisions").iterdir())  # the values replaced, kept beside the data set
    assert len(kept) == 1 and kept[0].name.endswith("Z.nc")
    assert now.sizes["time"] == 40 and now.attrs["history"][-2].split(" ", 1)[1] == \
        (f"revised 2 months (2002-10..2002-12; largest change sst 0.5 degC; the replaced values in "
         f"obs/a.revisions/{kept[0].name}) from {later}")
    replaced = xr.load_dataset(kept[0])
    xr.testing.assert_identical(replaced.sst, stored.sst.isel(time=[33, 35]))  # exactly the revised months, as stored
    assert now.attrs["history"][-1].split(" ", 1)[1].startswith("appended 4 months (2003-01..2003-04)")
    assert write("accept").action == "unchanged"  # the same copy again: nothing to revise


def test_a_revision_that_fails_keeps_no_replaced_values_and_changes_nothing(tmp_path, store, monkeypatch):
    """The replaced values are written first, under a temporary name, and named only once the
    revision is in: a write that fails leaves the data set as it was and no revisions folder."""
    import climate_ml.store as store_module

    ingest_file(write_ersst_like(tmp_path / "a.nc", n_months=36), "sst", "a", store)
    later = _revise(write_ersst_like(tmp_path / "b.nc", n_months=36), [30], 0.5)
    before = tree_digest(store / "obs")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(store_module, "_write_revised", broken)
    entry = CatalogEntry(name="a", description="x", source={"path": str(later)}, format="cf-netcdf", variable="sst",
                         units="degC", license="x", citation="x", revisions="accept")
    with pytest.raises(IngestError, match=r"ingest failed while streaming the data into the store \(OSError: disk full\)"):
        ingest_entry(entry, store)
    assert tree_digest(store / "obs") == before and not (store / "obs" / "a.revisions").exists()
    monkeypatch.undo()
    assert ingest_entry(entry, store).action == "revised"
    assert len(list((store / "obs" / "a.revisions").iterdir())) == 1


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n_stored=st.integers(130, 400), n_new=st.integers(0, 30), data=st.data())
def test_an_accepted_revision_leaves_the_store_equal_to_the_source_property(tmp_path_factory, n_stored, n_new, data):
    """Whatever months are revised (spanning several stored chunks of 120 months, starting and
    ending inside them), the store afterwards holds exactly the source: the revised months, the
    ones between them and the new ones; and only the revised months count as revised."""
    from climate_ml.store import write_obs

    d = tmp_path_factory.mktemp("rev")
    time = pd.date_range("1950-01", periods=n_stored + n_new, freq="MS")
    values = np.arange(n_stored + n_new, dtype="float32")
    source = xr.Dataset({"nino34": ("time", values, {"units": "degC"})}, coords={"time": time})
    write_obs(source.isel(time=slice(0, n_stored)), d, "i", {"source": "first"})
    revised = sorted(data.draw(st.sets(st.integers(0, n_stored - 1), min_size=1, max_size=40)))
    later = source.copy(deep=True)
    later["nino34"][revised] = later["nino34"][revised] + 0.25
    res = write_obs(later, d, "i", {"source": "later"}, revisions="accept")
    assert (res.action, res.n_revised, res.n_new, res.n_time) == ("revised", len(revised), n_new, n_stored + n_new)
    np.testing.assert_array_equal(open_obs(d, "i")["nino34"].values, later["nino34"].values)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n1=st.integers(12, 30), extra=st.integers(0, 12), repeats=st.integers(1, 3))
def test_ingest_is_idempotent_property(tmp_path_factory, n1, extra, repeats):
    """Ingesting a prefix then the full file (any number of times) equals ingesting the full file once."""
    d = tmp_path_factory.mktemp("prop")
    full = write_ersst_like(d / "full.nc", n_months=n1 + extra)
    part = write_ersst_like(d / "part.nc", n_months=n1)
    ingest_file(part, "sst", "x", d / "s1")
    for _ in range(repeats):
        ingest_file(full, "sst", "x", d / "s1")
    ingest_file(full, "sst", "x", d / "s2")
    a, b = open_obs(d / "s1", "x").load(), open_obs(d / "s2", "x").load()
    xr.testing.assert_equal(a.sst, b.sst)


def test_psl_index_text_format(tmp_path, store):
    f = write_psl_index(tmp_path / "nina34.data")
    ingest_file(f, "nino34", "psl", store, units="degC")
    ds = open_obs(store, "psl").load()
    assert ds.sizes["time"] == 5 * 12 - 3  # trailing missing months dropped
    assert pd.Timestamp(ds.time.values[0]) == pd.Timestamp("1990-01-01")


# --- bad input: one clear error each, store unchanged ---------------------------------------

@pytest.fixture
def populated(tmp_path, store):
    ingest_file(write_ersst_like(tmp_path / "good.nc"), "sst", "good", store)
    return store, tree_digest(store)


def _expect(store_and_digest, exc, pattern, call):
    expect_clean_error(*store_and_digest, exc, pattern, call)


def test_truncated_netcdf(tmp_path, populated):
    f = write_ersst_like(tmp_path / "t.nc")
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    _expect(populated, IngestError, r"t.nc: not a readable NetCDF file",
            lambda: ingest_file(f, "sst", "good", populated[0]))


def test_garbage_file(tmp_path, populated):
    f = tmp_path / "g.nc"
    f.write_bytes(b"this is not netcdf at all" * 10)
    _expect(populated, IngestError, r"g.nc: not a readable NetCDF", lambda: ingest_file(f, "sst", "new", populated[0]))


def test_missing_variable(tmp_path, populated):
    f = write_ersst_like(tmp_path / "v.nc", variable="tos")
    _expect(populated, IngestError, r"v.nc: variable 'sst' not found \(variables: tos\)",
            lambda: ingest_file(f, "sst", "good", populated[0]))


def test_non_monthly_time_axis(tmp_path, populated):
    f = write_ersst_like(tmp_path / "d.nc", times=["2000-01-01", "2000-01-16", "2000-02-01"])
    _expect(populated, IngestError, r"d.nc: time axis is not monthly: 2000-01 appears twice",
            lambda: ingest_file(f, "sst", "good", populated[0]))


def test_gap_in_time_axis(tmp_path, populated):
    f = write_ersst_like(tmp_path / "gap.nc", times=["2000-01-01", "2000-02-01", "2000-05-01"])
    _expect(populated, IngestError, r"gap of 3 months after 2000-02",
            lambda: ingest_file(f, "sst", "good", populated[0]))


def test_unknown_units(tmp_path, populated):
    f = write_ersst_like(tmp_path / "u.nc", units="furlongs")
    _expect(populated, IngestError, r"u.nc: variable 'sst': unknown units 'furlongs'",
            lambda: ingest_file(f, "sst", "good", populated[0]))


def test_units_disagree_with_catalog(tmp_path, populated):
    f = write_ersst_like(tmp_path / "k.nc", units="K")
    entry = CatalogEntry(name="good", description="x", source={"path": str(f)}, format="cf-netcdf",
                         variable="sst", units="degC", license="x", citation="x")
    _expect(populated, IngestError, r"is in 'K' but the catalog declares 'degC'",
            lambda: ingest_entry(entry, populated[0]))


def test_missing_file(tmp_path, populated):
    _expect(populated, IngestError, r"nope.nc: file not found",
            lambda: ingest_file(tmp_path / "nope.nc", "sst", "good", populated[0]))


def test_unknown_dataset(populated):
    _expect(populated, StoreError, r"unknown dataset 'absent'.*stored: good", lambda: open_obs(populated[0], "absent"))


def test_truncated_psl_index(tmp_path, populated):
    f = write_psl_index(tmp_path / "p.data", first=1990, last=1995)
    f.write_text("\n".join(f.read_text().splitlines()[:3]) + "\n")
    _expect(populated, ClimateMLError, r"p.data: truncated: expected 6 year rows, found 2",
            lambda: ingest_file(f, "nino34", "psl", populated[0], units="degC"))


def test_file_cut_short_inside_its_data(tmp_path, populated):
    f = write_ersst_like(tmp_path / "cut.nc", n_months=400)
    data = f.read_bytes()
    f.write_bytes(data[: int(len(data) * 0.9)])
    _expect(populated, IngestError, r"cut.nc: (not a readable NetCDF file|ingest failed while streaming)",
            lambda: ingest_file(f, "sst", "cut", populated[0]))
