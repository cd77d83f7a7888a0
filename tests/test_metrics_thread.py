"""The /metrics thread starts once per process: not again on reruns, nor for a second session."""

from __future__ import annotations

import urllib.request

from streamlit.testing.v1 import AppTest

from mlops_local import runtime
from mlops_local.settings import get_settings
from tests.apptest import APP
from tests.services import listening_addresses


def test_reruns_and_a_second_session_reuse_the_one_metrics_server(app_stack_env: dict[str, str]) -> None:
    port = int(app_stack_env["MLOPS_METRICS_PORT"])
    first = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not first.exception
    started = runtime.get_runtime()
    assert started is not None and started.metrics_server.port == port
    first.run()  # a rerun of the same session
    second = AppTest.from_file(str(APP), default_timeout=60).run()  # another "tab"
    assert not second.exception
    assert runtime.get_runtime() is started
    assert len(listening_addresses(port)) == 1
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert body.count("# TYPE mlops_build_info gauge") == 1


def test_metrics_server_stop_frees_the_port(app_stack_env: dict[str, str]) -> None:
    port = int(app_stack_env["MLOPS_METRICS_PORT"])
    rt = runtime.ensure_runtime(get_settings())
    assert len(listening_addresses(port)) == 1
    runtime.shutdown_runtime()
    assert len(listening_addresses(port)) == 0
    assert not rt.metrics_server.thread.is_alive()
