"""A real model service serving a real registered model, scraped by a real Prometheus, with traffic sent.

Registered as a plugin in tests/conftest.py, so the Serving page's AppTests and the serving panels'
query tests share one stack per session.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pandas as pd
import pytest
from mlflow import MlflowClient

from mlops_local import runs
from mlops_local.settings import Settings
from tests.services import Service, free_port, start_service, wait_for


def post(url: str, body: bytes, content_type: str = "application/json") -> tuple[int, dict]:
    """(status, JSON answer) of a POST; an HTTP error is an answer."""
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def split_body(frame: pd.DataFrame) -> bytes:
    return json.dumps({"dataframe_split": frame.to_dict(orient="split", index=False)}).encode()


@dataclass
class ServedStack:
    """The model service (``url``), its Prometheus (``prom``) and what was sent to it so far."""

    env: dict[str, str]
    settings: Settings
    service: Service
    prometheus: Service
    prom: object  # mlops_local.metrics.promapi.PrometheusClient
    registry: MlflowClient
    name: str
    alias: str
    version: str
    run_id: str
    rows: pd.DataFrame = field(repr=False)
    since: float = 0.0

    @property
    def url(self) -> str:
        return self.service.url

    def counted(self, status: str = "ok") -> float:
        """Requests of ``status`` Prometheus has scraped so far."""
        found = self.prom.query(f'sum(mlops_serving_requests_total{{status="{status}"}})')
        return found[0].value if found else 0.0

    def send(self, ok: int, bad: int = 0, rows: int = 3) -> None:
        """Send ``ok`` good and ``bad`` malformed requests and wait until Prometheus counted them all."""
        before_ok, before_bad = self.counted("ok"), self.counted("bad_request")
        for i in range(ok):
            batch = self.rows.iloc[i % 50: i % 50 + rows]
            status, answer = post(self.url + "/invocations", split_body(batch))
            assert status == 200 and len(answer["predictions"]) == rows, answer
        for _ in range(bad):
            assert post(self.url + "/invocations", b"not json")[0] == 400
        wait_for(lambda: self.counted("ok") == before_ok + ok and
                 self.counted("bad_request") == before_bad + bad, "Prometheus counting the requests sent")


@pytest.fixture(scope="session")
def served_stack(mlflow_env: dict[str, str],
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedStack]:
    """A registered random forest served by `serve model` and scraped every second by `serve prometheus`.

    The service polls the registry once an hour: after the start it takes a model only on POST /reload
    (which this fixture sends after registering), so a test can tell the Reload button's effect apart.
    """
    from mlops_local.metrics.promapi import PrometheusClient
    from mlops_local.ml.datasets import load_dataset
    from mlops_local.ml.training import train
    from mlops_local.ml.types import DatasetSpec, TrainRequest

    home = tmp_path_factory.mktemp("served-stack")
    alias = f"servui-{uuid.uuid4().hex[:8]}"
    env = dict(mlflow_env, MLOPS_HOME=str(home), MLOPS_SERVE_PORT=str(free_port()),
               MLOPS_PROMETHEUS_PORT=str(free_port()), MLOPS_METRICS_PORT=str(free_port()),
               MLOPS_SERVE_ALIAS=alias, MLOPS_SERVE_POLL_INTERVAL="3600", MLOPS_SCRAPE_INTERVAL="1")
    settings = Settings.from_env(env)
    service = start_service("model", env, home / "logs")
    prometheus = None
    try:
        prometheus = start_service("prometheus", env, home / "logs")
        registry = MlflowClient(mlflow_env["MLFLOW_TRACKING_URI"])
        request = TrainRequest(DatasetSpec("co2_canada"), "random_forest", params={"n_estimators": 10},
                               experiment="servui-tests", source="cli")
        result = train(request, settings)
        name = f"servui-{uuid.uuid4().hex[:6]}"
        version = str(runs.register_model(registry, result.run_id, name, alias).version)
        status, answer = post(service.url + "/reload", b"")
        assert status == 200 and answer["swapped"] and answer["version"] == version, answer
        prom = PrometheusClient.from_settings(settings)
        wait_for(lambda: [s.value for s in prom.query('up{job="mlops-serving"}')] == [1.0],
                 "Prometheus scraping the model service")
        stack = ServedStack(env, settings, service, prometheus, prom, registry, name, alias, version,
                            result.run_id, load_dataset(DatasetSpec("co2_canada")).X.head(60),
                            since=time.time() - 1)
        stack.send(ok=30, bad=3)
        yield stack
    finally:
        if prometheus is not None:
            prometheus.stop()
        service.stop()
