import numpy as np
import pandas as pd

from climate_ml.ingest import standardise
from climate_ml.regions import box_mean
from climate_ml.synthetic import recharge_oscillator, toy_ocean


def test_recharge_oscillator_period_and_phase_locking():
    t, h = recharge_oscillator(12 * 400, seed=3)
    spec = np.abs(np.fft.rfft(t - t.mean())) ** 2
    freq = np.fft.rfftfreq(t.size)
    band = (freq > 1 / 84) & (freq < 1 / 36)  # 3-7 year periods
    assert spec[band].sum() > 0.4 * spec[1:].sum()
    sd = pd.Series(t).groupby(np.arange(t.size) % 12 + 1).std()
    assert sd.idxmax() in (10, 11, 12, 1)  # variance peaks in boreal late autumn / winter
    assert sd.max() / sd.min() > 1.5
    # the recharge h leads T: corr(h(t), T(t+k)) peaks for k of about a quarter period
    lags = range(0, 25)
    c = [np.corrcoef(h[: t.size - k], t[k:])[0, 1] for k in lags]
    assert 4 <= int(np.argmax(c)) <= 18


def test_toy_ocean_looks_like_ersst():
    ds = toy_ocean(start="2000-01", end="2004-12")
    assert ds.sst.attrs["units"] == "degC"
    assert ds.lat.values[0] > ds.lat.values[-1]  # descending, like PSL's ERSST
    assert np.isnan(ds.sst.values).any()  # has land
    std = standardise(ds, "sst")
    n34 = box_mean(std.sst, "nino34")
    assert 24 < float(n34.mean()) < 30
