"""Load a logged model without running code from it: skops only, our own trusted types, the run's checksum.

MLflow's REST API has no login, so anyone who can reach it can log a run whose MLmodel points at a
pickle, or a skops file whose MLmodel trusts ``posix.system``. ``mlflow.pyfunc.load_model`` would
import whatever loader module the MLmodel names and unpickle what it points at; this module never
calls it. It reads the MLmodel as data, accepts only the sklearn flavour in skops format, checks the
skops file against the sha256 recorded on the run when it was logged, and loads it trusting only
:data:`TRUSTED_TYPES` (what the catalog's pipelines contain), never the list in the MLmodel.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from pathlib import Path

from mlops_local.errors import UserError
from mlops_local.ml.modelio import MODEL_FILE
from mlops_local.runmeta import TAG_MODEL_SHA256

log = logging.getLogger(__name__)

SKOPS_FORMAT = "skops"
LOADER_MODULE = "mlflow.sklearn"
_FLAVORS = {"python_function", "sklearn"}
# Types a catalog pipeline needs trusted beyond skops' defaults. Derived by derive_trusted_types();
# tests/test_model_safety.py fails when the catalog, the preprocessing or scikit-learn change them.
TRUSTED_TYPES: tuple[str, ...] = (
    "numpy.dtype",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.metrics._dist_metrics.ManhattanDistance64",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.tree._tree.Tree",
)


class ModelRefused(UserError):
    """A model that mlops-local will not load; the message is one line, "model refused: <reason>"."""

    exit_code = 1

    def __init__(self, reason: str) -> None:
        super().__init__(f"model refused: {reason}")
        self.reason = reason


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checksum_tags(model_dir: Path) -> dict[str, str]:
    """The run tag that records the checksum of the model directory ``model_dir`` (to log with the run)."""
    return {TAG_MODEL_SHA256: file_sha256(model_dir / MODEL_FILE)}


def check_mlmodel(model_dir: Path) -> object:
    """The directory's MLmodel (an ``mlflow.models.Model``) if it is a skops sklearn model; else refused."""
    from mlflow.models import Model

    path = model_dir / "MLmodel"
    if not path.is_file():
        raise ModelRefused("no MLmodel file: this is not an MLflow model directory")
    try:
        meta = Model.load(str(path))  # yaml.safe_load: reading it runs nothing
    except Exception as exc:  # noqa: BLE001 - any malformed MLmodel is a refusal, not a traceback
        raise ModelRefused(f"its MLmodel file cannot be read ({type(exc).__name__})") from None
    flavors = meta.flavors or {}
    extra = sorted(set(flavors) - _FLAVORS)
    if extra or not set(flavors) >= _FLAVORS:
        raise ModelRefused(f"flavours {', '.join(sorted(flavors)) or 'none'}: only scikit-learn models "
                           "saved by mlops-local (sklearn + python_function) are loaded")
    sk, pyfunc = flavors["sklearn"], flavors["python_function"]
    if sk.get("serialization_format") != SKOPS_FORMAT:
        raise ModelRefused(f"serialization format {sk.get('serialization_format')!r}: only skops is loaded, "
                           "never pickle or cloudpickle")
    if sk.get("pickled_model") != MODEL_FILE:
        raise ModelRefused(f"the sklearn flavour points at {sk.get('pickled_model')!r}, not {MODEL_FILE}")
    if pyfunc.get("loader_module") != LOADER_MODULE:
        raise ModelRefused(f"python_function loader {pyfunc.get('loader_module')!r}: only {LOADER_MODULE} "
                           "is accepted")
    target = pyfunc.get("model_path", pyfunc.get("data"))
    if target != MODEL_FILE or pyfunc.get("code") or sk.get("code"):
        raise ModelRefused(f"the python_function flavour points at {target!r} or ships code; only "
                           f"{MODEL_FILE} is loaded")
    return meta


def _untrusted(path: Path, trusted: Iterable[str]) -> list[str]:
    """Types in the skops file that neither skops' defaults nor ``trusted`` cover (parsed, not built)."""
    import skops.io

    try:
        found = skops.io.get_untrusted_types(file=path)
    except Exception as exc:  # noqa: BLE001 - a corrupt or foreign file is a refusal
        raise ModelRefused(f"{MODEL_FILE} is not a readable skops file ({type(exc).__name__})") from None
    allowed = set(trusted)
    return sorted(t for t in found if t not in allowed)


def load_pipeline(model_dir: Path, expected_sha256: str | None,
                  trusted: Iterable[str] = TRUSTED_TYPES) -> tuple[object, object]:
    """(MLmodel, fitted sklearn Pipeline) from a local model directory, or ModelRefused.

    ``expected_sha256``: the checksum recorded on the model's run; None (a run logged before checksums
    were recorded) is refused, since an unverifiable file is exactly what a swapped artifact looks like.
    """
    import skops.io
    from sklearn.pipeline import Pipeline

    meta = check_mlmodel(model_dir)
    path = model_dir / MODEL_FILE
    if path.is_symlink() or not path.is_file():
        raise ModelRefused(f"{MODEL_FILE} is missing or not a regular file")
    if not expected_sha256:
        raise ModelRefused("its run has no recorded model checksum (logged before mlops-local recorded "
                           "them, or not by mlops-local); retrain it to log a verifiable model")
    actual = file_sha256(path)
    if actual != expected_sha256.strip().lower():
        raise ModelRefused(f"{MODEL_FILE} does not match the checksum recorded on its run (sha256 "
                           f"{actual[:12]}…, expected {expected_sha256[:12]}…): the artifact was changed "
                           "after it was logged")
    trusted = tuple(trusted)
    untrusted = _untrusted(path, trusted)
    if untrusted:
        raise ModelRefused(f"{MODEL_FILE} holds type(s) outside mlops-local's allowlist: "
                           f"{', '.join(untrusted[:5])}")
    try:
        pipeline = skops.io.load(path, trusted=list(trusted))
    except Exception as exc:  # noqa: BLE001 - skops raises many types for malformed files
        raise ModelRefused(f"{MODEL_FILE} cannot be loaded ({type(exc).__name__}: {str(exc)[:200]})") \
            from None
    if not isinstance(pipeline, Pipeline):
        raise ModelRefused(f"{MODEL_FILE} holds a {type(pipeline).__name__}, not a scikit-learn Pipeline")
    return meta, pipeline


def load_local(model_dir: Path, expected_sha256: str | None) -> object:
    """A PyFuncModel (signature checks, ``predict``) around the safely loaded pipeline of ``model_dir``."""
    from mlflow.pyfunc import PyFuncModel
    from mlflow.sklearn import _SklearnModelWrapper

    meta, pipeline = load_pipeline(model_dir, expected_sha256)
    return PyFuncModel(model_meta=meta, model_impl=_SklearnModelWrapper(pipeline))


def derive_trusted_types() -> set[str]:
    """Every non-default type skops needs for the catalog's pipelines, over the structural choices.

    Fits each catalog model (with small sizes: tree counts do not change the types) for every value of
    its choice, boolean and small-range integer hyperparameters, with and without scaling, on numeric
    and text columns."""
    import numpy as np
    import pandas as pd

    from mlops_local.ml import preprocessing
    from mlops_local.ml.catalog import CATALOG
    from mlops_local.ml.modelio import trusted_types

    rng = np.random.default_rng(0)
    n = 60
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n),
                      "c": rng.choice(["x", "y", "z"], n).astype(object)})
    X.loc[0, "a"], X.loc[1, "c"] = np.nan, np.nan
    y = pd.Series(rng.normal(size=n))
    small = {"n_estimators": 2, "max_iter": 10}
    found: set[str] = set()
    for spec in CATALOG.values():
        base = {k: v for k, v in small.items() if any(p.name == k for p in spec.params)}
        variants = [base]
        for param in spec.params:
            values = {"choice": param.choices, "bool": (True, False)}.get(param.kind, ())
            if param.kind == "int" and param.high is not None and param.high - param.low <= 2:
                values = range(int(param.low), int(param.high) + 1)  # a choice in disguise (knn's p)
            variants.extend({**base, param.name: v} for v in values)
        for params in variants:
            for scale in (False, True):
                pipeline = preprocessing.build_pipeline(spec.build(params, seed=0), ["a", "b"], ["c"], scale)
                found.update(trusted_types(pipeline.fit(X, y)))
    return found
