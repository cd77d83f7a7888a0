"""Time from `honcho start` to every required service healthy, and the stack's idle memory.

Each round starts the stack in a new home (a first start: MLflow creates its store), measures its idle
PSS, stops it and starts it again in the same home (a restart, the everyday case).
Baseline, in the same run: a default `mlflow server` alone (4 workers, job runner, huey consumers).
Run: .venv/bin/python -m benchmarks.bench_startup [--rounds 3] [--idle 10]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from tests.services import (
    HonchoStack,
    alive,
    free_port,
    process_tree,
    required_health_urls,
    stack_env,
    start_honcho,
)


def _wait_all(urls: list[str], timeout: float = 300.0) -> None:  # loaded: a default server took > 120 s
    pending, deadline = list(urls), time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(pending[0], timeout=1) as resp:
                if resp.status == 200:
                    pending.pop(0)
                    continue
        except OSError:
            pass
        time.sleep(0.05)
    if pending:
        raise TimeoutError(f"not healthy: {pending}")


def label(pid: int) -> str:
    """What a process of the stack is: `serve X`, a binary's name, honcho, sh."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    if "serve" in argv:
        return "serve " + argv[argv.index("serve") + 1]
    if any("honcho" in a for a in argv[:2]):
        return "honcho"
    if "-c" in argv and "sigwait" in argv[-2]:
        return "idle placeholder"
    return Path(argv[0]).name


def cpu_by_label(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) each kind of process of the tree has used so far: under load the
    wall time to healthy varies a lot, the CPU the start-up costs much less."""
    ticks, out = os.sysconf("SC_CLK_TCK"), {}
    for p in alive(process_tree(pid)):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            name = label(p)
        except OSError:
            continue
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return out


def tree_memory_mb(pid: int, by_label: dict[str, float] | None = None,
                   count_by_label: dict[str, float] | None = None) -> tuple[float, float, int]:
    """(RSS sum, PSS sum, process count) of a process tree, in MB; PSS and process count per label added
    to ``by_label`` and ``count_by_label``."""
    rss = pss = 0
    pids = alive(process_tree(pid))
    for p in pids:
        try:
            own = 0
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    own = int(line.split()[1])
            pss += own
            name = label(p)
            if by_label is not None:
                by_label[name] = by_label.get(name, 0.0) + own / 1024
            if count_by_label is not None:
                count_by_label[name] = count_by_label.get(name, 0) + 1
        except OSError:
            continue
    return rss / 1024, pss / 1024, len(pids)


def _start_until_healthy(env: dict[str, str], logs: Path) -> tuple[HonchoStack, float, dict[str, float]]:
    """A started stack, the seconds from `honcho start` to all its required services healthy and the CPU
    seconds each kind of process used until then."""
    t0 = time.monotonic()
    stack = start_honcho(env, logs)
    try:
        _wait_all(list(required_health_urls(env).values()))
        ready = time.monotonic() - t0
        return stack, ready, cpu_by_label(stack.proc.pid)
    except BaseException:
        stack.stop()
        raise


def measure_stack(idle: float) -> tuple[dict[str, float], dict[str, float]]:
    """(first start in a new home: ready time, memory, PSS and count by kind; restart in that home)."""
    with tempfile.TemporaryDirectory() as home:
        env = stack_env(Path(home), MLOPS_SCRAPE_INTERVAL="5", MLOPS_SYNC_INTERVAL="5")
        stack, ready, cpu = _start_until_healthy(env, Path(home) / "logs")
        try:
            time.sleep(idle)
            by_label: dict[str, float] = {}
            count_by_label: dict[str, float] = {}
            rss, pss, n = tree_memory_mb(stack.proc.pid, by_label, count_by_label)
        finally:
            stack.stop()
        stack, ready_again, cpu_again = _start_until_healthy(env, Path(home) / "logs-restart")
        try:
            time.sleep(idle)
            rss_again, pss_again, n_again = tree_memory_mb(stack.proc.pid)
        finally:
            stack.stop()
    first = {"ready_s": ready, "cpu_s": sum(cpu.values()), "rss_mb": rss, "pss_mb": pss, "procs": n,
             **{f"PSS {name}": mb for name, mb in by_label.items()},
             **{f"N {name}": count for name, count in count_by_label.items()},
             **{f"CPU {name}": seconds for name, seconds in cpu.items()}}
    return first, {"ready_s": ready_again, "cpu_s": sum(cpu_again.values()), "rss_mb": rss_again,
                   "pss_mb": pss_again, "procs": n_again,
                   **{f"CPU {name}": seconds for name, seconds in cpu_again.items()}}


def measure_default_mlflow(idle: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as home:
        port = free_port()
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
             "--backend-store-uri", f"sqlite:///{home}/mlflow.db"],
            cwd=home, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        try:
            _wait_all([f"http://127.0.0.1:{port}/health"])
            ready = time.monotonic() - t0
            cpu = sum(cpu_by_label(proc.pid).values())
            time.sleep(idle)
            rss, pss, n = tree_memory_mb(proc.pid)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    return {"ready_s": ready, "cpu_s": cpu, "rss_mb": rss, "pss_mb": pss, "procs": n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds idle before measuring memory")
    args = parser.parse_args()
    stack, restart, baseline = "mlops-local stack", "  restart (same home)", "default mlflow server"
    results: dict[str, list[dict[str, float]]] = {stack: [], restart: [], baseline: []}
    for _ in range(args.rounds):  # interleaved so machine noise hits both alike
        first, again = measure_stack(args.idle)
        results[stack].append(first)
        results[restart].append(again)
        results[baseline].append(measure_default_mlflow(args.idle))
    med = {name: {k: statistics.median(r.get(k, 0.0) for r in rows) for k in {k for r in rows for k in r}}
           for name, rows in results.items()}
    print(f"{'':24} {'ready s':>8} {'CPU s':>8} {'RSS MB':>8} {'PSS MB':>8} {'procs':>6}   "
          f"(median of {args.rounds}; CPU: all processes until healthy)")
    for name, row in med.items():
        print(f"{name:24} {row['ready_s']:8.1f} {row['cpu_s']:8.1f} {row['rss_mb']:8.0f} "
              f"{row['pss_mb']:8.0f} {row['procs']:6.0f}")
    for name in (stack, restart):
        print(f"{name.strip()} / {baseline}: ready x{med[name]['ready_s'] / med[baseline]['ready_s']:.2f}, "
              f"CPU x{med[name]['cpu_s'] / med[baseline]['cpu_s']:.2f}, "
              f"idle PSS x{med[name]['pss_mb'] / med[baseline]['pss_mb']:.2f}")
    print(f"\n{stack}, by kind of process (all processes of a kind, median): idle PSS MB, CPU s until "
          "healthy (first start, restart)")
    for key in sorted((k for k in med[stack] if k.startswith("PSS ")), key=lambda k: -med[stack][k]):
        name = key[4:]
        print(f"  {name:24} {med[stack][key]:8.1f} MB {med[stack].get('CPU ' + name, 0):6.1f} s "
              f"{med[restart].get('CPU ' + name, 0):6.1f} s"
              f"   ({med[stack].get('N ' + name, 0):.0f} processes)")


if __name__ == "__main__":
    main()
