"""Input and prediction drift of the served model: PSI of the last rows scored against the training profile.

The window holds the bins of the last ``size`` rows scored (a ring of bin numbers, one column per
feature plus the prediction) and a count per bin kept up to date as rows come in: a request adds its
rows' bins and subtracts those of the rows they push out, so its cost is O(rows x features) whatever
the window size. PSI is computed from the counts when Prometheus scrapes, O(bins x features):

    PSI = sum over bins of (a - e) * ln(a / e)

with ``a`` the window's share of rows in the bin, ``e`` the training rows' share, both floored at
``EPSILON`` so that an empty bin counts as rare instead of dividing by zero. Usual reading: below 0.1
no shift, 0.1 to 0.25 a moderate one, above 0.25 a large one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:  # the model service imports this before it has a model: no pandas until a load
    import pandas as pd

    from mlops_local.ml.profile import Binning, Reference

log = logging.getLogger(__name__)

EPSILON = 1e-4
MAX_EXPORTED_FEATURES = 50  # a wide model exports its top features by PSI (labels stay bounded)
MIN_ROWS = 100  # fewer rows than this (or than the window) make PSI noise: not exported yet
PREDICTION = "prediction"


def psi(actual: np.ndarray, expected: np.ndarray) -> float:
    """Population stability index of counts ``actual`` against counts ``expected`` (same bins)."""
    a = np.maximum(actual / max(actual.sum(), 1), EPSILON)
    e = np.maximum(expected / max(expected.sum(), 1), EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def _column(data: pd.DataFrame, position: int) -> object:
    """The values of one column, without building a Series.

    ``data[name]`` costs tens of microseconds per column (a Series, an index): with one row per
    request and many columns, most of the drift update. pandas' own accessor returns the array.
    """
    getter = getattr(data, "_get_column_array", None)
    return getter(position) if getter is not None else data.iloc[:, position].to_numpy()


class DriftWindow:
    """The last ``size`` rows' bins and their counts, for one loaded model version (thread-safe)."""

    def __init__(self, reference: Reference, size: int) -> None:
        if size <= 0:
            raise ValueError(f"window size must be positive, got {size}")
        self.size = size
        self.binnings: list[Binning] = [b for b, _ in reference.features] + [reference.prediction[0]]
        expected = [c for _, c in reference.features] + [reference.prediction[1]]
        widths = [b.n_bins for b in self.binnings]
        self._offsets = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int64)
        self._slices = [slice(int(o), int(o) + w) for o, w in zip(self._offsets, widths, strict=True)]
        self._expected = np.concatenate([np.asarray(c, dtype=float) for c in expected])
        self._counts = np.zeros(int(sum(widths)), dtype=np.int64)
        index_type = np.int32 if self._counts.size < 2**31 else np.int64
        self._ring = np.zeros((size, len(self.binnings)), dtype=index_type)  # global bin numbers per row
        self._filled = 0  # rows in the ring (up to size)
        self._next = 0  # slot the next row goes to
        self._lock = threading.Lock()

    @property
    def features(self) -> list[str]:
        return [b.name for b in self.binnings[:-1]]

    @property
    def rows(self) -> int:
        return self._filled

    def row_bins(self, data: pd.DataFrame, predictions: np.ndarray | None) -> np.ndarray:
        """Global bin numbers of ``data``'s rows, one column per feature and one for the prediction."""
        n = len(data)
        out = np.empty((n, len(self.binnings)), dtype=np.int64)
        where = {name: i for i, name in enumerate(data.columns.tolist())}
        for j, binning in enumerate(self.binnings[:-1]):
            i = where.get(binning.name)
            values = _column(data, i) if i is not None else np.full(n, np.nan)  # left out: gaps
            out[:, j] = binning.bins(values)
        preds = predictions if predictions is not None and len(predictions) == n else np.full(n, np.nan)
        out[:, -1] = self.binnings[-1].bins(np.asarray(preds, dtype=float))
        return out + self._offsets

    def add(self, data: pd.DataFrame, predictions: np.ndarray | None = None) -> None:
        """Count ``data``'s rows (and their predictions) in, pushing the oldest rows out past ``size``."""
        if len(data) > self.size:  # only the last rows stay: bin only those
            data = data.iloc[-self.size:]
            predictions = predictions[-self.size:] if predictions is not None else None
        if len(data) == 0:
            return
        new = self.row_bins(data, predictions)
        with self._lock:
            slots = (self._next + np.arange(len(new))) % self.size
            taken = slots[slots < self._filled]  # slots still holding an older row
            if taken.size:
                np.subtract.at(self._counts, self._ring[taken].ravel(), 1)
            self._ring[slots] = new
            np.add.at(self._counts, new.ravel(), 1)
            self._next = int((self._next + len(new)) % self.size)
            self._filled = min(self.size, self._filled + len(new))

    def counts(self) -> list[np.ndarray]:
        """The window's count per bin, one array per feature and the prediction's last (a copy)."""
        with self._lock:
            snapshot = self._counts.copy()
        return [snapshot[s] for s in self._slices]

    def psi(self) -> tuple[dict[str, float], float, int]:
        """(PSI per feature, PSI of the predictions, rows in the window)."""
        with self._lock:
            snapshot, rows = self._counts.copy(), self._filled
        values = [psi(snapshot[s], self._expected[s]) for s in self._slices]
        return dict(zip(self.features, values[:-1], strict=True)), values[-1], rows


class DriftCollector(Collector):
    """Exports the drift of the model being served (``current()`` returns its name and window)."""

    def __init__(self, current: Callable[[], tuple[str, DriftWindow | None] | None],
                 max_features: int = MAX_EXPORTED_FEATURES) -> None:
        self.current, self.max_features = current, max_features

    def describe(self) -> list:
        return []  # collected on every scrape: the families depend on the model served

    def collect(self) -> Iterator[GaugeMetricFamily]:
        served = self.current()
        if served is None or served[1] is None:
            return
        model, window = served
        feature_psi, prediction_psi, rows = window.psi()
        features = GaugeMetricFamily("mlops_feature_drift_psi", "Population stability index of each "
                                     f"input feature over the last rows scored against the training rows "
                                     f"(top {self.max_features} by PSI)", labels=("model", "feature"))
        prediction = GaugeMetricFamily("mlops_prediction_drift_psi", "Population stability index of the "
                                       "predictions over the last rows against those of the training rows",
                                       labels=("model",))
        if rows >= min(MIN_ROWS, window.size):
            top = sorted(feature_psi.items(), key=lambda kv: (-kv[1], kv[0]))[:self.max_features]
            for name, value in top:
                features.add_metric((model, name), value)
            prediction.add_metric((model,), prediction_psi)
        yield features
        yield prediction
        window_rows = GaugeMetricFamily("mlops_drift_window_rows", "Rows in the drift window (up to "
                                        "MLOPS_DRIFT_WINDOW)", labels=("model",))
        window_rows.add_metric((model,), rows)
        yield window_rows
        compared = GaugeMetricFamily("mlops_drift_features", "Input features compared with the training "
                                     f"profile (mlops_feature_drift_psi shows the top {self.max_features})",
                                     labels=("model",))
        compared.add_metric((model,), len(feature_psi))
        yield compared
