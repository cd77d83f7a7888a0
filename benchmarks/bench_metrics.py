"""/metrics cost at 10 / 1,000 / 10,000 runs, the first read after a restart, and training-to-PromQL delay.

Against naive baselines measured in the same run:
- "gauge per run": a registry with one labelled Gauge child per run id (r2, rmse, mae);
- "query per scrape": a collector that searches MLflow on every scrape and keeps the latest per key.

Runs are created through the tracking API on a private MLflow server (about 3 requests a run; 11,000
runs take minutes, so ``--home DIR`` keeps them for the next invocation).
Run: .venv/bin/python -m benchmarks.bench_metrics [--runs 10000] [--home DIR] [--scrape-interval 5]
"""

from __future__ import annotations

import argparse
import gzip
import random
import statistics
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path

from mlflow.tracking import MlflowClient
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import GaugeMetricFamily

from mlops_local.metrics.exporter import ModelMetricsExporter
from mlops_local.metrics.records import record_from_run
from mlops_local.metrics.registry import build_registry
from mlops_local.metrics.server import start_metrics_server
from mlops_local.metrics.sync import MlflowSync
from mlops_local.ml.catalog import CATALOG
from mlops_local.ml.types import TrainResult
from mlops_local.settings import Settings
from tests.services import free_port, stack_env, start_service
from tests.test_sync import RunSpec, log_runs

DATASETS = ("co2_canada", "diabetes", "friedman1", "uploaded_sales.csv")
MODELS = tuple(CATALOG)
EXPERIMENTS = ("a", "b", "c")


# -- data ------------------------------------------------------------------------------------------
def stage_experiments(n: int) -> list[str]:
    return [f"bench-{n}-{suffix}" for suffix in EXPERIMENTS]


def ensure_runs(client: MlflowClient, n: int) -> None:
    """``n`` runs over 3 experiments x 4 datasets x 11 models (132 keys), created once per home."""
    names = stage_experiments(n)
    ids = []
    for name in names:
        found = client.get_experiment_by_name(name)
        ids.append(found.experiment_id if found else client.create_experiment(name))
    have = len(client.search_runs(ids, max_results=50000))
    if have >= n:
        return
    rng = random.Random(n)
    base = int(time.time() * 1000) - 1000 * n - 60_000  # one a second, all ended a minute ago or more
    todo: dict[str, list[RunSpec]] = {i: [] for i in ids}
    for i in range(have, n):
        todo[ids[i % 3]].append(RunSpec(DATASETS[(i // 11) % 4], MODELS[i % 11], rng.uniform(0.2, 0.95),
                                        base + 1000 * i, fit_s=rng.lognormvariate(-1, 1.2)))
    started = time.perf_counter()
    for experiment_id, specs in todo.items():
        log_runs(client, experiment_id, specs)
    print(f"  created {n - have} runs for stage {n} in {time.perf_counter() - started:.0f} s", flush=True)


# -- measuring ---------------------------------------------------------------------------------------
def scrape_stats(registry: CollectorRegistry, repeat: int) -> tuple[float, int, int]:
    """(median latency ms, body bytes, gzip bytes) of GET /metrics on a real server thread."""
    server = start_metrics_server(registry, "127.0.0.1", 0)
    try:
        times = []
        body = b""
        for _ in range(repeat):
            t = time.perf_counter()
            with urllib.request.urlopen(server.url, timeout=120) as resp:
                body = resp.read()
            times.append(time.perf_counter() - t)
        request = urllib.request.Request(server.url, headers={"Accept-Encoding": "gzip"})
        with urllib.request.urlopen(request, timeout=120) as resp:
            zipped = resp.read()
        assert gzip.decompress(zipped)
        return statistics.median(times) * 1000, len(body), len(zipped)
    finally:
        server.stop()


class QueryPerScrape:
    """Baseline collector: every scrape searches MLflow and keeps the latest run per key."""

    def __init__(self, client: MlflowClient, experiments: list[str]) -> None:
        self.client = client
        self.names = {client.get_experiment_by_name(n).experiment_id: n for n in experiments}

    def collect(self) -> Iterable[GaugeMetricFamily]:
        latest = {}
        token = None
        while True:
            page = self.client.search_runs(list(self.names), "attributes.end_time > 0", max_results=1000,
                                           order_by=["attributes.end_time DESC"], page_token=token)
            for run in page:
                record = record_from_run(run, self.names)
                if record is not None and record.r2 is not None:
                    latest.setdefault(record.key, record.r2)
            token = page.token
            if not token:
                break
        family = GaugeMetricFamily("mlops_model_r2", "latest r2", labels=["experiment", "dataset", "model"])
        for key, value in latest.items():
            family.add_metric(key, value)
        yield family


def gauge_per_run_registry(client: MlflowClient, experiments: list[str]) -> CollectorRegistry:
    """Baseline registry: one Gauge child per run id for r2, rmse and mae."""
    registry = build_registry()
    labels = ["run_id", "experiment", "dataset", "model"]
    gauges = {m: Gauge(f"naive_model_{m}", m, labels, registry=registry) for m in ("r2", "rmse", "mae")}
    names = {client.get_experiment_by_name(n).experiment_id: n for n in experiments}
    token = None
    while True:
        page = client.search_runs(list(names), max_results=5000, page_token=token)
        for run in page:
            record = record_from_run(run, names)
            if record is None:
                continue
            for metric, gauge in gauges.items():
                value = getattr(record, metric)
                if value is not None:
                    gauge.labels(record.run_id, *record.key).set(value)
        token = page.token
        if not token:
            return registry


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def stage(client: MlflowClient, settings: Settings, n: int, repeat: int, rows: list[tuple],
          caps: tuple[int, ...] = ()) -> None:
    """Ours and the baselines on ``n`` runs; ``caps``: ours again with a lower MLOPS_MAX_SERIES."""
    experiments = stage_experiments(n)
    registry = build_registry()
    exporter = ModelMetricsExporter(registry, settings)
    sync = MlflowSync(client, exporter, experiments=experiments)
    seconds, full = timed(sync.sync_once)
    incremental_s, incremental = timed(sync.sync_once)
    ms, size, zipped = scrape_stats(registry, repeat)
    rows.append((f"{n} runs", "exporter (ours)", f"{ms:.2f}", size, zipped, exporter.series_count()))
    for cap in caps:  # the size follows the label combinations: the cap bounds it
        capped = build_registry()
        capped_exporter = ModelMetricsExporter(capped, settings, max_series=cap)
        MlflowSync(client, capped_exporter, experiments=experiments).sync_once()
        ms, size, zipped = scrape_stats(capped, repeat)
        rows.append((f"{n} runs", f"exporter, MLOPS_MAX_SERIES={cap}", f"{ms:.2f}", size, zipped,
                     capped_exporter.series_count()))
    ms, size, zipped = scrape_stats(gauge_per_run_registry(client, experiments), repeat)
    rows.append((f"{n} runs", "baseline: gauge per run", f"{ms:.2f}", size, zipped, 3 * n))
    naive = build_registry()
    naive.register(QueryPerScrape(client, experiments))
    ms, size, zipped = scrape_stats(naive, max(3, repeat // 40))
    rows.append((f"{n} runs", "baseline: query MLflow per scrape", f"{ms:.2f}", size, zipped, "-"))
    print(f"  stage {n}: full read {full.fetched} runs in {seconds:.2f} s ({full.pages} pages, gauges "
          f"after {full.first_page_seconds:.2f} s); incremental with nothing new "
          f"{incremental_s * 1000:.0f} ms ({incremental.fetched} runs fetched)", flush=True)


def worst_case(settings: Settings, n: int, cap: int, repeat: int, rows: list[tuple]) -> None:
    """Every run on its own dataset (say, uploads): the cap bounds what is exported."""
    registry = build_registry()
    exporter = ModelMetricsExporter(registry, settings, max_series=cap)
    now = time.time() - n
    for i in range(n):
        exporter.observe(TrainResult(
            run_id=f"{i:032x}", experiment_id="1", experiment="mlops-local", dataset=f"upload_{i:05d}.csv",
            model=MODELS[i % 11], params={}, metrics={"r2": 0.5, "rmse": 1.0, "mae": 0.8},
            durations={"fit_s": 0.2}, model_uri=None, tracking_uri="-", finished_at=now + i))
    ms, size, zipped = scrape_stats(registry, repeat)
    rows.append((f"{n} runs, {n} keys", f"exporter, MLOPS_MAX_SERIES={cap}", f"{ms:.2f}", size, zipped,
                 exporter.series_count()))


# -- delay to Prometheus -------------------------------------------------------------------------------
def prom_value(url: str, expr: str) -> float | None:
    import json
    import urllib.parse

    with urllib.request.urlopen(f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}),
                                timeout=5) as resp:
        result = json.load(resp)["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def delays(env: dict[str, str], client: MlflowClient, trials: int, home: Path) -> dict[str, list[float]]:
    """Seconds from a run's end time in MLflow to its R2 answered by Prometheus, per path."""
    settings = Settings.from_env(env)
    registry = build_registry()
    exporter = ModelMetricsExporter(registry, settings, client=client)
    server = start_metrics_server(registry, settings.host, settings.metrics_port)
    prometheus = start_service("prometheus", env, home / "logs")
    experiment = client.get_experiment_by_name("bench-delay")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment("bench-delay")
    exporter.start()
    out: dict[str, list[float]] = {"observe (UI process)": [], "sync (CLI, other process)": []}
    rng = random.Random(1)
    try:
        deadline = time.time() + 120
        while not exporter.stats.bootstrapped or prom_value(prometheus.url, 'up{job="mlops-local"}') != 1:
            if time.time() > deadline:
                raise TimeoutError("Prometheus never scraped the exporter")
            time.sleep(0.1)
        for _ in range(trials):
            for path in out:
                time.sleep(rng.uniform(0, settings.scrape_interval))  # random phase against the scrapes
                r2 = round(rng.uniform(0.1, 0.9), 9)
                end = int(time.time() * 1000)
                [run_id] = log_runs(client, experiment_id, [RunSpec("co2_canada", "ridge", r2, end)], 1)
                if path.startswith("observe"):
                    exporter.observe(TrainResult(
                        run_id=run_id, experiment_id=experiment_id, experiment="bench-delay",
                        dataset="co2_canada", model="ridge", params={},
                        metrics={"r2": r2, "rmse": 2 - r2, "mae": 1.5 - r2}, durations={"fit_s": 0.2},
                        model_uri=None, tracking_uri=client.tracking_uri, finished_at=end / 1000))
                expr = 'mlops_model_r2{experiment="bench-delay",dataset="co2_canada",model="ridge"}'
                deadline = time.time() + 60
                while prom_value(prometheus.url, expr) != r2 and time.time() < deadline:
                    time.sleep(0.02)
                out[path].append(time.time() - end / 1000)
    finally:
        exporter.stop()
        prometheus.stop()
        server.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10000, help="largest stage (default 10000)")
    parser.add_argument("--home", type=Path, help="keep the MLflow data here and reuse it next time")
    parser.add_argument("--repeat", type=int, default=200, help="scrapes per measurement (default 200)")
    parser.add_argument("--scrape-interval", type=float, default=5.0)
    parser.add_argument("--sync-interval", type=float, default=5.0)
    parser.add_argument("--trials", type=int, default=5, help="trainings per delay path (default 5)")
    args = parser.parse_args(argv)

    home = args.home or Path(tempfile.mkdtemp(prefix="bench-metrics-"))
    home.mkdir(parents=True, exist_ok=True)
    port_file = home / "mlflow.port"  # same port each time, so stored artifact URIs stay valid
    if not port_file.exists():
        port_file.write_text(str(free_port()))
    env = stack_env(home, MLOPS_MLFLOW_PORT=port_file.read_text().strip(),
                    MLOPS_SCRAPE_INTERVAL=args.scrape_interval, MLOPS_SYNC_INTERVAL=args.sync_interval)
    settings = Settings.from_env(env)
    mlflow = start_service("mlflow", env, home / "logs")
    rows: list[tuple] = []
    try:
        client = MlflowClient(tracking_uri=settings.effective_tracking_uri)
        for n in sorted({10, min(1000, args.runs), args.runs}):
            ensure_runs(client, n)
            stage(client, settings, n, args.repeat, rows, caps=(80,) if n == args.runs else ())
        for cap in sorted({settings.max_series, 100}):
            worst_case(settings, args.runs, cap, args.repeat, rows)
        delay = delays(env, client, args.trials, home)
    finally:
        mlflow.stop()

    print("\n/metrics (real WSGI server thread, process collectors included; median of repeated GETs)")
    header = ("MLflow", "exporter", "median ms", "bytes", "gzip bytes", "model series")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  " + "  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)))
    print(f"\nend of training -> value answered by Prometheus (scrape {args.scrape_interval:g} s, "
          f"sync {args.sync_interval:g} s, {args.trials} trainings each, random phase)")
    for path, values in delay.items():
        print(f"  {path:28s} median {statistics.median(values):5.2f} s   max {max(values):5.2f} s")
    print(f"  target: UI path <= scrape + 1 s = {args.scrape_interval + 1:g} s; other processes <= scrape + "
          f"sync + 1 s = {args.scrape_interval + args.sync_interval + 1:g} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
