"""The command line, run as a user runs it (a subprocess), on small files in real formats."""

import json
import os
import re
import subprocess
import sys

import pytest

from climate_ml.archive import read_monitoring
from climate_ml.requests import VerifyRequest
from climate_ml.synthetic import write_toy_ocean
from climate_ml.workflows import verify_forecasts
from conftest import tree_digest, write_ersst_like


def cli(*args, store=None, check=True):
    env = {**os.environ}
    if store is not None:
        env["CLIMATE_ML_STORE"] = str(store)
    p = subprocess.run([sys.executable, "-m", "climate_ml.cli", *map(str, args)], capture_output=True, text=True, env=env, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"exit {p.returncode}: {p.stderr}")
    return p


def test_help_and_catalog():
    top = cli("--help").stdout
    # the command list has one line per command, a docstring's line breaks joined
    listed = [line.split()[0] for line in top.split("Commands:")[1].splitlines() if line.strip()]
    assert listed[:4] == ["problems", "ingest", "index", "backtest"] and "archive" in listed
    bare = cli("archive", check=False)  # a group alone prints its help, exit 2 as click does, no error line
    assert bare.returncode == 2 and "Query the forecast archive." in bare.stderr and "error" not in bare.stderr
    out = cli("catalog", "list").stdout
    assert "kaplan-local" in out and "toy-ocean" in out
    show = cli("catalog", "show", "ersst-v5").stdout
    assert "https://downloads.psl.noaa.gov/Datasets/noaa.ersst.v5/sst.mnmean.nc" in show


def test_errors_are_one_line_with_nonzero_exit(tmp_path, store):
    good = write_ersst_like(tmp_path / "good.nc")
    cli("ingest", "--file", good, "--variable", "sst", "--name", "good", store=store)
    digest = tree_digest(store)
    bad = tmp_path / "bad.nc"
    bad.write_bytes(good.read_bytes()[:500])
    cases = [
        (["ingest", "--file", bad, "--variable", "sst", "--name", "good"], "bad.nc: not a readable NetCDF file"),
        (["ingest", "--file", good, "--variable", "tos", "--name", "good"], "variable 'tos' not found"),
        (["ingest", "no-such-entry"], "unknown catalog entry 'no-such-entry'"),
        (["backtest", "el_nino", tmp_path / "nomodel.py", "--dataset", "good"], "nomodel.py: model file not found"),
        (["backtest", "el_nino", "models", "--dataset", "good"], "models: a folder, not a model file"),
        (["backtest", "el_nino", "models/persistence.py", "--dataset", "good", "--test-start", "2003-12"],
         "no outcome of the test period 2003-12..2003-12 is observed yet (the data end 2003-12)"),
        (["backtest", "el_nino", "models/persistence.py", "--dataset", "absent"], "unknown dataset 'absent'"),
        (["archive", "query", "--problem", "el_nino", "--init", "2020-13"], "bad --init '2020-13'"),
        (["archive", "query", "--problem", "el_nino", "--format", "xml"], "bad --format 'xml'"),
        (["archive", "query", "--problem", "rain"], "unknown problem 'rain'"),
        (["stress", "arctic_sea_ice", "models/linear_trend.py"], "stress breaks skill down by ENSO phase"),
        (["forecast", "el_nino", "models/persistence.py", "--init", "May 2020", "--dataset", "good"], "bad --init 'May 2020'"),
        (["backtest", "el_nino", "models/persistence.py", "--dataset", "good", "--test-start", "2200-01"],
         "is before test start 2200-01"),
        # usage errors, which the command-line parser finds (Typer ships its own copy of click)
        (["backtest"], "Missing argument 'problem'. (see `climate-ml backtest --help`)"),
        (["query", "el_nino"], "No such command 'query'. (see `climate-ml --help`)"),
        (["backtest", "el_nino", "models/persistence.py", "--n-jobs", "two"], "Invalid value for '--n-jobs'"),
        (["archive", "query", "--problem", "el_nino", "--lead"], "Option '--lead' requires an argument."),
        (["leaderboard", "el_nino", "--no-such-option"], "No such option: --no-such-option"),
    ]
    for args, message in cases:
        p = cli(*args, store=store, check=False)
        assert p.returncode == 2, (args, p.returncode, p.stderr)
        *progress, last = p.stderr.strip().splitlines()  # a run that got as far as fitting logged its progress first
        assert all(re.fullmatch(r"\d\d:\d\d:\d\d backtest: .*", line) for line in progress), (args, p.stderr)
        assert last.startswith("error: ") and message in last, (args, p.stderr)
        assert tree_digest(store) == digest, args
    debug = cli("--debug", "ingest", "--file", bad, "--variable", "sst", "--name", "good", store=store, check=False)
    assert debug.returncode == 2 and "Traceback" in debug.stderr


def test_malformed_catalog_yaml_via_cli(tmp_path):
    (tmp_path / "broken.yaml").write_text("name: broken\n  description: : :\n")
    env = {**os.environ, "CLIMATE_ML_CATALOG": str(tmp_path)}
    p = subprocess.run([sys.executable, "-m", "climate_ml.cli", "catalog", "list"], capture_output=True, text=True, env=env)
    assert p.returncode == 2
    assert p.stderr.strip() == f"error: {tmp_path / 'broken.yaml'}: malformed YAML at line 2"


@pytest.fixture(scope="module")
def toy_store(tmp_path_factory):
    d = tmp_path_factory.mktemp("toy")
    raw = write_toy_ocean(d / "toy.nc", start="1950-01", end="1995-12")
    cli("ingest", "--file", raw, "--variable", "sst", "--name", "toy", store=d / "store")
    return d / "store"


def test_index_backtest_forecast_query(toy_store):
    idx = cli("index", "nino34", "--dataset", "toy", "--anomaly", "--format", "csv", store=toy_store).stdout.splitlines()
    assert idx[0] == "time,value" and idx[1].startswith("1950-01,") and len(idx) == 1 + 46 * 12

    p = cli("backtest", "el_nino", "models/damped_persistence.py", "--dataset", "toy", "--test-start", "1985-01",
            "--test-end", "1994-12", "--refit-every", "60", "--json", store=toy_store)
    out = json.loads(p.stdout)
    assert out["problem"] == "el_nino" and out["model"] == "damped_persistence" and out["dataset"] == "toy"
    assert out["test_period"] == ["1985-01", "1994-12"] and out["leads"] == list(range(1, 19))
    assert set(out["scores"]) == {"acc", "rmse", "mae", "rpss", "bss_el_nino", "bss_la_nina"}
    assert set(out["scores"]["acc"]) == {str(k) for k in range(1, 19)}
    assert set(out["references"]) == {"persistence", "climatology", "damped_persistence", "xro"}
    assert out["scores"]["acc"]["1"] > 0.8
    # stderr is a pipe here, as in cron or a batch job: the progress comes as lines, not a bar nobody sees
    steps = [line for line in p.stderr.splitlines() if " backtest: fold " in line]
    assert [line.split(" backtest: ")[1].split(" (elapsed")[0] for line in steps] == [
        "fold 1/2 (fit up to 1985-01)", "fold 2/2 (fit up to 1990-01)"], p.stderr
    assert "left)" in steps[0] and "left)" not in steps[1]

    f = json.loads(cli("forecast", "el_nino", "models/persistence.py", "--init", "1995-06", "--dataset", "toy", "--json",
                       store=toy_store).stdout)
    assert f["archive"] == "created" and len(f["forecast"]) == 18 and f["forecast"][5]["valid_time"] == "1995-12"
    again = json.loads(cli("forecast", "el_nino", "models/persistence.py", "--init", "1995-06", "--dataset", "toy", "--json",
                           store=toy_store).stdout)
    assert again["archive"] == "unchanged"

    q = cli("archive", "query", "--problem", "el_nino", "--dataset", "toy", "--model", "persistence", "--init", "1995-06",
            "--lead", "6", "--format", "csv", store=toy_store).stdout.splitlines()
    assert q[0] == "model,init_time,lead,valid_time,forecast" and q[1].startswith("persistence,1995-06,6,1995-12,")
    assert len(q) == 2
    rows = json.loads(cli("archive", "query", "--problem", "el_nino", "--dataset", "toy", "--format", "json",
                          store=toy_store).stdout)
    assert len(rows) == 18
    v = json.loads(cli("verify", "el_nino", "--dataset", "toy", "--json", store=toy_store).stdout)
    assert {r["lead"] for r in v} == set(range(1, 19))
    assert next(r for r in v if r["lead"] == 1)["n"] == 1  # the lead-1 target (1995-06..08) is observed
    assert next(r for r in v if r["lead"] == 6)["n"] == 0  # lead 6 needs 1996-01: not yet observed
    q = cli("archive", "query", "--problem", "el_nino", "--dataset", "toy", "--lead", "1,6", store=toy_store).stdout.splitlines()
    assert q[0] == "model,init_time,lead,valid_time,forecast,observed"  # verify recorded the outcome beside it
    assert q[1].split(",")[-1] != "" and q[2].split(",")[-1] == ""  # lead 1 observed, lead 6 not yet

    assert cli("archive", "tag", "el_nino", "one-forecast", store=toy_store).stdout.startswith("tagged el_nino archive")
    r = json.loads(cli("forecast", "el_nino", "models/persistence.py", "--init", "1990-01:1990-12", "--refit-every", "6",
                       "--dataset", "toy", "--json", store=toy_store).stdout)
    assert r["models"]["persistence"] == {"archive": "updated", "n_inits": 12, "n_fits": 2}
    log = cli("archive", "history", "el_nino", store=toy_store).stdout.splitlines()
    assert "forecast persistence on toy: 12 new init(s) within 1990-01..1990-12" in log[0]
    assert "[tag: one-forecast]" in log[1] and "running skill on toy" in log[1]  # verify keeps the live skill
    assert "observed outcomes on toy" in log[2]
    then = json.loads(cli("archive", "query", "--problem", "el_nino", "--dataset", "toy", "--as-of", "one-forecast",
                          "--format", "json", store=toy_store).stdout)
    assert {r["init_time"] for r in then} == {"1995-06"}  # the archive as it stood before the range
    bad = cli("forecast", "el_nino", "models/persistence.py", "--init", "1990-05:1990-01", store=toy_store, check=False)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: bad --init '1990-05:1990-01': end before start"
    # the flows verify with the same library step: the same scores, nothing left to record
    same = verify_forecasts(toy_store, VerifyRequest.checked(problem="el_nino", dataset="toy"))
    assert same.outcomes_recorded == 0 and same.maps is None
    assert same.index == json.loads(cli("verify", "el_nino", "--dataset", "toy", "--json", store=toy_store).stdout)
    assert set(read_monitoring(toy_store, "el_nino", "toy")["model"].values) == {"persistence"}


def test_progress_lines_count_the_time_left(capsys):
    from climate_ml.commands.common import ProgressLines

    clock = iter([0.0, 30.0, 95.0, 200.0])  # the start, then one reading per line
    with ProgressLines("backtest", clock=lambda: next(clock), now=lambda: "12:00:00") as bar:
        task = bar.add_task("", total=None)  # nothing to say yet: no line
        bar.update(task, description="1/4 model-folds")
        bar.update(task, description="1/4 model-folds")  # unchanged: no second line
        bar.update(task, description="3/4 model-folds")
        bar.update(task, description="4/4 model-folds")
    assert capsys.readouterr().err.splitlines() == [
        "12:00:00 backtest: 1/4 model-folds (elapsed 0:00:30, about 0:01:30 left)",
        "12:00:00 backtest: 3/4 model-folds (elapsed 0:01:35, about 0:00:32 left)",
        "12:00:00 backtest: 4/4 model-folds (elapsed 0:03:20)"]

    def lines(readings, messages):
        """What ProgressLines writes for ``messages``, its clock reading ``readings`` (the
        start, then one per message)."""
        clock = iter(readings)
        with ProgressLines("backtest", clock=lambda: next(clock), now=lambda: "12:00:00") as bar:
            for message in messages:
                bar.update(0, description=message)
        return capsys.readouterr().err.splitlines()

    # several counts: the pace is the last one's (whole folds), none until one fold is done; it
    # runs from when that count was first shown at 0
    assert lines([0.0, 5.0, 600.0, 700.0], ["2/12 model-folds, 0/4 folds", "3/12 model-folds, 1/4 folds",
                                            "4/12 model-folds, 1/4 folds"]) == [
        "12:00:00 backtest: 2/12 model-folds, 0/4 folds (elapsed 0:00:05)",
        "12:00:00 backtest: 3/12 model-folds, 1/4 folds (elapsed 0:10:00, about 0:29:45 left)",
        "12:00:00 backtest: 4/12 model-folds, 1/4 folds (elapsed 0:11:40, about 0:34:45 left)"]

    # two workers finish their folds in pairs, 840 s a pair: paced from the 0/12 the workers
    # announced when they started (not from the first fold, 3 s before the second: that gave
    # "about 0:05:37 left" on a 70-minute run)
    assert lines([0.0, 6.0, 846.0, 849.0, 1686.0], ["0/24 model-folds, 0/12 folds", "2/24 model-folds, 1/12 folds",
                                                    "4/24 model-folds, 2/12 folds", "6/24 model-folds, 3/12 folds"]) == [
        "12:00:00 backtest: 0/24 model-folds, 0/12 folds (elapsed 0:00:06)",
        "12:00:00 backtest: 2/24 model-folds, 1/12 folds (elapsed 0:14:06, about 2:34:00 left)",
        "12:00:00 backtest: 4/24 model-folds, 2/12 folds (elapsed 0:14:09, about 1:10:15 left)",
        "12:00:00 backtest: 6/24 model-folds, 3/12 folds (elapsed 0:28:06, about 1:24:00 left)"]

    # the time before the first fold (data, workers) is not paid again: the pace from the
    # second fold on is that of the folds since the first
    assert lines([0.0, 60.0, 70.0, 90.0], ["1/31 folds", "2/31 folds", "4/31 folds"]) == [
        "12:00:00 backtest: 1/31 folds (elapsed 0:01:00, about 0:30:00 left)",
        "12:00:00 backtest: 2/31 folds (elapsed 0:01:10, about 0:04:50 left)",
        "12:00:00 backtest: 4/31 folds (elapsed 0:01:30, about 0:04:30 left)"]


def test_units_done_counts_whole_folds():
    import pandas as pd

    from climate_ml.backtest import units_done

    t = pd.date_range("2000-01-01", periods=3, freq="MS")
    units = [(name, None, t0, None) for t0 in t for name in ("cheap", "dear")]
    assert [units_done(units, k) for k in (0, 1, 2, 5, 6)] == [
        "0/6 model-folds, 0/3 folds", "1/6 model-folds, 0/3 folds", "2/6 model-folds, 1/3 folds",
        "5/6 model-folds, 2/3 folds", "6/6 model-folds, 3/3 folds"]
