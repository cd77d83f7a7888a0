"""A stop at any point of a service's start-up leaves no orphan and is never lost (issue 11, section 4):
`run_foreground` (a child it waits on) and `exec_service` (the program in place of the wrapper).

The stops are real SIGTERMs. A driver process, made a child subreaper, runs the wrapper (as `serve`
runs it) and fires the signal: from inside the wrapper at each line of the function's start-up, and
from outside at delays spread over the whole start-up, while busy loops load every core. Whatever
the wrapper leaves behind is re-parented to the driver, which finds it by PID; a stop that was lost
leaves `sleep 60` running, which the driver sees as a hang.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.services import ROOT

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl and /proc are Linux")

RUNS = 50
LINE_SHOTS = 20  # the first runs: SIGTERM at the k-th line of the function (then at its wait or exec)

WRAPPER = r"""
import os, signal, sys
from mlops_local.services import process

shot, how = int(sys.argv[1]), sys.argv[2]  # shot -1: the driver fires from outside
code = getattr(process, how).__code__
last = "os.execvpe(" if how == "exec_service" else "proc.wait("
wait_line = next(i for i, line in enumerate(open(code.co_filename), 1)
                 if i > code.co_firstlineno and last in line)
seen = [0]

def trace(frame, event, arg):
    if frame.f_code is not code:
        return None
    def line(frame, event, arg):
        if event == "line":
            if seen[0] == shot or frame.f_lineno == wait_line:
                sys.settrace(None)
                frame.f_trace = None
                os.kill(os.getpid(), signal.SIGTERM)
                return None
            seen[0] += 1
        return line
    return line

if shot >= 0:
    sys.settrace(trace)
print("ready", flush=True)
if how == "exec_service":
    process.exec_service(["sleep", "60"], "sleeper", os.environ)
process.run_foreground(["sleep", "60"], "sleeper")
"""

DRIVER = r"""
import ctypes, json, os, signal, subprocess, sys, time
from tests.services import alive, process_tree

libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER: orphans come to us
runs, line_shots, wrapper, how = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
me = os.getpid()


def reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def descendants():
    reap()
    return alive(process_tree(me) - {me})


def start(shot):
    return subprocess.Popen([sys.executable, "-c", wrapper, str(shot), how], stdout=subprocess.PIPE)


def started(pid):  # the wrapper has its child, or has become it
    if alive(process_tree(pid) - {pid}):
        return True
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read().startswith(b"sleep")
    except OSError:
        return False


# How long start-up takes under this load: from launch until the program runs.
t0 = time.monotonic()
calib = start(-1)
while not started(calib.pid):
    time.sleep(0.001)
startup = time.monotonic() - t0
calib.send_signal(signal.SIGTERM)
calib.wait(30)

report = {"runs": 0, "orphans": [], "hung": [], "startup_s": startup}
for run in range(runs):
    shot = run if run < line_shots else -1
    proc = start(shot)
    if shot < 0:  # from outside, at a point spread over the start-up (and a little past it)
        time.sleep(1.2 * startup * (run - line_shots) / max(1, runs - line_shots - 1))
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        report["hung"].append(run)
        proc.kill()
        proc.wait()
    proc.stdout.close()
    deadline = time.monotonic() + 10
    left = descendants()
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = descendants()
    for pid in left:
        report["orphans"].append({"run": run, "pid": pid})
        os.kill(pid, signal.SIGKILL)
    report["runs"] += 1
reap()
print(json.dumps(report))
"""


@pytest.fixture
def cpu_load() -> Iterator[list[int]]:
    """One busy loop per core for the test's duration, stopped by PID."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]
    try:
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()


@pytest.mark.parametrize("how", ["run_foreground", "exec_service"])
def test_sigterm_at_every_point_of_start_up_leaves_no_orphan(cpu_load: list[int], how: str) -> None:
    assert len(cpu_load) >= 1
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", DRIVER, str(RUNS), str(LINE_SHOTS), WRAPPER, how],
                         cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["runs"] == RUNS
    assert report["orphans"] == [] and report["hung"] == [], report
