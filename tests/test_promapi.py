"""The Prometheus HTTP API client against a real Prometheus, and its errors when Prometheus is not there."""

from __future__ import annotations

import socket
import time
from datetime import UTC

import pytest

from mlops_local.errors import ServiceUnavailable, UserError
from mlops_local.metrics.promapi import PrometheusClient, to_timestamp
from tests.services import free_port

pytestmark = pytest.mark.integration


def test_ready_query_and_targets(prometheus_stack) -> None:
    client: PrometheusClient = prometheus_stack.client
    assert client.ready()
    (up,) = client.query('up{job="mlops-local"}')
    assert up.value == 1.0 and up.labels["instance"] == prometheus_stack.metrics_target
    (build,) = client.query("mlops_build_info")
    assert build.labels["job"] == "mlops-local" and "version" in build.labels
    (scalar,) = client.query("1 + 1")
    assert scalar.value == 2.0 and scalar.labels == {}
    targets = {t.job: t for t in client.targets()}
    assert targets["mlops-local"].health == "up"
    assert targets["mlops-local"].url == f"http://{prometheus_stack.metrics_target}/metrics"


def test_query_range_points_lie_on_the_requested_grid(prometheus_stack) -> None:
    client: PrometheusClient = prometheus_stack.client
    start, end = round(prometheus_stack.since, 3), prometheus_stack.until
    (series,) = client.query_range('up{job="mlops-local"}', start, end, 0.5)
    stamps = [t for t, _ in series.points]
    assert stamps == sorted(set(stamps)) and stamps[-1] <= end
    assert all(abs(((t - start) / 0.5) - round((t - start) / 0.5)) < 1e-6 for t in stamps)
    assert {v for _, v in series.points} == {1.0}


def test_label_values_with_and_without_a_matcher(prometheus_stack) -> None:
    client: PrometheusClient = prometheus_stack.client
    assert "mlops-local" in client.label_values("job")
    assert client.label_values("job", 'up{job="mlops-local"}') == ["mlops-local"]


def test_a_query_prometheus_refuses_is_a_user_error_with_its_reason(prometheus_stack) -> None:
    client: PrometheusClient = prometheus_stack.client
    with pytest.raises(UserError, match="parse error") as info:
        client.query("sum(")
    assert not isinstance(info.value, ServiceUnavailable)
    now = time.time()
    with pytest.raises(UserError, match="11,000 points"):
        client.query_range("up", now - 2 * 86400, now, 1)  # why export.py splits ranges
    with pytest.raises(UserError, match="step"):
        client.query_range("up", now - 60, now, 0)


def test_prometheus_down_is_service_unavailable_naming_the_url() -> None:
    client = PrometheusClient(f"http://127.0.0.1:{free_port()}", timeout=2)
    assert client.ready() is False
    with pytest.raises(ServiceUnavailable, match=r"not reachable at http://127\.0\.0\.1:\d+ .*serve prom"):
        client.query("up")
    with pytest.raises(ServiceUnavailable):
        client.targets()


def test_a_server_that_never_answers_times_out_instead_of_hanging() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # accepts connections into the backlog, never replies
        client = PrometheusClient(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=0.5)
        with pytest.raises(ServiceUnavailable, match="no answer within 0.5 s"):
            client.query("up")


def test_something_else_on_the_port_is_not_mistaken_for_prometheus(prometheus_stack) -> None:
    # The /metrics endpoint answers HTTP, but not Prometheus' API.
    client = PrometheusClient(f"http://{prometheus_stack.metrics_target}", timeout=2)
    with pytest.raises(ServiceUnavailable, match="not a Prometheus API answer"):
        client.query("up")


def test_timestamps_accept_datetimes_and_numbers() -> None:
    from datetime import datetime

    assert to_timestamp(datetime(2026, 11, 27, 5, 0, tzinfo=UTC)) == 1795755600.0
    assert to_timestamp(datetime(2026, 11, 27, 5, 0)) == 1795755600.0  # naive = UTC
    assert to_timestamp(12) == 12.0
