"""Entropy coding of integer latents with a factorised prior (an ANS coder, constriction's
streams).

The prior is one categorical distribution per latent channel, stored in the package as an
integer frequency table: channel c may take the symbols ``offset[c] .. offset[c] +
len(freq[c]) - 1`` with probabilities ``freq[c] / sum(freq[c])``. The tables are integers
so that every machine builds the same model and encode on the edge and decode on the
server are bit-exact; constriction's quantisation of those probabilities is deterministic
(``perfect=False``, fixed in its format since 0.4).

One stream codes all symbols of a batch: channel by channel (a Python loop over channels,
never over symbols), each channel's symbols in C order over (sample, height, width). The
stream is constriction's ANS word stack, written as 32-bit little-endian words, made by
constriction where it is installed and by latentwire's own bit-exact coder (runtime/ans.py)
where it is not (64-bit ARM Linux has no constriction wheel); `coder=` picks one. A decoder
checks that the stream is used up exactly (ANS ends in a known state only when every word
was consumed as the encoder wrote it), so whatever it accepts is exactly what `encode`
writes for the symbols it returns (tests/test_fuzz_entropy.py); a truncated or altered
stream almost always fails the check. ANS starts from state 0, where a table's first
symbol costs nothing: a stream can therefore be a valid code for more than one count (the
message's count says which), and a batch made mostly of those symbols can code to fewer
bytes than a decoder accepts, which `encode` refuses.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import numpy as np

from . import ans
from .codes import MAX_DIMS
from .errors import CodesError, PackageError

CODER = "constriction-ans32"
"""The coder name recorded in the manifest: constriction's AnsCoder (32-bit words, 24-bit
probabilities), Categorical models with perfect=False."""
PRECISION_BITS = 16
"""Frequency tables sum to 2**PRECISION_BITS."""
MAX_SUPPORT = 4096
"""Most symbols one channel's table may hold."""
MAX_SYMBOL = 1 << 30
"""Largest magnitude of a symbol (symbols travel as int32)."""
MAX_SYMBOLS = 1 << 26
"""Most symbols one stream may decode to (256 MiB of int32): a bound on what a small
message can make a decoder allocate."""
MAX_PYTHON_SYMBOLS = 1 << 23
"""Most symbols one stream may decode to with latentwire's own coder (~2 s of CPU at ~4.4 M
symbols/s, where constriction takes 0.15 s): very peaked tables let a small stream claim
many symbols, and a server without constriction must not spend much longer on one message.
8.4 M symbols is a 33-megapixel photo through a stride-8, 16-channel model; clients send at
most 1 MiB of codes (262,144 symbols) per message by default, or one image."""


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


CODERS = ("constriction", "python")
"""The two implementations of the one coder: constriction (Rust, 13-19x faster) and
runtime/ans.py (pure Python, every platform). Their streams are identical."""


@functools.cache
def _constriction() -> Any:
    """The constriction module, or None where it is not installed."""
    try:
        import constriction
    except ImportError:
        return None
    return constriction


def default_coder() -> str:
    """constriction where it imports, else latentwire's own coder."""
    return "constriction" if _constriction() is not None else "python"


def _pick(coder: str | None) -> str:
    name = coder or default_coder()
    if name not in CODERS:
        raise ValueError(f"coder must be one of {CODERS}, got {name!r}")
    if name == "constriction" and _constriction() is None:
        raise ImportError("constriction is not installed: pip install 'constriction>=0.4'")
    return name


def coder_tables(weights: Sequence[np.ndarray], coder: str) -> tuple[Any, ...]:
    """Per-channel distributions from non-negative weights (any sum; constriction's
    Categorical with perfect=False, or ans.Table: the same quantisation), in the form
    `coder` (one of CODERS) codes with."""
    if coder == "python":
        return tuple(ans.Table(w) for w in weights)
    model = _constriction().stream.model.Categorical
    return tuple(model(np.asarray(w, dtype=np.float64), perfect=False) for w in weights)


def encode_words(tables: Sequence[Any], symbols: Sequence[np.ndarray], coder: str) -> np.ndarray:
    """One ANS stream (uint32 words) of `symbols[c]` (int32 indices, checked to lie in
    `tables[c]`, from `coder_tables`), channel 0's decoded first."""
    if coder == "python":
        return ans.encode(tables, symbols)
    stack = _constriction().stream.stack.AnsCoder()
    for table, idx in zip(reversed(tables), reversed(symbols), strict=True):
        stack.encode_reverse(idx, table)  # a stack: the decoder pops channel 0 first
    return np.asarray(stack.get_compressed(), dtype=np.uint32)


def decode_words(
    tables: Sequence[Any], words: np.ndarray, per_channel: int, coder: str
) -> tuple[np.ndarray, bool]:
    """(len(tables), per_channel) int32 indices from one stream, and whether the stream was
    used up exactly; ValueError (and constriction's errors) for a stream no encoder writes."""
    if coder == "python":
        return ans.decode(tables, words, per_channel)
    out = np.empty((len(tables), per_channel), dtype=np.int32)
    stack = _constriction().stream.stack.AnsCoder(words)
    for c, table in enumerate(tables):
        out[c] = stack.decode(table, per_channel) if per_channel else []
    return out, bool(stack.is_empty())


def quantize_pmf(pmf: np.ndarray, precision: int = PRECISION_BITS) -> np.ndarray:
    """Integer frequencies summing to 2**precision, every symbol at least 1, close to `pmf`."""
    p = np.asarray(pmf, dtype=np.float64)
    if p.ndim != 1 or p.size < 2 or not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
        raise ValueError("pmf must be a vector of 2 or more finite non-negative numbers")
    total = 1 << precision
    if p.size > total // 2:
        raise ValueError(f"a table of {p.size} symbols does not fit {precision}-bit frequencies")
    spare = total - p.size  # one count per symbol up front, the rest by probability
    raw = p / p.sum() * spare
    freq = np.floor(raw).astype(np.int64)
    left = spare - int(freq.sum())
    if left > 0:  # largest remainders first, ties by index: deterministic
        order = np.lexsort((np.arange(p.size), -(raw - freq)))
        freq[order[:left]] += 1
    out: np.ndarray = freq + 1
    return out


@dataclass(frozen=True)
class FactorizedPrior:
    """Per-channel integer frequency tables, as read from a manifest."""

    offsets: np.ndarray
    """int64 (K,): the first symbol of each channel's table."""
    freqs: tuple[np.ndarray, ...] = field(repr=False)
    """K int64 vectors of frequencies (each >= 1)."""

    @classmethod
    def from_dict(cls, d: dict[str, Any], channels: int) -> FactorizedPrior:
        """The tables of a manifest's codes.entropy, checked: 2..MAX_SUPPORT integer
        frequencies per channel, each 1 .. 2**PRECISION_BITS (export writes tables that sum
        to 2**PRECISION_BITS; the coder normalises any sum), symbols within +-MAX_SYMBOL."""
        if not isinstance(d, dict):
            raise PackageError(f"codes.entropy must be an object, got {type(d).__name__}")
        if d.get("coder") != CODER:
            raise PackageError(
                f"entropy coder {d.get('coder')!r:.40} is not supported; this latentwire uses "
                f"{CODER}"
            )
        precision = d.get("precision_bits", PRECISION_BITS)
        if precision != PRECISION_BITS or isinstance(precision, bool):
            raise PackageError(
                f"entropy tables of {precision!r:.20} bits are not supported; this latentwire "
                f"reads {PRECISION_BITS}-bit tables"
            )
        tables = d.get("tables")
        if not isinstance(tables, list) or len(tables) != channels:
            n = len(tables) if isinstance(tables, list) else "no"
            raise PackageError(
                f"the entropy model needs {channels} tables, one per latent "
                f"channel; the manifest has {n}"
            )
        total = 1 << PRECISION_BITS
        offsets, freqs = [], []
        for c, t in enumerate(tables):
            freq = t.get("freq") if isinstance(t, dict) else None
            offset = t.get("offset") if isinstance(t, dict) else None
            if (
                not isinstance(freq, list)
                or not 2 <= len(freq) <= MAX_SUPPORT
                or not all(_is_int(v) and 1 <= v <= total for v in freq)
            ):
                raise PackageError(
                    f"entropy table {c} must hold 2..{MAX_SUPPORT} frequencies, each >= 1"
                )
            if not _is_int(offset) or not -MAX_SYMBOL <= offset <= MAX_SYMBOL - len(freq):
                raise PackageError(
                    f"entropy table {c} needs an integer offset; its symbols must lie within "
                    f"+-{MAX_SYMBOL:,}, got {offset!r:.40}"
                )
            offsets.append(offset)
            freqs.append(np.asarray(freq, dtype=np.int64))
        return cls(np.asarray(offsets, dtype=np.int64), tuple(freqs))

    @classmethod
    def from_pmfs(cls, offsets: Sequence[int], pmfs: Sequence[np.ndarray]) -> FactorizedPrior:
        return cls(np.asarray(offsets, dtype=np.int64), tuple(quantize_pmf(p) for p in pmfs))

    def to_dict(self) -> dict[str, Any]:
        return {
            "coder": CODER,
            "precision_bits": PRECISION_BITS,
            "tables": [
                {"offset": int(o), "freq": f.tolist()}
                for o, f in zip(self.offsets, self.freqs, strict=True)
            ],
        }

    @property
    def channels(self) -> int:
        return len(self.freqs)

    @property
    def low(self) -> np.ndarray:
        return self.offsets

    @property
    def high(self) -> np.ndarray:
        """int64 (K,): the last symbol of each channel's table."""
        return self.offsets + np.array([f.size - 1 for f in self.freqs], dtype=np.int64)

    def bits(self, symbols: np.ndarray) -> float:
        """Ideal code length in bits of (N, K, ...) symbols under the tables."""
        total = 0.0
        for c, f in enumerate(self.freqs):
            idx = symbols[:, c].reshape(-1) - self.offsets[c]
            total -= float(np.log2(f[idx] / f.sum()).sum())
        return total

    @functools.cached_property
    def _coded(self) -> dict[str, tuple[Any, ...]]:
        """The tables in each coder's form, made the first time that coder runs."""
        return {}

    def _tables(self, coder: str) -> tuple[Any, ...]:
        if coder not in self._coded:
            self._coded[coder] = coder_tables(self.freqs, coder)
        return self._coded[coder]

    def check_symbols(self, symbols: np.ndarray, *, what: str = "symbols") -> None:
        """Refuse symbols outside their channel's table (they cannot be coded)."""
        shape = (1, -1) + (1,) * (symbols.ndim - 2)
        lo, hi = self.low.reshape(shape), self.high.reshape(shape)
        bad = (symbols < lo) | (symbols > hi)
        if bad.any():
            at = tuple(int(i) for i in np.argwhere(bad)[0])
            c = at[1]
            raise CodesError(
                f"{what}: {int(bad.sum())} value(s) outside the entropy model's range, the "
                f"first at index {at} is {int(symbols[at])}; channel {c} takes "
                f"{int(self.low[c])} .. {int(self.high[c])}"
            )

    def encode(self, symbols: np.ndarray, *, coder: str | None = None) -> bytes:
        """One stream of (N, K, ...) integer symbols; checked against the tables first.
        `coder`: one of CODERS (default: `default_coder()`); the stream is the same."""
        if symbols.ndim < 2 or symbols.shape[1] != self.channels:
            raise CodesError(
                f"symbols must have shape (N, {self.channels}, ...), got {symbols.shape}"
            )
        self.check_symbols(symbols)
        idx = [
            (symbols[:, c] - self.offsets[c]).astype(np.int32).reshape(-1)
            for c in range(self.channels)
        ]
        use = _pick(coder)
        words = encode_words(self._tables(use), idx, use)
        stream = bytes(words.astype("<u4").tobytes())
        if not self._fits(len(stream), symbols[:, 0].size):
            raise CodesError(
                f"{len(symbols)} samples code to an entropy stream of {len(stream)} bytes, which "
                "a decoder refuses as truncated: too many of their values sit at their "
                "channel's lowest symbol, which costs no bits at the end of a stream; these "
                "samples cannot be sent with this model's entropy tables"
            )
        return stream

    @functools.cached_property
    def _least_bits(self) -> float:
        """Bits one sample's symbols (one per channel) cost at least."""
        return sum(-math.log2(float(f.max()) / float(f.sum())) for f in self.freqs)

    def _fits(self, nbytes: int, per_channel: int) -> bool:
        """Whether `nbytes` of stream can hold `per_channel` symbols in every channel.

        Every symbol costs at least -log2(its table's largest probability) bits (half that
        bound leaves room for the coder's rounding), with one exception: ANS starts from
        state 0, where a table's first symbol costs nothing. A batch that ends (in coding
        order) in a long run of its channels' lowest symbols therefore codes to fewer bytes
        than the bound, or to none; `encode` refuses it instead of writing a stream that
        every decoder refuses as truncated.
        """
        if per_channel and not nbytes:
            return False
        return per_channel * self._least_bits / 2 <= 8 * nbytes + 64

    def decode(
        self,
        stream: bytes,
        count: int,
        latent_shape: Sequence[int],
        *,
        coder: str | None = None,
    ) -> np.ndarray:
        """Symbols (count, *latent_shape) int32 from one stream; CodesError when the stream
        is not exactly what `encode` wrote for that many symbols. `coder` as in `encode`."""
        shape = tuple(int(s) for s in latent_shape)
        if len(shape) > MAX_DIMS:
            raise CodesError(
                f"entropy codes have a latent shape of {len(shape)} dimensions; at most "
                f"{MAX_DIMS} are allowed"
            )
        if not shape or shape[0] != self.channels or any(s < 1 for s in shape):
            raise CodesError(
                f"entropy codes have latent shape {list(shape)}; this model's symbols have "
                f"{self.channels} channels first"
            )
        if len(stream) % 4:
            raise CodesError(
                f"an entropy stream is a whole number of 32-bit words; got {len(stream)} bytes"
            )
        per_channel = count * math.prod(shape[1:])
        if per_channel * self.channels > MAX_SYMBOLS:
            raise CodesError(
                f"{count} samples of latent shape {list(shape)} are more than the "
                f"{MAX_SYMBOLS:,} symbols one message may hold"
            )
        if per_channel and not stream:
            raise CodesError(f"the entropy stream is empty but codes say count={count}")
        if not self._fits(len(stream), per_channel):
            raise CodesError(
                f"an entropy stream of {len(stream)} bytes cannot hold {count} samples of "
                f"latent shape {list(shape)}; the codes are truncated or their count is wrong"
            )
        use = _pick(coder)
        if use == "python" and per_channel * self.channels > MAX_PYTHON_SYMBOLS:
            raise CodesError(
                f"{count} samples of latent shape {list(shape)} are more than the "
                f"{MAX_PYTHON_SYMBOLS:,} symbols one message may hold where entropy codes are "
                "decoded without constriction (latentwire's own coder); send them in smaller "
                "messages"
            )
        words = np.frombuffer(stream, dtype="<u4").astype(np.uint32)
        try:
            out, intact = decode_words(self._tables(use), words, per_channel, use)
        except (ValueError, RuntimeError, AssertionError) as exc:
            raise CodesError(f"the entropy stream cannot be decoded: {exc}") from None
        if not intact:
            raise CodesError(
                f"the entropy stream ({len(stream)} bytes) is truncated or corrupted: it does "
                f"not decode to exactly {count} samples of latent shape {list(shape)}"
            )
        out += self.offsets[:, None].astype(np.int32)
        rest = shape[1:]
        return np.ascontiguousarray(out.reshape(self.channels, count, *rest).swapaxes(0, 1))
