"""Input widgets generated from specs: hyperparameters from the model catalog, built-in dataset options."""

from __future__ import annotations

from collections.abc import Mapping

import streamlit as st

from mlops_local.errors import UserError
from mlops_local.ml.catalog import ModelSpec, ParamSpec


def param_key(model: str, param: str) -> str:
    """Widget key of one hyperparameter (tests find widgets by it)."""
    return f"train_param_{model}_{param}"


def _help(spec: ParamSpec) -> str:
    return f"{spec.help} Allowed: {spec.allowed()}. Default: {spec.default}.".strip()


def _number(spec: ParamSpec, key: str, label: str, disabled: bool = False) -> float | int:
    # No min_value/max_value: with them a browser only reddens an out-of-range entry and keeps sending
    # the last valid value, so Train would train with a number the field no longer shows. The range is
    # checked here instead, with a message (param_error).
    if spec.kind == "int":
        low = int(spec.low) if spec.low is not None else None
        high = int(spec.high) if spec.high is not None else None
        default = spec.default if isinstance(spec.default, int) else (low if low is not None else 1)
        if spec.default is None and low is not None and high is not None:
            default = max(low, min(high, 10))
        return st.number_input(label, value=default, step=1, key=key, help=_help(spec), disabled=disabled)
    low = float(spec.low) if spec.low is not None else None
    default = float(spec.default) if isinstance(spec.default, (int, float)) else (low or 0.0)
    step = max(default / 10, 1e-6) if spec.log and default > 0 else 0.01
    return st.number_input(label, value=default, step=step, format="%g", key=key, help=_help(spec),
                           disabled=disabled)


def param_error(model: str, spec: ParamSpec, value: object) -> str | None:
    """Why ``value`` is not allowed for this hyperparameter (naming its allowed range), or None."""
    try:
        spec.coerce(value, model)
    except UserError:
        # Shorter than the catalog's CLI message: it is shown under the field, in a narrow column.
        return f"{spec.name} must be {spec.allowed()}; got {value}."
    return None


def invalid_params(model: ModelSpec, values: Mapping[str, object]) -> list[str]:
    """One message per hyperparameter whose value is not allowed (empty when all are)."""
    specs = {spec.name: spec for spec in model.params}
    errors = (param_error(model.name, specs[name], value) for name, value in values.items() if name in specs)
    return [message for message in errors if message]


def param_input(model: str, spec: ParamSpec) -> object:
    """One widget for one hyperparameter; returns its value as shown (None for a nullable one switched off).

    A value outside the allowed range is returned as typed, with a red line under the field naming the
    range: callers refuse it (invalid_params), nothing replaces it.
    """
    value = _param_widget(model, spec)
    message = param_error(model, spec, value)
    if message:
        st.error(message)
    return value


def _param_widget(model: str, spec: ParamSpec) -> object:
    key = param_key(model, spec.name)
    if spec.kind == "bool":
        return st.checkbox(spec.name, value=bool(spec.default), key=key, help=_help(spec))
    if spec.kind == "choice":
        options = list(spec.choices)
        index = options.index(spec.default) if spec.default in options else 0
        return st.selectbox(spec.name, options, index=index, key=key, help=_help(spec))
    if spec.nullable:
        unlimited = st.checkbox(f"{spec.name}: none", value=spec.default is None, key=f"{key}_none",
                                help=_help(spec))
        value = _number(spec, key, spec.name, disabled=unlimited)
        return None if unlimited else value
    return _number(spec, key, spec.name)


def param_inputs(model: ModelSpec, columns: int = 2) -> dict[str, object]:
    """Widgets for every hyperparameter of ``model``, laid out in columns; returns name -> value."""
    values: dict[str, object] = {}
    if not model.params:
        st.caption("This model has no hyperparameters.")
        return values
    slots = st.columns(columns)
    for i, spec in enumerate(model.params):
        with slots[i % columns]:
            values[spec.name] = param_input(model.name, spec)
    return values


def dataset_options(dataset: str, options: Mapping[str, object]) -> dict[str, object]:
    """Number inputs for a built-in dataset's settable options (e.g. friedman1 size, noise, seed)."""
    values: dict[str, object] = {}
    for name, default in options.items():
        key = f"train_option_{dataset}_{name}"
        if isinstance(default, bool):
            values[name] = st.checkbox(name, value=default, key=key)
        elif isinstance(default, int):
            values[name] = st.number_input(name, value=default, step=1, key=key)
        elif isinstance(default, float):
            values[name] = st.number_input(name, value=default, format="%g", key=key)
        else:
            values[name] = st.text_input(name, value=str(default), key=key)
    return values
