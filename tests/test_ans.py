"""latentwire's own ANS coder (runtime/ans.py) writes and reads constriction's streams.

Golden streams made with constriction (tests/expected/ans_golden.json, regenerated only
with GENERATE_EXPECTED=1 on a machine that has constriction) pin the format for every
machine, including those without constriction: both coders must write exactly these
bytes and read them back. Where both are installed, a property test checks that they
agree on random tables and batches, and on arbitrary streams too (the same symbols, the
same verdict). The fuzz tests (tests/test_fuzz_entropy.py) run on both coders.
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from latentwire.runtime import CodesError
from latentwire.runtime.entropy import (
    CODERS,
    MAX_SUPPORT,
    PRECISION_BITS,
    FactorizedPrior,
    _constriction,
    default_coder,
)

from ._fuzz import fuzz
from .conftest import EXPECTED, GENERATE_EXPECTED

GOLDEN = EXPECTED / "ans_golden.json"
HAVE_CONSTRICTION = _constriction() is not None
INSTALLED = [c for c in CODERS if c == "python" or HAVE_CONSTRICTION]
needs_constriction = pytest.mark.skipif(
    not HAVE_CONSTRICTION, reason="constriction has no wheel for this platform"
)


def _table(rng: np.random.Generator, n: int, alpha: float) -> np.ndarray:
    return rng.dirichlet(np.full(n, alpha))


def _cases() -> list[tuple[str, FactorizedPrior, np.ndarray]]:
    """The golden cases: (name, prior, symbols). Deterministic from fixed seeds."""
    rng = np.random.default_rng(20261204)
    out: list[tuple[str, FactorizedPrior, np.ndarray]] = []

    def add(name: str, prior: FactorizedPrior, symbols: np.ndarray) -> None:
        out.append((name, prior, symbols.astype(np.int32)))

    def draw(prior: FactorizedPrior, shape: tuple[int, ...]) -> np.ndarray:
        cols = [
            rng.choice(f.size, size=(shape[0], *shape[1:]), p=f / f.sum()) + o
            for o, f in zip(prior.offsets, prior.freqs, strict=True)
        ]
        return np.stack(cols, axis=1)

    flat = FactorizedPrior.from_pmfs([-3, 0, 5], [np.ones(k) for k in (2, 7, 31)])
    add("flat-3ch-dense", flat, draw(flat, (50,)))
    mixed = FactorizedPrior.from_pmfs(
        [-20, -1, 0, 2], [_table(rng, k, a) for k, a in ((41, 1.0), (3, 0.3), (12, 10.0), (9, 0.1))]
    )
    add("dirichlet-4ch-dense", mixed, draw(mixed, (200,)))
    add("one-sample", mixed, draw(mixed, (1,)))
    two = FactorizedPrior.from_pmfs([0], [np.array([0.5, 0.5])])
    add("two-symbol-table", two, draw(two, (333, 1)))
    # a table where one symbol holds nearly all the mass (the cheapest symbol: ~2e-5 bits)
    peaked = FactorizedPrior(
        np.array([-8, 0]),
        (
            np.array([1] * 8 + [(1 << PRECISION_BITS) - 16] + [1] * 8, np.int64),
            np.array([1, (1 << PRECISION_BITS) - 2, 1], np.int64),
        ),
    )
    likely = np.stack([np.zeros((4000,), np.int64), np.ones((4000,), np.int64)], axis=1)
    likely[::97, 0] = 8
    likely[::131, 1] = 2
    add("peaked-tables", peaked, likely)
    # only each table's first symbol, but the last one decoded: from state 0 it is coded first
    first = np.tile(mixed.low.reshape(1, -1), (60, 1))
    first[-1, -1] += 1
    add("first-symbols-but-one", mixed, first)
    big = FactorizedPrior.from_pmfs([-2048], [_table(rng, MAX_SUPPORT, 0.5)])
    add("max-support-4096", big, draw(big, (500, 1)))
    edges = big.high.reshape(1, -1).repeat(9, 0)
    edges[::2] = big.low
    add("max-support-extremes", big, edges)
    conv = FactorizedPrior.from_pmfs(
        list(range(-6, 10)), [_table(rng, int(k), 1.0) for k in rng.integers(2, 60, 16)]
    )
    add("conv-16ch-2x3x5", conv, draw(conv, (2, 3, 5)))
    add("empty-batch", conv, np.zeros((0, 16, 3, 5)))
    return out


def _load_golden() -> list[dict[str, object]]:
    cases: list[dict[str, object]] = json.loads(GOLDEN.read_text())["cases"]
    return cases


def test_golden_streams_are_current() -> None:
    """The committed streams are the ones constriction writes for `_cases()`."""
    if GENERATE_EXPECTED:
        if not HAVE_CONSTRICTION:
            pytest.fail("golden ANS streams are made with constriction; install it first")
        rows = []
        for name, prior, symbols in _cases():
            stream = prior.encode(symbols, coder="constriction")
            rows.append(
                {
                    "name": name,
                    "tables": prior.to_dict()["tables"],
                    "shape": list(symbols.shape),
                    "symbols": symbols.reshape(-1).tolist(),
                    "stream": base64.b64encode(stream).decode(),
                }
            )
        note = "made with constriction by tests/test_ans.py (GENERATE_EXPECTED=1)"
        GOLDEN.write_text(json.dumps({"about": note, "cases": rows}, indent=0) + "\n")
    golden = _load_golden()
    assert [g["name"] for g in golden] == [name for name, _, _ in _cases()]
    for g, (_, prior, symbols) in zip(golden, _cases(), strict=True):
        assert g["tables"] == prior.to_dict()["tables"]
        assert g["symbols"] == symbols.reshape(-1).tolist()


@pytest.mark.parametrize("coder", INSTALLED)
@pytest.mark.parametrize("case", [name for name, _, _ in _cases()])
def test_golden_streams(coder: str, case: str) -> None:
    g = next(g for g in _load_golden() if g["name"] == case)
    tables = g["tables"]
    assert isinstance(tables, list)
    shape = g["shape"]
    assert isinstance(shape, list)
    prior = FactorizedPrior.from_dict(
        {"coder": "constriction-ans32", "precision_bits": PRECISION_BITS, "tables": tables},
        len(tables),
    )
    symbols = np.asarray(g["symbols"], dtype=np.int32).reshape(shape)
    stream = base64.b64decode(str(g["stream"]))
    if case == "empty-batch":
        assert stream == b""
    assert prior.encode(symbols, coder=coder) == stream
    out = prior.decode(stream, shape[0], shape[1:], coder=coder)
    np.testing.assert_array_equal(out, symbols)
    if stream:  # one word short: refused, or (rarely, ANS is surjective) other symbols
        try:
            short = prior.decode(stream[:-4], shape[0], shape[1:], coder=coder)
        except CodesError:
            return
        assert not np.array_equal(short, symbols)


def test_the_default_coder_is_constriction_where_installed() -> None:
    assert default_coder() == ("constriction" if HAVE_CONSTRICTION else "python")
    prior = FactorizedPrior.from_pmfs([0], [np.ones(3)])
    with pytest.raises(ValueError, match="coder must be one of"):
        prior.encode(np.ones((1, 1), np.int32), coder="zstd")


@st.composite
def _prior_and_batch(draw: st.DrawFn) -> tuple[FactorizedPrior, np.ndarray]:
    channels = draw(st.integers(1, 6))
    sizes = draw(
        st.lists(
            st.sampled_from([2, 3, 5, 17, 64, 300, MAX_SUPPORT]),
            min_size=channels,
            max_size=channels,
        )
    )
    alpha = draw(st.sampled_from([0.01, 0.2, 1.0, 30.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    offsets = rng.integers(-500, 500, channels)
    prior = FactorizedPrior.from_pmfs(offsets.tolist(), [_table(rng, k, alpha) for k in sizes])
    n = draw(st.sampled_from([1, 2, 7, 64, 300]))
    rest = tuple(draw(st.lists(st.integers(1, 4), max_size=2)))
    cols = [
        rng.choice(f.size, size=(n, *rest), p=f / f.sum()) + o
        for o, f in zip(prior.offsets, prior.freqs, strict=True)
    ]
    return prior, np.stack(cols, axis=1).astype(np.int32)


@needs_constriction
@fuzz(150)
@given(case=_prior_and_batch())
def test_both_coders_write_the_same_stream(case: tuple[FactorizedPrior, np.ndarray]) -> None:
    prior, symbols = case
    try:
        ours = prior.encode(symbols, coder="python")
    except CodesError as exc:  # a batch that ends in free symbols: both refuse it
        with pytest.raises(CodesError, match="cannot be sent"):
            prior.encode(symbols, coder="constriction")
        assert "cannot be sent" in str(exc)
        return
    assert ours == prior.encode(symbols, coder="constriction")
    shape = list(symbols.shape[1:])
    np.testing.assert_array_equal(prior.decode(ours, len(symbols), shape, coder="python"), symbols)


@needs_constriction
@fuzz(300)
@given(
    case=_prior_and_batch(),
    stream=st.binary(min_size=4, max_size=48).map(lambda b: b[: len(b) // 4 * 4]),
    count=st.integers(0, 6),
)
def test_both_coders_read_any_stream_alike(
    case: tuple[FactorizedPrior, np.ndarray], stream: bytes, count: int
) -> None:
    """Arbitrary words: the same symbols or the same refusal from both coders."""
    prior, symbols = case
    shape = list(symbols.shape[1:])
    answers: list[np.ndarray | str] = []
    for coder in CODERS:
        try:
            answers.append(prior.decode(stream, count, shape, coder=coder))
        except CodesError as exc:
            answers.append(str(exc))
    if isinstance(answers[0], str):
        assert answers[0] == answers[1]
    else:
        assert not isinstance(answers[1], str)
        np.testing.assert_array_equal(answers[0], answers[1])


def test_the_own_coder_refuses_a_small_stream_that_claims_millions_of_symbols() -> None:
    """Peaked tables make symbols nearly free, so 8 bytes can claim 9 million of them: a
    server decoding without constriction refuses such a message at once instead of
    spending seconds of CPU on it (constriction's bound stays MAX_SYMBOLS)."""
    from latentwire.runtime.entropy import MAX_PYTHON_SYMBOLS

    prior = FactorizedPrior(np.array([0]), (np.array([1, (1 << PRECISION_BITS) - 1], np.int64),))
    count = 9_000_000
    assert count > MAX_PYTHON_SYMBOLS
    with pytest.raises(CodesError, match="send them in smaller messages"):
        prior.decode(b"\x01\x00\x00\x00\x01\x00\x00\x00", count, [1], coder="python")
    # a default-sized message (1 MiB of codes: 262,144 symbols) is far below the bound
    assert MAX_PYTHON_SYMBOLS > (1 << 20) // 4
