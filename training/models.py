"""Autoencoders. Each keeps `encoder` and `decoder` as separate submodules (CompressAI's
g_a / g_s split), so each exports to its own ONNX graph."""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .prior import DensityModel


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of an autoencoder; stored in checkpoints and the manifest."""

    kind: str
    """"dense" (any sample shape, flattened) or "conv" (images (C, H, W))."""
    input_shape: tuple[int, ...]
    """Per-sample input shape seen at training time."""
    latent_dim: int
    """Dense: latent size K. Conv: latent channels K (latent is (K, H/s, W/s))."""
    hidden: tuple[int, ...] = (128, 64)
    """Dense: hidden layer widths of the encoder (the decoder mirrors them)."""
    channels: tuple[int, ...] = (64, 96, 128)
    """Conv: channels of the stride-2 stages; the total stride is 2 ** len(channels)."""
    activation: str = "gelu"
    """Conv: the nonlinearity between stages, "gelu" or "gdn" (generalised divisive
    normalisation in the encoder, its inverse in the decoder: Ballé et al.'s image codecs)."""
    output_activation: str = "sigmoid"
    """"sigmoid" when training data (after normalisation) lies in [0, 1], else "identity"."""
    prior: bool = False
    """Integer latents with a learned factorised prior (the `entropy` code format)."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def stride(self) -> int:
        return 2 ** len(self.channels) if self.kind == "conv" else 1

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"], d["hidden"], d["channels"] = (
            list(self.input_shape),
            list(self.hidden),
            list(self.channels),
        )
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        return cls(
            kind=d["kind"],
            input_shape=tuple(d["input_shape"]),
            latent_dim=int(d["latent_dim"]),
            hidden=tuple(d["hidden"]),
            channels=tuple(d["channels"]),
            activation=d.get("activation", "gelu"),
            output_activation=d["output_activation"],
            prior=bool(d.get("prior", False)),
            extra=dict(d.get("extra", {})),
        )


def _forward(model: DenseAutoencoder | ConvAutoencoder, x: torch.Tensor) -> torch.Tensor:
    """Reconstruction as deployed: latents rounded to integers when there is a prior."""
    z = model.encoder(x)
    if model.prior is not None:
        z = torch.round(z)
    return model.decoder(z)  # type: ignore[no-any-return]


def _activation(name: str) -> nn.Module:
    return nn.Sigmoid() if name == "sigmoid" else nn.Identity()


class DenseAutoencoder(nn.Module):
    """x -> Flatten -> [Linear, GELU] * len(hidden) -> Linear(K) = z, and the mirror back."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        dim = math.prod(cfg.input_shape)
        widths = [dim, *cfg.hidden]
        enc: list[nn.Module] = [nn.Flatten()]
        for a, b in itertools.pairwise(widths):
            enc += [nn.Linear(a, b), nn.GELU()]
        enc.append(nn.Linear(widths[-1], cfg.latent_dim))
        dec: list[nn.Module] = []
        back = [cfg.latent_dim, *reversed(cfg.hidden)]
        for a, b in itertools.pairwise(back):
            dec += [nn.Linear(a, b), nn.GELU()]
        dec += [
            nn.Linear(back[-1], dim),
            _activation(cfg.output_activation),
            nn.Unflatten(1, cfg.input_shape),
        ]
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)
        self.prior = DensityModel(cfg.latent_dim) if cfg.prior else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _forward(self, x)


class GDN(nn.Module):
    """Generalised divisive normalisation (Ballé et al. 2016):
    y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2), or x_i * sqrt(...) when `inverse`.

    beta and gamma are kept non-negative by storing their square roots (with CompressAI's
    small pedestal, so gradients stay well behaved near zero). Exports as Mul, Conv, Sqrt.
    """

    _PEDESTAL = 2.0**-18

    def __init__(self, channels: int, *, inverse: bool = False, gamma_init: float = 0.1):
        super().__init__()
        self.inverse = inverse
        ped = self._PEDESTAL
        self.beta = nn.Parameter(torch.sqrt(torch.ones(channels) + ped))
        self.gamma = nn.Parameter(torch.sqrt(gamma_init * torch.eye(channels) + ped))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ped = self._PEDESTAL
        c = self.beta.shape[0]
        beta = self.beta.clamp(min=(1e-6 + ped) ** 0.5) ** 2 - ped
        gamma = self.gamma.clamp(min=ped**0.5) ** 2 - ped
        norm = torch.sqrt(nn.functional.conv2d(x * x, gamma.reshape(c, c, 1, 1), beta))
        return x * norm if self.inverse else x / norm


def _conv_activation(name: str, channels: int, *, inverse: bool) -> nn.Module:
    if name == "gdn":
        return GDN(channels, inverse=inverse)
    if name == "gelu":
        return nn.GELU()
    raise ValueError(f"unknown conv activation {name!r}; use gelu or gdn")


class ConvAutoencoder(nn.Module):
    """Fully convolutional: stride-2 5x5 conv stages down, transposed convs back up, GELU or
    GDN between them.

    Any image whose height and width are multiples of 2 ** len(channels) works.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        c_in = cfg.input_shape[0]
        enc: list[nn.Module] = []
        prev = c_in
        for c in cfg.channels:
            act = _conv_activation(cfg.activation, c, inverse=False)
            enc += [nn.Conv2d(prev, c, 5, stride=2, padding=2), act]
            prev = c
        enc.append(nn.Conv2d(prev, cfg.latent_dim, 3, padding=1))
        dec: list[nn.Module] = [
            nn.Conv2d(cfg.latent_dim, prev, 3, padding=1),
            _conv_activation(cfg.activation, prev, inverse=True),
        ]
        ups = [*reversed(cfg.channels[:-1]), c_in]
        for i, c in enumerate(ups):
            dec.append(nn.ConvTranspose2d(prev, c, 5, stride=2, padding=2, output_padding=1))
            if i < len(ups) - 1:
                dec.append(_conv_activation(cfg.activation, c, inverse=True))
            prev = c
        dec.append(_activation(cfg.output_activation))
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)
        self.prior = DensityModel(cfg.latent_dim) if cfg.prior else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _forward(self, x)


Autoencoder = DenseAutoencoder | ConvAutoencoder


def build_model(cfg: ModelConfig) -> Autoencoder:
    if cfg.kind == "dense":
        return DenseAutoencoder(cfg)
    if cfg.kind == "conv":
        if len(cfg.input_shape) != 3:
            raise ValueError(
                f"the conv model needs images (C, H, W), got samples of shape {cfg.input_shape}"
            )
        return ConvAutoencoder(cfg)
    raise ValueError(f"unknown model kind {cfg.kind!r}; use dense or conv")


def latent_shape(cfg: ModelConfig, input_shape: tuple[int, ...] | None = None) -> tuple[int, ...]:
    shape = input_shape or cfg.input_shape
    if cfg.kind == "dense":
        return (cfg.latent_dim,)
    return (cfg.latent_dim, shape[1] // cfg.stride, shape[2] // cfg.stride)
