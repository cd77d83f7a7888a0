"""Helpers shared by the page scripts: settings, runtime, service status in the sidebar."""

from __future__ import annotations

import streamlit as st

from mlops_local.health import ServiceStatus, check
from mlops_local.runtime import Runtime, ensure_runtime
from mlops_local.settings import Settings, get_settings

STATE_ICON = {"up": "🟢", "down": "🟠", "not installed": "⚪"}


def settings() -> Settings:
    """The process's settings (read from the environment once)."""
    return get_settings()


def runtime() -> Runtime:
    """The process-wide runtime; started by `serve ui`, or here on first use under AppTest."""
    return ensure_runtime(get_settings())


@st.cache_data(ttl=3, show_spinner=False)
def service_statuses(_settings: Settings) -> list[ServiceStatus]:
    """Health of every service, cached for a few seconds so reruns stay fast."""
    return check(_settings, timeout=0.5)


def sidebar_status(statuses: list[ServiceStatus]) -> None:
    """Live service status with links, shown on every page."""
    with st.sidebar:
        st.caption("Services")
        for s in statuses:
            label = "starting" if (s.state == "down" and s.required) else s.state
            st.markdown(f"{STATE_ICON.get(s.state, '⚪')} [{s.name}]({s.url}) · {label}")
