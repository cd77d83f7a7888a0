"""Close runs left RUNNING by a process that died (kill -9, a crash, a stopped UI): KILLED, counted.

Every run records its owner (see :mod:`mlops_local.owner`). The UI process runs the reaper when its
sync from MLflow starts and on every sync; only runs of this host are judged, a run of a live
process is never touched.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence

from mlflow.tracking import MlflowClient
from prometheus_client import CollectorRegistry, Counter

from mlops_local.owner import TAG_HOST, TAG_PID, owner_gone

log = logging.getLogger(__name__)

TAG_ERROR = "error"
_PAGE = 200


class Reaper:
    """Marks RUNNING runs whose owner process is gone KILLED; ``mlops_runs_reaped_total`` counts them."""

    def __init__(self, registry: CollectorRegistry | None, host: str | None = None) -> None:
        self.host = host or socket.gethostname()
        self.reaped = Counter("mlops_runs_reaped", "Runs left RUNNING by a process that died, closed as "
                              "KILLED.", registry=registry)

    def reap(self, client: MlflowClient, experiment_ids: Sequence[str]) -> list[str]:
        """Close this host's orphaned RUNNING runs in ``experiment_ids``; returns their ids."""
        if not experiment_ids:
            return []
        closed: list[str] = []
        query = f"attributes.status = 'RUNNING' and tags.`{TAG_HOST}` = '{self.host}'"
        token = None
        while True:
            page = client.search_runs(list(experiment_ids), query, max_results=_PAGE, page_token=token)
            for run in page:
                tags = run.data.tags
                if owner_gone(tags, self.host):
                    self._close(client, run.info.run_id, tags)
                    closed.append(run.info.run_id)
            token = page.token
            if not token:
                return closed

    def _close(self, client: MlflowClient, run_id: str, tags: dict[str, str]) -> None:
        reason = f"owner process {tags.get(TAG_PID)} on {self.host} is gone; closed by the reaper"
        client.set_tag(run_id, TAG_ERROR, reason)
        client.set_terminated(run_id, "KILLED")
        self.reaped.inc()
        log.warning("run %s was left RUNNING (%s): marked KILLED", run_id, reason)
