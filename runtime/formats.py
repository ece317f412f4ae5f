"""Code formats: how latents become the codes that travel, and back.

Every package has one format, recorded in its manifest under ``codes``::

    "codes": {
      "format": "int8",                       # f32 | f16 | int8 | entropy
      "name": "codes", "dtype": "int8",       # the encoder graph's first output (wire values)
      "calibration": {"min": [...], "max": [...]},  # per latent channel, training split
      "int8": {"scale": [...], "offset": [...]},  # format int8
      "entropy": {"coder": ..., "precision_bits": 16, "tables": [...]}  # format entropy
    }

The encoder graph ends in the format's quantiser, so an edge device gets wire values from
one ONNX Runtime call: its first output (``codes.name``) is float32 (f32), float16 (f16),
int8 (int8, ONNX QuantizeLinear per channel) or int32 symbols (entropy: Round, clipped to
the prior's support). Its second output is the float32 latents before quantisation (what
`latentwire evaluate` uses to compare formats). The decoder graph always takes float32
latents; ``dequantize`` maps wire values back on the decoding side.

On the wire (`latentwire.v1.Codes.tensor`) f32/f16/int8 travel as a tensor of wire values,
``entropy`` as one entropy-coded stream (uint8 tensor) plus ``latent_shape``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._proto.v1 import codec_pb2
from .codes import array_to_tensor, tensor_to_array
from .entropy import FactorizedPrior
from .errors import CodesError, InputError, PackageError

FORMATS = ("f32", "f16", "int8", "entropy")
WIRE_DTYPES = {"f32": "float32", "f16": "float16", "int8": "int8", "entropy": "int32"}
"""The encoder graph's output dtype per format (the tensor V2 carries)."""
CODES_OUTPUT = "codes"
LATENTS_OUTPUT = "z"
_F16_MAX = float(np.finfo(np.float16).max)


def _is_numbers(value: Any) -> bool:
    """A JSON number or nested lists of numbers (no strings, booleans or nulls)."""
    if isinstance(value, list):
        return all(_is_numbers(v) for v in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def floats(value: Any, what: str) -> np.ndarray:
    """A manifest's number or nested lists of numbers as float64, refusing anything else
    (strings, nulls, ragged lists, integers past float64's range)."""
    if not _is_numbers(value):
        raise PackageError(f"{what} must be a number or a list of numbers, got {value!r:.80}")
    try:
        return np.asarray(value, dtype=np.float64)
    except (ValueError, OverflowError):
        raise PackageError(f"{what} must be a regular array of numbers") from None


def int8_params(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel affine int8 parameters (scale, offset) covering [lo, hi]:
    q = saturate(round((z - offset) / scale)), z ~ q * scale + offset. The offset is the
    middle of the range, so -127 .. 127 span it (the graph: Sub, then ONNX QuantizeLinear
    with zero point 0, which rounds half to even like numpy's rint)."""
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    scale = np.maximum(hi - lo, 1e-6) / 254.0
    offset = (lo + hi) / 2.0
    return scale.astype(np.float32), offset.astype(np.float32)


def _channel_shape(ndim: int) -> tuple[int, ...]:
    """Broadcast shape of a per-channel vector against a (N, K, ...) batch."""
    return (1, -1) + (1,) * (ndim - 2)


@dataclass(frozen=True)
class CodeFormat:
    """A package's code format with its parameters (parsed from manifest ``codes``)."""

    name: str
    lo: np.ndarray
    """Calibration: per-channel minimum of the latents on the training split."""
    hi: np.ndarray
    scale: np.ndarray | None = None
    """int8: float32 (K,) step per channel."""
    offset: np.ndarray | None = None
    """int8: float32 (K,) value of code 0 per channel."""
    prior: FactorizedPrior | None = None

    @property
    def wire_dtype(self) -> str:
        return WIRE_DTYPES[self.name]

    @property
    def integer(self) -> bool:
        return self.name in ("int8", "entropy")

    @classmethod
    def from_dict(cls, d: dict[str, Any], channels: int) -> CodeFormat:
        if not isinstance(d, dict):
            raise PackageError(f"codes must be an object, got {type(d).__name__}")
        fmt = d.get("format")
        if fmt is None:
            raise PackageError(f"codes.format is missing; this latentwire reads {FORMATS}")
        if fmt not in FORMATS:
            raise PackageError(f"unknown code format {fmt!r}; this latentwire reads {FORMATS}")
        if d.get("dtype") != WIRE_DTYPES[fmt] or d.get("name") != CODES_OUTPUT:
            raise PackageError(
                f"codes of format {fmt} are the encoder output {CODES_OUTPUT!r} of dtype "
                f"{WIRE_DTYPES[fmt]}; the manifest says {d.get('name')!r} {d.get('dtype')!r}"
            )
        cal = d.get("calibration") or {}
        if not isinstance(cal, dict):
            raise PackageError("codes.calibration must be an object with min and max")
        lo = floats(cal.get("min", []), "codes.calibration.min")
        hi = floats(cal.get("max", []), "codes.calibration.max")
        if lo.shape != (channels,) or hi.shape != (channels,) or not np.all(lo <= hi):
            raise PackageError(
                f"codes.calibration needs min <= max for each of the {channels} latent channels"
            )
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            raise PackageError("codes.calibration must be finite")
        if fmt == "int8":
            q = d.get("int8") or {}
            if not isinstance(q, dict):
                raise PackageError("codes.int8 must be an object with scale and offset")
            with np.errstate(over="ignore"):  # past float32: inf, refused below
                scale = floats(q.get("scale", []), "codes.int8.scale").astype(np.float32)
                offset = floats(q.get("offset", []), "codes.int8.offset").astype(np.float32)
            ok = np.all(np.isfinite(scale)) and np.all(np.isfinite(offset))
            if scale.shape != (channels,) or offset.shape != (channels,) or not ok:
                raise PackageError(f"codes.int8 needs {channels} finite scales and offsets")
            if np.any(scale <= 0):
                raise PackageError("codes.int8 scales must be positive")
            return cls(fmt, lo, hi, scale, offset)
        if fmt == "entropy":
            return cls(
                fmt, lo, hi, prior=FactorizedPrior.from_dict(d.get("entropy") or {}, channels)
            )
        return cls(fmt, lo, hi)

    @classmethod
    def build(
        cls, name: str, lo: np.ndarray, hi: np.ndarray, prior: FactorizedPrior | None = None
    ) -> CodeFormat:
        """A format from calibration (and a prior for entropy), as export makes it."""
        if name not in FORMATS:
            raise ValueError(f"unknown code format {name!r}; choose one of {FORMATS}")
        if name == "entropy" and prior is None:
            raise ValueError(
                "the entropy format needs a trained prior (train with --codec entropy)"
            )
        lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
        if name == "int8":
            scale, offset = int8_params(lo, hi)
            return cls(name, lo, hi, scale, offset)
        return cls(name, lo, hi, prior=prior if name == "entropy" else None)

    @classmethod
    def calibrated(
        cls, name: str, z: np.ndarray, prior: FactorizedPrior | None = None
    ) -> CodeFormat:
        """A format calibrated on latents `z` (N, K, ...): each channel's min and max."""
        axes = tuple(i for i in range(z.ndim) if i != 1)
        return cls.build(name, z.min(axis=axes), z.max(axis=axes), prior)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "format": self.name,
            "name": CODES_OUTPUT,
            "dtype": self.wire_dtype,
            "calibration": {"min": self.lo.tolist(), "max": self.hi.tolist()},
        }
        if self.scale is not None and self.offset is not None:
            d["int8"] = {
                "scale": [float(s) for s in self.scale],
                "offset": [float(o) for o in self.offset],
            }
        if self.prior is not None:
            d["entropy"] = self.prior.to_dict()
        return d

    # -- numpy twins of the graph's quantiser, and the decoder side ---------------------
    def quantize(self, z: np.ndarray) -> np.ndarray:
        """Float32 latents (N, K, ...) -> wire values, as the encoder graph computes them."""
        z = np.asarray(z, dtype=np.float32)
        shape = _channel_shape(z.ndim)
        if self.name == "f32":
            return z
        if self.name == "f16":
            return z.astype(np.float16)
        out: np.ndarray
        if self.name == "int8":
            assert self.scale is not None and self.offset is not None
            q = np.rint((z - self.offset.reshape(shape)) / self.scale.reshape(shape))
            out = np.clip(q, -128, 127).astype(np.int8)
            return out
        assert self.prior is not None
        lo = self.prior.low.reshape(shape).astype(np.float32)
        hi = self.prior.high.reshape(shape).astype(np.float32)
        out = np.clip(np.rint(z), lo, hi).astype(np.int32)
        return out

    def dequantize(self, w: np.ndarray) -> np.ndarray:
        """Checked wire values -> float32 latents for the decoder graph."""
        if self.name == "int8":
            assert self.scale is not None and self.offset is not None
            shape = _channel_shape(w.ndim)
            out: np.ndarray = w.astype(np.float32) * self.scale.reshape(shape)
            out += self.offset.reshape(shape)
            return out
        return w.astype(np.float32, copy=False)

    def check_wire(self, w: np.ndarray, *, what: str = "codes") -> np.ndarray:
        """Refuse wire values of the wrong kind or range; returns them in the wire dtype.

        Float formats take any float dtype (cast, refusing overflow); int8 takes integers
        in -128 .. 127; entropy takes integers inside each channel's table.
        """
        kind = w.dtype.kind
        if not self.integer:
            if kind != "f":
                raise InputError(
                    f"{what} of format {self.name} must be floats, got dtype {w.dtype}"
                )
            limit = _F16_MAX if self.name == "f16" else float(np.finfo(np.float32).max)
            wider = w.dtype.itemsize > np.dtype(self.wire_dtype).itemsize
            if wider and w.size and np.abs(w).max() > limit:
                raise InputError(f"{what} hold values past {self.wire_dtype}'s range")
            return w.astype(self.wire_dtype, copy=False)
        if kind not in "iu":
            raise InputError(
                f"{what} of format {self.name} must be integers ({self.wire_dtype}), got "
                f"dtype {w.dtype}"
            )
        if self.name == "int8":
            if w.dtype != np.int8 and w.size and (w.min() < -128 or w.max() > 127):
                bad = np.argwhere((w < -128) | (w > 127))[0]
                raise CodesError(
                    f"{what}: int8 codes must lie in -128 .. 127; index "
                    f"{tuple(int(i) for i in bad)} is {int(w[tuple(bad)])}"
                )
            return w.astype(np.int8, copy=False)
        assert self.prior is not None
        if w.dtype.itemsize > 4 or (kind == "u" and w.dtype.itemsize == 4):
            wide = w.astype(np.int64)
            self.prior.check_symbols(wide, what=what)
            return wide.astype(np.int32)
        self.prior.check_symbols(w, what=what)
        return w.astype(np.int32, copy=False)

    # -- the Codes message ---------------------------------------------------------------
    def pack(self, w: np.ndarray, msg: codec_pb2.Codes) -> None:
        """Put wire values (N, *latent) into `msg` (tensor, and latent_shape for entropy)."""
        if self.name == "entropy":
            assert self.prior is not None
            stream = self.prior.encode(w)
            msg.tensor.CopyFrom(array_to_tensor(np.frombuffer(stream, dtype=np.uint8)))
            msg.latent_shape[:] = [int(s) for s in w.shape[1:]]
        else:
            msg.tensor.CopyFrom(array_to_tensor(np.asarray(w, dtype=self.wire_dtype)))

    def unpack(self, msg: codec_pb2.Codes) -> np.ndarray:
        """Wire values (count, *latent) from a Codes message of this format."""
        if self.name == "entropy":
            assert self.prior is not None
            if msg.tensor.dtype != "uint8" or len(msg.tensor.shape) != 1:
                raise CodesError(
                    "entropy codes carry their stream as a 1-D uint8 tensor, got dtype "
                    f"{msg.tensor.dtype!r} shape {list(msg.tensor.shape)}"
                )
            if not msg.latent_shape:
                raise CodesError("entropy codes must say their latent_shape")
            stream = tensor_to_array(msg.tensor).tobytes()
            return self.prior.decode(stream, int(msg.count), list(msg.latent_shape))
        if msg.latent_shape:
            raise CodesError(f"latent_shape is only for entropy codes, not format {self.name}")
        if msg.tensor.dtype != self.wire_dtype:
            raise CodesError(
                f"format {self.name!r} carries {self.wire_dtype} codes, got {msg.tensor.dtype!r}"
            )
        w = tensor_to_array(msg.tensor)
        if w.ndim == 0 or w.shape[0] != msg.count:
            raise CodesError(f"codes say count={msg.count} but the tensor has shape {w.shape}")
        return w
