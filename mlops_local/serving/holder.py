"""Which model version is served: resolve the alias in the registry, load safely, swap in one assignment.

A request reads :attr:`ModelHolder.current` once and uses that object to the end, so replacing the
reference (one assignment, atomic under the GIL) never tears a request: requests that started on the
old version finish on it, the next ones get the new one. The reloader loads the new version beside
the old in its own thread; the old one is freed when its last request returns.

Until there is a version to load, the service holds no MLflow, pandas or scikit-learn: the poll asks the
registry's REST API directly (:mod:`mlops_local.serving.registry`) when it can, and the modules of a
load are imported by the load.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mlops_local.errors import UserError
from mlops_local.serving import memory
from mlops_local.serving.drift import MAX_EXPORTED_FEATURES, DriftWindow
from mlops_local.serving.metrics import ServingMetrics, prediction_buckets
from mlops_local.serving.registry import NOT_FOUND, SEARCH_PAGE, CannotTell
from mlops_local.uris import mask_credentials

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mlops_local.ml.profile import Reference

log = logging.getLogger(__name__)

# A quick look-up of where the alias points (registry.alias_target bound to a URI): raises OSError when
# the registry does not answer, CannotTell when only MLflow's client can answer.
Lookup = Callable[[str | None, str], "tuple[str, str] | None"]


def registry_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the registry failing (down, refusing), not a bug: OSError, or MLflow's errors
    once MLflow is imported (it is not until there is something to load)."""
    mlflow_exceptions = sys.modules.get("mlflow.exceptions")
    return isinstance(exc, OSError) or (
        mlflow_exceptions is not None and isinstance(exc, mlflow_exceptions.MlflowException))


@dataclass(frozen=True)
class LoadedModel:
    """One loaded version and what /version and the metrics say about it."""

    name: str
    alias: str
    version: str
    run_id: str
    loaded_at: float
    model: object  # mlflow.pyfunc.PyFuncModel around the safely loaded pipeline
    input_schema: object  # mlflow.types.Schema or None
    buckets: tuple[float, ...]
    buckets_source: str  # "training target quantiles (<dataset>)" or "defaults"
    reference: Reference | None = None  # the run's training profile (None: logged before profiles were)
    drift: DriftWindow | None = None  # the rows scored by this version, against ``reference``

    def describe(self) -> dict[str, object]:
        """The /version body."""
        return {"name": self.name, "alias": self.alias, "version": self.version, "run_id": self.run_id,
                "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at)),
                "loaded_at_unix": self.loaded_at, "prediction_buckets": self.buckets_source}


def resolve(client: MlflowClient, name: str | None, alias: str) -> tuple[str, str] | None:
    """(name, version) that ``name@alias`` points at now; without a name, the most recently updated
    registered model carrying ``alias``; None when there is none yet."""
    from mlflow.exceptions import MlflowException

    if name:
        try:
            version = client.get_model_version_by_alias(name, alias)
        except MlflowException as exc:
            if exc.error_code in NOT_FOUND:
                return None
            raise
        return name, str(version.version)
    models = client.search_registered_models(max_results=SEARCH_PAGE,
                                             order_by=["last_updated_timestamp DESC"])
    for model in models:
        aliases = getattr(model, "aliases", {}) or {}
        if alias in aliases:
            return model.name, str(aliases[alias])
    return None


def target_buckets(client: MlflowClient, run_id: str) -> tuple[tuple[float, ...], str]:
    """Prediction buckets from the training target's quantiles when the run trained on a built-in
    dataset (reloaded here, it is shipped with the package); the defaults otherwise."""
    from mlflow.exceptions import MlflowException

    from mlops_local.ml.datasets import BUILTINS, load_dataset
    from mlops_local.ml.types import DatasetSpec

    try:
        params = client.get_run(run_id).data.params
        builtin = BUILTINS.get(params.get("dataset", ""))
        if builtin is None or params.get("dataset_source") != "builtin":
            return prediction_buckets(None), "defaults"
        options = {key: type(default)(params[f"dataset_{key}"]) for key, default in builtin.options.items()
                   if f"dataset_{key}" in params}
        data = load_dataset(DatasetSpec(builtin.name, params.get("target") or None, options=options))
    except (MlflowException, UserError, ValueError, TypeError, KeyError) as exc:
        log.info("prediction buckets: defaults (training target not available: %s)", exc)
        return prediction_buckets(None), "defaults"
    return prediction_buckets(data.y.to_numpy()), f"training target quantiles ({builtin.name})"


def reference_profile(client: MlflowClient, run_id: str) -> Reference | None:
    """The run's training profile (``profile/reference.json``, read as JSON data); None if it has none."""
    from mlflow import artifacts
    from mlflow.exceptions import MlflowException

    from mlops_local.ml.profile import PROFILE_ARTIFACT, PROFILE_FILE, ProfileError, read_profile

    with tempfile.TemporaryDirectory(prefix="mlops-profile-") as tmp:
        try:
            path = artifacts.download_artifacts(run_id=run_id,
                                                artifact_path=f"{PROFILE_ARTIFACT}/{PROFILE_FILE}",
                                                dst_path=tmp, tracking_uri=client.tracking_uri)
        except (MlflowException, OSError) as exc:
            log.info("run %s has no reference profile (%s): no drift metrics for it", run_id,
                     str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
            return None
        try:
            return read_profile(Path(path))
        except (ProfileError, OSError) as exc:
            log.warning("run %s: %s/%s is not usable (%s): no drift metrics for it", run_id, PROFILE_ARTIFACT,
                        PROFILE_FILE, exc)
            return None


def load_version(client: MlflowClient, name: str, alias: str, version: str) -> LoadedModel:
    """Download and load ``models:/name/version`` through the project's safe loader only."""
    from mlops_local.ml.predict import load_model
    from mlops_local.serving.fastpredict import for_serving

    run_id = client.get_model_version(name, version).run_id or ""
    model = for_serving(load_model(f"models:/{name}/{version}", client))  # skops, trusted types, checksum
    buckets, source = target_buckets(client, run_id) if run_id else (prediction_buckets(None), "defaults")
    reference = reference_profile(client, run_id) if run_id else None
    return LoadedModel(name=name, alias=alias, version=version, run_id=run_id, loaded_at=time.time(),
                       model=model, input_schema=model.metadata.get_input_schema(), buckets=buckets,
                       buckets_source=source, reference=reference)


class ModelHolder:
    """The served model (None until one is registered) and the poller that swaps it when the alias moves."""

    def __init__(self, client: MlflowClient | None, metrics: ServingMetrics, name: str | None, alias: str,
                 poll_interval: float,
                 loader: Callable[[MlflowClient, str, str, str], LoadedModel] = load_version,
                 drift_window: int = 0, *, connect: Callable[[], MlflowClient] | None = None,
                 lookup: Lookup | None = None, uri: str | None = None) -> None:
        """``client`` None: ``connect`` makes it when first needed; ``lookup`` answers the polls while it
        can and nothing was loaded (then MLflow's client does); ``uri`` is the registry's, for messages."""
        if client is None and connect is None:
            raise ValueError("ModelHolder needs a client or a way to connect one")
        self._client, self._connect, self._lookup = client, connect, lookup
        self._uri = uri
        self.metrics, self.name, self.alias = metrics, name, alias
        self.poll_interval = poll_interval
        self.drift_window = drift_window  # rows; 0: no drift measured
        self.loader = loader
        self.current: LoadedModel | None = None
        self._attempted: tuple[str, str] | None = None  # last (name, version) tried, loaded or refused
        self._last_problem = ""
        self._reached = False  # the registry answered once (before that, a refused connection is waiting)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._check_lock = threading.Lock()  # the poller and POST /reload never load at once

    @property
    def client(self) -> MlflowClient:
        """The registry's MLflow client (made on first use when the holder was given ``connect``)."""
        if self._client is None:
            self._client = self._connect()
        return self._client

    @property
    def uri(self) -> str:
        """The registry's URI (for messages)."""
        return self._uri if self._uri is not None else self.client.tracking_uri

    def target(self) -> tuple[str, str] | None:
        """Where the alias points: the quick look-up's answer while it has one and the alias points
        nowhere; MLflow's client from the first version to load on (or when the look-up cannot tell)."""
        if self._lookup is not None:
            try:
                target = self._lookup(self.name, self.alias)
            except CannotTell as exc:
                log.debug("quick registry look-up cannot tell (%s): asking MLflow's client", exc)
                self._lookup = None
            else:
                if target is None:
                    return None
                self._lookup = None  # a version to load: the load imports MLflow anyway
        return resolve(self.client, self.name, self.alias)

    def check(self) -> bool:
        """One poll: load and swap in the version the alias points at if it changed; True if swapped."""
        try:
            target = self.target()
        except Exception as exc:
            if not registry_error(exc):
                raise
            if not self._reached:  # under honcho the service often starts before MLflow: that is waiting
                self._problem("waiting for the model registry at "
                              f"{mask_credentials(self.uri)} to answer", logging.INFO)
                return False
            self._problem(f"registry not reachable ({type(exc).__name__}): {str(exc).splitlines()[0][:200]}")
            return False
        self._reached = True
        current = self.current
        if current is not None and (current.name, current.version) == target:
            self._attempted = target  # back on the served version: a refused one is tried again if named
            return False
        if target is None or target == self._attempted:
            return False
        name, version = target
        from mlops_local.ml.safeload import ModelRefused  # with the modules of a load: not at idle

        memory.tune()  # before the load allocates (pyarrow's pool too)
        try:
            loaded = self.loader(self.client, name, self.alias, version)
        except ModelRefused as exc:
            self._attempted = target  # not retried until the alias moves again
            keeping = f"still serving version {current.version}" if current else "no model yet"
            log.warning("%s@%s version %s %s; %s", name, self.alias, version, exc, keeping)
            return False
        except Exception as exc:
            if not (isinstance(exc, UserError) or registry_error(exc)):
                raise
            self._problem(f"cannot load {name} version {version} (will retry): "
                          f"{str(exc).splitlines()[0][:300]}")
            return False
        self._attempted = target
        loaded = self._with_drift(loaded)  # a new window: the new version's rows against its own profile
        self.current = loaded  # the swap: one reference assignment
        self.metrics.served(loaded.name, loaded.alias, loaded.version, loaded.run_id, loaded.loaded_at,
                            loaded.buckets)
        self._last_problem = ""
        was = f"version {current.version}" if current else "no model"
        log.info("serving %s@%s version %s (run %s, was %s; prediction buckets: %s)", name, self.alias,
                 version, loaded.run_id, was, loaded.buckets_source)
        del current
        memory.release()  # what loading used beyond the model (and the old version once its requests end)
        return True

    def check_now(self) -> bool:
        """One poll now (POST /reload), never at the same time as the poller's."""
        with self._check_lock:
            return self.check()

    @property
    def problem(self) -> str:
        """The last poll problem still standing ('' when the last poll went well)."""
        return self._last_problem

    def _with_drift(self, loaded: LoadedModel) -> LoadedModel:
        """``loaded`` with an empty drift window over its profile (unchanged without one, or drift off)."""
        if loaded.reference is None or self.drift_window <= 0:
            return loaded
        window = DriftWindow(loaded.reference, self.drift_window)
        wide = len(window.features) > MAX_EXPORTED_FEATURES
        log.info("drift: %d feature(s) and the predictions compared with the training profile over the last "
                 "%d rows%s", len(window.features), self.drift_window,
                 f" (mlops_feature_drift_psi shows the top {MAX_EXPORTED_FEATURES} by PSI)" if wide else "")
        return dataclasses.replace(loaded, drift=window)

    def _problem(self, message: str, level: int = logging.WARNING) -> None:
        """Log a poll problem once, not every few seconds while it lasts."""
        if message != self._last_problem:
            log.log(level, "%s", message)
            self._last_problem = message

    def start(self) -> None:
        """Poll in a daemon thread (the first check at once) until :meth:`stop`."""
        self._thread = threading.Thread(target=self._run, name="mlops-serve-reload", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.check_now()
            except Exception:  # the poller must outlive any one bad poll
                log.exception("model reload check failed")
            self._stop.wait(self.poll_interval)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop polling and wait for an ongoing load."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
