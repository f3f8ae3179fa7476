r"""Discrete Boundary-Seeking GAN (Hjelm et al., arXiv:1702.08431): the other seed system.

BinaryGAN backpropagates through binary neurons with straight-through estimators. Discrete
BGAN takes another route to binary outputs: no gradient passes through the samples at all. The
generator outputs per-pixel logits :math:`l`, defining
:math:`g(x \mid z) = \prod_i \mathrm{Bernoulli}(x_i; \sigma(l_i))`, and is trained by an
importance-weighted likelihood (a policy gradient):

- for each :math:`z` draw :math:`M` (default 20) samples :math:`x_m \sim g(\cdot \mid z)`;
- :math:`\log w_m = D_\text{logit}(x_m)` (so :math:`w = D / (1 - D)`), normalised over the
  :math:`M` samples of the same :math:`z`: :math:`\tilde w_m = \mathrm{softmax}_m(\log w_m)`;
- :math:`\log g(x_m \mid z) = \sum_i x_{m,i} \log \sigma(l_i)
  + (1 - x_{m,i}) \log(1 - \sigma(l_i))` (a sum over pixels);
- :math:`L_G = -\frac{1}{B} \sum_z \sum_m \mathrm{stopgrad}(\tilde w_m) \log g(x_m \mid z)`, whose
  gradient with respect to the logits is
  :math:`-\frac{1}{B} \sum_m \tilde w_m (x_m - \sigma(l))`;
- :math:`L_D` is the standard GAN cross-entropy with all :math:`M \times B` samples as fakes.

Their setting: one D step then one G step per batch; :math:`z \in [0, 1]^{64}` uniform; Adam with
lr 1e-4 and betas (0.5, 0.999); batch 64; the DCGAN-like networks :class:`DCGANGenerator` and
:class:`DCGANDiscriminator`. :class:`MLPGenerator` (BinaryGAN's MLP sizes with a logits head) and
:func:`mlp_discriminator` (BinaryGAN's MLP discriminator) are the ``mlp-bgan`` variant.

One training step::

    G, D = DCGANGenerator(), DCGANDiscriminator()
    opt_g, opt_d = make_optimizers(G, D)
    gen = torch.Generator().manual_seed(0)
    z = sample_prior(64, generator=gen)
    losses = bgan_step(G, D, opt_g, opt_d, real_batch, z, m=20, generator=gen)
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from binary_neurons.functional import stochastic_binary

from .config import Config
from .models import Discriminator

__all__ = [
    "build_bgan_models",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "MLPGenerator",
    "NUM_SAMPLES",
    "Z_DIM",
    "bgan_discriminator_loss",
    "bgan_generator_loss",
    "bgan_log_likelihood",
    "bgan_step",
    "importance_weights",
    "make_optimizers",
    "mlp_discriminator",
    "sample_bernoulli",
    "sample_prior",
]

#: Latent size of their setting.
Z_DIM = 64
#: Samples per z (M) of their setting.
NUM_SAMPLES = 20


# ----------------------------------------------------------------------------------------------
# Sampling and losses
# ----------------------------------------------------------------------------------------------


def sample_prior(
    batch_size: int, z_dim: int = Z_DIM, generator: Optional[torch.Generator] = None
) -> Tensor:
    """Their prior: ``z ~ U[0, 1)^z_dim``, shape ``(batch_size, z_dim)``."""
    return torch.rand(batch_size, z_dim, generator=generator)


def sample_bernoulli(
    logits: Tensor, m: int = NUM_SAMPLES, generator: Optional[torch.Generator] = None
) -> Tensor:
    r"""Draw ``m`` samples :math:`x \sim \mathrm{Bernoulli}(\sigma(l))` per logit tensor entry.

    No gradient flows through the sampling: the result does not require grad.

    Args:
        logits: per-pixel logits, shape ``(B, *S)``, floating.
        m: samples per ``z`` (per row of ``logits``), ``>= 1``.
        generator: a :class:`torch.Generator` on the logits' device, or ``None`` for the
            default generator.

    Returns:
        ``{0, 1}`` samples of shape ``(m, B, *S)`` and the logits' dtype; ``[k, b]`` is the
        ``k``-th sample for row ``b``.
    """
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise ValueError(f"m (samples per z) must be an integer >= 1, got {m!r}")
    # The library's stochastic binary neuron draws exactly y = 1[u < sigmoid(l)]; detaching
    # its input is what makes the sampling gradient-free.
    expanded = logits.detach().unsqueeze(0).expand(m, *logits.shape)
    return stochastic_binary(expanded, generator=generator)


def _check_sample_shapes(logits: Tensor, samples: Tensor, d_logits: Tensor) -> tuple[int, int]:
    if samples.dim() != logits.dim() + 1 or samples.shape[1:] != logits.shape:
        raise ValueError(
            f"samples must have shape (M, *logits.shape) = (M, {', '.join(map(str, logits.shape))})"
            f", got {tuple(samples.shape)}"
        )
    m, b = samples.shape[:2]
    if d_logits.numel() != m * b:
        raise ValueError(
            f"d_logits_of_samples must hold one logit per sample, M x B = {m} x {b}, shaped "
            f"(M, B) or (M, B, 1) or (M * B,) or (M * B, 1), got {tuple(d_logits.shape)}"
        )
    return m, b


def importance_weights(d_logits_of_samples: Tensor, m: Optional[int] = None) -> Tensor:
    r"""Normalised importance weights :math:`\tilde w = \mathrm{softmax}_m(D_\text{logit}(x_m))`.

    Detached (no gradient flows to D). ``d_logits_of_samples`` is ``(M, B)`` (or anything with
    ``M * B`` elements in sample-major order, then ``m`` must be given); returns ``(M, B)``
    with every column summing to 1.
    """
    d = d_logits_of_samples.detach()
    if m is None:
        if d.dim() < 2:
            raise ValueError("pass m when d_logits_of_samples is flat")
        m = d.shape[0]
    return torch.softmax(d.reshape(m, -1).to(torch.promote_types(d.dtype, torch.float32)), dim=0)


def bgan_log_likelihood(logits: Tensor, samples: Tensor) -> Tensor:
    r""":math:`\log g(x_m \mid z)`, summed over pixels: shape ``(M, B)``.

    Computed as minus the binary cross-entropy with logits, which is stable for large
    :math:`|l|` (it uses :math:`\log \sigma(l)` and :math:`\log(1 - \sigma(l)) = \log\sigma(-l)`).
    """
    per_pixel = -F.binary_cross_entropy_with_logits(
        logits.unsqueeze(0).expand_as(samples), samples.to(logits.dtype), reduction="none"
    )
    return per_pixel.reshape(*samples.shape[:2], -1).sum(dim=2)


def bgan_generator_loss(logits: Tensor, samples: Tensor, d_logits_of_samples: Tensor) -> Tensor:
    r"""Discrete BGAN generator loss.

    .. math::
        L_G = -\frac{1}{B} \sum_{b=1}^{B} \sum_{m=1}^{M}
        \mathrm{stopgrad}(\tilde w_{m,b}) \log g(x_{m,b} \mid z_b)

    Args:
        logits: G's per-pixel logits ``(B, *S)`` (with grad).
        samples: ``(M, B, *S)`` from :func:`sample_bernoulli` on these logits.
        d_logits_of_samples: D's logits on the samples: ``(M, B)``, ``(M, B, 1)``, or flat
            ``(M * B,)`` / ``(M * B, 1)`` in the order of ``samples.flatten(0, 1)``.
    """
    m, _ = _check_sample_shapes(logits, samples, d_logits_of_samples)
    weights = importance_weights(d_logits_of_samples, m).to(logits.dtype)
    return -(weights * bgan_log_likelihood(logits, samples)).sum(dim=0).mean()


def bgan_discriminator_loss(d_logits_real: Tensor, d_logits_fake: Tensor) -> Tensor:
    r"""Standard GAN discriminator loss on logits.

    :math:`L_D = \mathrm{BCE}(D(x), 1) + \mathrm{BCE}(D(x_\text{fake}), 0)`, each a mean; the
    fakes are all :math:`M \times B` generator samples.
    """
    loss_real = F.binary_cross_entropy_with_logits(d_logits_real, torch.ones_like(d_logits_real))
    loss_fake = F.binary_cross_entropy_with_logits(d_logits_fake, torch.zeros_like(d_logits_fake))
    return loss_real + loss_fake


# ----------------------------------------------------------------------------------------------
# Networks (28 x 28)
# ----------------------------------------------------------------------------------------------


class _LogitsGenerator(nn.Module):
    """The BinaryGAN trainer's generator interface for a network whose output is logits."""

    def preactivation(self, z: Tensor) -> Tensor:
        """The per-pixel logits ``l``, ``(B, 1, 28, 28)``."""
        return self(z)

    def probability(self, z: Tensor) -> Tensor:
        """``p = sigmoid(l)``, the probability of each pixel being on."""
        return torch.sigmoid(self(z))


class DCGANGenerator(_LogitsGenerator):
    """Their DCGAN-like generator: ``z (B, z_dim)`` -> per-pixel logits ``(B, 1, 28, 28)``."""

    def __init__(self, z_dim: int = Z_DIM) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.dense = nn.Sequential(
            nn.Linear(z_dim, 1024),
            nn.BatchNorm1d(1024),
            nn.ReLU(),
            nn.Linear(1024, 128 * 7 * 7),
            nn.BatchNorm1d(128 * 7 * 7),
            nn.ReLU(),
        )
        self.deconv = nn.Sequential(
            # out = (in - 1) * 2 - 2 * 2 + 5 + 1 = 2 * in
            nn.ConvTranspose2d(128, 64, 5, stride=2, padding=2, output_padding=1),  # 64 x 14 x 14
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.ConvTranspose2d(64, 1, 5, stride=2, padding=2, output_padding=1),  # 1 x 28 x 28
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.deconv(self.dense(z).view(-1, 128, 7, 7))  # 128 x 7 x 7 -> logits


class DCGANDiscriminator(nn.Module):
    """Their DCGAN-like discriminator, no batch norm: images -> one logit per image ``(N, 1)``.

    Accepts ``(N, 1, 28, 28)``, ``(N, 28, 28)`` or ``(N, 784)``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            # out = (in + 2 * 2 - 5) // 2 + 1 = ceil(in / 2)
            nn.Conv2d(1, 64, 5, stride=2, padding=2),  # 64 x 14 x 14
            nn.LeakyReLU(0.2),
            nn.Conv2d(64, 128, 5, stride=2, padding=2),  # 128 x 7 x 7
            nn.LeakyReLU(0.2),
            nn.Flatten(),  # 6272
            nn.Linear(128 * 7 * 7, 1024),
            nn.LeakyReLU(0.2),
            nn.Linear(1024, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.reshape(-1, 1, 28, 28))


class MLPGenerator(_LogitsGenerator):
    """BinaryGAN's MLP generator sizes with a logits head (``mlp-bgan``).

    ``z (B, z_dim)`` -> dense 1024 -> BN -> ReLU -> dense 784 (logits) -> ``(B, 1, 28, 28)``.
    BinaryGAN's output-layer BN is left out: the logits themselves are the output, and a
    train-mode BN there would pin every pixel's batch-mean logit to its beta (SPEC section 2).
    """

    def __init__(self, z_dim: int = Z_DIM) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.net = nn.Sequential(
            nn.Linear(z_dim, 1024),
            nn.BatchNorm1d(1024),
            nn.ReLU(),
            nn.Linear(1024, 28 * 28),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(-1, 1, 28, 28)


def mlp_discriminator() -> nn.Module:
    """BinaryGAN's MLP discriminator (``models.Discriminator``, arch ``mlp``, no batch norm):
    flatten 784 -> dense 512 -> LReLU(0.2) -> dense 256 -> LReLU(0.2) -> dense 1, one logit per
    image, shape ``(N,)``. PyTorch's default initialisation, like the other BGAN networks."""
    return Discriminator(Config(arch="mlp", d_batchnorm=False))


def build_bgan_models(config: Config) -> tuple[nn.Module, nn.Module]:
    """G and D of the ``mlp-bgan`` / ``cnn-bgan`` presets (PyTorch's default initialization)."""
    if config.arch == "mlp":
        return MLPGenerator(config.latent_dim), mlp_discriminator()
    return DCGANGenerator(config.latent_dim), DCGANDiscriminator()


# ----------------------------------------------------------------------------------------------
# Training step
# ----------------------------------------------------------------------------------------------


def make_optimizers(
    generator_net: nn.Module, discriminator_net: nn.Module, lr: float = 1e-4,
    betas: tuple[float, float] = (0.5, 0.999),
) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """Their optimizers: Adam, lr 1e-4, betas (0.5, 0.999), for G and for D."""
    return (
        torch.optim.Adam(generator_net.parameters(), lr=lr, betas=betas),
        torch.optim.Adam(discriminator_net.parameters(), lr=lr, betas=betas),
    )


def bgan_step(
    G: nn.Module,
    D: nn.Module,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    real_batch: Tensor,
    z: Tensor,
    m: int = NUM_SAMPLES,
    generator: Optional[torch.Generator] = None,
) -> dict[str, float]:
    """One discrete-BGAN iteration: one D step, then one G step.

    G runs once on ``z``; ``m`` samples per ``z`` are drawn from its logits. D is updated on
    ``real_batch`` against all ``m x B`` samples; then the importance weights are computed
    by the *updated* D on the same samples, and G is updated with
    :func:`bgan_generator_loss`.

    Args:
        G, D: generator (``z -> logits (B, 1, 28, 28)``) and discriminator (images ->
            ``(N, 1)`` logits), in training mode.
        opt_g, opt_d: their optimizers.
        real_batch: real binary images ``(B', 1, 28, 28)`` (or any shape D accepts), floating.
        z: latent batch ``(B, z_dim)``.
        m: samples per ``z``.
        generator: the :class:`torch.Generator` for the Bernoulli samples.

    Returns:
        ``{"loss_d", "loss_g", "d_real", "d_fake", "ink_density", "effective_samples"}``:
        losses, D's mean probability on real and fake, the samples' ink density, and the mean
        effective sample size ``1 / sum_m w~_m^2`` of the weights (1 = one sample dominates,
        ``m`` = uniform).
    """
    if not real_batch.is_floating_point():
        raise ValueError(
            f"real_batch must be a floating tensor of 0/1 values, got dtype {real_batch.dtype}"
        )
    logits = G(z)
    samples = sample_bernoulli(logits, m, generator)  # M x B x 1 x 28 x 28, no grad
    fakes = samples.flatten(0, 1)

    # ---- update D: real vs all M x B samples ----
    d_real = D(real_batch)
    d_fake = D(fakes)
    loss_d = bgan_discriminator_loss(d_real, d_fake)
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()

    # ---- update G: importance weights from the updated D ----
    with torch.no_grad():
        d_fake_new = D(fakes)
    loss_g = bgan_generator_loss(logits, samples, d_fake_new)
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()

    weights = importance_weights(d_fake_new, m)
    return {
        "loss_d": loss_d.item(),
        "loss_g": loss_g.item(),
        "d_real": float(torch.sigmoid(d_real.detach()).mean()),
        "d_fake": float(torch.sigmoid(d_fake.detach()).mean()),
        "ink_density": float(samples.mean()),
        "effective_samples": float((1.0 / (weights**2).sum(dim=0)).mean()),
    }
