"""PSI on small windows: undrifted traffic must not cross the 0.25 "shifted" line at the start of every
window (PSI's small-sample bias), while a shifted column is still flagged from the first rows exported.

The reference profile is built as `train` builds it (training split, fitted pipeline's predictions) and
the exported values are read from the collector's exposition, as Prometheus scrapes them."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mlops_local.ml.profile import PROFILE_ARTIFACT, PROFILE_FILE, Reference, read_profile
from mlops_local.ml.training import prepare
from mlops_local.ml.types import DatasetSpec, TrainRequest
from mlops_local.serving.drift import (
    MIN_ROWS,
    ROWS_PER_DEGREE,
    DriftCollector,
    DriftWindow,
    degrees_of_freedom,
    null_psi,
    psi,
)
from mlops_local.serving.replay import parse_shift

SHIFTED = 0.25  # the FeatureDrift alert's critical line (alerts/rules.yml)
SIZES = range(100, 201, 10)


@dataclass(frozen=True)
class Served:
    reference: Reference
    rows: pd.DataFrame
    predict: object


@pytest.fixture(scope="module")
def served() -> Served:
    """A ridge model trained on co2_canada and the profile its training logs (read back from the file)."""
    prepared = prepare(TrainRequest(DatasetSpec("co2_canada"), "ridge"))
    prepared.pipeline.fit(prepared.X_train, prepared.y_train)
    with tempfile.TemporaryDirectory(prefix="drift-profile-") as tmp:
        prepared.write_model(Path(tmp))
        reference = read_profile(Path(tmp) / PROFILE_ARTIFACT / PROFILE_FILE)
    return Served(reference, prepared.data.X, prepared.pipeline.predict)


def exported(window: DriftWindow) -> dict[str, dict[str, float]]:
    """{metric: {feature (or ""): value}} of the drift families as one scrape reads them."""
    registry = CollectorRegistry()
    registry.register(DriftCollector(lambda: ("m", window)))
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            out.setdefault(sample.name, {})[sample.labels.get("feature", "")] = sample.value
    return out


def window_of(served: Served, rows: pd.DataFrame, n: int, seed: int) -> DriftWindow:
    """A default-size window holding ``n`` rows of ``rows`` (no repeats) and their predictions."""
    picks = np.random.default_rng(seed).choice(len(rows), n, replace=False)
    window = DriftWindow(served.reference, size=1000)
    chosen = rows.iloc[picks]
    window.add(chosen, np.asarray(served.predict(chosen), dtype=float))
    return window


def test_undrifted_windows_of_100_to_200_rows_stay_under_the_shifted_line(served: Served) -> None:
    # Raw PSI crossed 0.25 on 42.8 % of these windows (Transmission, Make: 21 bins each); now 0.2 %
    # (1,100 windows measured), the rare draw where a 5 % category is missing from 170 rows.
    alarms, total, worst = 0, 0, ("", 0.0, 0)
    for n in SIZES:
        for seed in range(30):
            values = exported(window_of(served, served.rows, n, seed)).get("mlops_feature_drift_psi", {})
            assert values, f"no PSI exported at {n} rows"
            name, value = max(values.items(), key=lambda kv: kv[1])
            total += 1
            alarms += value > SHIFTED
            if value > worst[1]:
                worst = (name, value, n)
    assert alarms / total <= 0.01, f"{alarms} of {total} undrifted windows over {SHIFTED}; worst {worst}"


@pytest.mark.parametrize(("shift", "column", "rows"), [
    ("Engine Size(L)=*1.3", "Engine Size(L)", MIN_ROWS),  # numeric, 10 bins: from the first rows as before
    ("Fuel Type=E", "Fuel Type", MIN_ROWS),  # 4 categories
    ("Transmission=AV", "Transmission", 200),  # 21 bins: exported from 10 x 20 rows
])
def test_a_shifted_column_is_flagged_as_soon_as_its_psi_is_exported(served: Served, shift: str, column: str,
                                                                    rows: int) -> None:
    shifted = parse_shift(shift).apply(served.rows)
    for seed in range(10):
        values = exported(window_of(served, shifted, rows, seed))["mlops_feature_drift_psi"]
        assert values[column] > SHIFTED and max(values, key=values.get) == column, (seed, values)


def test_a_many_binned_feature_says_how_many_rows_it_waits_for(served: Served) -> None:
    bins = {b.name: np.asarray(c) for b, c in served.reference.features}
    need = {name: max(MIN_ROWS, ROWS_PER_DEGREE * degrees_of_freedom(c)) for name, c in bins.items()}
    assert need["Transmission"] == 200 and need["Engine Size(L)"] == MIN_ROWS  # 21 and 10 bins
    window = window_of(served, served.rows, 150, seed=0)
    scrape = exported(window)
    waiting = scrape["mlops_feature_drift_min_rows"]
    assert waiting == {name: float(n) for name, n in need.items() if n > 150}
    assert set(scrape["mlops_feature_drift_psi"]) == {name for name, n in need.items() if n <= 150}
    assert scrape["mlops_drift_window_rows"] == {"": 150.0}
    window.add(served.rows.head(50), np.zeros(50))
    scrape = exported(window)
    assert "mlops_feature_drift_min_rows" not in scrape
    assert len(scrape["mlops_feature_drift_psi"]) == len(bins)


@pytest.mark.parametrize(("shares", "n"), [((0.5, 0.3, 0.15, 0.05), 40), ((0.1,) * 10, 100),
                                           ((0.6, 0.3, 0.05, 0.03, 0.01, 0.005, 0.005), 150)])
def test_the_no_drift_psi_is_the_mean_psi_of_undrifted_samples(shares: tuple[float, ...], n: int) -> None:
    expected = np.asarray(shares) * 10_000
    draws = np.random.default_rng(5).multinomial(n, shares, size=20_000)
    simulated = np.mean([psi(d, expected) for d in draws])
    reference_term = (len(shares) - 1) / 10_000
    assert null_psi(expected, n, 10_000) - reference_term == pytest.approx(simulated, rel=0.02)


def test_the_no_drift_psi_of_many_rows_is_the_chi_square_mean() -> None:
    """(bins - 1) x (1/n + 1/m) on well-filled bins, exact or past the exact computation's size."""
    expected = np.full(10, 1000)
    assert null_psi(expected, 1_500, 10_000) == pytest.approx(9 / 1_500 + 9 / 10_000, rel=0.02)
    assert null_psi(expected, 50_000, 10_000) == pytest.approx(9 / 50_000 + 9 / 10_000)
    assert null_psi(np.array([0, 10, 0]), 100, 10) == 0.0  # one bin: no room for noise
