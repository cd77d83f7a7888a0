"""Tracking overhead of one training: wall time minus fit+predict, mlops-local vs MLflow's defaults.

Workload (the issue's): random_forest (100 trees) on diabetes, tracked on a real MLflow server started
on a free port in a temporary MLOPS_HOME. Both sides record the same things: params, metrics, the
dataset as a run input, the model (skops) and three plots.

- mlops-local: ``train()`` (compact skops dump, pinned requirements, run creation overlapping the fit,
  parallel uploads).
- baseline, same run: MLflow's fluent defaults: ``start_run``, ``log_params``, ``log_metrics``,
  ``log_input``, ``mlflow.sklearn.log_model`` inferring requirements and the signature from the input
  example (with the trusted types skops needs, or it refuses the forest), ``log_figure`` x3.

Run: .venv/bin/python -m benchmarks.bench_tracking_overhead [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from mlops_local import tracking
from mlops_local.ml import evaluation, modelio, plots, preprocessing
from mlops_local.ml.catalog import get_model
from mlops_local.ml.datasets import load_dataset
from mlops_local.ml.training import train
from mlops_local.ml.types import DatasetSpec, TrainRequest
from mlops_local.settings import Settings
from tests.services import stack_env, start_service

TARGET_S = 0.15
TARGET_RATIO = 10.0


def ours(settings: Settings, client) -> tuple[float, float]:
    """(overhead, fit+predict) of one mlops-local training."""
    result = train(TrainRequest(DatasetSpec("diabetes"), "random_forest", experiment="bench-ours"), settings,
                   client=client)
    d = result.durations
    return d["total_s"] - d["fit_s"] - d["predict_s"], d["fit_s"] + d["predict_s"]


def defaults(tracking_uri: str) -> tuple[float, float]:
    """(overhead, fit+predict) of the same training tracked with MLflow's fluent defaults."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow
    import mlflow.sklearn

    start = time.perf_counter()
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("bench-defaults")
    data = load_dataset(DatasetSpec("diabetes"))
    X_train, X_test, y_train, y_test = evaluation.split(data.X, data.y, 0.2, 42)
    spec = get_model("random_forest")
    pipeline = preprocessing.build_pipeline(spec.build({}, seed=42), data.numeric_features,
                                            data.categorical_features, spec.needs_scaling)
    with mlflow.start_run():
        t = time.perf_counter()
        pipeline.fit(X_train, y_train)
        fit_s = time.perf_counter() - t
        t = time.perf_counter()
        y_pred = pipeline.predict(X_test)
        predict_s = time.perf_counter() - t
        mlflow.log_params({"model": "random_forest", **spec.defaults(), "test_size": 0.2, "seed": 42})
        mlflow.log_metrics({**evaluation.regression_metrics(y_test.to_numpy(), y_pred), "fit_s": fit_s})
        mlflow.log_input(mlflow.data.from_pandas(data.X.assign(target=data.y), name="diabetes",
                                                 targets="target"), context="training")
        mlflow.sklearn.log_model(pipeline, name="model", input_example=X_train.head(5),
                                 skops_trusted_types=modelio.trusted_types(pipeline))
        for name, (x, y) in {"predicted_vs_actual": (y_test, y_pred),
                             "residuals": (y_pred, y_test - y_pred)}.items():
            fig, ax = plt.subplots()
            ax.scatter(x, y)
            fig.tight_layout()
            mlflow.log_figure(fig, f"plots/{name}.png")
            plt.close(fig)
        fig, ax = plt.subplots()
        importance = pipeline.named_steps["model"].feature_importances_
        ax.barh(data.features, importance)
        fig.tight_layout()
        mlflow.log_figure(fig, "plots/feature_importance.png")
        plt.close(fig)
    wall = time.perf_counter() - start
    return wall - fit_s - predict_s, fit_s + predict_s


def breakdown(rounds: int) -> dict[str, float]:
    """Medians of the CPU parts of our logging, measured alone (no server)."""
    data = load_dataset(DatasetSpec("diabetes"))
    X_train, X_test, y_train, y_test = evaluation.split(data.X, data.y, 0.2, 42)
    spec = get_model("random_forest")
    pipeline = preprocessing.build_pipeline(spec.build({}, seed=42), data.numeric_features, [], False)
    pipeline.fit(X_train, y_train)
    y_pred = pipeline.predict(X_test)
    importance, kind = evaluation.feature_importance(pipeline, X_test, y_test, 42)
    parts: dict[str, list[float]] = {"model save (one skops dump)": [], "model save (mlflow.sklearn)": [],
                                     "three plots": []}
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            modelio.save_model_dir(pipeline, Path(tmp) / "m", X_train, data.numeric_features, data.target)
            parts["model save (one skops dump)"].append(time.perf_counter() - t)
            import mlflow.sklearn

            t = time.perf_counter()
            mlflow.sklearn.save_model(
                pipeline, str(Path(tmp) / "m2"), skops_trusted_types=modelio.trusted_types(pipeline),
                signature=modelio.signature(X_train, data.numeric_features),
                input_example=modelio.input_example(X_train, data.numeric_features),
                pip_requirements=list(modelio.pip_requirements()))
            parts["model save (mlflow.sklearn)"].append(time.perf_counter() - t)
            t = time.perf_counter()
            plots.write_plots(Path(tmp) / "p", y_test.to_numpy(), y_pred, importance, kind, data.target)
            parts["three plots"].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in parts.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="measured trainings per side (default 7)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-tracking-") as tmp:
        env = stack_env(Path(tmp) / "home")
        server = start_service("mlflow", env, Path(tmp) / "logs")
        try:
            settings = Settings.from_env(env)
            client = tracking.get_client(settings)
            ours(settings, client)  # warm-up: imports, experiment creation, font cache
            defaults(settings.effective_tracking_uri)
            our_runs, base_runs = [], []
            for _ in range(args.rounds):  # interleaved, so load on the machine hits both alike
                our_runs.append(ours(settings, client))
                base_runs.append(defaults(settings.effective_tracking_uri))
        finally:
            server.stop()
    parts = breakdown(args.rounds)
    our_over = statistics.median(o for o, _ in our_runs)
    base_over = statistics.median(o for o, _ in base_runs)
    print(f"random_forest (100 trees) on diabetes, {args.rounds} rounds each, medians")
    print(f"{'':32} {'overhead s':>10} {'fit+predict s':>14}")
    print(f"{'mlops-local train()':32} {our_over:10.3f} {statistics.median(f for _, f in our_runs):14.3f}")
    base_fit = statistics.median(f for _, f in base_runs)
    print(f"{'MLflow defaults (fluent API)':32} {base_over:10.3f} {base_fit:14.3f}")
    print(f"ratio defaults/ours: {base_over / our_over:.1f}x (target >= {TARGET_RATIO:.0f}x); "
          f"ours {our_over:.3f} s (target <= {TARGET_S} s)")
    print("our overhead spread: " + ", ".join(f"{o:.3f}" for o, _ in our_runs))
    print("CPU parts of our logging, alone (medians):")
    for name, value in parts.items():
        print(f"  {name:30} {value:.3f} s")
    print(f"target ratio {'met' if base_over / our_over >= TARGET_RATIO else 'NOT met'}; "
          f"target overhead {'met' if our_over <= TARGET_S else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
