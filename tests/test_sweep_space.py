"""Unit tests of sweep search spaces, strategies, validation, charts and the sweep metrics collector."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from mlflow.entities import Metric, Run, RunData, RunInfo, RunTag
from prometheus_client import CollectorRegistry, generate_latest

from mlops_local.errors import UserError
from mlops_local.metrics.sweeps import SweepMetrics
from mlops_local.ml.catalog import get_model, validate_params
from mlops_local.ml.types import DatasetSpec
from mlops_local.sweep.charts import SCORE_CHART, param_chart_name, write_charts
from mlops_local.sweep.plan import count_trials, plan_sweep
from mlops_local.sweep.samplers import make_search
from mlops_local.sweep.space import build_space, parse_range_args
from mlops_local.sweep.spec import SweepSpec, TrialOutcome, better, score_key

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
    assert count_trials("grid", space, None, 3) == 6
    grid = make_search("grid", space, total=6, seed=0, grid_points=3, higher_is_better=True)
    asked = [grid.ask() for _ in range(grid.total)]
    assert grid.ask() is None
    trials = sorted(asked)
    assert sorted(t[1]["n_estimators"] for t in trials) == [10, 10, 100, 100, 1000, 1000]  # log-spaced
    assert sorted((v["n_estimators"], v["max_features"]) for _, v in trials) == sorted(
        (n, f) for n in (10, 100, 1000) for f in ("sqrt", "log2"))  # every point of the grid, once
    assert [t[0] for t in trials] == list(range(6))
    # handed out longest first: the 1000-tree forests, sqrt (more features per split) before log2
    assert [(v["n_estimators"], v["max_features"]) for _, v in asked] == [
        (1000, "sqrt"), (1000, "log2"), (100, "sqrt"), (100, "log2"), (10, "sqrt"), (10, "log2")]
    linear = build_space("elastic_net", {"l1_ratio": "0:1:linear"}, search=["l1_ratio"])
    points = make_search("grid", linear, total=5, seed=0, grid_points=5, higher_is_better=True).plan()
    assert sorted(v["l1_ratio"] for _, v in points) == [0.0, 0.25, 0.5, 0.75, 1.0]
    with pytest.raises(UserError) as info:
        count_trials("grid", space, 4, 3)
    message = str(info.value)
    assert "6 points (3 n_estimators x 2 max_features)" in message and "--trials 4" in message
    # the facts in numbers, for a front end to phrase in its own controls' terms
    assert (info.value.field, info.value.reason) == ("trials", "grid_too_large")
    assert info.value.details == {"total": 6, "trials": 4, "sizes": {"n_estimators": 3, "max_features": 2},
                                  "points_that_fit": 2}
    assert space.grid_size(2) <= 4 < space.grid_size(3)


def test_random_trials_depend_only_on_seed_and_number():
    space = build_space("random_forest")
    a, b, other = (make_search("random", space, total=40, seed=seed, grid_points=3, higher_is_better=True)
                   for seed in (7, 7, 8))
    first = sorted(a.ask() for _ in range(40))
    assert first == sorted(b.ask() for _ in range(40))
    assert first != sorted(other.ask() for _ in range(40))
    assert [number for number, _ in first] == list(range(40))
    fresh = make_search("random", space, total=40, seed=7, grid_points=3, higher_is_better=False)
    fresh.tell(3, None)  # whatever ran before
    assert dict(fresh.plan())[17] == first[17][1]
    for _, values in first:
        validate_params("random_forest", values)  # the catalog accepts every draw
        assert 1 <= values["n_estimators"] <= 2000 and isinstance(values["n_estimators"], int)
    trees = [v["n_estimators"] for _, v in first]
    assert sum(t < 100 for t in trees) > sum(t > 1000 for t in trees)  # log-uniform, not uniform


def test_planned_trials_start_longest_first_by_the_catalogs_estimate():
    forest = build_space("random_forest")
    strategy = make_search("random", forest, total=30, seed=3, grid_points=3, higher_is_better=True)
    asked = [strategy.ask() for _ in range(30)]
    assert strategy.ask() is None
    costs = [forest.cost(values) for _, values in asked]
    assert costs == sorted(costs, reverse=True) and costs[0] > costs[-1]
    assert [number for number, _ in asked] != list(range(30))  # the draws were reordered
    assert sorted(number for number, _ in asked) == list(range(30))
    # the estimate is trees x share of features per split
    assert forest.cost({"n_estimators": 400, "max_features": "all"}) == 400.0
    assert forest.cost({"n_estimators": 400, "max_features": "log2"}) == 100.0
    assert forest.cost({"n_estimators": 0}) == 0.0  # refused by the catalog: fails at once
    # no estimate for the model: number order
    ridge = make_search("random", build_space("ridge"), total=10, seed=3, grid_points=3,
                        higher_is_better=True)
    assert [ridge.ask()[0] for _ in range(10)] == list(range(10))
    assert build_space("ridge").cost({"alpha": 1.0}) is None


def test_optuna_tpe_is_seeded_and_learns_from_told_scores():
    space = build_space("ridge", {"alpha": "0.001:1000:log"}, search=["alpha"])

    def run(seed: int) -> list[float]:
        strategy = make_search("optuna", space, total=16, seed=seed, grid_points=3, higher_is_better=False)
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
    assert (plan.score_metric, plan.higher_is_better, plan.total) == ("cv_rmse_mean", False, 5)
    assert score_key("r2", 0) == ("r2", True)


def test_dask_workers_must_be_able_to_reach_mlflow():
    from mlops_local.sweep.run import _check_reachable_from_dask

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


SVG = "{http://www.w3.org/2000/svg}"


def _svg(path: Path) -> ET.Element:
    return ET.parse(path).getroot()  # parses: well-formed, user text escaped


def _texts(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter(f"{SVG}text")]


def _dot_xs(root: ET.Element) -> list[float]:
    """x pixel of each trial dot (the legend's swatch dot is not one)."""
    return [float(c.get("cx")) for c in root.findall(f".//{SVG}g[@class='trials']//{SVG}circle")]


def _best_line(root: ET.Element) -> list[tuple[float, float]]:
    (line,) = root.findall(f".//{SVG}g[@class='best']/{SVG}polyline")
    return [tuple(float(v) for v in point.split(",")) for point in line.get("points").split()]


def test_charts_score_by_trial_and_one_per_varying_hyperparameter(tmp_path):
    outcomes = [TrialOutcome(i, {"n_estimators": 10 * (i + 1), "max_features": "sqrt" if i % 2 else "all",
                                 "max_depth": None}, "FINISHED", score=0.1 * i) for i in range(5)]
    outcomes.append(TrialOutcome(5, {"n_estimators": 5}, "FAILED", error="boom"))
    outcomes.append(TrialOutcome(6, {"n_estimators": 7}, "KILLED"))
    written = write_charts(tmp_path, outcomes, "r2", True)
    names = sorted(p.name for p in written)
    assert names == sorted([SCORE_CHART, param_chart_name("n_estimators"), param_chart_name("max_features")])
    assert SCORE_CHART == "sweep_score_by_trial.svg" and param_chart_name("a<b&c") == "sweep_param_a_b_c.svg"
    assert all(path.parent == tmp_path for path in written)

    score = _svg(tmp_path / SCORE_CHART)
    assert len(_dot_xs(score)) == 5
    assert len(score.findall(f".//{SVG}g[@class='failed']/{SVG}line")) == 2  # one red mark per failed trial
    texts = _texts(score)
    assert "r2 by trial (5 scored, 2 failed or stopped)" in texts
    assert {"trial", "best so far", "failed or stopped", "trial number", "r2"} <= set(texts)
    assert len(score.findall(f".//{SVG}g[@class='legend']")) == 1

    trees = _svg(tmp_path / param_chart_name("n_estimators"))  # 10..50: 5x, a linear axis
    assert "n_estimators" in _texts(trees) and "r2 vs n_estimators" in _texts(trees)
    xs = _dot_xs(trees)
    assert len(xs) == 5 and xs[1] - xs[0] == pytest.approx(xs[4] - xs[3], abs=0.2)

    features = _svg(tmp_path / param_chart_name("max_features"))
    assert {"all", "sqrt", "max_features"} <= set(_texts(features))
    assert len(set(_dot_xs(features))) == 2  # one column per category


def test_score_chart_spans_the_scores_and_the_default_hyperparameters_baseline(tmp_path):
    """Scores of 0.97..0.99 fill the plot (not a flat line near the top of a 0..1 axis); the default
    hyperparameters' score is a dashed line at its height, inside the axis even when below every trial."""
    outcomes = [TrialOutcome(i, {}, "FINISHED", score=s) for i, s in enumerate((0.97, 0.99, 0.98))]
    write_charts(tmp_path, outcomes, "r2", True, baseline=0.965)
    chart = _svg(tmp_path / SCORE_CHART)
    ys = [float(c.get("cy")) for c in chart.findall(f".//{SVG}g[@class='trials']//{SVG}circle")]
    (line,) = chart.findall(f".//{SVG}g[@class='baseline']/{SVG}line")
    base = float(line.get("y1"))
    top, bottom = 30, 300 - 40  # inside the plot area, whatever its margins
    assert top < min(ys) < max(ys) < base < bottom  # the baseline is the lowest, all in the frame
    # the scores' spread (0.02) takes most of the height: 0.97 and 0.99 are far apart
    assert max(ys) - min(ys) > 0.5 * (base - min(ys)) and max(ys) - min(ys) > 100
    assert "default hyperparameters" in _texts(chart)
    write_charts(tmp_path, outcomes, "r2", True)
    assert _svg(tmp_path / SCORE_CHART).findall(f".//{SVG}g[@class='baseline']") == []


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_chart_best_so_far_is_a_staircase_that_only_improves(tmp_path, higher_is_better):
    scores = [0.5, 0.7, 0.6, 0.9, 0.2, 0.8]
    outcomes = [TrialOutcome(i, {}, "FINISHED", score=s) for i, s in enumerate(scores)]
    write_charts(tmp_path, outcomes, "r2", higher_is_better)
    points = _best_line(_svg(tmp_path / SCORE_CHART))
    assert len(points) == 2 * len(scores) - 1  # a horizontal then a vertical segment per later trial
    ys = [y for _, y in points]  # pixels: smaller is higher
    assert ys == (sorted(ys, reverse=True) if higher_is_better else sorted(ys))
    assert len(set(ys)) == (3 if higher_is_better else 2)  # 0.5, 0.7, 0.9 | 0.5, 0.2
    assert [x for x, _ in points[1::2]] == [x for x, _ in points[2::2]]  # verticals at each trial


def test_chart_log_axis_for_wide_positive_ranges_and_escaped_user_text(tmp_path):
    outcomes = [TrialOutcome(i, {"alpha": 10.0 ** (i - 4), "depth": 2 + 10 * i,
                                 "a<b&c": ["<x>", "y&z"][i % 2], "max_depth": [40, None, 7, 40][i]},
                             "FINISHED", score=float(i)) for i in range(4)]
    written = write_charts(tmp_path, outcomes, "rmse <cv>", False)
    assert len(written) == 5

    alpha = _svg(tmp_path / param_chart_name("alpha"))  # 1e-4..0.1: 1000x, a log axis
    texts = _texts(alpha)
    assert {"0.0001", "0.001", "0.01", "0.1", "alpha (log scale)", "rmse <cv> vs alpha"} <= set(texts)
    xs = _dot_xs(alpha)
    gaps = [b - a for a, b in zip(xs, xs[1:], strict=False)]
    assert max(gaps) - min(gaps) < 0.5 and gaps[0] > 10  # decades equally spaced

    depth = _svg(tmp_path / param_chart_name("depth"))  # 2..32: 16x, linear with whole-number ticks
    texts = _texts(depth)
    assert "depth" in texts and not any("log" in t for t in texts)
    xs = _dot_xs(depth)
    gaps = [b - a for a, b in zip(xs, xs[1:], strict=False)]
    assert max(gaps) - min(gaps) < 0.5
    assert "10" in texts and not any(t.endswith(".5") for t in texts)

    named = _svg(tmp_path / param_chart_name("a<b&c"))
    assert {"a<b&c", "rmse <cv> vs a<b&c", "<x>", "y&z"} <= set(_texts(named))
    raw = (tmp_path / param_chart_name("a<b&c")).read_text()
    assert "a&lt;b&amp;c" in raw and "<x>" not in raw
    assert "rmse &lt;cv&gt; by trial" in (tmp_path / SCORE_CHART).read_text()

    mixed = _texts(_svg(tmp_path / param_chart_name("max_depth")))  # None makes it categorical
    ticks = [t for t in mixed if t in {"7", "40", "None"}]
    assert ticks == ["7", "40", "None"]  # numbers in numeric order, then the rest


@pytest.mark.parametrize(("outcomes", "dots"), [
    ([], 0),
    ([TrialOutcome(0, {"a": 1}, "FAILED"), TrialOutcome(1, {"a": 2}, "KILLED")], 0),
    ([TrialOutcome(4, {"a": 1, "b": "x"}, "FINISHED", score=0.5)], 1),
    ([TrialOutcome(i, {"a": i, "b": i % 2 == 0}, "FINISHED", score=1.0) for i in range(3)], 3),
    ([TrialOutcome(i, {"a": a}, "FINISHED", score=score)
      for i, (a, score) in enumerate([(1, math.nan), (2, math.inf), (3, -math.inf), (4, 0.2), (500, 0.3)])],
     2),
    ([TrialOutcome(i, {"b": [True, False, None, "auto"][i], "c": [0.0, -3, math.nan, 1e9][i],
                       "d": "x\x01" + "long" * 20 + str(i)}, "FINISHED", score=-1e6 * i)
      for i in range(4)], 4),
], ids=["none", "all-failed", "single", "equal-scores-and-bools", "nan-inf-excluded", "mixed-values"])
def test_charts_edge_cases_write_valid_svg(tmp_path, outcomes, dots):
    written = write_charts(tmp_path, outcomes, "r2", True)
    assert written[0].name == SCORE_CHART
    for path in written:
        root = _svg(path)
        assert len(_dot_xs(root)) == dots
        text = path.read_text()
        assert not any(bad in value.lower() for bad in ("nan", "inf")
                       for element in root.iter() for value in element.attrib.values()), path.name
        assert "\x01" not in text
    if not dots:
        assert "no scored trials" in _texts(_svg(written[0]))
    if outcomes and dots == 2:  # NaN/inf scored trials are left out, so "a" spans 4..500 on a log axis
        assert "a (log scale)" in _texts(_svg(tmp_path / param_chart_name("a")))


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
