"""The model service's panels, defined once: the UI's Serving page and the Grafana dashboard's "Serving"
row run the same PromQL (as `panels.PANELS` does for Monitoring and the first row).

``$__range`` is Grafana's built-in for the dashboard's time range; the page passes its chosen range
as that variable to `panels.render_expr`. Rates use a fixed 1-minute window so both show the same
numbers at every zoom.
"""

from __future__ import annotations

from mlops_local.metrics.panels import Panel, Threshold

SERVING_JOB = "mlops-serving"  # scrape job of the model service in prometheus.yml
RATE_WINDOW = "1m"
PSI_WARN, PSI_ALERT = 0.1, 0.25  # the usual PSI reading: < 0.1 stable, 0.1-0.25 moderate, > 0.25 shifted
PSI_STEPS = (Threshold(None, "green"), Threshold(PSI_WARN, "orange"), Threshold(PSI_ALERT, "red"))

_REQUESTS = "mlops_serving_requests_total"
_LATENCY = f"sum by (le) (rate(mlops_serving_request_duration_seconds_bucket[{RATE_WINDOW}]))"


def _quantile(q: float, name: str) -> str:
    return f'label_replace(histogram_quantile({q}, {_LATENCY}), "quantile", "{name}", "", "")'


SERVING_PANELS: tuple[Panel, ...] = (
    Panel(
        id="serving_up", title="Model service", kind="stat", unit="none", legend="{{instance}}",
        expr=f'up{{job="{SERVING_JOB}"}}',
        description="1 when Prometheus scraped the model service's /metrics at its last try.",
        thresholds=(Threshold(None, "red"), Threshold(1, "green")),
        value_map={"0": ("DOWN", "red"), "1": ("UP", "green")},
    ),
    Panel(
        id="serving_model", title="Served model", kind="stat", unit="none",
        legend="{{model}} version {{version}} @{{alias}}", expr="mlops_serving_model_info",
        description="The registered model version the service answers with (alias moves swap it live).",
        value_map={"1": ("serving", "green")},
    ),
    Panel(
        id="serving_prediction_psi", title="Prediction drift (PSI)", kind="stat", unit="none",
        legend="{{model}}", expr="mlops_prediction_drift_psi", decimals=3, thresholds=PSI_STEPS,
        description="PSI of the recent predictions against the training predictions: under 0.1 stable, "
                    "0.1-0.25 moderate, over 0.25 shifted.",
    ),
    Panel(
        id="serving_drift_window", title="Drift window (rows)", kind="stat", unit="short",
        legend="{{model}}", expr="mlops_drift_window_rows",
        description="Recent rows the PSI values are computed over (MLOPS_DRIFT_WINDOW at most).",
    ),
    Panel(
        id="serving_requests", title="Requests per second by status", kind="timeseries", unit="reqps",
        legend="{{status}}", expr=f"sum by (status) (rate({_REQUESTS}[{RATE_WINDOW}]))", decimals=2,
        description="Scoring requests per second over the previous minute: ok, bad_request (HTTP 4xx: "
                    "the client's input), error (HTTP 5xx).",
    ),
    Panel(
        id="serving_latency", title="Latency p50 / p95 / p99", kind="timeseries", unit="s",
        legend="{{quantile}}",
        expr=f"{_quantile(0.5, 'p50')} or {_quantile(0.95, 'p95')} or {_quantile(0.99, 'p99')}",
        description="Time to answer a scoring request (read, parse, predict, encode), previous minute.",
    ),
    Panel(
        id="serving_errors", title="Failed requests (share)", kind="timeseries", unit="percentunit",
        legend="failed (4xx + 5xx)", decimals=3,
        expr=(f'(sum(rate({_REQUESTS}{{status!="ok"}}[{RATE_WINDOW}])) or '
              f"sum(rate({_REQUESTS}[{RATE_WINDOW}])) * 0) / sum(rate({_REQUESTS}[{RATE_WINDOW}]))"),
        description="Share of scoring requests answered with an error over the previous minute "
                    "(0 while all succeed; no value without traffic).",
    ),
    Panel(
        id="serving_predictions", title="Predictions by training-quantile bucket", kind="bargauge",
        unit="short", legend="{{le}}",
        expr="sum by (le) (increase(mlops_serving_prediction_bucket[$__range]))",
        description="Predictions over the range per bucket of mlops_serving_prediction. The bounds are the "
                    "training target's 5 %..95 % quantiles: if predictions follow training's "
                    "distribution each inner bucket holds about a tenth of them, the two outer ones "
                    "about 5 %.",
    ),
    Panel(
        id="serving_feature_psi", title="Input drift: PSI per feature", kind="bargauge", unit="none",
        legend="{{feature}}", expr="max by (feature) (last_over_time(mlops_feature_drift_psi[$__range]))",
        decimals=3, thresholds=PSI_STEPS,
        description="Population stability index of each input feature over the recent window against "
                    "the training data (latest value in the range): under 0.1 stable, 0.1-0.25 "
                    "moderate, over 0.25 shifted.",
    ),
    Panel(
        id="serving_feature_psi_over_time", title="PSI per feature over time", kind="timeseries",
        unit="none", legend="{{feature}}", expr="max by (feature) (mlops_feature_drift_psi)", decimals=3,
        thresholds=PSI_STEPS,
        description="Each feature's PSI as scraped over time: a shifted input shows as a line rising "
                    "past 0.25.",
    ),
)

# Alerts from Prometheus' rules (ALERTS is Prometheus' own series of pending and firing alerts).
ALERT_PANELS: tuple[Panel, ...] = (
    Panel(
        id="alerts_firing", title="Alerts firing", kind="table", unit="none",
        legend="{{alertname}} ({{severity}})", expr='ALERTS{alertstate="firing"}',
        description="Alerts Prometheus fires now, from its rule files (name, severity, labels).",
    ),
)
ALERTS_ANNOTATION_EXPR = 'ALERTS{alertstate="firing"}'
# Features whose PSI is not exported yet (too few rows for their bins) and the rows each needs.
DRIFT_WAITING_EXPR = "mlops_feature_drift_min_rows"

_BY_ID = {panel.id: panel for panel in (*SERVING_PANELS, *ALERT_PANELS)}


def get_serving_panel(panel_id: str) -> Panel:
    """The serving or alert panel with this id (KeyError naming the known ids otherwise)."""
    try:
        return _BY_ID[panel_id]
    except KeyError:
        raise KeyError(f"unknown serving panel {panel_id!r}; known: {', '.join(_BY_ID)}") from None


def bucket_counts(cumulative: dict[float, float]) -> list[tuple[str, float]]:
    """Per-bucket counts, labelled by their bounds, from a histogram's cumulative ``{le: count}``."""
    bounds = sorted(cumulative)
    out, previous, low = [], 0.0, None
    for bound in bounds:
        count = max(0.0, cumulative[bound] - previous)
        if low is None:
            label = f"< {bound:g}" if bound != float("inf") else "all"
        elif bound == float("inf"):
            label = f"≥ {low:g}"
        else:
            label = f"{low:g} – {bound:g}"
        out.append((label, count))
        previous, low = cumulative[bound], bound
    return out


def training_shares(bounds: int, quantiles: tuple[float, ...]) -> list[float] | None:
    """Training's share per bucket when the ``bounds`` finite bounds are the target's ``quantiles``
    (one bucket below the first, one above the last); None when they are not (ties merged bounds)."""
    if bounds != len(quantiles):
        return None
    edges = [0.0, *quantiles, 1.0]
    return [hi - lo for lo, hi in zip(edges, edges[1:], strict=False)]
