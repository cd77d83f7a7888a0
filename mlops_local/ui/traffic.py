"""Sample traffic sent from the Serving page: `replay` on a worker thread that the page polls.

No Streamlit here (the worker thread must never call it); the page reads ``progress`` and ``result``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

import pandas as pd

from mlops_local.background import BackgroundJob
from mlops_local.errors import UserError
from mlops_local.serving.replay import ReplayProgress, ReplayResult, Shift, replay

log = logging.getLogger(__name__)

DURATION_S = 30.0


@dataclass
class TrafficJob(BackgroundJob):
    """One replay of ``frame`` to the service at ``url``: live progress, then a result or an error."""

    url: str
    frame: pd.DataFrame
    rate: float
    duration_s: float = DURATION_S
    batch: int = 1
    shifts: tuple[Shift, ...] = ()
    progress: ReplayProgress | None = None
    result: ReplayResult | None = None
    error: str | None = None
    stop_event: threading.Event = field(default_factory=threading.Event, repr=False)

    def thread_name(self) -> str:
        return "mlops-sample-traffic"

    def _progress(self, progress: ReplayProgress) -> None:
        self.progress = progress  # one reference assignment: the page reads a consistent snapshot

    def _run(self) -> None:
        try:
            self.result = replay(self.url, self.frame, rate=self.rate, duration_s=self.duration_s,
                                 shifts=self.shifts, batch=self.batch, stop=self.stop_event,
                                 on_progress=self._progress)
        except UserError as exc:
            self.error = str(exc)
        except Exception as exc:  # the page shows it; the service is not affected
            log.exception("sample traffic to %s failed", self.url)
            self.error = f"sample traffic failed: {type(exc).__name__}: {exc}"

    def fraction(self) -> float:
        """Share of the duration elapsed (for a progress bar)."""
        if self.done:
            return 1.0
        progress = self.progress
        return min(1.0, progress.elapsed / self.duration_s) if progress else 0.0


def training_rows(params: Mapping[str, str]) -> tuple[pd.DataFrame | None, str]:
    """(input rows of the built-in dataset a run trained on, its name) from the run's params;
    (None, why) when it trained on an uploaded file or its dataset is unknown."""
    from mlops_local.ml.datasets import BUILTINS, load_dataset
    from mlops_local.ml.types import DatasetSpec

    name = params.get("dataset", "")
    builtin = BUILTINS.get(name)
    if builtin is None or params.get("dataset_source") != "builtin":
        return None, (f"the served model was trained on {name!r}, not a built-in dataset: send its rows "
                      "with `mlops-local replay --file FILE`" if name else
                      "the served model's run records no dataset: use `mlops-local replay --file FILE`")
    options = {key: type(default)(params[f"dataset_{key}"]) for key, default in builtin.options.items()
               if f"dataset_{key}" in params}
    data = load_dataset(DatasetSpec(builtin.name, params.get("target") or None, options=options))
    return data.X, builtin.name
