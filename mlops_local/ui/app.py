"""Streamlit entry: runtime first (metrics thread, once per process), then the pages."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from mlops_local.ui import common

st.set_page_config(page_title="mlops-local", page_icon=":material/insights:", layout="wide")
common.runtime()
common.warm_training_stack()  # background: the first Train click no longer pays it
common.sidebar_status(common.service_statuses(common.settings()))
common.sidebar_alerts(common.service_statuses(common.settings()))

PAGES = Path(__file__).parent / "views"  # not "pages": see mlops_local/ui/__init__.py
navigation = st.navigation([
    st.Page(PAGES / "train.py", title="Train", icon=":material/model_training:", default=True),
    st.Page(PAGES / "sweep.py", title="Sweep", icon=":material/tune:"),
    st.Page(PAGES / "runs.py", title="Runs", icon=":material/table_rows:"),
    st.Page(PAGES / "predict.py", title="Predict", icon=":material/online_prediction:"),
    st.Page(PAGES / "monitoring.py", title="Monitoring", icon=":material/monitoring:"),
    st.Page(PAGES / "serving.py", title="Serving", icon=":material/dns:"),
])
navigation.run()
