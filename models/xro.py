"""XRO, the extended nonlinear recharge oscillator (Zhao et al. 2024, Nature 630, 891-898), as
a reference for El Nino: the field's own implementation from the ``xro`` package (``XRO``),
fitted on every training window, not re-implemented here.

State vector (the first two are ENSO's T and H, as XRO requires):
- T: the Nino 3.4 anomaly of the target data set (``X["nino34"]`` at lag 0, against the
  training window's climatology);
- H: the first heat-content predictor found, in the order of ``HEAT_CONTENT`` (ORAS5 ``WWV``,
  CRO ``Hm``, PMEL ``wwv_c``, then ``Hw`` and ``wwv_w``). Without one, the two leading EOF
  principal components of the SST field stand in for the recharge state (a linear-inverse-model
  flavour of XRO; the toy ocean has no heat content); with neither, ``fit`` raises;
- the climate-mode indices XRO knows, where a predictor data set has them (NPMM, SPMM, IOB,
  IOD, SIOD, TNA, ATL3, SASD). Other predictors (winds, further SST boxes) are not XRO's and
  are left out.

Every state variable is divided by its training-window standard deviation (XRO's fit is
equivariant to that; it keeps m^3 volumes and degC anomalies on one footing). The fit is
XRO's ``fit_matrix`` with a semi-annual seasonal cycle (ac_order=2), ENSO's quadratic terms
(``maskNT=['T2', 'TH']``) and, when IOD is in the state, its quadratic term
(``maskb=['IOD']``), as in the paper. The fit uses the longest stretch of complete months
before the training cut-off, starting in a January (XRO counts the seasonal cycle from the
first month). The deterministic forecast is XRO's noise-free run (``noise_type='zero'``);
``n_members > 0`` gives that many stochastic runs (red noise, seeded) as a ``member``
dimension. The target at lead L is the mean of the forecast Nino 3.4 anomaly over months
L-1, L and L+1 (XRO lead 0 is the observed state at the init).
"""

import contextlib
import io
import warnings

import numpy as np
import pandas as pd
import xarray as xr
from XRO import XRO

PROBLEMS = ("el_nino",)
HEAT_CONTENT = ("WWV", "Hm", "wwv_c", "Hw", "wwv_w")
MODES = ("NPMM", "SPMM", "IOB", "IOD", "SIOD", "TNA", "ATL3", "SASD")


class XROReference:
    def __init__(self, n_members: int = 0, ac_order: int = 2, seed: int = 0, min_years: int = 10):
        self.n_members = n_members
        self.ac_order = ac_order
        self.seed = seed
        self.min_years = min_years

    def _columns(self, X: xr.Dataset) -> dict[str, xr.DataArray]:
        """The state variables (init_time,) from X, T and H first."""
        cols = {"T": X["nino34"].sel(lag=0, drop=True)}
        preds = {v[len("pred_"):]: v for v in X.data_vars if v.startswith("pred_")}
        heat = next((h for h in HEAT_CONTENT if h in preds), None)
        if heat is not None:
            cols[heat] = X[preds[heat]].sel(predictor_lag=0, drop=True)
        elif "pc" in X:
            for mode in (1, 2):
                cols[f"pc{mode}"] = X["pc"].sel(mode=mode, pc_lag=0, drop=True)
        else:
            raise ValueError("XRO needs a heat-content predictor (e.g. WWV, Hm, wwv_c) or an SST field for its "
                             "recharge state; give one with --predictor-dataset")
        for mode in MODES:
            if mode in preds:
                cols[mode] = X[preds[mode]].sel(predictor_lag=0, drop=True)
        return cols

    def fit(self, X: xr.Dataset, y: xr.DataArray) -> "XROReference":
        self.leads_ = y["lead"].values
        cols = self._columns(X)
        self.names_ = list(cols)
        table = pd.DataFrame({k: v.values for k, v in cols.items()}, index=pd.DatetimeIndex(X["init_time"].values))
        table = table.reindex(pd.date_range(table.index[0], table.index[-1], freq="MS"))
        complete = table.notna().all(axis=1).values
        # the last stretch of complete months, from a January
        end = len(table) - 1 - int(np.argmax(complete[::-1]))
        start = end
        while start > 0 and complete[start - 1]:
            start -= 1
        while table.index[start].month != 1:
            start += 1
        train = table.iloc[start:end + 1]
        if len(train) < 12 * self.min_years:
            raise ValueError(f"XRO needs {self.min_years} years of complete state variables; found {len(train)} months")
        self.scale_ = train.std().to_numpy(copy=True)
        self.scale_[self.scale_ == 0] = 1.0
        state = xr.Dataset({n: ("time", train[n].values / s) for n, s in zip(self.names_, self.scale_, strict=True)},
                           coords={"time": train.index})
        self.model_ = XRO(ncycle=12, ac_order=self.ac_order)
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # XRO prints notes on its masks
            warnings.simplefilter("ignore")
            self.fit_ = self.model_.fit_matrix(state, maskb=["IOD"] if "IOD" in self.names_ else None,
                                               maskNT=["T2", "TH"])
        return self

    def predict(self, X: xr.Dataset) -> xr.DataArray:
        cols = self._columns(X)
        values = np.column_stack([cols[n].values / s for n, s in zip(self.names_, self.scale_, strict=True)])
        inits = pd.DatetimeIndex(X["init_time"].values)
        n_month = int(max(self.leads_)) + 1
        members = max(self.n_members, 1)
        out = np.empty((len(inits), len(self.leads_), members))
        # ENSO's quadratic terms overflow from a far-off state (the lookahead guard probes with
        # perturbed data): numpy's warnings are left out, and a forecast that is not finite fails
        # the contract's check with its own one-line error
        with warnings.catch_warnings(), np.errstate(over="ignore", invalid="ignore"):
            warnings.simplefilter("ignore", FutureWarning)
            for i, t in enumerate(inits):
                # XRO's own integrator, one init at a time (``reforecast`` loops over it and concatenates)
                fc = self.model_._integration_forecast(
                    self.fit_, values[i], t.month - 1, n_month=n_month, ncopy=members,
                    seed=self.seed + i, noise_type="red" if self.n_members else "zero")
                T = fc.sel(ranky=1).transpose("lead", "member").values * self.scale_[0]  # XRO lead 0..n_month
                for j, lead in enumerate(self.leads_):
                    out[i, j] = T[lead - 1: lead + 2].mean(axis=0)
        da = xr.DataArray(out, dims=("init_time", "lead", "member"),
                          coords={"init_time": X["init_time"].values, "lead": self.leads_, "member": np.arange(members)})
        return da if self.n_members else da.isel(member=0, drop=True)


def make_model():
    return XROReference()
