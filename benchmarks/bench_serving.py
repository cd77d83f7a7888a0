"""Requests/s and latency of `mlops-local serve model` against `mlflow models serve --env-manager local`.

Same model (random_forest on co2_canada, skops, registered as name@champion), same machine, same
client: a bounded load generator (``--connections`` keep-alive connections in threads, each sending
one-row ``dataframe_split`` requests for ``--seconds``). Three servers take turns for ``--rounds``
rounds; medians over rounds: ours as shipped (metrics and drift on), ours with metrics and drift off
(the same app with a metrics object that records nothing and no drift window: what they cost), and
`mlflow models serve`. Each server's CPU time per request (its process tree's user + system time over
the round / requests answered) is printed too: other work on the machine moves it far less than requests/s.
Idle PSS of each server's process tree is read after the warm-up; the machine's
load (`uptime`) is printed before and after, since other work on the machine moves every figure.
Run: .venv/bin/python -m benchmarks.bench_serving [--trees 100] [--seconds 60] [--connections 4] [--rounds 2]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.bench_startup import tree_memory_mb
from tests.services import (
    ROOT,
    Service,
    free_port,
    process_tree,
    stack_env,
    start_service,
    wait_until_responds,
)

OURS, BARE, THEIRS = "serve model", "serve model, metrics+drift off", "mlflow models serve"


def one_row_body() -> bytes:
    """A one-row dataframe_split request from the dataset the model was trained on."""
    from mlops_local.ml.datasets import load_dataset
    from mlops_local.ml.types import DatasetSpec

    frame = load_dataset(DatasetSpec("co2_canada")).X.head(1)
    return json.dumps({"dataframe_split": frame.to_dict(orient="split", index=False)}).encode()


def load(port: int, body: bytes, seconds: float, connections: int) -> dict[str, float]:
    """Drive ``port`` for ``seconds`` with ``connections`` clients; requests/s, p50/p99 ms, failures."""
    latencies: list[list[float]] = [[] for _ in range(connections)]
    failures = [0] * connections
    deadline = time.monotonic() + seconds

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Content-Type": "application/json"}
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                conn.request("POST", "/invocations", body, headers)
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            latencies[i].append(time.perf_counter() - started)
            failures[i] += not ok
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(connections)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    every = sorted(x for per in latencies for x in per)
    q = statistics.quantiles(every, n=100)
    return {"rps": len(every) / elapsed, "p50_ms": q[49] * 1000, "p99_ms": q[98] * 1000,
            "requests": len(every), "failures": sum(failures)}


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by ``pid`` and its descendants (from /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def measured(port: int, pid: int, body: bytes, seconds: float, connections: int) -> dict[str, float]:
    """:func:`load` plus the server's CPU milliseconds per request (other load on the machine barely
    moves it, unlike requests/s: a saturated server's requests/s is about its cores / this)."""
    before = tree_cpu_seconds(pid)
    result = load(port, body, seconds, connections)
    result["cpu_ms"] = (tree_cpu_seconds(pid) - before) * 1000 / max(result["requests"], 1)
    return result


def serve_bare(port: int) -> int:
    """`serve model`'s app with metrics recording nothing and drift off (the cost baseline), on ``port``."""
    import uvicorn
    from mlflow import MlflowClient

    from mlops_local.serving.app import build_app
    from mlops_local.serving.holder import ModelHolder
    from mlops_local.serving.metrics import ServingMetrics
    from mlops_local.settings import Settings

    class Unrecorded(ServingMetrics):
        def observe(self, *args: object, **kwargs: object) -> None:
            pass

    settings = Settings.from_env()
    metrics = Unrecorded()
    holder = ModelHolder(MlflowClient(settings.effective_tracking_uri), metrics, settings.serve_model,
                         settings.serve_alias, settings.serve_poll_interval, drift_window=0)
    app = build_app(holder, metrics, settings.serve_max_body_mb << 20)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False,
                            lifespan="on", server_header=False)  # as app.serve() configures it
    uvicorn.Server(config).run()
    return 0


def cpu_costs(client: object, name: str, version: str, body: bytes, n: int) -> dict[str, float]:
    """Median CPU time (this thread's, so other load on the machine barely moves it) of one request's
    score() without and with the drift window, and of metrics.observe(), in ms."""
    from dataclasses import replace

    from mlops_local.serving.app import score
    from mlops_local.serving.drift import DriftWindow
    from mlops_local.serving.holder import load_version
    from mlops_local.serving.metrics import ServingMetrics

    loaded = load_version(client, name, "champion", version)
    assert loaded.reference is not None, "the run has no reference profile"
    variants = {"score": replace(loaded, drift=None),
                "score + drift": replace(loaded, drift=DriftWindow(loaded.reference, 1000))}
    metrics = ServingMetrics()
    metrics.served(name, "champion", version, loaded.run_id, loaded.loaded_at, loaded.buckets)
    out: dict[str, list[float]] = {k: [] for k in (*variants, "metrics.observe")}
    for _ in range(n):
        for label, model in variants.items():
            started = time.thread_time()
            _, values = score(model, body, "application/json")
            out[label].append(time.thread_time() - started)
        started = time.thread_time()
        metrics.observe(name, version, "ok", 0.01, values)
        out["metrics.observe"].append(time.thread_time() - started)
    return {k: statistics.median(v) * 1000 for k, v in out.items()}


def uptime() -> str:
    """The load averages, as `uptime` prints them."""
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_bare:
        return serve_bare(args.serve_bare)
    load_before = uptime()

    from mlflow import MlflowClient

    from mlops_local import runs
    from mlops_local.ml.training import train
    from mlops_local.ml.types import DatasetSpec, TrainRequest
    from mlops_local.settings import Settings

    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        home = Path(tmp)
        env = stack_env(home / "home")
        env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{env['MLOPS_MLFLOW_PORT']}"
        started: list[Service] = []
        try:
            started.append(start_service("mlflow", env, home / "logs"))
            client = MlflowClient(env["MLFLOW_TRACKING_URI"])
            request = TrainRequest(DatasetSpec("co2_canada"), "random_forest",
                                   params={"n_estimators": args.trees}, experiment="bench-serving",
                                   source="cli")
            result = train(request, Settings.from_env(env))
            version = str(runs.register_model(client, result.run_id, "bench-serving", "champion").version)
            cpu = cpu_costs(client, "bench-serving", version, one_row_body(), 300)
            ours = start_service("model", env, home / "logs")
            started.append(ours)
            wait_until_responds(ours.url + "/health", timeout=120, proc=ours.proc)
            bare_port = free_port()
            bare_log = home / "logs" / "serve-bare.log"
            bare_proc = subprocess.Popen([sys.executable, "-m", "benchmarks.bench_serving", "--serve-bare",
                                          str(bare_port)], env=env, cwd=str(ROOT), stdout=bare_log.open("wb"),
                                         stderr=subprocess.STDOUT, start_new_session=True)
            bare = Service("serve-bare", bare_proc, f"http://127.0.0.1:{bare_port}", bare_log)
            started.append(bare)
            wait_until_responds(bare.url + "/health", timeout=120, proc=bare_proc)
            port = free_port()
            log_path = home / "logs" / "mlflow-models-serve.log"
            command = [sys.executable, "-m", "mlflow", "models", "serve", "--env-manager", "local",
                       "-m", "models:/bench-serving@champion", "-h", "127.0.0.1", "-p", str(port)]
            proc = subprocess.Popen(command, env=env, stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
                                    start_new_session=True)
            theirs = Service("mlflow-models-serve", proc, f"http://127.0.0.1:{port}", log_path)
            started.append(theirs)
            wait_until_responds(theirs.url + "/health", timeout=180, proc=proc)
            body = one_row_body()
            ports = {OURS: int(env["MLOPS_SERVE_PORT"]), BARE: bare_port, THEIRS: port}
            pids = {OURS: ours.proc.pid, BARE: bare_proc.pid, THEIRS: proc.pid}
            for p in ports.values():  # warm-up: first predictions, connection pools
                load(p, body, 2.0, args.connections)
            time.sleep(2.0)  # idle: nothing in flight
            idle_pss = {name: tree_memory_mb(pid)[1] for name, pid in pids.items()}
            results: dict[str, list[dict[str, float]]] = {name: [] for name in ports}
            for _ in range(args.rounds):
                for name, p in ports.items():
                    results[name].append(measured(p, pids[name], body, args.seconds, args.connections))
        finally:
            for service in reversed(started):
                service.stop()

    print(f"random_forest {args.trees} trees, batch size 1, {args.connections} connections, "
          f"{args.seconds:g} s x {args.rounds} rounds (medians)")
    print(f"  load before: {load_before}\n  load after:  {uptime()}")
    medians = {name: {k: statistics.median(r[k] for r in rows) for k in rows[0]}
               for name, rows in results.items()}
    for name, m in medians.items():
        print(f"  {name:32s} {m['rps']:8.1f} req/s  p50 {m['p50_ms']:6.2f} ms  p99 {m['p99_ms']:6.2f} ms  "
              f"CPU {m['cpu_ms']:6.2f} ms/request  "
              f"failures {int(sum(r['failures'] for r in results[name]))}  idle PSS {idle_pss[name]:6.1f} MB")
    ours_m, bare_m, theirs_m = medians[OURS], medians[BARE], medians[THEIRS]
    print(f"  serve model vs mlflow models serve: {ours_m['rps'] / theirs_m['rps']:.2f}x requests/s, "
          f"p99 {ours_m['p99_ms'] / theirs_m['p99_ms']:.2f}x, server CPU per request "
          f"{ours_m['cpu_ms'] / theirs_m['cpu_ms']:.2f}x")
    print(f"  metrics+drift cost: {1 - ours_m['rps'] / bare_m['rps']:+.1%} of the requests/s without them, "
          f"p99 {ours_m['p99_ms'] / bare_m['p99_ms']:.2f}x, server CPU per request "
          f"{ours_m['cpu_ms'] / bare_m['cpu_ms'] - 1:+.1%}")
    added = (cpu["score + drift"] - cpu["score"] + cpu["metrics.observe"]) / cpu["score"]
    print("  CPU per one-row request, in process (median thread time): " +
          ", ".join(f"{k} {v:.3f} ms" for k, v in cpu.items()) + f"; metrics+drift add {added:.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
