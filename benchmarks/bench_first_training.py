"""A process's first training, with and without the UI's background warm-up, against its second.

Each round starts two fresh processes that import the training stack as the UI's Train page does and
then train twice (random_forest, 50 trees, co2_canada) against a private MLflow server:

- baseline, "cold": the first training pays what a process's first training pays once (skops' import,
  sklearn's lazy imports, MLflow's first model save);
- "warmed": :func:`mlops_local.ml.warmup.warm_up` ran first (in the UI it runs in the background
  while the user picks a model; its own time is reported, not counted).

The second training of each process is the steady cost. Medians over the rounds.
Run: .venv/bin/python -m benchmarks.bench_first_training [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(warm: bool) -> int:
    """One fresh process: the Train page's imports, the optional warm-up, then two timed trainings."""
    import mlops_local.ui.common  # noqa: F401 - what the UI process has imported when a page shows
    from mlops_local.ml.training import train
    from mlops_local.ml.types import DatasetSpec, TrainRequest
    from mlops_local.settings import Settings

    settings = Settings.from_env()
    warm_s = None
    if warm:
        from mlops_local.ml.warmup import warm_up

        start = time.perf_counter()
        warm_up(prime_models=True)
        warm_s = time.perf_counter() - start
    times = []
    for _ in range(2):
        start = time.perf_counter()
        train(TrainRequest(DatasetSpec("co2_canada"), "random_forest", params={"n_estimators": 50}, seed=42,
                           source="ui", experiment="bench-first-training"), settings)
        times.append(time.perf_counter() - start)
    print(json.dumps({"first_s": times[0], "second_s": times[1], "warm_up_s": warm_s}))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", choices=("cold", "warm"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child == "warm")

    sys.path.insert(0, str(ROOT))
    from tests.services import stack_env, start_service

    home = Path(tempfile.mkdtemp(prefix="bench-first-"))
    env = stack_env(home)
    server = start_service("mlflow", env, home / "logs")
    env["MLFLOW_TRACKING_URI"] = server.url
    rows: dict[str, list[dict]] = {"cold": [], "warm": []}
    try:
        for i in range(args.rounds):
            for kind in ("cold", "warm"):
                command = [sys.executable, "-m", "benchmarks.bench_first_training", "--child", kind]
                done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, check=True)
                rows[kind].append(json.loads(done.stdout.strip().splitlines()[-1]))
            cold, warm = rows["cold"][-1], rows["warm"][-1]
            print(f"  round {i}: first training cold {cold['first_s']:.2f} s, after the warm-up "
                  f"{warm['first_s']:.2f} s, second {cold['second_s']:.2f} s", flush=True)
    finally:
        server.stop()

    def med(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in rows[kind])

    print(f"\nFirst training of a process (random_forest, 50 trees, co2_canada; medians of {args.rounds}):")
    print(f"  baseline, cold process       {med('cold', 'first_s'):.2f} s")
    print(f"  after the warm-up            {med('warm', 'first_s'):.2f} s   (warm-up itself "
          f"{med('warm', 'warm_up_s'):.2f} s, in the background)")
    steady = statistics.median(r["second_s"] for kind in rows for r in rows[kind])
    print(f"  second training (steady)     {steady:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
