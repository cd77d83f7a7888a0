"""The registered champions' test R², for the ChampionBeaten alert: `mlops_champion_r2`.

Read at each sync from MLflow's model registry: every registered model whose alias (MLOPS_SERVE_ALIAS,
`champion`) points at a version, with the R² and dataset of the run that version came from. A version's
run is read once (its scores do not change); later syncs cost one registry search.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily

from mlops_local.metrics.labels import clean_label
from mlops_local.metrics.records import record_from_run
from mlops_local.restclient import TrackingClient

LABELS = ("registered_model", "version", "experiment", "dataset")
PAGE = 200


@dataclass(frozen=True)
class Champion:
    """A registered model version carrying the champion alias, and its run's test R² (None: no score)."""

    registered_model: str
    version: str
    run_id: str
    experiment: str
    dataset: str
    r2: float | None


class ChampionReader:
    """Finds the versions ``alias`` points at; remembers each version's run so it is read once."""

    def __init__(self, client: TrackingClient, alias: str) -> None:
        self.client = client
        self.alias = alias
        self._known: dict[tuple[str, str], Champion | None] = {}

    def read(self, experiment_names: Mapping[str, str]) -> list[Champion]:
        """The champions now (a model whose alias points at a run that is not a scored training: left out)."""
        found: list[Champion] = []
        token = None
        while True:
            page = self.client.search_registered_models(max_results=PAGE, page_token=token)
            for model in page:
                version = (getattr(model, "aliases", None) or {}).get(self.alias)
                if version is None:
                    continue
                key = (model.name, str(version))
                if key not in self._known:
                    self._known[key] = self._champion(model.name, str(version), experiment_names)
                if self._known[key] is not None:
                    found.append(self._known[key])
            token = page.token
            if not token:
                return found

    def _champion(self, name: str, version: str, experiment_names: Mapping[str, str]) -> Champion | None:
        run_id = self.client.get_model_version(name, version).run_id
        if not run_id:
            return None
        run = self.client.get_run(run_id)
        names = dict(experiment_names)
        if run.info.experiment_id not in names:  # an experiment the sync does not read
            names[run.info.experiment_id] = self.client.get_experiment(run.info.experiment_id).name
        record = record_from_run(run, names)
        if record is None:
            return None
        return Champion(clean_label(name), clean_label(version), run_id, record.experiment, record.dataset,
                        record.r2)


def champion_family(champions: Iterable[Champion]) -> GaugeMetricFamily:
    """`mlops_champion_r2{registered_model, version, experiment, dataset}`."""
    family = GaugeMetricFamily("mlops_champion_r2", "Test-set R2 of the run behind each registered model's "
                               "champion alias (MLOPS_SERVE_ALIAS).", labels=LABELS)
    for champion in sorted(champions, key=lambda c: (c.registered_model, c.version)):
        if champion.r2 is not None:
            family.add_metric((champion.registered_model, champion.version, champion.experiment,
                               champion.dataset), champion.r2)
    return family
