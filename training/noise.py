"""Corruptions for denoising training (`latentwire train --noise`).

Spec syntax (one corruption per model):

    gaussian:SIGMA         add N(0, SIGMA^2) noise to every value
    gaussian:LO..HI        blind: each sample gets its own sigma ~ U(LO, HI), so one
                           model serves every noise level in the range
    mask:P                 zero each value with probability P (0 <= P < 1)
    ...:noclip             (gaussian only) keep noisy values outside [0, 1]

Units: SIGMA is in the model's units, i.e. after the package's normalisation. For data
that the normalisation maps to [0, 1] (digits, whose 0..16 values are stored /16; 8-bit
images, /255; `--normalize minmax`) that is a fraction of the full range: 0.1 on an 8-bit
image is 25.5 grey levels. With `--normalize standard` it is in standard deviations of
each feature. The manifest stores the spec as given (training.noise).

Clipping: when the clean values lie in [0, 1] (the data above), noisy values are clipped
to [0, 1] as a sensor that saturates would (the Keras-blog protocol); `:noclip` keeps
them. Data outside [0, 1] is never clipped.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from latentwire.runtime.errors import DataError

__all__ = ["NoiseSpec", "parse_noise", "parse_sigmas", "parse_spec"]

_HELP = (
    "--noise must be gaussian:SIGMA, gaussian:LO..HI (blind: sigma ~ U(LO, HI) per sample) "
    "or mask:P, optionally followed by :noclip (e.g. gaussian:0.3, gaussian:0..0.6)"
)


@dataclass(frozen=True)
class NoiseSpec:
    """A parsed --noise spec."""

    kind: str
    """"gaussian" or "mask"."""
    low: float
    """Sigma (gaussian) or drop probability (mask); the range's lower end when blind."""
    high: float
    """Equal to `low` unless blind."""
    clip: bool = True
    """Gaussian: clip noisy values to [0, 1] when the clean values lie in [0, 1]."""

    @property
    def blind(self) -> bool:
        return self.high > self.low

    def describe(self) -> str:
        """One readable line, e.g. "gaussian sigma ~ U(0, 0.6), clipped to [0, 1]"."""
        if self.kind == "mask":
            return f"mask: each value zeroed with probability {self.low:g}"
        amount = (
            f"sigma ~ U({self.low:g}, {self.high:g}) per sample"
            if self.blind
            else (f"sigma {self.low:g}")
        )
        clip = "clipped to [0, 1] for [0, 1] data" if self.clip else "not clipped"
        return f"gaussian {amount} (model units), {clip}"


def _number(text: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise DataError(f"{_HELP}; got {spec!r}")
    return value


def parse_spec(spec: str) -> NoiseSpec:
    """Parse a --noise spec (see the module docstring); DataError when it is malformed."""
    kind, _, rest = spec.strip().partition(":")
    value, _, option = rest.partition(":")
    if kind not in ("gaussian", "mask") or not value or option not in ("", "noclip"):
        raise DataError(f"{_HELP}; got {spec!r}")
    if kind == "mask" and option:
        raise DataError(f"--noise mask:P takes no :noclip (masking stays in range); got {spec!r}")
    lo_text, dots, hi_text = value.partition("..")
    low = _number(lo_text, spec)
    high = _number(hi_text, spec) if dots else low
    if high < low:
        raise DataError(f"--noise range LO..HI needs LO <= HI; got {spec!r}")
    if kind == "mask":
        if dots:
            raise DataError(f"--noise mask:P takes one probability, not a range; got {spec!r}")
        if not low < 1:
            raise DataError(f"--noise mask:P needs 0 <= P < 1, got {low}")
    return NoiseSpec(kind, low, high, clip=option != "noclip")


def parse_sigmas(text: str) -> tuple[list[float], bool]:
    """`evaluate --noise`: "gaussian:0.1,0.3,0.5" (optionally ":noclip") -> ([0.1, 0.3,
    0.5], clip). Sigmas are in the model's units, as for `train --noise`."""
    kind, _, rest = text.strip().partition(":")
    values, _, option = rest.partition(":")
    hint = "evaluate --noise must be gaussian:SIGMA[,SIGMA...][:noclip], e.g. gaussian:0.1,0.3,0.5"
    if kind != "gaussian" or not values or option not in ("", "noclip"):
        raise DataError(f"{hint}; got {text!r}")
    sigmas = []
    for item in values.split(","):
        try:
            s = float(item)
        except ValueError:
            s = math.nan
        if not math.isfinite(s) or s <= 0:
            raise DataError(f"{hint} (each sigma > 0); got {text!r}")
        sigmas.append(s)
    return sigmas, option != "noclip"


def _in_unit(x: torch.Tensor) -> bool:
    return bool(x.numel()) and float(x.min()) >= 0.0 and float(x.max()) <= 1.0


def parse_noise(spec: str | None) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None:
    """The corruption of a --noise spec as `corrupt(clean_batch, generator) -> noisy`
    (None for no spec). Deterministic for the generator's seed."""
    if not spec:
        return None
    noise = parse_spec(spec)

    def corrupt(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if noise.kind == "mask":
            keep = torch.rand(x.shape, generator=gen, dtype=x.dtype).to(x.device) >= noise.low
            return x * keep
        eps = torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)
        if noise.blind:
            u = torch.rand((len(x),), generator=gen, dtype=x.dtype).to(x.device)
            sigma = (noise.low + (noise.high - noise.low) * u).reshape(-1, *([1] * (x.ndim - 1)))
            noisy = x + sigma * eps
        else:
            noisy = x + noise.low * eps
        return noisy.clamp(0.0, 1.0) if noise.clip and _in_unit(x) else noisy

    return corrupt
