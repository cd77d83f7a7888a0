"""The run contract: the names of the tags every MLflow run of this project carries.

Training, sweeps, the exporter's sync, the Runs page, the reaper and the model service all read and
write runs by these names; they live here, in a module that imports nothing of the project, so every
layer can depend on it without depending on another layer.

Every run:
- tags ``dataset``, ``model``, ``source`` (ui | cli | sweep), ``mlops.client`` (MLOPS_CLIENT_NAME of
  the machine that trained it) and its owner process (host, pid, start);
- metrics ``r2``, ``rmse`` (sqrt of MSE), ``mae``, ``fit_s``, ``predict_s``, and with CV
  ``cv_r2_mean``, ``cv_r2_std``, ``cv_rmse_mean``, ``cv_rmse_std``;
- artifacts ``model/`` (skops, its sha256 in ``mlops.model_sha256``) and ``plots/``;
- ``error`` when it failed or was closed by someone else than its owner.

Runs of a sweep:
- the parent: ``source = sweep``, ``sweep_role = parent``, ``dataset``, ``model``, ``sweep_state``;
- each trial: a child (``mlflow.parentRunId``) with ``sweep_role = trial``, ``sweep_trial = <number>``,
  ``sweep_score_metric`` (the MLflow metric key optimised) and ``sweep_goal`` (maximize | minimize);
- the best child: ``best_trial = true``; the parent: ``best_run_id``.
"""

from __future__ import annotations

MODEL_ARTIFACT = "model"  # a run's model artifact path
PLOTS_ARTIFACT = "plots"  # a run's plots artifact path

TAG_DATASET = "dataset"
TAG_MODEL = "model"
TAG_SOURCE = "source"
SOURCES = ("ui", "cli", "sweep")
TAG_CLIENT = "mlops.client"  # which machine trained the run (MLOPS_CLIENT_NAME): one server, several clients
TAG_ERROR = "error"
TAG_NOTE = "mlflow.note.content"  # the run's description in MLflow's UI
TAG_PARENT = "mlflow.parentRunId"
TAG_MODEL_SHA256 = "mlops.model_sha256"  # sha256 of the run's model/model.skops, checked before loading

# Which process holds the run open (see mlops_local.owner and mlops_local.reaper).
TAG_OWNER_HOST = "mlops.owner.host"
TAG_OWNER_PID = "mlops.owner.pid"
TAG_OWNER_START = "mlops.owner.start"  # the process's start time, seconds since the epoch

# Sweeps.
TAG_ROLE = "sweep_role"  # parent | trial
TAG_TRIAL = "sweep_trial"
TAG_SCORE_METRIC = "sweep_score_metric"
TAG_GOAL = "sweep_goal"
TAG_STATE = "sweep_state"  # on the parent: running | finished | cancelled | failed
TAG_BEST = "best_trial"
TAG_BEST_RUN = "best_run_id"
TERMINAL = ("FINISHED", "FAILED", "KILLED")
