"""MLflow's scoring protocol: request bodies into a DataFrame, predictions into ``{"predictions": [...]}``.

Parsing reuses MLflow's own scoring-server functions, so a client of ``mlflow models serve`` gets the
same answers here; what differs is the errors: one line naming the problem, never the input echoed
back or a traceback.

pandas and MLflow are imported by the functions that score (a model's load has imported them already):
the service answers "no model yet" without holding them.
"""

from __future__ import annotations

import io
import json
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

log = logging.getLogger(__name__)

JSON, CSV = "application/json", "text/csv"
FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_MAX_DETAIL = 300


class BadRequest(Exception):
    """A request the service answers with ``status`` and a one-line message (400, 413 or 415)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.status = message, status


def _detail(exc: BaseException) -> str:
    """The first line of an error, bounded (MLflow's messages can quote the whole input)."""
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    first = str(text).strip().splitlines()[0] if str(text).strip() else type(exc).__name__
    return first if len(first) <= _MAX_DETAIL else first[:_MAX_DETAIL] + "…"


def _csv_dtypes(schema: object) -> dict[str, object]:
    """pandas dtypes for the typed columns of the signature; ``Any`` columns are left to pandas.

    MLflow's own CSV parser asks every column for a pandas type and fails on ``Any``, which is what
    mlops-local's signatures use for numeric columns (see :func:`mlops_local.ml.modelio.signature`):
    `mlflow models serve` answers 400 to any CSV for these models; this service reads it.
    """
    from mlflow.types import DataType

    if schema is None or not getattr(schema, "has_input_names", lambda: False)():
        return {}
    return {spec.name: spec.type.to_pandas() for spec in schema.inputs if isinstance(spec.type, DataType)}


def parse(body: bytes, content_type: str | None, schema: object) -> object:
    """The model input of a request body (a DataFrame, or what MLflow makes of ``instances``)."""
    import pandas as pd
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc import scoring_server

    if not body.strip():
        raise BadRequest("empty request body: send JSON with one of " + ", ".join(FORMATS) + " or text/csv")
    mime = (content_type or JSON).split(";", 1)[0].strip().lower()
    if mime == CSV:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("body is not UTF-8 text") from None
        try:
            return pd.read_csv(io.StringIO(text), dtype=_csv_dtypes(schema))
        except (ValueError, pd.errors.ParserError) as exc:
            raise BadRequest(f"body is not a CSV table the model can read: {_detail(exc)}") from None
    if mime != JSON:
        raise BadRequest(f"content type {mime!r} is not supported: use {JSON} or {CSV}", status=415)
    try:
        document = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"body is not valid JSON: {_detail(exc)}") from None
    if not isinstance(document, dict):
        raise BadRequest(f"JSON body must be an object with one of {', '.join(FORMATS)}, "
                         f"got a {type(document).__name__}")
    keys = [k for k in FORMATS if k in document]
    if len(keys) != 1:
        found = ", ".join(sorted(map(str, document))[:10]) or "none"
        raise BadRequest(f"JSON body must have exactly one of {', '.join(FORMATS)} (found keys: {found})")
    try:
        return scoring_server.infer_and_parse_data({keys[0]: document[keys[0]]}, schema)
    except (MlflowException, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise BadRequest(f"cannot read {keys[0]}: {_detail(exc)}") from None


def check_columns(data: object, schema: object) -> None:
    """BadRequest naming the missing columns, or an empty input, before the model sees it."""
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        if data.empty:
            raise BadRequest("no rows to score")
        if schema is not None and getattr(schema, "has_input_names", lambda: False)():
            required = [i.name for i in schema.inputs if getattr(i, "required", True)]
            missing = [name for name in required if name not in data.columns]
            if missing:
                raise BadRequest(f"missing column(s): {', '.join(missing)} (the model expects "
                                 f"{', '.join(schema.input_names())})")
            for spec in schema.inputs:
                _check_numeric(data, spec)


_NUMERIC = {"double", "float", "long", "integer"}


def _check_numeric(data: pd.DataFrame, spec: object) -> None:
    """BadRequest naming a numeric column that holds something else.

    mlops-local's signatures declare numeric columns as ``Any`` (so that ints, floats and gaps all
    pass), which lets MLflow pass a string through to the imputer; so ``Any`` is checked as numeric.
    """
    import pandas as pd
    from mlflow.types.schema import AnyType

    kind = "number" if isinstance(spec.type, AnyType) else getattr(spec.type, "name", "")
    if kind not in _NUMERIC | {"number"} or spec.name not in data.columns:
        return
    column = data[spec.name]
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        return
    numbers = pd.to_numeric(column, errors="coerce")
    bad = column[numbers.isna() & column.notna()]
    if len(bad) or pd.api.types.is_bool_dtype(column):
        example = repr(bad.iloc[0])[:40] if len(bad) else "a boolean"
        raise BadRequest(f"column {spec.name!r} must hold numbers, got {example}")


def predict(model: object, data: object) -> np.ndarray:
    """The model's predictions; BadRequest when the input does not fit the model's signature."""
    from mlflow.exceptions import MlflowException

    try:
        raw = model.predict(data)
    except MlflowException as exc:
        message = exc.message
        # MLflow wraps signature errors as "Failed to enforce schema of data '<whole input>' ... Error: <why>"
        why = message.rsplit("Error: ", 1)[-1] if "Error: " in message else message
        raise BadRequest(f"input does not match the model's signature: {_detail(MlflowException(why))}") \
            from None
    except (ValueError, TypeError) as exc:
        raise BadRequest(f"the model cannot score these rows: {_detail(exc)}") from None
    return raw


def encode(raw: object) -> bytes:
    """``{"predictions": [...]}`` exactly as MLflow's scoring server writes it."""
    from mlflow.pyfunc import scoring_server

    out = io.StringIO()
    scoring_server.predictions_to_json(raw, out)
    return out.getvalue().encode("utf-8")


def error_body(message: str, code: str = "BAD_REQUEST") -> bytes:
    """The JSON body of a refused request: {"error_code": ..., "message": ...}, as MLflow shapes errors."""
    return json.dumps({"error_code": code, "message": message}).encode("utf-8")
