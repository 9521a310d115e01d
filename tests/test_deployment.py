"""The scheduled job against a real Prefect server: `prefect server start` on loopback,
`climate-ml serve` registering the cron deployment, the Prefect CLI listing and triggering it."""

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from climate_ml.archive import list_models
from conftest import free_port, open_archived

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def wait_for(check, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def test_monthly_deployment_on_a_real_prefect_server(tmp_path):
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "PREFECT_RUNNER_POLL_FREQUENCY": "2",
           "COLUMNS": "250"}  # the Prefect CLI's tables cut names to the terminal width
    server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    serve = None
    try:
        wait_for(lambda: healthy(f"http://127.0.0.1:{port}/api/health"), 120, "the Prefect server")
        serve = subprocess.Popen([sys.executable, "-m", "climate_ml.cli", "serve", "--store", str(tmp_path / "store"),
                                  "--cron", "0 6 5 * *"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def listed():
            out = subprocess.run([str(BIN / "prefect"), "deployment", "ls"], env=env, capture_output=True, text=True)
            # one serve schedules every problem (a second serve used to replace the first's deployment)
            return out.returncode == 0 and all(f"climate-ml-monthly/monthly-{p}" in out.stdout
                                               for p in ("el_nino", "arctic_sea_ice", "california_rainfall"))
        wait_for(listed, 120, "the deployments to be registered")
        for p in ("el_nino", "california_rainfall"):
            inspect = subprocess.run([str(BIN / "prefect"), "deployment", "inspect", f"climate-ml-monthly/monthly-{p}"],
                                     env=env, capture_output=True, text=True, check=True)
            assert "0 6 5 * *" in inspect.stdout
        run = subprocess.run([str(BIN / "prefect"), "deployment", "run", "climate-ml-monthly/monthly-el_nino", "--watch"],
                             env=env, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0 and "Completed" in run.stdout, run.stdout[-2000:] + run.stderr[-2000:]
        assert list_models(tmp_path / "store", "el_nino") == ["climatology", "convlstm", "damped_persistence",
                                                              "lightgbm_lagged", "lightgbm_members", "persistence",
                                                              "ridge_ocean", "xro", "xro_ridge"]
        fc = open_archived(tmp_path / "store", "el_nino", "toy-ocean/lightgbm_lagged").sortby("init_time")
        assert str(fc.init_time.values[-1])[:7] == "2024-12" and str(fc["prov_kind"].values[-1]) == "forecast"
        assert len(list((tmp_path / "store" / "runs").glob("*-monthly-el_nino/monthly.json"))) == 1
        assert len(list((tmp_path / "store" / "runs").glob("*-monthly-el_nino/outlook-el_nino-2024-12.png"))) == 1
        artifacts = subprocess.run([str(BIN / "prefect"), "artifact", "ls"], env=env, capture_output=True, text=True)
        assert "outlook-el-nino" in artifacts.stdout, artifacts.stdout[-2000:]  # the outlook, attached to the run
    finally:
        for p in (serve, server):
            if p is not None:
                p.terminate()
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()


@pytest.mark.parametrize("args,message", [
    (["--cron", "0 6 32 * *"], "bad --cron '0 6 32 * *': not a cron schedule"),  # five fields, but no 32nd day
    (["--cron", "61-x"], "bad --cron '61-x': not a cron schedule"),
    (["--problem", "snow"], "unknown problem 'snow'"),
    (["--dataset", "no-such-entry", "--problem", "el_nino"], "unknown catalog entry 'no-such-entry'"),
    (["--dataset", "kaplan-local"], "--dataset and --predictor-dataset belong to one problem"),
])
def test_serve_checks_its_arguments_before_asking_for_a_server(tmp_path, args, message):
    """A bad schedule used to be found only after the server check (and a cron string of five
    bad fields only by Prefect, as a traceback-like error)."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    p = subprocess.run([sys.executable, "-m", "climate_ml.cli", "serve", "--store", str(tmp_path / "store"), *args],
                       env=env, capture_output=True, text=True, timeout=120)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], p.stderr


def test_serve_without_a_prefect_server_is_a_clear_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    p = subprocess.run([sys.executable, "-m", "climate_ml.cli", "serve", "--store", str(tmp_path / "store")], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.strip().splitlines()[-1].startswith("error: serve needs a Prefect server")
