"""The learned factorised prior of the `entropy` code format (Ballé et al. 2018, "Variational
image compression with a scale hyperprior", appendix 6.1; CompressAI's EntropyBottleneck).

Each latent channel has its own univariate density, defined by a small monotone network
that maps a value to the logit of its cumulative distribution. The probability of an
integer symbol k is c(k + 0.5) - c(k - 0.5). Training adds uniform noise U(-0.5, 0.5) to
the latents for the rate term (a differentiable stand-in for rounding); export turns the
density into integer frequency tables (latentwire.runtime.entropy) on the support seen in
training, which is what the edge encoder and the server decoder code with.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from latentwire.runtime.entropy import MAX_SUPPORT, FactorizedPrior


class DensityModel(nn.Module):
    """Per-channel cumulative density c(x) = sigmoid(f(x)), f monotone in x."""

    def __init__(
        self, channels: int, filters: tuple[int, ...] = (3, 3, 3), init_scale: float = 10.0
    ):
        super().__init__()
        self.channels = channels
        dims = (1, *filters, 1)
        scale = init_scale ** (1 / (len(dims) - 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(dims) - 1):
            init = math.log(math.expm1(1 / scale / dims[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, dims[i + 1], dims[i]), init)))
            self.biases.append(nn.Parameter(torch.rand(channels, dims[i + 1], 1) - 0.5))
            if i < len(dims) - 2:
                self.factors.append(nn.Parameter(torch.zeros(channels, dims[i + 1], 1)))

    def logits_cumulative(self, x: torch.Tensor) -> torch.Tensor:
        """x (C, 1, M) -> logits of the CDF, (C, 1, M)."""
        logits = x
        for i, (m, b) in enumerate(zip(self.matrices, self.biases, strict=True)):
            logits = torch.matmul(F.softplus(m), logits) + b
            if i < len(self.factors):
                logits = logits + torch.tanh(self.factors[i]) * torch.tanh(logits)
        return logits

    def _mass(self, v: torch.Tensor) -> torch.Tensor:
        """P(value in [v - 0.5, v + 0.5]) for v (C, 1, M), evaluated in the stable tail."""
        lower = self.logits_cumulative(v - 0.5)
        upper = self.logits_cumulative(v + 0.5)
        sign = -torch.sign(lower + upper).detach()
        return torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))

    def likelihood(self, y: torch.Tensor) -> torch.Tensor:
        """P(round(y) = y) under the density, for y (B, C, ...) (integers or noisy values)."""
        c = self.channels
        v = y.transpose(0, 1).reshape(c, 1, -1).float()
        lik = self._mass(v).clamp_min(1e-9)
        shape = (y.shape[1], y.shape[0], *y.shape[2:])
        return lik.reshape(shape).transpose(0, 1)

    def bits(self, y: torch.Tensor) -> torch.Tensor:
        """Code length in bits of the batch (a scalar)."""
        return -torch.log2(self.likelihood(y)).sum()

    @torch.no_grad()
    def tables(self, symbols: np.ndarray, margin: int = 2) -> FactorizedPrior:
        """Integer frequency tables on each channel's support: the symbols seen in training
        (N, C, ...) plus `margin` on each side; the rest of the line is clipped away."""
        flat = symbols.swapaxes(0, 1).reshape(self.channels, -1)
        offsets, pmfs = [], []
        for ch in range(self.channels):
            lo, hi = int(flat[ch].min()) - margin, int(flat[ch].max()) + margin
            if hi - lo + 1 > MAX_SUPPORT:
                mid = int(np.median(flat[ch]))
                lo, hi = mid - MAX_SUPPORT // 2, mid + MAX_SUPPORT // 2 - 1
            k = torch.arange(lo, hi + 1, dtype=torch.float32)
            v = torch.zeros(self.channels, 1, len(k))
            v[ch, 0] = k
            pmf = self._mass(v)[ch, 0]
            offsets.append(lo)
            pmfs.append(pmf.double().numpy() + 1e-12)
        return FactorizedPrior.from_pmfs(offsets, pmfs)
