"""Backup and restore of one installation: the MLflow store, its artifacts, Prometheus' history, Grafana.

A backup is taken while the stack runs and is consistent:

1. the MLflow store through SQLite's online backup API (a point-in-time copy, whatever the server
   writes meanwhile);
2. then the artifacts: a run's artifacts are uploaded before it is marked FINISHED, so every finished
   run in the copied store has its model and plots (a run still RUNNING may have part of them);
3. Prometheus' TSDB: a snapshot through its admin API when that is on (MLOPS_PROMETHEUS_ADMIN_API,
   off by default), else its folder: persisted blocks are immutable, the write-ahead log is copied as a
   power cut would leave it (Prometheus repairs a torn tail at start), half-compacted blocks left out;
4. Grafana's folder (its SQLite database through the backup API too).

Everything goes into one ``.tar.gz`` with ``manifest.json`` (its last member): versions, counts (runs,
experiments, registered models, versions, aliases) and the sha256 of every file, computed from the
bytes written into the archive as they go in (each file is read once). Artifacts go straight from the
store into the archive, not through a copy: they are written once, and a small file is read whole
before its header is written, so the archive never holds a size that a file changed meanwhile; large
ones are copied first. Compression is ISA-L's deflate (python-isal) at its default level, on every core:
the tar stream is cut into blocks compressed in threads (ISA-L releases the GIL) and written in order as
consecutive gzip members, which is still one valid .tar.gz for tar, gzip and Python. ISA-L's level 2
compresses as well as zlib's fastest level, about four times as fast (benchmarks/bench_backup.py);
the archive is mostly models and plots, and zlib's level 6 took several times as long for a few per
cent. ``restore`` checks every checksum before it touches anything, then puts the files in place with
one rename; a home that is not empty is moved aside (``--force``), never deleted.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import itertools
import json
import logging
import os
import platform
import shutil
import sqlite3
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path, PurePosixPath

from isal import igzip

from mlops_local import __version__, backup_pg
from mlops_local.errors import UserError
from mlops_local.health import probe
from mlops_local.settings import Settings
from mlops_local.store import check_postgres

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = 1
MLFLOW_DB = "mlflow/mlflow.db"
PG_DUMP = "mlflow/mlflow.pgdump"  # a PostgreSQL store: pg_dump's custom format
ARTIFACTS = "mlflow/artifacts"
PROMETHEUS_DATA = "prometheus/data"
GRAFANA = "grafana"
# What is counted in the store (table -> manifest key): restore and people compare these.
COUNTED = {"experiments": "experiments", "runs": "runs", "registered_models": "registered_models",
           "model_versions": "model_versions", "registered_model_aliases": "aliases"}
# Never copied from Prometheus' folder: its lock, earlier snapshots, and a rendered config that
# `serve prometheus` writes again at start.
PROMETHEUS_SKIP = {"lock", "snapshots"}
_HTTP_TIMEOUT = 30.0
COMPRESS_LEVEL = 2  # ISA-L's 0-3; 2 (its default) is as small as zlib's 1 and faster than ISA-L's 1
_BLOCK = 4 << 20  # bytes of tar stream per gzip member
_IN_MEMORY = 8 << 20  # files up to this size are read whole into the archive; larger ones copied first
_READ_BATCH = 32  # files a reader thread reads in one go
_READS_AHEAD = 4  # batches read ahead: at most 4 x 32 x _READ_AHEAD_MAX bytes held
_READ_AHEAD_MAX = 1 << 20  # larger files are read when their turn comes


@dataclass(frozen=True)
class BackupResult:
    """Where the archive is and what it holds."""

    path: Path
    files: int
    size: int
    counts: dict[str, int]
    prometheus: str  # how Prometheus' history was taken, or why it is not in the archive
    seconds: float


@dataclass(frozen=True)
class RestoreResult:
    """What was restored, and where the earlier content of the home went (``--force``)."""

    home: Path
    files: int
    counts: dict[str, int]
    moved_aside: Path | None = None
    notes: list[str] = field(default_factory=list)


# -- backup -----------------------------------------------------------------------------------------
def sqlite_copy(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite database (the online backup API, not a file copy)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)) as src, \
            contextlib.closing(sqlite3.connect(target)) as dst:
        src.backup(dst)


def count_rows(cursor, tables: set[str]) -> dict[str, int | str | None]:
    """The manifest's counts (experiments, runs, registered models, versions, aliases) and the schema
    revision, read through a DB-API ``cursor`` on a store holding ``tables`` (SQLite or PostgreSQL)."""
    counts: dict[str, int | str | None] = {}
    for table, key in COUNTED.items():
        counts[key] = 0
        if table in tables:
            cursor.execute(f"SELECT count(*) FROM {table}")  # names from COUNTED, never from input
            counts[key] = cursor.fetchone()[0]
    if "alembic_version" in tables:
        cursor.execute("SELECT version_num FROM alembic_version")
        row = cursor.fetchone()
        counts["schema"] = row[0] if row else None
    return counts


def store_counts(db: Path) -> dict[str, int | str | None]:
    """How many experiments, runs, registered models, versions and aliases a SQLite store holds."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        cursor = conn.cursor()
        tables = {row[0] for row in cursor.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return count_rows(cursor, tables)


def _copy_tree(source: Path, target: Path, skip: set[str] = frozenset()) -> None:
    """Copy a folder that may be written meanwhile: files that vanish are skipped, SQLite files are
    copied through the backup API."""
    for root, dirs, files in os.walk(source):
        rel = Path(root).relative_to(source)
        dirs[:] = [d for d in dirs if not (rel == Path(".") and d in skip)]
        (target / rel).mkdir(parents=True, exist_ok=True)
        for name in files:
            if rel == Path(".") and name in skip:
                continue
            src, dst = Path(root) / name, target / rel / name
            try:
                if name.endswith(".db"):
                    sqlite_copy(src, dst)
                else:
                    shutil.copy2(src, dst)
            except FileNotFoundError:  # removed while we walked (a finished temp file)
                continue


def _complete_blocks(data: Path) -> list[str]:
    """Drop block folders a live copy caught half-written (compaction) from a copied TSDB; their names.

    A persisted block is immutable once its meta.json exists; one without meta.json, index or chunks
    (or a compaction's tmp folder) would stop Prometheus from opening the restored TSDB."""
    dropped = []
    for block in data.iterdir() if data.is_dir() else ():
        if not block.is_dir() or block.name in ("wal", "chunks_head"):
            continue
        if block.name.endswith(".tmp") or block.name.endswith(".tmp-for-creation") or not all(
                (block / part).exists() for part in ("meta.json", "index", "chunks")):
            shutil.rmtree(block)
            dropped.append(block.name)
    return dropped


def _prometheus_copy(settings: Settings, staging: Path, running: bool) -> str:
    """Prometheus' folder copied as is: persisted blocks are immutable; with Prometheus running, the
    write-ahead log is copied as a power cut would leave it, which Prometheus repairs at start."""
    data = settings.prometheus_dir / "data"
    if not data.is_dir():
        return "not included: no Prometheus data yet"
    _copy_tree(data, staging / PROMETHEUS_DATA, PROMETHEUS_SKIP)
    dropped = _complete_blocks(staging / PROMETHEUS_DATA)
    how = ("copied (Prometheus running: its WAL as of the copy)" if running
           else "copied (Prometheus not running)")
    return how + (f"; left out {len(dropped)} block(s) being compacted" if dropped else "")


def _prometheus_snapshot(settings: Settings, staging: Path) -> str:
    """Prometheus' history into ``staging``: a snapshot through the admin API when Prometheus has it
    on (MLOPS_PROMETHEUS_ADMIN_API), else a copy of its folder."""
    data = settings.prometheus_dir / "data"
    up, _ = probe(settings.prometheus_url.rstrip("/") + "/-/ready", timeout=2.0)
    if not up:
        return _prometheus_copy(settings, staging, running=False)
    request = urllib.request.Request(settings.prometheus_url.rstrip("/") + "/api/v1/admin/tsdb/snapshot",
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=_HTTP_TIMEOUT) as resp:
            name = json.loads(resp.read())["data"]["name"]
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace") if exc.fp is not None else ""
        if exc.code in (404, 405) or "admin APIs disabled" in body:  # the admin API is off (the default)
            return _prometheus_copy(settings, staging, running=True)
        raise UserError(f"Prometheus at {settings.prometheus_url} refused a snapshot: "
                        f"HTTP {exc.code}") from exc
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"Prometheus at {settings.prometheus_url} did not take a snapshot: {exc}") from exc
    snapshot = data / "snapshots" / name
    try:
        if not snapshot.is_dir():
            return (f"not included: Prometheus wrote its snapshot outside {data} (is it another "
                    "installation's Prometheus?)")
        _copy_tree(snapshot, staging / PROMETHEUS_DATA)
    finally:
        shutil.rmtree(snapshot, ignore_errors=True)
    return "snapshot"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _header(name: str, size: int, mode: int, mtime: int) -> bytes:
    """The GNU tar header of a regular file: the bytes ``TarInfo.tobuf(GNU_FORMAT)`` gives for it.

    Filled into a template when the name fits the 100-byte field (every artifact path does): tarfile
    builds each header field by field and copies the TarInfo on ``addfile``, which cost more per file
    than compressing a small one; long names and huge sizes go through tarfile itself."""
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) > 100 or not 0 <= size < 8 ** 11 or not 0 <= mtime < 8 ** 11:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = size, mode & 0o7777, mtime
        return info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")
    buf = bytearray(_HEADER_TEMPLATE)
    buf[0:100] = raw.ljust(100, b"\0")
    buf[100:108] = b"%07o\0" % (mode & 0o7777)
    buf[124:136] = b"%011o\0" % size
    buf[136:148] = b"%011o\0" % mtime
    buf[148:156] = b"        "  # the checksum is computed with its own field as spaces
    buf[148:155] = b"%06o\0" % sum(buf)
    return bytes(buf)


_HEADER_TEMPLATE = tarfile.TarInfo("").tobuf(tarfile.GNU_FORMAT)


def _compress_block(chunks: list[bytes], files: list[tuple[str, bytes]],
                    level: int) -> tuple[bytes, list[tuple[str, str]]]:
    """One gzip member of ``chunks``, and the sha256 of each file in it (both release the GIL)."""
    return (igzip.compress(b"".join(chunks), level, mtime=0),
            [(name, hashlib.sha256(data).hexdigest()) for name, data in files])


class _TarGzWriter:
    """A GNU tar stream written as gzip members compressed on ``workers`` threads, in order.

    The stream is cut into blocks of about _BLOCK bytes; a worker compresses a block and hashes the
    files read whole into it, and the blocks are written in order: consecutive gzip members, which is
    one valid .tar.gz. ``files`` holds each member's sha256 and size for the manifest once ``drain``
    has returned."""

    def __init__(self, fh, level: int = COMPRESS_LEVEL, workers: int | None = None) -> None:
        self.fh, self.level = fh, level
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="mlops-backup-gzip")
        self.pending: collections.deque[Future] = collections.deque()
        self.chunks: list[bytes] = []  # joined once per block by its worker: no copy per write
        self.hashing: list[tuple[str, bytes]] = []  # files of the current block, hashed by its worker
        self.buffered = 0
        self.offset = 0  # bytes of tar stream so far (the end is padded to a whole record)
        self.files: dict[str, dict] = {}

    def _write(self, data: bytes) -> None:
        self.chunks.append(data)
        self.buffered += len(data)
        self.offset += len(data)

    def _pad(self, size: int) -> None:
        if size % tarfile.BLOCKSIZE:
            self._write(tarfile.NUL * (tarfile.BLOCKSIZE - size % tarfile.BLOCKSIZE))
        if self.buffered >= _BLOCK:
            self._submit()

    def _submit(self) -> None:
        if not self.chunks:
            return
        self.pending.append(self.pool.submit(_compress_block, self.chunks, self.hashing, self.level))
        self.chunks, self.hashing, self.buffered = [], [], 0
        while len(self.pending) > 2 * self.workers:  # at most 2 blocks a worker held in memory
            self._write_next()

    def _write_next(self) -> None:
        compressed, digests = self.pending.popleft().result()
        self.fh.write(compressed)
        for name, digest in digests:
            self.files[name]["sha256"] = digest

    def add_bytes(self, name: str, data: bytes, mode: int, mtime: int, *, listed: bool = True) -> None:
        """A member with ``data`` (hashed on a worker; ``listed``: recorded in ``files``)."""
        self._write(_header(name, len(data), mode, mtime))
        self._write(data)
        if listed:
            self.files[name] = {"sha256": None, "bytes": len(data)}
            self.hashing.append((name, data))
        self._pad(len(data))

    def add_stream(self, name: str, fh, size: int, mode: int, mtime: int) -> None:
        """A member of ``size`` bytes read from ``fh`` in pieces (a large file that does not change)."""
        self._write(_header(name, size, mode, mtime))
        digest, left = hashlib.sha256(), size
        while left:
            piece = fh.read(min(1 << 20, left))
            if not piece:
                raise OSError(f"{name} became shorter while it was archived")
            digest.update(piece)
            self._write(piece)
            left -= len(piece)
            if self.buffered >= _BLOCK:
                self._submit()
        self.files[name] = {"sha256": digest.hexdigest(), "bytes": size}
        self._pad(size)

    def drain(self) -> None:
        """Compress and write everything so far: every sha256 in ``files`` is known after this."""
        self._submit()
        while self.pending:
            self._write_next()

    def close(self) -> None:
        """End the tar stream (two zero blocks, padded to a whole record) and write it all."""
        try:
            self._write(tarfile.NUL * (2 * tarfile.BLOCKSIZE))
            if self.offset % tarfile.RECORDSIZE:
                self._write(tarfile.NUL * (tarfile.RECORDSIZE - self.offset % tarfile.RECORDSIZE))
            self.drain()
        finally:
            self.abort()

    def abort(self) -> None:
        """Stop the workers; blocks not written yet are dropped."""
        self.pool.shutdown(cancel_futures=True)


class _ArchiveWriter:
    """Files of the home into the archive, each read once; large live files copied first."""

    def __init__(self, out: _TarGzWriter, staging: Path) -> None:
        self.out, self.staging = out, staging

    def add(self, path: Path | str, name: str) -> None:
        """Add the file at ``path`` as ``name``; a file removed meanwhile is skipped."""
        try:
            with open(path, "rb") as fh:
                st = os.fstat(fh.fileno())
                if st.st_size <= _IN_MEMORY:
                    # Read whole before its header is written: the size in the archive is what was read.
                    self.out.add_bytes(name, fh.read(), st.st_mode, int(st.st_mtime))
                    return
        except FileNotFoundError:
            return
        path = Path(path)
        if not path.is_relative_to(self.staging):  # a large live file: a stable copy first
            copy = self.staging / ".large" / name
            copy.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copy2(path, copy)
            except FileNotFoundError:
                return
            path = copy
        with path.open("rb") as fh:
            st = os.fstat(fh.fileno())
            self.out.add_stream(name, fh, st.st_size, st.st_mode, int(st.st_mtime))
        if path.is_relative_to(self.staging / ".large"):
            path.unlink()

    def add_tree(self, root: Path | str, prefix: str, skip: set[str] = frozenset()) -> None:
        """Every regular file under ``root`` (not ``skip`` at its top) as ``prefix/<relative path>``.

        Files are read ahead on two threads, in batches, and added in order: open, read and close are
        system calls that release the GIL, and they were half of this thread's time per file."""
        files = list(_walk(str(root), prefix, skip))
        batches = iter([files[i:i + _READ_BATCH] for i in range(0, len(files), _READ_BATCH)])
        with ThreadPoolExecutor(2, thread_name_prefix="mlops-backup-read") as readers:
            pending = collections.deque((batch, readers.submit(_read_batch, batch))
                                        for batch in itertools.islice(batches, _READS_AHEAD))
            while pending:
                batch, reading = pending.popleft()
                following = next(batches, None)
                if following is not None:
                    pending.append((following, readers.submit(_read_batch, following)))
                for (path, name), (data, st) in zip(batch, reading.result(), strict=True):
                    if data is not None:
                        self.out.add_bytes(name, data, st.st_mode, int(st.st_mtime))
                    elif st is not None:  # too large to read ahead: read here (a stable copy first)
                        self.add(path, name)


def _walk(folder: str, prefix: str, skip: set[str] = frozenset()) -> Iterator[tuple[str, str]]:
    """(path, archive name) of every regular file under ``folder``, sorted; links, sockets, FIFOs left out."""
    # DirEntry, not Path or os.walk + islink: its type comes with the listing, no stat per file
    # (this runs for every artifact, 100,000 files and more).
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.name in skip or entry.is_symlink():
            continue
        if entry.is_dir():
            yield from _walk(entry.path, f"{prefix}/{entry.name}")
        elif entry.is_file():
            yield entry.path, f"{prefix}/{entry.name}"


def _read_batch(batch: list[tuple[str, str]]) -> list[tuple[bytes | None, os.stat_result | None]]:
    """(content, stat) of each file: content None when it is larger than _READ_AHEAD_MAX, stat None
    when it was removed meanwhile (a finished temporary file)."""
    read: list[tuple[bytes | None, os.stat_result | None]] = []
    for path, _ in batch:
        try:
            with open(path, "rb") as fh:
                st = os.fstat(fh.fileno())
                # Read whole before its header is written: the size in the archive is what was read.
                read.append((fh.read() if st.st_size <= _READ_AHEAD_MAX else None, st))
        except FileNotFoundError:
            read.append((None, None))
    return read


def _versions() -> dict[str, str]:
    versions = {"mlops-local": __version__, "python": platform.python_version()}
    for name in ("mlflow", "prometheus-client", "scikit-learn", "skops"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def default_archive(settings: Settings, now: float) -> Path:
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")
    return settings.home / "backups" / f"mlops-backup-{stamp}.tar.gz"


def _store_kind(settings: Settings) -> str:
    return "sqlite" if settings.store_is_sqlite else "postgresql"


def backup(settings: Settings, out: Path | None = None, *, clock=time.time) -> BackupResult:
    """Write a consistent archive of this installation (see the module's docstring); returns it."""
    started = time.perf_counter()
    db = settings.mlflow_db
    if settings.store_is_sqlite and not db.is_file():
        raise UserError(f"nothing to back up: no MLflow store at {db} (MLOPS_HOME={settings.home})")
    if not settings.store_is_sqlite:
        check_postgres(settings)  # one line, before anything is written
    now = clock()
    path = default_archive(settings, now) if out is None else out
    if path.is_dir() or (not path.exists() and not path.name.endswith((".tar.gz", ".tgz"))):
        path = path / default_archive(settings, now).name  # a folder (new ones too): the default name in it
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".mlops-backup-", dir=path.parent) as tmp:
        staging = Path(tmp) / "content"
        # First: the point in time of the backup.
        if settings.store_is_sqlite:
            store_member = MLFLOW_DB
            sqlite_copy(db, staging / store_member)
            counts = store_counts(staging / store_member)
        else:
            store_member = PG_DUMP
            (staging / store_member).parent.mkdir(parents=True)
            counts = backup_pg.dump(settings, staging / store_member, count_rows)
        partial = Path(tmp) / "archive.tar.gz"
        # Created 0600 before anything is written: it holds Grafana's password and every run.
        os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        with partial.open("wb") as raw:
            out = _TarGzWriter(raw)
            try:
                archive = _ArchiveWriter(out, staging)
                archive.add(staging / store_member, store_member)
                if settings.artifacts_dir.is_dir():
                    archive.add_tree(settings.artifacts_dir, ARTIFACTS)
                how = _prometheus_snapshot(settings, staging)
                archive.add_tree(staging / PROMETHEUS_DATA, PROMETHEUS_DATA)
                if settings.grafana_dir.is_dir():
                    _copy_tree(settings.grafana_dir, staging / GRAFANA)
                    archive.add_tree(staging / GRAFANA, GRAFANA)
                out.drain()  # every checksum known before the manifest is written
                files = out.files
                manifest = {"format": FORMAT, "created": datetime.fromtimestamp(now, UTC).isoformat(),
                            "store": _store_kind(settings), "versions": _versions(), "counts": counts,
                            "prometheus": how, "files": files}
                body = json.dumps(manifest, sort_keys=True).encode()  # no indent: the C encoder, 10x faster
                out.add_bytes(MANIFEST, body, 0o600, int(now), listed=False)
            except BaseException:
                out.abort()  # the partial archive goes with the temporary folder
                raise
            out.close()
        os.replace(partial, path)  # a finished archive or none: never a half-written one
    size = path.stat().st_size
    log.info("backup of %s: %d files, %d bytes, Prometheus %s", settings.home, len(files), size, how)
    return BackupResult(path, len(files), size, {k: v for k, v in counts.items() if isinstance(v, int)}, how,
                        time.perf_counter() - started)


# -- restore ----------------------------------------------------------------------------------------
def _safe_member(member: tarfile.TarInfo) -> str:
    """The member's path if it is a plain file or folder inside the archive's root; else refused."""
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts or not (member.isfile() or member.isdir()):
        raise UserError(f"refusing the archive: member {member.name!r} is not a plain file inside it")
    return name.as_posix()


def read_manifest(archive: Path) -> dict:
    """The archive's manifest (raises UserError when it is not an mlops-local backup)."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            member = tar.getmember(MANIFEST)
            fh = tar.extractfile(member)
            manifest = json.loads(fh.read()) if fh is not None else None
    except FileNotFoundError as exc:
        raise UserError(f"no backup archive at {archive}") from exc
    except (KeyError, tarfile.TarError, OSError, ValueError) as exc:
        raise UserError(f"{archive} is not an mlops-local backup ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UserError(f"{archive}: unknown backup format {manifest.get('format') if manifest else None!r}")
    return manifest


def _extract_checked(archive: Path, target: Path, manifest: dict) -> int:
    """Extract into ``target`` and check every file against the manifest; returns the file count."""
    expected: dict[str, dict] = manifest["files"]
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            name = _safe_member(member)
            if name == MANIFEST or member.isdir():
                continue
            if name not in expected:
                raise UserError(f"refusing the archive: {name} is not in its manifest")
            out = target / name
            out.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(member)
            if src is None:
                raise UserError(f"refusing the archive: {name} cannot be read")
            with src, out.open("wb") as dst:
                shutil.copyfileobj(src, dst)
            out.chmod(member.mode & 0o777)  # Grafana's admin-password and grafana.ini stay 0600
    missing, damaged = [], []
    for name, info in expected.items():
        path = target / name
        if not path.is_file():
            missing.append(name)
        elif _sha256(path) != info["sha256"]:
            damaged.append(name)
    if missing or damaged:
        problem = (f"{len(damaged)} file(s) do not match their checksum (first: {damaged[0]})" if damaged
                   else f"{len(missing)} file(s) are missing (first: {missing[0]})")
        raise UserError(f"refusing to restore {archive}: {problem}; nothing was changed")
    return len(expected)


def _stack_running(settings: Settings) -> str | None:
    """The first service of this installation that answers, if any."""
    for name, url in (("MLflow", settings.mlflow_url.rstrip("/") + "/health"),
                      ("Prometheus", settings.prometheus_url.rstrip("/") + "/-/ready")):
        if probe(url, timeout=1.0)[0]:
            return f"{name} ({url.rsplit('/', 1)[0]})"
    return None


def restore(settings: Settings, archive: Path, *, force: bool = False, clock=time.time) -> RestoreResult:
    """Restore ``archive`` into settings.home: empty (or absent), or moved aside with ``force``."""
    manifest = read_manifest(archive)
    saved_store = manifest.get("store", "sqlite")
    if saved_store != _store_kind(settings):
        raise UserError(
            f"{archive} holds a PostgreSQL store: set MLOPS_BACKEND_STORE_URI to an empty PostgreSQL "
            "database to restore it into" if saved_store == "postgresql" else
            f"{archive} holds a SQLite store and MLOPS_BACKEND_STORE_URI is {settings.store_label}: "
            "restore it without MLOPS_BACKEND_STORE_URI (moving runs between stores is not supported)")
    home = settings.home
    occupied = home.exists() and any(home.iterdir())
    if occupied and not force:
        raise UserError(f"MLOPS_HOME {home} is not empty: restore into an empty folder (set MLOPS_HOME), "
                        "or pass --force to move what is there aside first")
    if occupied:
        running = _stack_running(settings)
        if running is not None:
            raise UserError(f"{running} is running on this MLOPS_HOME: stop the stack before restoring "
                            "over it")
    if saved_store == "postgresql":
        check_postgres(settings)
        tables = backup_pg.tables_in(settings)
        if tables:  # never dropped, even with --force: a database is not moved aside as a folder is
            raise UserError(f"the PostgreSQL database {settings.store_label} already holds {tables} "
                            "table(s): restore into an empty database (createdb NAME, then point "
                            "MLOPS_BACKEND_STORE_URI at it); nothing was changed")
    home.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{home.name}-restore-", dir=home.parent) as tmp:
        staging = Path(tmp) / "home"
        staging.mkdir()
        files = _extract_checked(archive, staging, manifest)
        if saved_store == "postgresql":  # last before the home moves: a failure changes nothing
            backup_pg.restore_dump(settings, staging / PG_DUMP)
            (staging / PG_DUMP).unlink()
        aside = None
        if occupied:
            stamp = datetime.fromtimestamp(clock(), UTC).strftime("%Y%m%dT%H%M%SZ")
            aside = home.with_name(f"{home.name}.before-restore-{stamp}")
            os.replace(home, aside)
        elif home.exists():
            home.rmdir()
        os.replace(staging, home)
    notes = []
    if str(manifest.get("prometheus", "")).startswith("not included"):
        notes.append(f"Prometheus history {manifest.get('prometheus')}")
    saved = manifest.get("versions", {}).get("mlflow")
    installed = _versions().get("mlflow")
    if saved and installed and saved != installed:
        notes.append(f"the backup was made with MLflow {saved}, this is {installed}: `serve mlflow` upgrades "
                     "the store's schema if it needs to")
    counts = {k: v for k, v in manifest.get("counts", {}).items() if isinstance(v, int)}
    log.info("restored %s into %s (%d files)", archive, home, files)
    return RestoreResult(home, files, counts, aside, notes)
