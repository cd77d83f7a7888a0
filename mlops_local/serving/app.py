"""The model service's HTTP app (Starlette): /invocations, /health, /version, /metrics; run by uvicorn."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mlops_local.serving import protocol, registry
from mlops_local.serving.drift import DriftCollector
from mlops_local.serving.holder import LoadedModel, ModelHolder
from mlops_local.serving.metrics import NO_MODEL, ServingMetrics
from mlops_local.settings import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

NO_MODEL_YET = "no model yet"
_STATUS = {200: "ok", 400: "bad_request", 413: "bad_request", 415: "bad_request"}


def _json(body: object, status: int = 200) -> Response:
    return Response(json.dumps(body), status_code=status, media_type="application/json")


DRAIN_FACTOR = 8  # an oversized body is read and dropped up to this many limits, so the client sees the 413


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or BadRequest 413 once it is larger than ``limit`` bytes.

    Past the limit the rest is read and dropped (kept bounded), not left unread: a client still
    sending when the server answers and closes gets "connection reset" instead of the 413 message.
    """
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        elif size > DRAIN_FACTOR * limit:
            break
    if size > limit:
        raise protocol.BadRequest(f"request body is larger than the {limit // (1 << 20)} MB limit "
                                  "(MLOPS_SERVE_MAX_BODY_MB): send fewer rows per request", status=413)
    return b"".join(chunks)


def score(loaded: LoadedModel, body: bytes, content_type: str | None) -> tuple[bytes, np.ndarray | None]:
    """Parse, check, predict and encode one request (in a worker thread: it is CPU work)."""
    import pandas as pd  # imported by the model's load already: not held by a service with no model

    data = protocol.parse(body, content_type, loaded.input_schema)
    protocol.check_columns(data, loaded.input_schema)
    raw = protocol.predict(loaded.model, data)
    try:
        values = np.asarray(raw, dtype=float).ravel()
    except (TypeError, ValueError):
        values = None  # non-numeric predictions: counted, not histogrammed
    if loaded.drift is not None and isinstance(data, pd.DataFrame):
        try:
            loaded.drift.add(data, values)
        except Exception:  # drift is monitoring: a bug in it must not fail a scored request
            log.exception("drift window update failed")
    return protocol.encode(raw), values


def build_app(holder: ModelHolder, metrics: ServingMetrics, max_body_bytes: int) -> Starlette:
    """The Starlette app around ``holder`` (which model) and ``metrics`` (what /metrics shows)."""

    async def invocations(request: Request) -> Response:
        started = time.perf_counter()
        loaded = holder.current  # read once: a swap during this request does not affect it
        model, version = (loaded.name, loaded.version) if loaded else (NO_MODEL, NO_MODEL)
        values = None
        try:
            if loaded is None:
                status, body = 503, protocol.error_body(
                    f"{NO_MODEL_YET}: register a model with alias {holder.alias!r}", "UNAVAILABLE")
            else:
                payload = await read_body(request, max_body_bytes)
                body, values = await run_in_threadpool(score, loaded, payload,
                                                       request.headers.get("content-type"))
                status = 200
        except protocol.BadRequest as exc:
            status, body = exc.status, protocol.error_body(exc.message)
        except Exception:  # a bug answers 500 with a message; the traceback goes to the log
            log.exception("scoring request failed")
            status, body = 500, protocol.error_body("internal error while scoring (see the service log)",
                                                    "INTERNAL_ERROR")
        metrics.observe(model, version, _STATUS.get(status, "error"), time.perf_counter() - started,
                        values if status == 200 else None)
        return Response(body, status_code=status, media_type="application/json")

    async def health(_request: Request) -> Response:
        loaded = holder.current
        if loaded is None:
            return _json({"status": NO_MODEL_YET, "alias": holder.alias, "model": holder.name}, 503)
        return _json({"status": "ok", "model": loaded.name, "version": loaded.version})

    async def version(_request: Request) -> Response:
        loaded = holder.current
        if loaded is None:
            return _json({"status": NO_MODEL_YET, "alias": holder.alias, "model": holder.name}, 503)
        return _json(loaded.describe())

    async def reload(_request: Request) -> Response:
        # Re-check the alias now instead of within MLOPS_SERVE_POLL_INTERVAL (the UI's Reload button).
        swapped = await run_in_threadpool(holder.check_now)
        loaded = holder.current
        if loaded is None:
            message = holder.problem or f"{NO_MODEL_YET}: no registered model has alias {holder.alias!r}"
            return _json({"swapped": False, "status": NO_MODEL_YET, "message": message}, 503)
        unchanged = f"{loaded.name}@{loaded.alias} still points at version {loaded.version}: nothing to load"
        message = f"now serving {loaded.name} version {loaded.version}" if swapped else \
            holder.problem or unchanged
        return _json({"swapped": swapped, "message": message, **loaded.describe()})

    async def prometheus_metrics(_request: Request) -> Response:
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        holder.start()
        try:
            yield
        finally:
            holder.stop()

    routes = [Route("/invocations", invocations, methods=["POST"]),
              Route("/health", health, methods=["GET"]), Route("/ping", health, methods=["GET"]),
              Route("/version", version, methods=["GET"]), Route("/reload", reload, methods=["POST"]),
              Route("/metrics", prometheus_metrics, methods=["GET"])]
    return Starlette(routes=routes, lifespan=lifespan)


def served_drift(holder: ModelHolder) -> tuple[str, object] | None:
    """(model name, drift window or None) of the version being served, for the drift collector."""
    loaded = holder.current
    return None if loaded is None else (loaded.name, loaded.drift)


def serve(settings: Settings) -> int:
    """Run the model service in the foreground until SIGTERM/SIGINT."""
    import uvicorn

    from mlops_local.services.process import ensure_port_free

    ensure_port_free(settings.host, settings.serve_port, "MLOPS_SERVE_PORT")
    metrics = ServingMetrics()
    uri = settings.effective_tracking_uri

    def connect() -> MlflowClient:
        # Bounded retries and timeouts: a registry that is down costs seconds. Always the server (never
        # the SQLite fallback): the registry may come up after this service. Made on the first version
        # to load: importing MLflow costs ~110 MB that a service with no model does not hold.
        from mlops_local import tracking

        return tracking.new_client(uri, settings)

    holder = ModelHolder(None, metrics, settings.serve_model, settings.serve_alias,
                         settings.serve_poll_interval, drift_window=settings.drift_window,
                         uri=uri, connect=connect,
                         lookup=functools.partial(registry.alias_target, uri, timeout=settings.http_timeout))
    metrics.registry.register(DriftCollector(lambda: served_drift(holder)))
    app = build_app(holder, metrics, settings.serve_max_body_mb << 20)
    target = f"{settings.serve_model or '(most recent)'}@{settings.serve_alias}"
    log.info("serving models:/%s on %s", target, settings.serve_url)
    config = uvicorn.Config(app, host=settings.host, port=settings.serve_port, log_config=None,
                            access_log=False, lifespan="on", server_header=False)
    uvicorn.Server(config).run()
    return 0
