"""ConvLSTM (PyTorch) for Arctic sea-ice concentration maps at leads 1-6, with members.

A field model (``TARGET = "sea_ice_concentration"``): it is given the concentration maps up to
the fold's cut-off to fit, and the maps up to an init to forecast from, and returns
concentration maps ``(lead, member, y, x)`` on the data set's own grid (land NaN).

How it forecasts. The per-cell damped anomaly persistence reference (``climate_ml.sea_ice_fields``:
a linear trend per cell and calendar month, plus the departure from it at the init scaled by one
coefficient per init month and lead) is fitted on the training window and kept at the native
25 km resolution. The network learns what that reference misses: from the last ``frames``
months of departure and concentration maps, averaged to ``coarsen`` x ``coarsen`` blocks (200 km
by default), plus the ocean fraction and the calendar month, a convolutional LSTM (Shi et al.
2015) predicts the block-mean residual (observed departure at the valid month minus the damped
one) at every lead at once; the residual is interpolated back to the native grid and added.
The last layer starts at zero, so an untrained network is the reference itself.
``per_cell_damping=True`` builds on the reference with one damping per cell instead
(``models/damped_anomaly_persistence_per_cell.py``): the network then learns the block means of
that reference's 25 km residuals.

Members: ``seeds`` networks, each trained on its own bootstrap sample of the training inits
(bagging), so the networks differ by what they were trained on as well as by their start. Bagging
alone gives far too little spread (on the real maps 0.11-0.15 of the error of the mean), because
most of the error is in the 25 km reference and at the ice edge, which every network shares. So
each network's map is widened by its own out-of-sample error: the training inits left out of a
network's bootstrap sample (about a third) are forecast by it, and the root-mean-square error of
those maps per lead, valid calendar month (pooled with the months either side) and cell gives
the shape of the spread. Out-of-bag errors are too small (the neighbouring months of an
out-of-bag init, with nearly the same target maps, are in the sample, and the reference is
fitted on all of them: on the real maps this left a spread/skill ratio of 0.72-0.74), so one
more model, the first network alone with its own reference, is fitted without the last
``holdout`` share of the training months and forecasts each of them (its edge placed as below);
per lead, one factor widens the out-of-bag error to the spread ``sigma``: the factor with which
the members drawn around those maps, clipped to 0-1 as below, have an area-weighted variance
equal to the maps' area-weighted squared error (without clipping, the RMS of the errors over the
RMS of the out-of-bag error; next to open water the members are clipped, and the factor is
larger). Each network then gives ``draws`` members, its map
plus ``z * sigma`` for the ``draws`` normal quantiles z, scaled so that the members' variance
is m/(m+1) sigma^2 (m members), which is what members and an observation drawn from one
distribution have. Near 0 and 1 a network's members are shifted together and clipped so that
their mean stays the network's map (``centred_members``): the deterministic scores, which use
the member mean, are those of the networks' maps (with their edge placed, below), and next to open water only the upper members
show ice. ``draws=1`` keeps the bare bagged networks. Nothing of the test period is used: the errors are those of
training inits, seen only by the other networks or after the hold-out model's cut-off.

The ice edge. A map fitted for the squared error is blurred near the ice edge, and its 15%
contour is not where the observed edge most often is. So the same out-of-bag maps, where valid
in the last ten training years, also choose per lead and valid calendar month the threshold whose
contour had the least integrated ice-edge error (``sea_ice_fields.EdgeCalibration``), and each
network's map is moved monotonically so that this threshold becomes 15% (``remap_edge``; 0 and 1
stay) before the members are drawn around it. ``calibrate_edge=False`` keeps the plain maps; the
bare networks (``draws=1``) have no out-of-bag maps and are not calibrated.

``match_extent="forecast"`` (not the default) draws the edge by the amount of ice instead: the
extent of each month is forecast by damped anomaly persistence of the ice-covered fraction of
the ocean (``sea_ice_fields.ExtentForecast``, fitted on the training months), and the networks'
maps are moved (``remap_edge``) so that the 15% contour of their mean encloses that extent
(``threshold_at_extent``, within the thresholds the calibration chooses from): the network
decides where the ice is, the extent forecast how much. ``match_extent="mean"`` (not the default
either) draws it where the contour encloses the mean of that forecast and the extent of the
networks' own mean map, an equal-weight combination fixed before it was measured. The hold-out
model that sets the spread then draws its edge the same way.

Deterministic scores use the member mean; the probability of ice (concentration >= 15%) in a
cell is the share of members with ice there, as IceNet reports it.

The maps are read a block of months at a time (``sea_ice_fields.FieldRows``; ``block_months``,
default 64 MB of float64): from a Zarr store through Dask they are never held whole. The fit
makes a few passes over them (the cells with data, the reference's trends, its damping, the
block means the network trains on, the out-of-bag errors, and the same again for the hold-out
model); the network trains from the block means and its targets in memory (at ``coarsen`` 8
about a sixth of the size of the float32 maps), and the model keeps per-cell statistics and
spread (12 calendar months each). The result does not depend on the block size.

CPU by default (``CLIMATE_ML_DEVICE=cuda`` for a GPU); ``CLIMATE_ML_TORCH_THREADS`` sets the CPU
threads (default 1, which keeps results reproducible across machines)."""

import os
import time

import numpy as np
import pandas as pd
import torch
import xarray as xr
from torch import nn
from torch.nn import functional as F

from climate_ml.layers import ConvLSTMCell
from climate_ml.model_api import centred_members, clipped_spread_scale, member_offsets
from climate_ml.schema import add_months
from climate_ml.sea_ice_fields import (
    EDGE_YEARS,
    EdgeCalibration,
    ExtentForecast,
    FieldRows,
    fit_fields,
    remap_edge,
    threshold_at_extent,
)

TARGET = "sea_ice_concentration"
PROBLEMS = ("arctic_sea_ice",)


class Net(nn.Module):
    def __init__(self, channels: int, hidden: int, n_leads: int):
        super().__init__()
        self.cell = ConvLSTMCell(channels, hidden)
        self.head = nn.Sequential(nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU())
        self.out = nn.Conv2d(hidden, n_leads, 1)
        nn.init.zeros_(self.out.weight)  # start as the damped-persistence reference
        nn.init.zeros_(self.out.bias)

    def forward(self, seq):  # (batch, time, channels, H, W) -> (batch, lead, H, W)
        state = None  # zeros
        for t in range(seq.shape[1]):
            state = self.cell(seq[:, t], state)
        return self.out(self.head(state[0]))


EXTENT_EDGES = (None, "forecast", "mean")  # match_extent: no, the extent forecast, the mean of it and the maps' own


class SeaIceConvLSTM:
    def __init__(self, coarsen: int = 8, hidden: int = 16, frames: int = 6, epochs: int = 30, lr: float = 3e-3,
                 weight_decay: float = 1e-4, batch: int = 32, seeds=(0, 1, 2), draws: int = 3, holdout: float = 0.1,
                 block_months: int | None = None, calibrate_edge: bool = True, match_extent: str | None = None,
                 per_cell_damping: bool = False):
        self.coarsen, self.hidden, self.frames, self.epochs = coarsen, hidden, frames, epochs
        self.per_cell_damping = per_cell_damping
        self.lr, self.weight_decay, self.batch, self.seeds = lr, weight_decay, batch, tuple(seeds)
        if draws < 1:
            raise ValueError(f"draws must be at least 1, got {draws}")
        self.draws, self.holdout, self.block_months = int(draws), float(holdout), block_months
        if match_extent not in EXTENT_EDGES:
            raise ValueError(f"match_extent must be one of {EXTENT_EDGES}, got {match_extent!r}")
        self.calibrate_edge, self.match_extent = calibrate_edge, match_extent
        self.device = torch.device(os.environ.get("CLIMATE_ML_DEVICE", "cpu"))
        self.threads = int(os.environ.get("CLIMATE_ML_TORCH_THREADS", "1"))

    # -- grids -----------------------------------------------------------------------------
    def _blocks(self, values: np.ndarray) -> np.ndarray:
        """(T, ocean cells) -> (T, Hc, Wc): block means over the ocean cells with data, eight
        months at a time (the full-grid temporaries stay small)."""
        if len(values) > 8:
            return np.concatenate([self._blocks(values[s:s + 8]) for s in range(0, len(values), 8)])
        k, (ny, nx) = self.coarsen, self.shape_
        full = np.zeros((values.shape[0], ny * nx))
        full[:, self.ocean_] = np.nan_to_num(values)
        weight = np.zeros((values.shape[0], ny * nx))
        weight[:, self.ocean_] = np.isfinite(values)
        hc, wc = -(-ny // k), -(-nx // k)
        pad = ((0, 0), (0, hc * k - ny), (0, wc * k - nx))
        s = np.pad(full.reshape(-1, ny, nx), pad).reshape(-1, hc, k, wc, k).sum((2, 4))
        n = np.pad(weight.reshape(-1, ny, nx), pad).reshape(-1, hc, k, wc, k).sum((2, 4))
        return np.where(n > 0, s / np.maximum(n, 1), 0.0)

    def _frames(self, block_conc: np.ndarray, block_anom: np.ndarray, times: pd.DatetimeIndex) -> np.ndarray:
        """Input channels per month from its block means: (T, 5, Hc, Wc)."""
        angle = 2 * np.pi * (times.month.values - 1) / 12
        out = np.empty((len(times), 5) + block_anom.shape[1:], dtype="float32")
        out[:, 0] = block_anom / self.anom_scale_
        out[:, 1] = block_conc
        out[:, 2] = self.ocean_frac_
        out[:, 3] = np.sin(angle)[:, None, None]
        out[:, 4] = np.cos(angle)[:, None, None]
        return out

    def _upsample(self, r: torch.Tensor) -> np.ndarray:
        """(members, lead, Hc, Wc) block residuals -> (members, lead, ocean cells)."""
        ny, nx = self.shape_
        up = F.interpolate(r, scale_factor=self.coarsen, mode="bilinear", align_corners=False)[..., :ny, :nx]
        return up.cpu().numpy().reshape(r.shape[0], r.shape[1], -1)[..., self.ocean_]

    def _damping(self, month: int) -> np.ndarray:
        """The reference's damping of the departure at an init in calendar month ``month``
        (0-11): (lead, cells) with ``per_cell_damping``, else (lead, 1), one per lead."""
        if self.ref_.cell_damping is not None:
            return self.ref_.cell_damping[month]
        return self.ref_.damping[month][:, None]

    # -- the contract ----------------------------------------------------------------------
    def fit(self, conc: xr.DataArray, cell_area: xr.DataArray, leads) -> "SeaIceConvLSTM":
        torch.set_num_threads(self.threads)
        rows = FieldRows(conc, block_months=self.block_months)  # from a Zarr store: read lazily, block by block
        times = rows.times
        self.grid_, self.shape_, self.ocean_ = rows.grid, rows.shape, rows.ocean
        self.leads_ = [int(k) for k in leads]
        self.ref_ = fit_fields(rows, times, times[-1], self.leads_, per_cell=self.per_cell_damping)
        area = np.asarray(cell_area.transpose(*self.grid_).values, dtype="float64").ravel()[self.ocean_]
        self.extent_ = ExtentForecast(rows, area, self.leads_) if self.match_extent else None
        self.ocean_frac_ = self._blocks(np.ones((1, int(self.ocean_.sum()))))[0]
        # one more pass: the block means the network sees, and the moments of the departures
        block_conc, block_anom, block_damped, observed, moments = [], [], [], [], np.zeros(3)
        for start, values in rows.blocks():
            anom = self.ref_.departures(values, times[start:start + len(values)])
            block_conc.append(self._blocks(values))
            block_anom.append(self._blocks(anom))
            if self.per_cell_damping:  # the block means of each month's damped departures, per lead
                block_damped.append(np.stack([self._blocks(self._damping(t.month - 1) * a)
                                              for t, a in zip(times[start:start + len(values)], anom, strict=True)]))
            observed.append(np.isfinite(values).any(1))
            for row in anom:  # month by month: the same sums whatever the block size
                ok = np.isfinite(row)
                moments += [ok.sum(), row[ok].sum(), (row[ok] ** 2).sum()]
        n, s1, s2 = moments
        self.anom_scale_ = float(np.sqrt(max(s2 / n - (s1 / n) ** 2, 0.0))) + 1e-6
        block_anom = np.concatenate(block_anom)
        block_damped = np.concatenate(block_damped) if self.per_cell_damping else None
        frames = self._frames(np.concatenate(block_conc), block_anom, times)
        observed = np.concatenate(observed)

        # samples: inits with a full input window; targets where the valid month is observed
        n_t, f = len(times), self.frames
        inits = [i for i in range(f - 1, n_t - 1) if observed[i - f + 1:i + 1].all()]
        months = times.month.values - 1
        target = np.zeros((len(inits), len(self.leads_)) + block_anom.shape[1:], dtype="float32")
        known = np.zeros((len(inits), len(self.leads_)), dtype=bool)
        for s, i in enumerate(inits):
            for j, lead in enumerate(self.leads_):
                if i + lead < n_t and observed[i + lead]:
                    damped = block_damped[i, j] if self.per_cell_damping else self.ref_.damping[months[i], j] * block_anom[i]
                    target[s, j] = block_anom[i + lead] - damped
                    known[s, j] = True
        self.target_scale_ = float(target[known].std()) + 1e-6
        dev = self.device
        x_all = torch.as_tensor(frames, device=dev)  # on the CPU: the arrays themselves, not copies
        index = torch.tensor(np.array(inits), device=dev)
        offsets = torch.arange(-f + 1, 1, device=dev)
        target /= self.target_scale_
        y = torch.as_tensor(target, device=dev)
        known = torch.as_tensor(known, device=dev)
        frac = torch.tensor(self.ocean_frac_, dtype=torch.float32, device=dev)
        self.nets_, self.epoch_seconds_, bags = [], [], []
        for seed in self.seeds:
            torch.manual_seed(seed)
            gen = torch.Generator().manual_seed(seed)
            bag = torch.randint(0, len(inits), (len(inits),), generator=gen).to(dev)  # bootstrap sample
            bags.append(bag.cpu().numpy())
            net = Net(frames.shape[1], self.hidden, len(self.leads_)).to(dev)
            opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            for _ in range(self.epochs):
                tic = time.perf_counter()
                net.train()
                for batch in bag[torch.randperm(len(bag), generator=gen).to(dev)].split(self.batch):
                    seq = x_all[index[batch, None] + offsets]
                    mask = known[batch][:, :, None, None] * frac  # the targets known, by ocean share
                    err = (net(seq) - y[batch]) ** 2 * mask
                    loss = err.sum() / mask.sum().clamp(min=1)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                self.epoch_seconds_.append(time.perf_counter() - tic)
            net.eval()
            self.nets_.append(net)
        self.offsets_ = member_offsets(len(self.nets_), self.draws)
        self.holdout_ratio_ = self.edge_ = None
        if self.draws == 1:  # the bare networks: no spread to measure
            self.sigma_ = np.zeros((len(self.leads_), 12, int(self.ocean_.sum())), dtype="float32")
            return self
        self.sigma_ = self._out_of_bag_error(rows, inits, bags, (x_all, index, offsets), area)
        del frames, x_all, target, y, block_anom  # the training set: free before the hold-out model builds its own
        if self.holdout > 0:
            self.holdout_ratio_ = self._holdout_ratio(conc, cell_area, rows, area)
            self.sigma_ = self.sigma_ * self.holdout_ratio_[:, None, None].astype("float32")
        return self

    def _holdout_ratio(self, conc: xr.DataArray, cell_area: xr.DataArray, rows: FieldRows,
                       area: np.ndarray) -> np.ndarray:
        """Per lead: the factor that widens the out-of-bag error ``sigma_`` to the spread the
        members need. Out-of-bag inits have neighbouring months, and so nearly the same target
        maps, in the bootstrap sample, and the reference is fitted on all of them, so
        out-of-bag errors are too small. One more model, the first network alone, with its own
        reference, is fitted on the training window without its last ``holdout`` share of months
        (at least 24) and forecasts each of those months as an init, its edge placed with this
        model's thresholds (``edge_``), as the members' centres are. The factor makes the members
        that ``predict`` would draw around those maps, clipped to 0-1 as they are there, spread as
        far as the maps erred: their area-weighted variance equals the area-weighted squared
        error (``model_api.clipped_spread_scale``). Without clipping this is the RMS of the
        errors over the RMS of ``sigma_`` at the same valid months and cells; next to open water
        the members are clipped at 0, and the factor is larger. The months are read a block at a
        time."""
        times, n_t = rows.times, len(rows)
        n_hold = max(24, int(round(self.holdout * n_t)))
        if n_t - n_hold < 10 * self.frames:
            raise ValueError(f"the sea-ice ConvLSTM's members need at least {10 * self.frames + 24} training months "
                             f"for their hold-out error, got {n_t}")
        cut = n_t - n_hold  # the hold-out model sees months [0, cut); its inits are cut - 1 ... n_t - 2
        options = {k: getattr(self, k) for k in ("coarsen", "hidden", "frames", "epochs", "lr", "weight_decay", "batch",
                                                 "block_months", "match_extent", "per_cell_damping")}
        model = SeaIceConvLSTM(**options, seeds=self.seeds[:1], draws=1, holdout=0)  # bare: its own edge is not placed
        model.threads = self.threads
        model.fit(conc.isel(time=slice(0, cut)), cell_area, self.leads_)
        n_leads, last = len(self.leads_), max(self.leads_)
        err2 = np.zeros(n_leads)
        inside = [([], [], []) for _ in range(n_leads)]  # per lead: centres, sigma, area of cells strictly inside 0-1
        for first in range(cut - 1, n_t - 1, rows.block):
            lo = first - self.frames + 1  # the input months of the block's first init, then up to its last valid month
            window = conc.isel(time=slice(lo, min(first + rows.block + last, n_t))).load()
            seen = rows.read(first, min(first + rows.block + last, n_t))
            for i in range(first, min(first + rows.block, n_t - 1)):
                maps = model.predict(window.isel(time=slice(0, i + 1 - lo))).isel(member=0)
                maps = maps.transpose("lead", *self.grid_).values.reshape(n_leads, -1)[:, self.ocean_]
                valid_months = [(times[i].month - 1 + lead) % 12 for lead in self.leads_]
                if self.edge_ is not None and not self.match_extent:  # (else its own extent forecast drew it)
                    maps = remap_edge(maps, self.edge_[np.arange(n_leads), valid_months])
                for j, lead in enumerate(self.leads_):
                    v = i + lead
                    if v >= n_t:
                        continue
                    err = maps[j] - seen[v - first]
                    ok = np.isfinite(err)
                    err2[j] += area[ok] @ err[ok] ** 2
                    keep = ok & (maps[j] > 0) & (maps[j] < 1)
                    for out, values in zip(inside[j], (maps[j], self.sigma_[j, valid_months[j]], area), strict=True):
                        out.append(values[keep].astype("float32"))
        offsets = self.offsets_.ravel()
        ratio = np.empty(n_leads)
        for j in range(n_leads):
            centres, sigma, weights = (np.concatenate(a) if a else np.zeros(0) for a in inside[j])
            try:
                ratio[j] = clipped_spread_scale(centres, sigma, offsets, weights, err2[j], 0.0, 1.0)
            except ValueError:
                raise ValueError(f"the sea-ice ConvLSTM's hold-out months give lead {self.leads_[j]} no error or no spread "
                                 "to scale: too few observed months") from None
        return ratio

    def _out_of_bag_error(self, rows: FieldRows, inits, bags, sequences, area: np.ndarray) -> np.ndarray:
        """(lead, 12 valid months, ocean cells): the RMS error of a network's clipped map over the
        training inits outside its bootstrap sample, pooled over the valid month and the months
        either side; 0 where no such forecast could be verified. ``sequences``: (frames, init
        rows, frame offsets), the network inputs of the training inits. The maps are read a
        block of months at a time. With ``calibrate_edge`` the same maps, where valid in the last
        ``EDGE_YEARS`` of the training window, also place the ice edge (``edge_``)."""
        x_all, index, offsets = sequences
        times, n_t = rows.times, len(rows)
        months = times.month.values - 1
        edge = EdgeCalibration(len(self.leads_)) if self.calibrate_edge else None
        sq = np.zeros((len(self.leads_), 12, int(self.ocean_.sum())))
        count = np.zeros(sq.shape, dtype=np.int32)
        for net, bag in zip(self.nets_, bags, strict=True):
            left_out = np.setdiff1d(np.arange(len(inits)), bag)
            for chunk in np.array_split(left_out, max(1, len(left_out) // 16)):
                if not len(chunk):
                    continue
                with torch.no_grad():
                    chosen = torch.as_tensor(chunk, device=self.device)
                    up = self._upsample(net(x_all[index[chosen, None] + offsets]) * self.target_scale_)
                for k, s in enumerate(chunk):
                    i = inits[s]
                    anom = np.nan_to_num(rows.row(i) - self.ref_.trend(times[i:i + 1])[0])
                    for j, lead in enumerate(self.leads_):
                        v = i + lead
                        if v >= n_t:
                            continue
                        damped = self.ref_.trend(times[v:v + 1])[0] + self._damping(months[i])[j] * anom
                        forecast = np.clip(damped + up[k, j], 0.0, 1.0)
                        err = forecast - rows.row(v)
                        sq[j, months[v]] += np.nan_to_num(err) ** 2
                        count[j, months[v]] += np.isfinite(err)
                        if edge is not None and v >= n_t - 12 * EDGE_YEARS:
                            edge.add(j, months[v], forecast, rows.row(v), area)
        self.edge_ = None if edge is None else edge.thresholds()
        pooled = [sum(np.roll(a, shift, axis=1) for shift in (-1, 0, 1)) for a in (sq, count)]
        return np.sqrt(pooled[0] / np.maximum(pooled[1], 1)).astype("float32")

    def predict(self, conc: xr.DataArray) -> xr.DataArray:
        """Maps (lead, member, y, x) forecast from the last month of ``conc``."""
        torch.set_num_threads(self.threads)
        times = pd.DatetimeIndex(conc["time"].values[-self.frames:])
        values = conc.isel(time=slice(-self.frames, None)).transpose("time", *self.grid_).values
        flat = values.reshape(len(times), -1)[:, self.ocean_].astype("float64")
        anom = flat - self.ref_.trend(times)
        frames = torch.tensor(self._frames(self._blocks(flat), self._blocks(anom), times)[None], device=self.device)
        with torch.no_grad():
            r = torch.cat([net(frames) for net in self.nets_]) * self.target_scale_
        init = times[-1]
        valid = pd.DatetimeIndex(add_months(pd.DatetimeIndex([init]), self.leads_)[0])
        damped = self.ref_.trend(valid) + self._damping(init.month - 1) * np.nan_to_num(anom[-1])[None]
        nets = np.clip(damped[None] + self._upsample(r), 0.0, 1.0)  # (network, lead, cells)
        if self.edge_ is not None:  # the ice edge where the out-of-bag maps drew it best
            nets = remap_edge(nets, self.edge_[np.arange(len(self.leads_)), valid.month.values - 1])
        if self.extent_ is not None:  # the edge of the mean map where it encloses the extent forecast
            target, mean = self.extent_.predict(flat[-1], init), nets.mean(0)
            if self.match_extent == "mean":  # or the mean of that forecast and the networks' own extent
                target = 0.5 * (target + self.extent_.fraction(mean) * self.extent_.ocean_area)
            nets = remap_edge(nets, threshold_at_extent(mean, self.extent_.area, target))
        sigma = self.sigma_[np.arange(len(self.leads_)), valid.month.values - 1]  # (lead, cells)
        members = centred_members(nets[:, None], self.offsets_[:, :, None, None] * sigma[None, None], 0.0, 1.0, axis=1)
        members = members.reshape(-1, *nets.shape[1:])  # member = network x draw
        out = np.full((len(members), len(self.leads_), self.ocean_.size), np.nan)
        out[..., self.ocean_] = members
        out = out.reshape((len(members), len(self.leads_)) + tuple(self.shape_))
        coords = {"member": np.arange(len(members)), "lead": self.leads_}
        return xr.DataArray(out, dims=("member", "lead", *self.grid_), coords=coords).transpose("lead", "member", ...)


def make_model(**options):
    """The backtest calls this with no options; a benchmark may pass e.g. ``coarsen=4``."""
    return SeaIceConvLSTM(**options)
