"""Time the fit and forecast of the index ConvLSTMs on the run's embedded data: models/convlstm.py
(El Nino: toy ocean SST anomaly maps with the toy heat content) and models/convlstm_rain.py
(California rainfall: toy precipitation with the toy ocean as predictor), trained on every month
up to --fit-end, as the run flow fits them per fold. CPU by default; CLIMATE_ML_DEVICE=cuda on a
GPU.

    python benchmarks/convlstm_index_fit.py [--fit-end 2010-01] [--repeat 2]

For a machine without the store's packages (zarr, netCDF4), such as a lent GPU machine:
`--save-inputs DIR` here writes each model's training and forecast inputs as NetCDF-3 files
(readable with scipy), and `--inputs DIR` there reads them instead of building them.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import xarray as xr

ROOT = Path(__file__).resolve().parents[1]
WORKS = {"convlstm": "el_nino", "convlstm_rain": "california_rainfall"}


def build_inputs(fit_end: str) -> dict[str, tuple[xr.Dataset, xr.DataArray, xr.Dataset]]:
    """(X_train, y_train, X of the next 12 inits) per model, from the problems' default data."""
    from climate_ml.problems import get_problem
    from climate_ml.workflows import problem_inputs

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model, problem_name in WORKS.items():
            problem = get_problem(problem_name)
            _, _, prepared = problem_inputs(Path(tmp), problem)
            fold = problem.fold_data(prepared, fit_end)
            X, y = fold.training_set()
            inits = prepared["time"].sel(time=slice(fit_end, None)).values[:12]
            out[model] = (X.load(), y.load(), fold.test_set(inits).load())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fit-end", default="2010-01")
    ap.add_argument("--repeat", type=int, default=2, help="fits per model (the first includes any warm-up)")
    ap.add_argument("--save-inputs", type=Path, help="write the inputs to this folder and stop")
    ap.add_argument("--inputs", type=Path, help="read the inputs from a --save-inputs folder")
    args = ap.parse_args()
    if args.inputs:
        inputs = {m: (xr.load_dataset(args.inputs / f"{m}-X.nc"), xr.load_dataarray(args.inputs / f"{m}-y.nc"),
                      xr.load_dataset(args.inputs / f"{m}-Xtest.nc")) for m in WORKS}
    else:
        inputs = build_inputs(args.fit_end)
    if args.save_inputs:
        args.save_inputs.mkdir(parents=True, exist_ok=True)
        for m, (X, y, X_test) in inputs.items():
            X.to_netcdf(args.save_inputs / f"{m}-X.nc", engine="scipy")
            y.to_netcdf(args.save_inputs / f"{m}-y.nc", engine="scipy")
            X_test.to_netcdf(args.save_inputs / f"{m}-Xtest.nc", engine="scipy")
        print(f"wrote the inputs of {', '.join(inputs)} to {args.save_inputs}")
        return

    import torch

    from climate_ml.model_api import load_model_factory

    device = os.environ.get("CLIMATE_ML_DEVICE", "cpu")
    where = torch.cuda.get_device_name() if device.startswith("cuda") else "1 CPU thread, as the model sets"
    for model, (X, y, X_test) in inputs.items():
        factory = load_model_factory(ROOT / "models" / f"{model}.py")
        fits = []
        for _ in range(args.repeat):
            tic = time.perf_counter()
            fitted = factory().fit(X, y)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            fits.append(time.perf_counter() - tic)
        tic = time.perf_counter()
        fitted.predict(X_test)
        predict = time.perf_counter() - tic
        grid = f"{X.sizes.get('lat', '?')} x {X.sizes.get('lon', '?')}"
        print(f"{model} ({WORKS[model]}) on {device} ({where}): {X.sizes['init_time']} training inits, maps {grid}, "
              f"fit {' / '.join(f'{s:.1f}' for s in fits)} s, forecast of {X_test.sizes['init_time']} inits "
              f"{predict * 1000:.0f} ms", file=sys.stdout)


if __name__ == "__main__":
    main()
