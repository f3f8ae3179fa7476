"""REINFORCE: unbiased against the exact gradient by enumeration, its baseline, its errors."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

import binary_neurons as bn

UNITS = 5


class _Tiny(nn.Module):
    """x -> a = W x + c -> y (UNITS stochastic binary units) -> o = v . y + e."""

    def __init__(self, estimator) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.hidden = nn.Linear(3, UNITS).double()
        self.neuron = bn.StochasticBinary(estimator=estimator, slope=1.5)
        self.out = nn.Linear(UNITS, 1).double()

    def forward(self, x):
        return self.out(self.neuron(self.hidden(x))).squeeze(-1)


INPUTS = torch.tensor([[0.5, -1.0, 2.0], [-0.3, 0.8, 0.1], [1.2, 0.4, -0.7]], dtype=torch.float64)
TARGETS = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)


def _exact_gradients(model: _Tiny) -> list[torch.Tensor]:
    """The gradient of mean_i E_y[L_i] over all 2^UNITS outcomes, by autograd in float64."""
    model.zero_grad()
    p = torch.sigmoid(1.5 * model.hidden(INPUTS))  # (3, UNITS)
    expected = 0.0
    for bits in itertools.product((0.0, 1.0), repeat=UNITS):
        y = torch.tensor(bits, dtype=torch.float64)
        probability = (p * y + (1 - p) * (1 - y)).prod(dim=1)  # (3,)
        loss = (model.out(y.expand(3, UNITS)).squeeze(-1) - TARGETS).square()
        expected = expected + probability * loss
    expected.mean().backward()
    return [param.grad.clone() for param in model.parameters()]


def _estimates(model: _Tiny, batches: int, copies: int) -> list[torch.Tensor]:
    """One gradient estimate per batch of `copies` samples of each input: (batches, *shape)."""
    x = INPUTS.repeat_interleave(copies, dim=0)
    t = TARGETS.repeat_interleave(copies)
    found = [[] for _ in model.parameters()]
    for _ in range(batches):
        model.zero_grad()
        losses = (model(x) - t).square()
        (losses.mean() + bn.reinforce_loss(model, losses)).backward()
        for store, param in zip(found, model.parameters()):
            store.append(param.grad.clone())
    return [torch.stack(store) for store in found]


@pytest.mark.parametrize("baseline", ["variance", "none"])
def test_reinforce_is_unbiased(baseline):
    model = _Tiny(bn.Reinforce(baseline=baseline))
    exact = _exact_gradients(model)
    torch.manual_seed(0)
    estimates = _estimates(model, batches=400, copies=400)
    for name, truth, draws in zip(("W", "c", "v", "e"), exact, estimates):
        mean = draws.mean(0)
        standard_error = draws.std(0) / math.sqrt(draws.shape[0])
        within = (mean - truth).abs() <= 4 * standard_error + 1e-12
        assert bool(within.all()), (name, baseline, mean, truth, standard_error)


def test_baseline_lowers_the_variance():
    variances = {}
    for baseline in ("none", "variance"):
        model = _Tiny(bn.Reinforce(baseline=baseline))
        torch.manual_seed(1)
        _estimates(model, batches=30, copies=20)  # the moving averages settle
        weight = _estimates(model, batches=200, copies=20)[0]
        variances[baseline] = float(weight.var(0).mean())
    # Measured: 2.6x lower (none 0.092, variance 0.035 per weight on this problem).
    assert variances["variance"] < 0.5 * variances["none"], variances


def test_baseline_buffers_are_saved_and_restored():
    model = _Tiny("reinforce")
    _estimates(model, batches=3, copies=4)
    state = model.state_dict()
    assert state["neuron.reinforce_numerator"].shape == (UNITS,)
    assert bool((state["neuron.reinforce_denominator"] != 1).all())
    fresh = _Tiny("reinforce")
    fresh.load_state_dict(state)
    assert torch.equal(fresh.neuron.reinforce_numerator, model.neuron.reinforce_numerator)
    assert torch.equal(fresh.neuron.reinforce_denominator, model.neuron.reinforce_denominator)


def test_the_baseline_follows_its_definition():
    """After one batch from (0, 1): numerator = 0.05 mean((y-p)^2 L), denominator = 0.95 +
    0.05 mean((y-p)^2); the batch itself was corrected with b = 0 / (1 + 1e-4) = 0."""
    layer = bn.StochasticBinary(estimator="reinforce")
    a = torch.randn(64, 3, requires_grad=True)
    y = layer(a)
    losses = torch.rand(64)
    term = bn.reinforce_loss(layer, losses)
    assert term.item() == 0.0
    term.backward()
    deviation = (y - torch.sigmoid(a)).detach()
    torch.testing.assert_close(a.grad, deviation * losses[:, None] / 64)
    torch.testing.assert_close(
        layer.reinforce_numerator, 0.05 * (deviation.square() * losses[:, None]).mean(0)
    )
    torch.testing.assert_close(layer.reinforce_denominator, 0.95 + 0.05 * deviation.square().mean(0))


def test_given_baseline_and_sum_reduction():
    layer = bn.StochasticBinary(estimator=bn.Reinforce(baseline="none"))
    a = torch.randn(8, 2, requires_grad=True)
    y = layer(a)
    losses = torch.rand(8)
    bn.reinforce_loss(layer, losses, baseline=losses, reduction="sum").backward()
    assert bool((a.grad == 0).all())  # L - b = 0 for every example
    a.grad = None
    y = layer(a)
    bn.reinforce_loss(layer, losses, baseline=0.5, reduction="sum").backward()
    assert a.grad.shape == (8, 2)
    assert y.shape == (8, 2)


def test_mixed_model_trains():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(4, 6), bn.StochasticBinary(estimator="reinforce"),
        nn.Linear(6, 6), bn.StochasticBinary(estimator="sigmoid"),
        nn.Linear(6, 1),
    )
    x = torch.randn(16, 4)
    losses = model(x).squeeze(-1).square()
    (losses.mean() + bn.reinforce_loss(model, losses)).backward()
    assert all(param.grad is not None and bool(param.grad.abs().sum() > 0)
               for param in model.parameters())


def test_signed_reinforce_outputs():
    layer = bn.StochasticBinary(estimator="reinforce", signed=True)
    a = torch.randn(10, 3, requires_grad=True)
    y = layer(a)
    assert set(y.unique().tolist()) <= {-1.0, 1.0}
    (y.sum() + bn.reinforce_loss(layer, torch.rand(10))).backward()
    assert a.grad is not None


def test_errors_say_what_to_do():
    layer = bn.StochasticBinary(estimator="reinforce")
    a = torch.randn(4, 3, requires_grad=True)
    # A backward through the layer without the loss term: an error, not a zero gradient.
    with pytest.raises(RuntimeError, match="per-example loss was never supplied"):
        layer(a).sum().backward()
    layer._reinforce_pending.clear()
    y = layer(a)
    with pytest.raises(ValueError, match="per_example_loss has 5 losses"):
        bn.reinforce_loss(layer, torch.rand(5))
    with pytest.raises(ValueError, match="1-dim tensor with one loss per example"):
        bn.reinforce_loss(layer, torch.rand(4, 1))
    with pytest.raises(ValueError, match="baseline must be a number or a tensor"):
        bn.reinforce_loss(layer, torch.rand(4), baseline=torch.rand(3))
    with pytest.raises(ValueError, match="unknown reduction"):
        bn.reinforce_loss(layer, torch.rand(4), reduction="batchmean")
    with pytest.raises(ValueError, match="no StochasticBinary layer with estimator='reinforce'"):
        bn.reinforce_loss(bn.StochasticBinary(), torch.rand(4))
    with pytest.raises(ValueError, match="no REINFORCE layer ran a training forward pass"):
        bn.reinforce_loss(bn.StochasticBinary(estimator="reinforce"), torch.rand(4))
    with pytest.raises(ValueError, match="'reinforce' needs a stochastic neuron's sample"):
        bn.DeterministicBinary(estimator="reinforce")
    with pytest.raises(ValueError, match="needs the per-example loss"):
        bn.functional.stochastic_binary(a, estimator="reinforce")
    with pytest.raises(ValueError, match="unknown baseline"):
        bn.Reinforce(baseline="mean")
    with pytest.raises(ValueError, match=r"decay must be in \[0, 1\)"):
        bn.Reinforce(decay=1.0)


def test_nothing_is_kept_without_autograd_or_outside_training():
    layer = bn.StochasticBinary(estimator="reinforce")
    with torch.no_grad():
        layer(torch.randn(4, 3))
    layer(torch.randn(4, 3))  # an input that needs no gradient
    assert layer._reinforce_pending == []
    layer.eval()
    y = layer(torch.randn(4, 3, requires_grad=True))
    assert y.shape == (4, 3) and layer._reinforce_pending == []


def test_dropped_outputs_are_forgotten():
    layer = bn.StochasticBinary(estimator="reinforce")
    a = torch.randn(4, 3, requires_grad=True)
    layer(a).detach()  # as a discriminator step uses a generator's output
    kept = layer(a)
    bn.reinforce_loss(layer, torch.rand(4))  # pairs the loss with `kept` only
    assert layer._reinforce_pending == [] and kept.shape == (4, 3)
    for _ in range(100):  # passes whose outputs die never pile up
        layer(a)
    kept = layer(a)
    with pytest.raises(ValueError, match="1-dim tensor"):
        bn.reinforce_loss(layer, torch.rand(4, 2))
    assert len(layer._reinforce_pending) == 1


def test_a_second_pass_uses_the_baseline_from_before_the_call():
    torch.manual_seed(0)
    layer = bn.StochasticBinary(estimator="reinforce")
    warm = torch.randn(32, 2, requires_grad=True)
    y0 = layer(warm)
    bn.reinforce_loss(layer, torch.rand(32) + 1)  # the baseline is no longer 0
    b = (layer.reinforce_numerator / (layer.reinforce_denominator + 1e-4)).clone()
    a1 = torch.randn(32, 2, requires_grad=True)
    a2 = torch.randn(32, 2, requires_grad=True)
    y1, y2 = layer(a1), layer(a2)
    losses = torch.rand(32)
    bn.reinforce_loss(layer, losses).backward()
    for a, y in ((a1, y1), (a2, y2)):
        expected = (y - torch.sigmoid(a)).detach() * (losses[:, None] - b) / 32
        torch.testing.assert_close(a.grad, expected)
    assert y0.shape == (32, 2)


def test_a_bad_batch_changes_nothing():
    model = nn.Sequential(bn.StochasticBinary(estimator="reinforce"), nn.Flatten(0),
                          bn.StochasticBinary(estimator="reinforce"))
    a = torch.randn(4, 3, requires_grad=True)
    y = model(a)  # the second layer sees a batch of 12
    with pytest.raises(ValueError, match="saw a batch of 12"):
        bn.reinforce_loss(model, torch.rand(4))
    assert len(model[0]._reinforce_pending) == 1 and model[0].reinforce_numerator.numel() == 0
    assert y.shape == (12,)


@pytest.mark.compile
def test_compile_fullgraph_equals_eager():
    """With the layer compiled (fullgraph), gradients equal eager's step for step; the seed is
    drawn by the same generator (``fallback_random``)."""
    import torch._inductor.config as inductor_config

    x = torch.randn(8, 4)
    grads = {}
    for mode in ("eager", "compiled"):
        torch._dynamo.reset()
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 6), bn.StochasticBinary(estimator="reinforce"),
                              nn.Linear(6, 1))
        run = torch.compile(model, fullgraph=True) if mode == "compiled" else model
        for step in range(3):
            torch.manual_seed(10 + step)
            model.zero_grad()
            with inductor_config.patch(fallback_random=True):
                losses = run(x).squeeze(-1).square()
            (losses.mean() + bn.reinforce_loss(model, losses)).backward()
        grads[mode] = [param.grad.clone() for param in model.parameters()]
        grads[mode].append(model[1].reinforce_numerator.clone())
    for eager, compiled in zip(grads["eager"], grads["compiled"]):
        torch.testing.assert_close(compiled, eager)


def test_a_layer_called_many_times_in_one_step_trains():
    # A skip gate in a recurrent loop: one REINFORCE layer runs 100 times per training step,
    # then one reinforce_loss covers every pass.
    torch.manual_seed(0)
    cell, head = nn.GRUCell(4, 8), nn.Linear(8, 1)
    gate = bn.StochasticBinary(estimator="reinforce")
    gate_input = nn.Linear(8, 1)
    params = [*cell.parameters(), *head.parameters(), *gate_input.parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-2)
    model = nn.ModuleList([cell, gate, head, gate_input])
    x = torch.randn(100, 16, 4)
    target = x[:, :, 0].sum(0, keepdim=True).T
    for step in range(3):
        h = torch.zeros(16, 8)
        for t in range(100):
            keep = gate(gate_input(h))  # (16, 1): update the state or skip this input
            h = keep * cell(x[t], h) + (1 - keep) * h
        losses = (head(h) - target).square().squeeze(1)
        optimizer.zero_grad()
        (losses.mean() + bn.reinforce_loss(model, losses)).backward()
        optimizer.step()
        assert gate._reinforce_pending == []
    assert gate_input.weight.grad.abs().sum() > 0
