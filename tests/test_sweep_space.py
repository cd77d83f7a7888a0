"""Unit tests of sweep search spaces, strategies, validation, charts and the sweep metrics collector."""

from __future__ import annotations

import math

import pytest
from mlflow.entities import Metric, Run, RunData, RunInfo, RunTag
from prometheus_client import CollectorRegistry, generate_latest

from mlops_local.errors import UserError
from mlops_local.metrics.sweeps import SweepMetrics
from mlops_local.ml.catalog import get_model, validate_params
from mlops_local.ml.sweep_charts import SCORE_CHART, param_chart_name, write_charts
from mlops_local.ml.sweep_plan import better, plan_sweep
from mlops_local.ml.sweep_space import build_space, parse_range_args
from mlops_local.ml.sweep_strategies import GridStrategy, OptunaStrategy, RandomStrategy, make_strategy
from mlops_local.ml.sweep_types import SweepSpec, TrialOutcome, score_key
from mlops_local.ml.types import DatasetSpec

FRIEDMAN = DatasetSpec("friedman1", options={"n_samples": 200})


def test_default_space_is_the_catalog_ranges():
    space = build_space("random_forest")
    catalog = get_model("random_forest")
    assert [p.name for p in space.params] == [p.name for p in catalog.params]
    trees = space.params[0]
    spec = catalog.param("n_estimators")
    assert (trees.kind, trees.low, trees.high, trees.log) == ("int", spec.low, spec.high, spec.log)
    assert space.params[-1].choices == catalog.param("max_features").choices
    assert build_space("linear_regression").params[0].choices == (True, False)  # bool -> both values


def test_ranges_narrow_list_values_and_fixed_params_are_held():
    space = build_space("random_forest", {"n_estimators": "20:200", "max_features": "sqrt|log2",
                                          "max_depth": "none|5|10"}, fixed={"min_samples_leaf": "3"})
    by_name = {p.name: p for p in space.params}
    assert "min_samples_leaf" not in by_name and space.base["min_samples_leaf"] == 3
    trees = by_name["n_estimators"]
    assert (trees.low, trees.high, trees.log) == (20, 200, True)
    assert build_space("random_forest", {"n_estimators": "20:200:linear"}).params[0].log is False
    assert by_name["max_features"].choices == ("sqrt", "log2")
    assert by_name["max_depth"].choices == (None, 5, 10)
    only = build_space("random_forest", {"max_depth": "2:8"}, search=["n_estimators"])
    assert [p.name for p in only.params] == ["n_estimators", "max_depth"]  # a range implies searching it


@pytest.mark.parametrize("ranges, search, fixed, expected", [
    ({"n_estimators": "0:10"}, None, None, "--param-range n_estimators=0:10: parameter 'n_estimators'"),
    ({"n_estimators": "10:5000"}, None, None, "between 1 and 2000"),
    ({"n_estimators": "50:10"}, None, None, "LOW (50) is greater than HIGH (10)"),
    ({"l2_regularization": "0:10:log"}, None, None, "a log scale needs LOW > 0"),
    ({"max_features": "sqrt|cube"}, None, None, "must be one of all, sqrt, log2"),
    ({"n_estimators": "10:20:cubic"}, None, None, "must be 'log' or 'linear'"),
    ({"bogus": "1:2"}, None, None, "unknown hyperparameter 'bogus' for model 'random_forest'"),
    ({}, ["bogus"], None, "--search: unknown hyperparameter 'bogus'"),
    ({"max_depth": "1:5"}, None, {"max_depth": "3"}, "both a fixed value (--param) and a range"),
    ({}, None, {"n_estimators": "-1"}, "parameter 'n_estimators'"),
])
def test_bad_ranges_name_the_parameter_and_what_is_allowed(ranges, search, fixed, expected):
    model = "hist_gradient_boosting" if "l2_regularization" in ranges else "random_forest"
    with pytest.raises(UserError, match=None) as info:
        build_space(model, ranges, search, fixed)
    assert expected in str(info.value)


def test_everything_fixed_is_refused():
    with pytest.raises(UserError, match="nothing to search"):
        build_space("ridge", fixed={"alpha": "1", "fit_intercept": "true"})
    with pytest.raises(UserError, match="NAME=LOW:HIGH"):
        parse_range_args(["n_estimators"])


def test_grid_values_and_refusal_when_larger_than_trials():
    space = build_space("random_forest", {"n_estimators": "10:1000:log", "max_features": "sqrt|log2"},
                        search=["n_estimators"])
    grid = GridStrategy(space, 3)
    trials = [grid.ask() for _ in range(grid.total)]
    assert grid.total == 6 and grid.ask() is None
    assert [t[1]["n_estimators"] for t in trials] == [10, 10, 100, 100, 1000, 1000]  # log-spaced
    assert [t[0] for t in trials] == list(range(6))
    linear = build_space("elastic_net", {"l1_ratio": "0:1:linear"}, search=["l1_ratio"])
    assert GridStrategy(linear, 5)._combos == [{"l1_ratio": v} for v in (0.0, 0.25, 0.5, 0.75, 1.0)]
    with pytest.raises(UserError) as info:
        make_strategy("grid", space, trials=4, seed=0, grid_points=3, higher_is_better=True)
    message = str(info.value)
    assert "6 points (3 n_estimators x 2 max_features)" in message and "--trials 4" in message
    assert make_strategy("grid", space, trials=None, seed=0, grid_points=3, higher_is_better=True).total == 6


def test_random_trials_depend_only_on_seed_and_number():
    space = build_space("random_forest")
    a, b, other = RandomStrategy(space, 40, 7), RandomStrategy(space, 40, 7), RandomStrategy(space, 40, 8)
    first = [a.ask() for _ in range(40)]
    assert first == [b.ask() for _ in range(40)]
    assert first != [other.ask() for _ in range(40)]
    assert b.values(17) == first[17][1]  # whatever ran before
    for _, values in first:
        validate_params("random_forest", values)  # the catalog accepts every draw
        assert 1 <= values["n_estimators"] <= 2000 and isinstance(values["n_estimators"], int)
    trees = [v["n_estimators"] for _, v in first]
    assert sum(t < 100 for t in trees) > sum(t > 1000 for t in trees)  # log-uniform, not uniform


def test_optuna_tpe_is_seeded_and_learns_from_told_scores():
    space = build_space("ridge", {"alpha": "0.001:1000:log"}, search=["alpha"])

    def run(seed: int) -> list[float]:
        strategy = OptunaStrategy(space, 16, seed, higher_is_better=False)
        asked = []
        while (trial := strategy.ask()) is not None:
            number, values = trial
            asked.append(values["alpha"])
            strategy.tell(number, abs(math.log10(values["alpha"]) - 1.0))  # best near alpha = 10
        return asked

    first = run(3)
    assert first == run(3) and first != run(4)
    assert all(0.001 <= a <= 1000 for a in first)
    late = sorted(abs(math.log10(a) - 1.0) for a in first[10:])
    assert late[0] < 0.5  # TPE found the neighbourhood of the optimum


def test_plan_refuses_bad_specs_before_anything_runs():
    cases = [
        (dict(strategy="bayes"), "unknown strategy 'bayes'"),
        (dict(metric="mape"), "unknown metric 'mape'"),
        (dict(metric="mae", cv_folds=3), "no cross-validated version"),
        (dict(alias="champion"), "--alias needs --register"),
        (dict(register="m", models="none"), "--register needs the best model"),
        (dict(models="some"), "models must be one of all, best, none"),
        (dict(register="a/b"), "must not contain"),
        (dict(jobs=0), "jobs must be a whole number"),
        (dict(grid_points=1), "grid points must be"),
        (dict(seed=-1), "seed must be an integer"),
        (dict(trials=0), "trials must be a whole number"),
        (dict(test_size=1.5), "test size"),
        (dict(dataset=DatasetSpec("no-such-file.csv")), "no-such-file.csv"),
        (dict(dataset=DatasetSpec("friedman1", target="nope")), "nope"),
    ]
    for change, expected in cases:
        spec = SweepSpec(**{"dataset": FRIEDMAN, "model": "ridge", **change})
        with pytest.raises(UserError) as info:
            plan_sweep(spec)
        assert expected in str(info.value), (change, str(info.value))
    plan = plan_sweep(SweepSpec(FRIEDMAN, "ridge", metric="rmse", cv_folds=3, trials=5))
    assert (plan.score_metric, plan.higher_is_better, plan.strategy.total) == ("cv_rmse_mean", False, 5)
    assert score_key("r2", 0) == ("r2", True)


def test_dask_workers_must_be_able_to_reach_mlflow():
    from mlops_local.ml.sweep import _check_reachable_from_dask

    _check_reachable_from_dask("http://127.0.0.1:8080", "tcp://127.0.0.1:8786")  # a local cluster: fine
    _check_reachable_from_dask("http://mlflow.lan:8080", "tcp://dask.lan:8786")
    with pytest.raises(UserError, match="cannot reach MLflow at http://127.0.0.1:8080"):
        _check_reachable_from_dask("http://127.0.0.1:8080", "tcp://dask.lan:8786")
    with pytest.raises(UserError, match="over HTTP"):
        _check_reachable_from_dask("sqlite:////tmp/mlflow.db", "tcp://127.0.0.1:8786")


def test_best_trial_ignores_failures_and_keeps_the_earlier_on_ties():
    ok = TrialOutcome(3, {}, "FINISHED", score=0.5)
    assert better(ok, None, True)
    assert not better(TrialOutcome(1, {}, "FAILED"), None, True)
    assert not better(TrialOutcome(1, {}, "FINISHED", score=float("nan")), None, True)
    assert better(TrialOutcome(1, {}, "FINISHED", score=0.5), ok, True)  # tie: earlier wins
    assert not better(TrialOutcome(5, {}, "FINISHED", score=0.5), ok, True)
    assert better(TrialOutcome(5, {}, "FINISHED", score=0.4), ok, False)  # minimise


def test_charts_score_by_trial_and_one_per_varying_hyperparameter(tmp_path):
    outcomes = [TrialOutcome(i, {"n_estimators": 10 * (i + 1), "max_features": "sqrt" if i % 2 else "all",
                                 "max_depth": None}, "FINISHED", score=0.1 * i) for i in range(5)]
    outcomes.append(TrialOutcome(5, {"n_estimators": 5}, "FAILED", error="boom"))
    written = write_charts(tmp_path, outcomes, "r2", True)
    names = sorted(p.name for p in written)
    assert names == sorted([SCORE_CHART, param_chart_name("n_estimators"), param_chart_name("max_features")])
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _run(run_id: str, status: str, parent: str, score: float | None, end: int, role: str = "trial") -> Run:
    info = RunInfo(run_id=run_id, experiment_id="1", user_id="", status=status, start_time=end - 10,
                   end_time=end, lifecycle_stage="active")
    tags = [RunTag("source", "sweep"), RunTag("sweep_role", role), RunTag("mlflow.parentRunId", parent),
            RunTag("dataset", "co2_canada"), RunTag("model", "ridge"), RunTag("sweep_score_metric", "rmse"),
            RunTag("sweep_goal", "minimize")]
    metrics = [Metric("rmse", score, end, 0)] if score is not None else []
    return Run(info, RunData(metrics=metrics, tags=tags))


def test_sweep_metrics_count_once_and_follow_the_latest_sweep():
    registry = CollectorRegistry()
    metrics = SweepMetrics(registry)
    names = {"1": "exp"}
    old = [_run("a1", "FINISHED", "old", 3.0, 1000), _run("a2", "FINISHED", "old", 2.0, 1100)]
    new = [_run("b1", "FINISHED", "new", 9.0, 2000), _run("b2", "FAILED", "new", None, 2100),
           _run("b3", "KILLED", "new", None, 2200), _run("p", "FINISHED", "", None, 2300, role="parent")]
    assert metrics.observe_runs(new + old, names) == 5  # newest first, like the exporter's full read
    assert metrics.observe_runs(old + new, names) == 0  # the sync's overlap: nothing counted twice
    assert metrics.trial_counts() == {"finished": 3, "failed": 1, "killed": 1}
    # the latest sweep's best, not the best ever
    assert metrics.best_score("exp", "co2_canada", "ridge", "rmse") == 9.0
    metrics.observe_trial("b4", "FINISHED", experiment="exp", dataset="co2_canada", model="ridge",
                          score_metric="rmse", higher_is_better=False, sweep_id="new", score=4.0, end_ms=2400)
    assert metrics.best_score("exp", "co2_canada", "ridge", "rmse") == 4.0  # minimised
    text = generate_latest(registry).decode()
    assert 'mlops_sweep_trials_total{status="finished"} 4.0' in text
    assert 'mlops_sweep_trials_total{status="killed"} 1.0' in text
    assert ('mlops_sweep_best_score{dataset="co2_canada",experiment="exp",metric="rmse",model="ridge"} 4.0'
            in text)
