"""UI figures in a real browser against a real MLflow server and the real UI process.

1. Train: time from clicking Train to the result cards (random_forest, 100 trees, co2_canada), against
   the same training run as a plain script (``train()`` in this process) in the same run. Target: the
   UI within 1.15x of the script (issue 12).
2. Runs: time to show the Runs page of an experiment holding 10,000 runs (100 sweeps of 100 trials,
   as the Sweep page logs them), 100 per page (cold: first query after the cache expired; warm:
   cached), against the naive page that shows 1,000 runs at once (same page, 1,000 per page), and the
   bare cost of reading every run (all pages of ``search_runs`` and the table, no browser). Target:
   under 1 s cold.

Run: .venv/bin/python -m benchmarks.bench_ui [--rounds 5] [--sweeps 100 --trials 100] [--skip-train]
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from mlflow import MlflowClient

from mlops_local import runs
from mlops_local.ml.training import train
from mlops_local.ml.types import DatasetSpec, TrainRequest
from mlops_local.settings import Settings
from tests.browser import CHROMIUM_ARGS, choose, chromium_path, key, selected, wait_idle
from tests.services import stack_env, start_service

BENCH_EXPERIMENT = "bench-runs"
CACHE_TTL = 15  # common.runs_page's ttl: waiting past it makes the next render cold


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _new_card_run_id(page, previous: str | None, timeout_ms: int = 300_000) -> str:
    """Wait until the result cards belong to a run other than ``previous``; its run id."""
    page.wait_for_function(
        """(previous) => { const a = Array.from(document.querySelectorAll('a'))
                              .find(e => e.innerText.trim() === 'Run in MLflow');
                           return a && !(previous && a.href.includes(previous))
                                  && document.querySelector('[data-testid="stMetricValue"]'); }""",
        arg=previous, timeout=timeout_ms, polling=50)  # not every frame: that would steal the CPU
    href = page.get_by_role("link", name="Run in MLflow").get_attribute("href")
    return re.search(r"/runs/([0-9a-f]{32})", href).group(1)


def bench_train(page, ui_url: str, settings: Settings, rounds: int) -> tuple[list[float], list[float]]:
    """(UI click-to-cards seconds, plain-script seconds), alternating, one warm-up of each first."""
    page.goto(ui_url)
    page.get_by_role("heading", name="Train", exact=True).wait_for()
    wait_idle(page)
    request = TrainRequest(DatasetSpec("co2_canada"), "random_forest", source="cli")
    button = page.locator(key("train_button")).locator("button")
    ui_times, script_times, previous = [], [], None
    for i in range(rounds + 1):
        t0 = time.perf_counter()
        train(request, settings)
        script = time.perf_counter() - t0
        wait_idle(page)
        t0 = time.perf_counter()
        button.click()
        previous = _new_card_run_id(page, previous)
        ui = time.perf_counter() - t0
        if i:  # round 0 warms imports, caches and the server
            script_times.append(script)
            ui_times.append(ui)
        print(f"  train round {i}: script {script:.2f} s, UI click->cards {ui:.2f} s"
              + (" (warm-up)" if not i else ""), flush=True)
    return ui_times, script_times


def create_sweeps(client: MlflowClient, settings: Settings, sweeps: int, trials: int) -> str:
    """``sweeps`` finished sweeps of ``trials`` trials each, tagged as the sweep engine tags them, written
    in bulk into the server's database (benchmarks/seed_runs.py); the experiment's id."""
    from benchmarks.seed_runs import seed_sweeps

    seed_sweeps(client, settings.backend_store_uri, BENCH_EXPERIMENT, sweeps, trials)
    return client.get_experiment_by_name(BENCH_EXPERIMENT).experiment_id


def naive_runs_table(client: MlflowClient, exp_id: str) -> float:
    """Seconds to read every run of the experiment (all pages) and build the table: the naive page."""
    t0 = time.perf_counter()
    found, token = [], None
    while True:
        page = client.search_runs([exp_id], max_results=1000, page_token=token)
        found.extend(page)
        token = page.token
        if not token:
            break
    runs.runs_to_frame(found)
    return time.perf_counter() - t0


def _open_runs(page, ui_url: str) -> None:
    """A new session on the Runs page, showing MLflow's empty ``Default`` experiment."""
    page.goto(ui_url)
    nav = page.locator('[data-testid="stSidebarNav"] a', has_text="Runs").first
    nav.wait_for()
    wait_idle(page)
    nav.click()
    page.locator(key("runs_experiment")).wait_for()
    wait_idle(page)
    if selected(page, "runs_experiment") != "Default":
        choose(page, "runs_experiment", "Default")


def _first_page_shown(page) -> None:
    """Wait until the table and the caption of a non-empty first page are on screen."""
    page.get_by_text(re.compile(r"^Page 1 · [1-9]\d* ")).wait_for()
    page.locator('[data-testid="stDataFrame"]').first.wait_for()


def bench_runs_page(page, ui_url: str, rounds: int) -> dict[str, list[float]]:
    """Seconds to show the big experiment: 100 per page cold and warm, 1,000 at once (naive)."""
    times: dict[str, list[float]] = {"cold": [], "warm": [], "naive": []}
    for i in range(rounds):
        if i:
            time.sleep(CACHE_TTL + 1)  # let every cached page expire
        for label in ("cold", "warm"):
            _open_runs(page, ui_url)
            t0 = time.perf_counter()
            choose(page, "runs_experiment", BENCH_EXPERIMENT)
            _first_page_shown(page)
            times[label].append(time.perf_counter() - t0)
        toggle = page.locator(key("runs_show_trials"))
        if toggle.count():  # the naive page lists every trial, not one row per sweep
            toggle.get_by_text("Show sweep trials").click()
            wait_idle(page)
        t0 = time.perf_counter()
        choose(page, "runs_limit", "1000")
        page.get_by_text(re.compile(r"^Page 1 · 1000 ")).wait_for()
        times["naive"].append(time.perf_counter() - t0)
        print(f"  runs round {i}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sweeps", type=int, default=100,
                        help="sweeps in the Runs page's experiment (0: skip that part)")
    parser.add_argument("--trials", type=int, default=100, help="trials per sweep")
    parser.add_argument("--skip-train", action="store_true", help="measure the Runs page only")
    parser.add_argument("--mlflow-db", type=Path, metavar="PATH",
                        help="start from a copy of this mlflow.db holding the sweeps (an earlier run's "
                             "MLOPS_HOME/mlflow/mlflow.db) instead of creating them")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    path = chromium_path()
    if path is None:
        raise SystemExit("no Chromium: install it or set MLOPS_CHROMIUM")
    from playwright.sync_api import sync_playwright

    home = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    env = stack_env(home, MLOPS_SCRAPE_INTERVAL=5, MLOPS_SYNC_INTERVAL=5)
    env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{env['MLOPS_MLFLOW_PORT']}"
    settings = Settings.from_env(env)
    if args.mlflow_db:
        settings.mlflow_db.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.mlflow_db, settings.mlflow_db)
    services = [start_service("mlflow", env, home / "logs")]
    total = args.sweeps * (args.trials + 1)
    ui_times: list[float] = []
    script_times: list[float] = []
    try:
        services.append(start_service("ui", env, home / "logs"))
        ui_url = services[-1].url
        client = MlflowClient(env["MLFLOW_TRACKING_URI"])
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.set_default_timeout(300_000)
            if not args.skip_train:
                print(f"Train: random_forest (100 trees) on co2_canada, {args.rounds} rounds + 1 warm-up")
                ui_times, script_times = bench_train(page, ui_url, settings, args.rounds)
            naive, shown = [], {}
            if args.sweeps:
                found = client.get_experiment_by_name(BENCH_EXPERIMENT) if args.mlflow_db else None
                if found is not None:
                    exp_id = found.experiment_id
                    print(f"Runs: {BENCH_EXPERIMENT} from {args.mlflow_db}", flush=True)
                else:
                    print(f"Runs: creating {args.sweeps} sweeps of {args.trials} trials ({total} runs) ...",
                          flush=True)
                    t0 = time.perf_counter()
                    exp_id = create_sweeps(client, settings, args.sweeps, args.trials)
                    print(f"  created in {time.perf_counter() - t0:.1f} s; home {home}", flush=True)
                naive = [naive_runs_table(client, exp_id) for _ in range(min(args.rounds, 3))]
                shown = bench_runs_page(page, ui_url, max(3, args.rounds // 2 + 1))
            browser.close()
    finally:
        for service in reversed(services):
            service.stop()

    print("\nResults (medians)")
    if ui_times:
        ui_m, script_m = _median(ui_times), _median(script_times)
        ratio = _median([u / s for u, s in zip(ui_times, script_times, strict=True)])
        print(f"  train, plain script            {script_m:6.2f} s")
        print(f"  train, UI click -> cards       {ui_m:6.2f} s   ratio {ui_m / script_m:.2f}x, "
              f"per round {ratio:.2f}x (target <= 1.15x)")
    if args.sweeps:
        print(f"  runs page, 100 per page, cold  {_median(shown['cold']):6.2f} s   (target < 1 s; "
              f"{total} runs in the experiment)")
        print(f"  runs page, 100 per page, warm  {_median(shown['warm']):6.2f} s   (cached)")
        print(f"  naive: 1000 runs on one page   {_median(shown['naive']):6.2f} s   (1000 per page)")
        print(f"  naive: read all, no browser    {_median(naive):6.2f} s   (search_runs pages + table)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
