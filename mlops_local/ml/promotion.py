"""The promotion gate: a candidate run takes a registered model's alias only when it beats the champion.

:func:`evaluate` scores the candidate and the model version the alias points at (the champion) on the
same held-out rows: the candidate's test split, rebuilt from the dataset, seed and test size recorded
on its run, or every row of a dataset given explicitly. Both models are loaded by
:func:`mlops_local.ml.predict.load_model` (skops, trusted types, checksum), never by MLflow's loader.
:func:`evaluate` writes nothing; :func:`decide` registers the candidate, logs the verdict as a run of
the ``promotions`` experiment, tags it on the candidate's version and moves the alias when the
candidate won by the margin or the move was forced (recorded as such).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from mlops_local import runs, tracking
from mlops_local.errors import UserError
from mlops_local.ml import evaluation, predict
from mlops_local.ml.datasets import BUILTINS, fingerprint, load_dataset
from mlops_local.ml.types import PROMOTION_RESULTS, TAG_PROMOTION_RESULT, DatasetSpec
from mlops_local.owner import owner_tags
from mlops_local.settings import Settings

log = logging.getLogger(__name__)

PROMOTIONS_EXPERIMENT = "promotions"
DEFAULT_ALIAS = "champion"
DEFAULT_METRIC = "r2"
HIGHER_IS_BETTER = {"r2": True, "rmse": False, "mae": False}
RESULTS = PROMOTION_RESULTS  # the verdict run's result (and the counter's label)
TAG_PREFIX = "mlops.promotion."
TAG_RESULT = TAG_PROMOTION_RESULT  # on the verdict run and on the candidate's model version
_EPSILON = 1e-12  # a margin equal to --min-improvement, up to float rounding, is enough


class RowsUnavailable(UserError):
    """The candidate's test split cannot be rebuilt here (file not on this machine, changed, not recorded)."""


@dataclass(frozen=True)
class HeldOut:
    """The rows both models are scored on, and what they are (for the verdict)."""

    X: pd.DataFrame
    y: pd.Series
    label: str


@dataclass(frozen=True)
class Verdict:
    """Both scores on the same rows, the margin and whether the candidate won; nothing written yet."""

    run_id: str
    name: str
    alias: str
    metric: str
    min_improvement: float
    rows: int
    held_out: str  # what the rows are: the candidate's test split, or the dataset given
    candidate_score: float
    champion_version: str | None = None  # None: the alias points nowhere yet
    champion_run_id: str | None = None
    champion_score: float | None = None  # None: no champion, or it could not be scored (see note)
    margin: float | None = None  # improvement in the metric's better direction (candidate - champion for r2)
    won: bool = False
    note: str = ""  # why the champion was not scored, or what to know about its score
    already: bool = False  # the candidate's run is the champion's run: nothing to promote

    @property
    def comparable(self) -> bool:
        """Whether the champion was scored (there is a champion and it loaded and fitted the rows)."""
        return self.champion_score is not None

    def lines(self) -> list[str]:
        """The verdict for a person: the rows, both scores, the margin and the outcome, a line each."""
        champion = f"{self.name}@{self.alias}" + (f" (version {self.champion_version})"
                                                  if self.champion_version else "")
        out = [f"{self.metric} on {self.rows:,} held-out rows ({self.held_out})",
               f"candidate run {self.run_id[:8]}: {self.candidate_score:.4f}"]
        if self.comparable:
            out.append(f"champion {champion}: {self.champion_score:.4f}")
            need = f"more than {self.min_improvement:g}" if self.min_improvement else "above 0"
            out.append(f"margin {self.margin:+.4f} ({'higher' if HIGHER_IS_BETTER[self.metric] else 'lower'} "
                       f"is better; needed {need})")
        elif self.champion_version:
            out.append(f"champion {champion}: not scored")
        if self.note:
            out.append(self.note)
        out.append(self.outcome())
        return out

    def outcome(self) -> str:
        """One sentence: who wins and what the gate does."""
        if self.already:
            return f"run {self.run_id[:8]} already is {self.name}@{self.alias}: nothing to promote"
        if self.won:
            return ("no champion yet: the candidate wins" if self.champion_version is None
                    else "the candidate wins")
        if not self.comparable:
            return "the gate refuses: the models cannot be compared (promote anyway to force it)"
        return "the gate refuses: the candidate does not beat the champion by the margin"


@dataclass(frozen=True)
class Outcome:
    """What :func:`decide` did: the result, the verdict run, the registration and the alias move."""

    verdict: Verdict
    result: str  # promoted | forced | refused | unchanged (already the champion: no verdict run)
    registration: runs.Registration
    verdict_run_id: str | None

    @property
    def forced(self) -> bool:
        return self.result == "forced"

    def message(self) -> str:
        """The registration's sentence, then what the gate did."""
        text = self.registration.message()
        if self.result == "refused":
            where = (f"stays on version {self.verdict.champion_version}" if self.verdict.champion_version
                     else "was not set")
            text += f" The gate refused: @{self.verdict.alias} {where}."
        elif self.result == "forced":
            text += " Forced past the gate (recorded on the verdict run and the version)."
        return text


def validate(name: str, alias: str, metric: str, min_improvement: object) -> float:
    """The min improvement as a float; UserError naming the parameter when any input is not allowed."""
    if not alias or not alias.strip():
        raise UserError("alias is empty: the gate guards an alias such as 'champion'")
    runs.validate_registration(name.strip(), alias.strip())
    if metric not in HIGHER_IS_BETTER:
        raise UserError(f"metric {metric!r} is not one the gate compares; choose one of "
                        f"{', '.join(HIGHER_IS_BETTER)}")
    try:
        margin = float(min_improvement)
    except (TypeError, ValueError):
        raise UserError(f"min improvement must be a number of 0 or more, got {min_improvement!r}") from None
    if isinstance(min_improvement, bool) or not math.isfinite(margin) or margin < 0:
        raise UserError(f"min improvement must be a finite number of 0 or more, got {min_improvement!r}")
    return margin


def champion_of(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version ``name@alias`` points at, or None when the alias (or the model) does not exist."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"):
            return None
        raise


# -- the held-out rows -----------------------------------------------------------------------------

def _file_path(run: Run) -> str | None:
    """The local path of the file a run was trained on, from its MLflow dataset input (None: unknown)."""
    import json

    for item in (run.inputs.dataset_inputs if run.inputs else []) or []:
        try:
            source = json.loads(item.dataset.source or "{}")
        except ValueError:
            continue
        uri = source.get("uri") if isinstance(source, dict) else None
        if isinstance(uri, str) and uri:
            return uri.removeprefix("file://")
    return None


_GIVE_ROWS = "score both on rows you give instead (`mlops-local promote ... --dataset FILE`)"


def _recorded(params: Mapping[str, str], key: str, run_id: str) -> str:
    value = params.get(key)
    if value is None or value == "":
        raise RowsUnavailable(f"run {run_id[:8]} has no {key!r} param (not trained by mlops-local), so its "
                              f"test split cannot be rebuilt; {_GIVE_ROWS}")
    return value


def candidate_split(run: Run, features: list[str]) -> HeldOut:
    """The candidate's test split, rebuilt from its run's dataset, options, seed and test size.

    The rebuilt rows must hash to the fingerprint the run recorded, so a changed file or a changed
    built-in never passes for the run's held-out rows."""
    params, run_id = run.data.params, run.info.run_id
    name = _recorded(params, "dataset", run_id)
    target = _recorded(params, "target", run_id)
    seed, size = int(_recorded(params, "seed", run_id)), float(_recorded(params, "test_size", run_id))
    if params.get("dataset_source") == "builtin" and name in BUILTINS:
        options = {k: params[f"dataset_{k}"] for k in BUILTINS[name].options if f"dataset_{k}" in params}
        data, where = load_dataset(DatasetSpec(name, target=target, options=options)), name
    else:
        path = _file_path(run)
        if path is None or not Path(path).is_file():
            raise RowsUnavailable(f"run {run_id[:8]} was trained on the file {name!r}, which is not on this "
                                  f"machine ({path or 'uploaded in the UI'}), so its test split cannot be "
                                  f"rebuilt; {_GIVE_ROWS}")
        data, where = load_dataset(DatasetSpec(path, target=target)), path
    missing = [c for c in features if c not in data.X.columns]
    if missing:
        raise RowsUnavailable(f"{where} has no column(s) {', '.join(missing)} that run {run_id[:8]}'s model "
                              f"takes; {_GIVE_ROWS}")
    X = data.X[features]
    recorded = params.get("dataset_fingerprint")
    if recorded and fingerprint(X, data.y) != recorded:
        raise RowsUnavailable(f"{where} changed since run {run_id[:8]} was trained on it (its rows no longer "
                              f"match the recorded fingerprint), so its test split cannot be rebuilt; "
                              f"{_GIVE_ROWS}")
    _, X_test, _, y_test = evaluation.split(X, data.y, size, seed)
    return HeldOut(X_test, y_test, f"test split of {name}, seed {seed}, test size {size:g}")


def given_rows(dataset: str, target: str) -> HeldOut:
    """Every row of ``dataset`` (a built-in name or a file), with the candidate's target column."""
    data = load_dataset(DatasetSpec(dataset, target=target))
    return HeldOut(data.X, data.y, f"every row of {data.name}")


# -- scoring ------------------------------------------------------------------------------------------

def _columns(model: object) -> list[str]:
    return [f.name for f in predict.input_fields(model)]


def _check_columns(model: object, rows: HeldOut, who: str) -> list[predict.InputField]:
    """The model's input fields; UserError naming the columns it takes that ``rows`` lack."""
    fields = predict.input_fields(model)
    missing = [f.name for f in fields if f.name not in rows.X.columns]
    if missing:
        raise UserError(f"the feature sets are incompatible: {who} takes column(s) {', '.join(missing)} that "
                        f"the held-out rows ({rows.label}) do not have")
    return fields


def score(model: object, rows: HeldOut, metric: str, who: str) -> float:
    """``metric`` of ``model`` on ``rows``; UserError naming the columns the rows lack."""
    fields = _check_columns(model, rows, who)
    checked, _ = predict.check_batch(rows.X, fields)
    predicted = predict.predict_frame(model, checked).iloc[:, -1].to_numpy(dtype=float)
    if not np.isfinite(predicted).all():
        raise UserError(f"{who} predicts non-finite values on the held-out rows ({rows.label})")
    return evaluation.regression_metrics(rows.y.to_numpy(dtype=float), predicted)[metric]


def _split_note(candidate: Mapping[str, str], champion: Mapping[str, str]) -> str:
    """A warning when the champion was trained on another split: some held-out rows were its training rows."""
    keys = ("dataset_fingerprint", "seed", "test_size")
    if all(candidate.get(k) == champion.get(k) for k in keys):
        return ""
    return ("the champion was trained on another split (dataset, seed or test size differ): some of these "
            "rows may be its training rows, which flatters its score")


def evaluate(client: MlflowClient, run_id: str, name: str, alias: str = DEFAULT_ALIAS,
             metric: str = DEFAULT_METRIC, min_improvement: object = 0.0,
             dataset: str | None = None) -> Verdict:
    """Score the candidate run and ``name@alias`` on the same held-out rows; writes nothing.

    UserError when the candidate cannot be scored (no model, refused by the safe loader, rows it
    cannot take). A champion that cannot be scored (refused, other columns, another target) makes a
    verdict the candidate does not win, with the reason as its note: only a forced move passes it.
    """
    name, alias = name.strip(), alias.strip()
    margin_needed = validate(name, alias, metric, min_improvement)
    where = runs.run_model(client, run_id)  # UserError when the run has no model
    run = client.get_run(run_id)
    base = {"run_id": run_id, "name": name, "alias": alias, "metric": metric,
            "min_improvement": margin_needed}
    champion = champion_of(client, name, alias)
    if champion is not None and champion.run_id == run_id:
        return Verdict(**base, rows=0, held_out="", candidate_score=math.nan, champion_version=str(
            champion.version), champion_run_id=run_id, already=True)
    target = run.data.params.get("target")
    rows: HeldOut | None = None
    if dataset:  # read (and checked) before any model is downloaded
        if not target:
            raise UserError(f"run {run_id[:8]} records no target column, so {dataset!r} cannot be scored")
        rows = given_rows(dataset, target)
    candidate = predict.load_model(where.uri, client)
    unavailable = None
    if not dataset:
        try:
            rows = candidate_split(run, _columns(candidate))
        except RowsUnavailable as exc:  # e.g. trained on a file uploaded in the UI
            rows, unavailable = None, exc
    if rows is not None:
        candidate_score = score(candidate, rows, metric, f"the candidate (run {run_id[:8]})")
        base.update(rows=len(rows.y), held_out=rows.label, candidate_score=candidate_score)
    else:  # what training measured on its test split: shown, never compared with another model's score
        recorded, n_test = run.data.metrics.get(metric), run.data.params.get("n_test", "0")
        if recorded is None:
            raise unavailable
        base.update(rows=int(n_test) if n_test.isdigit() else 0, candidate_score=float(recorded),
                    held_out="the candidate's test split, as recorded at training (the rows are not here)")
    if champion is None:
        return Verdict(**base, won=True)
    if rows is None:
        base.update(champion_version=str(champion.version), champion_run_id=champion.run_id)
        return Verdict(**base, note=f"the models cannot be compared on the same rows: {unavailable}")
    version = str(champion.version)
    label = f"the champion {name}@{alias} (version {version})"
    base.update(champion_version=version, champion_run_id=champion.run_id)
    try:
        champion_params = client.get_run(champion.run_id).data.params if champion.run_id else {}
        model = predict.load_model(f"models:/{name}/{version}", client)
        _check_columns(model, rows, label)
        if target and champion_params.get("target") not in (None, target):
            raise UserError(f"{label} predicts {champion_params['target']!r}, the candidate {target!r}")
        champion_score = score(model, rows, metric, label)
    except UserError as exc:
        log.info("%s not scored: %s", label, exc)
        return Verdict(**base, note=f"{label} cannot be compared: {exc}")
    margin = candidate_score - champion_score
    if not HIGHER_IS_BETTER[metric]:
        margin = -margin
    won = margin > 0 and margin >= margin_needed - _EPSILON
    note = "" if dataset else _split_note(run.data.params, champion_params)
    return Verdict(**base, champion_score=champion_score, margin=margin, won=won, note=note)


# -- the decision -----------------------------------------------------------------------------------------

def _verdict_record(verdict: Verdict, result: str, version: str) -> tuple[dict[str, str], dict[str, float]]:
    """(params, metrics) of the verdict run; the params are tagged on the model version too."""
    params = {"candidate_run_id": verdict.run_id, "name": verdict.name, "alias": verdict.alias,
              "candidate_version": version, "champion_version": verdict.champion_version or "",
              "metric": verdict.metric, "min_improvement": f"{verdict.min_improvement:g}",
              "held_out": verdict.held_out, "rows": str(verdict.rows),
              "forced": str(result == "forced").lower(), "result": result, "note": verdict.note[:500]}
    metrics = {"rows": float(verdict.rows)}
    if math.isfinite(verdict.candidate_score):
        metrics["candidate_score"] = verdict.candidate_score
    if verdict.champion_score is not None:
        metrics["champion_score"] = verdict.champion_score
    if verdict.margin is not None:
        metrics["margin"] = verdict.margin
    return params, metrics


def decide(client: MlflowClient, settings: Settings, verdict: Verdict, force: bool = False) -> Outcome:
    """Act on ``verdict``: register the candidate, log the verdict run, tag the version, move the alias
    when the candidate won (or ``force``). UserError when the alias moved since the verdict was made."""
    if verdict.already:
        done = runs.register_model(client, verdict.run_id, verdict.name, verdict.alias)
        return Outcome(verdict, "unchanged", done, None)
    now = champion_of(client, verdict.name, verdict.alias)
    if (str(now.version) if now is not None else None) != verdict.champion_version:
        raise UserError(f"{verdict.name}@{verdict.alias} moved to version {now.version if now else '(none)'} "
                        "since this verdict was made: evaluate the candidate again")
    result = "promoted" if verdict.won else "forced" if force else "refused"
    done = runs.register_model(client, verdict.run_id, verdict.name, None)
    params, metrics = _verdict_record(verdict, result, done.version)
    experiment = tracking.experiment_for(client, settings, PROMOTIONS_EXPERIMENT)
    run = client.create_run(experiment,
                            run_name=f"{verdict.name}@{verdict.alias} {result} {verdict.run_id[:8]}",
                            tags={TAG_RESULT: result, "mlflow.source.name": "mlops-local", **owner_tags()})
    verdict_id = run.info.run_id
    try:
        stamp = int(run.info.start_time or 0)
        client.log_batch(verdict_id, metrics=[Metric(k, float(v), stamp, 0) for k, v in metrics.items()],
                         params=[Param(k, v) for k, v in params.items()])
        moved = result != "refused"
        if moved:
            client.set_registered_model_alias(verdict.name, verdict.alias, done.version)
        tags = {**{TAG_PREFIX + k: v for k, v in params.items() if k not in ("name", "candidate_version")},
                TAG_PREFIX + "verdict_run_id": verdict_id,
                **{TAG_PREFIX + k: f"{v:.6g}" for k, v in metrics.items() if k != "rows"}}
        for key, value in tags.items():
            client.set_model_version_tag(verdict.name, done.version, key, value)
        client.set_terminated(verdict_id, "FINISHED")
    except BaseException as exc:
        try:  # a verdict run that did not finish is not a verdict: close it FAILED with the error
            client.set_tag(verdict_id, "error", f"{type(exc).__name__}: {exc}"[:5000])
            client.set_terminated(verdict_id, "FAILED")
        except Exception:  # the reaper closes it once this process is gone
            log.warning("could not close verdict run %s", verdict_id, exc_info=True)
        raise
    log.info("promotion of run %s to %s@%s: %s (verdict run %s)", verdict.run_id, verdict.name, verdict.alias,
             result, verdict_id)
    registration = runs.Registration(
        name=done.name, version=done.version, run_id=done.run_id, created=done.created,
        alias=verdict.alias if moved else None,
        alias_from=verdict.champion_version if moved else None, alias_moved=moved)
    return Outcome(verdict, result, registration, verdict_id)
