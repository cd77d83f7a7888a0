"""Seed an MLflow store with many finished sweeps in seconds: rows written with MLflow's own table models.

The runs of bench_ui, bench_team_store and bench_backup (100 sweeps of 100 trials: tags, params,
metrics as the Sweep page logs them), inserted in bulk, a few transactions in all, instead of three
store calls a run (about 7 runs/s on this busy 2-core machine: 25 minutes for 10,000). The server
reads them as any run: the rows are MLflow's (its SQLAlchemy models: runs, tags, params, metrics,
latest_metrics), with the artifact URI a run created through the server has
(``mlflow-artifacts:/<experiment>/<run>/artifacts``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import sqlalchemy
from mlflow import MlflowClient
from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag

MODELS = ("ridge", "random_forest", "knn", "gradient_boosting")
BATCH = 1000  # runs per transaction


def _runs(experiment_id: str, sweeps: int, trials: int) -> Iterator[tuple[dict, dict, dict, dict]]:
    """(run row, tags, metrics, params) of every run: each sweep's parent, then its trials."""
    clock = int(time.time() * 1000) - sweeps * (trials + 1) * 1000

    def run(name: str, tags: dict, metrics: dict, params: dict) -> tuple[dict, dict, dict, dict]:
        nonlocal clock
        clock += 1000
        run_id = uuid.uuid4().hex
        row = {"run_uuid": run_id, "name": name, "source_type": "LOCAL", "source_name": "",
               "entry_point_name": "", "user_id": "bench", "status": "FINISHED", "start_time": clock,
               "end_time": clock + 500, "source_version": "", "lifecycle_stage": "active",
               "artifact_uri": f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts",
               "experiment_id": int(experiment_id)}
        return row, {**tags, "mlflow.runName": name}, metrics, params

    for s in range(sweeps):
        base = {"dataset": ("co2_canada", "diabetes")[s % 2], "model": MODELS[s % len(MODELS)],
                "source": "sweep"}
        parent = run(f"sweep-random-{base['model']}-{base['dataset']}",
                     {**base, "sweep_role": "parent", "sweep_score_metric": "r2", "sweep_goal": "maximize",
                      "sweep_state": "finished"},
                     {"best_r2": 0.9, "best_rmse": 3.0, "best_mae": 2.0, "best_score": 0.9,
                      "trials_finished": float(trials), "trials_done": float(trials), "duration_s": 60.0},
                     {"strategy": "random", "trials": str(trials)})
        yield parent
        for t in range(trials):
            i = s * trials + t
            yield run(f"trial-{t}",
                      {**base, "sweep_role": "trial", "sweep_trial": str(t),
                       "mlflow.parentRunId": parent[0]["run_uuid"]},
                      {"r2": 0.5 + (i % 500) / 1000, "rmse": 10 - (i % 97) / 10, "mae": 5 - (i % 89) / 20,
                       "fit_s": 0.1 + (i % 7) / 10, "predict_s": 0.01},
                      {"n_estimators": str(50 + i % 150), "max_depth": str(i % 12 or "None"),
                       "test_size": "0.2", "seed": "42", "alpha": str(round(0.01 * (i % 300), 2))})


def _insert(conn: sqlalchemy.Connection, batch: list[tuple[dict, dict, dict, dict]]) -> None:
    conn.execute(sqlalchemy.insert(SqlRun.__table__), [row for row, *_ in batch])
    conn.execute(sqlalchemy.insert(SqlTag.__table__),
                 [{"run_uuid": row["run_uuid"], "key": k, "value": v} for row, tags, _, _ in batch
                  for k, v in tags.items()])
    conn.execute(sqlalchemy.insert(SqlParam.__table__),
                 [{"run_uuid": row["run_uuid"], "key": k, "value": v} for row, _, _, params in batch
                  for k, v in params.items()])
    metrics = [{"run_uuid": row["run_uuid"], "key": k, "value": v, "timestamp": row["end_time"], "step": 0,
                "is_nan": False} for row, _, values, _ in batch for k, v in values.items()]
    conn.execute(sqlalchemy.insert(SqlMetric.__table__), metrics)
    conn.execute(sqlalchemy.insert(SqlLatestMetric.__table__), metrics)


def seed_sweeps(client: MlflowClient, store_uri: str, experiment: str, sweeps: int, trials: int) -> list[str]:
    """Create ``experiment`` through the server and ``sweeps`` finished sweeps of ``trials`` trials in
    it, straight into the store at ``store_uri``; the run ids, in insertion order."""
    experiment_id = client.create_experiment(experiment)
    engine = sqlalchemy.create_engine(store_uri)
    run_ids: list[str] = []
    try:
        batch: list[tuple[dict, dict, dict, dict]] = []
        with engine.begin() as conn:
            for item in _runs(experiment_id, sweeps, trials):
                batch.append(item)
                run_ids.append(item[0]["run_uuid"])
                if len(batch) == BATCH:
                    _insert(conn, batch)
                    batch = []
            if batch:
                _insert(conn, batch)
        if engine.dialect.name == "postgresql":
            # What autovacuum does within a minute of so many inserts: a query planned on the empty
            # tables' statistics meanwhile would measure the seeding, not the store.
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(sqlalchemy.text("ANALYZE"))
    finally:
        engine.dispose()
    return run_ids
