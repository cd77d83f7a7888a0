"""Alerting: Prometheus rules rendered from the settings, their promtool tests, and the firing alerts."""
