"""A small client for Prometheus' HTTP API (instant and range queries, targets, label values).

Every call is bounded by a timeout; a Prometheus that is down or answers garbage raises
ServiceUnavailable naming the URL, and a query Prometheus refuses raises UserError with its reason.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import requests

from mlops_local.errors import ServiceUnavailable, UserError
from mlops_local.settings import Settings

log = logging.getLogger(__name__)

TimeLike = datetime | float | int
StepLike = timedelta | float | int

PROMETHEUS_MAX_POINTS = 11_000  # Prometheus' limit of points per series in one range query


@dataclass(frozen=True)
class Sample:
    """One value of an instant query: the series' labels, its timestamp and value."""

    labels: dict[str, str]
    timestamp: float
    value: float


@dataclass(frozen=True)
class RangeSeries:
    """One series of a range query: labels and (timestamp, value) points in time order."""

    labels: dict[str, str]
    points: list[tuple[float, float]]


@dataclass(frozen=True)
class Target:
    """One active scrape target as Prometheus sees it."""

    job: str
    instance: str
    url: str
    health: str  # "up", "down" or "unknown"
    last_error: str
    last_scrape: str


def to_timestamp(value: TimeLike) -> float:
    """Epoch seconds for a datetime (naive means UTC) or a number."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.timestamp()
    return float(value)


def to_seconds(step: StepLike) -> float:
    """Seconds of a step given as timedelta or number."""
    return step.total_seconds() if isinstance(step, timedelta) else float(step)


def _number(text: str) -> float:
    # Prometheus sends values as strings ("NaN", "+Inf" included).
    return float(text)


class PrometheusClient:
    """Prometheus HTTP API at ``base_url``; each request gives up after ``timeout`` seconds."""

    def __init__(self, base_url: str, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._local = threading.local()  # one requests.Session per thread (sessions are not thread-safe)

    @classmethod
    def from_settings(cls, settings: Settings) -> PrometheusClient:
        """The client for the configured Prometheus, with the configured HTTP timeout."""
        return cls(settings.prometheus_url, settings.http_timeout)

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _down(self, detail: str) -> ServiceUnavailable:
        return ServiceUnavailable(
            f"Prometheus is not reachable at {self.base_url} ({detail}); start it with "
            "`mlops-local serve prometheus` (or `bin/start`) or check MLOPS_PROMETHEUS_PORT"
        )

    def _request(self, path: str, params: Mapping[str, object] | None = None, post: bool = False) -> object:
        url = f"{self.base_url}{path}"
        try:
            if post:
                resp = self._session().post(url, data=params, timeout=self.timeout)
            else:
                resp = self._session().get(url, params=params, timeout=self.timeout)
        except requests.Timeout:
            raise self._down(f"no answer within {self.timeout:g} s") from None
        except requests.RequestException as exc:
            raise self._down(type(exc).__name__) from None
        try:
            body = resp.json()
        except ValueError:
            raise self._down(f"HTTP {resp.status_code}, not a Prometheus API answer") from None
        if not isinstance(body, dict) or body.get("status") != "success":
            error = body.get("error", f"HTTP {resp.status_code}") if isinstance(body, dict) else resp.text
            error_type = body.get("errorType", "") if isinstance(body, dict) else ""
            if resp.status_code in (400, 422) or error_type in ("bad_data", "execution"):
                query = params.get("query") if params else None
                raise UserError(f"Prometheus refused the query {query!r}: {error}")
            raise self._down(f"HTTP {resp.status_code}: {error}")
        return body["data"]

    def ready(self) -> bool:
        """True when Prometheus answers /-/ready (never raises)."""
        try:
            resp = self._session().get(f"{self.base_url}/-/ready", timeout=self.timeout)
        except requests.RequestException:
            return False
        return resp.status_code == 200

    def query(self, expr: str, at: TimeLike | None = None) -> list[Sample]:
        """Instant query: one sample per series (scalars come back as one unlabeled sample)."""
        params: dict[str, object] = {"query": expr}
        if at is not None:
            params["time"] = to_timestamp(at)
        data = self._request("/api/v1/query", params, post=True)
        kind, result = data["resultType"], data["result"]
        if kind in ("scalar", "string"):
            return [Sample({}, float(result[0]), _number(result[1]))]
        if kind == "matrix":
            return [Sample(dict(item["metric"]), float(item["values"][-1][0]), _number(item["values"][-1][1]))
                    for item in result if item["values"]]
        return [Sample(dict(item["metric"]), float(item["value"][0]), _number(item["value"][1]))
                for item in result]

    def query_range(self, expr: str, start: TimeLike, end: TimeLike, step: StepLike) -> list[RangeSeries]:
        """Range query at start, start+step, ... <= end, in whole ms (one request; export.py chunks)."""
        seconds = to_seconds(step)
        if not seconds >= 0.001 or math.isinf(seconds):
            raise UserError(f"step must be at least 1 ms, got {step!r} s")
        # Prometheus works in whole milliseconds: send exactly the grid it will evaluate.
        params = {"query": expr, "start": f"{to_timestamp(start):.3f}", "end": f"{to_timestamp(end):.3f}",
                  "step": f"{seconds:.3f}"}
        data = self._request("/api/v1/query_range", params, post=True)
        return [RangeSeries(dict(item["metric"]), [(float(t), _number(v)) for t, v in item["values"]])
                for item in data["result"]]

    def targets(self) -> list[Target]:
        """The active scrape targets and their health."""
        data = self._request("/api/v1/targets", {"state": "active"})
        return [
            Target(job=t.get("labels", {}).get("job", t.get("scrapePool", "")),
                   instance=t.get("labels", {}).get("instance", ""), url=t.get("scrapeUrl", ""),
                   health=t.get("health", "unknown"), last_error=t.get("lastError", ""),
                   last_scrape=t.get("lastScrape", ""))
            for t in data.get("activeTargets", [])
        ]

    def alerts(self) -> list[dict]:
        """Prometheus' active alerts (pending and firing) as its API lists them."""
        data = self._request("/api/v1/alerts")
        return list(data.get("alerts", [])) if isinstance(data, dict) else []

    def label_values(self, label: str, match: str | None = None) -> list[str]:
        """Values of ``label`` (on series matching ``match`` when given), sorted."""
        params = {"match[]": match} if match else None
        return sorted(self._request(f"/api/v1/label/{label}/values", params))


def chunk_ranges(start: float, end: float, step: float,
                 max_points: int = PROMETHEUS_MAX_POINTS) -> Iterator[tuple[float, float]]:
    """(start, end) pairs on the grid start + k*step, each of at most ``max_points`` points.

    Computed in whole milliseconds, Prometheus' own resolution, so float rounding never shifts the
    grid between chunks.
    """
    if max_points < 1:
        raise ValueError("max_points must be at least 1")
    start_ms, end_ms, step_ms = round(start * 1000), round(end * 1000), max(1, round(step * 1000))
    total = (end_ms - start_ms) // step_ms + 1  # points start, start+step, ... <= end
    for first in range(0, total, max_points):
        last = min(first + max_points, total) - 1
        yield (start_ms + first * step_ms) / 1000, (start_ms + last * step_ms) / 1000


def query_range_chunked(client: PrometheusClient, expr: str, start: TimeLike, end: TimeLike, step: StepLike,
                        max_points: int = PROMETHEUS_MAX_POINTS) -> tuple[list[RangeSeries], int]:
    """A range query of any length, split into chunks Prometheus accepts; (series, requests sent)."""
    t0, t1, seconds = to_timestamp(start), to_timestamp(end), to_seconds(step)
    merged: dict[tuple[tuple[str, str], ...], dict[float, float]] = {}
    labels_of: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
    requests = 0
    for chunk_start, chunk_end in chunk_ranges(t0, t1, seconds, max_points):
        requests += 1
        for series in client.query_range(expr, chunk_start, chunk_end, seconds):
            key = tuple(sorted(series.labels.items()))
            labels_of[key] = series.labels
            merged.setdefault(key, {}).update(series.points)
    result = [RangeSeries(labels_of[key], sorted(points.items())) for key, points in merged.items()]
    return result, requests
