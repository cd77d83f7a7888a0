"""The model service with no model yet: it asks the registry without MLflow's client and holds no MLflow,
pandas or scikit-learn; the quick look-up answers as MLflow's client does, or leaves the question to it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient

from mlops_local.serving.holder import LoadedModel, ModelHolder, resolve
from mlops_local.serving.metrics import DEFAULT_PREDICTION_BUCKETS, ServingMetrics
from mlops_local.serving.registry import CannotTell, alias_target
from tests.services import ROOT, answering, free_port

HEAVY = ("mlflow", "pandas", "pyarrow", "sklearn", "scipy", "skops")

# The real service (the console script's entry point) in a fresh interpreter. Once it answers, a thread
# asks it to poll now (POST /reload: the registry is asked, no model has the alias), prints which heavy
# modules the process holds, then stops it as honcho does (SIGTERM).
SCRIPT = """
import json, os, signal, sys, threading, time, urllib.error, urllib.request
from mlops_local import cli

URL = "http://127.0.0.1:" + os.environ["MLOPS_SERVE_PORT"]

def watch():
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(urllib.request.Request(URL + "/reload", method="POST"), timeout=30)
            answer = "200"
        except urllib.error.HTTPError as exc:
            answer = f"{exc.code} {json.loads(exc.read())['status']}"
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
            continue
        break
    print(json.dumps({"reload": answer, "held": sorted(m for m in HEAVY if m in sys.modules)}), flush=True)
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=watch, daemon=True).start()
sys.exit(cli.main(["serve", "model"]))
""".replace("HEAVY", repr(HEAVY))


@pytest.mark.integration
def test_a_service_with_no_model_yet_holds_no_mlflow_pandas_or_sklearn(mlflow_env: dict[str, str],
                                                                        tmp_path: Path) -> None:
    env = dict(mlflow_env, MLOPS_HOME=str(tmp_path), MLOPS_SERVE_PORT=str(free_port()),
               MLOPS_SERVE_ALIAS=f"idle-{uuid.uuid4().hex[:8]}", MLOPS_SERVE_POLL_INTERVAL="3600")
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=str(ROOT), env=env, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode in (0, -signal.SIGTERM), done.stderr[-3000:]  # uvicorn re-raises the SIGTERM
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"reload": "503 no model yet", "held": []}, done.stderr[-3000:]


@pytest.fixture(scope="module")
def registry(mlflow_env: dict[str, str]) -> tuple[str, MlflowClient]:
    uri = mlflow_env["MLFLOW_TRACKING_URI"]
    return uri, MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.mark.integration
def test_the_quick_look_up_answers_as_mlflows_client(registry: tuple[str, MlflowClient]) -> None:
    uri, client = registry
    name, alias = f"lookup-{uuid.uuid4().hex[:8]}", f"lookup-{uuid.uuid4().hex[:8]}"

    def both(model: str | None) -> tuple[object, object]:
        return alias_target(uri, model, alias, timeout=10), resolve(client, model, alias)

    assert both(name) == (None, None)  # no such model
    assert both(None) == (None, None)  # no model carries the alias
    client.create_registered_model(name)
    experiment = client.get_experiment_by_name("lookup-tests")
    run = client.create_run(experiment.experiment_id if experiment else
                            client.create_experiment("lookup-tests"))
    source = f"runs:/{run.info.run_id}/model"  # registered, never loaded: no model files needed
    client.create_model_version(name, source=source, run_id=run.info.run_id)
    second = client.create_model_version(name, source=source, run_id=run.info.run_id)
    assert both(name) == (None, None)  # a model without the alias
    client.set_registered_model_alias(name, alias, second.version)
    assert both(name) == ((name, str(second.version)),) * 2
    assert both(None) == ((name, str(second.version)),) * 2
    client.set_registered_model_alias(name, alias, "1")
    assert both(None) == ((name, "1"),) * 2
    # A prompt (MLflow keeps prompts in the registry) with the alias, updated last: not a model to serve.
    prompt = f"lookup-prompt-{uuid.uuid4().hex[:8]}"
    client.register_prompt(name=prompt, template="Say {{word}}")
    client.set_prompt_alias(prompt, alias, 1)
    assert both(None) == ((name, "1"),) * 2


def test_the_quick_look_up_leaves_what_it_cannot_answer_to_mlflows_client(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(CannotTell):
        alias_target(f"sqlite:///{tmp_path}/mlflow.db", None, "champion", timeout=1)
    with pytest.raises(OSError):  # nothing listens: the registry is not up (yet)
        alias_target(f"http://127.0.0.1:{free_port()}", None, "champion", timeout=1)
    with answering(404) as url, pytest.raises(CannotTell):  # not MLflow's "no such model": its client
        alias_target(url, "m", "champion", timeout=5)        # says what the server is
    with answering(401) as url, pytest.raises(CannotTell):  # wants credentials only MLflow's client has
        alias_target(url, None, "champion", timeout=5)
    with answering(503) as url, pytest.raises(OSError):  # down for now: polled again
        alias_target(url, None, "champion", timeout=5)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "secret")  # only MLflow's client sends it
    with pytest.raises(CannotTell):
        alias_target(f"http://127.0.0.1:{free_port()}", None, "champion", timeout=1)


class OneVersionRegistry:
    """MLflow's client as the holder uses it for a named model: the alias points at version 1."""

    tracking_uri = "http://registry.invalid"

    def get_model_version_by_alias(self, name: str, alias: str) -> object:
        return type("Version", (), {"version": "1"})()


def loaded(_client: object, name: str, alias: str, version: str) -> LoadedModel:
    return LoadedModel(name, alias, version, "run", 1.0, object(), None, DEFAULT_PREDICTION_BUCKETS,
                       "defaults")


def test_the_client_is_made_only_for_a_version_to_load_or_a_question_the_look_up_cannot_answer() -> None:
    made: list[OneVersionRegistry] = []

    def connect() -> OneVersionRegistry:
        made.append(OneVersionRegistry())
        return made[-1]

    answers: list[object] = [None, None, ("m", "1")]

    def lookup(name: str | None, alias: str) -> tuple[str, str] | None:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    holder = ModelHolder(None, ServingMetrics(), "m", "champion", 1.0, loader=loaded, connect=connect,
                         lookup=lookup, uri="http://registry.invalid")
    assert not holder.check() and not holder.check() and made == []  # nothing to load: no client
    assert holder.check() and holder.current.version == "1" and len(made) == 1
    assert not holder.check() and answers == []  # from the first load on, MLflow's client answers

    answers[:] = [CannotTell("MLFLOW_TRACKING_TOKEN is set")]
    cannot = ModelHolder(None, ServingMetrics(), "m", "champion", 1.0, loader=loaded, connect=connect,
                         lookup=lookup, uri="http://registry.invalid")
    assert cannot.check() and cannot.current.version == "1" and len(made) == 2 and answers == []
