"""Time and memory of one fit of the sea-ice ConvLSTM (models/convlstm_sea_ice.py) on the real
NSIDC-0051 maps (448 x 304 at 25 km), trained on every month up to --fit-end, and of its
forecasts from the following inits: epoch time, fit time, predict time per init, peak memory
(RSS of this process; the GPU's peak allocation when CLIMATE_ML_DEVICE=cuda).

    python benchmarks/convlstm_sea_ice_fit.py [--fit-end 2005-01] [--threads 2] [--coarsen 8]
    python benchmarks/convlstm_sea_ice_fit.py --store STORE   # the maps read from a store's Zarr, in blocks
    python benchmarks/convlstm_sea_ice_fit.py --synthetic-months 2400 --epochs 2 --seeds 1   # a long toy record
    CLIMATE_ML_DEVICE=cuda python benchmarks/convlstm_sea_ice_fit.py      # on a GPU

Needs ../shared/data (or CLIMATE_ML_REAL_DATA); ingests into a temporary store. For a machine
without the store's packages (zarr, netCDF4), such as a lent GPU machine with only numpy, pandas,
xarray and torch: `--save-maps maps.npz` here writes the maps (losslessly, as NSIDC's bytes) and
`--maps maps.npz` there reads them instead of ingesting.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


NAME = "nsidc-0051-monthly-north-local"


def ingest_maps():
    from climate_ml.catalog import load_catalog
    from climate_ml.ingest import ingest_entry
    from climate_ml.sea_ice_fields import concentration_field
    from climate_ml.store import open_obs

    with tempfile.TemporaryDirectory() as tmp:
        ingest_entry(load_catalog()[NAME], Path(tmp))
        conc, area = concentration_field(open_obs(Path(tmp), NAME))
        return conc.load(), area.load()


def stored_maps(store: Path):
    """The maps of a store that holds the data set already: lazily (Dask over its Zarr chunks)."""
    from climate_ml.sea_ice_fields import concentration_field
    from climate_ml.store import open_obs

    conc, area = concentration_field(open_obs(store, NAME))
    return conc, area.load()


def save_maps(path: Path, conc, area) -> None:
    """NSIDC stores concentration as bytes (value / 250); keep them so, 255 for land."""
    scaled = np.where(np.isfinite(conc.values), np.round(conc.values * 250), 255).astype("uint8")
    np.savez_compressed(path, conc=scaled, time=conc["time"].values.astype("datetime64[M]").astype(str),
                        y=conc["y"].values, x=conc["x"].values, lat=conc["lat"].values,
                        lon=conc["lon"].values, cell_area=area.values)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {conc.sizes['time']} months)")


def read_maps(path: Path):
    import xarray as xr

    f = np.load(path)
    grid = {"y": f["y"], "x": f["x"], "lat": (("y", "x"), f["lat"]), "lon": (("y", "x"), f["lon"]),
            "cell_area": (("y", "x"), f["cell_area"])}
    conc = np.where(f["conc"] == 255, np.nan, f["conc"] / np.float32(250)).astype("float32")
    times = pd.DatetimeIndex(f["time"].astype("datetime64[M]"))
    conc = xr.DataArray(conc, dims=("time", "y", "x"), coords={"time": times, **grid}, name="seaice_conc")
    area = xr.DataArray(f["cell_area"], dims=("y", "x"), coords=grid, name="cell_area", attrs={"units": "m2"})
    return conc, area


def write_synthetic(path: Path, months: int, resolution_km: float) -> None:
    """A toy sea-ice record (``climate_ml.synthetic.toy_sea_ice``) of ``months`` months ending
    2016-12 written to a Zarr store a decade at a time (each decade its own draws), so that the
    writer never holds the stack either; chunks of 12 months, as the store keeps them."""
    from climate_ml.synthetic import toy_sea_ice

    times = pd.date_range(end="2016-12-01", periods=months, freq="MS")
    for k, start in enumerate(range(0, months, 120)):
        piece = times[start:start + 120]
        ds = toy_sea_ice(start=f"{piece[0]:%Y-%m}", end=f"{piece[-1]:%Y-%m}", resolution_m=resolution_km * 1000,
                         seed=k)[["cdr_seaice_conc"]].chunk({"time": 12})
        ds.to_zarr(path, mode="w" if k == 0 else "a", **({} if k == 0 else {"append_dim": "time"}), zarr_format=3,
                   consolidated=False)
        print(f"\rwrote {start + len(piece)} / {months} months", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)


def synthetic_maps(path: Path, resolution_km: float):
    import xarray as xr

    from climate_ml.synthetic import toy_sea_ice

    area = toy_sea_ice(start="2000-01", end="2000-01", resolution_m=resolution_km * 1000)["cell_area"]
    return xr.open_zarr(path, consolidated=False)["cdr_seaice_conc"], area


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fit-end", default="2005-01")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    ap.add_argument("--inits", type=int, default=12, help="forecasts to time after the fit")
    ap.add_argument("--coarsen", type=int, default=None, help="training block size in cells (model default 8)")
    ap.add_argument("--save-maps", type=Path, help="write the maps the benchmark needs to this .npz and stop")
    ap.add_argument("--maps", type=Path, help="read the maps from a --save-maps file instead of ingesting")
    ap.add_argument("--store", type=Path, help=f"a store that holds {NAME} already: the fit reads its maps from the "
                    "Zarr store a block of months at a time, as `forecast` does (default: ingest into a temporary "
                    "store and load the maps into memory)")
    ap.add_argument("--synthetic-months", type=int, help="instead of the real maps: write a toy record of this many "
                    "months ending 2016-12 to a temporary Zarr store (a child process writes it) and fit on all but "
                    "the last --inits months, read from the store in blocks")
    ap.add_argument("--resolution-km", type=float, default=25.0, help="grid of the toy record (default: NSIDC's 25 km)")
    ap.add_argument("--epochs", type=int, help="epochs per network (model default 30)")
    ap.add_argument("--seeds", type=int, help="networks (model default 3)")
    args = ap.parse_args()
    if args.synthetic_months and os.environ.get("_CLIMATE_ML_BENCH_WRITE"):
        write_synthetic(Path(os.environ["_CLIMATE_ML_BENCH_WRITE"]), args.synthetic_months, args.resolution_km)
        return
    os.environ["CLIMATE_ML_TORCH_THREADS"] = str(args.threads)
    import torch

    from climate_ml.model_api import load_model_factory

    if args.synthetic_months:
        scratch = tempfile.TemporaryDirectory()
        path = Path(scratch.name) / "toy.zarr"
        tic = time.perf_counter()
        subprocess.run([sys.executable, __file__, *sys.argv[1:]], check=True,
                       env={**os.environ, "_CLIMATE_ML_BENCH_WRITE": str(path)})
        conc, area = synthetic_maps(path, args.resolution_km)
        print(f"toy record written in {time.perf_counter() - tic:.0f} s: {conc.sizes['time']} months of "
              f"{conc.sizes['y']} x {conc.sizes['x']} ({conc.nbytes / 1e9:.2f} GB as float32)")
        args.fit_end = f"{pd.Timestamp(conc['time'].values[-1 - args.inits]):%Y-%m}"
    elif args.maps:
        conc, area = read_maps(args.maps)
    elif args.store:
        conc, area = stored_maps(args.store)
    else:
        conc, area = ingest_maps()
    times = pd.DatetimeIndex(conc["time"].values)
    i_end = times.get_loc(pd.Timestamp(args.fit_end))
    if args.save_maps:
        save_maps(args.save_maps, conc.isel(time=slice(0, i_end + 1 + args.inits)), area)
        return
    given = {"coarsen": args.coarsen, "epochs": args.epochs,
             "seeds": None if args.seeds is None else tuple(range(args.seeds))}
    options = {k: v for k, v in given.items() if v is not None}
    model = load_model_factory(ROOT / "models" / "convlstm_sea_ice.py")(**options)
    tic = time.perf_counter()
    model.fit(conc.isel(time=slice(0, i_end + 1)), area, range(1, 7))
    fit_s = time.perf_counter() - tic
    tic = time.perf_counter()
    for k in range(args.inits):
        model.predict(conc.isel(time=slice(0, i_end + 1 + k)))
    predict_s = (time.perf_counter() - tic) / args.inits
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    device = str(model.device)
    gpu = f", GPU peak {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" if device.startswith("cuda") else ""
    epochs = np.array(model.epoch_seconds_)
    name = torch.cuda.get_device_name() if device.startswith("cuda") else f"{args.threads} CPU threads"
    print(f"sea-ice ConvLSTM on {device} ({name}), grid {conc.sizes['y']} x {conc.sizes['x']} "
          f"coarsened {model.coarsen}x, {len(model.seeds)} networks x {model.epochs} epochs "
          f"({len(model.seeds) * model.draws} members), "
          f"training up to {args.fit_end}: fit {fit_s:.0f} s, epoch median {np.median(epochs):.2f} s, "
          f"predict {predict_s * 1000:.0f} ms per init, peak RSS {rss:.0f} MB{gpu}; maps "
          f"{'read from the Zarr store in blocks' if conc.chunks else 'in memory'} "
          f"({conc.isel(time=slice(0, i_end + 1)).nbytes / 1e6:.0f} MB as {conc.dtype})", file=sys.stdout)


if __name__ == "__main__":
    main()
