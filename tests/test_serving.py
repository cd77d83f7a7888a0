"""`mlops-local serve model` against a real MLflow server: no model yet, takeover, MLflow's protocol,
bad requests, refused models, hot reload under load, and its metrics scraped by the real Prometheus."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import mlflow.artifacts
import pandas as pd
import pytest
from mlflow import MlflowClient

from mlops_local import runs
from mlops_local.metrics.promapi import PrometheusClient
from mlops_local.ml.datasets import load_dataset
from mlops_local.ml.training import train
from mlops_local.ml.types import DatasetSpec, TrainRequest
from mlops_local.serving.metrics import DEFAULT_PREDICTION_BUCKETS, ServingMetrics, prediction_buckets
from mlops_local.settings import Settings
from tests.services import Service, free_port, start_service, wait_for, wait_until_responds


@dataclass
class Served:
    """The module's model service, its registry and what the first health check said."""

    service: Service
    env: dict[str, str]
    client: MlflowClient
    name: str
    alias: str
    versions: list[str]
    run_ids: list[str]
    first_health: tuple[int, dict]
    first_invocation: tuple[int, dict]
    rows: pd.DataFrame = field(repr=False)


def call(url: str, body: bytes | None = None, content_type: str = "application/json",
         timeout: float = 30.0) -> tuple[int, dict]:
    """(status, JSON body) of a GET (no body) or POST; HTTP errors are answers, not exceptions."""
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET",
                                     headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, {"raw": raw.decode(errors="replace")}


def split_body(frame: pd.DataFrame) -> bytes:
    return json.dumps({"dataframe_split": frame.to_dict(orient="split", index=False)}).encode()


def train_version(env: dict[str, str], client: MlflowClient, name: str, alias: str | None,
                  trees: int) -> tuple[str, str]:
    """Train a real random forest on co2_canada and register it as a new version of ``name`` at ``alias``."""
    request = TrainRequest(DatasetSpec("co2_canada"), "random_forest", params={"n_estimators": trees},
                           experiment="serving-tests", source="cli")
    result = train(request, Settings.from_env(env))
    version = runs.register_model(client, result.run_id, name, alias)
    return str(version.version), result.run_id


def version_served(served_url: str) -> str | None:
    status, body = call(served_url + "/version")
    return body.get("version") if status == 200 else None


@pytest.fixture(scope="module")
def served(mlflow_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The service started before any model has the module's alias, then two versions registered."""
    home = tmp_path_factory.mktemp("serve-home")
    alias = f"serve-{uuid.uuid4().hex[:8]}"  # no other test's model carries it: default-name lookup
    env = dict(mlflow_env, MLOPS_SERVE_PORT=str(free_port()), MLOPS_SERVE_ALIAS=alias,
               MLOPS_SERVE_POLL_INTERVAL="0.5", MLOPS_HOME=str(home))
    service = start_service("model", env, home / "logs")
    client = MlflowClient(mlflow_env["MLFLOW_TRACKING_URI"])
    try:
        first_health = call(service.url + "/health")
        rows = load_dataset(DatasetSpec("co2_canada")).X.head(20)
        first_invocation = call(service.url + "/invocations", split_body(rows.head(2)))
        name = f"serve-model-{uuid.uuid4().hex[:6]}"
        v1, run1 = train_version(env, client, name, alias, trees=10)
        wait_for(lambda: version_served(service.url) == v1, "the service taking version 1")
        yield Served(service, env, client, name, alias, [v1], [run1], first_health, first_invocation, rows)
    finally:
        service.stop()


@pytest.mark.integration
def test_no_model_yet_then_takes_the_registered_model(served: Served) -> None:
    status, body = served.first_health
    assert status == 503 and body["status"] == "no model yet"
    status, body = served.first_invocation
    assert status == 503 and "no model yet" in body["message"]
    status, body = call(served.service.url + "/health")
    assert status == 200 and body["model"] == served.name
    status, body = call(served.service.url + "/version")
    assert status == 200
    assert (body["name"], body["alias"], body["version"], body["run_id"]) == \
        (served.name, served.alias, served.versions[0], served.run_ids[0])
    assert body["prediction_buckets"] == "training target quantiles (co2_canada)"
    assert "serving " in served.service.log() and served.name in served.service.log()


def records_body(row: pd.DataFrame, times: int) -> bytes:
    """``dataframe_records`` with one row repeated (a large body, built without pandas)."""
    record = json.dumps(row.to_dict(orient="records")[0]).encode()
    return b'{"dataframe_records": [' + b",".join([record] * times) + b"]}"


def csv_body(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


REQUESTS = [  # (label, body maker, content type): the JSON formats of MLflow's scoring protocol
    ("dataframe_split", split_body, "application/json"),
    ("dataframe_records", lambda f: json.dumps({"dataframe_records": f.to_dict(orient="records")}).encode(),
     "application/json"),
    ("instances", lambda f: json.dumps({"instances": f.to_dict(orient="records")}).encode(),
     "application/json"),
]


@pytest.mark.integration
def test_same_answers_as_mlflow_models_serve(served: Served, tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "mlflow-models-serve.log"
    env = dict(served.env, MLFLOW_TRACKING_URI=served.env["MLFLOW_TRACKING_URI"])
    # mlflow models serve runs `uvicorn` from PATH: this interpreter's, also when pytest runs without bin/test
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    command = [sys.executable, "-m", "mlflow", "models", "serve", "--env-manager", "local",
               "-m", f"models:/{served.name}@{served.alias}", "-h", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(command, env=env, stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    reference = Service("mlflow-models-serve", proc, f"http://127.0.0.1:{port}", log_path)
    try:
        wait_until_responds(reference.url + "/health", timeout=120, proc=proc)
        for label, make, content_type in REQUESTS:
            for frame in (served.rows.head(1), served.rows):
                ours = call(served.service.url + "/invocations", make(frame), content_type)
                theirs = call(reference.url + "/invocations", make(frame), content_type)
                assert theirs[0] == 200, (label, theirs)
                assert ours == theirs, label
                assert len(ours[1]["predictions"]) == len(frame)
        # MLflow's CSV parser fails on the `Any` columns of mlops-local's signatures (400 for any CSV);
        # ours reads it and answers what both answer for the same rows as JSON.
        for frame in (served.rows.head(1), served.rows):
            assert call(reference.url + "/invocations", csv_body(frame), "text/csv")[0] == 400
            ours = call(served.service.url + "/invocations", csv_body(frame), "text/csv")
            assert ours == call(reference.url + "/invocations", split_body(frame)), "csv"
    finally:
        reference.stop()


@pytest.mark.integration
def test_bad_requests_get_a_message_and_the_service_keeps_serving(served: Served) -> None:
    url = served.service.url + "/invocations"
    good = served.rows.head(3)
    cases = [
        ("missing column", split_body(good.drop(columns=["Engine Size(L)"])), "application/json", 400,
         "Engine Size(L)"),
        ("wrong type", split_body(good.assign(**{"Cylinders": "many"})), "application/json", 400,
         "'Cylinders' must hold numbers"),
        ("empty body", b"", "application/json", 400, "empty request body"),
        ("not JSON", b"{rows: 1", "application/json", 400, "not valid JSON"),
        ("JSON list", b"[1, 2]", "application/json", 400, "must be an object"),
        ("no known key", b'{"rows": []}', "application/json", 400, "exactly one of"),
        ("no rows", json.dumps({"dataframe_records": []}).encode(), "application/json", 400, "no rows"),
        ("bad CSV", b"\x00\xff\xfe", "text/csv", 400, "UTF-8"),
        ("unknown type", b"x", "application/xml", 415, "not supported"),
        ("over 10 MB", records_body(good.head(1), 40_000), "application/json", 413,
         "MLOPS_SERVE_MAX_BODY_MB"),
    ]
    for label, body, content_type, status, word in cases:
        got_status, got = call(url, body, content_type)
        assert (got_status, label) == (status, label), got
        assert word in got["message"], (label, got)
        assert "Traceback" not in got["message"] and "\n" not in got["message"], label
        ok_status, ok = call(url, split_body(good))
        assert ok_status == 200 and len(ok["predictions"]) == 3, (label, ok)


@pytest.mark.integration
def test_refused_model_leaves_the_previous_one_serving(served: Served, tmp_path: Path) -> None:
    """A version whose run recorded no checksum (anyone can log one through the REST API) is refused."""
    client, name, alias = served.client, served.name, served.alias
    before = version_served(served.service.url)
    model_dir = Path(mlflow.artifacts.download_artifacts(
        artifact_uri=client.get_model_version_download_uri(name, before), dst_path=str(tmp_path / "dl"),
        tracking_uri=client.tracking_uri))
    experiment = client.get_experiment_by_name("serving-tests").experiment_id
    run_id = client.create_run(experiment, run_name="unverifiable").info.run_id
    client.log_artifacts(run_id, str(model_dir), "model")
    client.set_terminated(run_id, "FINISHED")
    artifact_uri = client.get_run(run_id).info.artifact_uri
    version = client.create_model_version(name, f"{artifact_uri}/model", run_id=run_id).version
    client.set_registered_model_alias(name, alias, version)
    try:
        wait_for(lambda: "model refused" in served.service.log(), "the refusal in the log")
        lines = [line for line in served.service.log().splitlines() if "model refused" in line]
        assert len(lines) == 1 and f"version {version}" in lines[0]
        assert "no recorded model checksum" in lines[0]
        assert version_served(served.service.url) == before
        status, body = call(served.service.url + "/invocations", split_body(served.rows.head(2)))
        assert status == 200 and len(body["predictions"]) == 2
    finally:
        client.set_registered_model_alias(name, alias, before)
        shutil.rmtree(tmp_path / "dl", ignore_errors=True)


@pytest.mark.integration
def test_alias_move_under_load_fails_no_request(served: Served) -> None:
    client, name, alias, url = served.client, served.name, served.alias, served.service.url
    v1 = version_served(url)
    v2, run2 = train_version(served.env, client, name, None, trees=12)  # registered, alias not moved yet
    served.versions.append(v2)
    statuses: list[int] = []
    stop = threading.Event()
    body = split_body(served.rows.head(4))

    def load() -> None:
        deadline = time.monotonic() + 120  # bounded even if the test body fails
        while not stop.is_set() and time.monotonic() < deadline and len(statuses) < 20_000:
            status, answer = call(url + "/invocations", body)
            statuses.append(status if status != 200 or len(answer["predictions"]) == 4 else -1)

    clients = [threading.Thread(target=load) for _ in range(3)]
    for thread in clients:
        thread.start()
    try:
        wait_for(lambda: len(statuses) >= 30, "requests before the move")
        client.set_registered_model_alias(name, alias, v2)
        wait_for(lambda: version_served(url) == v2, "the swap to version 2")
        at_swap = len(statuses)
        client.set_registered_model_alias(name, alias, v1)
        wait_for(lambda: version_served(url) == v1, "the swap back to version 1")
        wait_for(lambda: len(statuses) >= at_swap + 30, "requests after the swaps")
    finally:
        stop.set()
        for thread in clients:
            thread.join()
    assert statuses and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    metrics = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    for version in (v1, v2):  # both versions really answered requests
        assert f'mlops_serving_requests_total{{model="{name}",status="ok",version="{version}"}}' in metrics
    assert f'run_id="{served.run_ids[0]}"' in metrics and f'run_id="{run2}"' not in metrics  # info: live only


@pytest.mark.integration
def test_metrics_through_the_real_prometheus(served: Served, tmp_path: Path) -> None:
    env = dict(served.env, MLOPS_HOME=str(tmp_path / "home"), MLOPS_PROMETHEUS_PORT=str(free_port()),
               MLOPS_SCRAPE_INTERVAL="1")
    prometheus = start_service("prometheus", env, tmp_path / "logs")
    client = PrometheusClient.from_settings(Settings.from_env(env))
    name, url = served.name, served.service.url
    version = version_served(url)

    def total(status: str) -> float:
        found = client.query(f'sum(mlops_serving_requests_total{{model="{name}",version="{version}",'
                             f'status="{status}"}})')
        return found[0].value if found else 0.0

    try:
        wait_for(lambda: client.query('up{job="mlops-serving"}') and
                 client.query('up{job="mlops-serving"}')[0].value == 1, "the serving target up")
        ok0, bad0 = total("ok"), total("bad_request")
        rows0 = client.query(f'sum(mlops_serving_rows_total{{model="{name}",version="{version}"}})')
        rows0 = rows0[0].value if rows0 else 0.0
        sent_ok, sent_bad = 25, 7
        for _ in range(sent_ok):
            assert call(url + "/invocations", split_body(served.rows.head(2)))[0] == 200
        for _ in range(sent_bad):
            assert call(url + "/invocations", b"nope")[0] == 400
        wait_for(lambda: total("ok") == ok0 + sent_ok and total("bad_request") == bad0 + sent_bad,
                 "the requests counted in Prometheus")
        rows = client.query(f'sum(mlops_serving_rows_total{{model="{name}",version="{version}"}})')[0].value
        assert rows == rows0 + 2 * sent_ok
        selector = f'model="{name}",version="{version}"'
        latency = "mlops_serving_request_duration_seconds"
        count = client.query(f"sum({latency}_count{{{selector}}})")[0].value
        inf = client.query(f'sum({latency}_bucket{{{selector},le="+Inf"}})')[0].value
        one_s = client.query(f'sum({latency}_bucket{{{selector},le="1.0"}})')[0].value
        assert count == inf >= sent_ok + sent_bad and 0 < one_s <= inf
        predictions = client.query(f'sum(mlops_serving_prediction_count{{{selector}}})')[0].value
        assert predictions == rows
        info = client.query(f'mlops_serving_model_info{{model="{name}"}}')
        assert [(s.labels["version"], s.labels["alias"]) for s in info] == [(version, served.alias)]
        assert client.query(f"mlops_serving_model_loaded_timestamp_seconds{{{selector}}}")[0].value > 0
    finally:
        prometheus.stop()


def test_labels_stay_bounded_to_the_live_versions() -> None:
    metrics = ServingMetrics()
    for version in ("1", "2", "3"):
        metrics.served("m", "champion", version, f"run{version}", 1.0, DEFAULT_PREDICTION_BUCKETS)
        metrics.observe("m", version, "ok", 0.002, predictions=None)
    text = metrics.exposition().decode()
    assert 'version="1"' not in text  # retired: neither live nor the one before
    assert 'version="2"' in text and 'version="3"' in text
    assert text.count("mlops_serving_model_info{") == 1


def test_prediction_buckets_follow_the_target_quantiles() -> None:
    target = list(range(100, 301))
    buckets = prediction_buckets(target)
    assert buckets[0] == pytest.approx(110) and buckets[-1] == pytest.approx(290) and len(buckets) == 10
    assert prediction_buckets(None) == DEFAULT_PREDICTION_BUCKETS
    assert prediction_buckets([5.0, 5.0, 5.0]) == DEFAULT_PREDICTION_BUCKETS


@pytest.mark.integration
def test_the_procfile_stack_runs_the_model_service(honcho_stack: dict[str, str]) -> None:
    """Under honcho the service is up, serves the stack's champion if it has one (the session's stack is
    shared: another test may have registered one) or says "no model yet", and Prometheus scrapes it."""
    from mlops_local.serving.holder import resolve

    registry = MlflowClient(honcho_stack["MLFLOW_TRACKING_URI"])
    url = f"http://127.0.0.1:{honcho_stack['MLOPS_SERVE_PORT']}/health"
    champion = resolve(registry, None, "champion")
    if champion is None:
        status, body = call(url)
        assert status == 503 and body["status"] == "no model yet" and body["alias"] == "champion"
    else:  # the service takes it within a poll interval
        wait_for(lambda: call(url) == (200, {"status": "ok", "model": champion[0], "version": champion[1]}),
                 f"the model service serving {champion}")
    client = PrometheusClient.from_settings(Settings.from_env(honcho_stack))
    wait_for(lambda: [s.value for s in client.query('up{job="mlops-serving"}')] == [1.0],
             "Prometheus scraping the model service")
    # health checks are not requests (the session's stack is shared: count on the service itself,
    # before and after, rather than expect no traffic at all)
    metrics_url = f"http://127.0.0.1:{honcho_stack['MLOPS_SERVE_PORT']}/metrics"

    def requests_counted() -> float:
        with urllib.request.urlopen(metrics_url, timeout=10) as resp:
            text = resp.read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("mlops_serving_requests_total{"))

    before = requests_counted()
    for _ in range(5):
        call(url)
    assert requests_counted() == before


class AliasOnlyRegistry:
    """The one registry call the holder makes for a named model: where the alias points now."""

    def __init__(self) -> None:
        self.version = "1"

    def get_model_version_by_alias(self, name: str, alias: str) -> object:
        return type("Version", (), {"version": self.version})()


def test_a_refused_version_is_retried_only_after_the_alias_moved_away_and_back() -> None:
    from mlops_local.ml.safeload import ModelRefused
    from mlops_local.serving.holder import LoadedModel, ModelHolder

    registry, calls = AliasOnlyRegistry(), []

    def loader(_client: object, name: str, alias: str, version: str) -> LoadedModel:
        calls.append(version)
        if version == "2":
            raise ModelRefused("its run has no recorded model checksum")
        return LoadedModel(name, alias, version, "run", 1.0, object(), None, DEFAULT_PREDICTION_BUCKETS,
                           "defaults")

    holder = ModelHolder(registry, ServingMetrics(), "m", "champion", 1.0, loader=loader)
    assert holder.check() and holder.current.version == "1"
    registry.version = "2"
    assert not holder.check() and not holder.check()  # refused once, not retried on every poll
    assert calls == ["1", "2"] and holder.current.version == "1"
    registry.version = "1"
    assert not holder.check()  # already served: nothing loaded
    registry.version = "2"
    assert not holder.check()  # the alias moved again: tried again (perhaps the run was fixed)
    assert calls == ["1", "2", "2"] and holder.current.version == "1"


def test_a_registry_not_up_yet_is_waiting_not_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """Under honcho the model service often starts before MLflow: that is logged as waiting, once."""
    import logging

    from mlops_local.serving.holder import ModelHolder

    caplog.set_level(logging.INFO, logger="mlops_local.serving.holder")
    client = MlflowClient(tracking_uri=f"http://127.0.0.1:{free_port()}")  # nothing listens there
    holder = ModelHolder(client, ServingMetrics(), None, "champion", poll_interval=1.0)
    assert holder.check() is False and holder.check() is False and holder.current is None
    records = [r for r in caplog.records if r.name == "mlops_local.serving.holder"]
    assert [(r.levelname, r.getMessage().split(" at ")[0]) for r in records] == [
        ("INFO", "waiting for the model registry")]
