"""Issuing and checking forecasts: forecast (index series or maps), outlook, verify."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from climate_ml.commands.common import (
    PROBLEM_HELP,
    DatasetOpt,
    PredictorOpt,
    StoreOpt,
    TargetVarOpt,
    app,
    err,
    progress_bar,
)
from climate_ml.errors import QueryError
from climate_ml.store import Store


@app.command()
def forecast(
    problem: Annotated[str, typer.Argument(help=PROBLEM_HELP)],
    model_paths: Annotated[list[Path], typer.Argument(help="One or more model files.")],
    init: Annotated[str, typer.Option("--init", help="Init month YYYY-MM (data up to it are used), or a range A:B of them.")],
    dataset: DatasetOpt = None,
    predictor_dataset: PredictorOpt = None,
    target_variable: TargetVarOpt = None,
    refit_every: Annotated[int, typer.Option("--refit-every", help="With a range of inits: months between refits.")] = 12,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write a plume PNG: every model's forecast with the observed history.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    replace: Annotated[bool, typer.Option("--replace", help="Overwrite a different archived forecast for this init.")] = False,
    store: StoreOpt = None,
):
    """Train on data up to --init, forecast every lead with each model, and archive the forecasts.
    With a range --init A:B, forecast every init in it, fitting once per --refit-every months.
    Field models (TARGET = "sea_ice_concentration", for arctic_sea_ice) forecast concentration
    maps from one init; the maps are archived and their extents printed."""
    from climate_ml.report import CATEGORY_NAMES, plot_plume
    from climate_ml.requests import ForecastRequest, cli_option
    from climate_ml.workflows import (
        forecast_and_archive,
        observed_history,
        problem_inputs,
    )

    request = ForecastRequest.checked(cli_option, problem=problem, model_paths=model_paths, init=init,
                                      refit_every=refit_every, dataset=dataset, predictors=predictor_dataset,
                                      target_variable=target_variable, replace=replace)
    prob, init_ts = request.definition(), request.init
    store = Store.at(store)
    if request.fields:
        _forecast_maps(store, prob, model_paths, dataset, init_ts, replace, as_json)
        return
    dataset, obs, prepared = problem_inputs(store, prob, dataset, predictor_dataset, log=err.print)
    if request.init_end is not None:
        _forecast_range(store, prob, model_paths, obs, prepared, dataset, request.init, request.init_end, refit_every,
                        replace, as_json)
        return
    results, forecasts = {}, {}
    for model_path in model_paths:
        fc, action, outlook = forecast_and_archive(store, prob, model_path, obs, prepared, dataset, init_ts, replace,
                                                   outlook=True)
        forecasts[model_path.stem] = fc
        mean = fc.mean("member") if "member" in fc.dims else fc
        rows = [{"lead": int(lead), "valid_time": f"{pd.Timestamp(v):%Y-%m}", "forecast": round(float(x), 4)}
                for lead, v, x in zip(mean["lead"].values, mean["valid_time"].values[0], mean.values[0], strict=True)]
        for r in rows if outlook else []:
            if "monthly_terciles" in outlook:  # rainfall
                r["terciles"] = outlook["monthly_terciles"][str(r["lead"])]
            if "categories" in outlook:  # El Nino: the season centred on valid_time; sea ice: record low, last year
                if "valid_season" in outlook:
                    r["season"] = outlook["valid_season"][str(r["lead"])]
                r["categories"] = outlook["categories"][str(r["lead"])]
                if isinstance(outlook.get("thresholds"), dict):
                    r["thresholds"] = outlook["thresholds"][str(r["lead"])]
        out = {"problem": prob.name, "model": model_path.stem, "init_time": init, "dataset": dataset, "archive": action,
               "forecast": rows}
        if outlook and "season" in outlook:
            out["season"] = outlook["season"]
        results[model_path.stem] = out
    png = None
    if plot is not None:
        png = plot_plume(observed_history(prob, prepared, init_ts), forecasts, plot,
                         f"{prob.name} on {dataset}: forecasts from {init}", prob)
        err.print(f"wrote {png}")
    if as_json:
        typer.echo(json.dumps(next(iter(results.values())) if len(results) == 1 else
                              {"problem": prob.name, "init_time": init, "dataset": dataset, "models": results}))
        return
    for name, out in results.items():
        typer.echo(f"{prob.name} forecast from {name}, init {init} on {dataset} ({out['archive']} in archive)")
        for r in out["forecast"]:
            terc, cats = r.get("terciles"), r.get("categories")
            extra = (f"   P(below/near/above) {terc['below']:.2f}/{terc['near']:.2f}/{terc['above']:.2f}" if terc else
                     (f"   {r['season']}" if "season" in r else "")
                     + f"  P({'/'.join(CATEGORY_NAMES.get(c, c) for c in cats)}) "
                     + "/".join(f"{v:.2f}" for v in cats.values())
                     + ("  (record {record_low:.2f}, last year {last_year:.2f})".format(**r["thresholds"])
                        if "thresholds" in r else "") if cats else "")
            typer.echo(f"  lead {r['lead']:2d}  {r['valid_time']}  {r['forecast']:{'+' if prob.target_is_anomaly else ''}.2f} "
                       f"{prob.target_units}" + extra)
        if "season" in out:
            s = out["season"]
            p = s["probability"]
            typer.echo(f"  {s['months']} total {s['forecast']:.0f} {s['units']} (terciles {s['tercile_edges'][0]:.0f} / "
                       f"{s['tercile_edges'][1]:.0f}): P(below/near/above) {p['below']:.2f}/{p['near']:.2f}/{p['above']:.2f}")


def _forecast_maps(store, prob, model_paths, dataset, init, replace, as_json) -> None:
    from climate_ml.workflows import field_forecast_and_archive

    dataset = dataset or prob.default_dataset
    results = [field_forecast_and_archive(store, dataset, Path(p), init, replace=replace, log=err.print)
               for p in model_paths]
    if as_json:
        typer.echo(json.dumps(results[0] if len(results) == 1 else {"problem": prob.name, "models": results}))
        return
    for out in results:
        typer.echo(f"{prob.name} concentration maps from {out['model']} ({out['members']} members), init "
                   f"{out['init_time']} on {dataset} ({out['archive']} in archive); extent of the mean map:")
        for r in out["forecast"]:
            seen = f"   observed {r['observed_extent']:.2f}" if "observed_extent" in r else ""
            typer.echo(f"  lead {r['lead']:2d}  {r['valid_time']}  {r['extent']:.2f} {out['units']}{seen}")
    err.print(f"query the maps with `climate-ml archive query --problem {prob.name} --model {results[0]['model']} "
              f"--init {results[0]['init_time']} --dataset {dataset} --format netcdf -o maps.nc`")


def _forecast_range(store, prob, model_paths, obs, prepared, dataset, first, last, refit_every, replace, as_json):
    from climate_ml.workflows import forecast_range

    times = pd.DatetimeIndex(prepared["time"].values)
    if first < times[0] or last > times[-1]:
        raise QueryError(f"bad --init {first:%Y-%m}:{last:%Y-%m}: the data cover {times[0]:%Y-%m}..{times[-1]:%Y-%m}")
    with progress_bar("forecasting") as bar:
        task = bar.add_task("", total=None)
        result, actions = forecast_range(store, prob, model_paths, obs, prepared, dataset, first, last, refit_every,
                                         replace, lambda msg: bar.update(task, description=msg))
    out = {"problem": prob.name, "dataset": dataset, "inits": f"{first:%Y-%m}:{last:%Y-%m}",
           "refit_every_months": refit_every,
           "models": {name: {"archive": actions.get(name), "n_inits": int(fc.sizes["init_time"]),
                             "n_fits": int(len(set(result.fit_end.values.tolist()))) if result.fit_end is not None else None}
                      for name, fc in result.forecasts.items()}}
    if as_json:
        typer.echo(json.dumps(out))
        return
    for name, m in out["models"].items():
        typer.echo(f"{prob.name} forecasts from {name} for {m['n_inits']} inits {out['inits']} on {dataset}, "
                   f"{m['n_fits']} fits ({m['archive']} in archive)")


@app.command()
def outlook(
    problem: Annotated[str, typer.Argument(help=PROBLEM_HELP)],
    init: Annotated[str | None, typer.Option("--init", help="Init month YYYY-MM (default: the latest month with every input).")] = None,
    model: Annotated[list[str] | None, typer.Option("--model", help="Models in models/ (repeatable; default: every model of the problem).")] = None,
    dataset: DatasetOpt = None,
    predictor_dataset: PredictorOpt = None,
    target_variable: TargetVarOpt = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="PNG to write (default: a new <store>/runs/<time>-outlook-<problem>/ folder).")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    store: StoreOpt = None,
):
    """The latest outlook: every model's forecast from one init (archived), the problem's
    probabilities (El Nino: La Nina / neutral / El Nino; rainfall: terciles) with their
    multi-model mean, as a table and a PNG (plume and probability bars)."""
    from climate_ml.report import plot_outlook
    from climate_ml.requests import OutlookRequest, cli_option
    from climate_ml.workflows import multi_model_outlook, problem_inputs

    request = OutlookRequest.checked(cli_option, problem=problem, models=model or None, init=init, dataset=dataset,
                                     predictors=predictor_dataset, target_variable=target_variable)
    prob, paths = request.definition(), request.model_paths()
    store = Store.at(store)
    name, obs, prepared = problem_inputs(store, prob, dataset, predictor_dataset, log=err.print)
    with progress_bar("outlook") as bar:
        bar.add_task(f"{len(paths)} models", total=None)
        result = multi_model_outlook(store, prob, paths, obs, prepared, name, request.init)
    png = plot_outlook(result, output or store.run_dir(f"outlook-{prob.name}") / f"outlook-{prob.name}-{result.init:%Y-%m}.png", prob)
    if as_json:
        typer.echo(json.dumps({"problem": prob.name, "dataset": name, "init_time": f"{result.init:%Y-%m}",
                               "models": result.summaries, "consensus": result.consensus, "failed": result.failures,
                               "png": str(png)}))
    else:
        typer.echo(f"{prob.name} outlook on {name} from {result.init:%Y-%m} ({prob.target_units})")
        typer.echo(result.table())
        for m, reason in result.failures.items():
            typer.echo(f"FAILED {m}: {reason}")
        err.print(f"wrote {png}")
    if not result.summaries:
        raise typer.Exit(3)


@app.command()
def verify(
    problem: Annotated[str, typer.Argument(help=PROBLEM_HELP)],
    dataset: DatasetOpt = None,
    predictor_dataset: PredictorOpt = None,
    target_variable: TargetVarOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    store: StoreOpt = None,
):
    """Record the outcomes observed since in the archive, beside their forecasts, and score every
    archived forecast whose target has been observed, per model and lead. Archived concentration
    maps (field models) get their observed maps and the field scores (IIEE, extent RMSE, binary
    accuracy, Brier score of P(ice)). The live forecasts' running skill against their backtest
    is kept in the archive (for maps: their IIEE against the recorded field backtest); a (model,
    lead) outside its backtest interval is reported as drift."""
    from climate_ml.requests import VerifyRequest, cli_option
    from climate_ml.workflows import verify_forecasts

    request = VerifyRequest.checked(cli_option, problem=problem, dataset=dataset, predictors=predictor_dataset,
                                    target_variable=target_variable)
    done = verify_forecasts(Store.at(store), request, log=err.print)
    recs, maps = done.index or [], done.maps
    if done.outcomes_recorded:
        err.print(f"recorded {done.outcomes_recorded} newly observed outcome(s) in the archive")
    if done.map_values_recorded:
        err.print(f"recorded {done.map_values_recorded} newly observed map value(s) in the archive")
    for r in done.drifting:
        err.print(f"DRIFT: {r['model']} lead {r['lead']}: live {r['score']} {r['live']} outside its backtest interval "
                  f"{r['backtest_ci']}")
    if as_json:
        typer.echo(json.dumps(recs if maps is None else {"index": recs, "maps": maps}))
        return
    if recs:
        typer.echo(pd.DataFrame(recs).to_string(index=False))
    if maps:
        typer.echo(("\n" if recs else "") + "concentration maps (iiee, sie_rmse in 10^6 km^2):")
        typer.echo(pd.DataFrame(maps).to_string(index=False))
