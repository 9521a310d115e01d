"""Time and memory of one fit of the sea-ice ConvLSTM (models/convlstm_sea_ice.py) on the real
NSIDC-0051 maps (448 x 304 at 25 km), trained on every month up to --fit-end, and of its
forecasts from the following inits: epoch time, fit time, predict time per init, peak memory
(RSS of this process; the GPU's peak allocation when CLIMATE_ML_DEVICE=cuda).

    python benchmarks/convlstm_sea_ice_fit.py [--fit-end 2005-01] [--threads 2] [--coarsen 8]
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
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def ingest_maps():
    from climate_ml.catalog import load_catalog
    from climate_ml.ingest import ingest_entry
    from climate_ml.sea_ice_fields import concentration_field
    from climate_ml.store import open_obs

    name = "nsidc-0051-monthly-north-local"
    with tempfile.TemporaryDirectory() as tmp:
        ingest_entry(load_catalog()[name], Path(tmp))
        conc, area = concentration_field(open_obs(Path(tmp), name))
        return conc.load(), area.load()


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fit-end", default="2005-01")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    ap.add_argument("--inits", type=int, default=12, help="forecasts to time after the fit")
    ap.add_argument("--coarsen", type=int, default=None, help="training block size in cells (model default 8)")
    ap.add_argument("--save-maps", type=Path, help="write the maps the benchmark needs to this .npz and stop")
    ap.add_argument("--maps", type=Path, help="read the maps from a --save-maps file instead of ingesting")
    args = ap.parse_args()
    os.environ["CLIMATE_ML_TORCH_THREADS"] = str(args.threads)
    import torch

    from climate_ml.model_api import load_model_factory

    if args.maps:
        conc, area = read_maps(args.maps)
    else:
        conc, area = ingest_maps()
    times = pd.DatetimeIndex(conc["time"].values)
    i_end = times.get_loc(pd.Timestamp(args.fit_end))
    if args.save_maps:
        save_maps(args.save_maps, conc.isel(time=slice(0, i_end + 1 + args.inits)), area)
        return
    options = {} if args.coarsen is None else {"coarsen": args.coarsen}
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
          f"predict {predict_s * 1000:.0f} ms per init, peak RSS {rss:.0f} MB{gpu}", file=sys.stdout)


if __name__ == "__main__":
    main()
