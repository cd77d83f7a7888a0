"""CSV export of the mlops metrics from Prometheus: chunked range queries, one row per point, atomic file.

Prometheus refuses a range query of more than 11,000 points per series, so a long range at a fine step
is split into chunks on the same time grid (start + k * step): consecutive chunks neither overlap nor
leave a gap, and the merged result is what one unlimited query would return.
"""

from __future__ import annotations

import logging
import math
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import pandas as pd

from mlops_local.errors import ServiceUnavailable, UserError
from mlops_local.metrics.panels import JOB
from mlops_local.metrics.promapi import (
    PROMETHEUS_MAX_POINTS,
    PrometheusClient,
    RangeSeries,
    StepLike,
    TimeLike,
    query_range_chunked,
    to_seconds,
    to_timestamp,
)
from mlops_local.settings import Settings

log = logging.getLogger(__name__)

EXPORT_METRICS: tuple[str, ...] = ("mlops_model_r2", "mlops_model_rmse", "mlops_model_mae", "mlops_best_r2")
COLUMNS: tuple[str, ...] = ("time", "metric", "experiment", "dataset", "model", "value")
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")  # cells a spreadsheet would evaluate
MAX_EXPORT_POINTS = 1_000_000  # per series; beyond that the file would be unusable: ask for a larger step

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True)
class ExportResult:
    """A written export: where, how many rows, the rows themselves (for a download button)."""

    path: Path
    rows: int
    frame: pd.DataFrame
    requests: int  # range queries sent (chunks x metrics)


def parse_duration(text: str, name: str = "duration") -> timedelta:
    """'30s', '15m', '1h', '2d', '1h30m' -> timedelta; UserError naming ``name`` otherwise."""
    cleaned = text.strip().lower()
    parts = _DURATION_RE.findall(cleaned)
    if not cleaned or "".join(n + u for n, u in parts) != cleaned:
        raise UserError(
            f"{name} {text!r} is not a duration: use a number and a unit (ms, s, m, h, d, w), "
            "e.g. 30s, 15m, 1h, 2d"
        )
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    if seconds <= 0:
        raise UserError(f"{name} {text!r} must be longer than 0 s")
    return timedelta(seconds=seconds)


def iso_utc(timestamp: float) -> str:
    """ISO 8601 in UTC with a Z, e.g. 2026-11-27T05:00:00Z (milliseconds only when non-zero)."""
    moment = datetime.fromtimestamp(round(timestamp, 3), tz=UTC)
    text = moment.isoformat(timespec="milliseconds" if moment.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def neutralise_cell(text: str) -> str:
    """``text`` made inert for spreadsheets: a leading =, +, -, @, tab or CR gets a ' in front (OWASP).

    Spreadsheets read such a cell as a formula; label values come from run and experiment names that
    anyone with access to MLflow can choose.
    """
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def series_frame(metric: str, series: Sequence[RangeSeries]) -> pd.DataFrame:
    """Long format: one row per (timestamp, series) with the export's columns (time as epoch s)."""
    rows = [
        (t, *(neutralise_cell(text) for text in (
            series_.labels.get("__name__", metric), series_.labels.get("experiment", ""),
            series_.labels.get("dataset", ""), series_.labels.get("model", ""))), v)
        for series_ in series for t, v in series_.points
    ]
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _write_frame(frame: pd.DataFrame, fh: IO[str]) -> None:
    # RFC 4180's CRLF: the csv writer quotes a cell holding any line-terminator character, so a label
    # value with a lone CR cannot split a row in two (with "\n" alone, a CR went out unquoted).
    frame.to_csv(fh, index=False, lineterminator="\r\n")


def write_atomic(path: Path, frame: pd.DataFrame,
                 writer: Callable[[pd.DataFrame, IO[str]], None] | None = None) -> None:
    """Write via a temporary file in the same folder then rename: readers see all or nothing."""
    writer = writer or _write_frame
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            writer(frame, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def default_path(settings: Settings, start: float, end: float) -> Path:
    """exports/mlops-metrics-<start>-<end>.csv (UTC, to the second)."""
    def stamp(ts: float) -> str:
        return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y%m%dT%H%M%SZ")
    return settings.exports_dir / f"mlops-metrics-{stamp(start)}-{stamp(end)}.csv"


def _no_data_message(client: PrometheusClient, start: float, end: float) -> str:
    message = (f"Prometheus at {client.base_url} has no mlops metrics between {iso_utc(start)} and "
               f"{iso_utc(end)} yet: train a model in the UI (or with `mlops-local train`) "
               "and wait for a scrape")
    try:
        targets = [t for t in client.targets() if t.job == JOB]
    except ServiceUnavailable:
        return message
    if not targets:
        return message + f"; Prometheus has no scrape job {JOB!r} (check its prometheus.yml)"
    down = [t for t in targets if t.health != "up"]
    if down:
        first = down[0]
        reason = first.last_error or "no scrape yet"
        return message + f"; the scrape of {first.url} is {first.health}: {reason}"
    return message


def export_csv(
    client: PrometheusClient,
    settings: Settings,
    start: TimeLike,
    end: TimeLike,
    step: StepLike,
    out: Path | None = None,
    metrics: Sequence[str] = EXPORT_METRICS,
    max_points: int = PROMETHEUS_MAX_POINTS,
) -> ExportResult:
    """Query ``metrics`` over [start, end] every ``step`` and write one CSV into settings.exports_dir.

    ``out`` may be absolute or relative to the exports folder; the default name carries the range.
    Raises ServiceUnavailable when Prometheus is down and UserError for a bad range or no data.
    """
    t0, t1, seconds = to_timestamp(start), to_timestamp(end), to_seconds(step)
    if not seconds > 0:
        raise UserError(f"step must be longer than 0 s, got {seconds:g} s")
    if t1 <= t0:
        raise UserError(f"the export range is empty: end {iso_utc(t1)} is not after start {iso_utc(t0)}")
    points = math.floor((t1 - t0) / seconds) + 1
    if points > MAX_EXPORT_POINTS:
        raise UserError(
            f"{points:,} points per series is too many for one export (at most {MAX_EXPORT_POINTS:,}): "
            f"use a step of at least {math.ceil((t1 - t0) / MAX_EXPORT_POINTS)} s or a shorter range"
        )
    frames, requests = [], 0
    for metric in metrics:
        series, sent = query_range_chunked(client, metric, t0, t1, seconds, max_points)
        requests += sent
        frames.append(series_frame(metric, series))
    frame = pd.concat(frames, ignore_index=True)
    if frame.empty:
        raise UserError(_no_data_message(client, t0, t1))
    frame = frame.sort_values(["time", "metric", "experiment", "dataset", "model"], kind="stable")
    frame["time"] = [iso_utc(t) for t in frame["time"]]
    frame = frame.reset_index(drop=True)
    path = out if out is not None else default_path(settings, t0, t1)
    if not path.is_absolute():
        path = settings.exports_dir / path
    write_atomic(path, frame)
    log.info("exported %d rows of %s to %s (%d range queries)", len(frame), ", ".join(metrics), path,
             requests)
    return ExportResult(path=path, rows=len(frame), frame=frame, requests=requests)
