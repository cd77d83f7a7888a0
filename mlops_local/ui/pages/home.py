"""Home: what is running and where."""

from __future__ import annotations

import streamlit as st

from mlops_local.ui import common

st.title("mlops-local")
st.write("Train scikit-learn regressors, track them in MLflow, watch their metrics in Prometheus.")

statuses = common.service_statuses(common.settings())
st.dataframe(
    [{"service": s.name, "state": "starting" if s.state == "down" and s.required else s.state,
      "url": s.url, "detail": s.detail} for s in statuses],
    key="home_services", hide_index=True,
    column_config={"url": st.column_config.LinkColumn("url")},
)
