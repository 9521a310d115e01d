"""Trend plus anomaly persistence: the linear trend at the valid month plus the latest observed
departure from the trend."""

PROBLEMS = ("arctic_sea_ice",)


class TrendPersistence:
    def fit(self, X, y):
        return self

    def predict(self, X):
        return X["trend_persistence"].transpose("init_time", "lead")


def make_model():
    return TrendPersistence()
