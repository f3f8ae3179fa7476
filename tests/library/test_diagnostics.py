"""The opt-in diagnostics collector."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import binary_neurons as bn


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), bn.DeterministicBinary(), nn.Linear(6, 1))


def test_statistics_follow_their_definitions():
    model = _model()
    diagnostics = bn.Diagnostics(model)
    x = torch.randn(50, 4)
    captured = {}
    handle = model[1].register_forward_hook(
        lambda module, args, output: captured.update(a=args[0])
    )
    with diagnostics.record():
        model(x).sum().backward()
    handle.remove()
    stats = diagnostics.summary()
    a = captured["a"].detach().double()
    p = torch.sigmoid(a)
    fired = a > 0
    assert stats["1/firing_rate"] == pytest.approx(float(fired.double().mean()))
    saturated = ((p < 0.01) | (p > 0.99)).double().mean()
    assert stats["1/saturation"] == pytest.approx(float(saturated))
    entropy = -(p * p.log2() + (1 - p) * (1 - p).log2()).mean()
    assert stats["1/entropy"] == pytest.approx(float(entropy), rel=1e-6)
    assert stats["1/never_fired"] == float((fired.sum(0) == 0).sum())
    assert stats["1/always_fired"] == float((fired.sum(0) == 50).sum())
    # grad_abs: the mean |dL/da|, here the sigmoid-adjusted estimator's output.
    grad = model[2].weight.detach().double().expand(50, 6) * p * (1 - p)
    assert stats["1/grad_abs"] == pytest.approx(float(grad.abs().mean()), rel=1e-5)


def test_never_and_always_fired_units():
    layer = bn.DeterministicBinary()
    diagnostics = bn.Diagnostics(layer)
    a = torch.tensor([[-1.0, 1.0, 0.5], [-2.0, 3.0, -0.5]])
    with diagnostics.record():
        layer(a)
    stats = diagnostics.summary()
    assert stats["DeterministicBinary/never_fired"] == 1.0  # unit 0
    assert stats["DeterministicBinary/always_fired"] == 1.0  # unit 1
    assert math.isnan(stats["DeterministicBinary/grad_abs"])  # no backward in the block


def test_flips_on_the_probe_batch():
    model = _model()
    diagnostics = bn.Diagnostics(model)
    probe = torch.randn(64, 4)
    first = diagnostics.summary(probe=lambda: model(probe))
    assert math.isnan(first["1/flips"]) and math.isnan(first["1/firing_rate"])
    assert diagnostics.summary(probe=lambda: model(probe))["1/flips"] == 0.0
    with torch.no_grad():
        model[0].bias.add_(0.5)
    before = model[0](probe) > 0
    flipped = diagnostics.summary(probe=lambda: model(probe))["1/flips"]
    with torch.no_grad():
        model[0].bias.sub_(0.5)
    after = model[0](probe) > 0
    assert flipped > 0
    assert diagnostics.summary(probe=lambda: model(probe))["1/flips"] == pytest.approx(
        float((before != after).double().mean())
    )


@pytest.mark.compile
def test_off_means_no_hooks_and_no_graph_break():
    model = _model()
    diagnostics = bn.Diagnostics(model)
    with diagnostics.record():
        assert model[1]._forward_hooks
        model(torch.randn(3, 4))
    assert not model[1]._forward_hooks
    diagnostics.summary(probe=lambda: model(torch.randn(3, 4)))
    assert not model[1]._forward_hooks
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    compiled(torch.randn(3, 4)).sum().backward()


def test_signed_and_stochastic_layers():
    torch.manual_seed(0)
    model = nn.Sequential(bn.StochasticBinary(signed=True), bn.StochasticBinary())
    diagnostics = bn.Diagnostics(model)
    with diagnostics.record():
        model(torch.zeros(20_000, 1))
    stats = diagnostics.summary()
    assert stats["0/firing_rate"] == pytest.approx(0.5, abs=0.02)  # +1 counts as firing
    assert stats["0/entropy"] == pytest.approx(1.0)
    assert stats["0/saturation"] == 0.0


def test_a_backward_after_the_summary_lands_in_the_next_one():
    model = _model()
    diagnostics = bn.Diagnostics(model)
    with diagnostics.record():
        out = model(torch.randn(8, 4))
    first = diagnostics.summary()
    out.sum().backward()
    second = diagnostics.summary()
    assert math.isnan(first["1/grad_abs"]) and second["1/grad_abs"] > 0


def test_needs_a_binary_layer():
    with pytest.raises(ValueError, match="no binary layer"):
        bn.Diagnostics(nn.Linear(2, 2))
