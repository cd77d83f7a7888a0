"""Model catalog: every model builds, hyperparameters are typed, wrong values are refused by name."""

from __future__ import annotations

import math

import pytest
from sklearn.base import is_regressor

from mlops_local.errors import UserError
from mlops_local.ml.catalog import CATALOG, DEFAULT_MODEL, KINDS, get_model, parse_param_args, validate_params

EXPECTED = {"linear_regression", "ridge", "lasso", "elastic_net", "knn", "decision_tree", "random_forest",
            "extra_trees", "gradient_boosting", "hist_gradient_boosting", "svr"}


def test_catalog_has_the_eleven_models_of_the_issue():
    assert set(CATALOG) == EXPECTED
    assert DEFAULT_MODEL in CATALOG


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_model_builds_with_defaults_and_specs_are_consistent(name):
    spec = get_model(name)
    estimator = spec.build({}, seed=3)
    assert is_regressor(estimator)
    if spec.seeded:
        assert estimator.get_params()["random_state"] == 3
    for p in spec.params:
        assert p.kind in KINDS
        # the default must itself be valid, and appear in the estimator
        assert p.coerce(p.default, name) == p.default
        if p.kind in ("int", "float"):
            assert p.low is not None and p.high is not None and p.low < p.high
            if p.log:
                assert p.low > 0
        if p.kind == "choice":
            assert p.default in p.choices
        assert p.help


def test_sklearn_estimator_receives_the_validated_values():
    estimator = get_model("random_forest").build({"n_estimators": "7", "max_depth": "none",
                                                  "max_features": "sqrt"}, seed=1)
    params = estimator.get_params()
    assert (params["n_estimators"], params["max_depth"], params["max_features"]) == (7, None, "sqrt")
    # "all" is the catalog's readable name for sklearn's 1.0
    assert get_model("extra_trees").build({}).get_params()["max_features"] == 1.0


def test_validate_params_returns_every_hyperparameter_with_defaults():
    values = validate_params("ridge", {"alpha": "0.5"})
    assert values == {"alpha": 0.5, "fit_intercept": True}


@pytest.mark.parametrize(("model", "params", "converted"), [
    ("knn", {"n_neighbors": "12"}, {"n_neighbors": 12}),
    ("knn", {"n_neighbors": 12.0}, {"n_neighbors": 12}),
    ("ridge", {"fit_intercept": "false"}, {"fit_intercept": False}),
    ("ridge", {"fit_intercept": "Yes"}, {"fit_intercept": True}),
    ("svr", {"kernel": "linear", "C": "1e3"}, {"kernel": "linear", "C": 1000.0}),
    ("decision_tree", {"max_depth": None}, {"max_depth": None}),
    ("hist_gradient_boosting", {"max_depth": "null"}, {"max_depth": None}),
])
def test_values_from_cli_strings_and_python_are_converted(model, params, converted):
    values = validate_params(model, params)
    for key, expected in converted.items():
        assert values[key] == expected
        assert type(values[key]) is type(expected)


@pytest.mark.parametrize(("model", "params", "fragments"), [
    ("random_forest", {"n_estimators": "ten"}, ["'n_estimators'", "random_forest", "integer", "1", "2000"]),
    ("random_forest", {"n_estimators": 0}, ["'n_estimators'", "out of range", "between 1 and 2000"]),
    ("random_forest", {"n_estimators": 2.5}, ["'n_estimators'", "not a whole number"]),
    ("random_forest", {"n_estimators": True}, ["'n_estimators'"]),
    ("random_forest", {"max_depth": -1}, ["'max_depth'", "or none"]),
    ("ridge", {"alpha": "nan"}, ["'alpha'", "number"]),
    ("ridge", {"alpha": "inf"}, ["'alpha'"]),
    ("ridge", {"alpha": 0}, ["'alpha'", "out of range"]),
    ("ridge", {"fit_intercept": "maybe"}, ["'fit_intercept'", "true or false"]),
    ("elastic_net", {"l1_ratio": 1.5}, ["'l1_ratio'", "between 0 and 1"]),
    ("svr", {"kernel": "cubic"}, ["'kernel'", "rbf", "linear"]),
    ("knn", {"n_neighbors": None}, ["'n_neighbors'"]),
])
def test_wrong_values_are_refused_naming_parameter_and_allowed_range(model, params, fragments):
    with pytest.raises(UserError) as err:
        validate_params(model, params)
    for fragment in fragments:
        assert fragment in str(err.value)


def test_unknown_parameter_lists_the_model_parameters():
    with pytest.raises(UserError, match=r"unknown parameter 'n_trees' for model 'random_forest'.*n_estim"):
        validate_params("random_forest", {"n_trees": 5})


def test_unknown_model_lists_the_catalog():
    with pytest.raises(UserError, match=r"unknown model 'xgboost'.*random_forest.*svr"):
        get_model("xgboost")


def test_parse_param_args():
    assert parse_param_args(["a=1", " b = x=y "]) == {"a": "1", "b": "x=y"}
    for bad in (["a"], ["=1"]):
        with pytest.raises(UserError, match="NAME=VALUE"):
            parse_param_args(bad)


def test_log_scale_params_have_positive_bounds_for_sweeps():
    for spec in CATALOG.values():
        for p in spec.params:
            if p.log:
                assert math.log(p.low) < math.log(p.high)
