"""Neighbourhood-preserving terms for training latents that work as features
(`latentwire train --embed-loss SPEC`).

A plain reconstruction loss leaves the latent space free to bend neighbourhoods: codes
beat PCA at 2 dimensions on digits but fall behind it at 16 (kNN accuracy and
trustworthiness, ../shared/research/applications.md §3). These terms are computed within
each training batch, between the clean inputs x (normalised units) and their latents z;
the encoder and decoder graphs are unchanged, so export and the runtime are too.

SPEC is one term or several joined by `+`, each `NAME:WEIGHT`:

- `local:W` — neighbour-weighted distance preservation: sum_ij w_ij (|z_i - z_j| -
  |x_i - x_j|)^2 / sum_ij w_ij |x_i - x_j|^2 with w_ij = exp(-|x_i - x_j|^2 / r_i^2), r_i
  the distance from x_i to its 5th nearest neighbour in the batch. It keeps the latents
  in the inputs' units and near-isometric where it matters for neighbours.
- `sne:W` — neighbour-probability matching (stochastic neighbour embedding with each
  point's bandwidth set by its 5th neighbour, in both spaces): KL(P_i || Q_i) averaged
  over the batch. Scale-free, so use it with `local` (which fixes the scale).

Larger batches (--batch-size 128 or more) give each point more neighbours to match.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from latentwire.runtime.errors import DataError

NEIGHBOURS = 5
"""The neighbour whose distance sets each point's bandwidth."""
KINDS = ("local", "sne")

EmbedTerm = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _sq_dists(a: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances between rows (no sqrt: finite gradients at 0)."""
    sq = (a * a).sum(1)
    return (sq[:, None] + sq[None, :] - 2 * a @ a.T).clamp_min(0)


def _bandwidth(d2: torch.Tensor, eye: torch.Tensor) -> torch.Tensor:
    """Each row's squared distance to its NEIGHBOURS-th nearest other row (detached)."""
    k = min(NEIGHBOURS, len(d2) - 1)
    nearest = d2.detach().masked_fill(eye, math.inf).topk(k, largest=False).values
    return nearest[:, -1:].clamp_min(1e-8)


def local_stress(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    eye = torch.eye(len(x), dtype=torch.bool, device=x.device)
    dx2 = _sq_dists(x)
    w = torch.exp(-dx2 / _bandwidth(dx2, eye)).masked_fill(eye, 0)
    dx = dx2.sqrt()
    # clamped: coinciding latents (and the diagonal) get no infinite sqrt gradient
    dz = _sq_dists(z).clamp_min(1e-10).sqrt().masked_fill(eye, 0)
    return (w * (dz - dx) ** 2).sum() / (w * dx2).sum().clamp_min(1e-12)


def sne(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    eye = torch.eye(len(x), dtype=torch.bool, device=x.device)
    dx2, dz2 = _sq_dists(x), _sq_dists(z)
    p = torch.softmax((-dx2 / _bandwidth(dx2, eye)).masked_fill(eye, -math.inf), dim=1)
    log_q = torch.log_softmax((-dz2 / _bandwidth(dz2, eye)).masked_fill(eye, -math.inf), dim=1)
    log_p = torch.log(p.clamp_min(1e-12))
    return (p * (log_p - log_q.masked_fill(eye, 0))).sum(1).mean()


_TERMS: dict[str, EmbedTerm] = {"local": local_stress, "sne": sne}


def parse_embed_loss(spec: str | None) -> EmbedTerm | None:
    """`local:5+sne:0.01` -> a function (x, z) -> weighted sum of the terms, or None."""
    if not spec:
        return None
    terms: list[tuple[float, EmbedTerm]] = []
    for part in spec.split("+"):
        name, _, value = part.strip().partition(":")
        try:
            weight = float(value)
        except ValueError:
            weight = math.nan
        if name not in _TERMS or not math.isfinite(weight) or weight < 0:
            raise DataError(
                f"--embed-loss must be NAME:WEIGHT terms joined by +, NAME one of "
                f"{', '.join(KINDS)} (e.g. local:5 or local:5+sne:0.01), got {spec!r}"
            )
        terms.append((weight, _TERMS[name]))

    def term(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        xf, zf = x.float().reshape(len(x), -1), z.float().reshape(len(z), -1)
        if len(xf) < 3:  # a last batch of one or two samples has no neighbours to keep
            return zf.sum() * 0
        return sum((w * f(xf, zf) for w, f in terms), zf.sum() * 0)

    return term
