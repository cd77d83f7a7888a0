"""Datasets: built-ins (co2_canada, diabetes, friedman1) and user CSV/Parquet files, validated.

Every problem a user can cause (missing or unreadable file, unknown target, too few rows, ...)
raises :class:`UserError` naming the file, the column and what is expected, before any run exists.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from mlops_local.errors import UserError
from mlops_local.ml.tables import read_table
from mlops_local.ml.types import DatasetSpec

log = logging.getLogger(__name__)

MIN_ROWS = 10
DEFAULT_DATASET = "co2_canada"
_NAME_SHOWN, _COLUMNS_SHOWN = 40, 30  # column names quoted in an error message
CO2_FILE = "co2_emissions_canada.csv"


@dataclass(frozen=True)
class BuiltinDataset:
    """A dataset shipped with mlops-local; ``options`` are the settable ones with their defaults."""

    name: str
    description: str
    target: str
    options: Mapping[str, object] = field(default_factory=dict)
    loader: Callable[[Mapping[str, object]], pd.DataFrame] | None = field(default=None, repr=False)
    path: str | None = None


@dataclass
class LoadedDataset:
    """A validated dataset: features ``X`` (numeric columns float, others text) and numeric target ``y``."""

    name: str
    X: pd.DataFrame
    y: pd.Series
    target: str
    features: list[str]
    fingerprint: str
    source: str  # "builtin" | "file"
    path: str | None
    n_rows_dropped: int = 0
    dropped_features: list[str] = field(default_factory=list)
    options: dict[str, object] = field(default_factory=dict)  # effective options of a built-in

    @property
    def numeric_features(self) -> list[str]:
        return [c for c in self.features if pd.api.types.is_float_dtype(self.X[c])]

    @property
    def categorical_features(self) -> list[str]:
        return [c for c in self.features if not pd.api.types.is_float_dtype(self.X[c])]


# -- built-ins ----------------------------------------------------------------------------------

def _co2_path() -> Path:
    return Path(str(resources.files("mlops_local") / "data" / CO2_FILE))


def _load_co2(options: Mapping[str, object]) -> pd.DataFrame:
    return read_table(_co2_path())


def _load_diabetes(options: Mapping[str, object]) -> pd.DataFrame:
    from sklearn.datasets import load_diabetes

    return load_diabetes(as_frame=True, scaled=False).frame


def _load_friedman1(options: Mapping[str, object]) -> pd.DataFrame:
    from sklearn.datasets import make_friedman1

    X, y = make_friedman1(n_samples=int(options["n_samples"]), n_features=int(options["n_features"]),
                          noise=float(options["noise"]), random_state=int(options["seed"]))
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
    frame["y"] = y
    return frame


BUILTINS: dict[str, BuiltinDataset] = {d.name: d for d in (
    BuiltinDataset("co2_canada", "CO2 emissions of light-duty vehicles sold in Canada (7,385 cars; "
                   "Government of Canada, Open Government Licence)", "CO2 Emissions(g/km)",
                   loader=_load_co2, path=str(_co2_path())),
    BuiltinDataset("diabetes", "scikit-learn's diabetes progression (442 patients, 10 features)", "target",
                   loader=_load_diabetes),
    BuiltinDataset("friedman1", "Friedman #1 synthetic regression (5 informative features + noise)", "y",
                   {"n_samples": 1000, "n_features": 10, "noise": 1.0, "seed": 0}, loader=_load_friedman1),
)}

# bounds of built-in options: (kind, low, high)
_OPTION_BOUNDS = {"n_samples": (int, MIN_ROWS, 1_000_000), "n_features": (int, 5, 200),
                  "noise": (float, 0.0, 1e6), "seed": (int, 0, 2**32 - 1)}


def _builtin_options(ds: BuiltinDataset, given: Mapping[str, object]) -> dict[str, object]:
    unknown = [k for k in given if k not in ds.options]
    if unknown:
        allowed = ", ".join(ds.options) or "none"
        raise UserError(f"unknown option(s) {', '.join(unknown)} for dataset '{ds.name}'; allowed: {allowed}")
    values = dict(ds.options)
    for key, raw in given.items():
        kind, low, high = _OPTION_BOUNDS[key]
        try:
            value = kind(float(raw)) if kind is int and not isinstance(raw, bool) else kind(raw)
            if kind is int and float(raw) != value:
                raise ValueError
        except (TypeError, ValueError):
            raise UserError(f"option '{key}' of dataset '{ds.name}' must be {kind.__name__} between "
                            f"{low} and {high}, got {raw!r}") from None
        if not low <= value <= high:
            raise UserError(f"option '{key}' of dataset '{ds.name}' must be between {low} and {high}, "
                            f"got {raw!r}")
        values[key] = value
    return values


# -- validation ---------------------------------------------------------------------------------

def _numeric_target(frame: pd.DataFrame, target: str, label: str) -> pd.Series:
    raw = frame[target]
    if pd.api.types.is_bool_dtype(raw):
        return raw.astype(float)
    if pd.api.types.is_numeric_dtype(raw):
        return raw.astype(float)
    converted = pd.to_numeric(raw, errors="coerce")
    bad = raw.notna() & converted.isna()
    if bad.any():
        first = bad.idxmax()
        raise UserError(f"target column {target!r} of {label} is not numeric (row {first} holds text); "
                        "choose a numeric column for regression")
    return converted.astype(float)


def _clean_features(X: pd.DataFrame) -> pd.DataFrame:
    """Numeric columns as float (so missing values stay representable), other columns as text."""
    out = {}
    for col in X.columns:
        s = X[col]
        if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
            out[col] = s.astype(float)
        else:
            obj = s.astype(object)
            out[col] = obj.where(obj.isna(), obj.astype(str)).where(obj.notna(), np.nan)
    return pd.DataFrame(out, index=X.index)


def fingerprint(X: pd.DataFrame, y: pd.Series) -> str:
    """Content hash of the features and target (independent of file encoding and delimiter)."""
    digest = hashlib.sha256()
    digest.update("\x1f".join([*map(str, X.columns), str(y.name)]).encode())
    digest.update(pd.util.hash_pandas_object(X, index=False).to_numpy().tobytes())
    digest.update(pd.util.hash_pandas_object(y, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def _column_list(columns: list[str], label: str) -> str:
    """The columns, for an error message; nothing from a file that is not a table.

    A file read as one column (no delimiter in its first line: a key, a password file, a config) has
    its first line as that column's name, so naming it would print the file's content."""
    if len(columns) < 2:
        return (f"{label} reads as a single column, so it is not a table of features and a target "
                "(a CSV file separated by , ; tab or |)")
    shown = [c if len(c) <= _NAME_SHOWN else c[:_NAME_SHOWN] + "…" for c in columns[:_COLUMNS_SHOWN]]
    more = len(columns) - len(shown)
    return "columns: " + ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def load_dataset(spec: DatasetSpec, frame: pd.DataFrame | None = None) -> LoadedDataset:
    """Load and validate ``spec`` (a built-in name or a file path); ``frame`` is an already-read upload."""
    builtin = BUILTINS.get(spec.name) if frame is None else None
    options: dict[str, object] = {}
    if frame is not None:
        label, name, source, path = spec.name, spec.name, "file", None
        if spec.options:
            raise UserError("dataset options apply to built-in datasets only")
        if frame.columns.duplicated().any():
            dupes = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
            raise UserError(f"{label} has duplicate column names: {', '.join(dupes)}")
        if frame.empty:
            raise UserError(f"{label} has no data rows")
    elif builtin is not None:
        options = _builtin_options(builtin, spec.options)
        frame = builtin.loader(options)
        label, name, source, path = builtin.name, builtin.name, "builtin", builtin.path
    else:
        candidate = Path(spec.name).expanduser()
        if not candidate.exists() and candidate.suffix.lower() not in (".csv", ".parquet", ".txt", ".tsv"):
            raise UserError(f"dataset {spec.name!r} is neither a built-in ({', '.join(BUILTINS)}) "
                            "nor an existing file")
        if spec.options:
            raise UserError("dataset options apply to built-in datasets only")
        frame = read_table(candidate)
        label, name, source, path = str(candidate), candidate.name, "file", str(candidate.resolve())
    columns = [str(c) for c in frame.columns]
    frame = frame.set_axis(columns, axis=1)
    target = spec.target or (builtin.target if builtin else None)
    if not target:
        raise UserError(f"choose a target column for {label} (--target); {_column_list(columns, label)}")
    if target not in columns:
        raise UserError(f"target column {target!r} is not in {label}; {_column_list(columns, label)}")
    if spec.features:
        missing = [f for f in spec.features if f not in columns]
        if missing:
            raise UserError(f"feature column(s) {', '.join(map(repr, missing))} not in {label}; "
                            f"{_column_list(columns, label)}")
        if target in spec.features:
            raise UserError(f"the target column {target!r} cannot also be a feature")
        features = list(dict.fromkeys(spec.features))
    else:
        features = [c for c in columns if c != target]
    if not features:
        raise UserError(f"{label} has no feature columns besides the target {target!r}")
    y = _numeric_target(frame, target, label)
    keep = y.notna()
    n_dropped = int((~keep).sum())
    usable = int(keep.sum())
    if usable < MIN_ROWS:
        raise UserError(f"{label} has {usable} usable row(s) with a target value (at least {MIN_ROWS} needed"
                        f"{f'; {n_dropped} rows without a target were dropped' if n_dropped else ''})")
    y = y[keep].reset_index(drop=True).rename(target)
    if y.nunique() < 2:
        raise UserError(f"target column {target!r} of {label} holds one value in every row; "
                        "a regression needs a target that varies")
    X = frame.loc[keep, features].reset_index(drop=True)
    empty = [c for c in features if X[c].isna().all()]
    if len(empty) == len(features):
        raise UserError(f"every feature column of {label} is empty ({', '.join(features)})")
    if empty:
        log.warning("%s: dropping empty feature column(s) %s", label, ", ".join(empty))
        features = [c for c in features if c not in empty]
        X = X[features]
    X = _clean_features(X)
    return LoadedDataset(name=name, X=X, y=y, target=target, features=features, fingerprint=fingerprint(X, y),
                         source=source, path=path, n_rows_dropped=n_dropped, dropped_features=empty,
                         options=options)


def profile(df: pd.DataFrame, target: str | None) -> dict:
    """A quick profile for the UI: rows, columns, dtypes, share missing per column, target summary."""
    numeric = [str(c) for c in df.columns if pd.api.types.is_numeric_dtype(df[c])]
    out: dict = {
        "rows": int(len(df)),
        "columns": [str(c) for c in df.columns],
        "dtypes": {str(c): str(t) for c, t in df.dtypes.items()},
        "missing": {str(c): float(df[c].isna().mean()) if len(df) else 0.0 for c in df.columns},
        "numeric": numeric,
        "categorical": [str(c) for c in df.columns if str(c) not in numeric],
        "target": None,
    }
    if target is not None and target in df.columns:
        values = pd.to_numeric(df[target], errors="coerce")
        out["target"] = {k: float(v) for k, v in values.describe().items() if pd.notna(v)}
    return out
