"""latentwire's own rANS coder: the streams constriction's AnsCoder writes, bit for bit.

constriction (Rust, ~1 MB wheel) is the fast coder, but it publishes wheels for x86_64,
macOS and Windows only and no sdist, so it cannot be installed on 64-bit ARM Linux (a
Raspberry Pi, a Jetson, Graviton). This module is the same coder in pure Python; it
serves wherever constriction does not import (runtime/entropy.py picks), and it reads
and writes exactly the streams of the manifest coder "constriction-ans32", so packages
and codes files made on one machine decode on every other.

What constriction does, read from its source (src/stream/stack.rs,
src/stream/model/categorical.rs; `AnsCoder` = `AnsCoder<u32, u64>`, `Categorical(...,
perfect=False)` = `ContiguousCategoricalEntropyModel<u32, _, 24>`):

- **Tables.** n integer frequencies f become 24-bit left cumulatives
  ``left[i] = trunc(cum_i * scale) + i`` with ``cum_i = f_0 + ... + f_(i-1)`` and
  ``scale = (2**24 - n) / sum(f)``, both in float64 (`fast_quantized_cdf`); symbol i has
  probability ``left[i+1] - left[i]`` (``left[n] = 2**24``), at least 1.
- **Encode** (push a symbol of probability p and cumulative l onto a u64 state): when
  ``state >> 40 >= p``, write the state's low 32-bit word and shift it out; then
  ``state = (state // p) << 24 | (state % p + l)``. A stack: symbols are pushed in
  reverse so that they pop in order. The stream is the words written, then the final
  state as its low and high word with leading zero words left out (a state of 0 adds
  none), all as little-endian u32.
- **Decode** (pop): the state starts from the last word (refused when it is 0: no
  stream ends in one) and the one before; each symbol is the one whose interval holds
  ``q = state mod 2**24``, then ``state = (state >> 24) * p + q - l``, refilled with the
  next word from the end when it falls below 2**32. ANS decodes past the end of a stream
  deterministically; a stream was used up exactly when the state ends at 0.

Speed: about 0.15 µs per symbol to encode and 0.23 µs to decode (constriction: 0.008 and
0.02 µs), so a 512x512 photo's stream (65,536 symbols for a stride-8, 16-channel model)
takes about 10 ms to encode and 15 ms to decode; benchmarks/entropy_coder.py measures both.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

import numpy as np

PRECISION = 24
"""Bits of the quantised probabilities (constriction's default models)."""
_MASK = (1 << PRECISION) - 1
_WORD = 0xFFFF_FFFF
_LOW = 1 << 32
"""A state below this is refilled from the stream when decoding (u64 state, u32 words)."""
_SHIFT = 64 - PRECISION
"""A state at or above p << _SHIFT is too large to push a symbol of probability p."""


class Table:
    """One channel's quantised distribution: symbols 0 .. n-1 (offsets are the caller's)."""

    __slots__ = ("left", "n", "prob")

    def __init__(self, freq: np.ndarray | Sequence[int]) -> None:
        f = np.asarray(freq, dtype=np.float64)
        n = f.size
        if f.ndim != 1 or n < 2 or n >= (1 << PRECISION) - 1:
            raise ValueError(f"a table needs 2 .. {(1 << PRECISION) - 2} frequencies, got {n}")
        # running sums in the order constriction adds them (float probabilities round the
        # same way; integer frequencies are exact in any order)
        running = np.cumsum(f)
        total = float(running[-1])
        if not np.isfinite(total) or total <= 0 or np.any(f < 0):
            raise ValueError("frequencies must be non-negative with a positive, finite sum")
        scale = float((1 << PRECISION) - n) / total
        cum = np.concatenate(([0.0], running[:-1]))
        left = (cum * scale).astype(np.uint64) + np.arange(n, dtype=np.uint64)
        self.n = n
        self.left: list[int] = [*left.tolist(), 1 << PRECISION]
        """n + 1 cumulatives, the last 2**24."""
        self.prob: list[int] = np.diff(np.asarray(self.left, dtype=np.int64)).tolist()
        """n probabilities (out of 2**24), each at least 1."""


def encode(tables: Sequence[Table], symbols: Sequence[np.ndarray]) -> np.ndarray:
    """One stream (uint32 words) of channel c's symbols ``symbols[c]`` (indices into
    ``tables[c]``, already checked to lie in it), channel 0's first when decoding."""
    words: list[int] = []
    push = words.append
    state = 0
    for table, idx in zip(reversed(tables), reversed(symbols), strict=True):
        left, prob = table.left, table.prob
        for s in reversed(np.asarray(idx).reshape(-1).tolist()):
            p = prob[s]
            if state >> _SHIFT >= p:
                push(state & _WORD)
                state >>= 32
            prefix, remainder = divmod(state, p)
            state = (prefix << PRECISION) | (remainder + left[s])
    if state:
        push(state & _WORD)
        if state >> 32:
            push(state >> 32)
    return np.asarray(words, dtype=np.uint32)


def decode(tables: Sequence[Table], words: np.ndarray, per_channel: int) -> tuple[np.ndarray, bool]:
    """(K, per_channel) int32 symbol indices from a stream, and whether the stream was
    used up exactly (see the module docstring). ValueError when the stream ends in a zero
    word, which no encoder writes."""
    stack: list[int] = np.asarray(words, dtype=np.uint32).tolist()
    if stack and stack[-1] == 0:
        raise ValueError("Invalid compressed data: ANS compressed data never ends in a zero word.")
    pos = len(stack)
    state = 0
    if pos:
        pos -= 1
        state = stack[pos]
        if pos:
            pos -= 1
            state = (state << 32) | stack[pos]
    out = np.empty((len(tables), per_channel), dtype=np.int32)
    for c, table in enumerate(tables):
        left, prob = table.left, table.prob
        row: list[int] = [0] * per_channel
        for i in range(per_channel):
            q = state & _MASK
            s = bisect_right(left, q) - 1
            state = (state >> PRECISION) * prob[s] + q - left[s]
            if state < _LOW and pos:
                pos -= 1
                state = (state << 32) | stack[pos]
            row[i] = s
        out[c] = row
    return out, state == 0
