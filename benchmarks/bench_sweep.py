"""Benchmark: a parallel sweep against a sequential loop of the same tracked trainings, same run.

    .venv/bin/python benchmarks/bench_sweep.py [--trials 24] [--jobs 2] [--repeat 1]
                                               [--param-range n_estimators=20:400:log ...]

Starts a private MLflow server (tests.services) in a temporary MLOPS_HOME, then measures, in turn:

- baseline: ``train()`` called once per trial, one after another, as a user's loop would (each run logs
  its model: the default);
- baseline without models: the same loop with ``log_model=False``, i.e. exactly the work of one sweep
  trial, so the sweep's speedup over it is what parallelism (and nothing else) buys;
- the sweep: ``run_sweep`` with ``--jobs`` local processes, the same trials (random, seeded; the
  trials' params are checked equal), wall time including worker start-up, the best model's re-fit
  and logging, and the parent run's charts.

Tracking overhead per trial = the trial's wall time (``durations.total_s``, measured in the process
that trains) minus its fit and predict time; medians are reported. The load average is printed
before and after each phase: the machine is shared, so read the ratios with it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mlops_local.ml.sweep import run_sweep  # noqa: E402
from mlops_local.ml.sweep_exec import cores  # noqa: E402
from mlops_local.ml.sweep_space import build_space, parse_range_args  # noqa: E402
from mlops_local.ml.sweep_strategies import RandomStrategy  # noqa: E402
from mlops_local.ml.sweep_types import SweepSpec  # noqa: E402
from mlops_local.ml.training import train  # noqa: E402
from mlops_local.ml.types import DatasetSpec, TrainRequest  # noqa: E402
from mlops_local.settings import Settings  # noqa: E402
from mlops_local.tracking import get_client  # noqa: E402
from tests.services import stack_env, start_service  # noqa: E402

DATASET = DatasetSpec("co2_canada")
MODEL = "random_forest"
SEED = 42


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def overhead(durations: dict[str, float]) -> float:
    return durations["total_s"] - durations["fit_s"] - durations["predict_s"]


def sequential(settings: Settings, trials: list[dict[str, object]], log_model: bool, experiment: str) -> dict:
    """``train()`` once per trial, in this process, one after another."""
    client = get_client(settings)
    start = time.perf_counter()
    results = [train(TrainRequest(DATASET, MODEL, params=params, seed=SEED, experiment=experiment,
                                  source="cli", log_model=log_model), settings, client=client)
               for params in trials]
    wall = time.perf_counter() - start
    return {"wall_s": wall, "overheads": [overhead(r.durations) for r in results],
            "fits": [r.durations["fit_s"] for r in results], "scores": [r.metrics["r2"] for r in results]}


def sweep(settings: Settings, ranges: dict[str, str], trials: int, jobs: int, models: str,
          experiment: str) -> dict:
    """``run_sweep`` on ``jobs`` local processes; ``models``: all (default) or best (re-fit at the end)."""
    start = time.perf_counter()
    result = run_sweep(SweepSpec(DATASET, MODEL, strategy="random", trials=trials, ranges=ranges, seed=SEED,
                                 jobs=jobs, experiment=experiment, models=models), settings)
    wall = time.perf_counter() - start
    assert result.status == "FINISHED", result.warnings
    done = [t for t in result.trials if t.status == "FINISHED"]
    return {"wall_s": wall, "overheads": [overhead(t.durations) for t in done],
            "fits": [t.durations["fit_s"] for t in done], "scores": [t.score for t in result.trials],
            "params": [t.params for t in result.trials], "model_uri": result.model_uri}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="measure each phase this many times (medians)")
    parser.add_argument("--param-range", action="append", default=[], metavar="K=LO:HI[:log]",
                        help="narrow the catalog's ranges (default: the catalog's full ranges)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    ranges = parse_range_args(args.param_range)
    space = build_space(MODEL, ranges)
    strategy = RandomStrategy(space, args.trials, SEED)
    trials = [space.complete(strategy.values(n)) for n in range(args.trials)]

    home = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    env = stack_env(home)
    server = start_service("mlflow", env, home / "logs")
    env["MLFLOW_TRACKING_URI"] = server.url
    os.environ.update({k: v for k, v in env.items() if k.startswith("MLFLOW_")})
    settings = Settings.from_env(env)
    print(f"{args.trials} random {MODEL} trials on {DATASET.name}, seed {SEED}, {cores()} cores, "
          f"space: {space.describe()}")
    phases = {  # interleaved, so a change of the machine's load hits every phase alike
        "baseline": lambda i: sequential(settings, trials, True, f"bench-seq-{i}"),
        "sweep": lambda i: sweep(settings, ranges, args.trials, args.jobs, "all", f"bench-sweep-{i}"),
        "baseline_no_model": lambda i: sequential(settings, trials, False, f"bench-seq-nomodel-{i}"),
        "sweep_best_model": lambda i: sweep(settings, ranges, args.trials, args.jobs, "best",
                                            f"bench-sweep-best-{i}"),
    }
    rows: dict[str, list[dict]] = {name: [] for name in phases}
    try:
        train(TrainRequest(DATASET, MODEL, params={"n_estimators": 5}, experiment="bench-warmup",
                           source="cli"), settings)  # imports and the experiment cache, outside the timings
        for i in range(args.repeat):
            for name, run in phases.items():
                before = load()
                measured = run(i)
                measured["load"] = f"{before} -> {load()}"
                rows[name].append(measured)
                print(f"  {name:<18} {measured['wall_s']:7.1f} s   load {measured['load']}", flush=True)
    finally:
        server.stop()

    sweep_run = rows["sweep"][0]
    assert sweep_run["params"] == trials, "the sweep did not run the same trials"
    assert sweep_run["scores"] == rows["baseline"][0]["scores"], "same trials, different scores"

    def med(name: str, key: str) -> float:
        values = [v for r in rows[name] for v in (r[key] if isinstance(r[key], list) else [r[key]])]
        return statistics.median(values)

    summary = {
        "trials": args.trials, "jobs": args.jobs, "cores": cores(), "repeat": args.repeat,
        "wall_s": {k: round(statistics.median(r["wall_s"] for r in v), 2) for k, v in rows.items()},
        # Same work per trial (each logs its model), sequential vs parallel: the headline figure.
        "speedup": round(med("baseline", "wall_s") / med("sweep", "wall_s"), 2),
        # Trials without models (+ the best re-fitted at the end) vs the sequential loop without models.
        "speedup_models_best": round(med("baseline_no_model", "wall_s") / med("sweep_best_model", "wall_s"),
                                     2),
        "overhead_per_trial_median_s": {k: round(med(k, "overheads"), 3) for k in rows},
        "fit_sum_s": {k: round(statistics.median(sum(r["fits"]) for r in rows[k]), 1) for k in rows},
        "load": {k: [r["load"] for r in v] for k, v in rows.items()},
    }
    print()
    wall, o = summary["wall_s"], summary["overhead_per_trial_median_s"]
    print(f"{args.trials} trials, every one logging its model (the default; what train() does):")
    print(f"  sequential train() loop  {wall['baseline']:7.1f} s   overhead/trial {o['baseline']:.3f} s")
    print(f"  sweep, {args.jobs} jobs           {wall['sweep']:7.1f} s   overhead/trial {o['sweep']:.3f} s   "
          f"-> {summary['speedup']:.2f}x faster (target >= 1.7x)")
    print(f"{args.trials} trials without models (sweep --models best re-fits and logs the best at the end):")
    print(f"  sequential train() loop  {wall['baseline_no_model']:7.1f} s   overhead/trial "
          f"{o['baseline_no_model']:.3f} s")
    print(f"  sweep, {args.jobs} jobs           {wall['sweep_best_model']:7.1f} s   overhead/trial "
          f"{o['sweep_best_model']:.3f} s   -> {summary['speedup_models_best']:.2f}x faster")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
