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
from .anomaly import MAX_ANOMALY_BYTES, RECON, Detector, ScoreResult, load_arrays, recon_error
from .errors import CodesError, FingerprintMismatch, InputError, IntegrityError, PackageError
from .formats import CODES_OUTPUT, CodeFormat
from .manifest import (
    ANOMALY,
    FINGERPRINT_KEY,
    ROLES,
    SCORER,
    Manifest,
    TensorSpec,
    compute_fingerprint,
    package_file,
    read_package_file,
)

log = logging.getLogger("latentwire.runtime")

DEFAULT_BATCH = 4096
"""Samples per ONNX Runtime call (bounds memory for large inputs)."""
MESSAGE_BYTES = 1 << 20
"""Default payload bound of one Codes message (gRPC's default receive limit is 4 MiB)."""
_F32_MAX = float(np.finfo(np.float32).max)
SCORE_OUTPUT = "score"
"""The scorer graph's third output: reconstruction error per sample (see runtime/anomaly.py)."""


def first_nonfinite(arr: np.ndarray) -> tuple[int, tuple[int, ...]] | None:
    """(count, index of the first) NaN/Inf values, or None when all are finite."""
    bad = ~np.isfinite(arr)
    if not bad.any():
        return None
    return int(bad.sum()), tuple(int(i) for i in np.argwhere(bad)[0])


def _as_float32(arr: np.ndarray, *, overflow: str) -> np.ndarray:
    """Cast to float32, refusing values past float32's range instead of turning them into
    inf. Only dtypes wider than float32 can overflow, so only they pay for the check."""
    if arr.dtype.kind == "f" and arr.dtype.itemsize > 4 and np.abs(arr).max(initial=0.0) > _F32_MAX:
        raise InputError(overflow)
    return arr.astype(np.float32, copy=False)


def _check_batch(array: Any, spec: TensorSpec, *, what: str, allow_int: bool) -> np.ndarray:
    """Validate dtype and shape of a batch against a per-sample spec (values untouched)."""
    arr = np.asarray(array)
    kind = arr.dtype.kind
    if kind not in "fiub" or (kind in "iub" and not allow_int):
        allowed = "a real numeric dtype (float, integer or bool)" if allow_int else "a float dtype"
        raise InputError(f"{what} must have {allowed}, got dtype {arr.dtype}")
    if arr.ndim != len(spec.shape) + 1:
        hint = " (add a batch axis: x[None])" if arr.ndim == len(spec.shape) else ""
        raise InputError(f"{what} must have shape (batch, {spec.dims()}), got {arr.shape}{hint}")
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
                f"(samples of shape ({spec.dims()}), got {arr.shape[1:]})"
            )
    bad = first_nonfinite(arr) if kind == "f" else None
    if bad is not None:
        raise InputError(f"{what} holds {bad[0]} NaN/Inf value(s), the first at index {bad[1]}")
    return arr


MAX_GRAPH_BYTES = 1 << 30
"""Largest graph file loaded by default (ONNX protobuf itself stops at 2 GiB; this
project's graphs are kilobytes to megabytes); `Model(max_graph_bytes=...)` changes it."""


def read_verified(
    path: Path, manifest: Manifest, role: str, *, max_bytes: int = MAX_GRAPH_BYTES
) -> bytes:
    """Read a package's graph file: a regular file inside the package folder (symlinks
    resolved), at most `max_bytes`, with the sha256 the manifest names, and a single-file
    ONNX graph (no external data, see `check_graph`)."""
    blob = read_checked(path, manifest, role, max_bytes, label=f"{role} graph")
    check_graph(blob, path / manifest.files[role]["path"])
    return blob


def read_checked(
    path: Path, manifest: Manifest, role: str, max_bytes: int, *, label: str | None = None
) -> bytes:
    """Read any package file (a graph, anomaly.npz): a regular file inside the package
    folder, at most `max_bytes`, with the sha256 the manifest names."""
    entry = manifest.files[role]
    shown = path / entry["path"]
    try:
        blob = read_package_file(package_file(path, entry["path"]), max_bytes)
    except OSError as exc:
        raise PackageError(f"cannot read {shown}: {exc.strerror}") from None
    except PackageError as exc:
        if label is None:
            raise
        raise PackageError(f"{label}: {exc}") from None
    digest = hashlib.sha256(blob).hexdigest()
    if digest != entry["sha256"]:
        raise IntegrityError(
            f"{shown} has sha256 {digest[:16]}..., the manifest expects "
            f"{entry['sha256'][:16]}...: the file was changed after export"
        )
    return blob


# -- what a graph may hold: a minimal walk of the ONNX protobuf (no onnx import) ----------
class _Malformed(Exception):
    """The bytes are not valid protobuf."""


_TENSOR, _SPARSE, _GRAPH, _NODE, _ATTR, _FUNC, _TRAIN, _MODEL = range(8)
_KINDS = (
    "TensorProto",
    "SparseTensorProto",
    "GraphProto",
    "NodeProto",
    "AttributeProto",
    "FunctionProto",
    "TrainingInfoProto",
    "ModelProto",
)
_SUBMESSAGES: dict[int, dict[int, int]] = {
    # every field of onnx.proto that holds (a message that can hold) a TensorProto;
    # tests/test_package_safety.py checks these numbers against onnx's own descriptors
    _MODEL: {7: _GRAPH, 20: _TRAIN, 25: _FUNC},
    _GRAPH: {1: _NODE, 5: _TENSOR, 15: _SPARSE},
    _NODE: {5: _ATTR},
    _ATTR: {5: _TENSOR, 6: _GRAPH, 10: _TENSOR, 11: _GRAPH, 22: _SPARSE, 23: _SPARSE},
    _SPARSE: {1: _TENSOR, 2: _TENSOR},
    _FUNC: {7: _NODE, 11: _ATTR},
    _TRAIN: {1: _GRAPH, 2: _GRAPH},
    _TENSOR: {},
}
_TENSOR_NAME, _EXTERNAL_DATA, _DATA_LOCATION = 8, 13, 14
_MAX_NESTING = 100
"""protobuf's own default recursion limit"""


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise _Malformed(f"a varint runs past the end of its message at byte {pos}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _Malformed(f"a varint longer than 10 bytes ends at byte {pos}")


def _field(buf: memoryview, pos: int, end: int, depth: int) -> tuple[int, int, int, int, int]:
    """The field at `pos`: (number, wire type, a, b, where the next field starts). A varint
    comes as a = its value; a length-delimited field as buf[a:b]; a group is skipped whole;
    an end-group key (wire type 4) is returned for the caller to match."""
    key, pos = _varint(buf, pos, end)
    field, wire = key >> 3, key & 7
    if not 0 < field < 1 << 29:
        raise _Malformed(f"field number {field} at byte {pos}")
    a = b = pos
    if wire == 0:
        a, pos = _varint(buf, pos, end)
    elif wire == 1 or wire == 5:
        pos += 8 if wire == 1 else 4
    elif wire == 2:
        size, a = _varint(buf, pos, end)
        pos = b = a + size
    elif wire == 3:
        pos = _skip_group(buf, pos, end, field, depth + 1)
    elif wire != 4:
        raise _Malformed(f"wire type {wire} of field {field} at byte {pos}")
    if pos > end:
        raise _Malformed(f"field {field} runs past the end of its message")
    return field, wire, a, b, pos


def _fields(buf: memoryview, pos: int, end: int, depth: int) -> Iterator[tuple[int, int, int, int]]:
    """(number, wire type, a, b) of each field of the message in buf[pos:end]."""
    while pos < end:
        field, wire, a, b, pos = _field(buf, pos, end, depth)
        if wire == 4:
            raise _Malformed(f"field {field} ends a group that never started")
        yield field, wire, a, b


def _skip_group(buf: memoryview, pos: int, end: int, group: int, depth: int) -> int:
    """Where the group `group` that starts at `pos` ends."""
    if depth > _MAX_NESTING:
        raise _Malformed(f"groups nested more than {_MAX_NESTING} deep")
    while pos < end:
        field, wire, _, _, pos = _field(buf, pos, end, depth)
        if wire == 4:
            if field != group:
                raise _Malformed(f"group {group} is closed by field {field}")
            return pos
    raise _Malformed(f"group {group} is not closed")


class _External(Exception):
    def __init__(self, name: str, location: str) -> None:
        super().__init__(name, location)
        self.name, self.location = name, location


def _walk(buf: memoryview, pos: int, end: int, kind: int, depth: int) -> None:
    """Walk one message of type `kind`, raising _External at the first tensor whose data
    lies outside the graph file, _Malformed at bytes that are not protobuf."""
    if depth > _MAX_NESTING:
        raise _Malformed(f"messages nested more than {_MAX_NESTING} deep")
    subs = _SUBMESSAGES[kind]
    name, location, external = "", "", False
    for field, wire, start, stop in _fields(buf, pos, end, depth):
        if wire == 2 and field in subs:
            _walk(buf, start, stop, subs[field], depth + 1)
        elif kind == _TENSOR:
            if field == _DATA_LOCATION and wire == 0 and start != 0:
                external = True
            elif field == _EXTERNAL_DATA and wire == 2:
                external = True
                for key_field, key_wire, a, b in _fields(buf, start, stop, depth + 1):
                    if key_field == 2 and key_wire == 2:
                        location = location or bytes(buf[a:b]).decode("utf-8", "replace")
            elif field == _TENSOR_NAME and wire == 2:
                name = bytes(buf[start:stop]).decode("utf-8", "replace")
    if external:
        raise _External(name, location)


def check_graph(blob: bytes, file: Path | str) -> None:
    """Refuse a graph that ONNX Runtime would not load from these bytes alone.

    A package holds single-file ONNX graphs: any tensor with external data (a `location`
    ONNX Runtime would open relative to the working directory, `../` and absolute paths
    included: the CVE-2024-27318 class) is refused, as are ORT-format models and bytes
    that are not protobuf. This walks the protobuf wire format along the fields of
    onnx.proto that can hold tensors (graphs, nodes' attributes, subgraphs, functions,
    training info); it imports no onnx.
    """
    if blob[4:8] == b"ORTM":
        raise PackageError(f"{file} is an ORT-format model; a package holds ONNX graphs")
    try:
        _walk(memoryview(blob), 0, len(blob), _MODEL, 0)
    except _External as ext:
        raise PackageError(
            f"{file}: tensor {ext.name!r} keeps its data in an external file "
            f"{ext.location!r}; a model package holds single-file graphs (no external data)"
        ) from None
    except _Malformed as exc:
        raise PackageError(
            f"{file} is not an ONNX graph ({exc}): ONNX Runtime {_ort.ort.__version__} "  # type: ignore[attr-defined]
            "cannot load the graph"
        ) from None


class Model:
    """A loaded model package: verified files, one ONNX Runtime session per graph.

    `roles` picks the graphs to load: an edge device that only encodes needs a package
    with just `encoder.onnx` and `manifest.json`, and loads `roles=("encoder",)`. A package
    exported with `--edge-score` also has `scorer.onnx` (the encoder plus the decoder and
    the reconstruction error): `roles=("scorer",)` encodes and scores in one call.

    A package trained with `--task anomaly` carries its detector (`self.detector`, see
    runtime/anomaly.py), loaded and checked with the graphs; None otherwise.

    Nothing reaches ONNX Runtime before the whole package is checked: the manifest (sizes
    included), files that stay inside the package folder (and inside `root`, the model
    repository, when given), graphs of at most `max_graph_bytes` with the manifest's
    sha256 and no external data.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        providers: _ort.Providers = "auto",
        threads: int = 0,
        batch_size: int = DEFAULT_BATCH,
        roles: tuple[str, ...] = ROLES,
        root: str | Path | None = None,
        max_graph_bytes: int = MAX_GRAPH_BYTES,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not roles or any(r not in (*ROLES, SCORER) for r in roles):
            raise ValueError(f"roles must be a non-empty subset of {(*ROLES, SCORER)}, got {roles}")
        self.path = Path(path)
        self.manifest = m = Manifest.load(self.path, root=root)
        if SCORER in roles and SCORER not in m.files:
            raise PackageError(
                f"{self.path} has no scorer graph: train it with `--task anomaly --edge-score`"
            )
        self.batch_size = batch_size
        if compute_fingerprint(m.raw) != m.fingerprint:
            raise IntegrityError(
                f"{self.path}: manifest fingerprint {m.fingerprint} does not match its contract "
                "fields (the manifest was edited after export)"
            )
        blobs = {
            role: read_verified(self.path, m, role, max_bytes=max_graph_bytes) for role in roles
        }
        self._sessions = {
            role: _ort.create_session(blob, providers, threads=threads, label=f"{m.name} {role}")
            for role, blob in blobs.items()
        }
        del blobs
        io_names = {
            "encoder": (m.input.name, CODES_OUTPUT, m.latent.name),
            "decoder": (m.latent.name, m.output.name),
            SCORER: (m.input.name, CODES_OUTPUT, m.latent.name, SCORE_OUTPUT),
        }
        for role, sess in self._sessions.items():
            meta = sess.get_modelmeta().custom_metadata_map.get(FINGERPRINT_KEY)
            if meta != m.fingerprint:
                raise IntegrityError(
                    f"{self.path}: {role}.onnx carries fingerprint {meta!r}, manifest says "
                    f"{m.fingerprint!r}"
                )
            names = (sess.get_inputs()[0].name, *(o.name for o in sess.get_outputs()))
            if names != io_names[role]:
                raise PackageError(
                    f"{self.path}: {role}.onnx maps {names[0]} -> {', '.join(names[1:])}, the "
                    f"manifest says {io_names[role][0]} -> {', '.join(io_names[role][1:])}"
                )
        self.providers = next(iter(self._sessions.values())).get_providers()
        self.detector: Detector | None = self._load_detector(max_graph_bytes, tuple(roles))

    def _load_detector(self, max_bytes: int, roles: tuple[str, ...]) -> Detector | None:
        """The package's anomaly detector (sha256-checked npz, no pickle), or None. An
        encoder-only device folder (what `fetch-encoder` writes) may leave the npz out: the
        server that scores its codes has it."""
        m = self.manifest
        if ANOMALY not in m.raw:
            return None
        if roles == ("encoder",) and not (self.path / m.files[ANOMALY]["path"]).exists():
            log.debug("%s: no %s here; codes are scored by the server", self.path, ANOMALY)
            return None
        blob = read_checked(self.path, m, ANOMALY, min(max_bytes, MAX_ANOMALY_BYTES))
        try:
            shown = str(self.path / m.files[ANOMALY]["path"])
            return Detector.from_package(m.raw[ANOMALY], load_arrays(blob, shown))
        except PackageError as exc:
            raise PackageError(f"{self.path}: {exc}") from None

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
        if sess is None and role == "encoder":  # the scorer graph encodes too
            sess = self._sessions.get(SCORER)
        if sess is None:
            raise PackageError(
                f"{self.path}: the {role} was not loaded (roles={tuple(self._sessions)})"
            )
        if len(arr) <= self.batch_size:  # ONNX Runtime handles an empty batch itself
            result: np.ndarray = sess.run([out], {feed: arr})[0]
            return result
        parts = [
            sess.run([out], {feed: arr[s : s + self.batch_size]})[0]
            for s in range(0, len(arr), self.batch_size)
        ]
        return np.concatenate(parts)

    @property
    def codes(self) -> CodeFormat:
        return self.manifest.codes

    def encode(self, x: Any) -> np.ndarray:
        """Encode a batch (N, *input shape) in the user's units; returns the codes as the
        format puts them on the wire: float32 (f32), float16 (f16), int8 (int8) or int32
        symbols (entropy)."""
        w = self.run_encoder(self.prepare_inputs(x))
        self.check_latents_out(w)
        return w

    def encode_latents(self, x: Any) -> np.ndarray:
        """The float32 latents before quantisation (the encoder graph's second output)."""
        m = self.manifest
        z = self._run("encoder", m.input.name, m.latent.name, self.prepare_inputs(x))
        self.check_latents_out(z)
        return z

    def decode(self, w: Any) -> np.ndarray:
        """Decode codes (N, *latent shape) of the package's format (see `encode`), or
        float latents for f32/f16; returns reconstructions in the user's units."""
        return self.run_decoder(self.prepare_codes(w))

    # The four steps of encode/decode, separate so a server can validate each request on
    # its own and run many requests' checked arrays as one batch.
    def prepare_inputs(self, x: Any) -> np.ndarray:
        """Check a batch of samples in the user's units; return normalised float32."""
        m = self.manifest
        arr = _check_batch(x, m.input, what="input", allow_int=True)
        return _as_float32(
            m.normalization.forward(arr),
            overflow="input holds values so far outside the data the model was trained on "
            "that they overflow float32 after normalisation",
        )

    def run_encoder(self, normed: np.ndarray) -> np.ndarray:
        """Run the encoder graph on prepared inputs (no checks); returns wire codes."""
        return self._run("encoder", self.manifest.input.name, CODES_OUTPUT, normed)

    @staticmethod
    def check_latents_out(w: np.ndarray) -> None:
        """Refuse non-finite codes: they come from inputs far outside the training data."""
        bad = first_nonfinite(w) if w.dtype.kind == "f" else None
        if bad is not None:
            raise InputError(
                f"the encoder produced {bad[0]} non-finite code value(s) (first at {bad[1]}): "
                "the input is far outside the data the model was trained on"
            )

    def prepare_codes(self, w: Any) -> np.ndarray:
        """Check a batch of codes (shape, dtype, range, NaN/Inf); return float32 latents."""
        fmt = self.manifest.codes
        arr = _check_batch(w, self.manifest.latent, what="codes", allow_int=fmt.integer)
        return fmt.dequantize(fmt.check_wire(arr))

    def run_decoder(self, z: np.ndarray) -> np.ndarray:
        """Run the decoder graph on checked float32 latents; returns the user's units."""
        m = self.manifest
        return m.normalization.inverse(self._run("decoder", m.latent.name, m.output.name, z))

    # -- anomaly scores -----------------------------------------------------------------
    def _need_detector(self) -> Detector:
        if self.detector is None:
            raise InputError(
                f"model {self.name!r} was not trained for anomaly detection: train it with "
                "`latentwire train --task anomaly`"
            )
        return self.detector

    @property
    def can_score_recon(self) -> bool:
        """Whether `score` can compute the reconstruction error (a loaded decoder or
        scorer graph, and a package that calibrated it)."""
        det = self.detector
        loaded = SCORER in self._sessions or {"decoder"} <= set(self._sessions)
        return det is not None and RECON in det.scores and loaded

    def score(self, x: Any, score: str | None = None, *, fpr: float | None = None) -> ScoreResult:
        """Anomaly scores of samples in the user's units: `score` names one of the
        package's scores (default: "recon" when the decoder or scorer graph is loaded,
        else the package's default code density); `fpr` re-thresholds from the held-out
        scores instead of the stored threshold."""
        det = self._need_detector()
        name = score or (RECON if self.can_score_recon else det.default_codes_score)
        det.threshold_for(name)  # unknown names fail before any work
        normed = self.prepare_inputs(x)
        if name == RECON:
            return det.result(RECON, self._recon_scores(normed), fpr)
        return det.score_latents(self._latents_of(self.run_encoder(normed)), name, fpr=fpr)

    def encode_scored(
        self, x: Any, score: str | None = None, *, fpr: float | None = None
    ) -> tuple[np.ndarray, ScoreResult]:
        """Wire codes (as `encode`) and their anomaly scores (as `score`), with one ONNX
        Runtime call when the scorer graph is loaded."""
        det = self._need_detector()
        normed = self.prepare_inputs(x)
        name = score or (RECON if self.can_score_recon else det.default_codes_score)
        det.threshold_for(name)
        if SCORER in self._sessions:
            m = self.manifest
            w, recon = self._sessions[SCORER].run(
                [CODES_OUTPUT, SCORE_OUTPUT], {m.input.name: normed}
            )
            self.check_latents_out(w)
            if name == RECON:
                return w, det.result(RECON, recon.astype(np.float64), fpr)
        else:
            w = self.run_encoder(normed)
            self.check_latents_out(w)
            if name == RECON:
                return w, det.result(RECON, self._recon_scores(normed, w), fpr)
        return w, det.score_latents(self._latents_of(w), name, fpr=fpr)

    def _latents_of(self, w: np.ndarray) -> np.ndarray:
        """Wire codes -> the float latents the decoder (and the densities) see."""
        self.check_latents_out(w)
        return self.manifest.codes.dequantize(w)

    def _recon_scores(self, normed: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
        """Reconstruction error per sample in model units, through the codes as a server
        decodes them (the scorer graph computes the same in one call)."""
        m = self.manifest
        if SCORER in self._sessions and w is None:
            scores: np.ndarray = self._run(SCORER, m.input.name, SCORE_OUTPUT, normed)
            return scores.astype(np.float64)
        if "decoder" not in self._sessions:
            raise InputError(
                f"the reconstruction score needs the decoder or the scorer graph; loaded: "
                f"{', '.join(self._sessions)}"
            )
        z = self._latents_of(self.run_encoder(normed) if w is None else w)
        return recon_error(normed, self._run("decoder", m.latent.name, m.output.name, z))

    # -- codes messages -----------------------------------------------------------------
    def to_codes(
        self, w: np.ndarray, input_shape: tuple[int, ...] | None = None
    ) -> codec_pb2.Codes:
        """Wrap wire codes of this model (from `encode`) in a Codes message; `input_shape`
        records the per-sample shape before padding (see `pad_inputs`)."""
        msg = codec_pb2.Codes(
            model_name=self.name,
            fingerprint=self.fingerprint,
            format=self.manifest.code_format,
            count=len(w),
        )
        self.manifest.codes.pack(w, msg)
        if input_shape is not None:
            msg.input_shape[:] = list(input_shape)
        return msg

    def from_codes(self, msg: codec_pb2.Codes) -> np.ndarray:
        """Wire codes from a Codes message, after checking it was made by this model's
        encoder and is intact (format tag, dtype, shape; an entropy stream decodes fully)."""
        if msg.fingerprint != self.fingerprint:
            raise FingerprintMismatch(
                f"codes were made by model {msg.model_name or '?'!r} with fingerprint "
                f"{msg.fingerprint or '(none)'}; this is {self.name!r} with fingerprint "
                f"{self.fingerprint}"
            )
        m = self.manifest
        if msg.format != m.code_format:
            raise CodesError(
                f"codes have format {msg.format!r}; model {self.name!r} uses {m.code_format!r}"
            )
        return m.codes.unpack(msg)

    def pad_inputs(self, x: Any) -> tuple[np.ndarray, tuple[int, ...] | None]:
        """Images whose sides are not multiples of the model's stride, padded up to them by
        repeating the edge pixels; returns (padded, original per-sample shape) or (x, None)
        when no padding is needed."""
        arr = np.asarray(x)
        spec = self.manifest.input
        m = spec.multiple_of
        if arr.ndim != len(spec.shape) + 1 or m == 1:
            return arr, None
        pads = [(0, 0)]
        for got, want in zip(arr.shape[1:], spec.shape, strict=True):
            pads.append((0, -got % m) if want is None and got > 0 else (0, 0))
        if not any(p for _, p in pads):
            return arr, None
        return np.pad(arr, pads, mode="edge"), tuple(int(s) for s in arr.shape[1:])

    def crop_outputs(self, x_hat: np.ndarray, msg: codec_pb2.Codes) -> np.ndarray:
        """Reconstructions cut back to the message's `input_shape` (when it was padded)."""
        if not msg.input_shape:
            return x_hat
        return self.crop(x_hat, tuple(int(s) for s in msg.input_shape))

    def crop(self, x_hat: np.ndarray, shape: tuple[int, ...] | None) -> np.ndarray:
        """Reconstructions of padded samples cut back to the per-sample `shape` they had
        before `pad_inputs` (None: nothing was padded)."""
        if shape is None:
            return x_hat
        spec = self.manifest.output
        # only free sides (images) are ever padded; a fixed one must come back whole
        fits = len(shape) == x_hat.ndim - 1 and all(
            s == got if want is not None else 0 < s <= got and got - s < spec.multiple_of
            for s, got, want in zip(shape, x_hat.shape[1:], spec.shape, strict=True)
        )
        if not fits:
            raise CodesError(
                f"codes say the samples had shape {list(shape)} before padding; the decoded "
                f"samples have shape {list(x_hat.shape[1:])} (padding adds less than "
                f"{spec.multiple_of} per side)"
            )
        return np.ascontiguousarray(x_hat[(slice(None), *(slice(0, s) for s in shape))])

    def encode_codes(
        self, x: Any, *, max_message_bytes: int = MESSAGE_BYTES, chunk: int | None = None
    ) -> Iterator[codec_pb2.Codes]:
        """Encode a batch into Codes messages of at most `chunk` samples, or else as many
        as fit in `max_message_bytes` of code payload (at least one sample each). Images
        of a size the model cannot take directly are padded (see `pad_inputs`)."""
        if chunk is not None and chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        padded, original = self.pad_inputs(x)
        w = self.encode(padded)
        per_sample = max(1, w[:1].nbytes)  # entropy: symbols' size, an upper bound
        step = chunk or max(1, max_message_bytes // per_sample)
        for start in range(0, max(len(w), 1), step):
            yield self.to_codes(w[start : start + step], original)

    def decode_codes(self, messages: Iterable[codec_pb2.Codes]) -> np.ndarray:
        """Decode Codes messages (e.g. a codes file) into one array of reconstructions."""
        parts = [self.crop_outputs(self.decode(self.from_codes(m)), m) for m in messages]
        if not parts:
            raise CodesError("no codes to decode")
        if len({p.shape[1:] for p in parts}) > 1:
            raise CodesError(
                "the codes hold samples of different shapes (images of several sizes); "
                "decode them message by message"
            )
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def load(
    path: str | Path,
    *,
    providers: _ort.Providers = "auto",
    threads: int = 0,
    roles: tuple[str, ...] = ROLES,
    root: str | Path | None = None,
    max_graph_bytes: int = MAX_GRAPH_BYTES,
) -> Model:
    """Load and verify a model package directory (both graphs, or only `roles`); see
    `Model` for `root` and `max_graph_bytes`."""
    return Model(
        path,
        providers=providers,
        threads=threads,
        roles=roles,
        root=root,
        max_graph_bytes=max_graph_bytes,
    )
