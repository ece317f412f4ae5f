"""The training loss as one module: reconstruction, plus the rate of the prior (entropy
format) or the neighbourhood terms on the latents (--embed-loss).

Everything a training step differentiates runs inside `Objective.forward()`, so that
`DistributedDataParallel(Objective(...))` synchronises every gradient. DDP arms its
all-reduce hooks inside its own `forward()`: calling submodules of `ddp.module` instead
(`model.encoder`, `prior.bits`, `model.decoder`, as the entropy path once did) trains each
rank on its own gradients, silently (measured: ranks 0.377 apart after one step).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .embed_loss import EmbedTerm
from .models import Autoencoder


class Objective(nn.Module):
    """`forward(inp, target, noise)` -> (loss, code length of the batch in bits, detached;
    0 without a prior).

    Training mode (`.train()`): with a prior, `noise` is the rate's U(-0.5, 0.5) sample in
    the latents' shape (drawn by the caller, so that a generator decides it); the rate is
    taken on the noisy latents and the decoder sees them rounded straight-through. Without
    a prior, the embedding terms (if any) are added. Evaluation mode: latents rounded, no
    embedding terms: the loss validation and early stopping compare.
    """

    def __init__(
        self,
        model: Autoencoder,
        *,
        loss: str = "mse",
        rate_lambda: float = 0.01,
        embed_term: EmbedTerm | None = None,
        device_type: str = "cpu",
        amp_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if loss not in ("mse", "bce"):
            raise ValueError(f"loss must be mse or bce, got {loss!r}")
        self.model = model
        self.loss_name = loss
        self.rate_lambda = rate_lambda
        self.embed_term = embed_term
        self.device_type = device_type
        self.amp_dtype = amp_dtype

    def _autocast(self) -> torch.autocast:
        return torch.autocast(
            self.device_type,
            dtype=self.amp_dtype or torch.float32,
            enabled=self.amp_dtype is not None,
        )

    def distortion(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        out = out.float()
        if self.loss_name == "bce":
            # minmax is fitted on the training split: validation targets may leave [0, 1]
            return F.binary_cross_entropy(out.clamp(1e-6, 1 - 1e-6), target.clamp(0, 1))
        return F.mse_loss(out, target)

    def forward(
        self, inp: torch.Tensor, target: torch.Tensor, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        model, prior = self.model, self.model.prior
        zero = torch.zeros((), device=target.device)
        if prior is None:
            with self._autocast():
                z = model.encoder(inp)
                out = model.decoder(z)
            loss = self.distortion(out, target)
            if self.training and self.embed_term is not None:
                loss = loss + self.embed_term(target, z)
            return loss, zero
        with self._autocast():
            y = model.encoder(inp).float()
            rounded = torch.round(y)
            if self.training:
                if noise is None:
                    raise ValueError("training a model with a prior needs the rate's noise")
                bits = prior.bits(y + noise)
                y_dec = y + (rounded - y).detach()
            else:
                bits = prior.bits(rounded)
                y_dec = rounded
            out = model.decoder(y_dec)
        loss = self.distortion(out, target) + self.rate_lambda * (bits / target.numel())
        return loss, bits.detach()

    def rate_noise(self, n: int, latent: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
        """U(-0.5, 0.5) for `n` samples' latents from `gen` (on the CPU, as drawn before)."""
        return torch.rand((n, *latent), generator=gen, dtype=torch.float32) - 0.5
