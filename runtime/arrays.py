"""Read and write numeric arrays in the user's formats (numpy only, edge-safe).

Inputs: `.npy`, `.npz` (one array, or pick one with `key`), `.csv` (numeric columns, an
optional header row). Outputs: `.npy` or `.csv`. Every problem is a DataError with one
readable line naming the file and, for CSV, the line and column.
"""

from __future__ import annotations

import csv
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .errors import DataError

__all__ = ["ARRAY_SUFFIXES", "check_writable", "read_array", "write_array"]

ARRAY_SUFFIXES = (".npy", ".npz", ".csv")


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def read_csv(path: Path) -> np.ndarray:
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:  # -sig: Excel's BOM
            reader = csv.reader(f)
            numbered = [(reader.line_num, r) for r in reader if r and any(c.strip() for c in r)]
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text CSV file") from None
    if not numbered:
        raise DataError(f"{path}: the file is empty")
    header: list[str] | None = None
    # a header has no numeric cell; a first row with some numbers is data with a bad cell
    if not any(_is_number(c) for c in numbered[0][1]):
        header, numbered = numbered[0][1], numbered[1:]
    if not numbered:
        raise DataError(f"{path}: has a header but no data rows")
    width = len(numbered[0][1])
    values = np.empty((len(numbered), width), dtype=np.float64)
    for i, (line, row) in enumerate(numbered):
        if len(row) != width:
            raise DataError(f"{path}: line {line} has {len(row)} columns, expected {width}")
        for j, cell in enumerate(row):
            try:
                values[i, j] = float(cell)
            except ValueError:
                col = f"{j + 1} ({header[j]!r})" if header and j < len(header) else str(j + 1)
                raise DataError(
                    f"{path}: line {line}, column {col}: {cell.strip()!r} is not a number "
                    "(only numeric columns can be used)"
                ) from None
    return values


def _pick_npz(path: Path, z: np.lib.npyio.NpzFile, key: str | None, key_flag: str) -> np.ndarray:
    keys = list(z.keys())
    if not keys:
        raise DataError(f"{path}: the archive holds no arrays")
    if key is None:
        if len(keys) > 1:
            raise DataError(f"{path} holds several arrays {keys}; choose one with {key_flag}")
        key = keys[0]
    if key not in keys:
        raise DataError(f"{path}: no array {key!r}; it holds {keys}")
    value = z[key]
    if not isinstance(value, np.ndarray):  # a member that is not a .npy file: raw bytes
        raise DataError(f"{path}: {key!r} in the archive is not a NumPy array")
    return value


def _read_numpy(path: Path, suffix: str, key: str | None, key_flag: str) -> np.ndarray:
    # np.load picks .npy or .npz from the file's first bytes, not from its name
    loaded = np.load(path, allow_pickle=False)
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded as z:
            if suffix != ".npz":
                raise DataError(
                    f"{path}: not a .npy file (it looks like an .npz archive); rename it to .npz"
                )
            return _pick_npz(path, z, key, key_flag)
    if suffix != ".npy":
        raise DataError(
            f"{path}: not an .npz archive (it looks like a .npy file); rename it to .npy"
        )
    return np.asarray(loaded)


def read_array(path: str | Path, *, key: str | None = None, key_flag: str = "--key") -> np.ndarray:
    """Read a .npy, .npz or .csv file into an array (dtype as stored; CSV gives float64)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in ARRAY_SUFFIXES:
        raise DataError(
            f"{p}: unsupported file type {suffix or '(none)'!r}; use .npy, .npz or .csv"
        )
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    if p.stat().st_size == 0:
        raise DataError(f"{p}: the file is empty")
    try:
        x = read_csv(p) if suffix == ".csv" else _read_numpy(p, suffix, key, key_flag)
    except DataError:
        raise
    except (zipfile.BadZipFile, zlib.error):
        raise DataError(f"{p}: cannot read: the .npz archive is damaged or truncated") from None
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{p}: cannot read ({exc})") from None
    if x.ndim == 0:
        raise DataError(f"{p}: holds a single value; expected rows of samples")
    return x


def check_writable(path: str | Path, suffixes: tuple[str, ...] | None = None) -> Path:
    """Fail before any work is done when an output path cannot be written."""
    p = Path(path)
    if suffixes is not None and p.suffix.lower() not in suffixes:
        raise DataError(f"{p}: write {' or '.join(suffixes)}, not {p.suffix or '(no suffix)'!r}")
    if not p.parent.is_dir():
        raise DataError(f"{p}: the folder {p.parent} does not exist")
    if p.is_dir():
        raise DataError(f"{p} is a folder; give a file name")
    return p


def write_array(path: str | Path, array: np.ndarray) -> None:
    """Write .npy, or .csv for 2-D arrays."""
    p = check_writable(path, (".npy", ".csv"))
    suffix = p.suffix.lower()
    if suffix == ".npy":
        np.save(p, array)
    elif suffix == ".csv":
        if array.ndim != 2:
            raise DataError(
                f"{p}: CSV holds 2-D arrays only; this one has shape {array.shape}; use .npy"
            )
        np.savetxt(p, array, delimiter=",", fmt="%.8g")
