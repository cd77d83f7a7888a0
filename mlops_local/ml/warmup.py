"""Pay once, ahead of time, what a process's first training costs on top of the next ones.

Used by sweep workers (before their first trial; the forkserver does it once for all of them) and by
the UI process (in the background when the first page is shown).
"""

from __future__ import annotations

import importlib
import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

WARM_MODULES = ("mlops_local.ml.training", "mlops_local.ml.modelio", "skops.io", "mlflow.data",
                "threadpoolctl")


def warm_up(prime_models: bool = True) -> int:
    """Import what trainings need (no-ops where already imported); returns this process's id.

    ``prime_models``: also pay now what a process's first fit and first model save cost once (sklearn's
    lazy imports, skops' first dump, MLflow's model-writing helpers): a tiny pipeline is fitted and
    saved. Without it the first trial on each sweep worker took about 0.4 s longer, and the UI's
    first training about 1.2 s.
    """
    for name in WARM_MODULES:
        importlib.import_module(name)
    if prime_models:
        try:
            _fit_and_save_a_tiny_model()
        except Exception:  # an optimisation only: the first training then pays for it
            log.debug("could not prime the first fit and model save", exc_info=True)
    return os.getpid()


def _fit_and_save_a_tiny_model() -> None:
    import pandas as pd
    from sklearn.ensemble import RandomForestRegressor

    from mlops_local.ml.modelio import save_model_dir
    from mlops_local.ml.preprocessing import build_pipeline
    from mlops_local.runmeta import MODEL_ARTIFACT

    X = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0, None, 5.0], "c": ["a", "b", "a", "b", "a", None]})
    y = pd.Series([0.0, 1.0, 2.0, 3.0, 4.0, 5.0], name="y")
    pipeline = build_pipeline(RandomForestRegressor(n_estimators=2, random_state=0), ["x"], ["c"], True)
    pipeline.fit(X, y)
    with tempfile.TemporaryDirectory(prefix="mlops-warm-") as tmp:
        save_model_dir(pipeline, Path(tmp) / MODEL_ARTIFACT, X, ["x"], "y")
