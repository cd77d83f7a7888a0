"""Model catalog: the scikit-learn regressors on offer, each with typed hyperparameter specs.

The UI builds its widgets, the CLI parses ``--param k=v`` and sweeps build their search spaces from
the same :class:`ParamSpec` rows, so a value refused here is refused everywhere, before training.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sklearn.base import RegressorMixin
from sklearn.ensemble import (
    ExtraTreesRegressor,
    GradientBoostingRegressor,
    HistGradientBoostingRegressor,
    RandomForestRegressor,
)
from sklearn.linear_model import ElasticNet, Lasso, LinearRegression, Ridge
from sklearn.neighbors import KNeighborsRegressor
from sklearn.svm import SVR
from sklearn.tree import DecisionTreeRegressor

from mlops_local.errors import UserError

KINDS = ("int", "float", "choice", "bool")
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")
_NONE = ("none", "null", "")


@dataclass(frozen=True)
class ParamSpec:
    """One hyperparameter: kind, default, inclusive bounds or choices, log scale, whether None is allowed."""

    name: str
    kind: str
    default: object
    low: float | None = None
    high: float | None = None
    choices: tuple[object, ...] = ()
    log: bool = False
    help: str = ""
    nullable: bool = False

    def allowed(self) -> str:
        """Human description of the allowed values, for error messages and --help."""
        if self.kind == "choice":
            text = "one of " + ", ".join(str(c) for c in self.choices)
        elif self.kind == "bool":
            text = "true or false"
        else:
            text = f"{'an integer' if self.kind == 'int' else 'a number'} between {_fmt(self.low)} and " \
                   f"{_fmt(self.high)}"
        return text + (" or none" if self.nullable else "")

    def coerce(self, value: object, model: str) -> object:
        """``value`` (a Python value or a CLI string) checked and converted, or UserError."""
        def refuse(why: str = "") -> UserError:
            return UserError(
                f"parameter '{self.name}' of model '{model}' must be {self.allowed()}"
                f"{why}, got {value!r}"
            )

        if isinstance(value, str):
            text = value.strip()
            if self.nullable and text.lower() in _NONE:
                return None
        else:
            text = None
        if value is None:
            if self.nullable:
                return None
            raise refuse()
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            if text is not None and text.lower() in _TRUE + _FALSE:
                return text.lower() in _TRUE
            raise refuse()
        if self.kind == "choice":
            for choice in self.choices:
                if value == choice or (text is not None and text == str(choice)):
                    return choice
            raise refuse()
        number = self._number(value, text, refuse)
        if (self.low is not None and number < self.low) or (self.high is not None and number > self.high):
            raise refuse(" (out of range)")
        return number

    def _number(self, value: object, text: str | None, refuse: Callable[..., UserError]) -> float | int:
        if isinstance(value, bool):
            raise refuse()
        if text is not None:
            try:
                value = int(text) if self.kind == "int" else float(text)
            except ValueError:
                try:
                    value = float(text)
                except ValueError:
                    raise refuse() from None
        if not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
            raise refuse()
        number = float(value)  # numpy scalars too
        if not math.isfinite(number):
            raise refuse()
        if self.kind == "int":
            if number != int(number):
                raise refuse(" (not a whole number)")
            return int(number)
        return number


@dataclass(frozen=True)
class ModelSpec:
    """A catalog entry: name, label, hyperparameters, whether inputs need scaling, and a builder."""

    name: str
    label: str
    params: tuple[ParamSpec, ...]
    needs_scaling: bool
    factory: Callable[..., RegressorMixin]
    seeded: bool = False  # the estimator takes random_state
    fixed: Mapping[str, object] | None = None  # constructor args that are not user hyperparameters
    # Rough relative fit time of a set of (validated) hyperparameters; None: about the same for all.
    # Sweeps start their most expensive trials first, so that no long trial runs alone at the end.
    cost: Callable[[Mapping[str, object]], float] | None = None

    def param(self, name: str) -> ParamSpec:
        """The spec of one hyperparameter (KeyError when unknown)."""
        for spec in self.params:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def defaults(self) -> dict[str, object]:
        """Every hyperparameter at its default."""
        return {p.name: p.default for p in self.params}

    def build(self, params: Mapping[str, object] | None = None, seed: int | None = None) -> RegressorMixin:
        """An unfitted estimator with ``params`` (validated) on top of the defaults."""
        values = validate_params(self.name, params or {})
        if "max_features" in values and values["max_features"] == "all":
            values["max_features"] = 1.0
        kwargs = dict(self.fixed or {})
        kwargs.update(values)
        if self.seeded and seed is not None:
            kwargs["random_state"] = seed
        return self.factory(**kwargs)


def _fmt(x: float | None) -> str:
    if x is None:
        return "any"
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def _p(name: str, kind: str, default: object, low: float | None = None, high: float | None = None,
       **kw: object) -> ParamSpec:
    return ParamSpec(name, kind, default, low, high, **kw)


_INTERCEPT = _p("fit_intercept", "bool", True, help="Fit an intercept term.")
_MAX_ITER = _p("max_iter", "int", 1000, 10, 100_000, log=True, help="Maximum solver iterations.")


# Share of the features a split examines (co2_canada one-hot encodes to about a dozen columns).
_FEATURE_SHARE = {"all": 1.0, "sqrt": 0.3, "log2": 0.25}


def _forest_cost(params: Mapping[str, object]) -> float:
    """Trees x share of features per split: ranks 24 random forest fits on co2_canada with a Spearman
    correlation of 0.98 against their measured fit times (depth and leaf size add little)."""
    return float(params["n_estimators"]) * _FEATURE_SHARE.get(str(params.get("max_features")), 1.0)


def _boosting_cost(params: Mapping[str, object]) -> float:
    """Stages x rows per stage x depth of each stage's tree."""
    return float(params["n_estimators"]) * float(params["subsample"]) * float(params["max_depth"])


def _hist_boosting_cost(params: Mapping[str, object]) -> float:
    """Iterations x leaves per tree (grown leaf by leaf)."""
    return float(params["max_iter"]) * float(params["max_leaf_nodes"])


def _tree_params(n_estimators: bool) -> tuple[ParamSpec, ...]:
    params = [
        _p("max_depth", "int", None, 1, 100, nullable=True, help="Maximum tree depth (none = unlimited)."),
        _p("min_samples_split", "int", 2, 2, 200, log=True, help="Samples needed to split a node."),
        _p("min_samples_leaf", "int", 1, 1, 200, log=True, help="Samples needed in a leaf."),
        _p("max_features", "choice", "all", choices=("all", "sqrt", "log2"),
           help="Features considered at each split."),
    ]
    if n_estimators:
        params.insert(0, _p("n_estimators", "int", 100, 1, 2000, log=True, help="Number of trees."))
    return tuple(params)


CATALOG: dict[str, ModelSpec] = {m.name: m for m in (
    ModelSpec("linear_regression", "Linear regression", (_INTERCEPT,), False, LinearRegression),
    ModelSpec("ridge", "Ridge", (
        _p("alpha", "float", 1.0, 1e-6, 1e6, log=True, help="L2 regularisation strength."),
        _INTERCEPT), True, Ridge, seeded=True),
    ModelSpec("lasso", "Lasso", (
        _p("alpha", "float", 1.0, 1e-6, 1e4, log=True, help="L1 regularisation strength."),
        _INTERCEPT, _MAX_ITER), True, Lasso, seeded=True),
    ModelSpec("elastic_net", "Elastic net", (
        _p("alpha", "float", 1.0, 1e-6, 1e4, log=True, help="Regularisation strength."),
        _p("l1_ratio", "float", 0.5, 0.0, 1.0, help="Mix of L1 (1) and L2 (0) penalties."),
        _INTERCEPT, _MAX_ITER), True, ElasticNet, seeded=True),
    ModelSpec("knn", "k nearest neighbours", (
        _p("n_neighbors", "int", 5, 1, 200, log=True, help="Neighbours averaged."),
        _p("weights", "choice", "uniform", choices=("uniform", "distance"), help="Neighbour weighting."),
        _p("p", "int", 2, 1, 2, help="Minkowski power: 1 = Manhattan, 2 = Euclidean.")),
        True, KNeighborsRegressor),
    ModelSpec("decision_tree", "Decision tree", _tree_params(False), False, DecisionTreeRegressor,
              seeded=True),
    ModelSpec("random_forest", "Random forest", _tree_params(True), False, RandomForestRegressor,
              seeded=True, fixed={"n_jobs": 1}, cost=_forest_cost),
    ModelSpec("extra_trees", "Extra trees", _tree_params(True), False, ExtraTreesRegressor,
              seeded=True, fixed={"n_jobs": 1}, cost=_forest_cost),
    ModelSpec("gradient_boosting", "Gradient boosting", (
        _p("n_estimators", "int", 100, 1, 2000, log=True, help="Boosting stages."),
        _p("learning_rate", "float", 0.1, 1e-3, 1.0, log=True, help="Shrinkage of each stage."),
        _p("max_depth", "int", 3, 1, 20, help="Depth of each tree."),
        _p("min_samples_leaf", "int", 1, 1, 200, log=True, help="Samples needed in a leaf."),
        _p("subsample", "float", 1.0, 0.1, 1.0, help="Share of rows each stage sees.")),
        False, GradientBoostingRegressor, seeded=True, cost=_boosting_cost),
    ModelSpec("hist_gradient_boosting", "Histogram gradient boosting", (
        _p("max_iter", "int", 100, 1, 2000, log=True, help="Boosting iterations."),
        _p("learning_rate", "float", 0.1, 1e-3, 1.0, log=True, help="Shrinkage of each iteration."),
        _p("max_depth", "int", None, 1, 100, nullable=True, help="Depth of each tree (none = unlimited)."),
        _p("max_leaf_nodes", "int", 31, 2, 1000, log=True, help="Leaves per tree."),
        _p("min_samples_leaf", "int", 20, 1, 1000, log=True, help="Samples needed in a leaf."),
        _p("l2_regularization", "float", 0.0, 0.0, 100.0, help="L2 penalty on leaf values.")),
        False, HistGradientBoostingRegressor, seeded=True, cost=_hist_boosting_cost),
    ModelSpec("svr", "Support vector regression", (
        _p("C", "float", 1.0, 1e-3, 1e5, log=True, help="Inverse regularisation strength."),
        _p("epsilon", "float", 0.1, 0.0, 1e4, help="Width of the no-penalty tube (target units)."),
        _p("kernel", "choice", "rbf", choices=("rbf", "linear", "poly", "sigmoid"), help="Kernel."),
        _p("gamma", "choice", "scale", choices=("scale", "auto"), help="Kernel coefficient.")),
        True, SVR),
)}

DEFAULT_MODEL = "random_forest"


def get_model(name: str) -> ModelSpec:
    """The catalog entry for ``name``, or UserError listing the known models."""
    try:
        return CATALOG[name]
    except (KeyError, TypeError):
        raise UserError(f"unknown model {name!r}; choose one of: {', '.join(CATALOG)}") from None


def validate_params(model: str, params: Mapping[str, object]) -> dict[str, object]:
    """Every hyperparameter of ``model``: ``params`` checked and converted, defaults for the rest."""
    spec = get_model(model)
    known = {p.name for p in spec.params}
    unknown = [k for k in params if k not in known]
    if unknown:
        allowed = ", ".join(sorted(known)) or "(none)"
        raise UserError(
            f"unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} for "
            f"model '{model}'; its parameters are: {allowed}"
        )
    values = spec.defaults()
    for name, value in params.items():
        values[name] = spec.param(name).coerce(value, model)
    return values


def parse_param_args(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["k=v", ...]`` from the CLI into a dict (values stay strings; validate_params converts)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--param expects NAME=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out
