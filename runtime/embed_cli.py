"""`latentwire embed`: the float latents of each sample, as features for other tools.

Streams: a .npy input is memory-mapped and a CSV input read a chunk of rows at a time,
each chunk is encoded and appended to the output, so memory stays bounded whatever the
input's size (.npz archives are read whole). The output is written beside its final
name and renamed at the end, so an interrupted run never leaves a half-written file
under that name; an existing file is replaced only with --force.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import logging
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import numpy as np

from .argtypes import add_session_args, positive
from .arrays import _is_number, check_writable, read_array
from .embed import as_samples
from .errors import DataError
from .model import Model

log = logging.getLogger("latentwire")

OUT_SUFFIXES = (".npy", ".csv", ".parquet")
IN_SUFFIXES = (".npy", ".npz", ".csv")
DEFAULT_CHUNK = 8192
"""Samples encoded per step (bounded memory for any input size)."""
PROGRESS_SECONDS = 10.0
"""A progress line at most this often on long inputs."""


def add_command(sub: Any) -> None:
    p = sub.add_parser(
        "embed",
        help="float latents of each sample, as features for other tools",
        description="Encode INPUT (rows = samples in your own units: .npy, .npz or .csv) "
        "and write each sample's float latents, the encoder's output before any "
        "quantisation, one row per sample: features for clustering, classifiers or "
        "plots (dimensionality reduction, like PCA's transform). Large inputs are "
        "processed in chunks (.npy memory-mapped, CSV read row by row), so memory stays "
        "bounded. Needs only the encoder: an edge install (latentwire[cpu]) runs it. In "
        "Python: latentwire.runtime.LatentwireTransformer, a scikit-learn transformer.",
    )
    p.add_argument("--model", required=True, metavar="DIR", help="model package directory")
    p.add_argument(
        "input",
        metavar="INPUT",
        help="samples: .npy, .npz or .csv (numeric columns, an optional header row)",
    )
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="FILE",
        help="latents to write: .npy (float32, N x K), .csv (header latent0,latent1,...) or "
        ".parquet (needs pyarrow; one float32 column per latent)",
    )
    p.add_argument("--key", help="array name inside an .npz holding several")
    p.add_argument(
        "--chunk",
        type=positive(int),
        default=DEFAULT_CHUNK,
        metavar="N",
        help=f"samples encoded per step; bounds memory (default: {DEFAULT_CHUNK})",
    )
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    add_session_args(p)
    p.set_defaults(func=run)


# -- reading in chunks ---------------------------------------------------------------------
def _csv_chunks(path: Path, chunk: int) -> Iterator[np.ndarray]:
    """Rows of a numeric CSV file, `chunk` at a time (same rules and errors as
    `latentwire encode`: an optional header row, every row as wide as the first)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            yield from _csv_rows(path, csv.reader(f), chunk)
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text CSV file") from None


def _csv_rows(path: Path, reader: Any, chunk: int) -> Iterator[np.ndarray]:
    header: list[str] | None = None
    width, count = -1, 0
    rows: list[list[float]] = []
    for row in reader:
        if not row or not any(c.strip() for c in row):
            continue
        if width < 0:
            width = len(row)
            if not any(_is_number(c) for c in row):  # a header has no numeric cell
                header = row
                continue
        if len(row) != width:
            raise DataError(
                f"{path}: line {reader.line_num} has {len(row)} columns, expected {width}"
            )
        try:
            rows.append([float(c) for c in row])
        except ValueError:
            j = next(j for j, c in enumerate(row) if not _is_number(c))
            col = f"{j + 1} ({header[j]!r})" if header and j < len(header) else str(j + 1)
            raise DataError(
                f"{path}: line {reader.line_num}, column {col}: {row[j].strip()!r} is not a "
                "number (only numeric columns can be used)"
            ) from None
        count += 1
        if len(rows) == chunk:
            yield np.asarray(rows)
            rows = []
    if width < 0:
        raise DataError(f"{path}: the file is empty")
    if count == 0:
        raise DataError(f"{path}: has a header but no data rows")
    if rows:
        yield np.asarray(rows)


def _chunks(path: Path, key: str | None, chunk: int) -> tuple[int | None, Iterator[np.ndarray]]:
    """(number of samples when known up front, chunks of samples)."""
    suffix = path.suffix.lower()
    if suffix not in IN_SUFFIXES:
        raise DataError(
            f"{path}: unsupported file type {suffix or '(none)'!r}; use .npy, .npz or .csv"
        )
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if suffix == ".csv":
        if path.stat().st_size == 0:
            raise DataError(f"{path}: the file is empty")
        return None, _csv_chunks(path, chunk)
    x: np.ndarray
    if suffix == ".npy":
        try:
            loaded = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError):
            loaded = None
        if isinstance(loaded, np.ndarray):
            x = loaded
        else:  # read_array's one-line errors (an .npz named .npy, a damaged file)
            if isinstance(loaded, np.lib.npyio.NpzFile):
                loaded.close()
            x = read_array(path, key=key)
    else:
        x = read_array(path, key=key)
    if x.ndim == 0:
        raise DataError(f"{path}: holds a single value; expected rows of samples")
    return len(x), (np.asarray(x[s : s + chunk]) for s in range(0, len(x), chunk))


# -- writing as we go ----------------------------------------------------------------------
class _Writer:
    """Appends float32 rows to a temporary file beside `out`; `finish` renames it."""

    def __init__(self, out: Path, width: int) -> None:
        self.out, self.width, self.rows = out, width, 0
        self.tmp = out.with_name(f".{out.name}.partial")
        self.suffix = out.suffix.lower()
        self._parquet: Any = None
        self._raw: BinaryIO | None = None
        self._text: TextIO | None = None
        names = [f"latent{i}" for i in range(width)]
        if self.suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            self._pa = pa
            self._schema = pa.schema([(n, pa.float32()) for n in names])
            self._parquet = pq.ParquetWriter(self.tmp, self._schema)
        elif self.suffix == ".csv":
            self._text = self.tmp.open("w", newline="")
            self._text.write(",".join(names) + "\n")
        else:  # .npy: raw rows now, the header (which needs the row count) at the end
            self._raw = self.tmp.with_name(self.tmp.name + ".raw").open("wb")

    def write(self, z: np.ndarray) -> None:
        z = np.ascontiguousarray(z.reshape(len(z), -1), dtype=np.float32)
        self.rows += len(z)
        if self._parquet is not None:
            cols = [self._pa.array(z[:, i]) for i in range(self.width)]
            self._parquet.write_table(self._pa.Table.from_arrays(cols, schema=self._schema))
        elif self._text is not None:
            np.savetxt(self._text, z, delimiter=",", fmt="%.9g")
        elif self._raw is not None:
            self._raw.write(z.tobytes())

    def finish(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        elif self._text is not None:
            self._text.close()
        elif self._raw is not None:
            self._raw.close()
            raw = Path(self._raw.name)
            header = {"descr": "<f4", "fortran_order": False, "shape": (self.rows, self.width)}
            with self.tmp.open("wb") as f, raw.open("rb") as src:
                np.lib.format.write_array_header_1_0(f, header)
                while block := src.read(1 << 20):
                    f.write(block)
            raw.unlink()
        os.replace(self.tmp, self.out)

    def abort(self) -> None:
        for handle in (self._raw, self._text):
            if handle is not None:
                handle.close()
        if self._parquet is not None:
            with contextlib.suppress(Exception):
                self._parquet.close()
        for path in (self.tmp, self.tmp.with_name(self.tmp.name + ".raw")):
            path.unlink(missing_ok=True)


def _check_out(out: Path, force: bool) -> None:
    check_writable(out, OUT_SUFFIXES)
    if out.exists() and not force:
        raise DataError(f"{out} exists; pass --force to replace it")
    if out.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise DataError(
                f"{out}: writing .parquet needs pyarrow: pip install pyarrow "
                "(or write .npy or .csv)"
            ) from None


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    _check_out(out, args.force)  # before any work
    total, chunks = _chunks(Path(args.input), args.key, args.chunk)
    model = Model(args.model, providers=args.providers, threads=args.threads, roles=("encoder",))
    spec = model.manifest.latent
    if any(s is None for s in spec.shape):
        raise DataError(
            f"model {model.name!r} gives latents of shape ({spec.dims()}), which depends on "
            "the input's size: embed needs a model with a fixed latent size"
        )
    width = math.prod(s for s in spec.shape if s is not None)
    writer = _Writer(out, width)
    t0 = last = time.perf_counter()
    shape: tuple[int, ...] = ()
    try:
        for x in chunks:
            samples = as_samples(x, model)
            shape = samples.shape[1:]
            writer.write(model.encode_latents(samples))
            now = time.perf_counter()
            if now - last > PROGRESS_SECONDS:
                last = now
                of = f" of {total:,}" if total else ""
                log.info("embedded %s%s samples (%.0f s)", f"{writer.rows:,}", of, now - t0)
        if writer.rows == 0:
            raise DataError(f"{args.input}: holds no samples")
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    print(
        f"embedded {writer.rows:,} samples of shape {shape} -> {out}: {writer.rows:,} x "
        f"{width} float32 latents ({time.perf_counter() - t0:.2f} s)",
        file=sys.stderr,
    )
    return 0
