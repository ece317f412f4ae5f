"""What the fuzz tests (tests/test_fuzz_*.py) share: their budget and their strategies.

Every target runs hypothesis with its own CI budget (`@fuzz(300)`: 300 cases), about
7,500 cases in all. A longer run outside CI is one command, which gives every target N
cases (N=1500: 30,000 cases in about 7 minutes on a 2-core VM):

    LATENTWIRE_FUZZ_EXAMPLES=1500 pytest tests/test_fuzz*.py tests/test_package_safety.py \
        --hypothesis-show-statistics

Under CI (CI set, no LATENTWIRE_FUZZ_EXAMPLES) the cases are derandomized: the same every
run, so a landing never depends on the draw; everywhere else each run draws new cases, and
what they find becomes a fixed test. `--hypothesis-seed=S` replays a run; a failure
prints the shrunk case and a blob for `@reproduce_failure`. No example database is
written (the repository stays clean).

Each case must end in a correct answer or in the error class (or gRPC status) the design
names for it: never a crash, a hang, another exception type, or INTERNAL.
"""

from __future__ import annotations

import math
import os
import struct
import warnings
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from latentwire.runtime._proto.v1 import codec_pb2

EXAMPLES_ENV = "LATENTWIRE_FUZZ_EXAMPLES"


def budget(ci: int) -> int:
    """Cases for a target: `ci`, or LATENTWIRE_FUZZ_EXAMPLES when it is set."""
    value = os.environ.get(EXAMPLES_ENV, "").strip()
    return int(value) if value else ci


def fuzz(ci: int) -> settings:
    """Hypothesis settings of one fuzz target with a CI budget of `ci` cases."""
    return settings(
        max_examples=budget(ci),
        derandomize=bool(os.environ.get("CI")) and not os.environ.get(EXAMPLES_ENV),
        deadline=None,  # a shared 2-core machine: timings vary, hangs are caught by pytest
        database=None,
        print_blob=True,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.large_base_example,
        ],
    )


# -- byte-level mutation of a valid blob -------------------------------------------------
_OPS = ("flip", "set", "cut", "insert", "delete", "duplicate", "u32")


@st.composite
def mutated(draw: st.DrawFn, blob: bytes, max_ops: int = 4) -> bytes:
    """`blob` with up to `max_ops` random edits (none: the blob as it was): bit flips, byte
    overwrites, truncation, insertions, deletions, duplicated runs, a 32-bit overwrite."""
    out = bytearray(blob)
    for _ in range(draw(st.integers(0, max_ops))):
        op = draw(st.sampled_from(_OPS))
        at = draw(st.integers(0, len(out)))
        if op == "flip" and at < len(out):
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and at < len(out):
            out[at] = draw(st.integers(0, 255))
        elif op == "cut":
            del out[at:]
        elif op == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del out[at : at + draw(st.integers(1, 16))]
        elif op == "duplicate":
            out[at:at] = out[at : at + draw(st.integers(1, 64))]
        elif op == "u32" and at + 4 <= len(out):
            out[at : at + 4] = struct.pack("<I", draw(_U32))
    return bytes(out)


_U32 = st.one_of(
    st.integers(0, 64), st.sampled_from([0xFFFFFFFF, 1 << 31]), st.integers(0, 2**32 - 1)
)

# -- the fields of a Codes message --------------------------------------------------------
DTYPE_NAMES = (
    "float32", "float16", "float64", "int8", "uint8", "int16", "int32", "int64",
    "uint16", "uint32", "uint64", "bool", "object", "complex64", "<f4", ">f4", "U8", "V4",
    "float128", "datetime64", "", "F32",
)  # fmt: skip
"""Tensor dtypes a fuzzed message may claim: the wire's, numpy's others, and junk."""

INT64 = st.integers(-(2**63), 2**63 - 1)
SMALL_DIM = st.integers(0, 6)
DIM = st.one_of(SMALL_DIM, SMALL_DIM, st.integers(-3, 70), INT64)


def shapes(max_rank: int = 4) -> st.SearchStrategy[list[int]]:
    """Mostly small shapes; sometimes negative, huge or over numpy's 64 dimensions."""
    return st.one_of(
        st.lists(SMALL_DIM, max_size=max_rank),
        st.lists(DIM, max_size=max_rank + 2),
        st.lists(st.just(1), min_size=60, max_size=70),
    )


def itemsize(dtype: str) -> int:
    import numpy as np

    try:
        with warnings.catch_warnings():  # deprecated aliases ("a") warn
            warnings.simplefilter("ignore")
            return int(np.dtype(dtype).itemsize) or 1
    except Exception:  # numpy parses dtype strings with several parsers, each its errors
        return 1


@st.composite
def tensors(draw: st.DrawFn, dtypes: tuple[str, ...] = DTYPE_NAMES) -> codec_pb2.Tensor:
    """A Tensor message: usually self-consistent (data as long as dtype and shape say),
    sometimes not."""
    dtype = draw(st.one_of(st.sampled_from(dtypes), st.text(max_size=8)))
    shape = draw(shapes())
    size = itemsize(dtype)
    consistent = all(s >= 0 for s in shape) and math.prod(shape) * size <= 4096
    if consistent and draw(st.booleans()):
        n = math.prod(shape) * size
        data = draw(st.binary(min_size=n, max_size=n))
    else:
        data = draw(st.binary(max_size=256))
    return codec_pb2.Tensor(dtype=dtype, shape=shape, data=data)


def keep_or(value: Any, other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly `value` itself (a valid field), sometimes a fuzzed one."""
    return st.one_of(st.just(value), st.just(value), other)


@st.composite
def codes_messages(
    draw: st.DrawFn,
    valid: list[codec_pb2.Codes],
    names: list[str],
    fingerprints: list[str],
    formats: tuple[str, ...] = ("f32", "f16", "int8", "entropy"),
) -> codec_pb2.Codes:
    """A Codes message: one of `valid`, field by field kept, swapped or fuzzed."""
    base = draw(st.sampled_from(valid))
    msg = codec_pb2.Codes()
    msg.CopyFrom(base)
    junk_text = st.text(max_size=24)
    msg.model_name = draw(keep_or(base.model_name, st.one_of(st.sampled_from(names), junk_text)))
    msg.fingerprint = draw(
        keep_or(base.fingerprint, st.one_of(st.sampled_from([*fingerprints, ""]), junk_text))
    )
    msg.format = draw(keep_or(base.format, st.one_of(st.sampled_from([*formats, ""]), junk_text)))
    msg.count = draw(
        keep_or(
            base.count,
            st.one_of(st.integers(0, 8), st.integers(0, 2**64 - 1), st.just(base.count + 1)),
        )
    )
    what = draw(st.sampled_from(["keep", "keep", "mutate-data", "tensor", "none"]))
    if what == "mutate-data":
        msg.tensor.data = draw(mutated(base.tensor.data))
    elif what == "tensor":
        msg.tensor.CopyFrom(draw(tensors()))
    elif what == "none":
        msg.ClearField("tensor")
    if draw(st.integers(0, 3)) == 0:
        msg.tensor.shape[:] = draw(shapes())
    if draw(st.integers(0, 3)) == 0:
        msg.tensor.dtype = draw(st.sampled_from(DTYPE_NAMES))
    if draw(st.integers(0, 3)) == 0:
        msg.latent_shape[:] = draw(shapes(3))
    if draw(st.integers(0, 3)) == 0:  # the per-sample shape before padding: near real ones
        msg.input_shape[:] = draw(st.one_of(shapes(3), st.lists(st.integers(0, 80), max_size=3)))
    return msg


def outcome(call: Callable[[], Any], *errors: type[BaseException]) -> Any:
    """`call()`, or the exception when it is one of `errors` (any other fails the test)."""
    try:
        return call()
    except errors as exc:
        return exc
