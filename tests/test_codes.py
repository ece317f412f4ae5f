"""The codes message and the codes file: the wire contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from latentwire.runtime._proto.v1 import codec_pb2
from latentwire.runtime.codes import (
    MAGIC,
    array_to_tensor,
    read_codes_file,
    tensor_to_array,
    write_codes_file,
)
from latentwire.runtime.errors import CodesError

from .conftest import EXPECTED, GENERATE_EXPECTED


def _message() -> codec_pb2.Codes:
    z = (np.arange(12, dtype=np.float32).reshape(3, 4) - 5.5) / 4
    return codec_pb2.Codes(
        model_name="golden",
        fingerprint="0123456789abcdef",
        format="f32",
        count=3,
        tensor=array_to_tensor(z),
    )


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8", "uint8", "int32", "float64"])
def test_tensor_round_trip(dtype: str) -> None:
    a = (np.arange(24).reshape(2, 3, 4) - 7).astype(dtype)
    t = array_to_tensor(a)
    assert t.dtype == dtype and list(t.shape) == [2, 3, 4] and len(t.data) == a.nbytes
    np.testing.assert_array_equal(tensor_to_array(t), a)


def test_tensor_is_little_endian_raw_bytes() -> None:
    big = np.array([1.0, -2.0], dtype=">f4")
    t = array_to_tensor(big)
    assert t.data == np.array([1.0, -2.0], dtype="<f4").tobytes()


@pytest.mark.parametrize(
    ("dtype", "shape", "nbytes", "match"),
    [
        ("float32", [2, 3], 20, "needs 24 bytes, got 20"),
        ("complex64", [1], 8, "unknown tensor dtype"),
        ("float32", [-1, 3], 0, "negative dimension"),
        ("object", [1], 8, "unknown tensor dtype"),
        ("float32", [2**32, 2**32], 0, "needs 73786976294838206464 bytes, got 0"),
    ],
)
def test_malformed_tensor_is_refused(dtype: str, shape: list[int], nbytes: int, match: str) -> None:
    with pytest.raises(CodesError, match=match):
        tensor_to_array(codec_pb2.Tensor(dtype=dtype, shape=shape, data=b"\0" * nbytes))


def test_codes_file_matches_golden_bytes(tmp_path: Path) -> None:
    """The file framing and message encoding are a contract: changing them breaks old files."""
    path = tmp_path / "golden.codes"
    write_codes_file(path, [_message(), _message()])
    golden = EXPECTED / "codes_v1.bin"
    if GENERATE_EXPECTED:
        golden.write_bytes(path.read_bytes())
    assert path.read_bytes() == golden.read_bytes()
    assert path.read_bytes().startswith(MAGIC)


def test_codes_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "c.codes"
    size = write_codes_file(path, [_message(), _message()])
    assert size == path.stat().st_size
    msgs = read_codes_file(path)
    assert len(msgs) == 2 and msgs[0] == _message()
    np.testing.assert_array_equal(
        tensor_to_array(msgs[1].tensor), tensor_to_array(_message().tensor)
    )


def test_bad_codes_files(tmp_path: Path) -> None:
    good = tmp_path / "good.codes"
    write_codes_file(good, [_message()])
    data = good.read_bytes()
    cases = {
        "missing.codes": None,
        "notcodes.codes": b"hello world, not codes",
        "truncated.codes": data[:-5],
        "badprefix.codes": data[: len(MAGIC) + 2],
        "empty.codes": MAGIC,
        "garbage.codes": MAGIC + (7).to_bytes(4, "little") + b"\xff" * 7,
    }
    expected = {
        "missing.codes": "not found",
        "notcodes.codes": "not a latentwire codes file",
        "truncated.codes": "truncated",
        "badprefix.codes": "truncated length prefix",
        "empty.codes": "holds no codes",
        "garbage.codes": "not a Codes message",
    }
    for name, content in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(CodesError, match=expected[name]):
            read_codes_file(path)
