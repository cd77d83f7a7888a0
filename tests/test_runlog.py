"""Parallel runs logging the same new dataset (a sweep's trials) all get it as an input."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import mlflow.data
import pandas as pd
import pytest
from mlflow.entities import DatasetInput
from mlflow.tracking import MlflowClient

from mlops_local import tracking
from mlops_local.ml.runlog import RunLogger

pytestmark = pytest.mark.integration


def test_concurrent_runs_logging_one_new_dataset_all_succeed(mlflow_settings) -> None:
    client = MlflowClient(mlflow_settings.effective_tracking_uri)
    experiment_id = tracking.ensure_experiment(client, f"runlog-race-{uuid.uuid4().hex[:8]}")
    frame = pd.DataFrame({"x": range(50), "y": range(50)})
    digest = uuid.uuid4().hex[:16]  # a dataset the server has never seen: every run races to insert it

    def one(i: int) -> str:
        logger = RunLogger(client, mlflow_settings, experiment_id)
        dataset = mlflow.data.from_pandas(frame, name="race", digest=digest)
        logger.open(f"r{i}", {}, {"i": str(i)}, lambda: DatasetInput(dataset._to_mlflow_entity()))
        run_id = logger.run.info.run_id
        logger.finish()
        return run_id

    with ThreadPoolExecutor(8) as pool:
        run_ids = list(pool.map(one, range(8)))
    for run_id in run_ids:
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert [d.dataset.digest for d in run.inputs.dataset_inputs] == [digest]


class _FlakyClient:
    """Delegates to a real client; log_inputs fails once, as the server does for the losing racer."""

    def __init__(self, client: MlflowClient) -> None:
        self._client, self.calls = client, 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._client, name)

    def log_inputs(self, run_id: str, datasets: list) -> None:
        self.calls += 1
        if self.calls == 1:
            from mlflow.exceptions import MlflowException

            raise MlflowException("UNIQUE constraint failed: datasets.experiment_id, datasets.name")
        self._client.log_inputs(run_id, datasets=datasets)


def test_a_lost_insert_race_is_retried(mlflow_settings) -> None:
    real = MlflowClient(mlflow_settings.effective_tracking_uri)
    flaky = _FlakyClient(real)
    experiment_id = tracking.ensure_experiment(real, "runlog-retry")
    logger = RunLogger(flaky, mlflow_settings, experiment_id)
    dataset = mlflow.data.from_pandas(pd.DataFrame({"a": [1.0]}), name="one", digest=uuid.uuid4().hex[:16])
    logger.open("retry", {}, {}, lambda: DatasetInput(dataset._to_mlflow_entity()))
    run_id = logger.run.info.run_id
    logger.finish()
    assert flaky.calls == 2
    assert real.get_run(run_id).inputs.dataset_inputs


class _CountingClient:
    """Delegates to a real client and records the log_batch calls it forwards."""

    def __init__(self, client: MlflowClient) -> None:
        self._client, self.batches = client, []

    def __getattr__(self, name: str) -> object:
        return getattr(self._client, name)

    def log_batch(self, run_id: str, metrics=(), params=(), tags=()) -> None:
        self.batches.append(({m.key for m in metrics}, {p.key for p in params}))
        self._client.log_batch(run_id, metrics=metrics, params=params, tags=tags)


@pytest.mark.parametrize("ending", ["finish", "fail"])
def test_deferred_params_travel_with_the_metrics_and_are_never_lost(mlflow_settings, ending) -> None:
    real = MlflowClient(mlflow_settings.effective_tracking_uri)
    counting = _CountingClient(real)
    experiment_id = tracking.ensure_experiment(real, "runlog-deferred")
    logger = RunLogger(counting, mlflow_settings, experiment_id)
    logger.open("child", {}, {"alpha": "0.5", "model": "ridge"}, defer_params=True)
    run_id = logger.run.info.run_id
    if ending == "finish":
        logger.log_batch(metrics={"r2": 0.9}, params={"importance": "abs_coef"})
        logger.finish()
        # one request for params and metrics, none at creation
        assert counting.batches == [({"r2"}, {"alpha", "model", "importance"})]
    else:
        logger.fail(ValueError("boom"))  # failed before any metric: the params still reach the run
        assert counting.batches == [(set(), {"alpha", "model"})]
    logger.close()
    run = real.get_run(run_id)
    assert run.data.params["alpha"] == "0.5" and run.data.params["model"] == "ridge"
    assert run.info.status == ("FINISHED" if ending == "finish" else "FAILED")
