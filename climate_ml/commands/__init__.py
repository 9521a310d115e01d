"""The ``climate-ml`` commands, one module per group; importing them registers them on ``app``."""

from climate_ml.commands import archive, data, evaluate, forecasts, service  # noqa: F401
from climate_ml.commands.common import app

__all__ = ["app"]
