"""The estimators: the interface every layer goes through (shown by an estimator with layer state
written here, in a test file only), estimators chosen by name with options, the binary Gumbel
straight-through estimator and {-1, +1} outputs, on every backend."""

from __future__ import annotations

import math

import pytest
import torch

from torch import nn

import binary_neurons as bn
from binary_neurons import functional as F

OP_BACKWARD = torch.ops.binary_neurons.threshold_sample_backward.default


# ---------------------------------------------------------------------------------------------
# The interface: an estimator with state on its layer, written with the public API only.


class _DivideGradient(torch.autograd.Function):
    """Passes y on; divides its gradient by a running RMS, which it updates in place."""

    @staticmethod
    def forward(ctx, y, rms, decay):
        ctx.rms, ctx.decay = rms, decay
        return y.clone()

    @staticmethod
    def backward(ctx, grad):
        with torch.no_grad():
            ctx.rms.mul_(ctx.decay).add_((1 - ctx.decay) * grad.square().mean().sqrt())
        return grad / ctx.rms, None, None


class NormalizedStraightThrough(bn.Estimator):
    """Straight-through, with the gradient divided by a running RMS of the gradients the layer
    received: state a layer must keep, save and load (a ``grad_rms`` buffer)."""

    name = "normalized"
    kernel = "identity"  # the fused forward and the straight-through backward

    def __init__(self, decay: float = 0.9):
        self.decay = decay

    def attach(self, layer):
        layer.register_buffer("grad_rms", torch.ones(()))

    def load_state(self, layer, state_dict, prefix):
        value = state_dict.get(prefix + "grad_rms")
        if value is not None and not bool(value > 0):
            raise ValueError(f"{prefix}grad_rms in the state_dict must be > 0, got {float(value)}")

    def extra_repr(self, layer):
        return f"grad_rms={float(layer.grad_rms):.3g}"

    def apply(self, input, slope, seed, layer=None):
        y = super().apply(input, slope, seed, layer)
        return y if layer is None else _DivideGradient.apply(y, layer.grad_rms, self.decay)


@pytest.mark.parametrize("cls", [bn.DeterministicBinary, bn.StochasticBinary])
def test_an_estimator_with_layer_state_trains_saves_and_loads(cls):
    torch.manual_seed(0)

    def model():
        return nn.Sequential(nn.Linear(8, 16), cls(estimator=NormalizedStraightThrough()),
                             nn.Linear(16, 1))

    net = model()
    x = torch.randn(256, 8)
    target = (x[:, :1] > 0).float()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(150):
        loss = nn.functional.mse_loss(net(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10  # it trains
    layer = net[1]
    assert float(layer.grad_rms) != 1.0  # the estimator's state changed during training
    assert f"grad_rms={float(layer.grad_rms):.3g}" in repr(layer)
    state = net.state_dict()
    assert torch.equal(state["1.grad_rms"], layer.grad_rms)
    restored = model()
    restored.load_state_dict(state)
    assert torch.equal(restored[1].grad_rms, layer.grad_rms)
    net.eval(), restored.eval()
    if cls is bn.DeterministicBinary:
        assert torch.equal(restored(x), net(x))
    state["1.grad_rms"] = torch.tensor(-1.0)
    with pytest.raises(ValueError, match="1.grad_rms in the state_dict must be > 0"):
        restored.load_state_dict(state)


def test_a_functional_call_runs_the_estimator_without_a_layer():
    a = torch.tensor([-1.0, 2.0], requires_grad=True)
    F.stochastic_binary(a, estimator=NormalizedStraightThrough()).sum().backward()
    assert torch.equal(a.grad, torch.ones(2))  # no layer: plain straight-through


# ---------------------------------------------------------------------------------------------
# Estimators by name, with options.


def test_options_of_an_estimator_given_by_name():
    layer = bn.StochasticBinary(estimator="gumbel", tau=0.5)
    assert layer.estimator == bn.GumbelStraightThrough(tau=0.5) and float(layer.tau) == 0.5
    assert repr(layer) == (
        "StochasticBinary(estimator='gumbel', slope=1, tau=0.5, eval_mode='sample')"
    )
    clipped = bn.DeterministicBinary(estimator="clipped", clip_value=0.5)
    assert repr(clipped) == "DeterministicBinary(estimator='clipped', slope=1, clip_value=0.5)"
    assert bn.StochasticBinary("reinforce", baseline="none").estimator.baseline == "none"
    assert bn.get_estimator("clipped", clip_value=2.0) == bn.ClippedStraightThrough(2.0)


def test_bad_options_say_what_the_estimator_takes():
    with pytest.raises(TypeError, match="estimator 'gumbel' takes options tau; got temperature"):
        bn.StochasticBinary(estimator="gumbel", temperature=0.5)
    with pytest.raises(TypeError, match="estimator 'sigmoid' takes no options; got tau"):
        bn.StochasticBinary(tau=0.5)
    with pytest.raises(TypeError, match="set them on the GumbelStraightThrough instance"):
        bn.StochasticBinary(estimator=bn.GumbelStraightThrough(), tau=0.5)
    with pytest.raises(ValueError, match="tau must be a finite number > 0"):
        bn.StochasticBinary(estimator="gumbel", tau=-1.0)


def _gumbel_expectation(a: float, slope: float, tau: float) -> float:
    """E_u[(s / tau) q (1 - q)], q = sigmoid((s a - logit u) / tau), by quadrature over the
    logistic density of l = logit(u)."""
    l = torch.linspace(-60, 60, 2_000_001, dtype=torch.float64)
    density = torch.sigmoid(l) * torch.sigmoid(-l)
    z = (slope * a - l) / tau
    integrand = (slope / tau) * torch.sigmoid(z) * torch.sigmoid(-z) * density
    return float(torch.trapezoid(integrand, l))


# ---------------------------------------------------------------------------------------------
# Gumbel.


def test_gumbel_forward_is_the_stochastic_sample(device, dtype):
    a = torch.randn(4099, device=device).to(dtype)
    for seed in (0, 7):
        gumbel = F.stochastic_binary(
            a, estimator="gumbel", generator=torch.Generator(device).manual_seed(seed)
        )
        sample = F.stochastic_binary(a, generator=torch.Generator(device).manual_seed(seed))
        assert torch.equal(gumbel, sample)


@pytest.mark.parametrize("a, slope, tau", [(0.0, 1.0, 1.0), (1.5, 1.0, 0.5), (-2.0, 3.0, 2.0)])
def test_gumbel_mean_over_noise_is_its_expectation(device, a, slope, tau):
    n = 400_000  # one uniform per element: the mean over elements is over the noise
    x = torch.full((n,), a, dtype=torch.float64, device=device, requires_grad=True)
    estimator = bn.GumbelStraightThrough(tau)
    generator = torch.Generator(device).manual_seed(11)
    F.stochastic_binary(x, estimator=estimator, slope=slope, generator=generator).sum().backward()
    grads = x.grad.cpu()
    expected = _gumbel_expectation(a, slope, tau)
    standard_error = float(grads.std()) / math.sqrt(n)
    assert abs(float(grads.mean()) - expected) < 4 * standard_error
    # Biased, unlike REINFORCE: its mean is not the sigmoid's derivative (for tau = 1, s = 1,
    # a = 0 it is 1/6, against 1/4).
    if (a, slope, tau) == (0.0, 1.0, 1.0):
        assert expected == pytest.approx(1 / 6, rel=1e-6)


def test_gumbel_gradient_closed_form_in_float64(device):
    """The pseudo-gradient from the uniform the forward used: y = 1[q > 1/2] for that same q."""
    a = torch.linspace(-6, 6, 1001, dtype=torch.float64, device=device)
    slope, tau = torch.tensor(1.3, dtype=torch.float64), torch.tensor(0.7, dtype=torch.float64)
    seed = torch.tensor(2024, device=device)
    g = torch.randn(a.shape, dtype=torch.float64, device=device)
    y = torch.ops.binary_neurons.threshold_sample(a, slope, seed, "gumbel", 0.0, tau)
    grad = OP_BACKWARD(g, a, slope, "gumbel", 0.0, seed, tau)
    # q (1 - q) = g^-1 grad tau / s recovers q up to its symmetry; the sample decides which.
    qq = grad / g * 0.7 / 1.3
    q_low = (1 - torch.sqrt((1 - 4 * qq).clamp(min=0))) / 2  # the root below 1/2
    q = torch.where(y.bool(), 1 - q_low, q_low)
    # From q, logit(u) = s a - tau logit(q), and u must lie in (0, 1): a valid uniform whose
    # sample is y. Far from a = 0 the roots lose precision; check where q is well inside.
    inside = (q_low > 1e-3) & (q_low < 0.499)
    u = torch.sigmoid(1.3 * a - 0.7 * torch.logit(q))
    assert bool(((u[inside] < torch.sigmoid(1.3 * a[inside])) == y[inside].bool()).all())
    assert bool(torch.isfinite(grad).all())


@pytest.mark.parametrize("tau", [0.0, -1.0, math.nan, math.inf])
def test_bad_temperature_is_an_error(tau):
    with pytest.raises(ValueError, match="tau must be a finite number > 0"):
        bn.GumbelStraightThrough(tau)
    layer = bn.StochasticBinary(estimator="gumbel")
    with pytest.raises(ValueError, match="tau must be a finite number > 0"):
        layer.set_tau(tau)
    state = layer.state_dict()
    state["tau"] = torch.tensor(tau)
    with pytest.raises(ValueError, match="tau in the state_dict"):
        layer.load_state_dict(state)


def test_gumbel_needs_a_stochastic_neuron():
    with pytest.raises(ValueError, match="'gumbel' needs a stochastic neuron's sample"):
        bn.DeterministicBinary(estimator="gumbel")
    with pytest.raises(ValueError, match="'gumbel' needs a stochastic neuron's sample"):
        F.deterministic_binary(torch.zeros(3), estimator="gumbel")
    with pytest.raises(ValueError, match="'gumbel' kernel needs a seed"):
        OP_BACKWARD(torch.ones(3), torch.zeros(3), torch.tensor(1.0), "gumbel", 0.0)
    with pytest.raises(ValueError, match="'gumbel' kernel needs tau"):
        OP_BACKWARD(torch.ones(3), torch.zeros(3), torch.tensor(1.0), "gumbel", 0.0,
                    torch.tensor(1))
    with pytest.raises(NotImplementedError, match="needs the forward's uniforms"):
        bn.GumbelStraightThrough().backward(torch.ones(1), torch.ones(1), torch.tensor(1.0))
    with pytest.raises(ValueError, match="'sigmoid' has no temperature"):
        bn.StochasticBinary().set_tau(0.5)


def test_bad_temperature_at_the_op_is_an_error_in_the_forward(device):
    a = torch.zeros(3, device=device)
    with pytest.raises(ValueError, match="expected tau to be a finite number > 0"):
        torch.ops.binary_neurons.threshold_sample(
            a, torch.tensor(1.0), torch.tensor(1), "gumbel", 0.0, torch.tensor(-1.0)
        )


def test_temperature_is_saved_and_restored():
    layer = bn.StochasticBinary(estimator=bn.GumbelStraightThrough(0.25))
    assert float(layer.tau) == 0.25 and "tau=0.25" in repr(layer)
    layer.set_tau(0.125)
    restored = bn.StochasticBinary(estimator="gumbel")
    restored.load_state_dict(layer.state_dict())
    assert float(restored.tau) == 0.125
    # Layers without a temperature have no tau entry.
    assert "tau" not in bn.StochasticBinary().state_dict()


def test_layer_temperature_drives_the_gradient():
    torch.manual_seed(0)
    layer = bn.StochasticBinary(estimator="gumbel")
    a = torch.zeros(100_000, requires_grad=True)
    layer(a).sum().backward()
    warm = a.grad.mean().item()
    layer.set_tau(0.1)
    a.grad = None
    layer(a).sum().backward()
    cold = a.grad.mean().item()
    assert warm == pytest.approx(_gumbel_expectation(0.0, 1.0, 1.0), rel=0.02)
    assert cold == pytest.approx(_gumbel_expectation(0.0, 1.0, 0.1), rel=0.05)


def test_annealer_cools_and_resumes():
    model = torch.nn.Sequential(
        torch.nn.Linear(3, 3),
        bn.StochasticBinary(estimator="gumbel"),
        bn.StochasticBinary(estimator="annealed"),
    )
    annealer = bn.SlopeAnnealer(model, factor=2.0, temperature_factor=0.5, min_temperature=0.3)
    annealer.step()
    annealer.step()
    assert annealer.temperatures == pytest.approx([0.3]) and annealer.slopes == [4.0]
    other = bn.SlopeAnnealer(model)
    other.load_state_dict(annealer.state_dict())
    assert other.temperature_factor == 0.5 and other.min_temperature == 0.3
    with pytest.raises(ValueError, match="nothing to anneal"):
        bn.SlopeAnnealer(bn.StochasticBinary(estimator="gumbel"))
    with pytest.raises(ValueError, match="temperature_factor must be a finite number > 0"):
        bn.SlopeAnnealer(model, temperature_factor=0.0)
    # A temperature set below the floor is not raised to it; one heated past float32 is refused.
    model[1].set_tau(0.05)
    annealer.step()
    assert annealer.temperatures == pytest.approx([0.05])
    hot = bn.SlopeAnnealer(model[1], temperature_factor=1e30)
    with pytest.raises(ValueError, match="would set a temperature"):
        for _ in range(3):
            hot.step()


def test_eval_threshold_mode_with_gumbel():
    layer = bn.StochasticBinary(estimator="gumbel", eval_mode="threshold").eval()
    a = torch.tensor([-1.0, 0.5], requires_grad=True)
    y = layer(a)
    assert y.tolist() == [0.0, 1.0]
    y.sum().backward()  # the sigmoid-adjusted gradient
    torch.testing.assert_close(a.grad, torch.sigmoid(a) * torch.sigmoid(-a))


# ---------------------------------------------------------------------------------------------
# {-1, +1} outputs.

SIGNED_SCALES = {"identity": 1.0, "clipped": 1.0, "sigmoid": 2.0, "annealed": 2.0, "gumbel": 2.0}


@pytest.mark.parametrize(
    "estimator, stochastic",
    # The Gumbel estimator applies to stochastic neurons only.
    [(name, stochastic) for name in sorted(SIGNED_SCALES) for stochastic in (False, True)
     if stochastic or name != "gumbel"],
)
def test_signed_outputs_and_gradients(device, dtype, estimator, stochastic):
    a = torch.tensor([-3.0, -0.5, 0.0, 0.5, 3.0, math.nan], device=device).to(dtype)
    g = torch.linspace(-1, 2, 6, device=device).to(dtype)

    def run(signed: bool):
        x = a.clone().requires_grad_()
        if stochastic:
            generator = torch.Generator(device).manual_seed(5)
            y = F.stochastic_binary(x, estimator, 1.5, generator, signed=signed)
        else:
            y = F.deterministic_binary(x, estimator, 1.5, signed=signed)
        y.backward(g)
        return y.detach(), x.grad

    y01, grad01 = run(False)
    ysign, gradsign = run(True)
    assert ysign.dtype == dtype
    torch.testing.assert_close(ysign, 2 * y01 - 1, equal_nan=True)
    if not stochastic:
        # sign(0) = -1: the threshold is strict.
        assert ysign[:5].tolist() == [-1.0, -1.0, -1.0, 1.0, 1.0]
    torch.testing.assert_close(gradsign, SIGNED_SCALES[estimator] * grad01, equal_nan=True)


def test_signed_sigmoid_is_the_derivative_of_2p_minus_1():
    a = torch.linspace(-4, 4, 17, dtype=torch.float64, requires_grad=True)
    F.deterministic_binary(a, "sigmoid", 0.7, signed=True).sum().backward()
    reference = a.detach().clone().requires_grad_()
    (2 * torch.sigmoid(0.7 * reference) - 1).sum().backward()
    torch.testing.assert_close(a.grad, reference.grad, rtol=1e-12, atol=0)


def test_signed_clipped_is_larqs_ste_sign():
    a = torch.tensor([-2.0, -1.0, -0.3, 0.0, 0.3, 1.0, 2.0], requires_grad=True)
    y = bn.DeterministicBinary(estimator="clipped", signed=True)(a)
    y.sum().backward()
    assert y.tolist() == [-1, -1, -1, -1, 1, 1, 1]
    assert a.grad.tolist() == [0, 1, 1, 1, 1, 1, 0]


def test_signed_layers_in_evaluation_mode():
    a = torch.tensor([-2.0, 0.0, 2.0])
    layer = bn.StochasticBinary(signed=True, eval_mode="probability").eval()
    torch.testing.assert_close(layer(a), 2 * torch.sigmoid(a) - 1)
    layer.eval_mode = "threshold"
    assert layer(a).tolist() == [-1.0, -1.0, 1.0]
    assert "signed=True" in repr(layer)
