"""Fuzzing codes files and Codes messages on the decoding side (no server).

A codes file or message of any bytes ends in a correct decode or a CodesError / InputError /
FingerprintMismatch: never another exception, and never a reconstruction of the wrong
shape. See tests/_fuzz.py for the budget and the long run.
"""

from __future__ import annotations

import struct
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from latentwire.runtime import CodesError, FingerprintMismatch, InputError, Model
from latentwire.runtime._proto.v1 import codec_pb2
from latentwire.runtime.codes import MAGIC, read_codes_file, tensor_to_array, write_codes_file
from latentwire.runtime.entropy import FactorizedPrior
from latentwire.runtime.formats import CodeFormat

from ._fuzz import codes_messages, fuzz, mutated, outcome, tensors

REFUSED = (CodesError, InputError, FingerprintMismatch)
COUNTS = (0, 1, 3, 17)


@pytest.fixture(scope="module")
def valid(local: Model, digits_x: np.ndarray) -> list[codec_pb2.Codes]:
    """Valid messages of the digits model, for 0, 1, 3 and 17 samples."""
    return [local.to_codes(local.encode(digits_x[:n])) for n in COUNTS]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-codes") / "x.codes"


def _check_decoded(local: Model, msgs: list[codec_pb2.Codes], out: Any) -> None:
    """A decode that succeeded gave one float32 row of 64 per sample, all finite."""
    if isinstance(out, BaseException):
        return
    assert out.shape == (sum(m.count for m in msgs), 64)
    assert out.dtype == np.float32 and np.all(np.isfinite(out))


# -- codes files ---------------------------------------------------------------------------
def test_a_tiny_file_claiming_a_huge_message_allocates_nothing_big(scratch: Path) -> None:
    """Found while writing the codes-file fuzz target (the fuzz cases hit it, but a
    lazily committed allocation fails nothing): the reader asked read() for the length
    prefix's bytes, and CPython's buffered read allocates them up front, 4 GiB for a
    15-byte file (MemoryError where memory is tight)."""
    scratch.write_bytes(MAGIC + struct.pack("<I", 0xFFFFFFF0) + b"abc")
    tracemalloc.start()
    try:
        with pytest.raises(CodesError, match=r"message 0 is truncated \(3 of 4294967280 bytes\)"):
            read_codes_file(scratch)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


@fuzz(300)
@given(data=st.data())
def test_mutated_codes_files(
    data: st.DataObject, local: Model, valid: list[codec_pb2.Codes], scratch: Path
) -> None:
    msgs = data.draw(st.lists(st.sampled_from(valid), min_size=1, max_size=3), label="messages")
    write_codes_file(scratch, msgs)
    blob = scratch.read_bytes()
    changed = data.draw(mutated(blob), label="file")
    scratch.write_bytes(changed)
    read = outcome(lambda: read_codes_file(scratch), CodesError)
    if isinstance(read, CodesError):
        assert str(scratch) in str(read)
        return
    out = outcome(lambda: local.decode_codes(read), *REFUSED)
    _check_decoded(local, read, out)
    if changed == blob:
        np.testing.assert_array_equal(out, local.decode_codes(msgs))


@st.composite
def _framed(draw: st.DrawFn, valid: list[codec_pb2.Codes]) -> bytes:
    """A codes file built frame by frame: each a (sometimes wrong) length prefix and a
    fuzzed Codes message or junk."""
    out = bytearray(draw(st.sampled_from([MAGIC, MAGIC, b"LWCODES2", b"", MAGIC[:5]])))
    names, fps = [valid[0].model_name], [valid[0].fingerprint]
    for _ in range(draw(st.integers(0, 3))):
        payload = draw(
            st.one_of(
                codes_messages(valid, names, fps).map(lambda m: m.SerializeToString()),
                st.binary(max_size=64),
            )
        )
        size = draw(st.one_of(st.just(len(payload)), st.integers(0, 2**32 - 1)))
        out += struct.pack("<I", size) + payload
    out += draw(st.one_of(st.just(b""), st.binary(max_size=3)))
    return bytes(out)


@fuzz(300)
@given(data=st.data())
def test_framed_codes_files(
    data: st.DataObject, local: Model, valid: list[codec_pb2.Codes], scratch: Path
) -> None:
    scratch.write_bytes(data.draw(_framed(valid), label="file"))
    read = outcome(lambda: read_codes_file(scratch), CodesError)
    if not isinstance(read, CodesError):
        _check_decoded(local, read, outcome(lambda: local.decode_codes(read), *REFUSED))


# -- Codes messages -----------------------------------------------------------------------
@fuzz(600)
@given(data=st.data())
def test_fuzzed_codes_messages(
    data: st.DataObject, local: Model, valid: list[codec_pb2.Codes]
) -> None:
    names, fps = [local.name, "other"], [local.fingerprint, "0123456789abcdef"]
    msg = data.draw(codes_messages(valid, names, fps), label="codes")
    out = outcome(lambda: local.decode_codes([msg]), *REFUSED)
    _check_decoded(local, [msg], out)
    if not isinstance(out, BaseException):
        # what decoded is the tensor it carries, read back exactly
        np.testing.assert_array_equal(out, local.decode(tensor_to_array(msg.tensor)))


def test_a_dense_model_refuses_a_crop(local: Model, valid: list[codec_pb2.Codes]) -> None:
    """Found reviewing `crop` for the message fuzz target (which now catches it, a few
    cases in 600): input_shape [5] on codes of a dense 64-value model cropped the
    reconstructions to 5 values. Only free (image) sides are ever padded, so only they may
    be cropped."""
    msg = codec_pb2.Codes()
    msg.CopyFrom(valid[2])
    msg.input_shape[:] = [5]
    with pytest.raises(CodesError, match=r"had shape \[5\] before padding"):
        local.decode_codes([msg])
    msg.input_shape[:] = [64]  # the full shape: nothing to crop, allowed
    assert local.decode_codes([msg]).shape == (3, 64)


def test_a_tensor_of_more_dimensions_than_numpy_takes() -> None:
    """Found by fuzzing: 65 dimensions of 1 passed the byte count, then numpy's reshape
    raised ValueError (the server answered INTERNAL)."""
    t = codec_pb2.Tensor(dtype="float32", shape=[1] * 65, data=bytes(4))
    with pytest.raises(CodesError, match="65 dimensions"):
        tensor_to_array(t)


def test_an_empty_tensor_with_huge_dimensions() -> None:
    """Found by fuzzing: shape [0, 2**62, 4] holds no bytes, so the byte count matched, and
    numpy's reshape raised ValueError ("array is too big") all the same."""
    t = codec_pb2.Tensor(dtype="int8", shape=[0, 2**62, 4], data=b"")
    with pytest.raises(CodesError, match=r"too large for an array"):
        tensor_to_array(t)


@fuzz(500)
@given(tensor=tensors())
def test_fuzzed_tensors(tensor: codec_pb2.Tensor) -> None:
    arr = outcome(lambda: tensor_to_array(tensor), CodesError)
    if not isinstance(arr, CodesError):
        assert list(arr.shape) == list(tensor.shape)
        assert arr.dtype.name == tensor.dtype and arr.tobytes() == tensor.data


# -- the four code formats, without a graph ------------------------------------------------
K = 8


def _formats() -> dict[str, CodeFormat]:
    rng = np.random.default_rng(0)
    lo, hi = -rng.uniform(1, 3, K), rng.uniform(1, 3, K)
    pmfs = [rng.dirichlet(np.full(int(rng.integers(2, 12)), 0.5)) for _ in range(K)]
    prior = FactorizedPrior.from_pmfs(rng.integers(-6, 0, K).tolist(), pmfs)
    return {
        name: CodeFormat.build(name, lo, hi, prior) for name in ("f32", "f16", "int8", "entropy")
    }


FORMATS = _formats()


def _wire(fmt: CodeFormat, z: np.ndarray) -> codec_pb2.Codes:
    msg = codec_pb2.Codes(model_name="m", fingerprint="f" * 16, format=fmt.name, count=len(z))
    fmt.pack(fmt.quantize(z), msg)
    return msg


@fuzz(300)
@given(
    name=st.sampled_from(sorted(FORMATS)),
    z=st.integers(0, 6).flatmap(
        lambda n: st.lists(
            st.floats(-4, 4, allow_nan=False, width=32), min_size=n * K, max_size=n * K
        ).map(lambda v: np.asarray(v, np.float32).reshape(-1, K))
    ),
)
def test_formats_round_trip(name: str, z: np.ndarray) -> None:
    """What a format packs, it unpacks unchanged."""
    fmt = FORMATS[name]
    w = fmt.quantize(z)
    np.testing.assert_array_equal(fmt.unpack(_wire(fmt, z)), w)


@fuzz(400)
@given(data=st.data(), name=st.sampled_from(sorted(FORMATS)))
def test_fuzzed_messages_of_each_format(data: st.DataObject, name: str) -> None:
    fmt = FORMATS[name]
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    valid = [_wire(fmt, rng.normal(size=(n, K)).astype(np.float32)) for n in (1, 4)]
    msg = data.draw(codes_messages(valid, ["m"], ["f" * 16]), label="codes")

    def decode() -> np.ndarray:
        if msg.format != fmt.name:
            raise CodesError("another format")
        return fmt.dequantize(fmt.check_wire(fmt.unpack(msg)))

    z = outcome(decode, CodesError, InputError)
    if isinstance(z, BaseException):
        return
    assert z.dtype == np.float32 and z.shape[:2] == (msg.count, K)
    if name == "f32":  # dequantising adds no NaN/Inf: any comes from the bytes themselves,
        # which Model.prepare_codes refuses before this step (tests/test_fuzz_server.py)
        assert np.array_equal(np.isfinite(z), np.isfinite(fmt.unpack(msg)))


def test_nan_bytes_in_f32_codes_pass_the_format_and_stop_at_the_model(digits_pkg: Path) -> None:
    """The case CI's fuzzing drew (0xFFFFFFFF is a float32 NaN): the format layer passes
    the value through unchanged, and the model's check refuses it, naming NaN/Inf."""
    fmt = FORMATS["f32"]
    w = np.zeros((1, K), dtype=np.float32)
    w.view(np.uint32)[0, 0] = 0xFFFFFFFF
    z = fmt.dequantize(fmt.check_wire(w))
    assert np.isnan(z[0, 0]) and np.all(np.isfinite(z[0, 1:]))
    model = Model(digits_pkg)
    codes = np.zeros((1, K), dtype=np.float32)
    codes.view(np.uint32).flat[0] = 0xFFFFFFFF
    with pytest.raises(InputError, match="NaN/Inf"):
        model.prepare_codes(codes)
