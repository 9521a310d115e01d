"""El Nino from ocean memory: index files with their quirks, predictor data sets, the XRO
reference and the lookahead guard over predictors."""

from __future__ import annotations

import json
import warnings

import netCDF4
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from climate_ml.backtest import backtest, lookahead_violations
from climate_ml.catalog import load_entry
from climate_ml.cli import main
from climate_ml.errors import ClimateMLError, IngestError, ModelError
from climate_ml.ingest import ingest_entry, ingest_file, standardise
from climate_ml.ingest.openers import detect_format
from climate_ml.model_api import check_prediction, load_model_factory
from climate_ml.problems.el_nino import ElNino
from climate_ml.schema import INIT
from climate_ml.store import open_obs
from climate_ml.synthetic import toy_heat_content, toy_ocean
from climate_ml.workflows import MODELS_DIR, registered_models
from conftest import tree_digest

PROBLEM = ElNino(leads=(1, 3, 6, 12))


def write_xro_like(path, start="1979-01", n=120, units_on_wwv="m", seed=0):
    """A small index file in the layout of the XRO indices file: anomalies labelled 'C', a
    non-dimension 'month' coordinate, standard_name values that are not CF names."""
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp(start)
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("time", n)
        t = nc.createVariable("time", "f4", ("time",))
        t.units, t.calendar = f"days since {t0:%Y-%m-%d} 00:00:00", "proleptic_gregorian"
        t[:] = [(t0 + pd.DateOffset(months=k) - t0).days for k in range(n)]
        m = nc.createVariable("month", "i4", ("time",))
        m[:] = [(t0.month - 1 + k) % 12 + 1 for k in range(n)]
        for name, units, scale in (("Nino34", "C", 1.0), ("WWV", units_on_wwv, 10.0), ("IOD", "C", 0.3)):
            v = nc.createVariable(name, "f4", ("time",))
            v.standard_name = "Sea Surface temperature" if units == "C" else "Depth of 20C isotherm"
            v.units = units
            v.coordinates = "month"
            v[:] = rng.normal(0, scale, n)
    return path


def write_cro_like(path, n=120):
    """Variables without any units attribute, as in the CRO file."""
    rng = np.random.default_rng(1)
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("time", n)
        t = nc.createVariable("time", "f4", ("time",))
        t.units, t.calendar = "days since 1958-01-01", "proleptic_gregorian"
        t[:] = [(pd.Timestamp("1958-01-01") + pd.DateOffset(months=k) - pd.Timestamp("1958-01-01")).days for k in range(n)]
        for name in ("Nino34", "Hm"):
            v = nc.createVariable(name, "f4", ("time",), fill_value=np.float32(1e20))
            v.long_name = name
            v[:] = rng.normal(0, 1, n)
    return path


PMEL_HEADER = ",wwv_c,wwv_c_anom,olr,u850_c,nino3.4"


def write_pmel_like(path):
    """Columns that start at different months, a first column without a header, months
    without a row (1978-03..1978-12 in the real file) and a gap inside one series (olr)."""
    rows = [PMEL_HEADER]
    months = [m for m in pd.date_range("1977-01", "1985-12", freq="MS") if not (m.year == 1978 and m.month > 2)]
    rng = np.random.default_rng(2)
    for m in months:
        wwv = f"{2.5e15 + rng.normal(0, 1e14):.6g}" if m >= pd.Timestamp("1980-01") else ""
        olr = f"{rng.normal(40, 5):.1f}" if m != pd.Timestamp("1983-06") else ""
        u = f"{rng.normal(8, 1):.1f}" if m >= pd.Timestamp("1979-01") else ""
        n34 = f"{rng.normal(27, 1):.2f}" if m >= pd.Timestamp("1982-01") else ""
        rows.append(f"{m:%Y-%m-%d},{wwv},{'' if not wwv else '1e13'},{olr},{u},{n34}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_xro_like_index_file_keeps_no_quirk(tmp_path, store):
    f = write_xro_like(tmp_path / "xro.nc")
    units = {"Nino34": "degC", "WWV": "m", "IOD": "degC"}
    res = ingest_file(f, "*", "modes", store, units=units, anomaly=True)
    assert res.action == "created"
    ds = open_obs(store, "modes")
    assert set(ds.data_vars) == {"Nino34", "WWV", "IOD"}
    assert "month" not in ds.coords  # the non-dimension month coordinate is dropped
    assert ds["WWV"].attrs["units"] == "m" and ds["Nino34"].attrs["units"] == "degC"
    # "Sea Surface temperature" is not a CF standard name: kept for the record, never as standard_name
    assert "standard_name" not in ds["Nino34"].attrs
    assert ds["Nino34"].attrs["source_standard_name"] == "Sea Surface temperature"
    assert "producer's climatology" in ds["IOD"].attrs["anomaly"]
    # picking variables ingests exactly those
    ingest_file(f, ["WWV"], "wwv", store, units={"WWV": "m"})
    assert list(open_obs(store, "wwv").data_vars) == ["WWV"]


def test_declared_units_must_match_the_file(tmp_path, store):
    f = write_xro_like(tmp_path / "xro.nc", units_on_wwv="C")  # depth labelled degC
    before = tree_digest(store)
    with pytest.raises(IngestError, match="'WWV' is in 'C' but the catalog declares 'm'") as info:
        ingest_file(f, "*", "modes", store, units={"Nino34": "degC", "WWV": "m", "IOD": "degC"})
    assert "\n" not in str(info.value) and tree_digest(store) == before


def test_variables_without_units_need_declared_units(tmp_path, store):
    f = write_cro_like(tmp_path / "cro.nc")
    with pytest.raises(IngestError, match="'Nino34' has no units"):
        ingest_file(f, "*", "cro", store)
    with pytest.raises(IngestError, match="no units declared for Hm"):
        ingest_file(f, "*", "cro", store, units={"Nino34": "degC"})
    ingest_file(f, "*", "cro", store, units={"Nino34": "degC", "Hm": "m"})
    assert open_obs(store, "cro")["Hm"].attrs["units"] == "m"


def test_unknown_variable_is_refused(tmp_path, store):
    f = write_xro_like(tmp_path / "xro.nc")
    with pytest.raises(IngestError, match="variable 'WWV2' not found"):
        ingest_file(f, ["Nino34", "WWV2"], "x", store, units="degC")


def test_monthly_csv_with_staggered_starts_and_missing_rows(tmp_path, store):
    f = write_pmel_like(tmp_path / "pmel.csv")
    assert detect_format(f) == "monthly-csv"
    ingest_file(f, ["nino3.4", "wwv_c", "u850_c"], "pmel", store,
                units={"nino3.4": "degC", "wwv_c": "m3", "u850_c": "m s-1"})
    ds = open_obs(store, "pmel").load()
    t = pd.DatetimeIndex(ds.time.values)
    assert (f"{t[0]:%Y-%m}", f"{t[-1]:%Y-%m}") == ("1979-01", "1985-12")  # from the first value of the chosen columns
    assert ds["wwv_c"].sel(time="1979-12").isnull().all() and ds["wwv_c"].sel(time="1980-01").notnull().all()
    assert ds["wwv_c"].attrs["units"] == "m3" and ds["u850_c"].attrs["units"] == "m s-1"
    # a row missing is a missing month, not a silently shifted series
    ingest_file(f, ["olr"], "olr", store, units="W m-2")
    olr = open_obs(store, "olr").load()["olr"]
    assert olr.sel(time="1978-06").isnull().all() and olr.sel(time="1983-06").isnull().all()


def test_catalog_entries_for_the_index_files_validate():
    for name in ("xro-oras5-indices-local", "cro-oras5-heat-content-local", "pmel-cpc-enso-local", "toy-heat-content"):
        entry = load_entry(MODELS_DIR.parent / "catalog" / f"{name}.yaml")
        assert entry.name == name


def test_catalog_per_variable_units_must_cover_every_variable(tmp_path):
    from climate_ml.errors import CatalogError
    text = (MODELS_DIR.parent / "catalog" / "cro-oras5-heat-content-local.yaml").read_text()
    bad = tmp_path / "cro-oras5-heat-content-local.yaml"
    bad.write_text(text.replace("Hw: m}", "}").replace("Hw: depth_of_isosurface_of_sea_water_potential_temperature", ""))
    with pytest.raises(CatalogError, match="'units' has no entry for \\['Hw'\\]"):
        load_entry(bad)


# --- predictors -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def toy():
    sst = standardise(toy_ocean(start="1950-01", end="1999-12"), "sst")
    heat = standardise(toy_heat_content(start="1950-01", end="1999-12"), "WWV", units="m")
    return sst, heat


@pytest.fixture(scope="module")
def prepared(toy):
    sst, heat = toy
    return PROBLEM.prepare(sst, {"toy-heat-content": heat})


def test_predictors_join_the_features_at_lags(prepared):
    assert "pred_WWV" in prepared
    fold = PROBLEM.fold_data(prepared, "1985-01")
    assert list(fold.X["pred_WWV"]["predictor_lag"].values) == [0, 1, 2, 3]
    # lag 1 at an init is lag 0 a month earlier: only the past is read
    x = fold.X["pred_WWV"]
    np.testing.assert_allclose(x.sel(predictor_lag=1).values[1:], x.sel(predictor_lag=0).values[:-1])


def test_training_starts_where_every_predictor_exists(toy):
    sst, heat = toy
    late = heat.sel(time=slice("1962-01", None))  # the heat content starts 12 years after the SST
    prepared = PROBLEM.prepare(sst, {"late": late})
    X, _ = PROBLEM.fold_data(prepared, "1985-01").training_set()
    # lags 0-3 of the predictor need 1962-01..1962-04
    assert pd.Timestamp(X[INIT].values[0]) == pd.Timestamp("1962-04-01")


def test_a_gap_inside_a_predictor_is_refused(toy):
    sst, heat = toy
    gappy = heat.copy(deep=True)
    gappy["WWV"] = gappy["WWV"].where(gappy.time != np.datetime64("1970-05-01"))
    with pytest.raises(ClimateMLError, match="'gappy': variable 'WWV' has 1 missing months inside its record "
                                             "\\(first 1970-05\\)"):
        PROBLEM.prepare(sst, {"gappy": gappy})


def test_a_predictor_that_does_not_overlap_is_refused(toy):
    sst, heat = toy
    later = heat.assign_coords(time=pd.date_range("2030-01", periods=heat.sizes["time"], freq="MS"))
    with pytest.raises(ClimateMLError, match="does not overlap the target period 1950-01..1999-12"):
        PROBLEM.prepare(sst, {"later": later})


def test_target_from_an_index_file(tmp_path):
    f = write_xro_like(tmp_path / "xro.nc", n=240)
    raw = xr.open_dataset(f)
    obs = xr.merge([standardise(raw, v, units=u) for v, u in (("Nino34", "degC"), ("WWV", "m"), ("IOD", "degC"))])
    prepared = ElNino().prepare(obs)  # Nino34 is the target: its name matches
    assert set(prepared.data_vars) == {"nino34", "pred_WWV", "pred_IOD"}
    with pytest.raises(ClimateMLError, match="target variable 'nino3.4' is not in the data set \\(variables: IOD, Nino34, WWV\\)"):
        ElNino(target_variable="nino3.4").prepare(obs)
    prepared = ElNino(target_variable="IOD").prepare(obs)
    assert "pred_Nino34" in prepared


def test_every_el_nino_model_ignores_predictor_data_after_the_init(prepared):
    """The lookahead guard covers predictors: noise in any variable after the init (the
    heat content included) must not change the forecast, for every El Nino model."""
    for name, path in registered_models("el_nino").items():
        factory = load_model_factory(path)
        bad = lookahead_violations(PROBLEM, factory, prepared, ["1990-07"], "1990-01")
        assert bad == [], f"{name}: {bad}"


def test_xro_contract_and_members(prepared):
    factory = load_model_factory(MODELS_DIR / "xro.py")
    fold = PROBLEM.fold_data(prepared, "1990-01")
    X, y = fold.training_set()
    model = factory()
    assert not [k for k in vars(model) if k.endswith("_")]  # __init__ stores hyper-parameters only
    assert model.fit(X, y) is model
    assert model.names_[:2] == ["T", "WWV"]  # ENSO's T and H first, as XRO requires
    test = fold.test_set(pd.date_range("1990-01", "1990-12", freq="MS"))
    det = model.predict(test)
    assert det.dims == ("init_time", "lead") and np.isfinite(det.values).all()
    # from a far-off state ENSO's quadratic terms overflow: no numpy warnings in the log (the
    # lookahead guard's perturbed probes printed hundreds in a run), and the contract's check
    # refuses the forecast with one line
    far = test.assign(nino34=test["nino34"] * 1e3, pred_WWV=test["pred_WWV"] * 1e3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        blown = model.predict(far)
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]
    with pytest.raises(ModelError, match="xro: prediction contains NaN or infinite values"):
        check_prediction(blown, far, PROBLEM.leads, "xro")
    model.n_members = 8
    ens = model.predict(test)
    assert ens.sizes["member"] == 8 and float(ens.std("member").mean()) > 0.05
    # with a recharge state the reference has skill on the toy ocean
    res = backtest(PROBLEM, {"xro": factory, "persistence": registered_models()["persistence"]}, prepared,
                   "1985-01", "1999-06", refit_every=60)
    acc = {n: res.scores(n)["acc"] for n in res.forecasts}
    assert acc["xro"]["6"] > acc["persistence"]["6"] + 0.1


def test_cli_bad_predictor_data_set_exit_2_nothing_changed(tmp_path, capsys):
    store = tmp_path / "store"
    f = write_xro_like(tmp_path / "late.nc", start="2040-01")
    assert main(["ingest", "--file", str(f), "--variable", "WWV", "--units", "m", "--name", "late", "--store", str(store)]) == 0
    assert main(["ingest", "toy-ocean", "--store", str(store)]) == 0
    capsys.readouterr()
    before = tree_digest(store)
    code = main(["backtest", "el_nino", "models/persistence.py", "--dataset", "toy-ocean", "--predictor-dataset", "late",
                 "--store", str(store), "--no-record"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert err.startswith("error: toy-ocean with predictors late for el_nino: predictor 'late' (variable 'WWV') does not overlap")
    assert tree_digest(store) == before
    code = main(["backtest", "el_nino", "models/persistence.py", "--dataset", "late", "--target-variable", "Nino34",
                 "--store", str(store), "--no-record"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "target variable 'Nino34' is not in the data set (variables: WWV)" in err and "late" in err
    assert tree_digest(store) == before


def test_cli_backtest_with_heat_content_json(tmp_path, capsys):
    store = tmp_path / "store"
    code = main(["backtest", "el_nino", "models/xro.py", "--predictor-dataset", "toy-heat-content", "--test-start", "2015-01",
                 "--refit-every", "60", "--json", "--store", str(store), "--no-blend"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "xro" and out["scores"]["acc"]["1"] > 0.5


def test_toy_heat_content_entry_ingests(store):
    from climate_ml.catalog import get_entry
    ingest_entry(get_entry("toy-heat-content"), store)
    ds = open_obs(store, "toy-heat-content")
    assert list(ds.data_vars) == ["WWV"] and ds["WWV"].attrs["units"] == "m"
    assert ds["WWV"].attrs["source_standard_name"] == "Depth of 20C isotherm"
