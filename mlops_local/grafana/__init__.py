"""Grafana provisioning assets: the generated dashboard and the identifiers provisioning relies on.

Only constants here (no SDK import), so `serve grafana` stays light; the generator is `dashboard.py`.
"""

from pathlib import Path

DASHBOARDS_DIR = Path(__file__).resolve().parent / "dashboards"
DASHBOARD_FILE = DASHBOARDS_DIR / "mlops-local.json"
DASHBOARD_UID = "mlops-local"
DATASOURCE_UID = "mlops-prometheus"
