"""ConvLSTM (PyTorch): reads the last four monthly tropical-Pacific SST anomaly maps
(``X["field_anomaly"]``, oldest first, averaged to 10 degrees) with a convolutional LSTM (Shi
et al. 2015), and maps its final hidden state, together with the calendar month, to every lead
at once. Predictor series (``pred_*``: heat content, climate modes, at lags 0-3) join the
calendar month at the head.

Small on purpose (8 hidden channels, one layer) because the training set is a few hundred to
two thousand months: maps are standardised per cell and the targets per lead with the
training window's statistics; Adam with weight decay, 30 epochs, two seeds. Ten members: each
seed's forecast widened by five draws scaled by a hold-out network's error
(``climate_ml.layers.ConvLSTMForecaster``); deterministic scores use their mean, the seeds'
mean. Deterministic on the CPU (seeded, one thread). Runs on a GPU when one is available
(``CLIMATE_ML_DEVICE=cuda``)."""

from climate_ml.layers import ConvLSTMForecaster

PROBLEMS = ("el_nino",)


def make_model():
    return ConvLSTMForecaster()
