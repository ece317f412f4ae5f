"""Load a model package and run its encoder and decoder with ONNX Runtime (no torch, no onnx)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from . import _ort
from ._proto.v1 import codec_pb2
from .codes import array_to_tensor, tensor_to_array
from .errors import CodesError, FingerprintMismatch, InputError, IntegrityError, PackageError
from .manifest import FINGERPRINT_KEY, Manifest, TensorSpec, compute_fingerprint

log = logging.getLogger("latentwire.runtime")

DEFAULT_BATCH = 4096


def _check_samples(
    array: Any, spec: TensorSpec, *, what: str, allow_int: bool = True
) -> np.ndarray:
    """Validate a batch against a per-sample spec; return it as float32."""
    arr = np.asarray(array)
    kind = arr.dtype.kind
    if kind not in "fiu" or (kind in "iu" and not allow_int):
        allowed = "a real numeric dtype (float or integer)" if allow_int else "a float dtype"
        raise InputError(f"{what} must have {allowed}, got dtype {arr.dtype}")
    if arr.ndim != len(spec.shape) + 1:
        hint = " (add a batch axis: x[None])" if arr.ndim == len(spec.shape) else ""
        raise InputError(
            f"{what} must have shape (batch, {spec.describe().split(')')[0][1:]}), "
            f"got {arr.shape}{hint}"
        )
    for axis, (got, want) in enumerate(zip(arr.shape[1:], spec.shape, strict=True), start=1):
        if want is None:
            if got <= 0 or got % spec.multiple_of:
                raise InputError(
                    f"{what} axis {axis} is {got}; it must be a positive multiple of "
                    f"{spec.multiple_of}"
                )
        elif got != want:
            raise InputError(
                f"{what} has {got} values on axis {axis}; the model expects {want} "
                f"(samples of shape {spec.describe()}, got {arr.shape[1:]})"
            )
    arr = arr.astype(np.float32, copy=False)
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        n = int(np.count_nonzero(~np.isfinite(arr)))
        raise InputError(
            f"{what} holds {n} NaN/Inf value(s), the first at index {tuple(int(i) for i in bad)}"
        )
    return arr


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def read_verified(path: Path, manifest: Manifest, role: str) -> bytes:
    """Read a package's graph file, checking its sha256 against the manifest."""
    entry = manifest.files[role]
    file = path / entry["path"]
    try:
        blob: bytes = file.read_bytes()
    except OSError as exc:
        raise PackageError(f"cannot read {file}: {exc.strerror}") from None
    digest = hashlib.sha256(blob).hexdigest()
    if digest != entry["sha256"]:
        raise IntegrityError(
            f"{file} has sha256 {digest[:16]}..., the manifest expects "
            f"{entry['sha256'][:16]}...: the file was changed after export"
        )
    return blob


ROLES = ("encoder", "decoder")


class Model:
    """A loaded model package: verified files, one ONNX Runtime session per graph.

    `roles` picks the graphs to load: an edge device that only encodes needs a package
    with just `encoder.onnx` and `manifest.json`, and loads `roles=("encoder",)`.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        providers: _ort.Providers = "auto",
        threads: int = 0,
        batch_size: int = DEFAULT_BATCH,
        roles: tuple[str, ...] = ROLES,
    ) -> None:
        self.path = Path(path)
        self.manifest = Manifest.load(self.path)
        self.batch_size = batch_size
        m = self.manifest
        if compute_fingerprint(m.raw) != m.fingerprint:
            raise IntegrityError(
                f"{self.path}: manifest fingerprint {m.fingerprint} does not match its contents "
                "(the manifest was edited after export)"
            )
        if not roles or any(r not in ROLES for r in roles):
            raise ValueError(f"roles must be a non-empty subset of {ROLES}, got {roles}")
        blobs = {role: read_verified(self.path, m, role) for role in roles}
        self._sessions = {
            role: _ort.create_session(blob, providers, threads=threads, label=f"{m.name} {role}")
            for role, blob in blobs.items()
        }
        for role, sess in self._sessions.items():
            meta = sess.get_modelmeta().custom_metadata_map.get(FINGERPRINT_KEY)
            if meta != m.fingerprint:
                raise IntegrityError(
                    f"{self.path}: {role}.onnx carries fingerprint {meta!r}, manifest says "
                    f"{m.fingerprint!r}"
                )
        self.providers = next(iter(self._sessions.values())).get_providers()

    # -- properties ---------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def fingerprint(self) -> str:
        return self.manifest.fingerprint

    def __repr__(self) -> str:
        m = self.manifest
        return (
            f"Model({m.name!r}, fingerprint={m.fingerprint}, input={m.input.describe()}, "
            f"latent={m.latent.describe()}, providers={self.providers[0]})"
        )

    # -- arrays -------------------------------------------------------------------------
    def _run(self, role: str, feed: str, out: str, arr: np.ndarray) -> np.ndarray:
        sess = self._sessions.get(role)
        if sess is None:
            raise PackageError(
                f"{self.path}: the {role} was not loaded (roles={tuple(self._sessions)})"
            )
        parts = [sess.run([out], {feed: arr[s]})[0] for s in _chunks(len(arr), self.batch_size)]
        if not parts:
            return np.zeros(
                (0, *[0 if d is None else d for d in self._out_shape(role)]), np.float32
            )
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _out_shape(self, role: str) -> tuple[int | None, ...]:
        return (self.manifest.latent if role == "encoder" else self.manifest.output).shape

    def encode(self, x: Any) -> np.ndarray:
        """Encode a batch (N, *input shape) in the user's units; returns float32 latents."""
        m = self.manifest
        arr = _check_samples(x, m.input, what="input")
        return self._run("encoder", m.input.name, m.latent.name, m.normalization.forward(arr))

    def decode(self, z: Any) -> np.ndarray:
        """Decode latents (N, *latent shape); returns reconstructions in the user's units."""
        m = self.manifest
        arr = _check_samples(z, m.latent, what="latents", allow_int=False)
        out = self._run("decoder", m.latent.name, m.output.name, arr)
        return m.normalization.inverse(out)

    # -- codes messages -----------------------------------------------------------------
    def to_codes(self, z: np.ndarray) -> codec_pb2.Codes:
        """Wrap latents of this model in a Codes message."""
        return codec_pb2.Codes(
            model_name=self.name,
            fingerprint=self.fingerprint,
            format=self.manifest.code_format,
            count=len(z),
            tensor=array_to_tensor(np.asarray(z, dtype=np.float32)),
        )

    def from_codes(self, msg: codec_pb2.Codes) -> np.ndarray:
        """Latents from a Codes message, after checking it was made by this model's encoder."""
        if msg.fingerprint != self.fingerprint:
            raise FingerprintMismatch(
                f"codes were made by model {msg.model_name or '?'!r} with fingerprint "
                f"{msg.fingerprint or '(none)'}; this is {self.name!r} with fingerprint "
                f"{self.fingerprint}"
            )
        if msg.format != self.manifest.code_format:
            raise CodesError(
                f"codes have format {msg.format!r}; model {self.name!r} uses "
                f"{self.manifest.code_format!r}"
            )
        z = tensor_to_array(msg.tensor)
        if z.ndim == 0 or z.shape[0] != msg.count:
            raise CodesError(f"codes say count={msg.count} but the tensor has shape {z.shape}")
        return z

    def encode_codes(self, x: Any, chunk: int = 65536) -> Iterator[codec_pb2.Codes]:
        """Encode a batch into one Codes message per `chunk` samples."""
        arr = np.asarray(x)
        for s in _chunks(len(arr), chunk) if len(arr) else [slice(0, 0)]:
            yield self.to_codes(self.encode(arr[s]))

    def decode_codes(self, messages: Iterable[codec_pb2.Codes]) -> np.ndarray:
        """Decode Codes messages (e.g. a codes file) into one array of reconstructions."""
        parts = [self.decode(self.from_codes(msg)) for msg in messages]
        if not parts:
            raise CodesError("no codes to decode")
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def load(
    path: str | Path,
    *,
    providers: _ort.Providers = "auto",
    threads: int = 0,
    roles: tuple[str, ...] = ROLES,
) -> Model:
    """Load and verify a model package directory (both graphs, or only `roles`)."""
    return Model(path, providers=providers, threads=threads, roles=roles)
