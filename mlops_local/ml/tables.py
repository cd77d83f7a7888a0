"""Read a CSV or Parquet file into a DataFrame: regular files only, size-capped, memory-bounded.

A path is opened once and checked on the open descriptor (a symlink to ``/dev/zero`` is a character
device there) and refused above ``MLOPS_MAX_DATASET_MB`` before a byte is parsed; pyarrow then reads
that same file (through ``/proc/self/fd``, or the path checked to be the same inode). CSV goes through
pyarrow's streaming reader straight from the file: the text is never held as one Python string, as
``pd.read_csv(io.StringIO(text))`` did (``benchmarks/bench_dataset_memory.py`` measures both). Error
messages name the file, a line number, counts: never a value read from the file.
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pandas as pd

from mlops_local.errors import UserError

log = logging.getLogger(__name__)

MB = 1024 * 1024
HEAD = 65536
_BLOCK = MB
_DELIMITERS = (",", ";", "\t", "|")
_ENCODINGS = ("utf-8", "cp1252")  # French/Western spreadsheet exports fall to cp1252, then latin-1
_DECIMAL_COMMA = r"^\s*[+-]?(\d+(,\d*)?|,\d+)([eE][+-]?\d+)?\s*$"
_COUNTS = re.compile(r"Expected (\d+) columns, got (\d+)")
_CONVERSION = re.compile(r"column #(\d+): CSV conversion error to (\w+)")
_CSV_BLOCK = 8 * MB  # the first block decides the column types
_MAX_RESTARTS = 64


@dataclass
class Source:
    """A dataset file opened and checked: its label, size, a Python handle and a native one for pyarrow."""

    label: str
    size: int
    handle: BinaryIO
    data: bytes | None = None  # an upload, already in memory
    label_path: str = ""  # the path opened (where /proc/self/fd is missing)

    def arrow(self):  # a pyarrow NativeFile
        """A pyarrow stream over the same file from its start (native: a Python file object read by
        pyarrow costs about 0.8x the file in extra copies)."""
        import pyarrow as pa

        if self.data is not None:
            return pa.BufferReader(self.data)
        fd = self.handle.fileno()
        proc = f"/proc/self/fd/{fd}"  # the very file checked, even if its path was swapped since
        native = pa.OSFile(proc if os.path.exists(proc) else self.label_path)
        checked, opened = os.fstat(fd), os.fstat(native.fileno())
        if (checked.st_dev, checked.st_ino) != (opened.st_dev, opened.st_ino):
            native.close()
            raise UserError(f"{self.label} was replaced while it was being read")
        return native

    def close(self) -> None:
        self.handle.close()


def _too_big(label: str, size: int, limit_mb: int) -> UserError:
    return UserError(f"{label} is {size / MB:,.1f} MB, more than the {limit_mb:,} MB allowed for a dataset "
                     "(MLOPS_MAX_DATASET_MB)")


def open_source(source: str | Path | bytes | BinaryIO, filename: str | None, limit_mb: int) -> Source:
    """A path, bytes or an uploaded file opened for reading; UserError if it is not a regular file or is
    larger than ``limit_mb``."""
    limit = limit_mb * MB
    if isinstance(source, (bytes, bytearray, memoryview)) or hasattr(source, "read"):
        label = filename or str(getattr(source, "name", "uploaded data"))
        size = getattr(source, "size", None)
        if isinstance(size, int) and size > limit:
            raise _too_big(label, size, limit_mb)
        data = bytes(source) if not hasattr(source, "read") else source.read(limit + 1)
        data = data.encode() if isinstance(data, str) else bytes(data)
        if len(data) > limit:
            raise _too_big(label, len(data), limit_mb)
        return Source(label, len(data), io.BytesIO(data), data)
    path = Path(source).expanduser()
    label = filename or str(path)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; the checks below refuse it anyway.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise UserError(f"file not found: {label}") from None
    except OSError as exc:
        raise UserError(f"cannot read {label}: {exc.strerror or type(exc).__name__}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        if stat.S_ISDIR(info.st_mode):
            raise UserError(f"{label} is a directory, not a CSV or Parquet file")
        raise UserError(f"{label} is not a regular file (a device, pipe or socket); only CSV or Parquet "
                        "files are read")
    if info.st_size > limit:
        os.close(fd)
        raise _too_big(label, info.st_size, limit_mb)
    return Source(label, info.st_size, os.fdopen(fd, "rb"), label_path=str(path))


def _encoding(src: Source, head: bytes) -> str:
    """The file's text encoding, checked over the whole file block by block (constant memory)."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    for encoding in _ENCODINGS:
        decoder = codecs.getincrementaldecoder(encoding)()
        src.handle.seek(0)
        left = src.size  # a file that grows while it is read is cut, not followed
        try:
            while left > 0 and (block := src.handle.read(min(_BLOCK, left))):
                left -= len(block)
                decoder.decode(block)
            decoder.decode(b"", final=True)
            return encoding
        except UnicodeDecodeError:
            continue
    return "latin-1"  # decodes anything


def _header_fields(first_line: str, delimiter: str) -> list[str]:
    return next(csv.reader([first_line], delimiter=delimiter), [])


def _sniff_delimiter(first_line: str) -> str:
    best, best_n = ",", 1
    for delim in _DELIMITERS:
        n = len(_header_fields(first_line, delim))
        if n > best_n:
            best, best_n = delim, n
    return best


def _bad_line(src: Source, encoding: str, delimiter: str, expected: int) -> int | None:
    """The line number of the first row without ``expected`` fields (pyarrow's streaming reader does not
    say; read again with the csv module, only after a failure)."""
    src.handle.seek(0)
    text = io.TextIOWrapper(src.handle, encoding=encoding, errors="replace", newline="")
    try:
        reader = csv.reader(text, delimiter=delimiter)
        for row in reader:
            if row and len(row) != expected:
                return reader.line_num
    except csv.Error:
        return None
    finally:
        text.detach()
    return None


def _csv_error(exc: Exception, src: Source, encoding: str, delimiter: str) -> UserError:
    """pyarrow's message without the row text it quotes."""
    text = str(exc)
    counts = _COUNTS.search(text)
    if counts:
        expected, got = int(counts.group(1)), int(counts.group(2))
        line = _bad_line(src, encoding, delimiter, expected)
        where = f"line {line}" if line else "a row"
        return UserError(f"{src.label} is not a well-formed CSV file: {where} has {got} fields where the "
                         f"header has {expected}")
    return UserError(f"{src.label} is not a well-formed CSV file ({text.split(':', 1)[0].strip()})")


def _arrow_csv(src: Source, encoding: str, delimiter: str):  # a pyarrow.Table
    """The CSV as a pyarrow Table, read batch by batch, in the types pandas' reader would give.

    The streaming reader infers each column's type from the first block and keeps only converted
    batches (pyarrow's whole-file reader also keeps every raw block until the end). A later value that
    does not fit restarts the read with that column loosened (int -> float -> text); dates and times
    stay text, as pandas reads them; a column empty in the first block is float."""
    import pyarrow as pa
    import pyarrow.csv as pv

    types: dict[str, pa.DataType] = {}
    for _ in range(_MAX_RESTARTS):
        schema = None
        try:
            with src.arrow() as stream:
                reader = pv.open_csv(
                    stream, read_options=pv.ReadOptions(encoding=encoding, block_size=_CSV_BLOCK),
                    parse_options=pv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
                    convert_options=pv.ConvertOptions(strings_can_be_null=True, column_types=types))
                schema = reader.schema
                loosen = {f.name: pa.string() if pa.types.is_temporal(f.type) else pa.float64()
                          for f in schema if f.name not in types
                          and (pa.types.is_temporal(f.type) or pa.types.is_null(f.type))}
                if loosen:
                    types.update(loosen)
                    continue
                return pa.Table.from_batches(list(reader), schema=schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            failed = _CONVERSION.search(str(exc))
            if failed is None or schema is None:
                raise _csv_error(exc, src, encoding, delimiter) from None
            name = schema.field(int(failed.group(1))).name
            types[name] = pa.float64() if failed.group(2) in ("int64", "null") else pa.string()
            log.debug("%s: column %r needs a looser type; reading again", src.label, name)
    raise UserError(f"{src.label} cannot be read as CSV: its column types keep changing")


def _as_pandas_types(table, delimiter: str):
    """Decimal commas (in a file not separated by commas) as numbers, as the reader always did."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if delimiter == ",":
        return table
    for i, column in enumerate(table.schema):
        data = table.column(i)
        if (pa.types.is_string(column.type) and data.null_count < len(data)
                and pc.all(pc.match_substring_regex(data, _DECIMAL_COMMA)).as_py()):
            numbers = pc.cast(pc.utf8_trim_whitespace(pc.replace_substring(data, ",", ".")), pa.float64())
            table = table.set_column(i, column.name, numbers)
    return table


def read_csv(src: Source, head: bytes) -> pd.DataFrame:
    """A CSV file (encoding and delimiter detected) as a DataFrame, parsed by pyarrow."""
    controls = sum(1 for b in head if b < 32 and b not in (9, 10, 13))
    utf16 = head.startswith((b"\xff\xfe", b"\xfe\xff"))
    if not utf16 and (b"\x00" in head or controls > max(2, len(head) // 100)):
        raise UserError(f"{src.label} is not a text file (CSV) or a Parquet file; it looks like binary data")
    encoding = _encoding(src, head)
    first = head.decode(encoding, errors="replace").lstrip("\ufeff").split("\n", 1)[0].rstrip("\r")
    delimiter = _sniff_delimiter(first)
    header = [h.strip() for h in _header_fields(first, delimiter)]
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise UserError(f"{src.label} has duplicate column names: {', '.join(map(repr, dupes))}; "
                        "rename them so each column has a unique name")
    table = _as_pandas_types(_arrow_csv(src, encoding, delimiter), delimiter)
    log.debug("read %s: encoding %s, delimiter %r, %d rows", src.label, encoding, delimiter, table.num_rows)
    if table.num_columns == 0:
        raise UserError(f"{src.label} is empty")
    if table.num_rows == 0:
        raise UserError(f"{src.label} has a header but no data rows")
    # Columns are converted one by one and their Arrow memory released as they go.
    return table.to_pandas(split_blocks=True, self_destruct=True)


def read_parquet(src: Source) -> pd.DataFrame:
    """A Parquet file as a DataFrame."""
    import pyarrow.parquet as pq

    try:
        with src.arrow() as stream:
            table = pq.read_table(stream)
    except UserError:
        raise
    except Exception:  # noqa: BLE001 - pyarrow raises many types for corrupt files
        raise UserError(f"{src.label} is not a readable Parquet file") from None
    names = table.column_names
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UserError(f"{src.label} has duplicate column names: {', '.join(map(repr, dupes))}")
    frame = table.to_pandas()
    if frame.empty:
        raise UserError(f"{src.label} has columns but no data rows")
    return frame


def read_table(source: str | Path | bytes | BinaryIO, filename: str | None = None,
               max_mb: int | None = None) -> pd.DataFrame:
    """A CSV (delimiter and encoding detected) or Parquet file as a DataFrame; UserError on any problem.

    ``max_mb``: the size cap (default: the ``MLOPS_MAX_DATASET_MB`` setting)."""
    if max_mb is None:
        from mlops_local.settings import get_settings

        max_mb = get_settings().max_dataset_mb
    src = open_source(source, filename, max_mb)
    try:
        head = src.handle.read(HEAD)
        if not head.strip() and src.size <= len(head):
            raise UserError(f"{src.label} is empty")
        if head[:4] == b"PAR1":
            return read_parquet(src)
        if head[:4] == b"PK\x03\x04":
            raise UserError(f"{src.label} is a zip archive (an Excel workbook?), not a CSV or Parquet file; "
                            "export the sheet as CSV")
        return read_csv(src, head)
    finally:
        src.close()
