"""Start real services (`mlops-local serve ...`) on free ports for tests, and always stop them."""

from __future__ import annotations

import contextlib
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from mlops_local import tracking

ROOT = Path(__file__).resolve().parents[1]
MLOPS = [sys.executable, "-m", "mlops_local.cli"]


def free_port() -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_metrics(registry, env: dict[str, str]):  # CollectorRegistry -> MetricsServer
    """/metrics for ``registry`` in this process on a port the OS picks at bind time (port 0: nothing can
    take it between a pick and the bind, as with ``free_port``); ``env``'s MLOPS_METRICS_PORT becomes
    that port, so a Prometheus started from ``env`` afterwards scrapes it."""
    from mlops_local.metrics.server import start_metrics_server

    server = start_metrics_server(registry, env.get("MLOPS_HOST", "127.0.0.1"), 0)
    env["MLOPS_METRICS_PORT"] = str(server.port)
    return server


def apply_stack_env(monkeypatch, env: Mapping[str, str]) -> None:  # pytest.MonkeyPatch
    """Point this process at ``env`` (its MLOPS_/MLFLOW_ variables) and make the settings re-read it."""
    from mlops_local.settings import get_settings

    for key, value in env.items():
        if key.startswith(("MLOPS_", "MLFLOW_")):
            monkeypatch.setenv(key, value)
    get_settings.cache_clear()


def stack_env(home: Path, **overrides: object) -> dict[str, str]:
    """Environment for a stack in ``home`` with every port free; overrides win."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "MLFLOW_"))}
    env.update({
        "MLOPS_HOME": str(home),
        "MLOPS_HOST": "127.0.0.1",
        "MLOPS_UI_PORT": str(free_port()),
        "MLOPS_MLFLOW_PORT": str(free_port()),
        "MLOPS_PROMETHEUS_PORT": str(free_port()),
        "MLOPS_GRAFANA_PORT": str(free_port()),
        "MLOPS_METRICS_PORT": str(free_port()),
        "MLOPS_SERVE_PORT": str(free_port()),
        "MLOPS_ALERTMANAGER_PORT": str(free_port()),
        "MLOPS_SCRAPE_INTERVAL": "1",
        "MLOPS_SYNC_INTERVAL": "1",
        "PYTHONUNBUFFERED": "1",
        # The product's own MLflow client bounds (tracking.bounded_client_env): one retry, so a transient
        # error of the shared test server is retried as it would be for a user; a server that is down
        # fails in seconds, not minutes.
        **tracking.bounded_client_env(),
    })
    env.update({k: str(v) for k, v in overrides.items()})
    return env


def wait_until_responds(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    """Poll ``url`` until it answers 200; fail early if ``proc`` died."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout} s (last error: {last})")


def process_tree(pid: int) -> set[int]:
    """pid and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        cur = todo.pop()
        if cur not in found:
            found.add(cur)
            todo.extend(children.get(cur, []))
    return found


def alive(pids: set[int]) -> set[int]:
    """The pids that still exist and are not zombies."""
    out = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            out.add(pid)
    return out


@dataclass
class Service:
    """A `mlops-local serve` subprocess; `stop()` sends SIGTERM and reports leftovers."""

    name: str
    proc: subprocess.Popen
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 20.0) -> set[int]:
        """SIGTERM, wait; returns pids of the tree still alive afterwards (should be empty)."""
        tree = process_tree(self.proc.pid)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        deadline = time.monotonic() + 5
        left = alive(tree - {self.proc.pid})
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = alive(left)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return left


HEALTH_PATHS = {
    "mlflow": ("MLOPS_MLFLOW_PORT", "/health"),
    "prometheus": ("MLOPS_PROMETHEUS_PORT", "/-/ready"),
    "ui": ("MLOPS_UI_PORT", "/_stcore/health"),
    "model": ("MLOPS_SERVE_PORT", "/metrics"),  # /health is 503 until a model is registered
    "alertmanager": ("MLOPS_ALERTMANAGER_PORT", "/-/ready"),
}


def start_service(name: str, env: dict[str, str], log_dir: Path, wait: bool = True,
                  timeout: float = 90.0) -> Service:
    """Run `mlops-local serve NAME` with ``env``; wait until its health URL answers."""
    log_dir.mkdir(parents=True, exist_ok=True)
    port_var, path = HEALTH_PATHS.get(name, ("MLOPS_GRAFANA_PORT", "/api/health"))
    log_path = log_dir / f"{name}-{env[port_var] if name != 'grafana' else 'g'}.log"
    fh = log_path.open("wb")
    proc = subprocess.Popen([*MLOPS, "serve", name], env=env, stdout=fh, stderr=subprocess.STDOUT,
                            cwd=str(ROOT))
    url = f"http://127.0.0.1:{env[port_var]}"
    service = Service(name, proc, url, log_path)
    if wait:
        try:
            wait_until_responds(url + path, timeout=timeout, proc=proc)
        except Exception:  # noqa: BLE001 - whatever went wrong, stop it and show its log
            service.stop()
            raise RuntimeError(f"{name} did not start:\n{service.log()[-3000:]}") from None
    return service


VENV_BIN = Path(sys.executable).parent


@dataclass
class HonchoStack:
    """The Procfile under `honcho start`, as `bin/start` runs it."""

    proc: subprocess.Popen
    env: dict[str, str]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> set[int]:
        """SIGTERM honcho (as Ctrl-C would); returns pids of the tree still alive afterwards."""
        return Service("honcho", self.proc, "", self.log_path).stop(timeout)


def start_honcho(env: dict[str, str], log_dir: Path) -> HonchoStack:
    """`honcho start` on the repo's Procfile with ``env``; returns at once (not yet healthy)."""
    env = dict(env)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "honcho.log"
    proc = subprocess.Popen(
        [str(VENV_BIN / "honcho"), "start", "-f", str(ROOT / "Procfile"), "-d", str(ROOT)],
        env=env, stdout=log_path.open("wb"), stderr=subprocess.STDOUT, cwd=str(ROOT),
    )
    return HonchoStack(proc, env, log_path)


def required_health_urls(env: dict[str, str]) -> dict[str, str]:
    """Health URL of every required service of a stack started with ``env``."""
    port = lambda var: env[var]
    return {
        "mlflow": f"http://127.0.0.1:{port('MLOPS_MLFLOW_PORT')}/health",
        "prometheus": f"http://127.0.0.1:{port('MLOPS_PROMETHEUS_PORT')}/-/ready",
        "ui": f"http://127.0.0.1:{port('MLOPS_UI_PORT')}/_stcore/health",
        "metrics": f"http://127.0.0.1:{port('MLOPS_METRICS_PORT')}/metrics",
    }


def wait_stack_healthy(stack: HonchoStack, timeout: float = 120.0) -> None:
    """Wait until every required service answers; include honcho's log on failure."""
    try:
        for url in required_health_urls(stack.env).values():
            wait_until_responds(url, timeout=timeout, proc=stack.proc)
    except Exception as exc:  # noqa: BLE001 - whatever went wrong, stop the stack and show its log
        stack.stop()
        raise RuntimeError(f"stack did not become healthy: {exc}\n{stack.log()[-4000:]}") from None


def listening_addresses(port: int) -> list[str]:
    """Hex local addresses of LISTEN sockets on ``port`` (from /proc/net/tcp{,6}); 0100007F = 127.0.0.1."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            addr, hexport = fields[1].split(":")
            if fields[3] == "0A" and int(hexport, 16) == port:
                found.append(addr)
    return found


def wait_for(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll ``check`` until it is true; TimeoutError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout} s")
        time.sleep(0.2)


@contextlib.contextmanager
def answering(status: int, body: bytes = b"<html>no</html>") -> Iterator[str]:
    """The URL of a real HTTP server (not MLflow) that answers every GET and POST with ``status`` and
    ``body`` (by default an HTML page)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
