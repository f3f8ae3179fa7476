r"""The training objectives, one small class each: GAN, WGAN, WGAN-GP and discrete BGAN.

An objective decides everything that differs between them, and the trainer nothing:

- :meth:`~Objective.optimizer`: the optimizer of G and of D;
- :meth:`~Objective.critic_steps`: how many D updates come before G update number ``step``;
- :meth:`~Objective.fake`: the generated images D is trained on (no gradient reaches G through
  them; BGAN keeps G's logits for the :meth:`~Objective.g_loss` of the same z that follows);
- :meth:`~Objective.d_loss` and :meth:`~Objective.g_loss`: the losses, with the statistics
  the trainer logs;
- :meth:`~Objective.after_d_step`: anything done to D after its update (WGAN's clipping).

Adding an objective is a subclass here and a name in :data:`OBJECTIVES`; :meth:`~Objective.check`
tells the configuration what else it requires.

BinaryGAN's three (D's output is a logit, no activation):

- ``gan`` (non-saturating): :math:`L_D = \mathrm{BCE}(D(x), 1) + \mathrm{BCE}(D(G(z)), 0)`,
  :math:`L_G = \mathrm{BCE}(D(G(z)), 1)`;
- ``wgan``: :math:`L_D = \overline{D(G(z))} - \overline{D(x)}`, :math:`L_G = -\overline{D(G(z))}`,
  RMSProp, D's weights clipped to :math:`[-c, c]` after every update;
- ``wgangp``: WGAN's losses with Adam and :math:`\lambda\, \overline{(\lVert \nabla
  D(\hat x) \rVert_2 - 1)^2}` added to :math:`L_D`, :math:`\hat x = e x + (1 - e) G(z)`,
  :math:`e \sim U[0, 1]` per example.

They share a critic schedule: ``n_critic_warmup`` D updates before each of the first
``warmup_steps`` G updates and every ``boost_every``-th one, else ``n_critic``.

Discrete BGAN (Hjelm et al., arXiv:1702.08431) takes another route to binary outputs: no
gradient passes through a sample. G outputs per-pixel logits :math:`l`, defining
:math:`g(x \mid z) = \prod_i \mathrm{Bernoulli}(x_i; \sigma(l_i))`; for each :math:`z`,
:math:`M` samples :math:`x_m \sim g(\cdot \mid z)` are drawn and D is trained on all of them as
fakes (cross-entropy). G follows an importance-weighted likelihood: with
:math:`\log w_m = D(x_m)` (so :math:`w = D / (1 - D)`) normalized over the :math:`M` samples of
the same :math:`z`, :math:`\tilde w_m = \mathrm{softmax}_m(\log w_m)`,

.. math::
    L_G = -\frac{1}{B} \sum_{b} \sum_{m} \tilde w_{m,b} \log g(x_{m,b} \mid z_b),

where :math:`\tilde w` carries no gradient and :math:`\log g` sums over pixels: REINFORCE with
the learning signal :math:`-M \tilde w` per sample, which is how it runs (G's output layer is a
``StochasticBinary(estimator="reinforce")`` and the update goes through
:func:`binary_neurons.reinforce_loss`). One D update then one G update per batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import binary_neurons as bn

if TYPE_CHECKING:  # config.py validates its objective with OBJECTIVES below
    from .config import Config

__all__ = ["Objective", "GAN", "WGAN", "WGANGP", "BGAN", "OBJECTIVES", "make_objective",
           "error_weighted_gradient_norm", "gradient_penalty", "importance_weights",
           "log_likelihood", "weighted_log_likelihood_loss"]


class Objective:
    """BinaryGAN's shape of a step: D on ``G(z)``, G through D; Adam with the config's betas."""

    #: The generator outputs this objective trains (the config's ``output``).
    outputs: tuple[str, ...] = ("dbn", "sbn", "real")

    def __init__(self, config: Config) -> None:
        self.config = config

    @classmethod
    def check(cls, config: Config) -> None:
        """Raise ``ValueError`` if ``config`` does not suit this objective."""
        if config.output not in cls.outputs:
            raise ValueError(f"objective {config.objective!r} trains output "
                             f"{' or '.join(cls.outputs)}; got output {config.output!r}")

    def optimizer(self, module: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.Adam(module.parameters(), lr=self.config.lr, betas=self.config.betas)

    def critic_steps(self, step: int) -> int:
        c = self.config
        if step < c.warmup_steps or step % c.boost_every == 0:
            return c.n_critic_warmup
        return c.n_critic

    def fake(self, netG: nn.Module, z: Tensor) -> Tensor:
        with torch.no_grad():
            return netG(z)  # binary samples (p for the real-valued model)

    def d_loss(self, netD: nn.Module, real: Tensor, fake: Tensor) -> dict[str, Tensor]:
        """``{"loss": the loss to minimize, ...}``; every other entry is logged."""
        raise NotImplementedError

    def g_loss(self, netG: nn.Module, netD: nn.Module, z: Tensor,
               fake: Optional[Tensor]) -> dict[str, Tensor]:
        """``fake`` is :meth:`fake` of the same ``z`` (None when the batch is fresh)."""
        return {"loss": self.generator_loss(netD(netG(z)))}

    def generator_loss(self, fake_logits: Tensor) -> Tensor:
        raise NotImplementedError

    def after_d_step(self, netD: nn.Module) -> None:
        pass


class GAN(Objective):
    """Non-saturating GAN with binary cross-entropy on D's logits."""

    def d_loss(self, netD, real, fake):
        real_logits, fake_logits = netD(real), netD(fake)
        loss = (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
        return {"loss": loss}

    def generator_loss(self, fake_logits):
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


class WGAN(Objective):
    """Wasserstein GAN with weight clipping and RMSProp."""

    def optimizer(self, module):
        return torch.optim.RMSprop(module.parameters(), lr=self.config.lr)

    def d_loss(self, netD, real, fake):
        return {"loss": netD(fake).mean() - netD(real).mean()}

    def generator_loss(self, fake_logits):
        return -fake_logits.mean()

    def after_d_step(self, netD):
        with torch.no_grad():
            for parameter in netD.parameters():
                parameter.clamp_(-self.config.clip_value, self.config.clip_value)


class WGANGP(Objective):
    """Wasserstein GAN with a gradient penalty and Adam; ``d_loss`` logs the penalty."""

    def d_loss(self, netD, real, fake):
        wasserstein = netD(fake).mean() - netD(real).mean()
        e = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), device=real.device,
                       dtype=real.dtype)
        gp = gradient_penalty(netD, e * real + (1 - e) * fake)
        # The logged D loss is the Wasserstein term alone, as for WGAN.
        return {"loss": wasserstein + self.config.gp_weight * gp, "d_loss": wasserstein,
                "gp": gp}

    generator_loss = WGAN.generator_loss


class BGAN(Objective):
    """Discrete BGAN: ``config.bgan_samples`` samples per z, one D update per G update.

    G's update is the library's REINFORCE: G's output layer is a ``StochasticBinary`` with
    ``estimator="reinforce"``, and :func:`binary_neurons.reinforce_loss` with the learning
    signal ``-M w~`` per sample (no baseline, averaged over the ``M B`` samples) has exactly the
    gradient of ``-1/B sum_b sum_m w~ log g(x | z)``: REINFORCE's ``(y - p) dl`` is
    ``d log g``.
    """

    outputs = ("logits",)

    @classmethod
    def check(cls, config):
        super().check(config)
        if config.batchnorm != "batch-hidden" or config.d_batchnorm:
            raise ValueError("the bgan networks have train-mode BN in G's hidden layers only: "
                             "batchnorm must be batch-hidden and d_batchnorm off")
        if (config.n_critic, config.n_critic_warmup) != (1, 1):
            raise ValueError("bgan does one D step per G step: n_critic and n_critic_warmup "
                             f"must be 1; got {config.n_critic} and {config.n_critic_warmup}")

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        # With batches "reuse", the D step's draw, kept (with G's graph) for the G step.
        self._drawn: Optional[tuple[Tensor, Tensor, Tensor]] = None  # (z, logits, samples)

    def critic_steps(self, step):
        return 1

    def _draw(self, netG: nn.Module, z: Tensor) -> tuple[Tensor, Tensor]:
        """G's logits of ``z`` and M samples of each (sample-major), recorded by G's REINFORCE
        layer when autograd records."""
        return netG(z, samples_per_z=self.config.bgan_samples)

    def fake(self, netG, z):
        if self.config.batches == "fresh":  # the G step draws its own
            with torch.no_grad():
                return self._draw(netG, z)[1]
        logits, samples = self._draw(netG, z)  # G runs once per step, as in their code
        self._drawn = (z, logits, samples)
        return samples.detach()  # (M * B) x 1 x 28 x 28; D's gradient stops here

    def d_loss(self, netD, real, fake):
        weight = self.config.d_penalty
        real = real.detach().requires_grad_(weight > 0)
        fake = fake.detach().requires_grad_(weight > 0)
        real_logits, fake_logits = netD(real), netD(fake)
        loss = (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
        out = {"d_real": torch.sigmoid(real_logits.detach()).mean(),
               "d_fake": torch.sigmoid(fake_logits.detach()).mean()}
        if weight > 0:
            penalty = 0.5 * (error_weighted_gradient_norm(real_logits, real, target=1.0)
                             + error_weighted_gradient_norm(fake_logits, fake, target=0.0))
            loss = loss + weight * penalty
            out["d_penalty"] = penalty.detach()
        return {"loss": loss, **out}

    def g_loss(self, netG, netD, z, fake):
        """``fake``: :meth:`fake` of the same ``z`` (the draw G's layer recorded then), or None
        for a fresh draw."""
        m = self.config.bgan_samples
        if fake is None:
            logits, samples = self._draw(netG, z)
        elif self._drawn is None or self._drawn[0] is not z:
            raise RuntimeError("BGAN.g_loss(z, fake) must follow fake(netG, z) of the same z")
        else:
            _, logits, samples = self._drawn  # the draw D was trained on
        self._drawn = None
        with torch.no_grad():
            weights = importance_weights(netD(samples).view(m, -1),  # the updated D, M x B
                                         per_z=self.config.bgan_weights == "per-z")
            value = weighted_log_likelihood_loss(logits, samples.view(m, *logits.shape), weights)
        # Its value is 0 and its gradient BGAN's; the logged loss is BGAN's value.
        term = bn.reinforce_loss(netG, -m * weights.flatten(), baseline=0.0)
        # (sum w)^2 / sum w^2 per z: 1 / sum w^2 for weights normalized per z, 1 to M.
        effective = weights.sum(dim=0).square() / weights.square().sum(dim=0).clamp_min(1e-30)
        return {"loss": term + value, "ink_density": samples.mean(),
                "effective_samples": effective.mean()}


def weighted_log_likelihood_loss(logits: Tensor, samples: Tensor, weights: Tensor) -> Tensor:
    r"""BGAN's generator loss :math:`-\frac{1}{B} \sum_b \sum_m \tilde w_{m,b} \log
    g(x_{m,b} \mid z_b)` from logits ``(B, ...)``, samples ``(M, B, ...)`` and weights
    ``(M, B)``; differentiated w.r.t. the logits, it is what the REINFORCE term of
    :meth:`BGAN.g_loss` computes (a test compares them)."""
    return -(weights * log_likelihood(logits, samples)).sum(dim=0).mean()


def error_weighted_gradient_norm(logits: Tensor, x: Tensor, target: float) -> Tensor:
    r"""The BGAN authors' D penalty, one side: the mean over the batch of
    :math:`(t - \sigma(D(x)))^2 \lVert \nabla_x D(x) \rVert^2`, differentiable w.r.t. D's
    parameters (``x`` must require grad; a double backward)."""
    (grad,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
    error = (target - torch.sigmoid(logits)).square().flatten()
    return (error * grad.flatten(1).square().sum(dim=1)).mean()


def gradient_penalty(netD: nn.Module, xhat: Tensor) -> Tensor:
    """``mean((||grad_xhat netD(xhat)||_2 - 1)^2)``, differentiable w.r.t. D's parameters (the
    input gradient is taken with ``create_graph=True``: a double backward)."""
    xhat = xhat.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(netD(xhat).sum(), xhat, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def importance_weights(d_logits: Tensor, per_z: bool = True) -> Tensor:
    r"""BGAN's normalized weights :math:`\tilde w = \mathrm{softmax}_m(D(x_m))`: ``(M, B)``
    logits of D on the samples -> ``(M, B)`` weights, each column summing to 1. With
    ``per_z=False``, normalized over all ``M B`` samples instead, times ``B`` (so they sum to
    ``B`` as the per-z weights do)."""
    dtype = torch.promote_types(d_logits.dtype, torch.float32)  # half types in float32
    if per_z:
        return torch.softmax(d_logits, dim=0, dtype=dtype).to(d_logits.dtype)
    flat = torch.softmax(d_logits.flatten(), dim=0, dtype=dtype) * d_logits.shape[1]
    return flat.view(d_logits.shape).to(d_logits.dtype)


def log_likelihood(logits: Tensor, samples: Tensor) -> Tensor:
    r""":math:`\log g(x_m \mid z)` summed over pixels, ``(M, B)``, from logits ``(B, ...)``
    and samples ``(M, B, ...)``; minus the binary cross-entropy with logits, stable for large
    :math:`|l|`."""
    per_pixel = -F.binary_cross_entropy_with_logits(
        logits.unsqueeze(0).expand_as(samples), samples.to(logits.dtype), reduction="none")
    return per_pixel.reshape(*samples.shape[:2], -1).sum(dim=2)


#: Objective name (the config's ``objective``) -> class.
OBJECTIVES: dict[str, type[Objective]] = {"gan": GAN, "wgan": WGAN, "wgangp": WGANGP,
                                          "bgan": BGAN}


def make_objective(config: Config) -> Objective:
    return OBJECTIVES[config.objective](config)
