"""Benchmark: `mlops-local sweep --jobs 2` against a sequential loop of the same tracked trainings.

    .venv/bin/python benchmarks/bench_sweep.py [--trials 24] [--jobs 2] [--repeat 1]
                                               [--param-range n_estimators=20:400:log ...]

Starts a private MLflow server (tests.services) in a temporary MLOPS_HOME. Both sides run the same
trials: random_forest on co2_canada, the sweep's seeded random draws over the catalog's ranges (params
and scores are checked equal). Each is measured two ways:

- fresh processes, as a user runs them from a shell, so both pay their imports (~2 s) once: the
  baseline is a Python loop calling ``train()`` once per trial (this script with ``--loop``), the sweep
  is ``mlops-local sweep`` with ``--jobs`` local processes (worker start-up, the parent run's charts and
  the summary included);
- one warm process, as the UI runs them (this script with ``--warm``): the training stack imported, one
  training and one small sweep done first (the sweep starts the preloaded forkserver the UI forks its
  workers from), then the loop of ``train()`` calls, then ``run_sweep()``.

Two pairs each, interleaved so that a change of the shared machine's load hits both sides alike:

- every trial logs its model, plots and dataset input (``--models all``; what ``train()`` does by
  default);
- the same lean logging on both sides: the loop's trainings log params, metrics and tags only, the
  sweep's trials too (``--models best``, the sweep's default: a trial's worker keeps its model and
  plots while it beats the best so far; the winner's are uploaded at the end, with the dataset input).

A third ratio crosses them, as a user meets them: the default sweep (``--models best``) against a loop
of default ``train()`` calls (everything logged), both measured above in the same repeat.

The machine is shared: before each pair, the bare fits of the same trials (no MLflow, no imports timed)
run in one process and then in a pool of ``--jobs`` warm processes; that ratio is the ceiling any
parallel sweep can reach at that moment, and it is printed next to the sweep's speedup.

Tracking overhead per trial = the trial's wall time (``durations.total_s``, measured in the process
that trains) minus its fit and predict time; medians are reported. The load average is printed before
and after each measurement: the machine is shared, read the ratios with it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATASET, MODEL, SEED = "co2_canada", "random_forest", 42


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def busy_cpu_s() -> float:
    """CPU seconds all processes of the machine have used since boot (from /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(x) for x in fields]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_s(server_pid: int) -> float:
    """CPU seconds of this benchmark: itself, its finished children (and theirs), the MLflow server."""
    import psutil

    times = os.times()
    server = psutil.Process(server_pid)
    tree = [server, *server.children(recursive=True)]
    return (times.user + times.system + times.children_user + times.children_system
            + sum(sum(p.cpu_times()[:2]) for p in tree))


def overhead(durations: dict[str, float]) -> float:
    return durations["total_s"] - durations["fit_s"] - durations["predict_s"]


def _request(args: argparse.Namespace, params: dict, experiment: str):  # lazy import
    """One trial of the loop: everything logged (``--models all``), or params, metrics and tags only."""
    from mlops_local.ml.types import DatasetSpec, TrainRequest

    full = args.models == "all"
    return TrainRequest(DatasetSpec(DATASET), MODEL, params=params, seed=SEED, source="cli",
                        experiment=experiment, log_model=full, log_plots=full, log_dataset=full)


def loop(args: argparse.Namespace) -> int:
    """The baseline, in this fresh process: train() once per trial, one after another; JSON on stdout."""
    from mlops_local.ml.training import train
    from mlops_local.settings import Settings
    from mlops_local.sweep.space import build_space, parse_range_args

    settings = Settings.from_env()
    space = build_space(MODEL, parse_range_args(args.param_range))
    planned = dict(_planned(space, args.trials))
    trials = []
    for number in range(args.trials):
        params = space.complete(planned[number])
        result = train(_request(args, params, args.experiment), settings)
        trials.append({"number": number, "params": params, "score": result.metrics["r2"],
                       "durations": result.durations})
    print(json.dumps({"trials": trials}))
    return 0


def warm(args: argparse.Namespace) -> int:
    """Both sides in this one warm process, as the UI runs them: the training stack imported, one
    training and one small sweep done first (the sweep starts the preloaded forkserver the UI's sweeps
    fork their workers from). Then the loop of ``train()`` calls and ``run_sweep()``; JSON on stdout."""
    from mlops_local.ml.training import train
    from mlops_local.ml.types import DatasetSpec, TrainRequest
    from mlops_local.settings import Settings
    from mlops_local.sweep.run import run_sweep
    from mlops_local.sweep.space import build_space, parse_range_args
    from mlops_local.sweep.spec import SweepSpec

    settings = Settings.from_env()
    train(TrainRequest(DatasetSpec(DATASET), "ridge", seed=SEED, source="cli",
                       experiment=f"{args.experiment}-warmup"), settings)
    run_sweep(SweepSpec(DatasetSpec(DATASET), "ridge", strategy="random", trials=2, jobs=args.jobs, seed=SEED,
                        experiment=f"{args.experiment}-warmup", models="none"), settings)
    space = build_space(MODEL, parse_range_args(args.param_range))
    planned = dict(_planned(space, args.trials))
    start = time.perf_counter()
    trials = []
    for number in range(args.trials):
        params = space.complete(planned[number])
        result = train(_request(args, params, f"{args.experiment}-loop"), settings)
        trials.append({"number": number, "params": params, "score": result.metrics["r2"],
                       "durations": result.durations})
    loop_s = time.perf_counter() - start
    start = time.perf_counter()
    ranges = dict(r.split("=", 1) for r in args.param_range)
    swept = run_sweep(SweepSpec(DatasetSpec(DATASET), MODEL, strategy="random", trials=args.trials,
                                jobs=args.jobs, seed=SEED, ranges=ranges,
                                experiment=f"{args.experiment}-sweep",
                                models="all" if args.models == "all" else "best"), settings)
    sweep_s = time.perf_counter() - start
    print(json.dumps({"loop_s": loop_s, "sweep_s": sweep_s, "loop": trials,
                      "sweep": [t.to_dict() for t in swept.trials]}))
    return 0


def _planned(space, trials: int) -> list[tuple[int, dict]]:  # lazy import
    """The sweep's seeded random trials (number, searched values)."""
    from mlops_local.sweep.samplers import make_search

    return make_search("random", space, total=trials, seed=SEED, grid_points=3, higher_is_better=True).plan()


def _fit(params: dict) -> float:
    """Fit one trial's pipeline, untracked (the parallelism ceiling's unit of work)."""
    from mlops_local.ml import evaluation, preprocessing
    from mlops_local.ml.catalog import get_model
    from mlops_local.ml.datasets import load_dataset
    from mlops_local.ml.types import DatasetSpec

    data = load_dataset(DatasetSpec(DATASET))
    X_train, _, y_train, _ = evaluation.split(data.X, data.y, 0.2, SEED)
    pipeline = preprocessing.build_pipeline(get_model(MODEL).build(params, seed=SEED), data.numeric_features,
                                            data.categorical_features, False)
    start = time.perf_counter()
    pipeline.fit(X_train, y_train)
    return time.perf_counter() - start


def ceiling(trials: list[dict], jobs: int) -> float:
    """Speedup the machine gives right now to the bare fits: a pool of ``jobs`` warm processes vs one."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    start = time.perf_counter()
    for params in trials:
        _fit(params)
    sequential = time.perf_counter() - start
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as pool:
        list(pool.map(_fit, trials[:jobs]))  # warm
        start = time.perf_counter()
        list(pool.map(_fit, trials))
        parallel = time.perf_counter() - start
    return sequential / parallel


def timed(command: list[str], env: dict[str, str], server_pid: int) -> tuple[float, dict, str, float]:
    """Wall time, JSON output, load average before -> after, cores used by other processes meanwhile."""
    before, busy, own = load(), busy_cpu_s(), own_cpu_s(server_pid)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    others = (busy_cpu_s() - busy) - (own_cpu_s(server_pid) - own)
    if done.returncode != 0:
        raise RuntimeError(f"{command[:4]} failed ({done.returncode}): {done.stderr[-2000:]}")
    output = json.loads(done.stdout.strip().splitlines()[-1])
    return wall, output, f"{before} -> {load()}", max(0.0, others / wall)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="measure each side this many times (medians)")
    parser.add_argument("--param-range", action="append", default=[], metavar="K=LO:HI[:log]",
                        help="narrow the catalog's ranges (default: the catalog's full ranges)")
    parser.add_argument("--loop", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--warm", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--models", default="all", help=argparse.SUPPRESS)
    parser.add_argument("--experiment", default="bench-loop", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loop:
        return loop(args)
    if args.warm:
        return warm(args)

    from tests.services import stack_env, start_service

    home = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    env = stack_env(home)
    server = start_service("mlflow", env, home / "logs")
    env["MLFLOW_TRACKING_URI"] = server.url
    ranges = [f"--param-range={r}" for r in args.param_range]
    print(f"{args.trials} random {MODEL} trials on {DATASET}, seed {SEED}, {os.cpu_count()} cores, "
          f"ranges: {args.param_range or 'the catalog'}; both sides start as fresh processes")
    rows: dict[str, list[dict]] = {}
    ceilings: list[float] = []
    from mlops_local.sweep.space import build_space, parse_range_args

    space = build_space(MODEL, parse_range_args(args.param_range))
    planned = dict(_planned(space, args.trials))
    fit_params = [space.complete(planned[n]) for n in range(args.trials)]
    try:
        for i in range(args.repeat):
            before = load()
            ceilings.append(ceiling(fit_params, args.jobs))
            print(f"  ceiling      {ceilings[-1]:.2f}x   bare fits, {args.jobs} warm processes vs 1, no "
                  f"tracking; load {before} -> {load()}", flush=True)
            for models in ("all", "best"):
                sides = {
                    f"loop/{models}": [sys.executable, __file__, "--loop", "--trials", str(args.trials),
                                       "--models", "all" if models == "all" else "none",
                                       "--experiment", f"bench-loop-{models}-{i}", *ranges],
                    f"sweep/{models}": [
                        sys.executable, "-m", "mlops_local.cli", "sweep", "--dataset", DATASET, "--model",
                        MODEL, "--strategy", "random", "--trials", str(args.trials), "--seed", str(SEED),
                        "--jobs", str(args.jobs), "--models", models, "--experiment",
                        f"bench-sweep-{models}-{i}", "--json", *ranges],
                }
                for name, command in sides.items():
                    wall, out, during, others = timed(command, env, server.proc.pid)
                    trials = [t for t in out["trials"] if t.get("status", "FINISHED") == "FINISHED"]
                    rows.setdefault(name, []).append({
                        "wall_s": wall, "load": during, "other_cores": others,
                        "overheads": [overhead(t["durations"]) for t in trials],
                        "fit_sum_s": sum(t["durations"]["fit_s"] for t in trials),
                        "trials": [(t["number"], t["params"], t["score"]) for t in out["trials"]]})
                    print(f"  {name:<12} {wall:7.1f} s   load {during}   other processes used {others:.2f} "
                          "cores meanwhile", flush=True)
                _, out, during, others = timed(
                    [sys.executable, __file__, "--warm", "--trials", str(args.trials),
                     "--jobs", str(args.jobs), "--models", "all" if models == "all" else "none",
                     "--experiment", f"bench-warm-{models}-{i}", *ranges], env, server.proc.pid)
                for side in ("loop", "sweep"):
                    ok = [t for t in out[side] if t.get("status", "FINISHED") == "FINISHED"]
                    rows.setdefault(f"warm {side}/{models}", []).append({
                        "wall_s": out[f"{side}_s"], "load": during, "other_cores": others,
                        "overheads": [overhead(t["durations"]) for t in ok],
                        "fit_sum_s": sum(t["durations"]["fit_s"] for t in ok),
                        "trials": [(t["number"], t["params"], t["score"]) for t in out[side]]})
                print(f"  warm, in one process: loop/{models} {out['loop_s']:.1f} s, sweep/{models} "
                      f"{out['sweep_s']:.1f} s   load {during}", flush=True)
    finally:
        server.stop()

    for models in ("all", "best"):
        for prefix in ("", "warm "):
            loop_trials, sweep_trials = rows[f"{prefix}loop/{models}"][0], rows[f"{prefix}sweep/{models}"][0]
            assert loop_trials["trials"] == sweep_trials["trials"], \
                "the sweep and the loop did not run the same trials with the same scores"

    def med(name: str, key: str) -> float:
        values = [v for r in rows[name] for v in (r[key] if isinstance(r[key], list) else [r[key]])]
        return statistics.median(values)

    summary = {
        "trials": args.trials, "jobs": args.jobs, "cores": os.cpu_count(), "repeat": args.repeat,
        "wall_s": {k: round(med(k, "wall_s"), 2) for k in rows},
        "speedup": {f"{p}{name}": round(med(f"{p}loop/{loop_m}", "wall_s") / med(f"{p}sweep/{sweep_m}",
                                                                                   "wall_s"), 2)
                    for p in ("", "warm ")
                    for name, loop_m, sweep_m in (("all", "all", "all"), ("best", "best", "best"),
                                                  ("default", "all", "best"))},
        "ceiling": round(statistics.median(ceilings), 2),
        "overhead_per_trial_median_s": {k: round(med(k, "overheads"), 3) for k in rows},
        "fit_sum_s": {k: round(med(k, "fit_sum_s"), 1) for k in rows},
        "load": {k: [r["load"] for r in v] for k, v in rows.items()},
        "other_cores": {k: [round(r["other_cores"], 2) for r in v] for k, v in rows.items()},
    }
    wall, over = summary["wall_s"], summary["overhead_per_trial_median_s"]
    print()
    print(f"The machine gave bare fits a {summary['ceiling']:.2f}x speedup with {args.jobs} processes "
          "meanwhile (the ceiling for any parallel sweep here).")
    fits = summary["fit_sum_s"]
    for models, label in (("all", "every trial logs model, plots and dataset (--models all, like train())"),
                          ("best", "lean: each trial logs params, metrics, tags; the sweep adds the best "
                                   "trial's model, plots and dataset (--models best, the default)")):
        for prefix, how in (("", "fresh processes (CLI start-up included on both sides)"),
                            ("warm ", "one warm process, as the UI runs them")):
            loop_key, sweep_key = f"{prefix}loop/{models}", f"{prefix}sweep/{models}"
            print(f"{args.trials} trials, {label}; {how}:")
            print(f"  sequential train() loop {wall[loop_key]:7.1f} s   overhead/trial {over[loop_key]:.3f} s"
                  f"   sum of fits {fits[loop_key]:.1f} s")
            print(f"  sweep, {args.jobs} jobs           {wall[sweep_key]:7.1f} s   overhead/trial "
                  f"{over[sweep_key]:.3f} s   sum of fits {fits[sweep_key]:.1f} s"
                  f"   -> {summary['speedup'][prefix + models]:.2f}x faster (target >= 1.7x)")
    for prefix, how in (("", "fresh processes"), ("warm ", "one warm process")):
        print(f"As a user meets them ({how}): default sweep {wall[prefix + 'sweep/best']:.1f} s vs a loop of "
              f"default train() calls {wall[prefix + 'loop/all']:.1f} s "
              f"-> {summary['speedup'][prefix + 'default']:.2f}x")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
