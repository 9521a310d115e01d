"""ConvLSTM for California rainfall (PyTorch): the last four monthly SST anomaly maps of the
Pacific (30S-60N, 120E-70W, from the SST data set given as a predictor, 5 degrees coarsened to
10) read by a convolutional LSTM, with the predictor series (Nino indices at lags 0-3) and the
calendar month at the head; it learns each lead's monthly total as a departure from the valid
month's training climatology. Nine members: three seeds, each widened by three draws scaled by a
hold-out network's error (``climate_ml.layers.ConvLSTMForecaster``), none below 0 mm; the
season total and the tercile probabilities follow from the monthly forecasts as for every
rainfall model."""

from climate_ml.layers import ConvLSTMForecaster

PROBLEMS = ("california_rainfall",)


def make_model():
    return ConvLSTMForecaster(seeds=(0, 1, 2), draws=3, lower=0.0, epochs=20, weight_decay=1e-2)
