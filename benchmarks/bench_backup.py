"""`mlops-local backup` of 10,000 runs with their artifacts, while the stack runs. Goal: under 30 s.

A home on the SQLite store with a running MLflow server and Prometheus holds 10,000 finished runs (100
sweeps of 100 trials, benchmarks/seed_runs.py); each run carries the artifacts of one real training
(`mlops-local train --model ridge`: its model folder and its plots), written straight into the
artifact store as copies of that training's files. Measured, rounds alternating, medians: the
command as a person runs it (a CLI process), against the naive baseline in the same run: GNU tar of
the whole MLOPS_HOME through ``gzip -1`` (the same level as ours, one core; no consistency, no
manifest, no checksums). The machine's load is printed
before and after.
Run: .venv/bin/python -m benchmarks.bench_backup [--rounds 3] [--sweeps 100 --trials 100]
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.bench_team_store import seeded_bench_args, uptime
from benchmarks.bench_ui import BENCH_EXPERIMENT
from benchmarks.seed_runs import seed_sweeps
from mlops_local.settings import Settings
from mlops_local.tracking import new_client
from tests.services import MLOPS, ROOT, stack_env, start_service

GOAL_S = 30.0


def template_artifacts(env: dict[str, str], settings: Settings) -> Path:
    """The artifact folder of one real CLI training (ridge on co2_canada)."""
    done = subprocess.run([*MLOPS, "train", "--json", "--model", "ridge", "--experiment", "bench-template"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"mlops-local train failed: {done.stderr[-2000:]}")
    result = json.loads(done.stdout)
    return settings.artifacts_dir / result["experiment_id"] / result["run_id"] / "artifacts"


def copy_artifacts(template: Path, settings: Settings, experiment_id: str,
                   run_ids: list[str]) -> tuple[int, int]:
    """Copies of ``template``'s files as every run's artifacts; (files, bytes) written."""
    files = [(p.relative_to(template), p.read_bytes()) for p in sorted(template.rglob("*")) if p.is_file()]
    folders = sorted({rel.parent for rel, _ in files})
    for run_id in run_ids:
        root = settings.artifacts_dir / experiment_id / run_id / "artifacts"
        for folder in folders:
            (root / folder).mkdir(parents=True, exist_ok=True)
        for rel, data in files:
            (root / rel).write_bytes(data)
    return len(files) * len(run_ids), sum(len(d) for _, d in files) * len(run_ids)


def timed_backup(env: dict[str, str], out: Path) -> tuple[float, int, str]:
    """(seconds, archive bytes, the command's line) of `mlops-local backup OUT`."""
    t0 = time.perf_counter()
    done = subprocess.run([*MLOPS, "backup", str(out)], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=1800)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"mlops-local backup failed: {done.stderr[-2000:]}")
    return seconds, out.stat().st_size, done.stdout.strip()


def timed_tar(home: Path, out: Path) -> tuple[float, int]:
    """(seconds, bytes) of the naive baseline: tar of the whole home through gzip -1."""
    t0 = time.perf_counter()
    subprocess.run(["tar", "-I", "gzip -1", "-cf", str(out), "-C", str(home.parent), home.name], check=True,
                   capture_output=True, timeout=1800)
    return time.perf_counter() - t0, out.stat().st_size


def main() -> int:
    args = seeded_bench_args(__doc__, rounds=3)
    load_before = uptime()
    base = Path(tempfile.mkdtemp(prefix="bench-backup-"))
    home, outs = base / "home", base / "archives"
    outs.mkdir()
    env = stack_env(home)
    settings = Settings.from_env(env)
    services = [start_service("mlflow", env, base / "logs"), start_service("prometheus", env, base / "logs")]
    env["MLFLOW_TRACKING_URI"] = services[0].url
    ours: list[float] = []
    naive: list[float] = []
    try:
        template = template_artifacts(env, settings)
        client = new_client(services[0].url, settings)
        t0 = time.perf_counter()
        run_ids = seed_sweeps(client, settings.backend_store_uri, BENCH_EXPERIMENT, args.sweeps, args.trials)
        experiment_id = client.get_experiment_by_name(BENCH_EXPERIMENT).experiment_id
        files, size = copy_artifacts(template, settings, experiment_id, run_ids)
        per_run = ", ".join(f"{p.relative_to(template)} {p.stat().st_size / 1e3:.0f} kB"
                            for p in sorted(template.rglob("*")) if p.is_file())
        print(f"{len(run_ids)} runs seeded with {files} artifact files ({size / 1e6:.0f} MB; per run: "
              f"{per_run}) in {time.perf_counter() - t0:.0f} s", flush=True)
        archive_size = tar_size = 0
        line = ""
        for i in range(args.rounds):
            out = outs / f"backup-{i}.tar.gz"
            seconds, archive_size, line = timed_backup(env, out)
            ours.append(seconds)
            out.unlink()
            tar_s, tar_size = timed_tar(home, outs / f"naive-{i}.tar.gz")
            naive.append(tar_s)
            (outs / f"naive-{i}.tar.gz").unlink()
            print(f"  round {i}: mlops-local backup {seconds:.1f} s ({archive_size / 1e6:.0f} MB), "
                  f"tar | gzip -1 {tar_s:.1f} s ({tar_size / 1e6:.0f} MB)", flush=True)
    finally:
        for service in reversed(services):
            service.stop()
        shutil.rmtree(base, ignore_errors=True)

    ours_m, naive_m = statistics.median(ours), statistics.median(naive)
    print(f"\nResults: backup of {len(run_ids)} runs with their artifacts, medians of {args.rounds} rounds")
    print(f"  mlops-local backup  {ours_m:6.1f} s  archive {archive_size / 1e6:.0f} MB  (goal < {GOAL_S:g} s)"
          + ("" if ours_m < GOAL_S else "   over the goal"))
    print(f"  naive tar | gzip -1 {naive_m:6.1f} s  archive {tar_size / 1e6:.0f} MB  "
          f"ratio {ours_m / naive_m:.2f}x")
    print(f"  the command said: {line}")
    print(f"  load before: {load_before}\n  load after:  {uptime()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
