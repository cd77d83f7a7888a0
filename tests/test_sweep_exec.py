"""Local sweep workers start from the trial code only, whatever the parent's ``__main__`` is."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

from mlops_local.sweep import executor as sweep_exec
from mlops_local.sweep.executor import LocalExecutor


def loaded_ui_modules() -> tuple[int, str | None, list[str]]:
    """Run on a worker: its pid, its main module's file and the UI modules it holds."""
    return (os.getpid(), getattr(sys.modules["__main__"], "__file__", None),
            sorted(m for m in sys.modules if m.startswith(("mlops_local.ui", "streamlit"))))


def test_workers_never_run_the_main_script_streamlit_installs(tmp_path: Path, monkeypatch) -> None:
    """Streamlit installs every script run as ``__main__`` (its ``__file__`` the app script), from any
    session's thread at any moment, for instance while a sweep's workers start. multiprocessing would
    have each new worker re-run that script (the UI's app: it binds the metrics port, fails with
    PortInUse, the pool breaks and trials are lost). Here the script only leaves a mark."""
    marks = tmp_path / "ran"
    marks.mkdir()
    script = tmp_path / "app.py"
    script.write_text(f"import os, pathlib\npathlib.Path({str(marks)!r}, str(os.getpid())).touch()\n")
    app_main = types.ModuleType("__main__")
    app_main.__file__ = str(script)
    start = sweep_exec.worker_context

    def rerun_while_starting(*args: object) -> object:
        monkeypatch.setitem(sys.modules, "__main__", app_main)  # what a script run does, mid-start
        return start(*args)

    monkeypatch.setattr(sweep_exec, "worker_context", rerun_while_starting)
    executor = LocalExecutor(2, (), prime_models=False)
    try:
        answers = [executor.submit(loaded_ui_modules).result(timeout=120) for _ in range(6)]
    finally:
        executor.abort()
    assert sorted(p.name for p in marks.iterdir()) == []
    assert [(main, modules) for _, main, modules in answers] == [(None, [])] * 6
    assert os.getpid() not in {pid for pid, _, _ in answers}
