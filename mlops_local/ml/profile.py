"""The reference profile of a training: how its features, target and predictions were distributed.

Logged with the model (``profile/reference.json``) so that the model service can tell how far the rows
it receives have moved from the rows the model learned from (see :mod:`mlops_local.serving.drift`).
Per numeric column: the inner edges of 10 quantile bins and the training rows' count per bin (plus
one bin for gaps); per text column: the most frequent categories (at most ``MAX_CATEGORIES``) and
their counts, everything else in one "other" bin. Plain JSON, read back as data only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

PROFILE_ARTIFACT = "profile"  # a run's artifact directory for it
PROFILE_FILE = "reference.json"
FORMAT = 1
BINS = 10
MAX_CATEGORIES = 20
MAX_PROFILE_BYTES = 64 << 20  # a larger file is not a profile this module wrote


class ProfileError(ValueError):
    """A profile file that is not what :func:`build_profile` writes."""


@dataclass(frozen=True)
class Binning:
    """How one column's values map to bins: numeric (``edges``) or categorical (``categories``).

    Numeric: bin i < len(edges)+1 by ``searchsorted(edges, x, "right")``, the last bin for gaps.
    Categorical: bin i for ``categories[i]``, the last bin for any other value (and gaps).
    """

    name: str
    kind: str  # "numeric" | "categorical"
    edges: tuple[float, ...] = ()
    categories: tuple[str, ...] = ()

    @property
    def n_bins(self) -> int:
        return len(self.edges) + 2 if self.kind == "numeric" else len(self.categories) + 1

    def bins(self, values: object) -> np.ndarray:
        """The bin of every value (an array of ints, one per value)."""
        if self.kind == "numeric":
            x = _floats(values)
            out = np.searchsorted(np.asarray(self.edges, dtype=float), x, side="right")
            out[~np.isfinite(x)] = len(self.edges) + 1
            return out
        index = {category: i for i, category in enumerate(self.categories)}
        other = len(self.categories)
        return np.fromiter((index.get(_text(v), other) for v in values), dtype=np.int64)


def _floats(values: object) -> np.ndarray:
    """``values`` as floats, anything that is not a number as NaN."""
    if isinstance(values, np.ndarray) and values.dtype.kind == "f":
        return values
    try:
        return np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        return pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def _text(value: object) -> str | None:
    """A category's text; gaps (None, NaN) are None (counted as "other")."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def numeric_binning(name: str, values: Sequence[float] | np.ndarray, bins: int = BINS) -> Binning:
    """Inner edges of ``bins`` quantile bins of the finite values (repeated edges merged)."""
    x = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return Binning(name, "numeric")
    edges = np.unique(np.quantile(x, np.linspace(0, 1, bins + 1)[1:-1]))
    return Binning(name, "numeric", edges=tuple(float(e) for e in edges))


def categorical_binning(name: str, values: Sequence[object], cap: int = MAX_CATEGORIES) -> Binning:
    """The ``cap`` most frequent categories (ties: alphabetical), the rest falls in "other"."""
    counts = pd.Series([_text(v) for v in values], dtype=object).dropna().value_counts()
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:cap]
    return Binning(name, "categorical", categories=tuple(str(k) for k, _ in ranked))


def histogram(binning: Binning, values: object) -> list[int]:
    """Count per bin of ``values``."""
    return np.bincount(binning.bins(values), minlength=binning.n_bins).astype(int).tolist()


def _entry(binning: Binning, values: object) -> dict[str, object]:
    entry: dict[str, object] = {"kind": binning.kind, "counts": histogram(binning, values)}
    entry["edges" if binning.kind == "numeric" else "categories"] = \
        list(binning.edges if binning.kind == "numeric" else binning.categories)
    return entry


def build_profile(X: pd.DataFrame, numeric: Sequence[str], y: Sequence[float], predictions: Sequence[float],
                  target: str) -> dict[str, object]:
    """The profile of training rows ``X`` (``numeric``: its numeric columns), their target ``y`` and the
    fitted model's predictions for them, as a JSON-ready dict."""
    numeric = set(numeric)
    features = {}
    for column in X.columns:
        values = X[column].to_numpy()
        binning = numeric_binning(str(column), values) if column in numeric \
            else categorical_binning(str(column), values)
        features[str(column)] = _entry(binning, values)
    y_bins, p_bins = numeric_binning(target, y), numeric_binning("prediction", predictions)
    return {"format": FORMAT, "rows": int(len(X)), "bins": BINS, "max_categories": MAX_CATEGORIES,
            "features": features, "target": {"name": target, **_entry(y_bins, y)},
            "prediction": _entry(p_bins, predictions)}


def write_profile(profile: Mapping[str, object], out_dir: Path) -> Path:
    """``out_dir/reference.json`` (compact JSON)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / PROFILE_FILE
    path.write_text(json.dumps(profile, separators=(",", ":"), allow_nan=False), encoding="utf-8")
    return path


@dataclass(frozen=True)
class Reference:
    """A loaded profile: per feature (and for the predictions) its binning and training counts."""

    features: tuple[tuple[Binning, tuple[int, ...]], ...]
    prediction: tuple[Binning, tuple[int, ...]]
    rows: int


def _binning(name: str, entry: object) -> tuple[Binning, tuple[int, ...]]:
    """One checked entry of the file; ProfileError naming it otherwise."""
    if not isinstance(entry, dict):
        raise ProfileError(f"entry {name!r} is not an object")
    kind, counts = entry.get("kind"), entry.get("counts")
    if kind == "numeric":
        edges = entry.get("edges")
        if not isinstance(edges, list) or not all(isinstance(e, (int, float)) and math.isfinite(e)
                                                  for e in edges) or edges != sorted(edges):
            raise ProfileError(f"entry {name!r}: edges must be increasing numbers")
        binning = Binning(name, kind, edges=tuple(float(e) for e in edges))
    elif kind == "categorical":
        categories = entry.get("categories")
        if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
            raise ProfileError(f"entry {name!r}: categories must be strings")
        binning = Binning(name, kind, categories=tuple(categories))
    else:
        raise ProfileError(f"entry {name!r}: kind must be numeric or categorical, got {kind!r}")
    if not isinstance(counts, list) or len(counts) != binning.n_bins or \
            not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
        raise ProfileError(f"entry {name!r}: counts must be {binning.n_bins} non-negative integers")
    return binning, tuple(counts)


def parse_profile(document: object) -> Reference:
    """The :class:`Reference` in a decoded profile file; ProfileError if it is not one."""
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ProfileError(f"not a format-{FORMAT} reference profile")
    features = document.get("features")
    if not isinstance(features, dict):
        raise ProfileError("features must be an object")
    rows = document.get("rows")
    if not isinstance(rows, int) or rows <= 0:
        raise ProfileError("rows must be a positive integer")
    return Reference(tuple(_binning(str(name), entry) for name, entry in features.items()),
                     _binning("prediction", document.get("prediction")), rows)


def read_profile(path: Path) -> Reference:
    """Read ``path`` as JSON data (never code) and check it; ProfileError if it is not a profile."""
    if path.stat().st_size > MAX_PROFILE_BYTES:
        raise ProfileError(f"{path.name} is larger than {MAX_PROFILE_BYTES >> 20} MB")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProfileError(f"{path.name} is not JSON: {exc}") from None
    return parse_profile(document)
