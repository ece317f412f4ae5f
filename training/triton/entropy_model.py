"""Triton Python-backend model `<name>.entropy_decode`: a latentwire entropy stream -> symbols.

`latentwire export-triton` copies this file into the repository as `model.py`, with the
package's manifest.json beside it (the frequency tables). One request carries one stream,
as one latentwire Codes message does (the model does not batch):

    inputs   stream        UINT8 [-1]   the entropy-coded bytes (Codes.tensor)
             count         INT32 [1]    samples in the stream (Codes.count)
             latent_shape  INT32 [-1]   per-sample latent shape, channels first, e.g. [8]
    output   <latent name> INT32 [count, *latent_shape]: the symbols `<name>.decoder` takes

The ensemble `<name>.stream_decoder` chains it with the decoder (stream -> reconstruction).
Decoding is latentwire.runtime's own (`CodeFormat.unpack`, the code latentwire's server
runs), so a stream decodes here exactly when it decodes there; a malformed one is refused
with latentwire's message. Triton's Python environment therefore needs latentwire:
`pip install 'latentwire[cpu]'` (numpy, constriction, onnxruntime; no torch).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from latentwire.runtime._proto.v1 import codec_pb2
from latentwire.runtime.codes import array_to_tensor
from latentwire.runtime.errors import CodesError, LatentwireError
from latentwire.runtime.formats import CodeFormat
from latentwire.runtime.manifest import Manifest

STREAM, COUNT, LATENT_SHAPE = "stream", "count", "latent_shape"


def load_format(folder: str | Path) -> tuple[CodeFormat, str]:
    """(code format, latent tensor name) of the manifest.json in `folder`."""
    manifest = Manifest.load(folder)
    if manifest.codes.name != "entropy":
        raise CodesError(f"{folder}: the package's codes are {manifest.codes.name}, not entropy")
    return manifest.codes, manifest.latent.name


def _one_int(value: np.ndarray, what: str) -> int:
    flat = np.asarray(value).reshape(-1)
    if flat.size != 1 or flat.dtype.kind not in "iu" or int(flat[0]) < 0:
        raise CodesError(f"{what} must be one non-negative integer, got {flat.tolist()!r:.60}")
    return int(flat[0])


def decode(
    fmt: CodeFormat, stream: np.ndarray, count: np.ndarray, latent_shape: np.ndarray
) -> np.ndarray:
    """int32 symbols (count, *latent_shape) of one request's arrays, decoded as latentwire's
    server decodes a Codes message; CodesError when the stream does not decode."""
    raw = np.asarray(stream)
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise CodesError(f"stream must be 1-D UINT8 bytes, got {raw.dtype} {list(raw.shape)}")
    shape = np.asarray(latent_shape).reshape(-1)
    if shape.dtype.kind not in "iu":
        raise CodesError(f"latent_shape must be integers, got {shape.dtype}")
    msg = codec_pb2.Codes(format="entropy", count=_one_int(count, COUNT))
    msg.latent_shape[:] = [int(s) for s in shape]
    msg.tensor.CopyFrom(array_to_tensor(raw))
    return fmt.unpack(msg)


class TritonPythonModel:
    """The Python backend's entry point (see triton-inference-server/python_backend)."""

    def initialize(self, args: dict[str, str]) -> None:
        folder = Path(args["model_repository"]) / args["model_version"]
        self.format, self.output = load_format(folder)
        config = json.loads(args["model_config"])
        self.name = str(config.get("name", "entropy_decode"))

    def execute(self, requests: list[Any]) -> list[Any]:
        import triton_python_backend_utils as pb

        responses = []
        for request in requests:
            arrays = [
                pb.get_input_tensor_by_name(request, n) for n in (STREAM, COUNT, LATENT_SHAPE)
            ]
            try:
                if any(a is None for a in arrays):
                    raise CodesError(
                        f"{self.name} needs the inputs {STREAM}, {COUNT}, {LATENT_SHAPE}"
                    )
                symbols = decode(self.format, *(a.as_numpy() for a in arrays))
            except LatentwireError as exc:
                responses.append(
                    pb.InferenceResponse(output_tensors=[], error=pb.TritonError(str(exc)))
                )
                continue
            responses.append(pb.InferenceResponse(output_tensors=[pb.Tensor(self.output, symbols)]))
        return responses
