"""binary-neurons: drop-in binary-neuron layers for PyTorch that train by backpropagation.

Deterministic and stochastic binary neurons output hard 0/1 values in the forward pass and
backpropagate a pseudo-gradient chosen from the estimators (straight-through, sigmoid-adjusted
straight-through, slope-annealed, clipped, binary Gumbel, REINFORCE; see
:class:`~binary_neurons.Estimator`), as in Dong & Yang, "Training Generative Adversarial
Networks with Binary Neurons by End-to-end Backpropagation" (arXiv:1810.04714).
"""

from . import estimators, functional
from ._backend import BackendInfo, backend_info
from .annealing import SlopeAnnealer
from .diagnostics import Diagnostics
from .estimators import (
    ClippedStraightThrough,
    Estimator,
    GumbelStraightThrough,
    Reinforce,
    SigmoidAdjusted,
    SlopeAnnealed,
    StraightThrough,
    get_estimator,
)
from .functional import deterministic_binary, stochastic_binary
from .modules import BinaryNeuron, DeterministicBinary, StochasticBinary
from .reinforce import reinforce_loss

__version__ = "0.1.0.dev0"

__all__ = [
    "BackendInfo",
    "BinaryNeuron",
    "ClippedStraightThrough",
    "DeterministicBinary",
    "Diagnostics",
    "Estimator",
    "GumbelStraightThrough",
    "Reinforce",
    "SigmoidAdjusted",
    "SlopeAnnealed",
    "SlopeAnnealer",
    "StochasticBinary",
    "StraightThrough",
    "backend_info",
    "deterministic_binary",
    "estimators",
    "functional",
    "get_estimator",
    "reinforce_loss",
    "stochastic_binary",
]
