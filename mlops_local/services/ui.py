"""`serve ui`: start the /metrics thread once, then run Streamlit in this same process."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from mlops_local.runtime import ensure_runtime, shutdown_runtime
from mlops_local.services.process import ensure_port_free
from mlops_local.settings import Settings

log = logging.getLogger(__name__)

APP_PATH = Path(__file__).resolve().parent.parent / "ui" / "app.py"


def streamlit_args(settings: Settings) -> list[str]:
    """Arguments for `streamlit run`: bound to MLOPS_HOST, headless, no usage statistics."""
    return [
        "run", str(APP_PATH),
        "--server.address", settings.host,
        "--server.port", str(settings.ui_port),
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        "--server.maxUploadSize", str(settings.upload_limit_mb),
        "--server.fileWatcherType", "none",
        "--theme.base", "light",
        "--client.toolbarMode", "minimal",  # no "Deploy" button: this is a local workbench
    ]


def serve(settings: Settings) -> int:
    """Bind the metrics endpoint before any browser connects, then hand over to Streamlit."""
    ensure_port_free(settings.host, settings.ui_port, "MLOPS_UI_PORT")
    ensure_runtime(settings)
    from streamlit.web import cli as stcli  # heavy import, only in the UI process

    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    # Safety net: MLflow calls that resolve URIs through the process-wide tracking URI (models:/...)
    # reach the configured server instead of creating ./mlflow.db in the working directory.
    os.environ.setdefault("MLFLOW_TRACKING_URI", settings.effective_tracking_uri)
    try:
        stcli.main(streamlit_args(settings), standalone_mode=False)
    finally:
        shutdown_runtime()
    return 0
