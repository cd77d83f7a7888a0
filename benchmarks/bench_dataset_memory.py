"""Peak memory of reading a ~300 MB CSV: mlops-local's reader against pandas' default ``read_csv``.

Also measured, in the same run: the reader mlops-local had before (the whole file as bytes, decoded to
one string, parsed from a StringIO). Each measurement is a fresh Python process (ru_maxrss is a peak
that never goes down); it reports its peak RSS and its RSS after the imports, before reading.
The file looks like the CO2 data: a few text columns with repeated values, numeric columns.
Run: .venv/bin/python -m benchmarks.bench_dataset_memory [--mb 300] [--rounds 3] [--keep PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

MB = 1024 * 1024

# Each loader runs in a child: imports first, then RSS noted, then the read; prints JSON.
CHILD = r"""
import json, resource, sys
import pandas as pd, pyarrow, pyarrow.csv
from mlops_local.ml.tables import read_table
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20
def previous(path):
    import io
    text = open(path, "rb").read().decode("utf-8-sig")
    return pd.read_csv(io.StringIO(text), sep=",")
loaders = {"mlops-local": read_table, "pandas read_csv": pd.read_csv, "previous reader": previous}
before = rss_mb()
frame = loaders[sys.argv[1]](sys.argv[2])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"before_mb": before, "peak_mb": peak, "rows": len(frame), "columns": frame.shape[1]}))
"""

MAKES = ["ACURA", "ALFA ROMEO", "ASTON MARTIN", "AUDI", "BENTLEY", "BMW", "BUICK", "CADILLAC", "CHEVROLET",
         "CHRYSLER", "DODGE", "FIAT", "FORD", "GMC", "HONDA", "HYUNDAI", "JEEP", "KIA", "LEXUS", "MAZDA"]
CLASSES = ["COMPACT", "SUV - SMALL", "MID-SIZE", "TWO-SEATER", "MINICOMPACT", "SUBCOMPACT", "FULL-SIZE",
           "STATION WAGON - SMALL", "PICKUP TRUCK - STANDARD", "VAN - PASSENGER"]
GEARS = ["AS5", "M6", "AV7", "AS6", "AM6", "A6", "AM7", "AV8", "AS8", "A7", "A8", "M7", "AV", "AS9"]


def write_csv(path: Path, target_mb: int, seed: int = 0) -> None:
    """A CO2-like CSV of about ``target_mb`` MB, written in chunks."""
    rng = np.random.default_rng(seed)
    chunk = 200_000
    with open(path, "w", encoding="utf-8") as out:
        header = True
        while out.tell() < target_mb * MB:
            engine = rng.choice(np.arange(10, 84) / 10, chunk)
            city = np.round(rng.normal(12.5, 3.5, chunk).clip(4, 30), 1)
            highway = np.round(city * rng.uniform(0.65, 0.8, chunk), 1)
            frame = pd.DataFrame({
                "Make": rng.choice(MAKES, chunk),
                "Model": np.char.add("MODEL ", rng.integers(0, 2000, chunk).astype(str)),
                "Vehicle Class": rng.choice(CLASSES, chunk),
                "Engine Size(L)": engine,
                "Cylinders": rng.choice([3, 4, 5, 6, 8, 10, 12], chunk),
                "Transmission": rng.choice(GEARS, chunk),
                "Fuel Type": rng.choice(["X", "Z", "D", "E", "N"], chunk),
                "Fuel Consumption City (L/100 km)": city,
                "Fuel Consumption Hwy (L/100 km)": highway,
                "Fuel Consumption Comb (L/100 km)": np.round(0.55 * city + 0.45 * highway, 1),
                "Fuel Consumption Comb (mpg)": np.round(235.2 / (0.55 * city + 0.45 * highway)).astype(int),
                "CO2 Emissions(g/km)": np.round(23.0 * (0.55 * city + 0.45 * highway)).astype(int),
            })
            frame.to_csv(out, index=False, header=header, lineterminator="\n")
            header = False


def measure(loader: str, path: Path) -> dict:
    """One read by ``loader`` in a fresh process."""
    done = subprocess.run([sys.executable, "-c", CHILD, loader, str(path)], capture_output=True, text=True,
                          check=True, timeout=1800)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=300, help="size of the generated CSV")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="write (or reuse) the CSV at this path")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-dataset-") as tmp:
        path = args.keep or Path(tmp) / "co2_big.csv"
        if not path.exists():
            write_csv(path, args.mb)
        size = path.stat().st_size / MB
        print(f"CSV: {path.name}, {size:,.0f} MB; {args.rounds} round(s), each read in a fresh process")
        print(f"{'reader':<17} {'peak RSS':>10} {'after imports':>14} {'peak/size':>10} "
              f"{'(peak-imports)/size':>20}")
        for loader in ("mlops-local", "pandas read_csv", "previous reader"):
            runs = [measure(loader, path) for _ in range(args.rounds)]
            peak = statistics.median(r["peak_mb"] for r in runs)
            before = statistics.median(r["before_mb"] for r in runs)
            print(f"{loader:<17} {peak:>8,.0f} MB {before:>11,.0f} MB {peak / size:>9.2f}x "
                  f"{(peak - before) / size:>19.2f}x")


if __name__ == "__main__":
    main()
