"""The three strategies as Optuna samplers behind one in-memory study's ask/tell.

``grid`` is Optuna's GridSampler over the space's grid values, ``random`` its RandomSampler, ``optuna``
its TPESampler (with several trials in flight, the constant liar, so parallel asks do not all land on
one point); all seeded. ``ask()`` hands out the next trial (number, searched values) or None when the
budget is spent; ``tell(number, score)`` reports an ended trial (score None = failed).

Grid and random trials do not learn from scores: all of them are asked when the first one is, so
trial n's values depend only on the seed and n, never on completion order (a sweep gives the same
trials on local processes and on a Dask cluster). They are then handed out longest first when the
catalog estimates the model's fit time: a long trial started last would run alone while the other
workers idle.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import InMemoryStorage
from optuna.trial import Trial, TrialState

from mlops_local.sweep.space import SearchParam, SearchSpace


class _Grid(optuna.samplers.GridSampler):
    """GridSampler without its end-of-trial check: that only stops ``study.optimize`` (we count trials
    ourselves) and scans every trial of the study at each tell (quadratic on a 10,000-point grid)."""

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        return None


class Search:
    """One strategy over ``space``: an Optuna study asked for ``total`` trials."""

    def __init__(self, name: str, space: SearchSpace, total: int, sampler: optuna.samplers.BaseSampler,
                 higher_is_better: bool, grid_points: int | None = None) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.name, self.total, self._space = name, total, space
        self._study = optuna.create_study(storage=InMemoryStorage(), sampler=sampler,
                                          direction="maximize" if higher_is_better else "minimize")
        self._distributions = {p.name: _distribution(p, grid_points) for p in space.params}
        self._asked: dict[int, Trial] = {}
        self._order: list[int] | None = None  # planned strategies: trial numbers in start order
        self._next = 0

    @property
    def planned(self) -> bool:
        """Whether the trials are known in advance (they do not depend on scores)."""
        return self.name != "optuna"

    def _ask_one(self) -> int:
        """Ask the study for one more trial; returns its number."""
        trial = self._study.ask(self._distributions)
        self._asked[trial.number] = trial
        return trial.number

    def values(self, number: int) -> dict[str, object]:
        """The searched values of an asked trial."""
        return {k: _plain(v) for k, v in self._asked[number].params.items()}

    def plan(self) -> list[tuple[int, dict[str, object]]]:
        """Every trial of a planned strategy, in number order (asked now if need be)."""
        self._start()
        return [(n, self.values(n)) for n in range(self.total)]

    def _start(self) -> None:
        """Planned strategies: ask every trial at once and fix the order they start in."""
        if self._order is None and self.planned:
            for _ in range(self.total):
                self._ask_one()
            self._order = longest_first(self._space, [self.values(n) for n in range(self.total)])

    def ask(self) -> tuple[int, dict[str, object]] | None:
        """The next trial to start (number, searched values), or None when the budget is spent."""
        if self._next >= self.total:
            return None
        self._start()
        number = self._order[self._next] if self._order is not None else self._ask_one()
        self._next += 1
        return number, self.values(number)

    def tell(self, number: int, score: float | None) -> None:
        """Report trial ``number``'s score (None or not finite: it failed); TPE learns from it."""
        trial = self._asked.get(number)
        if trial is None:
            return
        if score is None or not math.isfinite(score):
            self._study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        else:
            self._study.tell(trial, score, skip_if_finished=True)


def longest_first(space: SearchSpace, values: list[dict[str, object]]) -> list[int]:
    """Trial numbers in the order to start them: highest estimated cost first, ties by number; in number
    order when the catalog has no estimate for the model."""
    costs = [space.cost(v) for v in values]
    if any(cost is None for cost in costs):
        return list(range(len(values)))
    return sorted(range(len(values)), key=lambda number: (-(costs[number] or 0.0), number))


def _distribution(param: SearchParam, grid_points: int | None) -> BaseDistribution:
    """The Optuna distribution of ``param``; on a grid, its grid values as choices."""
    if grid_points is not None:
        return CategoricalDistribution(param.grid(grid_points))
    if param.kind == "choice":
        return CategoricalDistribution(list(param.choices))
    if param.kind == "int":
        return IntDistribution(int(param.low), int(param.high), log=param.log)
    return FloatDistribution(float(param.low), float(param.high), log=param.log)


def _plain(value: object) -> object:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def make_search(name: str, space: SearchSpace, *, total: int, seed: int, grid_points: int,
                higher_is_better: bool, parallel: int = 1) -> Search:
    """The strategy ``name`` over ``space`` for ``total`` trials (validated by :func:`plan.count_trials`)."""
    if name == "grid":
        grid = _Grid({p.name: p.grid(grid_points) for p in space.params}, seed=seed)
        return Search(name, space, total, grid, higher_is_better, grid_points)
    if name == "random":
        return Search(name, space, total, optuna.samplers.RandomSampler(seed=seed), higher_is_better)
    tpe = optuna.samplers.TPESampler(seed=seed, constant_liar=parallel > 1)
    return Search(name, space, total, tpe, higher_is_better)
