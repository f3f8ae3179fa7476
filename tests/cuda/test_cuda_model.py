"""A model trained on the GPU against the same model trained on the CPU, with every estimator.

The native kernels draw the same samples on both devices for the same seed, dtype and layout
(test_cuda.py checks single calls bit for bit). In a model the pre-activations come from each
device's own matrix products, which sum in different orders and round differently, so now and
then a pre-activation lands on the other side of its uniform and the two runs' samples differ
there. These tests train the same model on both devices, with the seeds of every stochastic
layer drawn from one CPU generator in both runs, and check that

- every sample that differs is explained by the pre-activations alone: given the GPU's
  pre-activation and seed, the CPU kernel draws exactly the GPU's sample;
- such flips are rare;
- the loss curves stay together.

Without a GPU the same comparison runs on the CPU between float32 matrix products and float32
products summed exactly (in float64) and rounded once: the rounding of a different sum, as on
another device, so that the comparison and its bounds are tested where CI runs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import pytest
import torch
from torch import nn

import binary_neurons as bn
import binary_neurons.functional

from tests import training
from tests.conftest import cuda_test

STEPS = 100
BATCH = 256
ANNEAL_EVERY = 25
# Bounds for the run under test against the CPU run: the fraction of samples that differ, and
# the largest relative difference of a step's loss (one flipped sample moves a step's loss by
# about 5e-5). Measured on the CPU, exact sums against float32 sums, over 3,276,800 samples:
# 0 flips and gaps of 2.1e-7 or less for every estimator (native kernels); the pure-PyTorch
# kernels the same but for "annealed", whose slope reaches 1.2^3: 3 flips, a gap of 1.6e-4.
# bfloat16 pre-activations keep 8 bits, and cuBLAS may sum bfloat16 products in bfloat16: looser.
BOUNDS = {"float32": (1e-5, 2e-3), "bfloat16": (2e-3, 2e-2)}

threshold_sample = torch.ops.binary_neurons.threshold_sample.default


@dataclass
class Run:
    losses: list[float] = field(default_factory=list)
    # Per step and binary layer: (pre-activation, slope, seed, sample), on the run's device.
    calls: list[tuple] = field(default_factory=list)


def _exact_linear(layer: nn.Linear, input: torch.Tensor) -> torch.Tensor:
    """``layer(input)`` summed in float64 and rounded once to the input's dtype."""
    weight, bias = layer.weight.double(), layer.bias.double()
    return nn.functional.linear(input.double(), weight, bias).to(input.dtype)


def _train(estimator: str, device: str, dtype: torch.dtype, autocast: bool,
           monkeypatch, exact_sums: bool = False) -> Run:
    """STEPS steps of the three-layer model on `device`: float32 parameters with autocast to
    `dtype` if `autocast`, else parameters and inputs in `dtype`; `exact_sums` computes the
    linear layers with :func:`_exact_linear`."""
    run = Run()
    seeds = torch.Generator().manual_seed(2024)
    drawn = []

    def draw_seed(input, generator):  # both runs: one CPU stream of seeds, moved to the device
        drawn.append(torch.randint(0, 2**62, (), generator=seeds))
        return drawn[-1].to(input.device)

    monkeypatch.setattr(binary_neurons._apply, "draw_seed", draw_seed)
    model = training.mlp(estimator)
    model = model.to(device, torch.float32 if autocast else dtype)
    for layer in model.modules() if exact_sums else ():
        if isinstance(layer, nn.Linear):
            layer.forward = functools.partial(_exact_linear, layer)
    annealer = bn.SlopeAnnealer(model, factor=1.2) if estimator == "annealed" else None
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def record(layer, args, output):  # the seed this call drew is the last one drawn
        run.calls.append((args[0].detach().clone(), layer.slope.detach().clone(), drawn[-1],
                          output.detach().clone()))

    for layer in model.modules():
        if isinstance(layer, bn.BinaryNeuron):
            layer.register_forward_hook(record)
    x, target = training.batch(BATCH, seed=3, device=device)
    x = x if autocast else x.to(dtype)
    for index in range(STEPS):
        loss = training.step(model, optimizer, x, target, autocast=dtype if autocast else None)
        run.losses.append(loss.item())
        if annealer is not None and index % ANNEAL_EVERY == ANNEAL_EVERY - 1:
            annealer.step()
    monkeypatch.undo()
    return run


def _compare(reference: Run, other: Run, dtype: torch.dtype) -> None:
    flips, total = 0, 0
    for (a_ref, _, seed_ref, y_ref), (a, slope, seed, y) in zip(reference.calls, other.calls):
        assert seed == seed_ref
        a, y = a.cpu(), y.cpu()
        # The CPU kernel, given this run's pre-activation, slope and seed, draws its sample.
        assert torch.equal(threshold_sample(a, slope.cpu(), seed, "identity", 0.0), y)
        flips += int((y.to(y_ref.dtype) != y_ref).sum())
        total += y.numel()
    max_flips, loss_rtol = BOUNDS[str(dtype).removeprefix("torch.")]
    assert flips / total <= max_flips, f"{flips} of {total} samples differ"
    losses, other_losses = torch.tensor(reference.losses), torch.tensor(other.losses)
    gap = ((other_losses - losses).abs() / losses).max().item()
    assert gap <= loss_rtol, f"the loss curves differ by up to {gap:.2%}"
    assert losses[-10:].mean() < losses[:10].mean()  # and both runs learn


def _native_on(device: str) -> bool:
    return bn.backend_info().devices[device] == "native"


@pytest.mark.parametrize("estimator", training.ESTIMATORS)
@pytest.mark.parametrize(("dtype", "autocast"), [(torch.float32, False), (torch.bfloat16, True)],
                         ids=["float32", "autocast-bfloat16"])
@cuda_test
def test_a_gpu_run_follows_the_cpu_run(estimator, dtype, autocast, monkeypatch):
    if not (_native_on("cpu") and _native_on("cuda")):
        pytest.skip("needs the native kernels on the CPU and CUDA (the pure-PyTorch kernels "
                    "draw each device's own stream of uniforms)")
    reference = _train(estimator, "cpu", dtype, autocast, monkeypatch)
    _compare(reference, _train(estimator, "cuda", dtype, autocast, monkeypatch), dtype)


@pytest.mark.parametrize("estimator", training.ESTIMATORS)
def test_a_run_with_other_sums_follows_the_run(estimator, monkeypatch):
    reference = _train(estimator, "cpu", torch.float32, False, monkeypatch)
    other = _train(estimator, "cpu", torch.float32, False, monkeypatch, exact_sums=True)
    assert other.calls[0][0].ne(reference.calls[0][0]).any()  # the sums do differ
    _compare(reference, other, torch.float32)
