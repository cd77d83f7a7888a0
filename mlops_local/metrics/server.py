"""The /metrics WSGI server thread, with start and stop handles."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_wsgi_server

from mlops_local.errors import PortInUse

log = logging.getLogger(__name__)


@dataclass
class MetricsServer:
    """A running /metrics endpoint; `port` is the bound port (useful with port 0)."""

    server: WSGIServer
    thread: threading.Thread
    host: str

    @property
    def port(self) -> int:
        return self.server.server_port

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        """Stop serving, close the socket and wait for the thread."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start_metrics_server(
    registry: CollectorRegistry, host: str, port: int, env: str = "MLOPS_METRICS_PORT"
) -> MetricsServer:
    """Serve ``registry`` on http://host:port/metrics from a daemon thread."""
    try:
        server, thread = start_wsgi_server(port, addr=host, registry=registry)
    except OSError as exc:
        if exc.errno in (98, 48):  # EADDRINUSE on Linux, macOS
            raise PortInUse(host, port, env) from None
        raise
    thread.name = "mlops-metrics-server"
    handle = MetricsServer(server=server, thread=thread, host=host)
    log.info("metrics endpoint listening on %s", handle.url)
    return handle
