"""BinaryGAN generators and discriminators (SPEC section 2), MLP and CNN.

The generator ends in a binary-neuron layer from :mod:`binary_neurons` (or a plain sigmoid for
the real-valued baseline). Its pre-activation ``a`` is exposed by
:meth:`Generator.preactivation` so that the preactivated output ``p = sigmoid(slope * a)``
can be plotted.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

import binary_neurons as bn

from .config import Config

__all__ = ["AffineNorm", "SigmoidOutput", "Generator", "Discriminator", "build_models",
           "count_parameters", "init_weights"]

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

    def forward(self, input: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
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


class Generator(nn.Module):
    """z (N x 128) -> pre-activation a (N x 1 x 28 x 28) -> output unit -> N x 1 x 28 x 28."""

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

    def preactivation(self, z: Tensor) -> Tensor:
        """The output unit's input ``a``, N x 1 x 28 x 28."""
        return self.body(z)

    def probability(self, z: Tensor) -> Tensor:
        """The preactivated output ``p = sigmoid(slope * a)`` (the real model's output)."""
        return self.output.probability(self.preactivation(z))

    def forward(self, z: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        # Every output unit takes the generator; only the stochastic neuron draws from it.
        return self.output(self.preactivation(z), generator)


class Discriminator(nn.Module):
    """N x 1 x 28 x 28 -> one logit per image, N (no output activation)."""

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


@torch.no_grad()
def init_weights(module: nn.Module) -> None:
    """Truncated normal (std 0.02, cut at 2 std as TF does) weights, zero biases."""
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.trunc_normal_(layer.weight, std=0.02, a=-0.04, b=0.04)
            nn.init.zeros_(layer.bias)


def build_models(config: Config) -> tuple[nn.Module, nn.Module]:
    """Build and initialize G and D on the CPU with the current default RNG.

    The ``bgan`` objective builds :mod:`.bgan`'s networks (their initialization); every
    generator offers ``preactivation(z)`` and ``probability(z)`` (p, N x 1 x 28 x 28).
    """
    if config.objective == "bgan":
        from .bgan import build_bgan_models  # bgan.py imports this module

        return build_bgan_models(config)
    generator, discriminator = Generator(config), Discriminator(config)
    init_weights(generator)
    init_weights(discriminator)
    return generator, discriminator


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
