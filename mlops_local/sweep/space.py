"""Search spaces built from the model catalog's ParamSpec rows, narrowed by the user.

``--param-range k=lo:hi[:log|:linear]`` narrows a numeric range (it must stay inside the catalog's);
``--param-range k=a|b|c`` lists explicit values (choices, or numbers tried as they are). Every value a
space can produce passes :meth:`ParamSpec.coerce`, so a sweep never starts a trial the catalog refuses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from mlops_local.errors import UserError
from mlops_local.ml.catalog import ParamSpec, get_model, validate_params
from mlops_local.sweep.spec import SweepSpecError


@dataclass(frozen=True)
class SearchParam:
    """One searched hyperparameter: an int/float range (maybe log-scaled) or a list of values."""

    name: str
    kind: str  # int | float | choice
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[object, ...] = ()

    def grid(self, points: int) -> list[object]:
        """Grid values: every choice, or ``points`` evenly spaced values (log-spaced when ``log``)."""
        if self.kind == "choice":
            return list(self.choices)
        lo, hi = float(self.low), float(self.high)
        values = np.geomspace(lo, hi, points) if self.log else np.linspace(lo, hi, points)
        if self.kind == "int":
            out = sorted({int(round(v)) for v in values})
        else:
            inner = [float(f"{v:.6g}") for v in values[1:-1]]
            out = sorted({lo, *inner, hi})
        return list(out)

    def describe(self) -> str:
        """Short text, e.g. ``int 10..200 log`` or ``one of sqrt, log2``."""
        if self.kind == "choice":
            return "one of " + ", ".join(_text(c) for c in self.choices)
        return f"{self.kind} {_text(self.low)}..{_text(self.high)}{' log' if self.log else ''}"


@dataclass(frozen=True)
class SearchSpace:
    """The searched hyperparameters plus the values every trial shares."""

    model: str
    params: tuple[SearchParam, ...]
    base: Mapping[str, object]  # every hyperparameter's value when not searched (defaults + fixed)
    fixed: Mapping[str, object]  # what the user fixed explicitly

    def grid_sizes(self, points: int) -> dict[str, int]:
        """Number of grid values per searched hyperparameter."""
        return {p.name: len(p.grid(points)) for p in self.params}

    def grid_size(self, points: int) -> int:
        """Number of grid combinations."""
        return math.prod(self.grid_sizes(points).values())

    def complete(self, values: Mapping[str, object]) -> dict[str, object]:
        """Searched ``values`` on top of the base, validated by the catalog (UserError when refused)."""
        return validate_params(self.model, {**self.base, **values})

    def cost(self, values: Mapping[str, object]) -> float | None:
        """The catalog's rough relative fit time of a trial's ``values``: None when the catalog has no
        estimate for the model, 0 for values it refuses (such a trial fails at once)."""
        estimate = get_model(self.model).cost
        if estimate is None:
            return None
        try:
            return float(estimate(self.complete(values)))
        except (UserError, KeyError, TypeError, ValueError):
            return 0.0

    def describe(self) -> dict[str, str]:
        """name -> short description, for the CLI, the parent run's params and the UI."""
        return {p.name: p.describe() for p in self.params}


def _text(value: object) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, float):
        return f"{value:g}"
    return "none" if value is None else str(value)


def from_catalog(spec: ParamSpec) -> SearchParam:
    """The catalog's whole allowed range (or choices) as a search dimension."""
    if spec.kind == "bool":
        return SearchParam(spec.name, "choice", choices=(True, False))
    if spec.kind == "choice":
        return SearchParam(spec.name, "choice", choices=tuple(spec.choices))
    return SearchParam(spec.name, spec.kind, float(spec.low), float(spec.high), spec.log)


def parse_range(model: str, spec: ParamSpec, text: str) -> SearchParam:
    """``lo:hi[:log|:linear]`` or ``a|b|c`` for hyperparameter ``spec`` (UserError naming what is allowed)."""
    raw = str(text).strip()
    where = f"--param-range {spec.name}={raw}"
    if "|" in raw or spec.kind in ("choice", "bool") or ":" not in raw:
        items = [part.strip() for part in raw.split("|")]
        if not raw or any(not item for item in items):
            raise SweepSpecError(f"{where}: list values as a|b|c (allowed: {spec.allowed()})",
                                 field="ranges", reason="no_values", param=spec.name)
        values: list[object] = []
        for item in items:
            value = _coerce(spec, item, model, where)
            if value not in values:
                values.append(value)
        return SearchParam(spec.name, "choice", choices=tuple(values))
    parts = [p.strip() for p in raw.split(":")]
    scale = None
    if len(parts) == 3:
        scale = parts.pop().lower()
        if scale not in ("log", "linear"):
            raise UserError(f"{where}: the third part must be 'log' or 'linear', got {scale!r}")
    if len(parts) != 2 or not all(parts):
        raise UserError(f"{where}: expected LOW:HIGH[:log] or a|b|c (allowed: {spec.allowed()})")
    low, high = (_coerce(spec, p, model, where) for p in parts)
    if low is None or high is None:
        raise UserError(f"{where}: a range needs two numbers; list 'none' as a value instead, e.g. "
                        f"{spec.name}=none|5|10")
    if low > high:
        raise SweepSpecError(f"{where}: LOW ({_text(low)}) is greater than HIGH ({_text(high)})",
                             field="ranges", reason="reversed", param=spec.name, low=low, high=high)
    log = spec.log if scale is None else scale == "log"
    if log and low <= 0:
        raise UserError(f"{where}: a log scale needs LOW > 0; use {spec.name}={_text(low)}:{_text(high)}"
                        ":linear")
    return SearchParam(spec.name, spec.kind, float(low), float(high), log)


def _coerce(spec: ParamSpec, text: str, model: str, where: str) -> object:
    try:
        return spec.coerce(text, model)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None


def build_space(model: str, ranges: Mapping[str, str] | None = None, search: Sequence[str] | None = None,
                fixed: Mapping[str, object] | None = None) -> SearchSpace:
    """The search space of ``model``: catalog ranges of the searched params, narrowed by ``ranges``.

    Searched: ``search`` when given (plus any param with a range), else every param not in ``fixed``.
    """
    spec = get_model(model)
    ranges, fixed = dict(ranges or {}), dict(fixed or {})
    known = [p.name for p in spec.params]
    for label, names in (("--search", list(search or [])), ("--param-range", list(ranges))):
        unknown = [n for n in names if n not in known]
        if unknown:
            raise UserError(f"{label}: unknown hyperparameter{'s' if len(unknown) > 1 else ''} "
                            f"{', '.join(map(repr, unknown))} for model '{model}'; its hyperparameters are: "
                            f"{', '.join(known) or '(none)'}")
    both = [n for n in ranges if n in fixed]
    if both:
        raise UserError(f"{', '.join(both)}: given both a fixed value (--param) and a range (--param-range); "
                        "keep one")
    base = validate_params(model, fixed)
    if search:
        names = [n for n in known if n in set(search) | set(ranges)]
        held = [n for n in search if n in fixed]
        if held:
            raise UserError(f"{', '.join(held)}: both fixed (--param) and searched (--search); keep one")
    else:
        names = [n for n in known if n not in fixed]
    if not names:
        raise SweepSpecError(f"nothing to search: every hyperparameter of '{model}' is fixed"
                             if known else f"model '{model}' has no hyperparameters to search",
                             field="search", reason="nothing_searched")
    params = tuple(parse_range(model, spec.param(n), ranges[n]) if n in ranges
                   else from_catalog(spec.param(n)) for n in names)
    return SearchSpace(model, params, base, {k: base[k] for k in fixed})


def parse_range_args(items: Sequence[str]) -> dict[str, str]:
    """``["k=lo:hi", "j=a|b"]`` from the CLI into a dict (checked later against the catalog)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--param-range expects NAME=LOW:HIGH[:log] or NAME=a|b|c, got {item!r}")
        if key.strip() in out:
            raise UserError(f"--param-range {key.strip()} given twice")
        out[key.strip()] = value.strip()
    return out

