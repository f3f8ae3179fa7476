"""Every network of the example: BinaryGAN's generators and discriminators (MLP and CNN) and
discrete BGAN's logits generators and DCGAN-like discriminator.

All generators share one interface, which is all the trainer and ``generate`` use:

- ``netG.logits(z)``: the output unit's input ``a`` (BinaryGAN) or the per-pixel logits ``l``
  (BGAN), ``N x 1 x 28 x 28``;
- ``netG.probability(z)``: the probability of each pixel being on, ``p = sigmoid(slope * a)``
  (what the paper calls the preactivated output) or ``sigmoid(l)``;
- ``netG(z, rng=None)``: what the discriminator sees in training: binary samples from the
  binary-neuron layer, ``p`` itself for the real-valued model, the logits for BGAN (whose
  objective draws its own samples);
- ``netG.binary_samples(z, rng, binarize)``: hard 0/1 samples in evaluation mode, the one place
  where a generator's output is turned into binary images.

Every discriminator maps ``N x 1 x 28 x 28`` images to one logit per image, shape ``N``.
"""

from __future__ import annotations

import copy
import math
from typing import Optional

import torch
from torch import Tensor, nn

import binary_neurons as bn

from .config import Config

__all__ = ["AffineNorm", "Generator", "Discriminator", "LogitsGenerator",
           "DCGANDiscriminator", "MovingAverage", "build_models", "sample_latent",
           "count_parameters"]

IMAGE = (1, 28, 28)
BN_EPS = 1e-3  # TensorFlow's batch-norm default


class AffineNorm(nn.Module):
    r"""What the TF code's "batch normalization" computed: BN frozen in inference mode.

    With moving mean 0 and moving variance 1 that never update, BN reduces to a learnable
    per-unit (per-channel for images) affine map :math:`\gamma x / \sqrt{1 + \epsilon} + \beta`.
    It has the parameter count of BN and no batch statistics.
    """

    def __init__(self, num_features: int, eps: float = BN_EPS) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, input: Tensor) -> Tensor:
        shape = (1, self.num_features) + (1,) * (input.dim() - 2)
        scale = self.weight / math.sqrt(1.0 + self.eps)
        return input * scale.view(shape) + self.bias.view(shape)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps:g}"


def norm_layer(kind: str, num_features: int, images: bool, output: bool = False) -> nn.Module:
    """``kind`` is the config's ``batchnorm``; ``output`` marks G's output layer."""
    if kind == "affine" or (kind == "batch-hidden" and output):
        return AffineNorm(num_features)
    # TF's decay 0.99 is PyTorch's momentum 0.01.
    cls = nn.BatchNorm2d if images else nn.BatchNorm1d
    return cls(num_features, eps=BN_EPS, momentum=0.01)


class SigmoidOutput(nn.Module):
    """The real-valued baseline's output unit: ``p = sigmoid(a)``, which D sees directly."""

    def forward(self, input: Tensor, rng: Optional[torch.Generator] = None) -> Tensor:
        return torch.sigmoid(input)

    def probability(self, input: Tensor) -> Tensor:
        return torch.sigmoid(input)


def output_unit(config: Config) -> nn.Module:
    if config.output == "real":
        return SigmoidOutput()
    if config.constant_slope is None:
        estimator, slope = "annealed", 1.0
    else:  # the TF code's (inert) annealing: sigmoid-adjusted ST at a fixed slope
        estimator, slope = "sigmoid", config.constant_slope
    if config.output == "dbn":
        return bn.DeterministicBinary(estimator=estimator, slope=slope)
    return bn.StochasticBinary(estimator=estimator, slope=slope)


class _GeneratorBase(nn.Module):
    """The shared generator interface (see the module docstring)."""

    def logits(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def probability(self, z: Tensor) -> Tensor:
        return torch.sigmoid(self.logits(z))

    @torch.no_grad()
    def binary_samples(self, z: Tensor, rng: Optional[torch.Generator] = None,
                       binarize: str = "sample") -> Tensor:
        """Binary images (``N x 1 x 28 x 28`` of 0/1) in evaluation mode, drawn from ``rng``.

        A model whose pixels are probabilities (the real-valued baseline, BGAN) is binarized
        by ``binarize``: ``"threshold"`` (p > 0.5) or ``"sample"`` (a Bernoulli draw, the
        same draw as a stochastic binary neuron's, ``1[u < p]``). Binary-neuron generators
        sample themselves.
        """
        was_training = self.training
        self.eval()
        try:
            return self._binary_samples(z, rng, binarize)
        finally:
            self.train(was_training)

    def _binary_samples(self, z: Tensor, rng, binarize: str) -> Tensor:
        logits = self.logits(z)  # p = sigmoid(logits) for both such models
        if binarize == "threshold":
            return (logits > 0).to(logits.dtype)
        return bn.functional.stochastic_binary(logits, generator=rng)


class Generator(_GeneratorBase):
    """BinaryGAN's G: z (N x 128) -> a (N x 1 x 28 x 28) -> binary-neuron (or sigmoid) output."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        norm, z = config.batchnorm, config.latent_dim
        if config.arch == "mlp":
            self.body = nn.Sequential(
                nn.Linear(z, 1024), norm_layer(norm, 1024, False), nn.ReLU(),  # N x 1024
                nn.Linear(1024, 784), norm_layer(norm, 784, False, output=True),  # N x 784
                nn.Unflatten(1, IMAGE),  # N x 1 x 28 x 28
            )
        else:
            self.body = nn.Sequential(
                nn.Unflatten(1, (z, 1, 1)),  # N x 128 x 1 x 1
                nn.ConvTranspose2d(z, 128, 2, 1), norm_layer(norm, 128, True), nn.ReLU(),  # 2x2
                nn.ConvTranspose2d(128, 64, 4, 2), norm_layer(norm, 64, True), nn.ReLU(),  # 6x6
                nn.ConvTranspose2d(64, 32, 3, 2), norm_layer(norm, 32, True), nn.ReLU(),  # 13x13
                nn.ConvTranspose2d(32, 1, 4, 2), norm_layer(norm, 1, True, output=True),  # 28x28
            )
        self.output = output_unit(config)

    def logits(self, z: Tensor) -> Tensor:
        return self.body(z)

    def probability(self, z: Tensor) -> Tensor:
        return self.output.probability(self.body(z))

    def forward(self, z: Tensor, rng: Optional[torch.Generator] = None) -> Tensor:
        # Every output unit takes the RNG; only the stochastic neuron draws from it.
        return self.output(self.body(z), rng)

    def _binary_samples(self, z: Tensor, rng, binarize: str) -> Tensor:
        if isinstance(self.output, SigmoidOutput):
            return super()._binary_samples(z, rng, binarize)
        return self(z, rng)


class LogitsGenerator(_GeneratorBase):
    """Discrete BGAN's G: z (N x 64) -> per-pixel logits l (N x 1 x 28 x 28) -> binary samples
    from its output layer, a :class:`~binary_neurons.StochasticBinary` with the library's
    REINFORCE estimator: BGAN's generator gradient is REINFORCE with the normalized importance
    weights as the learning signal (see :class:`~.objectives.BGAN`).

    ``mlp``: BinaryGAN's MLP sizes, dense 1024 -> BN -> ReLU -> dense 784. BinaryGAN's
    output-layer norm is left out: the logits are the output, and a train-mode BN there would
    pin every pixel's batch-mean logit to its shift. ``cnn``: the DCGAN-like G of the BGAN
    paper, dense 1024 -> BN -> ReLU -> dense 128*7*7 -> BN -> ReLU -> deconv 64 k5 s2 (14x14)
    -> BN -> ReLU -> deconv 1 k5 s2 (28x28).
    """

    def __init__(self, config: Config) -> None:
        super().__init__()
        z = config.latent_dim
        if config.arch == "mlp":
            self.body = nn.Sequential(
                nn.Linear(z, 1024), nn.BatchNorm1d(1024), nn.ReLU(),  # N x 1024
                nn.Linear(1024, 784), nn.Unflatten(1, IMAGE),  # N x 1 x 28 x 28
            )
        else:
            self.body = nn.Sequential(
                nn.Linear(z, 1024), nn.BatchNorm1d(1024), nn.ReLU(),  # N x 1024
                nn.Linear(1024, 128 * 7 * 7), nn.BatchNorm1d(128 * 7 * 7), nn.ReLU(),
                nn.Unflatten(1, (128, 7, 7)),  # N x 128 x 7 x 7
                # out = (in - 1) * 2 - 2 * 2 + 5 + 1 = 2 * in
                nn.ConvTranspose2d(128, 64, 5, 2, padding=2, output_padding=1),  # 14 x 14
                nn.BatchNorm2d(64), nn.ReLU(),
                nn.ConvTranspose2d(64, 1, 5, 2, padding=2, output_padding=1),  # 1 x 28 x 28
            )
        # y = 1[u < sigmoid(l)]; in training, each pass is kept for bn.reinforce_loss. The
        # baseline is BGAN's: none (the weights are normalized per z).
        self.output = bn.StochasticBinary(estimator="reinforce", baseline="none")

    def logits(self, z: Tensor) -> Tensor:
        return self.body(z)

    def forward(self, z: Tensor, rng: Optional[torch.Generator] = None,
                samples_per_z: int = 1) -> tuple[Tensor, Tensor]:
        """``(logits, samples)``: ``N x 1 x 28 x 28`` logits, and ``samples_per_z`` binary
        samples of each, ``(samples_per_z * N) x 1 x 28 x 28``, sample-major."""
        logits = self.body(z)
        expanded = logits.unsqueeze(0).expand(samples_per_z, *logits.shape).flatten(0, 1)
        return logits, self.output(expanded, rng)

    def _binary_samples(self, z: Tensor, rng, binarize: str) -> Tensor:
        if binarize == "threshold":
            return super()._binary_samples(z, rng, binarize)
        return self(z, rng)[1]  # the output layer's draw: the same as stochastic_binary's

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A checkpoint from before G had an output layer holds none of its buffers; the layer
        # has no parameters, and its defaults are what those runs sampled with.
        if not any(key.startswith(prefix + "output.") for key in state_dict):
            state_dict.update(self.output.state_dict(prefix=prefix + "output."))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class Discriminator(nn.Module):
    """BinaryGAN's D: N x 1 x 28 x 28 -> one logit per image, N (no output activation)."""

    def __init__(self, config: Config) -> None:
        super().__init__()

        def norm(features: int, images: bool) -> list[nn.Module]:
            return [norm_layer(config.batchnorm, features, images)] if config.d_batchnorm else []

        if config.arch == "mlp":
            self.body = nn.Sequential(
                nn.Flatten(),  # N x 784
                nn.Linear(784, 512), *norm(512, False), nn.LeakyReLU(0.2),  # N x 512
                nn.Linear(512, 256), *norm(256, False), nn.LeakyReLU(0.2),  # N x 256
                nn.Linear(256, 1),  # N x 1
            )
        else:
            self.body = nn.Sequential(
                nn.Conv2d(1, 32, 3), *norm(32, True), nn.LeakyReLU(0.2),  # N x 32 x 26 x 26
                nn.MaxPool2d(2),  # N x 32 x 13 x 13
                nn.Conv2d(32, 64, 3), *norm(64, True), nn.LeakyReLU(0.2),  # N x 64 x 11 x 11
                nn.MaxPool2d(2, ceil_mode=True),  # TF 'same' pooling: N x 64 x 6 x 6
                nn.Flatten(),  # N x 2304
                nn.Linear(2304, 128), *norm(128, False), nn.LeakyReLU(0.2),  # N x 128
                nn.Linear(128, 1),  # N x 1
            )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x).squeeze(1)


class DCGANDiscriminator(nn.Module):
    """The BGAN paper's DCGAN-like D, no batch norm: N x 1 x 28 x 28 -> one logit per image."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            # out = (in + 2 * 2 - 5) // 2 + 1 = ceil(in / 2)
            nn.Conv2d(1, 64, 5, stride=2, padding=2), nn.LeakyReLU(0.2),  # 64 x 14 x 14
            nn.Conv2d(64, 128, 5, stride=2, padding=2), nn.LeakyReLU(0.2),  # 128 x 7 x 7
            nn.Flatten(),  # 6272
            nn.Linear(128 * 7 * 7, 1024), nn.LeakyReLU(0.2),
            nn.Linear(1024, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x).squeeze(1)


class MovingAverage(nn.Module):
    """An exponential moving average of a network's parameters, ``decay`` per update; its
    buffers (batch-norm statistics, the annealed slope) are copied, not averaged. Sampling from
    the average of the last few hundred generators gives cleaner samples at no training cost."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        super().__init__()
        self.decay = decay
        self.model = copy.deepcopy(module).requires_grad_(False)

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        for average, parameter in zip(self.model.parameters(), module.parameters()):
            average.lerp_(parameter, 1.0 - self.decay)
        for average, buffer in zip(self.model.buffers(), module.buffers()):
            average.copy_(buffer)


@torch.no_grad()
def init_weights(module: nn.Module) -> None:
    """Truncated normal (std 0.02, cut at 2 std as TF does) weights, zero biases."""
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.trunc_normal_(layer.weight, std=0.02, a=-0.04, b=0.04)
            nn.init.zeros_(layer.bias)


def build_models(config: Config) -> tuple[nn.Module, nn.Module]:
    """G and D for ``config``, on the CPU, initialized from the default RNG.

    BinaryGAN's networks get the TF code's initialization; BGAN's (output ``logits``) keep
    PyTorch's defaults, as in their code. BGAN's ``mlp`` D is BinaryGAN's MLP D without BN.
    """
    if config.output == "logits":
        netG = LogitsGenerator(config)
        netD = Discriminator(config) if config.arch == "mlp" else DCGANDiscriminator()
        return netG, netD
    netG, netD = Generator(config), Discriminator(config)
    init_weights(netG)
    init_weights(netD)
    return netG, netD


def sample_latent(config: Config, count: int, device: torch.device = torch.device("cpu"),
                  rng: Optional[torch.Generator] = None) -> Tensor:
    """``count`` latent vectors (count x latent_dim) from the config's prior: N(0, I)
    (BinaryGAN) or U[0, 1) (BGAN). With ``rng`` (a CPU generator) the draw is made on the CPU
    and moved, so fixed noise is the same on every device."""
    shape = (count, config.latent_dim)
    draw = torch.randn if config.prior == "normal" else torch.rand
    if rng is not None:
        return draw(shape, generator=rng).to(device)
    return draw(shape, device=device)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
