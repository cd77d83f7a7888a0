"""The promotion gate on the Runs page (AppTest, real MLflow server): Register shows the verdict, both
scores on the same rows, before anything moves; a winner moves the alias on "Promote to champion", a
loser is refused (and recorded) with "Promote anyway" as the recorded way past the gate."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient
from streamlit.testing.v1 import AppTest

from mlops_local.ml import promotion
from mlops_local.ml.training import train
from mlops_local.ml.types import DatasetSpec, TrainRequest, TrainResult
from mlops_local.settings import Settings
from tests.test_promotion import verdict_runs
from tests.test_ui_runs import open_runs, tick

EXPERIMENT = "promotion-ui"


@pytest.fixture(scope="module")
def ridges(mlflow_env: dict[str, str]) -> tuple[TrainResult, TrainResult]:
    """(good, bad): two real ridge trainings on diabetes, the second regularised into a near-constant."""
    from mlops_local.ui import common

    settings = Settings.from_env(mlflow_env)
    results = tuple(train(TrainRequest(DatasetSpec("diabetes"), "ridge", params={"alpha": alpha},
                                       experiment=EXPERIMENT, log_plots=False), settings)
                    for alpha in (1.0, 1e5))
    common.clear_run_caches()  # a new experiment: the pages' cached lists (15 s) would not show it yet
    return results


def metrics(at: AppTest) -> dict[str, str]:
    """The verdict panel's figures, label -> value as shown."""
    return {m.label: m.value for m in at.metric}


def register(run_id: str, name: str) -> AppTest:
    at = tick(open_runs(EXPERIMENT), run_id)
    at.text_input(key="runs_register_name").set_value(name).run()
    at.button(key="runs_register_button").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def click(at: AppTest, key: str) -> AppTest:
    at.button(key=key).click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def alias_run(client: MlflowClient, name: str) -> str | None:
    version = promotion.champion_of(client, name, "champion")
    return version.run_id if version is not None else None


def test_register_shows_the_verdict_before_the_alias_moves(ui_env: dict[str, str], ridges) -> None:
    from mlops_local.ui import common

    good, bad = ridges
    client = MlflowClient(ui_env["MLFLOW_TRACKING_URI"])
    name = "promo-ui"

    # 1. No champion yet: the verdict says so; nothing moves until the person promotes.
    at = register(bad.run_id, name)
    assert "No champion yet: the candidate wins" in at.success[0].value
    assert metrics(at)["Candidate r2"] == f"{bad.metrics['r2']:.4f}"
    assert alias_run(client, name) is None and not verdict_runs(client, name)
    assert not at.button(key="runs_promote_button").disabled and at.button(key="runs_promote_force").disabled
    click(at, "runs_promote_button")
    assert "as promo-ui version 1; @champion now points at version 1" in at.success[0].value
    assert alias_run(client, name) == bad.run_id

    # 2. A better candidate: both scores and the margin on the same rows, then the alias moves on the click.
    at = register(good.run_id, name)
    shown = metrics(at)
    n_test = client.get_run(good.run_id).data.params["n_test"]
    assert shown["Candidate r2"] == f"{good.metrics['r2']:.4f}"
    assert shown["Champion r2 (v1)"] == f"{bad.metrics['r2']:.4f}"
    assert shown["Margin"] == f"{good.metrics['r2'] - bad.metrics['r2']:+.4f}"
    assert shown["Held-out rows"] == n_test
    assert alias_run(client, name) == bad.run_id  # not yet
    click(at, "runs_promote_button")
    assert "@champion moved from version 1 to version 2" in at.success[0].value
    assert alias_run(client, name) == good.run_id

    # 3. A worse one: refused at once, with both scores, and recorded; "Promote anyway" forces it, recorded.
    at = register(bad.run_id, name)
    shown = metrics(at)
    assert shown["Candidate r2"] == f"{bad.metrics['r2']:.4f}"
    assert shown["Champion r2 (v2)"] == f"{good.metrics['r2']:.4f}"
    assert "The gate refused: @champion stays on version 2" in at.warning[0].value
    assert at.button(key="runs_promote_button").disabled and not at.button(key="runs_promote_force").disabled
    assert alias_run(client, name) == good.run_id
    results = [v.data.params["result"] for v in verdict_runs(client, name)]
    assert results == ["promoted", "promoted", "refused"]
    click(at, "runs_promote_force")
    assert "Forced past the gate" in at.success[0].value
    assert alias_run(client, name) == bad.run_id
    verdicts = verdict_runs(client, name)
    assert [v.data.params["result"] for v in verdicts] == ["promoted", "promoted", "refused", "forced"]

    # Each decision is counted on the UI process's /metrics registry as it is made.
    counter = common.runtime().promotions
    assert all(counter.counted(v.info.run_id) for v in verdicts)

    # 4. Registering the champion's own run again: nothing to judge, the old message.
    at = register(bad.run_id, name)
    assert "already promo-ui version 1: no new version was added; @champion already points at version 1" \
        in at.info[0].value
    assert len(verdict_runs(client, name)) == 4


def test_a_verdict_goes_when_the_run_or_name_changes(ui_env: dict[str, str], ridges) -> None:
    good, bad = ridges
    at = register(good.run_id, "promo-ui-stale")
    assert at.button(key="runs_promote_button")
    at.text_input(key="runs_register_name").set_value("promo-ui-other").run()
    assert not [b for b in at.button if b.key == "runs_promote_button"]  # no button for another name


def test_cli_verdicts_reach_the_ui_process_metrics_through_the_sync(ui_env: dict[str, str], ridges) -> None:
    """A `mlops-local promote` process is gone before any scrape: the UI's sync counts its verdict run."""
    import urllib.request

    from mlops_local.settings import get_settings
    from mlops_local.ui import common
    from tests.services import wait_for

    good, bad = ridges
    runtime = common.runtime()  # started here as `serve ui` starts it (the sync runs every second)
    client = MlflowClient(ui_env["MLFLOW_TRACKING_URI"])
    settings = get_settings()
    promotion.decide(client, settings, promotion.evaluate(client, good.run_id, "promo-ui-sync"))
    refused = promotion.decide(client, settings, promotion.evaluate(client, bad.run_id, "promo-ui-sync"))
    assert refused.result == "refused"
    wait_for(lambda: runtime.promotions.counted(refused.verdict_run_id), "the sync counting the verdict run")
    with urllib.request.urlopen(runtime.metrics_server.url, timeout=10) as response:
        exposed = response.read().decode()
    refused_total = runtime.promotions.counts()["refused"]
    assert refused_total >= 1
    assert f'mlops_promotions_total{{result="refused"}} {float(refused_total)}' in exposed
