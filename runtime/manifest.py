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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import PackageError
from .formats import CodeFormat

SCHEMA = "latentwire.manifest"
SCHEMA_VERSION = 2
MANIFEST_FILE = "manifest.json"
FINGERPRINT_KEY = "latentwire.fingerprint"
ROLES = ("encoder", "decoder")
"""The two graphs of a package, by their keys in `files`."""
_CONTRACT_KEYS = ("input", "latent", "output", "normalization", "codes")


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
    def from_dict(cls, d: dict[str, Any]) -> TensorSpec:
        spec = cls(
            name=str(d["name"]),
            shape=tuple(None if s is None else int(s) for s in d["shape"]),
            dtype=str(d["dtype"]),
            multiple_of=int(d.get("multiple_of", 1)),
        )
        if any(s is not None and s < 1 for s in spec.shape) or spec.multiple_of < 1:
            raise PackageError(
                f"tensor {spec.name!r}: dimensions and multiple_of must be positive, "
                f"got shape {list(d['shape'])} and multiple_of {spec.multiple_of}"
            )
        return spec

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
        offset = np.asarray(d.get("offset", [0.0]), dtype=np.float64)
        scale = np.asarray(d.get("scale", [1.0]), dtype=np.float64)
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
        flat = [a.reshape(-1) if a.size == 1 else a for a in (offset, scale)]
        return cls(str(d.get("kind", "none")), flat[0], flat[1])

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
        if d.get("schema") != SCHEMA:
            raise PackageError(f"not a latentwire manifest (schema is {d.get('schema')!r})")
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise PackageError(
                f"manifest schema_version {version!r} is not supported by this latentwire "
                f"(reads version {SCHEMA_VERSION}); upgrade latentwire or re-export the model"
            )
        try:
            inp = TensorSpec.from_dict(d["input"])
            latent = TensorSpec.from_dict(d["latent"])
            if not latent.shape or latent.shape[0] is None or latent.dtype != "float32":
                raise PackageError(
                    "latent must be float32 with a fixed channel count first, got "
                    f"{latent.describe()}"
                )
            for role in ROLES:
                entry = d["files"][role]
                str(entry["path"]), str(entry["sha256"]), str(entry["graph_sha256"])
            return cls(
                name=str(d["name"]),
                fingerprint=str(d["fingerprint"]),
                input=inp,
                latent=latent,
                output=TensorSpec.from_dict(d["output"]),
                normalization=Normalization.from_dict(d["normalization"], inp.shape),
                codes=CodeFormat.from_dict(d["codes"], latent.shape[0]),
                files={k: dict(v) for k, v in d["files"].items()},
                raw=d,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PackageError(f"manifest is missing or has a malformed field: {exc!r}") from exc

    @property
    def code_format(self) -> str:
        """The format tag every codes message of this package carries."""
        return self.codes.name

    @classmethod
    def load(cls, directory: str | Path) -> Manifest:
        path = Path(directory) / MANIFEST_FILE
        if not Path(directory).is_dir():
            raise PackageError(f"model package {directory} is not a directory")
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise PackageError(f"{path} not found: not a model package") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PackageError(f"cannot read {path}: {exc}") from None
        if not isinstance(data, dict):
            raise PackageError(f"{path} does not hold a JSON object")
        return cls.from_dict(data)
