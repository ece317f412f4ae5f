"""Hand-encoded protobuf for the two hot replies: V2 `ModelInferResponse` and Codec
`DecodeResponse`.

Both end in a large raw tensor. Built the usual way, its bytes are copied three times in
Python (`tobytes()`, into the message, out of `SerializeToString()`); here the reply is
the small fields encoded once and the array's buffer joined on: one copy. The output is
plain protobuf wire format (field order as the .proto declares it), so any protobuf parser
reads it; tests/test_wire.py checks it against the generated classes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

_LEN = 2  # wire type of length-delimited fields


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = [_varint(n) for n in range(1 << 14)]  # one and two bytes: tags, names, shapes


def varint(n: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int (int64 fields: negatives are not
    used here, shapes and lengths never are)."""
    return _SMALL[n] if n < 1 << 14 else _varint(n)


def _key(field: int) -> bytes:
    return varint(field << 3 | _LEN)


def _string(field: int, text: str) -> bytes:
    """A string field, left out when empty (proto3's default)."""
    if not text:
        return b""
    data = text.encode()
    return _key(field) + varint(len(data)) + data


def _packed(field: int, values: Sequence[int]) -> bytes:
    body = b"".join(varint(v) for v in values)
    return _key(field) + varint(len(body)) + body


# field numbers, as in proto/latentwire/kserve/v2/inference.proto and v1/codec.proto
_OUT_NAME, _OUT_DATATYPE, _OUT_SHAPE = 1, 2, 3
_INFER_MODEL, _INFER_VERSION, _INFER_ID, _INFER_PARAMS, _INFER_OUTPUTS, _INFER_RAW = (
    1,
    2,
    3,
    4,
    5,
    6,
)
_MAP_KEY, _MAP_VALUE, _PARAM_STRING = 1, 2, 3  # map entry; InferParameter.string_param
_TENSOR_DTYPE, _TENSOR_SHAPE, _TENSOR_DATA = 1, 2, 3
_DECODE_ID, _DECODE_MODEL, _DECODE_VERSION, _DECODE_FP, _DECODE_RECON = 1, 2, 3, 4, 5


def _raw(array: np.ndarray) -> memoryview:
    """The array's bytes in little-endian C order, without copying when they already are."""
    arr = np.ascontiguousarray(array)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return arr.data.cast("B")


_heads: dict[tuple[object, ...], bytes] = {}
"""Reply prefixes by (fields..., shape): clients repeat the same model, id and batch size,
so most replies are a dict lookup and one join. Cleared when it grows past _MAX_HEADS."""
_MAX_HEADS = 4096


def _head(key: tuple[object, ...], build: Callable[[], bytes]) -> bytes:
    head = _heads.get(key)
    if head is None:
        if len(_heads) >= _MAX_HEADS:
            _heads.clear()
        head = _heads[key] = build()
    return head


def _string_parameter(field: int, key: str, value: str) -> bytes:
    """One entry of a `map<string, InferParameter>` field holding a string_param."""
    param = _string(_PARAM_STRING, value)
    entry = _string(_MAP_KEY, key) + _key(_MAP_VALUE) + varint(len(param)) + param
    return _key(field) + varint(len(entry)) + entry


def infer_response(
    model_name: str,
    version: str,
    request_id: str,
    output: str,
    datatype: str,
    y: np.ndarray,
    fingerprint: str = "",
) -> bytes:
    """ModelInferResponse with one output tensor `output` carried in raw_output_contents,
    and the parameter `fingerprint` (string) when one is given."""
    raw = _raw(y)

    def build() -> bytes:
        tensor = _string(_OUT_NAME, output) + _string(_OUT_DATATYPE, datatype)
        tensor += _packed(_OUT_SHAPE, y.shape)
        return b"".join(
            (
                _string(_INFER_MODEL, model_name),
                _string(_INFER_VERSION, version),
                _string(_INFER_ID, request_id),
                _string_parameter(_INFER_PARAMS, "fingerprint", fingerprint)
                if fingerprint
                else b"",
                _key(_INFER_OUTPUTS),
                varint(len(tensor)),
                tensor,
                _key(_INFER_RAW),
                varint(len(raw)),
            )
        )

    key = (
        "infer",
        model_name,
        version,
        request_id,
        output,
        datatype,
        y.shape,
        y.itemsize,
        fingerprint,
    )
    return b"".join((_head(key, build), raw))


def decode_response(
    request_id: str, model_name: str, version: str, fingerprint: str, x: np.ndarray
) -> bytes:
    """DecodeResponse whose reconstruction Tensor holds `x` (dtype name, shape, raw data)."""
    raw = _raw(x)

    def build() -> bytes:
        head = _string(_TENSOR_DTYPE, x.dtype.name) + _packed(_TENSOR_SHAPE, x.shape)
        data = _key(_TENSOR_DATA) + varint(len(raw))
        return b"".join(
            (
                _string(_DECODE_ID, request_id),
                _string(_DECODE_MODEL, model_name),
                _string(_DECODE_VERSION, version),
                _string(_DECODE_FP, fingerprint),
                _key(_DECODE_RECON),
                varint(len(head) + len(data) + len(raw)),
                head,
                data,
            )
        )

    key = ("decode", request_id, model_name, version, fingerprint, x.dtype.name, x.shape)
    return b"".join((_head(key, build), raw))
