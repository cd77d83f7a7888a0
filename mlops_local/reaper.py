"""Close runs left RUNNING by a process that died (kill -9, a crash, a stopped UI): KILLED, counted.

Every run records its owner (see :mod:`mlops_local.owner`). The UI process runs the reaper when its
sync from MLflow starts and on every sync; only runs of this host are judged, a run of a live
process is never touched.

A sweep's trial runs in a worker process the sweep may kill (its Stop); closing those trials is the
sweep's job, FINISHED when the trial had logged its score. So a child run whose parent is still
RUNNING with a live owner is left to that owner; the reaper takes it only once the parent is closed
or orphaned too. Each run is read again just before it is closed: a run closed meanwhile (by its
sweep, say) keeps its status.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter

from mlops_local.owner import TAG_HOST, TAG_PID, owner_gone
from mlops_local.restclient import TrackingClient, error_answers
from mlops_local.runmeta import TAG_ERROR, TAG_PARENT

log = logging.getLogger(__name__)

_PAGE = 200


class Reaper:
    """Marks RUNNING runs whose owner process is gone KILLED; ``mlops_runs_reaped_total`` counts them."""

    def __init__(self, registry: CollectorRegistry | None, host: str | None = None) -> None:
        self.host = host or socket.gethostname()
        self.reaped = Counter("mlops_runs_reaped", "Runs left RUNNING by a process that died, closed as "
                              "KILLED.", registry=registry)

    def reap(self, client: TrackingClient, experiment_ids: Sequence[str]) -> list[str]:
        """Close this host's orphaned RUNNING runs in ``experiment_ids``; returns their ids."""
        if not experiment_ids:
            return []
        closed: list[str] = []
        query = f"attributes.status = 'RUNNING' and tags.`{TAG_HOST}` = '{self.host}'"
        token = None
        parents: dict[str, bool] = {}  # parent run id -> held by a live owner (one read per pass)
        while True:
            page = client.search_runs(list(experiment_ids), query, max_results=_PAGE, page_token=token)
            for run in page:
                tags = run.data.tags
                if not owner_gone(tags, self.host):
                    continue
                parent = tags.get(TAG_PARENT)
                if parent and self._parent_held(client, parent, parents):
                    continue  # its sweep closes it
                if self._close(client, run.info.run_id, tags):
                    closed.append(run.info.run_id)
            token = page.token
            if not token:
                return closed

    def _parent_held(self, client: TrackingClient, run_id: str, cache: dict[str, bool]) -> bool:
        """Whether parent run ``run_id`` is RUNNING and its owner alive (then its children are its own)."""
        if run_id not in cache:
            try:
                parent = client.get_run(run_id)
            except error_answers():  # MLflow answered: deleted or unreadable, nobody holds the child
                cache[run_id] = False
            else:
                cache[run_id] = (parent.info.status == "RUNNING"
                                 and not owner_gone(parent.data.tags, self.host))
        return cache[run_id]

    def _close(self, client: TrackingClient, run_id: str, tags: dict[str, str]) -> bool:
        """Close ``run_id`` KILLED unless it was closed since the search read it; whether it was."""
        if client.get_run(run_id).info.status != "RUNNING":
            return False
        reason = f"owner process {tags.get(TAG_PID)} on {self.host} is gone; closed by the reaper"
        client.set_tag(run_id, TAG_ERROR, reason)
        client.set_terminated(run_id, "KILLED")
        self.reaped.inc()
        log.warning("run %s was left RUNNING (%s): marked KILLED", run_id, reason)
        return True
