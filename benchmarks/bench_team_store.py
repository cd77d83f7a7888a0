"""10,000 runs on PostgreSQL against the same on SQLite: the team store's cost, side by side in one run.

Two real MLflow servers (`mlops-local serve mlflow`), one on the SQLite store in its MLOPS_HOME, one on
a throwaway PostgreSQL 15 cluster started as the tests start it (tests/postgres.py), each holding the
same 10,000 runs: 100 finished sweeps of 100 trials, tagged as the Sweep page logs them (bench_ui's
runs, inserted in bulk with MLflow's table models: benchmarks/seed_runs.py). The stores take turns
within each round; medians over the rounds, and the ratio PostgreSQL / SQLite (goal: at most 1.5x
on each):

a. the Runs page's first view: the experiment's id and its first page of 100 runs (one row per sweep,
   newest first), as the page asks for them, through a new client (cold: no cache of ours); three
   views a store and round, the stores alternating;
b. the exporter's full re-read after a restart: the MLflow sync's first pass over every finished run
   (a new exporter and sync, as a restarted UI has);
c. `mlops-local train` (ridge on diabetes, a CLI process against each server): wall time, and its
   overhead (wall time minus fit and predict).

The machine's load is printed before and after: other work moves every figure, not the ratios of
the same round as much.
Run: .venv/bin/python -m benchmarks.bench_team_store [--rounds 5] [--sweeps 100 --trials 100]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_ui import BENCH_EXPERIMENT
from benchmarks.seed_runs import seed_sweeps
from mlops_local import runs
from mlops_local.metrics.exporter import ModelMetricsExporter
from mlops_local.metrics.registry import build_registry
from mlops_local.metrics.sync import MlflowSync
from mlops_local.settings import Settings
from mlops_local.tracking import new_client
from tests.postgres import PostgresCluster, missing_reason, new_cluster
from tests.services import MLOPS, ROOT, stack_env, start_service

STORES = ("sqlite", "postgresql")
GOAL = 1.5
RUNS_VIEWS = 3  # Runs page views per store and round


def uptime() -> str:
    """The load averages, as `uptime` prints them."""
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def start_cluster() -> PostgresCluster:
    """A throwaway PostgreSQL cluster as the tests start one (as ``nobody`` when run as root)."""
    reason = missing_reason()
    if reason is not None:
        raise SystemExit(reason)
    cluster = new_cluster("bench-pg-")
    try:
        cluster.init_and_start()
    except BaseException:
        shutil.rmtree(cluster.root, ignore_errors=True)
        raise
    return cluster


def runs_first_view(settings: Settings) -> float:
    """Seconds for the Runs page's first view of the big experiment, through a new client."""
    t0 = time.perf_counter()
    client = new_client(settings.effective_tracking_uri, settings)
    exp_id = runs.experiment_id(client, BENCH_EXPERIMENT)
    page = runs.runs_page(client, exp_id, trials=False, max_results=runs.PAGE_SIZES[0])
    seconds = time.perf_counter() - t0
    assert not page.frame.empty, "the Runs page's experiment is empty"
    return seconds


def exporter_full_read(settings: Settings) -> tuple[float, int]:
    """(seconds, runs read) of the sync's first full pass, as after a restart of the exporter."""
    client = new_client(settings.effective_tracking_uri, settings)
    exporter = ModelMetricsExporter(build_registry(), settings, client=client)
    result = MlflowSync(client, exporter).full_read()
    return result.seconds, result.fetched


def cli_train(env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, overhead seconds = wall minus fit and predict) of one `mlops-local train`."""
    t0 = time.perf_counter()
    done = subprocess.run([*MLOPS, "train", "--json", "--model", "ridge", "--dataset", "diabetes",
                           "--experiment", "bench-train"], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"mlops-local train failed: {done.stderr[-2000:]}")
    durations = json.loads(done.stdout)["durations"]
    return wall, wall - durations["fit_s"] - durations["predict_s"]


def stop_cleanly_on_sigterm() -> None:
    """SIGTERM runs the ``finally`` blocks (servers, the cluster and temp folders) like Ctrl-C does."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def seeded_bench_args(doc: str, rounds: int) -> argparse.Namespace:
    """--rounds, --sweeps, --trials of a benchmark over seeded sweeps; quiet logging; SIGTERM cleans up."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--sweeps", type=int, default=100)
    parser.add_argument("--trials", type=int, default=100, help="trials per sweep")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    stop_cleanly_on_sigterm()
    return args


def main() -> int:
    args = seeded_bench_args(__doc__, rounds=5)
    load_before = uptime()
    cluster = start_cluster()
    base = Path(tempfile.mkdtemp(prefix="bench-team-store-"))
    envs: dict[str, dict[str, str]] = {}
    services = []
    figures: dict[str, dict[str, list[float]]] = {s: {"runs": [], "sync": [], "train": [], "overhead": []}
                                                  for s in STORES}
    try:
        for store in STORES:
            extra = {"MLOPS_BACKEND_STORE_URI": cluster.create_database()} if store == "postgresql" else {}
            env = stack_env(base / store, **extra)
            services.append(start_service("mlflow", env, base / store / "logs"))
            env["MLFLOW_TRACKING_URI"] = services[-1].url
            envs[store] = env
            settings = Settings.from_env(env)
            t0 = time.perf_counter()
            seed_sweeps(new_client(services[-1].url, settings), settings.backend_store_uri, BENCH_EXPERIMENT,
                        args.sweeps, args.trials)
            print(f"{store}: {args.sweeps * (args.trials + 1)} runs seeded in "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
        for store in STORES:  # warm-up: imports, connections, the servers' first queries
            settings = Settings.from_env(envs[store])
            runs_first_view(settings)
            cli_train(envs[store])
        fetched = {}
        for i in range(args.rounds):
            order = STORES if i % 2 == 0 else tuple(reversed(STORES))
            # The Runs view takes half a second: three pairs back to back, before the heavy full
            # re-reads, so that both stores meet the same machine; its median over all of them.
            for _ in range(RUNS_VIEWS):
                for store in order:
                    figures[store]["runs"].append(runs_first_view(Settings.from_env(envs[store])))
            for store in order:
                env = envs[store]
                settings = Settings.from_env(env)
                seconds, fetched[store] = exporter_full_read(settings)
                figures[store]["sync"].append(seconds)
                wall, overhead = cli_train(env)
                figures[store]["train"].append(wall)
                figures[store]["overhead"].append(overhead)
            print(f"  round {i}: " + "; ".join(
                f"{s} runs {figures[s]['runs'][-1]:.3f} s, sync {figures[s]['sync'][-1]:.2f} s, "
                f"train {figures[s]['train'][-1]:.2f} s" for s in STORES), flush=True)
    finally:
        for service in reversed(services):
            service.stop()
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)

    total = args.sweeps * (args.trials + 1)
    print(f"\nResults: {total} runs per store, medians of {args.rounds} rounds ({RUNS_VIEWS} Runs views a "
          f"round; goal: PostgreSQL <= {GOAL}x SQLite)")
    labels = {"runs": "a. Runs page first view (100 rows)", "sync": "b. exporter full re-read",
              "train": "c. mlops-local train, wall", "overhead": "c. mlops-local train, overhead"}
    print(f"  {'':38s} {'SQLite':>9s} {'PostgreSQL':>11s} {'ratio':>7s}")
    for key, label in labels.items():
        lite, pg = (statistics.median(figures[s][key]) for s in STORES)
        ratio = pg / lite
        print(f"  {label:38s} {lite:8.3f}s {pg:10.3f}s {ratio:6.2f}x"
              + ("" if ratio <= GOAL else "   over the goal"))
    print(f"  runs read by the full re-read: {fetched}")
    print(f"  load before: {load_before}\n  load after:  {uptime()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
