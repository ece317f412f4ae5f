"""Fuzzing the entropy coder: random priors, round trips, and mutated or arbitrary streams.

Whatever `FactorizedPrior.decode` accepts must be a batch that `encode` turns back into the
very same stream (so nothing decodes to symbols that stream does not code); everything else
is a CodesError. Every target runs on both coders (constriction and latentwire's own,
runtime/ans.py) where both are installed. See tests/_fuzz.py for the budget and the long run.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from latentwire.runtime import CodesError
from latentwire.runtime.entropy import CODERS, MAX_SUPPORT, FactorizedPrior, _constriction

from ._fuzz import fuzz, mutated, outcome

INSTALLED = [c for c in CODERS if c == "python" or _constriction() is not None]
on_each_coder = pytest.mark.parametrize("coder", INSTALLED)


@st.composite
def priors(draw: st.DrawFn, max_channels: int = 5) -> FactorizedPrior:
    """Tables of 2..40 symbols, from nearly flat to one symbol holding almost all the mass
    (numpy draws the numbers from a seed: quick, and the seed shrinks)."""
    channels = draw(st.integers(1, max_channels))
    sizes = draw(st.lists(st.integers(2, 40), min_size=channels, max_size=channels))
    offsets = draw(st.lists(st.integers(-100, 100), min_size=channels, max_size=channels))
    alpha = draw(st.sampled_from([0.02, 0.3, 1.0, 10.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return FactorizedPrior.from_pmfs(offsets, [rng.dirichlet(np.full(k, alpha)) for k in sizes])


@st.composite
def batches(draw: st.DrawFn, prior: FactorizedPrior) -> np.ndarray:
    """Symbols (n, K, *rest) inside each channel's table; sometimes mostly each table's
    first symbol (the one ANS codes for free at the end of a stream)."""
    n = draw(st.integers(0, 5))
    rest = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    lowest = draw(st.sampled_from([0.0, 0.0, 0.5, 0.95, 1.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = (n, prior.channels, *rest)
    lo = prior.low.reshape(1, -1, *([1] * len(rest)))
    hi = prior.high.reshape(1, -1, *([1] * len(rest)))
    symbols = rng.integers(lo, hi + 1, size=shape)
    symbols = np.where(rng.random(shape) < lowest, lo, symbols)
    return symbols.astype(np.int32)


def _accepted(
    prior: FactorizedPrior, stream: bytes, count: int, shape: list[int], coder: str
) -> None:
    """Decode; an answer must have the asked shape, lie in the tables and re-encode to
    the stream."""
    out = outcome(lambda: prior.decode(stream, count, shape, coder=coder), CodesError)
    if isinstance(out, CodesError):
        return
    assert out.shape == (count, *shape) and out.dtype == np.int32
    prior.check_symbols(out)
    assert prior.encode(out, coder=coder) == stream


@on_each_coder
@fuzz(300)
@given(data=st.data())
def test_round_trip(coder: str, data: st.DataObject) -> None:
    prior = data.draw(priors(), label="prior")
    symbols = data.draw(batches(prior), label="symbols")
    stream = outcome(lambda: prior.encode(symbols, coder=coder), CodesError)
    if isinstance(stream, CodesError):  # only a batch ending in free symbols, see below
        assert "cannot be sent" in str(stream)
        assert _free_tail(prior, symbols) > 0
        return
    out = prior.decode(stream, len(symbols), list(symbols.shape[1:]), coder=coder)
    np.testing.assert_array_equal(out, symbols)
    # the manifest form of the tables reads back as the same prior
    again = FactorizedPrior.from_dict(prior.to_dict(), prior.channels)
    assert again.encode(symbols, coder=coder) == stream


def _free_tail(prior: FactorizedPrior, symbols: np.ndarray) -> int:
    """How many symbols, last in decoding order, are their table's first (free in ANS)."""
    order = np.concatenate(
        [symbols[:, c].reshape(-1) - prior.offsets[c] for c in range(prior.channels)]
    )
    nonzero = np.flatnonzero(order)
    return len(order) - (int(nonzero[-1]) + 1 if len(nonzero) else 0)


@on_each_coder
def test_a_batch_of_free_symbols_is_refused_when_encoding(coder: str) -> None:
    """Found by fuzzing: symbols that are all their table's first entry code to an empty
    stream (ANS starts at state 0, where that symbol costs nothing), which every decoder
    refuses as truncated; the encoder now says so instead of sending it."""
    prior = FactorizedPrior.from_pmfs([0], [np.array([0.0, 1.0])])  # symbol 0: frequency 1
    with pytest.raises(CodesError, match="1 samples code to an entropy stream of 0 bytes"):
        prior.encode(np.zeros((1, 1), np.int32), coder=coder)
    with pytest.raises(CodesError, match="stream is empty but codes say count=1"):
        prior.decode(b"", 1, [1], coder=coder)
    ones = np.ones((1, 1), np.int32)  # the likely symbol costs its bits: fine
    stream = prior.encode(ones, coder=coder)
    np.testing.assert_array_equal(prior.decode(stream, 1, [1], coder=coder), ones)


@on_each_coder
@fuzz(500)
@given(data=st.data())
def test_mutated_streams(coder: str, data: st.DataObject) -> None:
    prior = data.draw(priors(), label="prior")
    symbols = data.draw(batches(prior), label="symbols")
    coded = outcome(lambda: prior.encode(symbols, coder=coder), CodesError)
    stream = data.draw(mutated(b"" if isinstance(coded, CodesError) else coded), label="stream")
    count = data.draw(st.one_of(st.just(len(symbols)), st.integers(0, 8)), label="count")
    shape = list(symbols.shape[1:])
    if data.draw(st.booleans(), label="other shape"):
        shape = data.draw(st.lists(st.integers(-2, 6), max_size=4), label="shape")
    _accepted(prior, stream, count, shape, coder)


@on_each_coder
@fuzz(400)
@given(
    prior=priors(max_channels=3),
    stream=st.binary(max_size=64),
    count=st.one_of(st.integers(0, 10), st.integers(0, 2**64 - 1)),
    rest=st.one_of(
        st.lists(st.one_of(st.integers(1, 4), st.integers(-(2**63), 2**63 - 1)), max_size=3),
        st.lists(st.just(1), min_size=60, max_size=70),
    ),
)
def test_arbitrary_streams(
    coder: str, prior: FactorizedPrior, stream: bytes, count: int, rest: list[int]
) -> None:
    _accepted(prior, stream, count, [prior.channels, *rest], coder)


@on_each_coder
def test_a_stream_is_a_code_for_its_count_only_up_to_free_symbols(coder: str) -> None:
    """The count on a message is part of what its stream means: a symbol at the first
    entry of its table, coded last into an empty coder, costs nothing (ANS starts from
    state 0), so [a, b] and [a, b, first] share one stream. The decoder returns whichever
    the count says; both re-encode to the stream (which the fuzz tests check always)."""
    prior = FactorizedPrior.from_pmfs([0], [np.array([0.5, 0.25, 0.25])])
    two = np.array([[[2]], [[1]]], np.int32)
    stream = prior.encode(two, coder=coder)
    three = prior.decode(stream, 3, [1, 1], coder=coder)
    assert three.reshape(-1).tolist() == [2, 1, 0]
    assert prior.encode(three, coder=coder) == stream


def test_table_limits() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        FactorizedPrior.from_pmfs([0], [np.ones(MAX_SUPPORT * 16 + 1)])
