"""BinaryGAN objectives on discriminator logits (SPEC section 2).

- ``gan``: non-saturating GAN, ``L_D = BCE(D(x), 1) + BCE(D(G(z)), 0)``,
  ``L_G = BCE(D(G(z)), 1)``.
- ``wgan``: ``L_D = mean D(G(z)) - mean D(x)``, ``L_G = -mean D(G(z))`` (weights clipped by
  the trainer after every D step).
- ``wgangp``: the WGAN losses plus ``gp_weight * mean((||grad D(xhat)||_2 - 1)^2)`` with
  ``xhat = e x + (1 - e) G(z)``, ``e ~ U[0, 1]`` per sample (see :func:`gradient_penalty`).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["discriminator_loss", "generator_loss", "interpolate", "gradient_penalty"]


def discriminator_loss(objective: str, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """D's loss (without the gradient penalty) from its logits on real and generated data."""
    if objective == "gan":
        return F.binary_cross_entropy_with_logits(
            real_logits, torch.ones_like(real_logits)
        ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    if objective in ("wgan", "wgangp"):
        return fake_logits.mean() - real_logits.mean()
    raise ValueError(f"unknown objective {objective!r}; expected gan, wgan or wgangp")


def generator_loss(objective: str, fake_logits: Tensor) -> Tensor:
    """G's loss from D's logits on generated data (non-saturating for the GAN)."""
    if objective == "gan":
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    if objective in ("wgan", "wgangp"):
        return -fake_logits.mean()
    raise ValueError(f"unknown objective {objective!r}; expected gan, wgan or wgangp")


def interpolate(real: Tensor, fake: Tensor, generator: Optional[torch.Generator] = None):
    """``xhat = e * real + (1 - e) * fake`` with one ``e ~ U[0, 1)`` per sample."""
    shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    e = torch.rand(shape, device=real.device, dtype=real.dtype, generator=generator)
    return e * real + (1 - e) * fake


def gradient_penalty(critic: Callable[[Tensor], Tensor], xhat: Tensor) -> Tensor:
    """``mean((||grad_xhat critic(xhat)||_2 - 1)^2)``, differentiable w.r.t. the critic.

    The input gradient is taken with ``create_graph=True`` so that the penalty backpropagates
    into the critic's parameters (a double backward).
    """
    xhat = xhat.detach().requires_grad_(True)
    logits = critic(xhat)
    (grad,) = torch.autograd.grad(logits.sum(), xhat, create_graph=True)
    norms = grad.flatten(1).norm(2, dim=1)
    return ((norms - 1) ** 2).mean()
