"""Where an alias points, asked of the registry's REST API with the standard library only.

The model service polls the registry every few seconds, and on a fresh stack no model carries the alias
for a long while: answering that with MLflow's client would import MLflow, pandas and pyarrow (about
110 MB) into a service that has nothing to serve. This asks the same two endpoints MLflow's client does
(``registered-models/alias`` and ``registered-models/search``) and gives a definite answer or none:
whenever the question needs MLflow's client (a store that is not HTTP, MLflow's authentication or TLS
settings, an answer this does not recognise), it raises :class:`CannotTell` and the holder asks MLflow.
"""

from __future__ import annotations

from mlops_local.restclient import NOT_FOUND, ApiError, CannotTell, answerable, call

__all__ = ["NOT_FOUND", "SEARCH_PAGE", "CannotTell", "alias_target"]

SEARCH_PAGE = 100  # registered models looked at when no name is set (most recently updated first)


def _get(uri: str, endpoint: str, query: dict[str, object], timeout: float) -> dict:
    """The JSON answer of GET registered-models/``endpoint``; {"error_code": ...} for "no such model or
    alias" (NOT_FOUND); OSError when the registry does not answer, CannotTell for any other refusal."""
    try:
        return call(uri, "GET", f"registered-models/{endpoint}", query, timeout)
    except ApiError as exc:
        if exc.error_code in NOT_FOUND:  # MLflow's "no such model or alias"
            return {"error_code": exc.error_code}
        raise CannotTell(f"HTTP {exc.status} {exc.error_code}") from None  # its client says what it is


def alias_target(uri: str, name: str | None, alias: str, timeout: float) -> tuple[str, str] | None:
    """(name, version) that ``name@alias`` points at now, as :func:`holder.resolve` answers it; without a
    name, the most recently updated registered model carrying ``alias``; None when there is none.

    Raises OSError when the registry does not answer (or answers a server error) and CannotTell when only
    MLflow's client can say.
    """
    if not answerable(uri):
        raise CannotTell(f"{uri.split(':', 1)[0]} store or MLflow client settings")
    if name:
        answer = _get(uri, "alias", {"name": name, "alias": alias}, timeout)
        if "error_code" in answer:
            return None
        try:
            return name, str(answer["model_version"]["version"])
        except (KeyError, TypeError):
            raise CannotTell("unexpected answer to registered-models/alias") from None
    answer = _get(uri, "search", {"max_results": SEARCH_PAGE, "order_by": ["last_updated_timestamp DESC"]},
                  timeout)
    if "error_code" in answer:
        raise CannotTell(f"registered-models/search answered {answer['error_code']}")
    try:
        for model in answer.get("registered_models", []):
            for entry in model.get("aliases", []):
                if entry["alias"] == alias:
                    return model["name"], str(entry["version"])
    except (KeyError, TypeError, AttributeError):
        raise CannotTell("unexpected answer to registered-models/search") from None
    return None
