"""The model package manifest (`manifest.json`), schema version 1.

A model package is a directory holding `encoder.onnx`, `decoder.onnx` and `manifest.json`.
The manifest carries everything a runtime needs and nothing torch-specific::

    {
      "schema": "latentwire.manifest", "schema_version": 1,
      "name": "digits",                         # model name (also on every codes message)
      "fingerprint": "3f2a...",                 # 16 hex chars, see compute_fingerprint
      "input":  {"name": "x", "shape": [64], "dtype": "float32", "multiple_of": 1},
      "latent": {"name": "z", "shape": [8],  "dtype": "float32"},   # decoder input
      "output": {"name": "x_hat", "shape": [64], "dtype": "float32"},
      "normalization": {"kind": "minmax", "offset": [...], "scale": [...]},
      "codes": {"format": "int8", "name": "codes", "dtype": "int8", ...},  # see formats.py
      "files": {"encoder": {"path": "encoder.onnx", "sha256": "...", "graph_sha256": "...",
                            "bytes": 41234}, "decoder": {...}},
      "onnx": {"opset": 18},
      "model": {...}, "training": {...}, "created_utc": "...", "latentwire_version": "0.1.0"
    }

Shapes are per sample (no batch axis); `null` marks a free dimension (image height and
width of the convolutional model, which must be multiples of `input.multiple_of`).
Normalization: the encoder graph sees `(x - offset) / scale`; the decoder's output is
mapped back with `x_hat * scale + offset`; offset/scale have one entry or broadcast to the
sample shape. `graph_sha256` is the sha256 of the ONNX file before the fingerprint was
written into its metadata; `sha256` is of the file as shipped.

The encoder graph maps `input` to two outputs: `codes.name` (the wire values of the code
format) and `latent.name` (float32 latents before quantisation); the decoder graph maps
float32 `latent` to `output`. Schema version 2 added the code formats (version 1 packages
carried float32 codes only and must be re-exported).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np

from .codes import WIRE_DTYPES
from .errors import PackageError
from .formats import CodeFormat, floats

SCHEMA = "latentwire.manifest"
SCHEMA_VERSION = 2
MANIFEST_FILE = "manifest.json"
FINGERPRINT_KEY = "latentwire.fingerprint"
ROLES = ("encoder", "decoder")
"""The two graphs of a package, by their keys in `files`."""
SCORER = "scorer"
"""Optional third graph (`train --task anomaly --edge-score`): input -> codes, latents and
the reconstruction-error score, for edges that score; outside the fingerprint's graphs."""
ANOMALY = "anomaly"
"""Optional `files` entry (and manifest section) of a package trained for anomaly
detection: the densities' npz (see runtime/anomaly.py); outside the fingerprint."""
_CONTRACT_KEYS = ("input", "latent", "output", "normalization", "codes")
NORMALIZATION_KINDS = ("none", "minmax", "standard", "scale")


MAX_MANIFEST_BYTES = 64 << 20
"""Largest manifest.json read (the biggest real ones, per-feature normalisation of wide
data plus entropy tables, are a few MB)."""
MAX_RANK = 8
"""Most dimensions of one sample (images have 3)."""
MAX_SAMPLE_VALUES = 1 << 26
"""Most values in one sample, free sides counted at their smallest size (`multiple_of`): a
manifest cannot make a runtime size buffers past this."""
MAX_MULTIPLE_OF = 1024
"""Largest stride a free side may be a multiple of."""


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(d: dict[str, Any], key: str, what: str) -> str:
    value = d.get(key)
    if not isinstance(value, str) or not value:
        raise PackageError(f"{what}.{key} must be a non-empty string, got {value!r:.80}")
    return value


@dataclass(frozen=True)
class TensorSpec:
    """One graph tensor as seen per sample."""

    name: str
    """Tensor name in the ONNX graph."""
    shape: tuple[int | None, ...]
    """Per-sample shape; None for a free dimension."""
    dtype: str
    """numpy dtype name."""
    multiple_of: int = 1
    """Free dimensions must be multiples of this (convolutional strides)."""

    @classmethod
    def from_dict(cls, d: dict[str, Any], what: str = "tensor") -> TensorSpec:
        """Parse and check a spec: a name, at most MAX_RANK positive (or free) dims, a wire
        dtype, and no more than MAX_SAMPLE_VALUES values per sample."""
        if not isinstance(d, dict):
            raise PackageError(f"{what} must be an object, got {type(d).__name__}")
        name, dtype = _text(d, "name", what), _text(d, "dtype", what)
        shape, multiple_of = d.get("shape"), d.get("multiple_of", 1)
        if not isinstance(shape, list) or len(shape) > MAX_RANK:
            raise PackageError(f"{what}.shape must be a list of at most {MAX_RANK} dimensions")
        if not all(s is None or _is_int(s) for s in shape) or not _is_int(multiple_of):
            raise PackageError(
                f"{what}: dimensions must be integers (null for a free one) and multiple_of an "
                f"integer, got shape {shape!r:.80} and multiple_of {multiple_of!r:.20}"
            )
        if any(s is not None and s < 1 for s in shape) or multiple_of < 1:
            raise PackageError(
                f"tensor {name!r}: dimensions and multiple_of must be positive, "
                f"got shape {shape} and multiple_of {multiple_of}"
            )
        if multiple_of > MAX_MULTIPLE_OF:
            raise PackageError(f"{what}.multiple_of {multiple_of} is over {MAX_MULTIPLE_OF}")
        values = math.prod(multiple_of if s is None else s for s in shape)
        if values > MAX_SAMPLE_VALUES:
            raise PackageError(
                f"{what}: samples of shape {shape} hold {values:,} values, more than the "
                f"{MAX_SAMPLE_VALUES:,} a package may declare"
            )
        if dtype not in WIRE_DTYPES:
            raise PackageError(f"{what}.dtype {dtype!r} is not one of {sorted(WIRE_DTYPES)}")
        return cls(name, tuple(shape), dtype, multiple_of)

    def dims(self) -> str:
        """Per-sample dims as text, '*' for free ones: "3, *, *"."""
        return ", ".join("*" if s is None else str(s) for s in self.shape)

    def describe(self) -> str:
        return f"({self.dims()}) {self.dtype}"


@dataclass(frozen=True)
class Normalization:
    """Affine map between the user's units and the units the graphs were trained in."""

    kind: str
    """none | minmax | standard | scale: how offset/scale were fitted."""
    offset: np.ndarray = field(repr=False)
    scale: np.ndarray = field(repr=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any], sample_shape: tuple[int | None, ...]) -> Normalization:
        if not isinstance(d, dict):
            raise PackageError(f"normalization must be an object, got {type(d).__name__}")
        kind = d.get("kind", "none")
        if kind not in NORMALIZATION_KINDS:
            raise PackageError(
                f"normalization.kind {kind!r:.40} is not one of {NORMALIZATION_KINDS}"
            )
        offset = floats(d.get("offset", [0.0]), "normalization.offset")
        scale = floats(d.get("scale", [1.0]), "normalization.scale")
        for label, arr in (("offset", offset), ("scale", scale)):
            fits = arr.ndim == len(sample_shape) and all(
                a == 1 or a == s for a, s in zip(arr.shape, sample_shape, strict=True)
            )
            if arr.size != 1 and not fits:
                raise PackageError(
                    f"normalization.{label} has shape {arr.shape}; expected one value or a "
                    f"shape that broadcasts to the sample shape {sample_shape}"
                )
        if not np.all(np.isfinite(scale)) or np.any(scale == 0):
            raise PackageError("normalization.scale must be finite and non-zero")
        if not np.all(np.isfinite(offset)):
            raise PackageError("normalization.offset must be finite")
        flat = [a.reshape(-1) if a.size == 1 else a for a in (offset, scale)]
        return cls(kind, flat[0], flat[1])

    def forward(self, x: np.ndarray) -> np.ndarray:
        """User units -> model units, computed in float64 (a large offset with a small
        spread keeps its precision); the caller casts to float32."""
        if self.kind == "none":
            return x
        out: np.ndarray = (x.astype(np.float64, copy=False) - self.offset) / self.scale
        return out

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """Model units -> user units."""
        if self.kind == "none":
            return y
        out: np.ndarray = (y * self.scale + self.offset).astype(np.float32, copy=False)
        return out


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def compute_fingerprint(manifest: dict[str, Any]) -> str:
    """Hash of the encoder/decoder pair and its contract.

    Covers the graphs (their sha256 before the fingerprint was written into their
    metadata) and every manifest field that changes what codes mean: input, latent and
    output specs, normalization and code format.
    """
    contract = {k: manifest[k] for k in _CONTRACT_KEYS}
    contract["graphs"] = {role: manifest["files"][role]["graph_sha256"] for role in ROLES}
    return hashlib.sha256(canonical_json(contract)).hexdigest()[:16]


@dataclass(frozen=True)
class Manifest:
    """A parsed, validated manifest.json."""

    name: str
    fingerprint: str
    input: TensorSpec
    latent: TensorSpec
    output: TensorSpec
    normalization: Normalization
    codes: CodeFormat
    files: dict[str, dict[str, Any]]
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        """Parse and check a manifest; anything malformed or absurd is a PackageError,
        raised before anything is sized by it."""
        if not isinstance(d, dict):
            raise PackageError(f"a manifest is a JSON object, got {type(d).__name__}")
        if d.get("schema") != SCHEMA:
            raise PackageError(f"not a latentwire manifest (schema is {d.get('schema')!r:.80})")
        version = d.get("schema_version")
        if version != SCHEMA_VERSION or not _is_int(version):
            raise PackageError(
                f"manifest schema_version {version!r:.40} is not supported by this latentwire "
                f"(reads version {SCHEMA_VERSION}); upgrade latentwire or re-export the model"
            )
        try:
            inp = TensorSpec.from_dict(d["input"], "input")
            latent = TensorSpec.from_dict(d["latent"], "latent")
            if not latent.shape or latent.shape[0] is None or latent.dtype != "float32":
                raise PackageError(
                    "latent must be float32 with a fixed channel count first, got "
                    f"{latent.describe()}"
                )
            files = d["files"]
            if not isinstance(files, dict):
                raise PackageError(f"files must be an object, got {type(files).__name__}")
            for role in ROLES:
                _check_file_entry(files.get(role), role)
            if SCORER in files:
                _check_file_entry(files[SCORER], SCORER)
            if ANOMALY in files or ANOMALY in d:
                _check_file_entry(files.get(ANOMALY), ANOMALY, graph=False)
                if not isinstance(d.get(ANOMALY), dict):
                    raise PackageError("files.anomaly needs a manifest section anomaly (object)")
            return cls(
                name=_text(d, "name", "manifest"),
                fingerprint=_text(d, "fingerprint", "manifest"),
                input=inp,
                latent=latent,
                output=TensorSpec.from_dict(d["output"], "output"),
                normalization=Normalization.from_dict(d["normalization"], inp.shape),
                codes=CodeFormat.from_dict(d["codes"], latent.shape[0]),
                files={k: dict(v) for k, v in files.items() if isinstance(v, dict)},
                raw=d,
            )
        except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError) as exc:
            raise PackageError(f"manifest is missing or has a malformed field: {exc!r}") from exc
        except RecursionError:
            raise PackageError("manifest is nested too deeply") from None

    @property
    def code_format(self) -> str:
        """The format tag every codes message of this package carries."""
        return self.codes.name

    @classmethod
    def load(cls, directory: str | Path, *, root: str | Path | None = None) -> Manifest:
        """Read and check `directory`/manifest.json. With `root` (a model repository), the
        package directory must lie inside it, symlinks resolved."""
        if not Path(directory).is_dir():
            raise PackageError(f"model package {directory} is not a directory")
        path = package_file(directory, MANIFEST_FILE, root=root)
        try:
            data = json.loads(read_package_file(path, MAX_MANIFEST_BYTES).decode("utf-8"))
        except FileNotFoundError:
            raise PackageError(f"{path} not found: not a model package") from None
        except (OSError, UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
            raise PackageError(f"cannot read {path}: {exc}") from None
        except RecursionError:
            raise PackageError(f"cannot read {path}: JSON nested too deeply") from None
        if not isinstance(data, dict):
            raise PackageError(f"{path} does not hold a JSON object")
        try:
            return cls.from_dict(data)
        except PackageError as exc:
            raise PackageError(f"{path}: {exc}") from exc.__cause__


def _check_file_entry(entry: Any, role: str, *, graph: bool = True) -> None:
    """files.<role>: a plain file name inside the package and hex sha256s (a graph's
    also before its fingerprint was written, `graph_sha256`)."""
    if not isinstance(entry, dict):
        raise PackageError(f"files.{role} must be an object, got {entry!r:.80}")
    name = entry.get("path")
    if not isinstance(name, str) or not is_file_name(name):
        raise PackageError(
            f"files.{role}.path must name a file in the package folder, got {name!r:.80}"
        )
    size = entry.get("bytes", 0)
    if not _is_int(size) or size < 0:
        raise PackageError(f"files.{role}.bytes must be a byte count, got {size!r:.40}")
    for key in ("sha256", "graph_sha256") if graph else ("sha256",):
        digest = entry.get(key)
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise PackageError(f"files.{role}.{key} must be 64 hex digits, got {digest!r:.80}")


_SHA256 = re.compile(r"[0-9a-f]{64}")


def is_file_name(name: str) -> bool:
    """A plain file name: no folder part, not `.`/`..`, nothing that leaves a folder."""
    return (
        bool(name)
        and name not in (".", "..")
        and not any(c in name for c in "/\\\0")
        and ":" not in name  # Windows drive letters and alternate data streams
    )


def package_file(directory: str | Path, name: str, *, root: str | Path | None = None) -> Path:
    """The real path of the file `name` of a package, after checking that it stays inside.

    Symlinks are resolved: the file must lie in the package's own (resolved) directory, and
    with `root` given the directory must lie inside `root` (a model repository whose
    version directories are symlinks). Refused with a PackageError naming the file and
    where it leads otherwise.
    """
    folder = Path(directory)
    try:
        real_dir = folder.resolve(strict=True)
        real = (folder / name).resolve()
        bound = Path(root).resolve(strict=True) if root is not None else None
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
        raise PackageError(f"cannot resolve {folder / name}: {exc}") from None
    if bound is not None and not real_dir.is_relative_to(bound):
        raise PackageError(
            f"model package {folder} resolves to {real_dir}, outside the model repository "
            f"{bound}: refused"
        )
    if real.parent != real_dir:
        raise PackageError(
            f"{folder / name} resolves to {real}, outside the package folder {real_dir}: "
            "refused (a package's files must lie in its own folder)"
        )
    return real


def read_package_file(path: Path, limit: int) -> bytes:
    """The bytes of a package file (a path from `package_file`): refused unless it is a
    regular file of at most `limit` bytes. A FIFO or device is refused without blocking
    on it; OSError (e.g. FileNotFoundError) is left to the caller."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    with open(fd, "rb", closefd=True) as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise PackageError(f"{path} is not a regular file")
        if info.st_size > limit:
            raise PackageError(f"{path} is {info.st_size:,} bytes, over the limit of {limit:,}")
        data = f.read(limit + 1)
    if len(data) > limit:  # it grew while we read it
        raise PackageError(f"{path} is over the limit of {limit:,} bytes")
    return data
