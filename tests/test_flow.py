"""The main job as a user runs it: ``climate-ml run --quick`` drives a real Prefect flow (with
Prefect's local server), a real Dask LocalCluster (scheduler and worker processes), Zarr on disk."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import open_archived

pytestmark = pytest.mark.slow


def test_run_quick_end_to_end(tmp_path):
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    p = subprocess.run([sys.executable, "-m", "climate_ml.cli", "run", "--quick", "--store", str(tmp_path / "store")],
                       capture_output=True, text=True, env=env, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "ACC by lead" in p.stdout and "plot:" in p.stdout
    records = {"backtests", "field-backtests"}  # the leaderboard's records, beside the runs
    runs = {r.name.split("-", 1)[1]: r for r in (tmp_path / "store" / "runs").iterdir() if r.name not in records}
    assert set(runs) == {"el_nino", "arctic_sea_ice", "california_rainfall"}
    # the sea-ice field backtest is recorded too: the field leaderboard has content after a run
    assert list((tmp_path / "store" / "runs" / "field-backtests" / "arctic_sea_ice").glob("*/scores.nc"))
    for run in runs.values():
        png = run / "skill_vs_lead.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    ice = json.loads((runs["arctic_sea_ice"] / "scores.json").read_text())["backtest"]
    assert {"linear_trend", "trend_persistence", "climatology", "lightgbm_lagged"} <= set(ice)
    assert ice["damped_anomaly_persistence"]["rmse"]["3"] < min(ice["linear_trend"]["rmse"]["3"], ice["trend_persistence"]["rmse"]["3"])
    scores = json.loads((runs["el_nino"] / "scores.json").read_text())
    acc = {m: s["acc"] for m, s in scores["backtest"].items()}
    assert set(acc) == {"persistence", "climatology", "damped_persistence", "xro", "lightgbm_lagged", "convlstm",
                        "ridge_ocean", "xro_ridge", "lightgbm_members", "blend"}  # el_nino models only, and their blend
    assert acc["lightgbm_lagged"]["6"] > acc["persistence"]["6"]
    # the toy heat content is read: XRO has the recharge state (WWV) and beats persistence
    assert acc["xro"]["6"] > acc["persistence"]["6"] + 0.1
    # the run records its backtests (the same step as `climate-ml backtest`): the leaderboard has content
    lb = subprocess.run([sys.executable, "-m", "climate_ml.cli", "leaderboard", "el_nino", "--json", "--n-boot", "100",
                         "--store", str(tmp_path / "store")], capture_output=True, text=True, env=env, timeout=300)
    assert lb.returncode == 0, lb.stderr
    board = json.loads(lb.stdout)
    assert board["reference"] == "xro" and {"xro_ridge", "lightgbm_lagged", "blend"} <= {r["model"] for r in board["rows"]}
    assert "leaderboard el_nino" in p.stdout  # the run ends with what to try next
    assert {f["init"] for f in scores["forecasts"]} == {"2024-12"}
    # hindcasts and forecasts are in the archive, one group per model, each init with its own provenance
    ds = open_archived(tmp_path / "store", "el_nino", "toy-ocean/lightgbm_lagged").sortby("init_time")
    assert str(ds.init_time.values[-1])[:7] == "2024-12" and ds.sizes["lead"] == 18
    kinds = np.array(ds["prov_kind"].values.tolist())
    assert kinds[-1] == "forecast" and (kinds[:-1] == "hindcast").all()
    ends = pd.to_datetime(ds["prov_train_end"].values.tolist())
    assert (ends <= pd.DatetimeIndex(ds.init_time.values)).all() and ends.nunique() > 1  # each fold its own cut-off
    assert bool(ds["observed"].isel(init_time=slice(0, -1)).notnull().any())  # hindcasts carry their outcome
    assert any(r["n"] > 0 for r in scores["verification"])
    rain = json.loads((runs["california_rainfall"] / "scores.json").read_text())
    assert set(rain["backtest"]) == {"climatology", "enso_regression", "lightgbm_lagged", "lightgbm_enso_rain",
                                     "convlstm_rain", "blend"}
    assert {"bss_upper_tercile", "rpss", "rmse", "acc"} <= set(rain["backtest"]["lightgbm_lagged"])
    season = rain["extra"]["lightgbm_lagged"]["season"]
    assert season["n"]["all"] > 0 and set(season["n"]) == {"Aug", "Sep", "Oct", "Nov", "all"}
    assert "Nov-Mar total from Aug-Nov inits" in p.stdout
    assert {f["init"] for f in rain["forecasts"]} == {"2024-12"}
    for issued in rain["forecasts"]:  # tercile probabilities for every lead, summing to one
        assert set(issued["terciles"]) == {str(k) for k in range(1, 8)}
        assert all(abs(sum(p.values()) - 1) < 2e-3 for p in issued["terciles"].values())
