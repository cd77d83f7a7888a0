"""Imported by sweep workers before their first trial (and by the forkserver, once per process).

A trial's first run otherwise pays, on top of the imports, MLflow's scan of every installed package
the first time a model is saved (about 1.5 s, then cached) and matplotlib's font set-up: both are
done here, so the first trials cost what the later ones do. Importing this module has those side
effects on purpose; nothing but workers imports it.
"""

from __future__ import annotations

import importlib
import io
import logging

log = logging.getLogger(__name__)

WARM_MODULES = ("mlops_local.ml.training", "mlops_local.ml.modelio", "skops.io", "matplotlib.figure",
                "matplotlib.backends.backend_agg", "mlflow.data", "threadpoolctl")


def _prime() -> None:
    for name in WARM_MODULES:
        importlib.import_module(name)
    try:
        from matplotlib.figure import Figure
        from mlflow.utils.environment import _process_pip_requirements

        from mlops_local.ml.modelio import pip_requirements

        _process_pip_requirements(None, list(pip_requirements()), None)  # what modelio calls per save
        figure = Figure(figsize=(1, 1), dpi=10)
        figure.add_subplot().plot([0, 1], [0, 1])
        figure.savefig(io.BytesIO(), format="png")
    except Exception:  # noqa: BLE001 - priming is an optimisation; the first trial just pays for it
        log.debug("could not prime the worker", exc_info=True)


_prime()
