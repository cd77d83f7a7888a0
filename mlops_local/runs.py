"""MLflow runs as tables for the UI: a filtered, sorted page of runs, comparison helpers, registration.

Reading 1,000 runs through the REST API costs about 2 s (the server builds every run with all its
params, metrics and tags, the client parses 2 MB), so filters and sorting go to the server and only
one page of runs (default 100) comes back.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from mlops_local.errors import UserError
from mlops_local.runmeta import (
    TAG_BEST_RUN,
    TAG_DATASET,
    TAG_MODEL,
    TAG_PARENT,
    TAG_ROLE,
    TAG_SCORE_METRIC,
    TAG_SOURCE,
    TAG_TRIAL,
)

log = logging.getLogger(__name__)

# Metric columns first in this order; any other metric a run logged follows alphabetically.
METRIC_ORDER = ("r2", "rmse", "mae", "cv_r2_mean", "cv_r2_std", "cv_rmse_mean", "cv_rmse_std",
                "fit_s", "predict_s")
# Direction of "better" for the metrics a card compares.
HIGHER_IS_BETTER = {"r2": True, "rmse": False, "mae": False, "cv_r2_mean": True, "cv_rmse_mean": False}
# parent_run_id, trial: the sweep a trial belongs to, its number; best_run_id, trials: a sweep's best
# trial and its count of trials.
BASE_COLUMNS = ("run_id", "run_name", "start_time", "status", TAG_DATASET, TAG_MODEL, TAG_SOURCE,
                "parent_run_id", "trial", "best_run_id", "score_metric", "trials")
# A sweep parent logs its best trial's metrics as best_<metric> and these counters of its own.
_SWEEP_COUNTERS = ("trials_done", "trials_finished", "trials_failed", "trials_killed", "trial_score",
                   "best_score", "duration_s")
PAGE_SIZES = (100, 250, 500, 1000)
_ALIAS_RE = re.compile(r"^[\w\-]+$")
_VERSION_ALIAS_RE = re.compile(r"^[vV]\d+$")


@dataclass
class RunsPage:
    """One page of runs: the table, each run's params (for comparison), the next page's token."""

    frame: pd.DataFrame
    params: dict[str, dict[str, str]] = field(default_factory=dict)
    next_token: str | None = None


def _quote(value: str) -> str:
    """A value quoted for an MLflow filter string."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise UserError(f"cannot filter on {value!r}: it contains both quote characters")


def _ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def build_filter(dataset: str | None = None, model: str | None = None, since: datetime | None = None,
                 until: datetime | None = None, *, source: str | None = None, trials: bool = True,
                 parent: str | None = None) -> str:
    """MLflow filter string for the runs table (all parts optional, joined by AND).

    ``trials=False`` leaves out sweep trials (their parent stands for them); ``parent`` keeps only the
    trials of that sweep.
    """
    parts = []
    if dataset:
        parts.append(f"tags.{TAG_DATASET} = {_quote(dataset)}")
    if model:
        parts.append(f"tags.{TAG_MODEL} = {_quote(model)}")
    if source:
        parts.append(f"tags.{TAG_SOURCE} = {_quote(source)}")
    if parent:
        parts.append(f"tags.`{TAG_PARENT}` = {_quote(parent)}")
    elif not trials:
        parts.append(f"tags.`{TAG_PARENT}` IS NULL")
    if since is not None:
        parts.append(f"attributes.start_time >= {_ms(since)}")
    if until is not None:
        parts.append(f"attributes.start_time < {_ms(until)}")
    return " and ".join(parts)


def order_clause(sort_by: str = "start_time", ascending: bool = False) -> list[str]:
    """order_by for search_runs: a metric name or start_time; newest first breaks ties."""
    direction = "ASC" if ascending else "DESC"
    if sort_by in ("start_time", ""):
        return [f"attributes.start_time {direction}"]
    return [f"metrics.`{sort_by}` {direction}", "attributes.start_time DESC"]


def metric_columns(columns: Iterable[str]) -> list[str]:
    """Metric names in display order: the conventional ones first, then the rest alphabetically."""
    names = set(columns)
    known = [m for m in METRIC_ORDER if m in names]
    return known + sorted(names - set(known))


def _sweep_summary(metrics: Mapping[str, float]) -> dict[str, object]:
    """A sweep parent's row values: its best trial's metrics under their own names, its trial count."""
    out: dict[str, object] = {k[len("best_"):]: v for k, v in metrics.items()
                              if k.startswith("best_") and k != "best_score"}
    if "trials_done" in metrics:
        out["trials"] = int(metrics["trials_done"])
    return out


def runs_to_frame(runs: Sequence[Run]) -> RunsPage:
    """Table of runs (one row each; metrics as columns) and their params."""
    rows, params = [], {}
    for run in runs:
        info, data = run.info, run.data
        row: dict[str, object] = {
            "run_id": info.run_id,
            "run_name": info.run_name,
            "start_time": pd.Timestamp(info.start_time, unit="ms") if info.start_time else pd.NaT,  # UTC
            "status": info.status,
            TAG_DATASET: data.tags.get(TAG_DATASET, ""),
            TAG_MODEL: data.tags.get(TAG_MODEL, ""),
            TAG_SOURCE: data.tags.get(TAG_SOURCE, ""),
            "parent_run_id": data.tags.get(TAG_PARENT),
            "trial": int(data.tags[TAG_TRIAL]) if data.tags.get(TAG_TRIAL, "").isdigit() else None,
            "best_run_id": data.tags.get(TAG_BEST_RUN),
            "score_metric": data.tags.get(TAG_SCORE_METRIC),
            "trials": None,
        }
        row.update(data.metrics)
        if data.tags.get(TAG_ROLE) == "parent":
            row.update(_sweep_summary(data.metrics))
        rows.append(row)
        params[info.run_id] = dict(data.params)
    frame = pd.DataFrame(rows, columns=None if rows else list(BASE_COLUMNS))
    hidden = set(BASE_COLUMNS) | set(_SWEEP_COUNTERS)
    metrics = metric_columns(c for c in frame.columns if c not in hidden and not c.startswith("best_"))
    frame = frame.reindex(columns=[*BASE_COLUMNS, *metrics])
    return RunsPage(frame=frame, params=params)


def experiment_id(client: MlflowClient, name: str) -> str | None:
    """The id of experiment ``name``, or None when it does not exist (yet)."""
    experiment = client.get_experiment_by_name(name)
    return experiment.experiment_id if experiment is not None else None


def experiment_names(client: MlflowClient) -> list[str]:
    """Names of the active experiments, most recently created first."""
    return [e.name for e in client.search_experiments(order_by=["creation_time DESC"])]


def runs_page(
    client: MlflowClient,
    experiment_id: str,
    *,
    dataset: str | None = None,
    model: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    source: str | None = None,
    trials: bool = True,
    parent: str | None = None,
    sort_by: str = "start_time",
    ascending: bool = False,
    max_results: int = 100,
    page_token: str | None = None,
) -> RunsPage:
    """One page of the experiment's runs, filtered and sorted by the server (see build_filter)."""
    result = client.search_runs(
        [experiment_id],
        filter_string=build_filter(dataset, model, since, until, source=source, trials=trials,
                                   parent=parent),
        order_by=order_clause(sort_by, ascending),
        max_results=max_results,
        page_token=page_token,
    )
    page = runs_to_frame(list(result))
    page.next_token = result.token or None
    return page


def run_label(row: Mapping[str, object]) -> str:
    """Short name of a run: [trial n ·] its name (else model · dataset) · its id's first 8 characters."""
    name = row.get("run_name")
    if not isinstance(name, str) or not name:
        name = f"{row.get(TAG_MODEL) or '?'} · {row.get(TAG_DATASET) or '?'}"
    trial = row.get("trial")
    if trial is not None and pd.notna(trial):  # a sweep's trials share their run name
        name = f"trial {int(trial)} · {name}"
    return f"{name} · {str(row['run_id'])[:8]}"


def best_earlier(
    client: MlflowClient,
    experiment_id: str,
    dataset: str,
    *,
    before: float,
    exclude_run_id: str | None = None,
    metrics: Sequence[str] = ("r2", "rmse", "mae"),
) -> dict[str, float]:
    """Best value of each metric among the finished runs on ``dataset`` started before ``before``."""
    parts = [build_filter(dataset=dataset, until=datetime.fromtimestamp(before, tz=UTC)),
             "attributes.status = 'FINISHED'"]
    if exclude_run_id:
        parts.append(f"attributes.run_id != '{exclude_run_id}'")
    base = " and ".join(parts)
    best: dict[str, float] = {}
    for metric in metrics:
        ascending = not HIGHER_IS_BETTER.get(metric, True)
        found = client.search_runs([experiment_id], filter_string=base,
                                   order_by=order_clause(metric, ascending), max_results=5)
        values = [r.data.metrics[metric] for r in found if metric in r.data.metrics]
        if values:
            best[metric] = values[0]
    return best


def metrics_long(frame: pd.DataFrame, run_ids: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """run, metric, value rows for the selected runs (input of the metric bar chart)."""
    chosen = frame[frame["run_id"].isin(run_ids)]
    rows = [
        {"run": run_label(row), "metric": metric, "value": float(row[metric])}
        for _, row in chosen.iterrows() for metric in metrics
        if metric in row and pd.notna(row[metric])
    ]
    return pd.DataFrame(rows, columns=["run", "metric", "value"])


def params_diff(params: Mapping[str, Mapping[str, str]], labels: Mapping[str, str],
                only_different: bool = True) -> pd.DataFrame:
    """Params as rows and runs as columns; with ``only_different`` the rows where the runs disagree."""
    names = sorted({name for p in params.values() for name in p})
    table = pd.DataFrame(
        {labels.get(run_id, run_id): [p.get(name, "") for name in names] for run_id, p in params.items()},
        index=pd.Index(names, name="param"),
    )
    if only_different and len(table.columns) > 1:
        table = table[table.nunique(axis=1) > 1]
    return table


def shared_params(params: Mapping[str, Mapping[str, str]]) -> list[str]:
    """Names of the params every run has and not all with the same value (the axes worth comparing)."""
    if not params:
        return []
    common = set.intersection(*(set(p) for p in params.values()))
    return sorted(n for n in common if len({p[n] for p in params.values()}) > 1)


def parallel_frame(frame: pd.DataFrame, params: Mapping[str, Mapping[str, str]], run_ids: Sequence[str],
                   metrics: Sequence[str] = ("r2", "rmse", "mae")) -> pd.DataFrame:
    """One row per selected run: the params the runs share and that differ (numbers where they parse),
    then its metrics."""
    chosen = frame[frame["run_id"].isin(run_ids)].drop_duplicates("run_id").set_index("run_id")
    chosen_params = {rid: params.get(rid, {}) for rid in chosen.index}
    names = shared_params(chosen_params)
    out = pd.DataFrame({n: [chosen_params[rid][n] for rid in chosen.index] for n in names},
                       index=pd.Index([run_label({**chosen.loc[rid].to_dict(), "run_id": rid})
                                       for rid in chosen.index], name="run"))
    for column in out.columns:
        numbers = pd.to_numeric(out[column], errors="coerce")
        out[column] = numbers if numbers.notna().all() else out[column].astype(str)
    for metric in metrics:
        if metric in chosen.columns and chosen[metric].notna().any():
            out[metric] = chosen[metric].to_numpy()
    return out.reset_index()


@dataclass(frozen=True)
class RunModel:
    """Where a run's model is: ``uri`` to load it, ``source`` for the registry, its logged-model id."""

    uri: str
    source: str
    model_id: str | None = None


def run_model(client: MlflowClient, run_id: str, artifact_path: str = "model") -> RunModel:
    """The model a run logged (an MLflow 3 logged model or the run's ``model`` artifact), or UserError."""
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise UserError(f"run {run_id} not found in MLflow: {exc.message}") from None
    outputs = run.outputs.model_outputs if run.outputs else []
    if outputs:
        model_id = max(outputs, key=lambda o: o.step).model_id
        return RunModel(uri=f"models:/{model_id}", source=f"models:/{model_id}", model_id=model_id)
    try:
        names = {a.path for a in client.list_artifacts(run_id)}
    except MlflowException as exc:
        raise UserError(f"cannot list the artifacts of run {run_id}: {exc.message}") from None
    if artifact_path in names:
        return RunModel(uri=f"runs:/{run_id}/{artifact_path}",
                        source=f"{run.info.artifact_uri.rstrip('/')}/{artifact_path}")
    raise UserError(f"run {run_id} has no logged model (it was trained without one, or it failed)")


def validate_registration(name: str, alias: str | None) -> None:
    """UserError naming the problem when a registered model name or alias is not allowed."""
    if not name or not name.strip():
        raise UserError("registered model name is empty: type a name such as 'co2-random-forest'")
    if "/" in name or ":" in name or "@" in name:
        raise UserError(f"registered model name {name!r} must not contain '/', ':' or '@'")
    if alias:
        if not _ALIAS_RE.match(alias):
            raise UserError(f"alias {alias!r} may only contain letters, digits, '_' and '-'")
        if alias.lower() == "latest" or _VERSION_ALIAS_RE.match(alias):
            raise UserError(f"alias {alias!r} is reserved (it looks like 'latest' or a version 'v1')")


@dataclass(frozen=True)
class Registration:
    """What registering a run did: the version it is, whether it is new, where the alias was before."""

    name: str
    version: str
    run_id: str
    created: bool  # False: the run already was this version of the name, nothing was added
    alias: str | None = None
    alias_from: str | None = None  # the version the alias pointed at before it moved (None: it was new)
    alias_moved: bool = False

    def message(self) -> str:
        """One sentence for the user: what was created or found, and what the alias did."""
        if self.created:
            text = f"Registered run {self.run_id[:8]} as {self.name} version {self.version}"
        else:
            text = (f"Run {self.run_id[:8]} is already {self.name} version {self.version}: "
                    "no new version was added")
        if self.alias and self.alias_moved:
            text += (f"; @{self.alias} moved from version {self.alias_from} to version {self.version}"
                     if self.alias_from else f"; @{self.alias} now points at version {self.version}")
        elif self.alias:
            text += f"; @{self.alias} already points at version {self.version}"
        return text + "."


def _versions_of_run(client: MlflowClient, name: str, run_id: str) -> list[ModelVersion]:
    """Versions of registered model ``name`` made from ``run_id`` (none when the name does not exist)."""
    return list(client.search_model_versions(f"name = {_quote(name)} and run_id = '{run_id}'"))


def _alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version ``name@alias`` points at, or None when the alias (or the name) does not exist."""
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def register_model(client: MlflowClient, run_id: str, name: str, alias: str | None = None) -> Registration:
    """Register the run's model under ``name`` (unless it already is a version of it); point ``alias`` at it.

    Registering the same run twice finds its version instead of adding a duplicate, so re-clicking
    Register never moves an alias onto a copy.
    """
    name, alias = name.strip(), (alias or "").strip() or None
    validate_registration(name, alias)
    previous = _alias_version(client, name, alias) if alias else None
    existing = _versions_of_run(client, name, run_id)
    if existing:
        same = [v for v in existing if str(v.version) == previous]
        version = str((same or sorted(existing, key=lambda v: int(v.version)))[-1].version)
        created = False
    else:
        model = run_model(client, run_id)
        try:
            client.create_registered_model(name)
        except MlflowException as exc:
            if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise UserError(f"cannot create registered model {name!r}: {exc.message}") from None
        version = str(client.create_model_version(name, model.source, run_id=run_id, model_id=model.model_id,
                                                  await_creation_for=30).version)
        created = True
    moved = bool(alias) and previous != version
    if moved:
        client.set_registered_model_alias(name, alias, version)
    log.info("run %s is %s version %s (%s; alias %s%s)", run_id, name, version,
             "new" if created else "already registered", alias, f" moved from {previous}" if moved else "")
    return Registration(name=name, version=version, run_id=run_id, created=created, alias=alias,
                        alias_from=previous if moved else None, alias_moved=moved)


def registered_choices(client: MlflowClient, max_results: int = 200) -> list[str]:
    """'name@alias' for every alias, then 'name/version' of each model's latest version."""
    choices: list[str] = []
    for model in client.search_registered_models(max_results=max_results):
        aliases = getattr(model, "aliases", {}) or {}
        choices.extend(f"{model.name}@{alias}" for alias in sorted(aliases))
        versions = [int(v.version) for v in (model.latest_versions or [])]
        if versions:
            choices.append(f"{model.name}/{max(versions)}")
    return choices
