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

where :math:`\tilde w` carries no gradient and :math:`\log g` sums over pixels. One D update then
one G update per batch.
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
           "gradient_penalty", "importance_weights", "log_likelihood"]


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
    """Discrete BGAN: ``config.bgan_samples`` samples per z, one D update per G update."""

    outputs = ("logits",)

    @classmethod
    def check(cls, config):
        super().check(config)
        if config.batchnorm != "batch-hidden" or config.d_batchnorm:
            raise ValueError("the bgan networks have train-mode BN in G's hidden layers only: "
                             "batchnorm must be batch-hidden and d_batchnorm off")
        if config.batches != "reuse":
            raise ValueError("bgan trains G on the samples D was trained on: batches must be "
                             f"reuse; got {config.batches!r}")
        if (config.n_critic, config.n_critic_warmup) != (1, 1):
            raise ValueError("bgan does one D step per G step: n_critic and n_critic_warmup "
                             f"must be 1; got {config.n_critic} and {config.n_critic_warmup}")

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self._logits: Optional[tuple[Tensor, Tensor]] = None  # (z, G's logits of z)

    def critic_steps(self, step):
        return 1

    def fake(self, netG, z):
        # G runs once per step, as in their code: the logits keep their graph for g_loss.
        logits = netG(z)  # B x 1 x 28 x 28
        self._logits = (z, logits)
        m = self.config.bgan_samples
        # y = 1[u < sigmoid(l)], the library's stochastic binary neuron, M times per z.
        samples = bn.functional.stochastic_binary(
            logits.detach().unsqueeze(0).expand(m, *logits.shape))
        return samples.flatten(0, 1)  # (M * B) x 1 x 28 x 28, sample-major

    def d_loss(self, netD, real, fake):
        real_logits, fake_logits = netD(real), netD(fake)
        loss = (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
        return {"loss": loss, "d_real": torch.sigmoid(real_logits.detach()).mean(),
                "d_fake": torch.sigmoid(fake_logits.detach()).mean()}

    def g_loss(self, netG, netD, z, fake):
        if fake is None:
            fake = self.fake(netG, z)
        if self._logits is None or self._logits[0] is not z:
            raise RuntimeError("BGAN.g_loss(z, fake) must follow fake(netG, z) of the same z")
        logits = self._logits[1]  # the logits the samples were drawn from, with their graph
        self._logits = None
        samples = fake.view(-1, *logits.shape)  # M x B x 1 x 28 x 28
        with torch.no_grad():
            weights = importance_weights(netD(fake).view(samples.shape[:2]))  # the updated D
        loss = -(weights * log_likelihood(logits, samples)).sum(dim=0).mean()
        return {"loss": loss, "ink_density": samples.mean(),
                "effective_samples": (1.0 / (weights ** 2).sum(dim=0)).mean()}


def gradient_penalty(netD: nn.Module, xhat: Tensor) -> Tensor:
    """``mean((||grad_xhat netD(xhat)||_2 - 1)^2)``, differentiable w.r.t. D's parameters (the
    input gradient is taken with ``create_graph=True``: a double backward)."""
    xhat = xhat.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(netD(xhat).sum(), xhat, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def importance_weights(d_logits: Tensor) -> Tensor:
    r"""BGAN's normalized weights :math:`\tilde w = \mathrm{softmax}_m(D(x_m))`: ``(M, B)``
    logits of D on the samples -> ``(M, B)`` weights, each column summing to 1."""
    dtype = torch.promote_types(d_logits.dtype, torch.float32)  # half types in float32
    return torch.softmax(d_logits, dim=0, dtype=dtype).to(d_logits.dtype)


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
