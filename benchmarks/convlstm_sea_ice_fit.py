"""Time and memory of one fit of the sea-ice ConvLSTM (models/convlstm_sea_ice.py) on the real
NSIDC-0051 maps (448 x 304 at 25 km), trained on every month up to --fit-end, and of its
forecasts from the following inits: epoch time, fit time, predict time per init, peak memory
(RSS of this process; the GPU's peak allocation when CLIMATE_ML_DEVICE=cuda).

    python benchmarks/convlstm_sea_ice_fit.py [--fit-end 2005-01] [--threads 2]
    CLIMATE_ML_DEVICE=cuda python benchmarks/convlstm_sea_ice_fit.py      # on a GPU

Needs ../shared/data (or CLIMATE_ML_REAL_DATA); ingests into a temporary store.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fit-end", default="2005-01")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    ap.add_argument("--inits", type=int, default=12, help="forecasts to time after the fit")
    args = ap.parse_args()
    os.environ["CLIMATE_ML_TORCH_THREADS"] = str(args.threads)
    import torch

    from climate_ml.catalog import load_catalog
    from climate_ml.ingest import ingest_entry
    from climate_ml.model_api import load_model_factory
    from climate_ml.sea_ice_fields import concentration_field
    from climate_ml.store import open_obs

    name = "nsidc-0051-monthly-north-local"
    with tempfile.TemporaryDirectory() as tmp:
        ingest_entry(load_catalog()[name], Path(tmp))
        conc, area = concentration_field(open_obs(Path(tmp), name))
        conc, area = conc.load(), area.load()
    times = pd.DatetimeIndex(conc["time"].values)
    i_end = times.get_loc(pd.Timestamp(args.fit_end))
    model = load_model_factory(ROOT / "models" / "convlstm_sea_ice.py")()
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
    print(f"sea-ice ConvLSTM on {device} ({args.threads} CPU threads), grid {conc.sizes['y']} x {conc.sizes['x']} "
          f"coarsened {model.coarsen}x, {len(model.seeds)} members x {model.epochs} epochs, "
          f"training up to {args.fit_end}: fit {fit_s:.0f} s, epoch median {np.median(epochs):.2f} s, "
          f"predict {predict_s * 1000:.0f} ms per init, peak RSS {rss:.0f} MB{gpu}", file=sys.stdout)


if __name__ == "__main__":
    main()
