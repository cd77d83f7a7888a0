"""CSV export: range chunking under Prometheus' 11,000-point limit (checked on a real Prometheus),
atomic files, the real end-to-end export, and `mlops-local export`."""

from __future__ import annotations

import csv
import math
import re
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from mlops_local.errors import ServiceUnavailable, UserError
from mlops_local.metrics import export
from mlops_local.metrics.export import (
    COLUMNS,
    export_csv,
    iso_utc,
    parse_duration,
    write_atomic,
)
from mlops_local.metrics.promapi import PrometheusClient, chunk_ranges, query_range_chunked
from tests.services import MLOPS, free_port

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z$")
TWO_DAYS = 2 * 86400


class CountingClient(PrometheusClient):
    """The real client, counting the range queries it sends."""

    def __init__(self, base_url: str) -> None:
        super().__init__(base_url, timeout=10)
        self.calls: list[tuple[float, float]] = []

    def query_range(self, expr, start, end, step):
        self.calls.append((start, end))
        return super().query_range(expr, start, end, step)


# ---------------------------------------------------------------- pure parts

@pytest.mark.parametrize("text, seconds", [("30s", 30), ("15m", 900), ("1h", 3600), ("2d", 172800),
                                           ("1h30m", 5400), ("500ms", 0.5), (" 1W ", 604800)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "5", "5x", "h", "1h 30m", "-1h", "0s"])
def test_parse_duration_refuses_with_the_allowed_forms(text: str) -> None:
    with pytest.raises(UserError, match="--since"):
        parse_duration(text, "--since")


def test_iso_times_are_utc_with_z() -> None:
    assert iso_utc(1795755600) == "2026-11-27T05:00:00Z"
    assert iso_utc(1795755600.25) == "2026-11-27T05:00:00.250Z"


def test_two_days_at_one_second_is_split_on_one_grid_without_overlap_or_gap() -> None:
    start = 1_795_000_000.0
    chunks = list(chunk_ranges(start, start + TWO_DAYS, 1.0))
    assert len(chunks) == math.ceil((TWO_DAYS + 1) / 11_000) == 16
    assert chunks[0][0] == start and chunks[-1][1] == start + TWO_DAYS
    for (_, end), (nxt, _) in zip(chunks, chunks[1:], strict=False):
        assert nxt == end + 1.0
    assert all((b - a) / 1.0 + 1 <= 11_000 for a, b in chunks)
    assert sum(round(b - a) + 1 for a, b in chunks) == TWO_DAYS + 1
    assert list(chunk_ranges(start, start + 10, 1.0, max_points=11)) == [(start, start + 10)]
    # Fractional steps stay on the millisecond grid (no float drift across chunks).
    odd = list(chunk_ranges(0.0, 100.0, 0.3, max_points=7))
    assert all(round(a * 1000) % 300 == 0 for a, _ in odd) and odd[-1][1] == 99.9


# ---------------------------------------------------------------- atomic write

def test_failure_mid_write_leaves_no_file_and_keeps_an_earlier_one(tmp_path: Path) -> None:
    frame = pd.DataFrame({"time": ["t"] * 1000, "value": range(1000)})
    target = tmp_path / "exports" / "out.csv"

    def failing(df: pd.DataFrame, fh) -> None:
        df.iloc[:500].to_csv(fh, index=False)
        raise OSError("disk full (injected)")

    with pytest.raises(OSError, match="injected"):
        write_atomic(target, frame, writer=failing)
    assert list(target.parent.iterdir()) == []
    target.write_text("previous export\n")
    with pytest.raises(OSError, match="injected"):
        write_atomic(target, frame, writer=failing)
    assert target.read_text() == "previous export\n"
    assert [p.name for p in target.parent.iterdir()] == ["out.csv"]
    write_atomic(target, frame)
    assert len(target.read_text().splitlines()) == 1001


# ---------------------------------------------------------------- against a real Prometheus

@pytest.mark.integration
def test_two_day_range_at_one_second_is_chunked_and_lossless(prometheus_stack) -> None:
    client = CountingClient(prometheus_stack.client.base_url)
    end = prometheus_stack.until
    start = end - TWO_DAYS
    with pytest.raises(UserError, match="11,000"):
        client.query_range("mlops_model_r2", start, end, 1)  # the limit is real
    client.calls.clear()
    series, sent = query_range_chunked(client, "mlops_model_r2", start, end, 1)
    assert sent == len(client.calls) == 16
    assert all(round(b - a) + 1 <= 11_000 for a, b in client.calls)
    direct = {tuple(sorted(s.labels.items())): s.points
              for s in client.query_range("mlops_model_r2", end - 600, end, 1)}
    assert series and len(series) == len(direct)
    for s in series:
        stamps = [t for t, _ in s.points]
        assert stamps == sorted(set(stamps)), "a timestamp is duplicated or out of order"
        recent = [(t, v) for t, v in s.points if t >= end - 600]
        assert recent == direct[tuple(sorted(s.labels.items()))]


@pytest.mark.integration
def test_chunk_edges_inside_the_data_neither_duplicate_nor_lose_points(prometheus_stack) -> None:
    client = CountingClient(prometheus_stack.client.base_url)
    start, end = prometheus_stack.since, prometheus_stack.until
    whole = {tuple(sorted(s.labels.items())): s.points
             for s in client.query_range("mlops_model_rmse", start, end, 0.5)}
    client.calls.clear()
    chunked, sent = query_range_chunked(client, "mlops_model_rmse", start, end, 0.5, max_points=3)
    assert sent == len(client.calls) == math.ceil((math.floor((end - start) / 0.5) + 1) / 3) > 3
    assert {tuple(sorted(s.labels.items())): s.points for s in chunked} == whole
    assert all(len(points) >= 4 for points in whole.values())  # edges really fell inside the data


@pytest.mark.integration
def test_export_writes_a_readable_csv_with_the_training_values(prometheus_stack) -> None:
    settings = prometheus_stack.settings
    result = export_csv(prometheus_stack.client, settings, prometheus_stack.since, prometheus_stack.until, 1)
    assert result.path.parent == settings.exports_dir and result.path.name.startswith("mlops-metrics-")
    assert [p.name for p in settings.exports_dir.iterdir()] == [result.path.name]  # no temp file left
    with result.path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == COLUMNS and len(rows) == result.rows == len(result.frame)
    assert all(ISO.match(r["time"]) for r in rows)
    assert {r["metric"] for r in rows} == {"mlops_model_r2", "mlops_model_rmse", "mlops_model_mae",
                                          "mlops_best_r2"}
    keys = [(r["time"], r["metric"], r["experiment"], r["dataset"], r["model"]) for r in rows]
    assert len(keys) == len(set(keys)), "one row per timestamp and series"
    for training in prometheus_stack.trainings:
        mine = [r for r in rows if r["metric"] == "mlops_model_r2" and r["model"] == training.model
                and r["dataset"] == training.dataset and r["experiment"] == training.experiment]
        assert mine and float(mine[-1]["value"]) == pytest.approx(training.metrics["r2"], abs=1e-12)
    best = [r for r in rows if r["metric"] == "mlops_best_r2"]
    assert best and all(r["model"] == "" for r in best)
    assert result.frame["time"].tolist() == [r["time"] for r in rows]


@pytest.mark.integration
def test_export_with_an_injected_write_failure_leaves_nothing(prometheus_stack, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    settings = prometheus_stack.settings.replace(home=tmp_path / "home")

    def failing(frame: pd.DataFrame, fh) -> None:
        fh.write("time,metric\n")
        raise OSError("injected")

    monkeypatch.setattr(export, "_write_frame", failing)
    with pytest.raises(OSError, match="injected"):
        export_csv(prometheus_stack.client, settings, prometheus_stack.since, prometheus_stack.until, 1,
                   out=Path("partial.csv"))
    assert list(settings.exports_dir.iterdir()) == []


@pytest.mark.integration
def test_export_errors_name_the_problem(prometheus_stack, tmp_path: Path) -> None:
    settings = prometheus_stack.settings.replace(home=tmp_path / "home")
    client, now = prometheus_stack.client, time.time()
    with pytest.raises(UserError, match="no mlops metrics between 2001-09-09T01:46:40Z"):
        export_csv(client, settings, 1_000_000_000, 1_000_003_600, 60)
    with pytest.raises(UserError, match="empty"):
        export_csv(client, settings, now, now - 60, 1)
    with pytest.raises(UserError, match="step of at least"):
        export_csv(client, settings, now - 30 * 86400, now, 1)
    down = PrometheusClient(f"http://127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(ServiceUnavailable, match="not reachable"):
        export_csv(down, settings, now - 60, now, 1)
    assert not settings.exports_dir.exists() or not any(settings.exports_dir.iterdir())


@pytest.mark.integration
def test_cli_export_writes_the_file_and_reports_errors_in_one_line(prometheus_stack, tmp_path: Path) -> None:
    env = dict(prometheus_stack.env)
    out = subprocess.run([*MLOPS, "export", "--since", "10m", "--step", "1s", "--out", "r2.csv"],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"to {tmp_path / 'r2.csv'}" in out.stdout and "rows" in out.stdout
    frame = pd.read_csv(tmp_path / "r2.csv")
    assert tuple(frame.columns) == COLUMNS and len(frame) > 0
    bad = subprocess.run([*MLOPS, "export", "--since", "5x"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "--since '5x' is not a duration" in bad.stderr
    assert "Traceback" not in bad.stderr
    env["MLOPS_PROMETHEUS_PORT"] = str(free_port())
    down = subprocess.run([*MLOPS, "export"], env=env, capture_output=True, text=True, timeout=60)
    assert down.returncode == 1 and "Prometheus is not reachable" in down.stderr
    assert len(down.stderr.strip().splitlines()) == 1
