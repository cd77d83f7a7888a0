"""Search strategies behind one ask/tell interface: grid, seeded random, Optuna TPE.

``ask()`` hands out the next trial (number, searched values) or None when the budget is spent;
``tell(number, score)`` reports a finished trial (score None = failed). Grid and random trials depend
only on the seed and the trial number, never on completion order, so the same sweep gives the same
trials on local processes and on a Dask cluster. They are handed out longest first when the catalog
estimates the model's fit time (trial numbers do not change): a long trial started last would run
alone while the other workers idle. TPE learns from what has been told so far; with
several trials in flight it uses Optuna's constant liar so parallel asks do not all land on one point.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable
from typing import Protocol

import numpy as np

from mlops_local.errors import UserError
from mlops_local.sweep.space import SearchSpace
from mlops_local.sweep.spec import DEFAULT_TRIALS, STRATEGIES, SweepSpecError

log = logging.getLogger(__name__)

MAX_TRIALS = 10_000


class Strategy(Protocol):
    """Ask/tell interface every strategy implements."""

    name: str
    total: int

    def ask(self) -> tuple[int, dict[str, object]] | None: ...

    def tell(self, number: int, score: float | None) -> None: ...


def longest_first(space: SearchSpace, total: int, values: Callable[[int], dict[str, object]]) -> list[int]:
    """Trial numbers in the order to start them: highest estimated cost first, ties by number; in number
    order when the catalog has no estimate for the model."""
    costs = [space.cost(values(number)) for number in range(total)]
    if any(cost is None for cost in costs):
        return list(range(total))
    return sorted(range(total), key=lambda number: (-(costs[number] or 0.0), number))


class _Planned:
    """Trials known in advance (grid, random): handed out longest first, see :func:`longest_first`."""

    def __init__(self, space: SearchSpace, total: int) -> None:
        self._space, self.total = space, total
        self._order: list[int] | None = None  # computed at the first ask (a plan may never run)
        self._next = 0

    def values(self, number: int) -> dict[str, object]:
        raise NotImplementedError

    def ask(self) -> tuple[int, dict[str, object]] | None:
        if self._order is None:
            self._order = longest_first(self._space, self.total, self.values)
        if self._next >= self.total:
            return None
        number = self._order[self._next]
        self._next += 1
        return number, self.values(number)

    def tell(self, number: int, score: float | None) -> None:
        return None


class GridStrategy(_Planned):
    """Every combination of the grid values; trial numbers in a fixed order (the last parameter varies
    fastest)."""

    name = "grid"

    def __init__(self, space: SearchSpace, points: int) -> None:
        names = [p.name for p in space.params]
        self._combos = [dict(zip(names, values, strict=True))
                        for values in itertools.product(*(p.grid(points) for p in space.params))]
        super().__init__(space, len(self._combos))

    def values(self, number: int) -> dict[str, object]:
        return dict(self._combos[number])


class RandomStrategy(_Planned):
    """Independent draws; trial n's values come from a generator seeded with (seed, n)."""

    name = "random"

    def __init__(self, space: SearchSpace, trials: int, seed: int) -> None:
        super().__init__(space, trials)
        self._seed = seed

    def values(self, number: int) -> dict[str, object]:
        """The values of trial ``number`` (the same for a given seed, whatever ran before)."""
        rng = np.random.default_rng([self._seed, number])
        return {p.name: p.sample(rng) for p in self._space.params}


class OptunaStrategy:
    """Optuna's TPE sampler (seeded) through an in-memory study's ask/tell."""

    name = "optuna"

    def __init__(self, space: SearchSpace, trials: int, seed: int, higher_is_better: bool,
                 parallel: int = 1) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._optuna = optuna
        self._distributions = {p.name: _distribution(optuna, p) for p in space.params}
        sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=parallel > 1)
        self._study = optuna.create_study(direction="maximize" if higher_is_better else "minimize",
                                          sampler=sampler)
        self.total = trials
        self._asked: dict[int, object] = {}
        self._next = 0

    def ask(self) -> tuple[int, dict[str, object]] | None:
        if self._next >= self.total:
            return None
        trial = self._study.ask(self._distributions)
        number = self._next
        self._next += 1
        self._asked[number] = trial
        return number, {k: _plain(v) for k, v in trial.params.items()}

    def tell(self, number: int, score: float | None) -> None:
        trial = self._asked.pop(number, None)
        if trial is None:
            return
        if score is None or not math.isfinite(score):
            self._study.tell(trial, state=self._optuna.trial.TrialState.FAIL)
        else:
            self._study.tell(trial, score)


def _distribution(optuna, param):  # optuna types stay lazy
    if param.kind == "choice":
        return optuna.distributions.CategoricalDistribution(list(param.choices))
    if param.kind == "int":
        return optuna.distributions.IntDistribution(int(param.low), int(param.high), log=param.log)
    return optuna.distributions.FloatDistribution(float(param.low), float(param.high), log=param.log)


def _plain(value: object) -> object:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def check_trials(trials: object) -> int | None:
    """``trials`` as None or an int between 1 and MAX_TRIALS, or UserError."""
    if trials is None:
        return None
    if isinstance(trials, bool) or not isinstance(trials, (int, np.integer)) \
            or not 1 <= int(trials) <= MAX_TRIALS:
        raise UserError(f"trials must be a whole number between 1 and {MAX_TRIALS}, got {trials!r}")
    return int(trials)


def make_strategy(name: str, space: SearchSpace, *, trials: int | None, seed: int, grid_points: int,
                  higher_is_better: bool, parallel: int = 1) -> Strategy:
    """The strategy ``name`` over ``space``; a grid larger than ``trials`` is refused (never truncated)."""
    trials = check_trials(trials)
    if name == "grid":
        grid = GridStrategy(space, grid_points)
        if trials is not None and grid.total > trials:
            sizes = space.grid_sizes(grid_points)
            fits = next((p for p in range(grid_points - 1, 1, -1) if space.grid_size(p) <= trials), None)
            raise SweepSpecError(
                f"the grid has {grid.total} points ({' x '.join(f'{n} {k}' for k, n in sizes.items())}), "
                f"more than --trials {trials}; search fewer hyperparameters (--search), list fewer values "
                f"(--param-range k=a|b), lower --grid-points, or raise --trials to {grid.total}",
                field="trials", reason="grid_too_large", total=grid.total, trials=trials, sizes=sizes,
                points_that_fit=fits)
        if grid.total > MAX_TRIALS:
            raise UserError(f"the grid has {grid.total} points, more than {MAX_TRIALS}; search fewer "
                            "hyperparameters or lower --grid-points")
        return grid
    if name == "random":
        return RandomStrategy(space, trials or DEFAULT_TRIALS, seed)
    if name == "optuna":
        return OptunaStrategy(space, trials or DEFAULT_TRIALS, seed, higher_is_better, parallel)
    raise UserError(f"unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}")
