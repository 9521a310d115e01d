"""Linear trend per calendar month (fitted by the problem on the training window), evaluated at
the valid month: the baseline IceNet reports against."""

PROBLEMS = ("arctic_sea_ice",)


class LinearTrend:
    def fit(self, X, y):
        return self

    def predict(self, X):
        return X["baseline"].transpose("init_time", "lead")


def make_model():
    return LinearTrend()
