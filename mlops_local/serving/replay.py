"""Send a dataset's rows to the model service at a steady rate, optionally shifted, to watch drift appear.

``replay(url, frame, rate=20, duration_s=30)`` posts rows (a shuffled cycle through ``frame``) to
``url``/invocations as ``dataframe_split`` JSON, ``rate`` requests per second of ``batch`` rows each,
until ``duration_s`` has passed or ``stop`` is set. A :class:`Shift` changes one column of every row
sent: ``"Engine Size(L)=*1.3"`` multiplies, ``"Engine Size(L)=+5"`` / ``"=-5"`` adds, ``"Fuel Type=Z"``
sets a value. Failed requests (refused connection, HTTP errors) are counted, not raised: the service
may be restarting or swapping models while traffic runs.
"""

from __future__ import annotations

import http.client
import logging
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlops_local.errors import UserError

log = logging.getLogger(__name__)

SHIFT_FORMS = ('"COLUMN=*1.3" (multiply)', '"COLUMN=+5" or "COLUMN=-5" (add)', '"COLUMN=VALUE" (set)')
_NUMBER = r"[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?"
_SCALE = re.compile(rf"^\*\s*({_NUMBER})$")
_OFFSET = re.compile(rf"^([+-])\s*({_NUMBER})$")
PROGRESS_EVERY_S = 0.5
DEFAULT_TIMEOUT = 10.0


@dataclass(frozen=True)
class Shift:
    """One column change applied to every row sent: op is "scale", "offset" or "set"."""

    column: str
    op: str
    value: float | str
    spec: str  # as written, for messages

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame`` with the shift applied (a copy); UserError naming the column if it does not fit."""
        if self.column not in frame.columns:
            shown = ", ".join(map(str, frame.columns[:30]))
            raise UserError(f"--shift {self.spec!r}: column {self.column!r} is not in the data "
                            f"(columns: {shown})")
        column = frame[self.column]
        numeric = pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
        if self.op in ("scale", "offset"):
            if not numeric:
                raise UserError(f"--shift {self.spec!r}: column {self.column!r} holds text; "
                                f"multiply (*) and add (+/-) apply to numeric columns, use "
                                f"\"{self.column}=VALUE\" to set a category")
            shifted = column * self.value if self.op == "scale" else column + self.value
        elif numeric:
            try:
                shifted = pd.Series(float(self.value), index=column.index)
            except ValueError:
                raise UserError(f"--shift {self.spec!r}: column {self.column!r} is numeric; set it to a "
                                "number, or use *FACTOR or +/-OFFSET") from None
        else:
            shifted = pd.Series(self.value, index=column.index, dtype=object)
        return frame.assign(**{self.column: shifted})


def parse_shift(text: str) -> Shift:
    """``"COLUMN=*1.3"``, ``"COLUMN=+5"``, ``"COLUMN=-5"`` or ``"COLUMN=VALUE"`` as a :class:`Shift`."""
    column, sep, value = str(text).partition("=")
    column, value = column.strip(), value.strip()
    if not sep or not column or not value:
        raise UserError(f"--shift {text!r} is not a shift: use one of {', '.join(SHIFT_FORMS)}")
    if value.startswith("*"):
        match = _SCALE.match(value)
        if not match:
            raise UserError(f"--shift {text!r}: {value!r} is not a factor; "
                            f"use one of {', '.join(SHIFT_FORMS)}")
        return Shift(column, "scale", float(match.group(1)), text)
    match = _OFFSET.match(value)
    if match:
        sign = -1.0 if match.group(1) == "-" else 1.0
        return Shift(column, "offset", sign * float(match.group(2)), text)
    return Shift(column, "set", value, text)


def apply_shifts(frame: pd.DataFrame, shifts: Sequence[Shift]) -> pd.DataFrame:
    """``frame`` with every shift applied in order (checked against its columns before anything is sent)."""
    for shift in shifts:
        frame = shift.apply(frame)
    return frame


@dataclass(frozen=True)
class ReplayProgress:
    """Where a replay stands: requests sent, answered 200, failed; seconds elapsed of ``duration_s``."""

    sent: int
    ok: int
    failed: int
    rows: int
    elapsed: float
    duration_s: float
    last_error: str | None = None


@dataclass(frozen=True)
class ReplayResult:
    """What a finished replay did (``stopped``: ended by ``stop`` before its duration)."""

    sent: int
    ok: int
    failed: int
    rows: int
    elapsed: float
    stopped: bool = False
    last_error: str | None = None


def _endpoint(url: str) -> tuple[str, int, str]:
    """(host, port, path of /invocations) of the service URL; UserError for anything but http://host:port."""
    parsed = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    if parsed.scheme != "http" or not parsed.hostname:
        raise UserError(f"--url {url!r}: give the model service as http://HOST:PORT")
    try:
        port = parsed.port or 80
    except ValueError:
        raise UserError(f"--url {url!r}: the port is not a number between 0 and 65535") from None
    return parsed.hostname, port, parsed.path.rstrip("/") + "/invocations"


def _check(rate: float, duration_s: float, batch: int, frame: pd.DataFrame) -> None:
    if not (isinstance(rate, (int, float)) and 0 < rate <= 10_000):
        raise UserError(f"--rate must be between 0 and 10000 requests per second, got {rate!r}")
    if not (isinstance(duration_s, (int, float)) and 0 < duration_s <= 86_400):
        raise UserError(f"--duration must be between 0 and 86400 seconds, got {duration_s!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= 10_000:
        raise UserError(f"--batch must be a whole number of rows between 1 and 10000, got {batch!r}")
    if frame.empty:
        raise UserError("no rows to replay")


def body(rows: pd.DataFrame) -> bytes:
    """The ``dataframe_split`` request body of ``rows`` (gaps as null)."""
    return b'{"dataframe_split": ' + rows.to_json(orient="split", index=False).encode() + b"}"


class _Sender:
    """One keep-alive connection that reconnects after a failure."""

    def __init__(self, host: str, port: int, path: str, timeout: float) -> None:
        self.host, self.port, self.path, self.timeout = host, port, path, timeout
        self.conn: http.client.HTTPConnection | None = None

    def send(self, payload: bytes) -> str | None:
        """None if the service answered 200, else what went wrong (one line)."""
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self.conn.request("POST", self.path, payload, {"Content-Type": "application/json"})
            resp = self.conn.getresponse()
            answer = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            return f"{type(exc).__name__}: {exc}"[:300]
        if resp.status == 200:
            return None
        return f"HTTP {resp.status}: {answer[:300].decode(errors='replace')}"

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def replay(url: str, frame: pd.DataFrame, *, rate: float, duration_s: float, shifts: Sequence[Shift] = (),
           batch: int = 1, stop: threading.Event | None = None,
           on_progress: Callable[[ReplayProgress], None] | None = None, timeout: float = DEFAULT_TIMEOUT,
           seed: int = 0) -> ReplayResult:
    """Post ``frame``'s rows (shuffled, cycled, shifted) to ``url``/invocations, ``rate`` requests/s of
    ``batch`` rows, for ``duration_s`` seconds or until ``stop`` is set; UserError for bad arguments
    (before anything is sent). ``on_progress`` is called about twice a second and once at the end."""
    _check(rate, duration_s, batch, frame)
    host, port, path = _endpoint(url)
    rows = apply_shifts(frame.reset_index(drop=True), shifts)
    order = np.random.default_rng(seed).permutation(len(rows))  # file order is often sorted: shuffle it
    stop = stop or threading.Event()
    sender = _Sender(host, port, path, timeout)
    sent = ok = failed = n_rows = 0
    last_error: str | None = None
    position = 0
    started = time.monotonic()
    next_report = started + PROGRESS_EVERY_S

    def progress(now: float) -> ReplayProgress:
        return ReplayProgress(sent, ok, failed, n_rows, now - started, duration_s, last_error)

    try:
        while not stop.is_set():
            now = time.monotonic()
            if now - started >= duration_s:
                break
            due = started + sent / rate  # paced from the start: a slow answer is caught up, not lost
            if due > now:
                if stop.wait(min(due - now, started + duration_s - now)):
                    break
                continue
            take = order[np.arange(position, position + batch) % len(order)]
            position = (position + batch) % len(order)
            error = sender.send(body(rows.iloc[take]))
            sent += 1
            if error is None:
                ok += 1
                n_rows += batch
            else:
                failed += 1
                if error != last_error:
                    log.warning("replay: request %d failed: %s", sent, error)
                last_error = error
            if on_progress is not None and time.monotonic() >= next_report:
                next_report = time.monotonic() + PROGRESS_EVERY_S
                on_progress(progress(time.monotonic()))
    finally:
        sender.close()
    elapsed = time.monotonic() - started
    if on_progress is not None:
        on_progress(progress(time.monotonic()))
    return ReplayResult(sent, ok, failed, n_rows, elapsed, stopped=stop.is_set(), last_error=last_error)
