"""`mlops-local replay`: shift specs, what is sent (to a real HTTP listener), and the CLI end to end
against a real `serve model` with a registered model."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from mlops_local.errors import UserError
from mlops_local.ml.datasets import load_dataset
from mlops_local.ml.types import DatasetSpec
from mlops_local.serving.replay import Shift, apply_shifts, parse_shift, replay
from tests.services import MLOPS, Service, free_port, start_service, wait_for
from tests.test_serving import train_version, version_served


def test_shift_specs_parse_into_their_three_forms() -> None:
    assert parse_shift("Engine Size(L)=*1.3") == Shift("Engine Size(L)", "scale", 1.3, "Engine Size(L)=*1.3")
    assert parse_shift("Cylinders=+5").op == "offset" and parse_shift("Cylinders=+5").value == 5.0
    assert parse_shift("Cylinders=-2.5").value == -2.5
    assert parse_shift(" Fuel Type = Z ") == Shift("Fuel Type", "set", "Z", " Fuel Type = Z ")


@pytest.mark.parametrize("spec", ["Engine Size(L)", "=*2", "Cylinders=", "Cylinders=*", "Cylinders=*x",
                                  "Cylinders=**2"])
def test_a_bad_shift_spec_names_itself_and_the_allowed_forms(spec: str) -> None:
    with pytest.raises(UserError) as err:
        parse_shift(spec)
    message = str(err.value)
    assert repr(spec) in message and "COLUMN=*1.3" in message and "COLUMN=VALUE" in message


def test_shifts_that_do_not_fit_the_columns_name_the_column() -> None:
    frame = pd.DataFrame({"size": [1.0, 2.0], "fuel": ["X", "Z"]})
    for spec, words in [("Size=*2", ["'Size' is not in the data", "size, fuel"]),
                        ("fuel=*2", ["'fuel' holds text", "fuel=VALUE"]),
                        ("size=big", ["'size' is numeric", "*FACTOR"])]:
        with pytest.raises(UserError) as err:
            apply_shifts(frame, [parse_shift(spec)])
        assert all(word in str(err.value) for word in words), (spec, str(err.value))
    shifted = apply_shifts(frame, [parse_shift("size=*1.5"), parse_shift("size=-1"), parse_shift("fuel=D")])
    assert shifted["size"].tolist() == [0.5, 2.0] and shifted["fuel"].tolist() == ["D", "D"]
    assert frame["size"].tolist() == [1.0, 2.0]  # the caller's frame is left as it was


class Recorder(BaseHTTPRequestHandler):
    """Answers every POST 200 and keeps its JSON body (the server's ``bodies``)."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.bodies.append((self.path, self.headers["Content-Type"], json.loads(body)))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    server.bodies = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_replay_sends_shuffled_shifted_batches_and_counts_them(recorder: ThreadingHTTPServer) -> None:
    frame = pd.DataFrame({"n": [float(i) for i in range(40)], "c": ["a"] * 40})
    seen = []
    result = replay(f"http://127.0.0.1:{recorder.server_port}", frame, rate=200, duration_s=0.5,
                    shifts=[parse_shift("n=*10"), parse_shift("c=b")], batch=4, on_progress=seen.append)
    bodies = recorder.bodies
    assert result.sent == len(bodies) == result.ok > 0 and result.failed == 0 and not result.stopped
    assert result.rows == 4 * result.sent
    assert {(path, kind) for path, kind, _ in bodies} == {("/invocations", "application/json")}
    rows = [row for _, _, b in bodies for row in b["dataframe_split"]["data"]]
    assert bodies[0][2]["dataframe_split"]["columns"] == ["n", "c"]
    assert all(len(b["dataframe_split"]["data"]) == 4 for _, _, b in bodies)
    assert {c for _, c in rows} == {"b"} and {n for n, _ in rows} <= {10.0 * i for i in range(40)}
    first = [n for n, _ in rows[:40]]
    assert sorted(first) == [10.0 * i for i in range(40)] and first != sorted(first)  # a shuffled cycle
    assert seen and seen[-1].sent == result.sent  # the last progress is the final count


def test_replay_stops_when_asked_and_counts_refused_requests() -> None:
    stop = threading.Event()
    timer = threading.Timer(0.3, stop.set)
    timer.start()
    result = replay(f"http://127.0.0.1:{free_port()}", pd.DataFrame({"n": [1.0]}), rate=50, duration_s=60,
                    stop=stop)
    timer.join()
    assert result.stopped and result.elapsed < 30  # ended by the event, not the 60 s duration
    assert result.ok == 0 and result.failed == result.sent > 0 and "Connection refused" in result.last_error


@pytest.mark.parametrize(("kwargs", "word"), [({"rate": 0}, "--rate"), ({"duration_s": -1}, "--duration"),
                                              ({"batch": 0}, "--batch"), ({"url": "ftp://x"}, "--url")])
def test_replay_refuses_bad_arguments_before_sending(kwargs: dict, word: str) -> None:
    arguments = {"url": "http://127.0.0.1:1", "rate": 1.0, "duration_s": 1.0, **kwargs}
    with pytest.raises(UserError, match=word):
        replay(arguments.pop("url"), pd.DataFrame({"n": [1.0]}), **arguments)


@dataclass
class Target:
    service: Service
    env: dict[str, str]


@pytest.fixture(scope="module")
def target(mlflow_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """A real `serve model` serving a freshly registered random forest."""
    home = tmp_path_factory.mktemp("replay-home")
    alias = f"replay-{uuid.uuid4().hex[:8]}"
    env = dict(mlflow_env, MLOPS_SERVE_PORT=str(free_port()), MLOPS_SERVE_ALIAS=alias,
               MLOPS_SERVE_POLL_INTERVAL="0.5", MLOPS_HOME=str(home))
    service = start_service("model", env, home / "logs")
    try:
        client = MlflowClient(mlflow_env["MLFLOW_TRACKING_URI"])
        version, _ = train_version(env, client, f"replay-model-{uuid.uuid4().hex[:6]}", alias, trees=5)
        wait_for(lambda: version_served(service.url) == version, "the service taking the model")
        yield Target(service, env)
    finally:
        service.stop()


def served_ok(url: str) -> float:
    """Requests the service counted ok, from its own /metrics."""
    import urllib.request

    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("mlops_serving_requests_total{") and 'status="ok"' in line)


@pytest.mark.integration
def test_replay_cli_against_the_real_service(target: Target, tmp_path: Path) -> None:
    before = served_ok(target.service.url)
    out = subprocess.run([*MLOPS, "replay", "--rate", "20", "--duration", "2", "--batch", "3",
                          "--shift", "Engine Size(L)=*1.3", "--shift", "Fuel Type=Z",
                          "--url", target.service.url], env=target.env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    summary = out.stdout.strip().splitlines()[-1]
    assert summary.startswith("replay done after") and " 0 failed" in summary, summary
    sent = int(summary.split(": ", 1)[1].split(" requests")[0])
    assert sent > 0 and f"({3 * sent} rows scored), {sent} ok" in summary
    assert served_ok(target.service.url) == before + sent  # every request sent was scored
    assert "Traceback" not in out.stderr and "[" not in out.stderr.replace("[Errno", "")  # no bar off a tty
    # A file with its target column: the target is dropped, the rest scores.
    frame = load_dataset(DatasetSpec("co2_canada"))
    path = tmp_path / "rows.csv"
    frame.X.assign(CO2=frame.y).head(50).to_csv(path, index=False)
    out = subprocess.run([*MLOPS, "replay", "--file", str(path), "--target", "CO2", "--duration", "1",
                          "--url", target.service.url], env=target.env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and " 0 failed" in out.stdout, out.stdout + out.stderr


@pytest.mark.integration
def test_replay_cli_ctrl_c_stops_cleanly_and_bad_specs_exit_2(target: Target) -> None:
    command = [*MLOPS, "replay", "--rate", "50", "--duration", "600", "--url", target.service.url]
    proc = subprocess.Popen(command, env=target.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        before = served_ok(target.service.url)
        wait_for(lambda: served_ok(target.service.url) > before, "replayed requests scored")
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130 and stdout.startswith("replay stopped after"), stdout + stderr
    assert "Traceback" not in stderr
    out = subprocess.run([*MLOPS, "replay", "--shift", "Engine Size=*1.3", "--url", target.service.url],
                         env=target.env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "'Engine Size' is not in the data" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
