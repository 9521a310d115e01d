"""Neural-network building blocks shared by the PyTorch model files in ``models/``: the
ConvLSTM cell, and the index ConvLSTM forecaster (``ConvLSTMForecaster``) that
``models/convlstm.py`` (El Nino) and ``models/convlstm_rain.py`` (California rainfall) use.

The forecaster reads the last four monthly SST anomaly maps (``X["field_anomaly"]``, oldest
first, coarsened 2x) with a convolutional LSTM (Shi et al. 2015), and maps its final hidden
state, together with the calendar month and the predictor series (``pred_*``, at their lags), to
every lead at once. Maps are standardised per cell and the targets per lead with the training
window's statistics; where the problem gives a ``baseline`` (rainfall: the valid month's
training climatology) the network learns the departure from it. Adam with weight decay.
Deterministic on the CPU (seeded, one thread); on a GPU with ``CLIMATE_ML_DEVICE=cuda``.

Members: a few seeds alone spread far less than the networks err (on Kaplan their spread/skill
ratio was 0.36-0.61), so each seed's forecast gets ``draws`` members, its forecast plus normal
quantiles times ``sigma``. ``sigma`` comes from one more network, trained like the others on the
training window without its last ``holdout`` share of inits (and without any target valid from
then on), and scored on those held-out inits: its root-mean-square error per lead and valid
month (pooled with the months either side). Because a single network errs by the seeds'
spread more than their mean does, and the seeds' spread is already in the members, the draws
use sqrt(sigma^2 - 2 (k-1)/k s^2) for k seeds whose variance is s^2 at that init and lead. The
quantiles are dealt out across the seeds (``member_offsets(..., interleave=True)``), so that
seeds which differ little still give as many distinct levels as members; all offsets together
sum to zero, so the members' mean, which the deterministic scores use, is the seeds' mean.
``draws=1`` keeps the bare seeds. With ``lower`` (rainfall: 0) no member falls below it: the
members are shifted together and clipped so that their mean stays the seeds' mean (a mean
below ``lower`` becomes ``lower``).
"""

import os

import numpy as np
import torch
import xarray as xr
from torch import nn

from climate_ml.model_api import centred_members, member_offsets
from climate_ml.schema import INIT, LEAD


class ConvLSTMCell(nn.Module):
    """A convolutional LSTM cell (Shi et al. 2015): the LSTM's gates are 2-D convolutions over
    the input map and the hidden state, so the state keeps its spatial layout. ``state=None`` is
    the zero state of a sequence's first step: the gates then convolve the input channels only,
    since the hidden channels hold zeros (the same numbers, a ninth of the work for one input
    channel and eight hidden ones, forward and backward)."""

    def __init__(self, in_channels: int, hidden: int, kernel: int = 3):
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Conv2d(in_channels + hidden, 4 * hidden, kernel, padding=kernel // 2)

    def forward(self, x, state=None):
        if state is None:
            w = self.gates.weight[:, : x.shape[1]]
            i, _, o, g = torch.chunk(nn.functional.conv2d(x, w, self.gates.bias, padding=self.gates.padding), 4, dim=1)
            c = torch.sigmoid(i) * torch.tanh(g)  # the forget gate acts on a zero cell state
            return torch.sigmoid(o) * torch.tanh(c), c
        h, c = state
        i, f, o, g = torch.chunk(self.gates(torch.cat([x, h], dim=1)), 4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class Net(nn.Module):
    def __init__(self, height: int, width: int, n_leads: int, hidden: int = 8, pooled: int = 4, n_extra: int = 0):
        super().__init__()
        self.coarsen = nn.AvgPool2d(2, ceil_mode=True)  # 5-degree maps to 10 degrees: 4x less work
        height, width = (height + 1) // 2, (width + 1) // 2
        self.cell = ConvLSTMCell(1, hidden)
        self.pool = nn.AdaptiveAvgPool2d((min(pooled, height), min(pooled * 2, width)))
        n_flat = hidden * min(pooled, height) * min(pooled * 2, width)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2))
        self.out = nn.Sequential(nn.Linear(n_flat + 2 + n_extra, 32), nn.ReLU(), nn.Linear(32, n_leads))

    def forward(self, seq, month):  # seq: (batch, time, 1, H, W); month: (batch, 2 + predictors)
        b, n_t, _, h, w = seq.shape
        seq = self.coarsen(seq.reshape(b * n_t, 1, h, w))
        h, w = seq.shape[-2:]
        seq = seq.reshape(b, n_t, 1, h, w)
        state = None  # zeros
        for t in range(seq.shape[1]):
            state = self.cell(seq[:, t], state)
        z = self.head(self.pool(state[0]))
        return self.out(torch.cat([z, month], dim=1))


class ConvLSTMForecaster:
    def __init__(self, epochs: int = 30, lr: float = 3e-3, weight_decay: float = 1e-3, batch: int = 64,
                 seeds=(0, 1), n_frames: int = 4, draws: int = 5, holdout: float = 0.1, lower: float | None = None):
        self.epochs, self.lr, self.weight_decay, self.batch, self.seeds = epochs, lr, weight_decay, batch, seeds
        self.n_frames, self.draws, self.holdout, self.lower = n_frames, draws, holdout, lower
        self.device = torch.device(os.environ.get("CLIMATE_ML_DEVICE", "cpu"))

    def _inputs(self, X: xr.Dataset):
        field = X["field_anomaly"].transpose("init_time", "field_lag", "lat", "lon")
        lags = sorted(int(v) for v in field["field_lag"].values)[: self.n_frames]
        seq = field.sel(field_lag=lags[::-1]).values  # oldest first
        seq = (seq - self.mean_) / self.std_
        month = np.column_stack([X["month_sin"].values, X["month_cos"].values])
        if self.predictors_:  # heat content, climate modes...: joined to the head, standardised
            table = np.column_stack([X[v].transpose("init_time", ...).values.reshape(X.sizes["init_time"], -1)
                                     for v in self.predictors_])
            month = np.column_stack([month, (table - self.p_mean_) / self.p_std_])
        return (torch.tensor(seq[:, :, None], dtype=torch.float32, device=self.device),
                torch.tensor(month, dtype=torch.float32, device=self.device))

    def fit(self, X: xr.Dataset, y: xr.DataArray) -> "ConvLSTMForecaster":
        if "field_anomaly" not in X:
            raise ValueError("the ConvLSTM needs X['field_anomaly'] (an SST field data set, not a 1-D index)")
        torch.set_num_threads(1)
        self.leads_ = y["lead"].values
        field = X["field_anomaly"].transpose("init_time", "field_lag", "lat", "lon").values
        self.mean_ = field.mean(axis=(0, 1))
        self.std_ = field.std(axis=(0, 1)) + 1e-6
        self.predictors_ = sorted(v for v in X.data_vars if v.startswith("pred_"))
        if self.predictors_:
            table = np.column_stack([X[v].transpose("init_time", ...).values.reshape(X.sizes["init_time"], -1)
                                     for v in self.predictors_])
            self.p_mean_, self.p_std_ = table.mean(axis=0), table.std(axis=0) + 1e-6
        seq, month = self._inputs(X)
        target = y.transpose("init_time", "lead").values - self._baseline(X)
        self.y_mean_ = np.nanmean(target, axis=0)
        self.y_std_ = np.nanstd(target, axis=0) + 1e-6
        t = torch.tensor((target - self.y_mean_) / self.y_std_, dtype=torch.float32, device=self.device)
        known = torch.isfinite(t)
        t = torch.nan_to_num(t)
        self.nets_ = [self._train(seq, month, t, known, seed) for seed in self.seeds]
        self.sigma_ = self._holdout_error(X[INIT].values, seq, month, t, known) if self.draws > 1 else None
        self.offsets_ = member_offsets(len(self.nets_), self.draws, interleave=True)
        return self

    def _train(self, seq, month, t, known, seed: int) -> Net:
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        net = Net(seq.shape[3], seq.shape[4], len(self.leads_), n_extra=month.shape[1] - 2).to(self.device)
        opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        for _ in range(self.epochs):
            net.train()
            for idx in torch.randperm(seq.shape[0], generator=gen).split(self.batch):
                idx = idx.to(self.device)
                pred = net(seq[idx], month[idx])
                loss = (((pred - t[idx]) ** 2) * known[idx]).sum() / known[idx].sum().clamp(min=1)
                opt.zero_grad()
                loss.backward()
                opt.step()
        net.eval()
        return net

    def _holdout_error(self, inits, seq, month, t, known) -> np.ndarray:
        """(lead, calendar month of the valid time) root-mean-square error of one network
        trained as the members' networks are, on the training window without its last
        ``holdout`` share of inits (at least 24), and scored on those inits. The hold-out network
        sees only targets that were known at the hold-out's first init, as a forecast issued then
        would; errors are pooled over the valid month and the months either side, in the
        target's units."""
        n = len(inits)
        n_hold = max(24, int(round(self.holdout * n)))
        if n - n_hold < 24:
            raise ValueError(f"the ConvLSTM's members need at least 48 training inits for their hold-out error, got {n}")
        months = inits.astype("datetime64[M]")
        first = np.sort(months)[n - n_hold]
        hold = torch.as_tensor(months >= first, device=self.device)
        valid = months[:, None] + self.leads_.astype("timedelta64[M]")[None, :]
        seen = known & torch.as_tensor(valid < first, device=self.device)  # targets known at the hold-out's start
        rows = seen.any(dim=1)
        net = self._train(seq[rows], month[rows], t[rows], seen[rows], self.seeds[0])
        with torch.no_grad():
            err = (net(seq[hold], month[hold]) - t[hold]).cpu().numpy() * self.y_std_
        ok = known[hold].cpu().numpy()
        valid_month = valid[hold.cpu().numpy()].astype(int) % 12
        sigma = np.empty((len(self.leads_), 12))
        for j in range(len(self.leads_)):
            for m in range(12):
                near = ok[:, j] & (np.abs((valid_month[:, j] - m + 6) % 12 - 6) <= 1)
                sigma[j, m] = np.sqrt(np.mean(err[near if near.any() else ok[:, j], j] ** 2))
        return sigma

    def _baseline(self, X: xr.Dataset):
        """The problem's known-at-init expectation (e.g. rainfall's climatology of the valid
        month), which the network learns departures from; 0 where the problem has none."""
        if "baseline" not in X:
            return np.zeros((X.sizes["init_time"], len(self.leads_)))
        return X["baseline"].sel(lead=self.leads_).transpose("init_time", "lead").values

    def predict(self, X: xr.Dataset) -> xr.DataArray:
        torch.set_num_threads(1)
        seq, month = self._inputs(X)
        with torch.no_grad():
            out = np.stack([net(seq, month).cpu().numpy() for net in self.nets_], axis=-1)
        out = out * self.y_std_[:, None] + self.y_mean_[:, None] + self._baseline(X)[:, :, None]
        if self.sigma_ is not None:  # each network's forecast plus its draws' offsets times the hold-out error
            valid = (X[INIT].values.astype("datetime64[M]")[:, None] + self.leads_.astype("timedelta64[M]")[None, :])
            sigma = self.sigma_[np.arange(len(self.leads_))[None, :], valid.astype(int) % 12]  # (init, lead)
            if out.shape[-1] > 1:  # the seeds' own spread already carries part of the error: draw the rest
                k = out.shape[-1]
                sigma = np.sqrt(np.maximum(sigma ** 2 - 2 * (k - 1) / k * out.var(axis=-1, ddof=1), 0.0))
            out = (out[:, :, :, None] + sigma[:, :, None, None] * self.offsets_[None, None]).reshape(*out.shape[:2], -1)
        if self.lower is not None:  # e.g. no negative rainfall: members shifted and clipped around their mean
            centre = out.mean(axis=-1, keepdims=True)
            out = centred_members(np.maximum(centre, self.lower), out - centre, self.lower, np.inf, axis=-1)
        return xr.DataArray(out, dims=(INIT, LEAD, "member"),
                            coords={INIT: X[INIT].values, LEAD: self.leads_, "member": np.arange(out.shape[-1])})
