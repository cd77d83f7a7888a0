"""Run the whole suite N times in a row while another process keeps one core busy (a race finder).

    .venv/bin/python benchmarks/suite_under_load.py --runs 3          # bin/test three times, one core busy
    .venv/bin/python benchmarks/suite_under_load.py --busy 0 -- -m "not browser"

Prints one line per run (exit code, seconds, pytest's summary line) and exits non-zero when any run
failed. The busy process is this script's own child and is stopped by its PID, whatever happens.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("suite_under_load")


def _spin() -> None:
    """Keep one core at 100% until terminated."""
    x = 0
    while True:
        x = (x * 31 + 7) % 1_000_003


def _summary(output: str) -> str:
    lines = [line.strip("= ") for line in output.splitlines() if " passed" in line or " failed" in line]
    return lines[-1] if lines else "(no pytest summary)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="how many full runs in a row (default 3)")
    parser.add_argument("--busy", type=int, default=1, help="cores to keep busy meanwhile (default 1)")
    parser.add_argument("pytest_args", nargs="*", help="extra arguments for bin/test (after --)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.busy)]
    for proc in spinners:
        proc.start()
    failed = 0
    try:
        for n in range(1, args.runs + 1):
            started = time.perf_counter()
            done = subprocess.run([str(ROOT / "bin" / "test"), *args.pytest_args], cwd=ROOT,
                                  capture_output=True, text=True, check=False)
            seconds = time.perf_counter() - started
            failed += done.returncode != 0
            log.info("run %d/%d: exit %d in %.0f s, %s", n, args.runs, done.returncode, seconds,
                     _summary(done.stdout))
            if done.returncode != 0:
                out = ROOT / "test-artifacts" / f"suite-under-load-run{n}.log"
                out.parent.mkdir(exist_ok=True)
                out.write_text(done.stdout + done.stderr)
                log.info("  its output: %s", out)
    finally:
        for proc in spinners:
            proc.terminate()
            proc.join(5)
    log.info("%d of %d runs green with %d core(s) kept busy", args.runs - failed, args.runs, args.busy)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
