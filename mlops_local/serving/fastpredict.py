"""The served model's predict with less per-call overhead than scikit-learn's and bit-for-bit its numbers.

A one-row request is all overhead: ``RandomForestRegressor.predict`` runs each tree through joblib even
with ``n_jobs=1``, and per tree that is a configuration context, a reset and re-install of every
warnings filter of the process, and the tree's fitted/tags checks: about 0.1 ms a tree, 10 ms of a
one-row request to a 100-tree forest, where walking the trees takes 0.01 ms each. :class:`ForestPipeline`
validates the input once and sums the trees' own predictions in the same order into the same float64
array, then divides, as ``ForestRegressor.predict`` does with one job: the same operations on the same
values (with several jobs its threads add the trees in the order they finish, which this would not
reproduce: such forests, like any other model, keep their own ``predict``).
"""

from __future__ import annotations

import logging

import numpy as np
from sklearn.ensemble import ExtraTreesRegressor, RandomForestRegressor
from sklearn.pipeline import Pipeline
from sklearn.tree import DecisionTreeRegressor, ExtraTreeRegressor

log = logging.getLogger(__name__)

# Exact types: a subclass may predict differently (a different aggregation, weights).
FORESTS = (RandomForestRegressor, ExtraTreesRegressor)
TREES = (DecisionTreeRegressor, ExtraTreeRegressor)


class ForestPipeline:
    """``pipeline.predict`` of a pipeline ending in a one-output regression forest, its trees summed here."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.head = pipeline[:-1] if len(pipeline) > 1 else None  # the transformers, as predict runs them
        self.forest = pipeline[-1]

    def predict(self, X: object) -> np.ndarray:
        """The forest's prediction of the transformed ``X`` (ForestRegressor.predict's arithmetic)."""
        Xt = self.head.transform(X) if self.head is not None else X
        forest = self.forest
        Xt = forest._validate_X_predict(Xt)  # the checks its predict makes, once
        out = np.zeros(Xt.shape[0], dtype=np.float64)
        for tree in forest.estimators_:
            out += tree.tree_.predict(Xt)[:, 0]  # DecisionTreeRegressor.predict for one output
        out /= len(forest.estimators_)
        return out


def fast_predictor(pipeline: object) -> object:
    """A :class:`ForestPipeline` over ``pipeline`` when it ends in a forest it covers, else ``pipeline``."""
    if not isinstance(pipeline, Pipeline) or type(pipeline[-1]) not in FORESTS:
        return pipeline
    forest = pipeline[-1]
    if getattr(forest, "n_outputs_", None) != 1 or not all(type(t) in TREES for t in forest.estimators_):
        return pipeline
    if forest.n_jobs not in (None, 1):  # its threads add the trees in whatever order they finish
        return pipeline
    if not callable(getattr(forest, "_validate_X_predict", None)):  # private: a scikit-learn without it
        return pipeline
    return ForestPipeline(pipeline)


def for_serving(model: object) -> object:
    """``model`` (a PyFuncModel from the safe loader) predicting through :func:`fast_predictor`; the
    signature checks stay MLflow's."""
    from mlflow.pyfunc import PyFuncModel
    from mlflow.sklearn import _SklearnModelWrapper

    try:
        pipeline = model.get_raw_model()
    except (AttributeError, NotImplementedError):
        return model
    predictor = fast_predictor(pipeline)
    if predictor is pipeline:
        return model
    log.debug("serving %s with the trees summed directly", type(pipeline[-1]).__name__)
    return PyFuncModel(model_meta=model.metadata, model_impl=_SklearnModelWrapper(predictor))
