"""`mlops-local replay`: send a dataset's rows to the model service at a given rate, optionally shifted."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import TextIO

import pandas as pd

from mlops_local.errors import ServiceUnavailable, UserError
from mlops_local.interrupts import EXIT_INTERRUPTED
from mlops_local.ml.datasets import BUILTINS, DEFAULT_DATASET
from mlops_local.serving.replay import (
    SHIFT_FORMS,
    ReplayProgress,
    ReplayResult,
    apply_shifts,
    parse_shift,
    replay,
)
from mlops_local.settings import Settings

log = logging.getLogger(__name__)

BAR_WIDTH = 30
LOG_EVERY_S = 5.0  # not a terminal: one progress line this often


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "replay", help="send dataset rows to the model service (optionally shifted) to watch drift",
        description="Post rows of a built-in dataset or a CSV/Parquet file (shuffled, the target column "
                    "dropped) to `serve model` at a steady rate for a given time; --shift changes a "
                    "column of every row so drift shows in mlops_feature_drift_psi.",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--dataset", metavar="NAME", choices=tuple(BUILTINS),
                        help=f"built-in dataset: {', '.join(BUILTINS)} (default {DEFAULT_DATASET})")
    source.add_argument("--file", metavar="PATH", help="CSV or Parquet file of rows to send")
    parser.add_argument("--target", metavar="COL",
                        help="with --file: its target column, left out of the rows sent")
    parser.add_argument("--rate", type=float, default=20.0, metavar="N",
                        help="requests per second (default 20)")
    parser.add_argument("--duration", type=float, default=30.0, metavar="SECONDS",
                        help="stop after this many seconds (default 30)")
    parser.add_argument("--batch", type=int, default=1, metavar="ROWS", help="rows per request (default 1)")
    parser.add_argument("--shift", action="append", default=[], metavar="SPEC",
                        help="change a column of every row: " + ", ".join(SHIFT_FORMS) + " (repeatable)")
    parser.add_argument("--url", metavar="URL",
                        help="model service (default http://MLOPS_HOST:MLOPS_SERVE_PORT)")
    parser.set_defaults(func=run)


def load_rows(args: argparse.Namespace, settings: Settings) -> pd.DataFrame:
    """The feature rows to send: a built-in's features, or a file's columns without ``--target``."""
    from mlops_local.ml.datasets import load_dataset
    from mlops_local.ml.tables import read_table
    from mlops_local.ml.types import DatasetSpec

    if args.file is None:
        if args.target:
            raise UserError("--target applies to --file; a built-in dataset knows its target")
        return load_dataset(DatasetSpec(args.dataset or DEFAULT_DATASET)).X
    if args.target:
        return load_dataset(DatasetSpec(args.file, target=args.target)).X
    return read_table(args.file, max_mb=settings.max_dataset_mb)


class ProgressBar:
    """A one-line bar redrawn in place on a terminal; a log line every few seconds otherwise."""

    def __init__(self, stream: TextIO, tty: bool) -> None:
        self.stream, self.tty = stream, tty
        self._last_log = 0.0

    def __call__(self, p: ReplayProgress) -> None:
        if self.tty:
            done = min(1.0, p.elapsed / p.duration_s) if p.duration_s else 1.0
            filled = int(done * BAR_WIDTH)
            self.stream.write(f"\r[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {p.elapsed:5.1f}/"
                              f"{p.duration_s:g} s  sent {p.sent}  ok {p.ok}  failed {p.failed}")
            self.stream.flush()
        elif p.elapsed - self._last_log >= LOG_EVERY_S:
            self._last_log = p.elapsed
            log.info("replay: %.0f/%g s, sent %d, ok %d, failed %d", p.elapsed, p.duration_s, p.sent, p.ok,
                     p.failed)

    def end(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def run(args: argparse.Namespace, settings: Settings) -> int:
    shifts = [parse_shift(spec) for spec in args.shift]
    frame = load_rows(args, settings)
    apply_shifts(frame.head(1), shifts)  # a shift that does not fit the columns: said before anything runs
    url = args.url or settings.serve_url
    stop = threading.Event()
    # Ctrl-C ends the loop between requests: the summary is printed, no traceback.
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    bar = ProgressBar(sys.stderr, sys.stderr.isatty())
    try:
        log.info("replaying %d rows to %s: %g requests/s of %d row(s) for %g s%s", len(frame), url,
                 args.rate, args.batch, args.duration,
                 f", shifted: {'; '.join(args.shift)}" if args.shift else "")
        result = replay(url, frame, rate=args.rate, duration_s=args.duration, shifts=shifts, batch=args.batch,
                        stop=stop, on_progress=bar)
    finally:
        signal.signal(signal.SIGINT, previous)
        bar.end()
    print(summary(result))
    if result.ok == 0 and result.sent:
        raise ServiceUnavailable(f"no request to {url} succeeded; last error: {result.last_error}")
    return EXIT_INTERRUPTED if result.stopped else 0


def summary(result: ReplayResult) -> str:
    """The closing line: what was sent and how it went."""
    ended = "stopped" if result.stopped else "done"
    text = (f"replay {ended} after {result.elapsed:.1f} s: {result.sent} requests "
            f"({result.rows} rows scored), {result.ok} ok, {result.failed} failed")
    return text + (f"; last error: {result.last_error}" if result.failed and result.last_error else "")
