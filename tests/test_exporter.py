"""The exporter on a real /metrics server: names, labels, caps, counting, thread safety, promtool."""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlops_local.metrics.bounded import BoundedMap
from mlops_local.metrics.exporter import ModelMetricsExporter
from mlops_local.metrics.labels import MAX_LABEL_LENGTH, clean_label
from mlops_local.metrics.registry import build_registry
from mlops_local.metrics.server import MetricsServer, start_metrics_server
from mlops_local.metrics.sync import STARTUP_POLL_S, MlflowSync, SyncWorker, backoff_delay
from mlops_local.ml.types import TrainResult
from mlops_local.settings import Settings
from tests.services import free_port

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
MODEL_FAMILIES = ("mlops_model_r2", "mlops_model_rmse", "mlops_model_mae")


def result(n: int, *, experiment: str = "mlops-local", dataset: str = "co2_canada",
           model: str = "random_forest", r2: float = 0.9, fit_s: float = 0.3,
           finished_at: float | None = None, status: str = "FINISHED", client: str = "",
           source: str = "") -> TrainResult:
    """A TrainResult as the training engine returns it (run id unique per ``n``)."""
    return TrainResult(
        run_id=f"{n:032x}", experiment_id="1", experiment=experiment, dataset=dataset, model=model,
        params={}, metrics={"r2": r2, "rmse": 2.0 - r2, "mae": 1.5 - r2},
        durations={"fit_s": fit_s, "predict_s": 0.01, "total_s": fit_s + 0.1}, model_uri=None,
        tracking_uri="http://127.0.0.1:1", finished_at=time.time() if finished_at is None else finished_at,
        status=status, client=client, source=source)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env({"MLOPS_HOME": str(tmp_path), "MLOPS_SCRAPE_INTERVAL": "1",
                              "MLOPS_SYNC_INTERVAL": "1", "MLOPS_MAX_SERIES": "500"})


@pytest.fixture
def served() -> Iterator[tuple[object, MetricsServer]]:
    """A private registry served on a free port; yields (registry, server)."""
    registry = build_registry()
    server = start_metrics_server(registry, "127.0.0.1", 0)
    yield registry, server
    server.stop()


def scrape(server: MetricsServer) -> str:
    with urllib.request.urlopen(server.url, timeout=10) as resp:
        return resp.read().decode()


def samples(body: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """{sorted label pairs: value} of every sample called ``name`` in an exposition body."""
    out = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_observe_is_on_metrics_at_once_and_promtool_accepts_it(settings, served):
    registry, server = served
    exporter = ModelMetricsExporter(registry, settings)
    exporter.observe(result(1, r2=0.81))
    exporter.observe(result(2, model="ridge", r2=0.7, fit_s=0.02))
    exporter.observe(result(3, dataset="my data (v2).csv", r2=0.5, fit_s=12.0))
    body = scrape(server)

    r2 = samples(body, "mlops_model_r2")
    assert r2[(("dataset", "co2_canada"), ("experiment", "mlops-local"), ("model", "random_forest"))] == 0.81
    assert r2[(("dataset", clean_label("my data (v2).csv")), ("experiment", "mlops-local"),
               ("model", "random_forest"))] == 0.5
    assert samples(body, "mlops_best_r2")[(("dataset", "co2_canada"), ("experiment", "mlops-local"))] == 0.81
    runs = samples(body, "mlops_training_runs_total")
    assert runs[(("dataset", "co2_canada"), ("model", "ridge"), ("status", "finished"))] == 1
    buckets = samples(body, "mlops_training_duration_seconds_bucket")
    assert buckets[(("le", "0.05"), ("model", "ridge"))] == 1
    assert buckets[(("le", "0.01"), ("model", "ridge"))] == 0
    assert buckets[(("le", "10.0"), ("model", "random_forest"))] == 1  # 0.3 s only; 12 s is above
    assert buckets[(("le", "+Inf"), ("model", "random_forest"))] == 2
    info = samples(body, "mlops_last_run_info")
    assert [dict(labels)["run_id"] for labels in info] == [f"{3:032x}"]
    assert samples(body, "mlops_sync_errors_total") == {(): 0.0}

    check = subprocess.run([PROMTOOL, "check", "metrics"], input=body.encode(), capture_output=True,
                           timeout=30)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()


def test_two_trainings_within_one_second_are_both_counted_and_the_later_wins(settings, served):
    registry, server = served
    exporter = ModelMetricsExporter(registry, settings)
    now = time.time()
    # Arriving in reverse order: the latest by end time must still be the one exported.
    exporter.observe(result(2, r2=0.77, finished_at=now + 0.4))
    exporter.observe(result(1, r2=0.55, finished_at=now))
    body = scrape(server)
    key = (("dataset", "co2_canada"), ("model", "random_forest"), ("status", "finished"))
    assert samples(body, "mlops_training_runs_total")[key] == 2
    assert list(samples(body, "mlops_model_r2").values()) == [0.77]
    # The same run published twice is counted once.
    exporter.observe(result(2, r2=0.77, finished_at=now + 0.4))
    assert samples(scrape(server), "mlops_training_runs_total")[key] == 2


def test_runs_are_counted_per_client_machine_and_source_from_the_ui_and_the_sync(settings, served):
    from mlflow.entities import Metric, Run, RunData, RunInfo, RunTag

    from mlops_local.metrics.records import record_from_run

    def synced(n: int, tags: dict[str, str]) -> Run:
        info = RunInfo(run_id=f"{n:032x}", experiment_id="1", user_id="", status="FINISHED",
                       start_time=1, end_time=int(time.time() * 1000), lifecycle_stage="active")
        tags = {"dataset": "diabetes", "model": "ridge", **tags}
        data = RunData(metrics=[Metric("r2", 0.5, 0, 0)], params=[],
                       tags=[RunTag(k, v) for k, v in tags.items()])
        return Run(info, data)

    registry, server = served
    exporter = ModelMetricsExporter(registry, settings)
    exporter.observe(result(1, client="ana-laptop", source="ui"))
    exporter.observe(result(2, client="ana-laptop", source="ui"))
    names = {"1": "mlops-local"}
    exporter.apply_records([
        record_from_run(synced(3, {"source": "cli", "mlops.client": "build-box"}), names),
        record_from_run(synced(4, {"source": "sweep", "mlops.client": "build-box"}), names),
        record_from_run(synced(5, {"source": "cli"}), names),  # from before MLOPS_CLIENT_NAME
        record_from_run(synced(1, {"source": "ui", "mlops.client": "ana-laptop"}), names),  # seen already
    ])
    clients = samples(scrape(server), "mlops_client_runs_total")
    assert clients == {(("client", "ana-laptop"), ("source", "ui")): 2,
                       (("client", "build-box"), ("source", "cli")): 1,
                       (("client", "build-box"), ("source", "sweep")): 1,
                       (("client", "unknown"), ("source", "cli")): 1}


def test_label_values_are_sanitised_and_bounded():
    assert clean_label("co2_canada") == "co2_canada"
    assert clean_label('a"b\\c\nd{e}=f g').startswith("a_b_c_d_e__f_g-")
    assert clean_label("") == clean_label(None) == "unknown"
    long_a, long_b = "x" * 100 + "a", "x" * 100 + "b"
    assert len(clean_label(long_a)) == MAX_LABEL_LENGTH
    assert clean_label(long_a) != clean_label(long_b)
    assert SAFE_VALUE.match(clean_label("données (été) 2024.csv"))


def test_two_names_that_clean_to_the_same_text_stay_two_series(settings, served):
    registry, server = served
    exporter = ModelMetricsExporter(registry, settings)
    names = ("random forest", "random_forest", "random/forest", " random_forest")
    for n, model in enumerate(names):
        exporter.observe(result(n, model=model, r2=0.1 * (n + 1)))
    r2 = samples(scrape(server), "mlops_model_r2")
    assert sorted(r2.values()) == pytest.approx([0.1, 0.2, 0.3, 0.4])
    models = {dict(labels)["model"] for labels in r2}
    assert "random_forest" in models and len(models) == len(names)
    assert all(SAFE_VALUE.match(model) for model in models)
    assert clean_label("random forest") == clean_label("random forest")  # stable across calls


def test_no_label_carries_free_text_or_run_ids(settings, served):
    registry, server = served
    exporter = ModelMetricsExporter(registry, settings)
    exporter.observe(result(7, experiment='team "a"\n{x}', dataset="é" * 200, model="random forest!"))
    body = scrape(server)
    run_id = f"{7:032x}"
    for family in text_string_to_metric_families(body):
        if not family.name.startswith("mlops_"):
            continue
        for sample in family.samples:
            for name, value in sample.labels.items():
                if name == "le":
                    continue
                assert SAFE_VALUE.match(value), (sample.name, name, value)
                if family.name not in ("mlops_last_run", "mlops_last_run_info"):
                    assert run_id not in value, sample.name


def test_series_are_capped_and_the_oldest_are_evicted(settings, served):
    registry, server = served
    exporter = ModelMetricsExporter(registry, settings, max_series=5)
    start = time.time() - 100
    order = list(range(20))
    random.Random(4).shuffle(order)  # arrival order must not matter, end time does
    for i in order:
        exporter.observe(result(i, dataset=f"ds{i:02d}", finished_at=start + i))
    body = scrape(server)
    for name in (*MODEL_FAMILIES, "mlops_best_r2", "mlops_last_training_timestamp_seconds",
                 "mlops_training_runs_total"):
        assert len(samples(body, name)) == 5, name
    kept = sorted(dict(labels)["dataset"] for labels in samples(body, "mlops_model_r2"))
    assert kept == [f"ds{i:02d}" for i in range(15, 20)]
    assert samples(body, "mlops_model_series") == {(): 5.0}
    assert samples(body, "mlops_series_evicted_total")[()] >= 15
    assert exporter.series_count() == 5


def test_bounded_map_keeps_the_most_recently_active_whatever_the_arrival_order():
    bounded: BoundedMap[str, int] = BoundedMap(3)
    evicted = []
    for key, when in (("c", 30), ("a", 10), ("d", 40), ("b", 20), ("a", 50)):
        evicted += bounded.put(key, when, when)
    assert sorted(k for k, _ in bounded.items()) == ["a", "c", "d"]
    assert evicted == ["b"] or sorted(evicted) == ["a", "b"]  # "a"@10 may go first, then comes back
    assert bounded.activity("a") == 50
    bounded.put("a", 1, 5)  # an older activity updates the value, never moves the entry back in time
    assert bounded.get("a") == 1 and bounded.activity("a") == 50
    for i in range(1000):  # the lazy heap stays compact
        bounded.put("a", i, 100 + i)
    assert len(bounded._heap) <= 4 * len(bounded) + 64


def test_concurrent_trainings_from_many_sessions_while_scraping(settings, served):
    registry, server = served
    exporter = ModelMetricsExporter(registry, settings, max_series=1000)
    threads, per_thread = 8, 100
    errors: list[BaseException] = []
    done = threading.Event()
    bodies: list[str] = []

    def session(t: int) -> None:
        try:
            for i in range(per_thread):
                exporter.observe(result(t * 1000 + i, dataset=f"ds{i % 6}", model=f"m{t % 4}",
                                        r2=random.random()))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def scraper() -> None:
        while not done.is_set():
            try:
                bodies.append(scrape(server))
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

    reader = threading.Thread(target=scraper)
    reader.start()
    workers = [threading.Thread(target=session, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    done.set()
    reader.join()
    assert not errors
    body = scrape(server)
    assert sum(samples(body, "mlops_training_runs_total").values()) == threads * per_thread
    assert len(samples(body, "mlops_model_r2")) == 6 * 4
    for earlier in bodies:  # every scrape during the storm was a complete, parseable exposition
        total = sum(samples(earlier, "mlops_training_runs_total").values())
        assert 0 <= total <= threads * per_thread


def test_backoff_doubles_and_is_capped():
    assert [backoff_delay(n, 1.0, 8.0) for n in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert backoff_delay(3, 5.0, 1.0) == 5.0  # never below the interval


def test_sync_thread_survives_a_dead_server_counting_errors_with_backoff(settings, served):
    from mlflow.tracking import MlflowClient

    registry, server = served
    exporter = ModelMetricsExporter(registry, settings)
    client = MlflowClient(tracking_uri=f"http://127.0.0.1:{free_port()}")  # nobody listens there
    delays: list[float] = []
    stop_after = threading.Event()

    def fake_wait(seconds: float) -> bool:  # the clock is the only fake: record, never sleep
        delays.append(seconds)
        if len(delays) >= 5:
            stop_after.set()
            return True
        return False

    worker = SyncWorker(MlflowSync(client, exporter), exporter, interval=1.0, max_backoff=4.0,
                        wait=fake_wait, startup_grace=0.0)  # a server that never came up
    worker.start()
    assert stop_after.wait(60)
    worker.stop()
    assert delays == [2.0, 4.0, 4.0, 4.0, 4.0]
    assert not worker.alive
    assert samples(scrape(server), "mlops_sync_errors_total") == {(): 5.0}


def test_a_refused_connection_at_start_up_is_waiting_until_the_grace_runs_out(settings, served):
    from mlflow.tracking import MlflowClient

    registry, server = served
    exporter = ModelMetricsExporter(registry, settings)
    client = MlflowClient(tracking_uri=f"http://127.0.0.1:{free_port()}")  # MLflow not listening yet
    now = [1000.0]  # a fake monotonic clock, moved only by the fake wait
    delays: list[float] = []
    errors_while_waiting: list[float] = []
    done = threading.Event()

    def fake_wait(seconds: float) -> bool:
        delays.append(seconds)
        if len(delays) == 3:
            errors_while_waiting.append(samples(scrape(server), "mlops_sync_errors_total")[()])
        now[0] += seconds
        if len(delays) >= 5:
            done.set()
            return True
        return False

    worker = SyncWorker(MlflowSync(client, exporter), exporter, interval=10.0, max_backoff=40.0,
                        wait=fake_wait, startup_grace=1.5, monotonic=lambda: now[0])
    worker.start()
    assert done.wait(60)
    worker.stop()
    # At 0, 0.5 and 1 s: waiting, tried again soon (not an interval later: the first read follows MLflow's
    # start at once, and scrapes wait for it); at 1.5 s the grace is over: errors, with backoff.
    assert delays == [STARTUP_POLL_S] * 3 + [20.0, 40.0]
    assert errors_while_waiting == [0.0]
    assert samples(scrape(server), "mlops_sync_errors_total") == {(): 2.0}
