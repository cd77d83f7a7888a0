"""Prometheus side: private registry, /metrics server thread, exporter, panels, API client, export."""
