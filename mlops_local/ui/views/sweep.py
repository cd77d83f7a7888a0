"""Sweep: tune one model over the catalog's ranges; live progress and chart, Stop, link to the parent run."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from mlops_local.background import start_once
from mlops_local.errors import UserError
from mlops_local.ml import datasets
from mlops_local.ml.catalog import CATALOG, DEFAULT_MODEL, ParamSpec
from mlops_local.ml.types import DEFAULT_EXPERIMENT, DatasetSpec
from mlops_local.sweep import (
    MAX_TRIALS,
    METRICS,
    MODEL_MODES,
    STRATEGIES,
    SweepJob,
    SweepSpec,
    SweepSpecError,
    cores,
    plan_sweep,
)
from mlops_local.ui import common, widgets

JOB_KEY = "sweep_job"
FRAME_KEY = "sweep_upload_frame"
POLL_SECONDS = 0.5
BUILTIN, UPLOAD = "Built-in", "Upload a file"
FIRST_STRATEGY, FIRST_TRIALS = "random", 10  # what the page opens on: valid for any model's full space
SERIES = ("trial score", "best so far", "default hyperparameters")
SERIES_COLOURS = ("#1f77b4", "#000000", "#7f7f7f")

st.title("Sweep")
st.caption("Many trainings of one model over its hyperparameter ranges, as child runs of one MLflow run.")
settings = common.settings()
job: SweepJob | None = st.session_state.get(JOB_KEY)
running = job is not None and job.running


def _dataset() -> tuple[DatasetSpec | None, pd.DataFrame | None]:
    source = st.radio("Dataset source", [BUILTIN, UPLOAD], key="sweep_source", horizontal=True)
    if source == UPLOAD:
        uploaded = st.file_uploader("CSV or Parquet file", type=common.UPLOAD_TYPES, key="sweep_upload",
                                    max_upload_size=settings.upload_limit_mb)
        if uploaded is None:
            return None, None
        with common.user_errors():
            frame = common.read_upload(uploaded, FRAME_KEY)
            columns = [str(c) for c in frame.columns]
            target = st.selectbox("Target column", columns, index=len(columns) - 1, key="sweep_target")
            return DatasetSpec(name=uploaded.name, target=target), frame
        return None, None
    names = list(datasets.BUILTINS)
    name = st.selectbox("Built-in dataset", names, index=names.index(datasets.DEFAULT_DATASET),
                        key="sweep_dataset", format_func=lambda n: f"{n}: {datasets.BUILTINS[n].description}")
    options: dict[str, object] = {}
    if datasets.BUILTINS[name].options:
        with st.expander("Dataset options"):
            options = widgets.dataset_options(name, datasets.BUILTINS[name].options)
    return DatasetSpec(name=name, options=options), None


def _range(model: str, spec: ParamSpec) -> str:
    """Widgets narrowing one hyperparameter's range; returns it as --param-range text."""
    key = f"sweep_{model}_{spec.name}"
    if spec.kind in ("choice", "bool"):
        options = [str(c).lower() if spec.kind == "bool" else str(c) for c in (spec.choices or (True, False))]
        chosen = st.multiselect(f"{spec.name} values", options, default=options, key=f"{key}_values")
        return "|".join(chosen)
    step = 1 if spec.kind == "int" else None
    cast = int if spec.kind == "int" else float
    low_col, high_col, log_col = st.columns([2, 2, 1], vertical_alignment="bottom")
    low = low_col.number_input(f"{spec.name} from", cast(spec.low), cast(spec.high), cast(spec.low),
                               step=step, key=f"{key}_low", format=None if step else "%g")
    high = high_col.number_input("to", cast(spec.low), cast(spec.high), cast(spec.high), step=step,
                                 key=f"{key}_high", format=None if step else "%g")
    log = log_col.checkbox("log", value=spec.log, key=f"{key}_log", disabled=low <= 0)
    return f"{low}:{high}:{'log' if log and low > 0 else 'linear'}"


def _space(model: str) -> tuple[dict[str, str], dict[str, object]]:
    """Per hyperparameter: search it (a range) or hold it at a value."""
    ranges: dict[str, str] = {}
    fixed: dict[str, object] = {}
    for spec in CATALOG[model].params:
        searched = st.checkbox(f"Search {spec.name}", value=True, key=f"sweep_{model}_{spec.name}_search",
                               help=f"{spec.help} Catalog range: {spec.allowed()}.")
        if searched:
            ranges[spec.name] = _range(model, spec)
        else:
            fixed[spec.name] = widgets.param_input(model, spec)
    return ranges, fixed


def score_chart(rows: list[dict[str, object]], baseline: float | None, metric: str) -> dict[str, object]:
    """Vega-Lite spec of the trial scores, the best so far and the default hyperparameters' score, on a
    y axis that spans them (scores of 0.97..0.99 are not a flat line at the top of a 0..1 axis)."""
    scored = [r for r in rows if r["score"] is not None]
    colour = {"field": "series", "type": "nominal", "legend": {"orient": "bottom", "title": None},
              "scale": {"domain": list(SERIES), "range": list(SERIES_COLOURS)}}
    x = {"field": "trial", "type": "quantitative", "title": "trial",
         "axis": {"format": "d", "tickMinStep": 1}}
    y = {"field": "value", "type": "quantitative", "title": metric, "scale": {"zero": False}}
    points = [{"trial": r["trial"], "series": SERIES[0], "value": r["score"]} for r in scored]
    best = [{"trial": r["trial"], "series": SERIES[1], "value": r["best so far"]} for r in scored]
    layers: list[dict[str, object]] = [
        {"data": {"values": points}, "mark": {"type": "circle", "size": 45},
         "encoding": {"x": x, "y": y, "color": colour, "tooltip": [{"field": "trial"}, {"field": "value"}]}},
        {"data": {"values": best}, "mark": {"type": "line", "interpolate": "step-after"},
         "encoding": {"x": x, "y": y, "color": colour}},
    ]
    if baseline is not None:
        layers.append({"data": {"values": [{"series": SERIES[2], "value": baseline}]},
                       "mark": {"type": "rule", "strokeDash": [5, 4]},
                       "encoding": {"y": y, "color": colour, "tooltip": [{"field": "value"}]}})
    return {"height": 260, "layer": layers}


def _progress(poll: bool) -> None:
    current: SweepJob | None = st.session_state.get(JOB_KEY)
    if current is None:
        return
    progress = current.progress
    total = progress.total if progress else (current.spec.trials or 0)
    done = progress.done if progress else 0
    best = progress.best if progress else None
    state = "stopping" if current.stopping else ("running" if current.running else "done")
    text = f"{done}/{total or '?'} trials · {state} · {current.elapsed():.0f} s"
    if best is not None:
        text += f" · best {progress.score_metric} {best.score:.4f} (trial {best.number})"
    if progress is not None and progress.baseline is not None:
        text += f" · default hyperparameters {progress.baseline:.4f}"
    st.progress(min(1.0, done / total) if total else 0.0, text=text)
    if current.running and st.button("Stop", key="sweep_stop", disabled=current.stopping,
                                     help="No new trials; running ones are interrupted (KILLED), "
                                          "finished ones keep their scores."):
        current.stop()
    rows = current.history()
    if rows and progress is not None:
        st.vega_lite_chart(None, score_chart(rows, progress.baseline, progress.score_metric), width="stretch")
    if poll and current.done:
        common.clear_run_caches()
        st.rerun()


def _set(key: str, value: object) -> None:
    """on_click of a fix button: runs before the widgets are drawn again."""
    st.session_state[key] = value


def _explain(exc: UserError) -> tuple[str, list[tuple[str, str, object]]]:
    """The page's wording of a refused spec (its own controls, not the CLI's flags), and the one-change
    fixes it can offer as (button label, widget key, value)."""
    if not isinstance(exc, SweepSpecError):
        return str(exc), []
    facts, name = exc.details, exc.param
    if exc.reason == "grid_too_large":
        total, trials, fits = facts["total"], facts["trials"], facts["points_that_fit"]
        sizes = " × ".join(f"{n} {k}" for k, n in facts["sizes"].items())
        fixes: list[tuple[str, str, object]] = []
        if total <= MAX_TRIALS:
            fixes.append((f"Set Trials to {total}", "sweep_trials_n", total))
        if fits is not None:
            fixes.append((f"Set grid points to {fits}", "sweep_grid_points", fits))
        return (f"The grid has {total} combinations ({sizes}), more than **Trials** ({trials}). Raise "
                f"Trials to {total}" + ("" if total <= MAX_TRIALS else f" (at most {MAX_TRIALS})")
                + ", lower **Grid points per numeric range**, untick **Search** for some hyperparameters "
                "or some of their values, or use the random or optuna strategy."), fixes
    if exc.reason == "no_values":
        return f"**{name} values** is empty: pick at least one value, or untick **Search {name}**.", []
    if exc.reason == "reversed":
        return (f"**{name} from** ({facts['low']}) is above **to** ({facts['high']}): lower one or raise "
                "the other."), []
    if exc.reason == "nothing_searched":
        return "Every hyperparameter is held at a value: tick **Search** for at least one.", []
    if exc.reason == "no_cv_metric":
        return (f"**Optimise** {facts['metric']} has no cross-validated version: optimise r2 or rmse, or set "
                "**Cross-validation folds** to 0.", [("Set cross-validation folds to 0", "sweep_cv", 0)])
    if exc.reason == "register_needs_model":
        return ("Registering needs the best model logged: set **Models and plots to log** to the best "
                "trial's or every trial's, or clear **Register the best model as**."), \
            [("Log the best trial's model", "sweep_models", "best")]
    return str(exc), []


def _results(done: SweepJob) -> None:
    if done.error:
        st.error(done.error)
        return
    result = done.result
    if result is None:
        return
    counts = result.to_dict()["counts"]
    summary = (f"{counts['finished']} finished, {counts['failed']} failed, {counts['killed']} interrupted "
               f"of {result.total} trials in {result.duration_s:.0f} s on {result.executor}")
    if result.status == "KILLED":  # only Stop ends a sweep KILLED: what the user asked for
        st.info(f"Sweep stopped: {summary}. Finished trials keep their scores.")
    else:
        (st.success if result.status == "FINISHED" else st.error)(f"Sweep {result.status.lower()}: {summary}")
    for warning in result.warnings:
        st.warning(warning)
    if result.best is not None:
        gain = None if result.baseline is None else f"{result.best.score - result.baseline:+.4f} vs defaults"
        st.metric(f"Best {result.score_metric} (trial {result.best.number})", f"{result.best.score:.4f}",
                  gain, delta_color="normal" if result.higher_is_better else "inverse")
        st.dataframe(pd.DataFrame([result.best.params]), hide_index=True, key="sweep_best_params")
    links = st.columns(2)
    links[0].link_button("Sweep in MLflow", common.mlflow_run_url(result.experiment_id, result.parent_run_id),
                         width="stretch")
    links[1].page_link("views/runs.py", label="Compare trials on Runs", icon=":material/table_rows:")
    if result.model_uri:
        alias = f" (@{done.spec.alias})" if result.alias_set else ""
        st.caption(f"Best model: `{result.model_uri}`" + (f", registered as {done.spec.register} version "
                                                          f"{result.registered_version}{alias}"
                                                          if result.registered_version else ""))
    table = pd.DataFrame([{"trial": t.number, "status": t.status, "score": t.score, **t.params,
                           "error": t.error or ""} for t in result.trials])
    st.dataframe(table, hide_index=True, key="sweep_trials")


data_col, model_col = st.columns(2, gap="large")
with data_col:
    st.subheader("Data")
    dataset, frame = _dataset()
    st.subheader("Search")
    strategy = st.radio("Strategy", STRATEGIES, index=STRATEGIES.index(FIRST_STRATEGY), key="sweep_strategy",
                        horizontal=True,
                        help="grid: every combination; random: seeded draws; optuna: TPE, learns as it goes.")
    grid_points = st.number_input("Grid points per numeric range", 2, 20, 3, key="sweep_grid_points",
                                  disabled=strategy != "grid")
    trials = st.number_input("Trials", 1, MAX_TRIALS, FIRST_TRIALS, key="sweep_trials_n",
                             help="grid: at most this many grid points")
    metric = st.selectbox("Optimise", list(METRICS), key="sweep_metric",
                          format_func=lambda m: f"{m} ({'max' if METRICS[m][2] else 'min'})")
    jobs = st.number_input("Parallel trials", 1, 64, cores(), key="sweep_jobs")
    with st.expander("Split, seed, cross-validation, experiment, registration"):
        test_size = st.slider("Test size", 0.05, 0.5, 0.2, 0.05, key="sweep_test_size")
        seed = st.number_input("Seed", 0, 2**31 - 1, 42, 1, key="sweep_seed")
        cv_folds = st.number_input("Cross-validation folds (0 = off)", 0, 20, 0, 1, key="sweep_cv")
        experiment = st.text_input("MLflow experiment", DEFAULT_EXPERIMENT, key="sweep_experiment").strip()
        models = st.selectbox("Models and plots to log", MODEL_MODES, index=MODEL_MODES.index("best"),
                              key="sweep_models", format_func=lambda m: {
                                  "all": "every trial's (like Train; slower)",
                                  "best": "the best trial's only", "none": "none"}[m],
                              help="Every trial logs its params and metrics. The model, plots and dataset "
                                   "input go on the best trial's run only, on every trial's, or on none.")
        register = st.text_input("Register the best model as (optional)", key="sweep_register").strip()
        alias = st.text_input("Alias (optional)", "champion", key="sweep_alias",
                              help="Moved through the promotion gate: only when the best trial beats the "
                                   "version the alias points at now (the verdict is a run of the "
                                   "'promotions' experiment).").strip()
with model_col:
    st.subheader("Model")
    names = list(CATALOG)
    model = st.selectbox("Model", names, index=names.index(DEFAULT_MODEL), key="sweep_model",
                         format_func=lambda n: f"{CATALOG[n].label} ({n})")
    ranges, fixed = _space(model)

spec, problem = None, None
if dataset is not None:
    spec = SweepSpec(dataset=dataset, model=model, strategy=strategy, trials=int(trials), metric=metric,
                     ranges=ranges, search=tuple(ranges), fixed=fixed, grid_points=int(grid_points),
                     seed=int(seed), test_size=float(test_size), cv_folds=int(cv_folds),
                     experiment=experiment or DEFAULT_EXPERIMENT, jobs=int(jobs), models=models,
                     register=register or None, alias=(alias or None) if register else None,
                     baseline=True)  # the chart's baseline: one more fit per sweep
    try:
        planned = plan_sweep(spec, frame, load=False).total
        st.caption(f"{planned} trials, {int(jobs)} at a time.")
    except UserError as exc:
        problem, fixes = _explain(exc)
        st.error(problem)
        for column, (label, key, value) in zip(st.columns(max(1, len(fixes))), fixes, strict=False):
            column.button(label, key=f"sweep_fix_{key}", on_click=_set, args=(key, value))

clicked = st.button("Start sweep", key="sweep_start", type="primary",
                    disabled=running or spec is None or problem is not None)
if clicked and spec is not None:
    metrics = getattr(common.runtime(), "sweeps", None)  # /metrics of this process, updated per trial
    _, started = start_once(st.session_state, JOB_KEY, SweepJob, lambda: SweepJob(
        spec, settings, frame=frame, client=common.client(), metrics=metrics))
    if started:
        st.rerun()
    st.toast("A sweep is already running in this tab.")

if job is not None:
    st.fragment(_progress, run_every=POLL_SECONDS if running else None)(running)
    if job.done:
        _results(job)
