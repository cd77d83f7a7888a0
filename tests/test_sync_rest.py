"""The UI process's sync asks MLflow over plain HTTP: `serve ui` idles without MLflow, pandas or pyarrow,
the plain client reads what MLflow's client reads, and what it cannot answer is left to MLflow's client."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from mlops_local import restclient
from mlops_local.metrics.exporter import ModelMetricsExporter
from mlops_local.metrics.registry import build_registry
from mlops_local.metrics.sync import MlflowSync, connection_refused, make_client
from mlops_local.owner import owner_tags
from mlops_local.restclient import ALL, CannotTell, RestClient, error_answers
from mlops_local.runmeta import TAG_ERROR
from mlops_local.settings import Settings
from mlops_local.tracking import LazyClient
from tests.services import ROOT, answering, free_port, stack_env
from tests.test_sync import RunSpec, log_run, model_samples, new_experiment, now_ms

HEAVY = ("mlflow", "pandas", "pyarrow", "sklearn", "scipy")

# The real `serve ui` (the console script's entry point) in a fresh interpreter. A thread waits until
# Streamlit answers and /metrics shows a whole sync done (the full read, the registry's champion, the
# stale run reaped, the sync recorded), prints which heavy modules the process holds and its PSS, then
# stops it as honcho does (SIGTERM).
SCRIPT = """
import json, os, signal, sys, threading, time, urllib.request
from mlops_local import cli

BASE = "http://127.0.0.1:"

def read(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.read().decode()
    except OSError:
        return ""

def synced():
    body = read(BASE + os.environ["MLOPS_METRICS_PORT"] + "/metrics")
    return ("mlops_runs_reaped_total 1.0" in body and "mlops_champion_r2{" in body
            and "mlops_sync_last_success_timestamp_seconds" in body)

def watch():
    deadline = time.monotonic() + 150
    while not (read(BASE + os.environ["MLOPS_UI_PORT"] + "/_stcore/health") == "ok" and synced()):
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    pss = sum(int(line.split()[1]) for line in open("/proc/self/smaps_rollup") if line.startswith("Pss:"))
    print(json.dumps({"synced": synced(), "held": sorted(m for m in HEAVY if m in sys.modules),
                      "pss_mb": round(pss / 1024, 1)}), flush=True)
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=watch, daemon=True).start()
sys.exit(cli.main(["serve", "ui"]))
""".replace("HEAVY", repr(HEAVY))


def dead_owner_tags() -> dict[str, str]:
    """Owner tags of this host naming a process that has exited (a run the reaper closes)."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    return {**owner_tags(), "mlops.owner.pid": str(dead.pid)}


@pytest.mark.integration
def test_serve_ui_syncs_a_populated_store_without_mlflow_pandas_or_pyarrow(mlflow_service, tmp_path: Path):
    service, env = mlflow_service  # its own server: the reaper judges every run in it
    client = MlflowClient(tracking_uri=service.url, registry_uri=service.url)
    name, experiment_id = new_experiment(client, "idle-ui")
    runs = [log_run(client, experiment_id, RunSpec("co2", "ridge", r2, now_ms() - 1000 * i))
            for i, r2 in enumerate((0.8, 0.7, 0.6))]
    client.create_registered_model(f"{name}-model")
    client.create_model_version(f"{name}-model", f"runs:/{runs[0]}/model", run_id=runs[0])
    client.set_registered_model_alias(f"{name}-model", "champion", "1")
    stale = client.create_run(experiment_id, tags=dead_owner_tags()).info.run_id

    env = {**env, "MLFLOW_TRACKING_URI": service.url, "MLOPS_HOME": str(tmp_path / "ui-home")}
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=str(ROOT), env=env, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode in (0, -signal.SIGTERM), done.stderr[-3000:]
    report = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("{")))
    assert report["synced"], done.stderr[-3000:]
    assert report["held"] == [], done.stderr[-3000:]
    closed = client.get_run(stale)
    assert closed.info.status == "KILLED"
    assert "closed by the reaper" in closed.data.tags[TAG_ERROR]


# -- parity with MLflow's client on the real server ---------------------------------------------------
@pytest.fixture(scope="module")
def both(mlflow_settings: Settings) -> tuple[RestClient, MlflowClient]:
    uri = mlflow_settings.effective_tracking_uri
    return RestClient(uri, timeout=30), MlflowClient(tracking_uri=uri, registry_uri=uri)


def run_fields(run) -> str:
    """Everything the callers read of a run, types included (an int64 read as a float differs)."""
    info, data = run.info, run.data
    return repr(((info.run_id, info.experiment_id, info.status, info.start_time, info.end_time,
                  info.lifecycle_stage, info.run_name, info.user_id, info.artifact_uri),
                 sorted(data.metrics.items()), sorted(data.params.items()), sorted(data.tags.items())))


def experiment_fields(experiment) -> str:
    return repr((experiment.experiment_id, experiment.name, experiment.lifecycle_stage,
                 experiment.artifact_location, sorted(experiment.tags.items())))


def _pages(search) -> list[tuple[list, str | None]]:
    """Every page of ``search(page_token)`` as (items, next token)."""
    pages, token = [], None
    while True:
        page = search(token)
        pages.append((list(page), page.token or None))  # MLflow's last registry page says "", not None
        token = page.token
        if not token:
            return pages


@pytest.mark.integration
def test_runs_read_over_plain_http_are_mlflows_runs(both) -> None:
    rest, mlflow = both
    name, experiment_id = new_experiment(mlflow, "parity")
    t = now_ms()
    odd = [float("nan"), float("inf"), float("-inf"), 0.5, -0.0, 1e-300, 2**53 + 0.5]
    ids = []
    for i in range(23):
        run = mlflow.create_run(experiment_id, start_time=t - 10_000 + i, run_name=f"run {i} é",
                                tags={"dataset": f"ds{i % 3}", "model": "ridge", "source": "cli",
                                      "note": "quotes ' \" and\nnewline"})
        mlflow.log_batch(run.info.run_id,
                         metrics=[Metric("r2", 0.1, t, 0), Metric("r2", odd[i % len(odd)], t - 5, 1),
                                  Metric("fit_s", i / 7, t, 0)],
                         params=[Param("alpha", str(i)), Param("empty", "")],
                         tags=[RunTag("big", "x" * 3000)])
        if i % 5:  # every fifth left RUNNING (no end time)
            mlflow.set_terminated(run.info.run_id, ("FINISHED", "FAILED", "KILLED")[i % 3], end_time=t + i)
        ids.append(run.info.run_id)
    mlflow.delete_run(ids[7])  # deleted: not in an active-only search

    for query, order in (("attributes.end_time > 0", "DESC"), ("", "ASC"),
                         ("attributes.status = 'RUNNING' and tags.`dataset` = 'ds1'", "DESC")):
        def search(client, token, query=query, order=order):
            return client.search_runs([experiment_id], query, max_results=5,
                                      order_by=[f"attributes.end_time {order}"], page_token=token)

        rest_pages = [([run_fields(r) for r in page], token) for page, token in
                      _pages(lambda token, c=rest: search(c, token))]
        mlflow_pages = [([run_fields(r) for r in page], token) for page, token in
                        _pages(lambda token, c=mlflow: search(c, token))]
        assert rest_pages == mlflow_pages, query
    assert len(_pages(lambda token: rest.search_runs([experiment_id], "", max_results=5,
                                                     page_token=token))) == 5  # 22 runs, 5 a page
    for run_id in ids:
        assert run_fields(rest.get_run(run_id)) == run_fields(mlflow.get_run(run_id))
    assert rest.get_run(ids[0]).data.metrics["r2"] != rest.get_run(ids[0]).data.metrics["r2"]  # NaN read
    for client in (rest, mlflow):
        with pytest.raises(error_answers()):
            client.get_run(uuid.uuid4().hex)


@pytest.mark.integration
def test_experiments_read_over_plain_http_are_mlflows(both) -> None:
    rest, mlflow = both
    kept, _ = new_experiment(mlflow, "parity-kept")
    gone, gone_id = new_experiment(mlflow, "parity-gone")
    mlflow.set_experiment_tag(gone_id, "purpose", "deleted below")
    mlflow.delete_experiment(gone_id)

    def listing(client, view_type=None):
        kwargs = {} if view_type is None else {"view_type": view_type}
        return [([experiment_fields(e) for e in page], token) for page, token in
                _pages(lambda token: client.search_experiments(max_results=3, page_token=token, **kwargs))]

    assert listing(rest) == listing(mlflow)
    assert listing(rest, ALL) == listing(mlflow, ALL)
    names = {e.name for page, _ in _pages(lambda t: rest.search_experiments(max_results=3, page_token=t))
             for e in page}
    assert kept in names and gone not in names  # active only
    for name in (kept, gone):
        assert experiment_fields(rest.get_experiment_by_name(name)) == \
            experiment_fields(mlflow.get_experiment_by_name(name))
    assert rest.get_experiment_by_name(gone).lifecycle_stage == "deleted"
    assert experiment_fields(rest.get_experiment(gone_id)) == \
        experiment_fields(mlflow.get_experiment(gone_id))
    missing = f"no-such-{uuid.uuid4().hex}"
    assert rest.get_experiment_by_name(missing) is None and mlflow.get_experiment_by_name(missing) is None


@pytest.mark.integration
def test_the_registry_read_over_plain_http_is_mlflows(both) -> None:
    rest, mlflow = both
    name, experiment_id = new_experiment(mlflow, "parity-registry")
    run_id = log_run(mlflow, experiment_id, RunSpec("co2", "ridge", 0.5, now_ms()))
    for model, aliases in ((f"{name}-a", {"champion": "2", "previous": "1"}),
                           (f"{name}-b", {"champion": "1"}), (f"{name}-c", {})):
        mlflow.create_registered_model(model)
        for _ in range(2):
            mlflow.create_model_version(model, f"runs:/{run_id}/model", run_id=run_id)
        for alias, version in aliases.items():
            mlflow.set_registered_model_alias(model, alias, version)

    def listing(client):
        return [([(m.name, dict(m.aliases)) for m in page], token) for page, token in
                _pages(lambda token: client.search_registered_models(max_results=2, page_token=token))]

    assert listing(rest) == listing(mlflow)
    assert (f"{name}-a", {"champion": "2", "previous": "1"}) in [m for page, _ in listing(rest) for m in page]
    for client in (rest, mlflow):
        version = client.get_model_version(f"{name}-a", "2")
        assert (version.name, version.version, version.run_id) == (f"{name}-a", "2", run_id)


@pytest.mark.integration
def test_the_reapers_writes_over_plain_http_land_as_mlflows(both) -> None:
    rest, mlflow = both
    _, experiment_id = new_experiment(mlflow, "parity-writes")
    run_id = mlflow.create_run(experiment_id).info.run_id
    before = now_ms()
    rest.set_tag(run_id, TAG_ERROR, "owner process 1 is gone")
    rest.set_terminated(run_id, "KILLED")
    run = mlflow.get_run(run_id)
    assert run.data.tags[TAG_ERROR] == "owner process 1 is gone"
    assert run.info.status == "KILLED" and before <= run.info.end_time <= now_ms()


@pytest.mark.integration
def test_the_sync_publishes_the_same_metrics_through_either_client(both, mlflow_settings: Settings) -> None:
    rest, mlflow = both
    name, experiment_id = new_experiment(mlflow, "parity-sync")
    t = now_ms()
    trial = (("source", "sweep"), ("sweep_role", "trial"))
    specs = [RunSpec(f"ds{i % 4}", f"m{i % 3}", i / 40, t - 1000 * i,
                     status="FAILED" if i % 6 == 0 else "FINISHED", tags=trial if i % 7 == 0 else ())
             for i in range(30)]
    for spec in specs:
        log_run(mlflow, experiment_id, spec)
    nan = log_run(mlflow, experiment_id, RunSpec("ds0", "m0", 0.3, t + 5))
    mlflow.log_batch(nan, metrics=[Metric("r2", float("nan"), t + 6, 1)])  # the latest r2 is NaN
    published = []
    for client in (rest, mlflow):
        registry = build_registry()
        exporter = ModelMetricsExporter(registry, mlflow_settings)
        result = MlflowSync(client, exporter, experiments=[name], page_size=7).sync_once()
        assert (result.fetched, result.pages) == (31, 5)
        published.append(model_samples(registry))
    assert published[0] == published[1]
    assert len(published[0]) > 30


# -- what plain HTTP leaves to MLflow's client ----------------------------------------------------------
@pytest.mark.integration
def test_with_mlflows_auth_settings_the_sync_uses_mlflows_client(mlflow_settings: Settings,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    writer = MlflowClient(tracking_uri=mlflow_settings.effective_tracking_uri)
    name, experiment_id = new_experiment(writer, "token")
    log_run(writer, experiment_id, RunSpec("co2", "ridge", 0.75, now_ms()))
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "a-token-only-mlflows-client-sends")
    client = make_client(mlflow_settings)
    assert not client.plain
    exporter = ModelMetricsExporter(build_registry(), mlflow_settings)
    assert MlflowSync(client, exporter, experiments=[name]).sync_once().new == 1
    assert exporter.latest(name, "co2", "ridge").r2 == 0.75
    assert isinstance(client.mlflow, MlflowClient)


@pytest.mark.integration
def test_a_store_that_is_not_http_is_synced_through_mlflows_client(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    settings = Settings.from_env(stack_env(tmp_path / "home", MLFLOW_TRACKING_URI=uri))
    writer = MlflowClient(tracking_uri=uri)
    name, experiment_id = new_experiment(writer, "sqlite")
    log_run(writer, experiment_id, RunSpec("co2", "lasso", 0.25, now_ms()))
    client = make_client(settings)
    assert not client.plain
    exporter = ModelMetricsExporter(build_registry(), settings)
    assert MlflowSync(client, exporter).sync_once().new == 1
    assert exporter.latest(name, "co2", "lasso").r2 == 0.25


def test_plain_http_says_when_it_cannot_answer_and_when_mlflow_is_down(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CannotTell):
        RestClient(f"sqlite:///{tmp_path}/mlflow.db", timeout=1)
    credentials = tmp_path / "credentials"
    monkeypatch.setattr(restclient, "CREDENTIALS_FILE", credentials)
    RestClient(f"http://127.0.0.1:{free_port()}", timeout=1)
    credentials.write_text("[mlflow]\nmlflow_tracking_token = only-mlflows-client-reads-it\n")
    with pytest.raises(CannotTell):  # ~/.mlflow/credentials: MLflow's client sends what it holds
        RestClient(f"http://127.0.0.1:{free_port()}", timeout=1)
    monkeypatch.undo()
    with pytest.raises(OSError) as refused:  # nothing listens: MLflow not up (yet)
        RestClient(f"http://127.0.0.1:{free_port()}", timeout=1).search_experiments()
    assert connection_refused(refused.value)  # the sync's "still starting", not an error
    for status, body in ((401, b'{"error_code": "UNAUTHENTICATED"}'), (403, b""), (404, b"<html/>"),
                         (200, b"<html>a login page</html>"), (200, b"[]"), (200, b'{"runs": [{"x": 1}]}')):
        with answering(status, body) as url, pytest.raises(CannotTell):
            RestClient(url, timeout=5).search_runs(["1"], "")
    with answering(503) as url, pytest.raises(OSError):  # down for now: the next sync tries again
        RestClient(url, timeout=5).search_experiments()
    with answering(400, b'{"error_code": "INVALID_PARAMETER_VALUE", "message": "bad filter"}') as url, \
            pytest.raises(error_answers()) as answered:
        RestClient(url, timeout=5).search_runs(["1"], "bad")
    assert answered.value.error_code == "INVALID_PARAMETER_VALUE"
    with answering(200, b"") as url:  # what MLflow answers to a write
        RestClient(url, timeout=5).set_tag("r", "k", "v")


@pytest.mark.integration
def test_from_the_first_question_plain_http_cannot_answer_mlflows_client_answers(
        mlflow_settings: Settings) -> None:
    made: list[MlflowClient] = []

    def connect() -> MlflowClient:
        made.append(MlflowClient(tracking_uri=mlflow_settings.effective_tracking_uri))
        return made[-1]

    with answering(401) as url:  # a proxy asking for credentials MLflow's client would send
        client = LazyClient(url, 5, connect)
        assert client.plain and made == []
        assert client.get_experiment_by_name("Default").experiment_id == "0"
        assert client.search_experiments(max_results=1)
    assert not client.plain and len(made) == 1  # made once, then kept

