"""Evaluation: seeded split, R², RMSE (really sqrt of MSE), MAE, optional k-fold cross-validation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.model_selection import KFold, cross_validate, train_test_split
from sklearn.pipeline import Pipeline

from mlops_local.errors import UserError

MAX_CV_FOLDS = 20
MIN_TEST_ROWS = 2
MIN_TRAIN_ROWS = 5


def validate_split(n_rows: int, test_size: object, cv_folds: object) -> tuple[float, int]:
    """``test_size`` in (0, 1), ``cv_folds`` 0 or 2..20, both leaving enough rows; UserError otherwise."""
    try:
        size = float(test_size)
    except (TypeError, ValueError):
        raise UserError(f"test size must be a number between 0 and 1 (exclusive), got {test_size!r}") \
            from None
    if isinstance(test_size, bool) or not 0.0 < size < 1.0:
        raise UserError(f"test size must be between 0 and 1 (exclusive), got {test_size!r}")
    try:
        folds = int(cv_folds)
        if isinstance(cv_folds, bool) or folds != float(cv_folds):
            raise ValueError
    except (TypeError, ValueError):
        raise UserError(f"cv folds must be a whole number (0 = no cross-validation, or 2 to {MAX_CV_FOLDS}), "
                        f"got {cv_folds!r}") from None
    if folds == 1 or not 0 <= folds <= MAX_CV_FOLDS:
        raise UserError(f"cv folds must be 0 (no cross-validation) or between 2 and {MAX_CV_FOLDS}, "
                        f"got {cv_folds!r}")
    n_test = math.ceil(n_rows * size)
    n_train = n_rows - n_test
    if n_test < MIN_TEST_ROWS or n_train < MIN_TRAIN_ROWS:
        raise UserError(f"test size {size:g} of {n_rows} rows leaves {n_train} training and {n_test} test "
                        f"rows; at least {MIN_TRAIN_ROWS} and {MIN_TEST_ROWS} are needed")
    if folds and folds > n_train:
        raise UserError(f"cv folds ({folds}) cannot exceed the {n_train} training rows")
    return size, folds


def split(X: pd.DataFrame, y: pd.Series, test_size: float, seed: int):
    """Seeded train/test split: X_train, X_test, y_train, y_test."""
    return train_test_split(X, y, test_size=test_size, random_state=seed)


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Root mean squared error: the square root of the MSE, computed explicitly."""
    return float(math.sqrt(mean_squared_error(y_true, y_pred)))


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """r2, rmse and mae."""
    return {
        "r2": float(r2_score(y_true, y_pred)),
        "rmse": rmse(y_true, y_pred),
        "mae": float(mean_absolute_error(y_true, y_pred)),
    }


def cross_validation(pipeline: Pipeline, X: pd.DataFrame, y: pd.Series, folds: int,
                     seed: int) -> dict[str, float]:
    """Shuffled k-fold on the training rows: cv_r2_mean/std and cv_rmse_mean/std (rmse per fold)."""
    scores = cross_validate(clone(pipeline), X, y, cv=KFold(folds, shuffle=True, random_state=seed),
                            scoring=("r2", "neg_mean_squared_error"), n_jobs=1, error_score="raise")
    r2 = np.asarray(scores["test_r2"], dtype=float)
    fold_rmse = np.sqrt(-np.asarray(scores["test_neg_mean_squared_error"], dtype=float))
    return {
        "cv_r2_mean": float(r2.mean()), "cv_r2_std": float(r2.std()),
        "cv_rmse_mean": float(fold_rmse.mean()), "cv_rmse_std": float(fold_rmse.std()),
    }


def feature_importance(pipeline: Pipeline, X_test: pd.DataFrame, y_test: pd.Series, seed: int,
                       sample: int = 200) -> tuple[pd.Series | None, str]:
    """Importance per raw input column and how it was computed (impurity, |coef| or permutation)."""
    from mlops_local.ml.preprocessing import importance_by_column

    estimator = pipeline.named_steps["model"]
    if hasattr(estimator, "feature_importances_"):
        return importance_by_column(pipeline, estimator.feature_importances_), "impurity"
    coef = getattr(estimator, "coef_", None)
    if coef is not None and getattr(estimator, "kernel", "linear") == "linear":
        return importance_by_column(pipeline, np.abs(np.asarray(coef).ravel())), "abs_coef"
    from sklearn.inspection import permutation_importance

    n = min(sample, len(X_test))
    result = permutation_importance(pipeline, X_test.iloc[:n], y_test.iloc[:n], n_repeats=3,
                                    random_state=seed, n_jobs=1)
    values = pd.Series(result.importances_mean, index=list(X_test.columns)).sort_values(ascending=False)
    return values, f"permutation (r2 drop, {n} test rows)"
