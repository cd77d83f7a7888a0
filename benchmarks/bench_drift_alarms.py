"""False alarms and detection of the exported PSI against the raw PSI, on small drift windows.

A ridge model trained on co2_canada as `train` trains it (its logged reference profile). Undrifted
windows: ``--seeds`` windows per size of 100, 110, ..., 200 rows drawn from the dataset itself; a false
alarm is a window where some feature's value is over 0.25 (the FeatureDrift alert's critical line).
Shifted windows (as `mlops-local replay --shift`): the share of windows where the shifted column is
over 0.25, per size. Baseline: the raw PSI, what the service exported before the small-sample
corrections (``DriftWindow.psi``); ours: what it exports now (``DriftWindow.reading``, absent while a
feature waits for rows, counted as not flagged).
Run: .venv/bin/python -m benchmarks.bench_drift_alarms [--seeds 100]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from mlops_local.ml.profile import PROFILE_ARTIFACT, PROFILE_FILE, read_profile
from mlops_local.ml.training import prepare
from mlops_local.ml.types import DatasetSpec, TrainRequest
from mlops_local.serving.drift import DriftWindow
from mlops_local.serving.replay import parse_shift

LINE = 0.25
SHIFTS = ("Engine Size(L)=*1.3", "Engine Size(L)=*1.1", "Fuel Consumption City (L/100 km)=*1.15",
          "Fuel Type=E", "Transmission=AV")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100, help="windows per size (default 100)")
    args = parser.parse_args()
    prepared = prepare(TrainRequest(DatasetSpec("co2_canada"), "ridge"))
    prepared.pipeline.fit(prepared.X_train, prepared.y_train)
    with tempfile.TemporaryDirectory() as tmp:
        prepared.write_model(Path(tmp))
        reference = read_profile(Path(tmp) / PROFILE_ARTIFACT / PROFILE_FILE)
    rows = prepared.data.X

    def windows(frame, sizes, seeds):
        predictions = np.asarray(prepared.pipeline.predict(frame), dtype=float)
        for n in sizes:
            for seed in range(seeds):
                picks = np.random.default_rng(1000 * n + seed).choice(len(frame), n, replace=False)
                window = DriftWindow(reference, size=1000)
                window.add(frame.iloc[picks], predictions[picks])
                yield n, window

    raw = ours = total = 0
    for _, window in windows(rows, range(100, 201, 10), args.seeds):
        total += 1
        raw += max(window.psi()[0].values()) > LINE
        ours += max(window.reading().features.values(), default=0.0) > LINE
    print(f"undrifted windows of 100-200 rows: {total}; over {LINE} somewhere: raw PSI {raw / total:.1%}, "
          f"exported {ours / total:.1%}")
    print(f"shifted column over {LINE} (raw -> exported), share of {args.seeds // 2} windows per size:")
    for spec in SHIFTS:
        column = spec.split("=")[0]
        cells = []
        for n in (100, 120, 150, 200):
            got = [(w.psi()[0][column] > LINE, w.reading().features.get(column, 0.0) > LINE)
                   for _, w in windows(parse_shift(spec).apply(rows), [n], args.seeds // 2)]
            cells.append(f"{n} rows {np.mean([g[0] for g in got]):.0%} -> {np.mean([g[1] for g in got]):.0%}")
        print(f"  {spec:40s} " + "; ".join(cells))


if __name__ == "__main__":
    main()
