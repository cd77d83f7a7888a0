"""``mlops_promotions_total{result}``: the promotion gate's verdicts (promoted, forced, refused).

One counter in the UI process, fed two ways and deduplicated by verdict run id, like the sweep metrics:
- a promotion decided on the Runs page calls :meth:`PromotionMetrics.observe` at once;
- the exporter's sync hands every page of runs it reads to :meth:`PromotionMetrics.observe_runs`, which
  picks out the verdict runs (tag ``mlops.promotion.result``), so `mlops-local promote` runs, whose
  process ends before any scrape, are counted within a sync interval.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from mlops_local.ml.types import PROMOTION_RESULTS as RESULTS
from mlops_local.ml.types import TAG_PROMOTION_RESULT as TAG_RESULT

MAX_SEEN = 100_000
_NAME = "mlops_promotions"


class PromotionMetrics(Collector):
    """Counter of verdicts per result; registered on ``registry`` when one is given."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(RESULTS, 0)
        self._seen: dict[str, None] = {}  # insertion-ordered verdict run ids already counted
        if registry is not None:
            registry.register(self)

    def observe(self, verdict_run_id: str, result: str) -> bool:
        """Count one verdict (once per run id); True when it was new."""
        if result not in self._counts:
            return False
        with self._lock:
            if verdict_run_id in self._seen:
                return False
            self._seen[verdict_run_id] = None
            if len(self._seen) > MAX_SEEN:
                del self._seen[next(iter(self._seen))]
            self._counts[result] += 1
        return True

    def observe_runs(self, runs: Iterable[object], experiment_names: Mapping[str, str]) -> int:
        """Count the finished verdict runs among MLflow runs (any order, repeats welcome); new ones."""
        return sum(self.observe(run.info.run_id, run.data.tags[TAG_RESULT]) for run in runs
                   if run.info.status == "FINISHED" and TAG_RESULT in run.data.tags)

    def counted(self, verdict_run_id: str) -> bool:
        """Whether this verdict run is counted already."""
        with self._lock:
            return verdict_run_id in self._seen

    def counts(self) -> dict[str, int]:
        """Verdicts counted per result."""
        with self._lock:
            return dict(self._counts)

    def describe(self) -> list[Metric]:
        """Family names, so registering never runs a collect."""
        return [CounterMetricFamily(_NAME, "", labels=["result"])]

    def collect(self) -> Iterable[Metric]:
        """One sample per result (all three always present)."""
        counts = self.counts()
        family = CounterMetricFamily(_NAME, "Promotion gate verdicts by result (promoted, forced, refused).",
                                     labels=["result"])
        for result in RESULTS:
            family.add_metric([result], counts[result])
        yield family
