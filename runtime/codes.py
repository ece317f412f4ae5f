"""Codes on the wire and on disk.

A batch of codes is a `latentwire.v1.Codes` protobuf message (proto/latentwire/v1/codec.proto):
model name, fingerprint, format tag, sample count and a raw little-endian tensor.

Codes file (what `latentwire encode` writes, `latentwire decode` reads)::

    b"LWCODES1"                          8-byte magic + format version
    repeated:
        uint32 little-endian  N          length of the next message
        N bytes                          a serialized latentwire.v1.Codes message

Large inputs are split into several messages (chunks); all of them carry the same model
name, fingerprint and format, and a reader concatenates them in order. The file holds
exactly the messages the gRPC service carries, so a file can be replayed to a server.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from ._proto.v1 import codec_pb2
from .errors import CodesError

__all__ = ["MAGIC", "array_to_tensor", "read_codes_file", "tensor_to_array", "write_codes_file"]

MAGIC = b"LWCODES1"
_LEN = struct.Struct("<I")
# dtypes allowed on the wire; anything else is refused before np.frombuffer sees it
WIRE_DTYPES = frozenset(
    {"float32", "float16", "float64", "int8", "uint8", "int16", "int32", "int64"}
)
MAX_DIMS = 32
"""Most dimensions a wire tensor may have (numpy's own limit is 64)."""
_MAX_NBYTES = int(np.iinfo(np.intp).max)
OUTPUT_DTYPES = ("float32", "float16")
"""Reconstruction dtypes a client may ask the server for (DecodeRequest.output_dtype)."""


def array_to_tensor(array: np.ndarray) -> codec_pb2.Tensor:
    """Pack an array as raw little-endian bytes with dtype and shape."""
    arr = np.ascontiguousarray(array)
    if arr.dtype.name not in WIRE_DTYPES:
        raise CodesError(
            f"dtype {arr.dtype} cannot travel on the wire; use one of {sorted(WIRE_DTYPES)}"
        )
    little = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
    return codec_pb2.Tensor(dtype=arr.dtype.name, shape=list(arr.shape), data=little.tobytes())


def tensor_to_array(tensor: codec_pb2.Tensor) -> np.ndarray:
    """Unpack a Tensor message, checking that dtype, shape and byte length agree."""
    if tensor.dtype not in WIRE_DTYPES:
        raise CodesError(
            f"unknown tensor dtype {tensor.dtype!r}; expected one of {sorted(WIRE_DTYPES)}"
        )
    shape = tuple(int(s) for s in tensor.shape)
    if len(shape) > MAX_DIMS:
        raise CodesError(f"tensor has {len(shape)} dimensions; at most {MAX_DIMS} are allowed")
    if any(s < 0 for s in shape):
        raise CodesError(f"tensor shape {shape} has a negative dimension")
    dtype = np.dtype(tensor.dtype).newbyteorder("<")
    expected = math.prod(shape) * dtype.itemsize  # exact: np.prod would wrap on huge shapes
    if len(tensor.data) != expected:
        raise CodesError(
            f"tensor of shape {shape} and dtype {tensor.dtype} needs {expected} bytes, "
            f"got {len(tensor.data)}"
        )
    if math.prod(max(s, 1) for s in shape) * dtype.itemsize > _MAX_NBYTES:
        # numpy refuses such a shape even with a zero dimension (ValueError)
        raise CodesError(f"tensor shape {list(shape)} is too large for an array")
    return np.frombuffer(tensor.data, dtype=dtype).reshape(shape).astype(dtype.name, copy=False)


def write_codes_file(path: str | Path, messages: Iterable[codec_pb2.Codes]) -> int:
    """Write messages to a codes file; returns the number of bytes written."""
    total = 0
    with open(path, "wb") as f:
        f.write(MAGIC)
        total += len(MAGIC)
        for msg in messages:
            payload = msg.SerializeToString()
            f.write(_LEN.pack(len(payload)))
            f.write(payload)
            total += _LEN.size + len(payload)
    return total


def iter_codes_file(path: str | Path) -> Iterator[codec_pb2.Codes]:
    """Yield the messages of a codes file, refusing anything that is not one."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed in finally below
    except FileNotFoundError:
        raise CodesError(f"codes file {path} not found") from None
    except OSError as exc:
        raise CodesError(f"cannot open codes file {path}: {exc.strerror}") from None
    try:
        size_on_disk = os.fstat(f.fileno()).st_size
        if f.read(len(MAGIC)) != MAGIC:
            raise CodesError(f"{path} is not a latentwire codes file (magic {MAGIC!r} missing)")
        index = 0
        while header := f.read(_LEN.size):
            if len(header) != _LEN.size:
                raise CodesError(f"{path}: truncated length prefix of message {index}")
            (size,) = _LEN.unpack(header)
            # never ask read() for more than the file holds: CPython allocates the whole
            # request up front, and a 15-byte file may claim a 4 GiB message
            payload = f.read(min(size, max(0, size_on_disk - f.tell())))
            if len(payload) != size:
                raise CodesError(
                    f"{path}: message {index} is truncated ({len(payload)} of {size} bytes)"
                )
            msg = codec_pb2.Codes()
            try:
                msg.ParseFromString(payload)
            except Exception as exc:  # protobuf raises DecodeError, a bare Exception subclass
                raise CodesError(f"{path}: message {index} is not a Codes message: {exc}") from None
            yield msg
            index += 1
        if index == 0:
            raise CodesError(f"{path} holds no codes")
    finally:
        f.close()


def read_codes_file(path: str | Path) -> list[codec_pb2.Codes]:
    return list(iter_codes_file(path))
