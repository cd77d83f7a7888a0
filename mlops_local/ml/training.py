"""One tracked training: validate, split, fit, evaluate, log to MLflow (fast), never leave a run RUNNING."""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sklearn.pipeline import Pipeline

from mlops_local import tracking
from mlops_local.errors import ServiceUnavailable, UserError
from mlops_local.ml import evaluation, preprocessing
from mlops_local.ml.catalog import get_model, validate_params
from mlops_local.ml.datasets import LoadedDataset, load_dataset
from mlops_local.ml.modelio import save_model_dir
from mlops_local.ml.plots import write_plots
from mlops_local.ml.profile import PROFILE_ARTIFACT, build_profile, write_profile
from mlops_local.ml.runlog import RunLogger
from mlops_local.ml.safeload import checksum_tags
from mlops_local.ml.types import ProgressCallback, TrainRequest, TrainResult
from mlops_local.runmeta import (
    MODEL_ARTIFACT,
    PLOTS_ARTIFACT,
    SOURCES,
    TAG_CLIENT,
    TAG_DATASET,
    TAG_MODEL,
    TAG_PARENT,
    TAG_SOURCE,
)
from mlops_local.settings import Settings

log = logging.getLogger(__name__)

_MAX_PARAM = 500


def _check_request(request: TrainRequest) -> dict[str, object]:
    if request.source not in SOURCES:
        raise UserError(f"source must be one of {', '.join(SOURCES)}, got {request.source!r}")
    if isinstance(request.seed, bool) or not isinstance(request.seed, (int, np.integer)) \
            or not 0 <= int(request.seed) < 2**32:
        raise UserError(f"seed must be an integer between 0 and {2**32 - 1}, got {request.seed!r}")
    if not isinstance(request.experiment, str) or not request.experiment.strip():
        raise UserError("experiment name must not be empty")
    return validate_params(request.model, request.params)


def _run_params(request: TrainRequest, data: LoadedDataset, hyper: dict[str, object], test_size: float,
                folds: int, n_train: int, n_test: int, scale: bool) -> dict[str, str]:
    params: dict[str, object] = {"model": request.model, **hyper}
    params.update(preprocessing.summary(data.numeric_features, data.categorical_features, scale))
    params.update({
        "test_size": test_size, "seed": int(request.seed), "cv_folds": folds,
        "dataset": data.name, "dataset_source": data.source, "dataset_fingerprint": data.fingerprint,
        "target": data.target, "n_rows": len(data.y), "n_features": len(data.features),
        "n_train": n_train, "n_test": n_test, "rows_dropped": data.n_rows_dropped,
        "features": ", ".join(data.features),
    })
    for key, value in data.options.items():
        params[f"dataset_{key}"] = value
    return {k: str(v)[:_MAX_PARAM] for k, v in params.items()}


def _file_source(path: str):
    """MLflow's local-file dataset source for ``path`` (resolved directly: MLflow registers that class
    twice, so resolving the string warns that it "can be interpreted in multiple ways")."""
    from mlflow.data.dataset_source_registry import get_registered_sources

    for source_class in get_registered_sources():
        if source_class.__name__ == "LocalArtifactDatasetSource":
            return source_class._resolve(path)
    return None


_INPUTS: dict[tuple, object] = {}
_INPUTS_LOCK = threading.Lock()
_MAX_INPUTS = 32


def dataset_input(data: LoadedDataset):
    """The dataset as an MLflow run input, built once per process per dataset content.

    Building it profiles the frame and infers its schema (about 90 ms for co2_canada), once per
    training; a sweep's trials and repeated trainings on one dataset reuse it."""
    key = (data.fingerprint, data.name, data.target, tuple(data.features), data.source, data.path)
    with _INPUTS_LOCK:
        cached = _INPUTS.get(key)
    if cached is None:
        cached = _build_dataset_input(data)
        with _INPUTS_LOCK:
            if len(_INPUTS) >= _MAX_INPUTS:
                _INPUTS.pop(next(iter(_INPUTS)))
            _INPUTS[key] = cached
    return cached


def _build_dataset_input(data: LoadedDataset):
    """The dataset as an MLflow run input (digest = our content fingerprint, so nothing is re-hashed)."""
    import mlflow.data
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.entities import DatasetInput, InputTag

    frame = data.X.assign(**{data.target: data.y.to_numpy()})
    source = _file_source(data.path) if data.path else None
    if source is None:
        source = CodeDatasetSource({"mlops_local.dataset": data.name, "origin": data.source})
    dataset = mlflow.data.from_pandas(frame, source=source, name=data.name, targets=data.target,
                                      digest=data.fingerprint)
    return DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", "training")])


ModelKeeper = Callable[[dict[str, float], Callable[[Path], None]], None]


@dataclass
class Prepared:
    """A training's data, split and unfitted pipeline (a sweep's baseline builds the same for its fit)."""

    data: LoadedDataset
    test_size: float
    folds: int
    X_train: pd.DataFrame
    X_test: pd.DataFrame
    y_train: pd.Series
    y_test: pd.Series
    pipeline: Pipeline

    def write_model(self, out: Path) -> None:
        """The fitted pipeline as an MLflow model directory, ``out/model``, and the reference profile of
        its training rows, ``out/profile`` (what the model service measures drift against)."""
        save_model_dir(self.pipeline, out / MODEL_ARTIFACT, self.X_train, self.data.numeric_features,
                       self.data.target)
        predictions = np.asarray(self.pipeline.predict(self.X_train), dtype=float)
        write_profile(build_profile(self.X_train, self.data.numeric_features, self.y_train.to_numpy(),
                                    predictions, self.data.target), out / PROFILE_ARTIFACT)

    def write_plots(self, out: Path, y_pred: np.ndarray, importance: pd.Series | None, kind: str) -> None:
        """The run's plots, ``out/plots``."""
        write_plots(out / PLOTS_ARTIFACT, self.y_test.to_numpy(), y_pred, importance, kind, self.data.target)


def prepare(request: TrainRequest, frame: pd.DataFrame | None = None, hyper: dict[str, object] | None = None,
            report: Callable[[str], None] = lambda step: None) -> Prepared:
    """Load the dataset, split it and build the pipeline of ``request`` (``hyper``: its validated
    hyperparameters, validated here when None); ``report`` is called with "load" and "split"."""
    spec = get_model(request.model)
    if hyper is None:
        hyper = validate_params(request.model, request.params)
    report("load")
    data = load_dataset(request.dataset, frame)
    test_size, folds = evaluation.validate_split(len(data.y), request.test_size, request.cv_folds)
    report("split")
    X_train, X_test, y_train, y_test = evaluation.split(data.X, data.y, test_size, int(request.seed))
    pipeline = preprocessing.build_pipeline(spec.build(hyper, seed=int(request.seed)), data.numeric_features,
                                            data.categorical_features, spec.needs_scaling)
    return Prepared(data, test_size, folds, X_train, X_test, y_train, y_test, pipeline)


def train(request: TrainRequest, settings: Settings, *, client: MlflowClient | None = None,
          progress: ProgressCallback | None = None, frame: pd.DataFrame | None = None,
          keep_model: ModelKeeper | None = None, experiment_id: str | None = None) -> TrainResult:
    """Train ``request.model`` on ``request.dataset`` and track it as one MLflow run.

    Everything the user controls is validated before the run is created (UserError). ``progress`` is
    called with each step name ("load", "split", "fit", "evaluate", "log") as the step starts.
    ``keep_model(metrics, save)`` is called once the test metrics are known; calling ``save(directory)``
    writes the run's artifacts there as they would be uploaded, not uploading them: the fitted model
    (``model/``, an MLflow model directory), its reference profile (``profile/``) and the plots
    (``plots/``). A sweep keeps its best trial's
    this way instead of logging every trial's (with ``log_model`` and ``log_plots`` off).
    ``experiment_id``: the id of ``request.experiment`` when the caller already resolved it (a sweep's
    trials: one request fewer each).
    """
    start = time.perf_counter()

    def report(step: str) -> None:
        if progress is not None:
            progress(step, time.perf_counter() - start)

    spec = get_model(request.model)
    hyper = _check_request(request)
    prepared = prepare(request, frame, hyper, report)
    data, test_size, folds, pipeline = prepared.data, prepared.test_size, prepared.folds, prepared.pipeline
    X_train, X_test, y_train, y_test = prepared.X_train, prepared.X_test, prepared.y_train, prepared.y_test
    if client is None:
        client = tracking.connect(settings).client
    if experiment_id is None:
        experiment_id = tracking.experiment_for(client, settings, request.experiment)
    tags = {TAG_DATASET: data.name, TAG_MODEL: request.model, TAG_SOURCE: request.source,
            TAG_CLIENT: settings.client_name,
            "target": data.target, "mlflow.source.name": "mlops-local", "mlflow.source.type": "LOCAL"}
    tags.update({str(k): str(v) for k, v in request.extra_tags.items()})
    if request.parent_run_id:
        tags[TAG_PARENT] = request.parent_run_id
    params = _run_params(request, data, hyper, test_size, folds, len(y_train), len(y_test),
                         spec.needs_scaling)
    logger = RunLogger(client, settings, experiment_id)
    # The run is created, and its params and dataset logged, while the model fits.
    logger.open(f"{request.model}-{data.name}", tags, params,
                (lambda: dataset_input(data)) if request.log_dataset else None,
                defer_params=request.parent_run_id is not None)  # a sweep's trial: one request fewer
    try:
        report("fit")
        t = time.perf_counter()
        try:
            pipeline.fit(X_train, y_train)
        except ValueError as exc:
            raise UserError(f"{request.model} could not be trained on {data.name}: {exc}") from exc
        fit_s = time.perf_counter() - t
        report("evaluate")
        t = time.perf_counter()
        y_pred = np.asarray(pipeline.predict(X_test), dtype=float)
        predict_s = time.perf_counter() - t
        metrics = evaluation.regression_metrics(y_test.to_numpy(), y_pred)
        if folds:
            metrics.update(evaluation.cross_validation(pipeline, X_train, y_train, folds, int(request.seed)))
        importance, importance_kind = evaluation.feature_importance(pipeline, X_test, y_test,
                                                                    int(request.seed))
        report("log")
        logger.log_batch(metrics={**metrics, "fit_s": fit_s, "predict_s": predict_s},
                         params={"importance": importance_kind})
        if keep_model is not None:
            def save_all(out: Path) -> None:
                prepared.write_model(out)
                prepared.write_plots(out, y_pred, importance, importance_kind)

            keep_model(dict(metrics), save_all)
        with tempfile.TemporaryDirectory(prefix="mlops-run-") as tmp:
            out = Path(tmp)
            if request.log_model:
                prepared.write_model(out)
                logger.upload_dir(out / MODEL_ARTIFACT, MODEL_ARTIFACT)
                logger.upload_dir(out / PROFILE_ARTIFACT, PROFILE_ARTIFACT)
                # The loader checks the model file against this before loading it (safeload).
                logger.log_batch(tags=checksum_tags(out / MODEL_ARTIFACT))
            if request.log_plots:
                prepared.write_plots(out, y_pred, importance, importance_kind)
                logger.upload_dir(out / PLOTS_ARTIFACT, PLOTS_ARTIFACT)
            logger.finish()
    except MlflowException as exc:
        logger.fail(exc)
        if not str(exc.message).startswith("API request"):
            raise
        raise ServiceUnavailable(f"MLflow at {client.tracking_uri} failed while logging a run: "
                                 f"{exc.message}") from exc
    except BaseException as exc:
        logger.fail(exc)
        raise
    finally:
        logger.close()
    run_id = logger.run_id
    total_s = time.perf_counter() - start
    return TrainResult(
        run_id=run_id, experiment_id=experiment_id, experiment=request.experiment, dataset=data.name,
        model=request.model, params=hyper, metrics=metrics,
        durations={"fit_s": fit_s, "predict_s": predict_s, "total_s": total_s},
        model_uri=f"runs:/{run_id}/{MODEL_ARTIFACT}" if request.log_model else None,
        tracking_uri=client.tracking_uri, finished_at=time.time(), y_test=y_test.to_numpy(), y_pred=y_pred,
        feature_importance=importance, source=request.source, client=settings.client_name,
    )
