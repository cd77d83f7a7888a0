"""The private registry served on /metrics: process collectors and build info."""

from __future__ import annotations

import platform

from prometheus_client import CollectorRegistry, GCCollector, Info, PlatformCollector, ProcessCollector

from mlops_local import __version__


def build_registry() -> CollectorRegistry:
    """A fresh registry with process, platform and GC collectors and `mlops_build_info`."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    build = Info("mlops_build", "mlops-local build information.", registry=registry)
    build.info({"version": __version__, "python": platform.python_version()})
    return registry
