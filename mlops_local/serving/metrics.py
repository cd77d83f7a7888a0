"""The model service's own Prometheus metrics, in a private registry, labelled by the live versions only."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

STATUSES = ("ok", "bad_request", "error")
NO_MODEL = "none"  # model and version label of requests answered while no model is loaded
# 1 ms to 1 s: a small tree model answers one row in a few ms, a large batch in hundreds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
# Used when the training target's distribution is not known: symmetric decades around 0.
DEFAULT_PREDICTION_BUCKETS = (-1000.0, -100.0, -10.0, -1.0, 0.0, 1.0, 10.0, 100.0, 1000.0, 10000.0)
PREDICTION_QUANTILES = tuple(np.linspace(0.05, 0.95, 10))


def prediction_buckets(target: Sequence[float] | None) -> tuple[float, ...]:
    """Histogram bounds at the training target's 5 %..95 % quantiles; the defaults without a target."""
    if target is None or len(target) < 2:
        return DEFAULT_PREDICTION_BUCKETS
    values = np.asarray(target, dtype=float)
    values = values[np.isfinite(values)]
    if values.size < 2:
        return DEFAULT_PREDICTION_BUCKETS
    bounds = sorted({float(f"{q:.6g}") for q in np.quantile(values, PREDICTION_QUANTILES)})
    return tuple(bounds) if len(bounds) >= 2 else DEFAULT_PREDICTION_BUCKETS


class ServingMetrics:
    """Request, latency, row and prediction metrics of the model service, plus what is loaded."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        labels = ("model", "version")
        self.requests = Counter("mlops_serving_requests", "Scoring requests by outcome "
                                "(ok, bad_request, error)", (*labels, "status"), registry=self.registry)
        self.rows = Counter("mlops_serving_rows", "Rows scored", labels, registry=self.registry)
        self.duration = Histogram("mlops_serving_request_duration_seconds", "Time to answer a scoring "
                                  "request (read, parse, predict, encode)", labels,
                                  buckets=LATENCY_BUCKETS, registry=self.registry)
        self.info = Gauge("mlops_serving_model_info", "1 for the model version being served",
                          ("model", "alias", "version", "run_id"), registry=self.registry)
        self.loaded_at = Gauge("mlops_serving_model_loaded_timestamp_seconds",
                               "Unix time the served version was loaded", labels, registry=self.registry)
        self._predictions: Histogram | None = None
        self._buckets: tuple[float, ...] = ()
        self._live: list[tuple[str, str]] = []
        self._seen: set[tuple[str, str]] = set()  # (model, version) pairs that have series

    def prediction_histogram(self, buckets: Iterable[float]) -> Histogram:
        """The mlops_serving_prediction histogram; re-created (series reset) when the buckets change."""
        buckets = tuple(buckets)
        if self._predictions is None or buckets != self._buckets:
            if self._predictions is not None:
                self.registry.unregister(self._predictions)
            self._predictions = Histogram("mlops_serving_prediction", "Predicted values (buckets: the "
                                          "training target's quantiles when known)", ("model", "version"),
                                          buckets=buckets, registry=self.registry)
            self._buckets = buckets
        return self._predictions

    def served(self, model: str, alias: str, version: str, run_id: str, loaded_at: float,
               buckets: Iterable[float]) -> None:
        """A version went live: info and load time point at it; only it and the one before keep series."""
        self.prediction_histogram(buckets)
        self.info.clear()
        self.info.labels(model, alias, version, run_id).set(1)
        key = (model, version)
        self._live = [k for k in self._live if k != key][-1:] + [key]  # the previous may finish requests
        for old in sorted(self._seen - set(self._live) - {(NO_MODEL, NO_MODEL)}):
            self._retire(*old)
        self._seen.add(key)
        self.loaded_at.labels(model, version).set(loaded_at)

    def _retire(self, model: str, version: str) -> None:
        """Drop every series of a version that is no longer live (labels stay bounded)."""
        self._seen.discard((model, version))
        for metric in (self.rows, self.duration, self.loaded_at, self._predictions):
            if metric is not None:
                try:
                    metric.remove(model, version)
                except KeyError:
                    pass
        for status in STATUSES:
            try:
                self.requests.remove(model, version, status)
            except KeyError:
                pass

    def observe(self, model: str, version: str, status: str, seconds: float,
                predictions: np.ndarray | None = None) -> None:
        """One answered request: its outcome, its duration, and for ok requests its rows and predictions."""
        self._seen.add((model, version))
        self.requests.labels(model, version, status).inc()
        self.duration.labels(model, version).observe(seconds)
        if predictions is not None and self._predictions is not None:
            self.rows.labels(model, version).inc(len(predictions))
            hist = self._predictions.labels(model, version)
            values = np.asarray(predictions, dtype=float).ravel()
            for value in values[np.isfinite(values)]:
                hist.observe(float(value))

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)
