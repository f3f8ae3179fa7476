"""Forward and backward of the functional forms against their definitions (SPEC section 1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import binary_neurons as bn
from binary_neurons import functional as F
from binary_neurons.functional import deterministic_binary, preactivation, stochastic_binary

from tests.conftest import GRAD_RTOL, grad_atol


def _sigmoid64(x: np.ndarray) -> np.ndarray:
    # exp(-|x|) never overflows and keeps full relative precision in both tails.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def closed_form_gradient(name: str, grad: torch.Tensor, a: torch.Tensor, slope: float, clip=1.0):
    """The estimators' pseudo-gradients, written out in float64 NumPy.

    The kernels compute ``x = s * a`` in the input's opmath type (float32 for float32 and the
    half types); in the sigmoid's tails that rounding alone moves the result by about
    ``|x| * eps``. The reference therefore takes the same rounded ``x`` and evaluates the rest of
    the closed form in float64, so the tolerance measures the derivative itself.
    """
    g = grad.double().cpu().numpy()
    opmath = torch.promote_types(a.dtype, torch.float32)
    x = (a.to(opmath) * torch.tensor(slope, dtype=opmath)).double().cpu().numpy()
    if name == "identity":
        return g
    if name in ("sigmoid", "annealed"):
        return g * slope * _sigmoid64(x) * _sigmoid64(-x)
    if name == "clipped":
        return g * (np.abs(a.double().cpu().numpy()) <= clip)
    raise AssertionError(name)


def _inputs(dtype, device, n=1000, scale=4.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = (torch.randn(n, generator=g, dtype=torch.float64) * scale).to(dtype)
    return a.to(device)


class TestDeterministicForward:
    def test_threshold_definition(self, dtype, device):
        a = _inputs(dtype, device)
        a[:5] = torch.tensor([0.0, -0.0, 1e-30, -1e-30, float("inf")], dtype=dtype)
        y = deterministic_binary(a)
        assert y.dtype == dtype and y.shape == a.shape and y.device == a.device
        assert torch.equal(y, (a > 0).to(dtype))

    def test_zero_gives_zero_and_nan_gives_nan(self, dtype, device):
        values = [0.0, float("nan"), -float("inf"), float("inf")]
        a = torch.tensor(values, dtype=dtype, device=device)
        y = deterministic_binary(a)
        assert y[0].item() == 0.0
        assert math.isnan(y[1].item())
        assert y[2].item() == 0.0 and y[3].item() == 1.0

    @pytest.mark.parametrize("slope", [0.01, 1.0, 6.12, 1000.0])
    def test_slope_does_not_change_forward(self, slope, device):
        a = _inputs(torch.float32, device)
        assert torch.equal(deterministic_binary(a, slope=slope), (a > 0).float())

    def test_input_not_modified(self, dtype, device):
        a = _inputs(dtype, device)
        before = a.clone()
        deterministic_binary(a)
        stochastic_binary(a)
        assert torch.equal(a, before)


class TestStochasticForward:
    def test_values_shape_dtype(self, dtype, device):
        a = _inputs(dtype, device)
        y = stochastic_binary(a)
        assert y.dtype == dtype and y.shape == a.shape
        assert set(y.unique().tolist()) <= {0.0, 1.0}

    def test_saturated_inputs(self, device):
        a = torch.tensor([-1e4, 1e4, -float("inf"), float("inf")], device=device)
        for _ in range(20):
            assert stochastic_binary(a, slope=1000.0).tolist() == [0.0, 1.0, 0.0, 1.0]

    def test_nan_gives_nan(self, device):
        y = stochastic_binary(torch.tensor([float("nan"), 1.0], device=device))
        assert math.isnan(y[0].item())

    @pytest.mark.parametrize("slope", [0.5, 1.0, 3.0])
    def test_mean_is_sigmoid_binomial_over_seeds(self, slope, device):
        """E[y] = sigmoid(s a): the count of ones is Binomial-like for every seed.

        For 30 seeds the standardised count z = (sum y - sum p) / sqrt(sum p (1 - p)) must stay
        within 5 standard deviations, and sum z^2 must be a plausible chi-square(30) draw
        (between its 1e-4 and 1 - 1e-4 quantiles, 7.6 and 66.6), which checks the variance too.
        """
        a = torch.linspace(-4, 4, 20_001, dtype=torch.float64, device=device)
        p = torch.sigmoid(slope * a)
        mean, std = p.sum().item(), (p * (1 - p)).sum().sqrt().item()
        z = []
        for seed in range(30):
            generator = torch.Generator(device=device).manual_seed(seed)
            y = stochastic_binary(a.float(), slope=slope, generator=generator)
            z.append((y.double().sum().item() - mean) / std)
        z = np.array(z)
        assert np.all(np.abs(z) < 5), z
        assert 7.6 < float(np.sum(z**2)) < 66.6, z

    def test_mean_per_element(self, device):
        """Averaged over many draws each element's frequency approaches its own p."""
        a = torch.tensor([-3.0, -1.0, 0.0, 0.5, 2.0], device=device)
        draws = 20_000
        generator = torch.Generator(device=device).manual_seed(1234)
        batch = a.expand(draws, -1).contiguous()
        freq = stochastic_binary(batch, generator=generator).double().mean(0)
        p = torch.sigmoid(a.double())
        tolerance = 5 * torch.sqrt(p * (1 - p) / draws)
        assert torch.all((freq - p).abs() < tolerance), (freq, p)

    def test_fresh_noise_every_call(self, device):
        a = torch.zeros(1000, device=device)
        assert not torch.equal(stochastic_binary(a), stochastic_binary(a))


class TestReproducibility:
    def test_manual_seed(self, dtype, device):
        a = _inputs(dtype, device)
        torch.manual_seed(7)
        first = stochastic_binary(a)
        torch.manual_seed(7)
        second = stochastic_binary(a)
        assert torch.equal(first, second)

    def test_explicit_generator(self, dtype, device):
        a = _inputs(dtype, device)
        first = stochastic_binary(a, generator=torch.Generator(device=device).manual_seed(3))
        torch.manual_seed(0)  # the default generator must not matter
        second = stochastic_binary(a, generator=torch.Generator(device=device).manual_seed(3))
        third = stochastic_binary(a, generator=torch.Generator(device=device).manual_seed(4))
        assert torch.equal(first, second)
        assert not torch.equal(first, third)

    def test_generator_advances(self, device):
        a = torch.zeros(1000, device=device)
        generator = torch.Generator(device=device).manual_seed(0)
        assert not torch.equal(
            stochastic_binary(a, generator=generator), stochastic_binary(a, generator=generator)
        )


ESTIMATOR_NAMES = ["identity", "sigmoid", "annealed", "clipped"]


class TestGradients:
    @pytest.mark.parametrize("estimator", ESTIMATOR_NAMES)
    @pytest.mark.parametrize("stochastic", [False, True], ids=["dbn", "sbn"])
    @pytest.mark.parametrize("slope", [0.5, 1.0, 6.1159])
    def test_closed_form(self, estimator, stochastic, slope, dtype, device):
        a = _inputs(dtype, device, scale=2.0).requires_grad_()
        grad = _inputs(dtype, device, seed=1)
        neuron = stochastic_binary if stochastic else deterministic_binary
        neuron(a, estimator=estimator, slope=slope).backward(grad)
        expected = closed_form_gradient(estimator, grad, a.detach(), slope)
        assert a.grad.dtype == dtype
        np.testing.assert_allclose(
            a.grad.double().cpu().numpy(),
            expected,
            rtol=GRAD_RTOL[dtype],
            atol=grad_atol(dtype, slope),
        )

    @pytest.mark.parametrize("clip", [0.25, 2.0])
    def test_clip_value(self, clip, device):
        a = torch.linspace(-3, 3, 61, device=device, requires_grad=True)
        estimator = bn.ClippedStraightThrough(clip_value=clip)
        deterministic_binary(a, estimator=estimator).sum().backward()
        assert torch.equal(a.grad, (a.detach().abs() <= clip).float())

    @pytest.mark.parametrize("estimator", ESTIMATOR_NAMES)
    def test_finite_gradients_at_extremes(self, estimator, dtype, device):
        magnitude = 1e4 if dtype != torch.float16 else 6e4
        a = torch.tensor(
            [-magnitude, -1e4, -1.0, 0.0, 1e-3, 1.0, 1e4, magnitude], dtype=dtype, device=device
        ).requires_grad_()
        for slope in (1e-3, 1.0, 1e3):
            a.grad = None
            for neuron in (deterministic_binary, stochastic_binary):
                neuron(a, estimator=estimator, slope=slope).sum().backward()
                assert torch.isfinite(a.grad).all(), (slope, a.grad)

    def test_tensor_slope_gets_no_gradient(self, device):
        slope = torch.tensor(2.0, requires_grad=True)
        a = torch.randn(10, device=device, requires_grad=True)
        stochastic_binary(a, slope=slope).sum().backward()
        assert slope.grad is None and a.grad is not None

    def test_custom_estimator(self, device):
        class Doubling(bn.Estimator):
            name = "doubling"

            def backward(self, grad_output, input, slope):
                return 2 * grad_output

        a = torch.randn(10, device=device, requires_grad=True)
        y = stochastic_binary(a, estimator=Doubling())
        assert set(y.unique().tolist()) <= {0.0, 1.0}
        y.sum().backward()
        assert torch.equal(a.grad, torch.full_like(a, 2.0))


class TestLayouts:
    @pytest.mark.parametrize("shape", [(), (0,), (3, 0, 2), (1,), (2, 3, 4, 5)])
    def test_shapes(self, shape, device):
        a = torch.randn(shape, device=device, requires_grad=True)
        for neuron in (deterministic_binary, stochastic_binary):
            y = neuron(a)
            assert y.shape == a.shape
            y.sum().backward()
            assert a.grad.shape == a.shape

    def test_non_contiguous(self, device):
        base = torch.randn(64, 48, device=device)
        a = base.t()[::2]
        assert not a.is_contiguous()
        assert torch.equal(deterministic_binary(a), (a > 0).float())
        generator = torch.Generator(device=device)
        y = stochastic_binary(a, generator=generator.manual_seed(0))
        expected = stochastic_binary(a.contiguous(), generator=generator.manual_seed(0))
        assert y.shape == a.shape and set(y.unique().tolist()) <= {0.0, 1.0}
        # Same seed and same logical values: the samples may differ by layout, but the gradient
        # is elementwise and must agree exactly.
        assert expected.shape == y.shape
        a = a.clone().requires_grad_()
        stochastic_binary(a).sum().backward()
        b = a.detach().contiguous().requires_grad_()
        stochastic_binary(b).sum().backward()
        assert torch.equal(a.grad, b.grad)

    def test_channels_last(self, device):
        a = torch.randn(2, 3, 5, 4, device=device).to(memory_format=torch.channels_last)
        for neuron in (deterministic_binary, stochastic_binary):
            y = neuron(a)
            assert y.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(deterministic_binary(a), (a > 0).float())


class TestPreactivation:
    def test_matches_sigmoid(self, device):
        a = torch.randn(100, device=device)
        assert torch.allclose(preactivation(a, 2.5), torch.sigmoid(2.5 * a))


class TestBadInputs:
    @pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool])
    def test_integer_and_bool_tensors(self, dtype):
        a = torch.zeros(3, dtype=dtype)
        for neuron in (deterministic_binary, stochastic_binary):
            with pytest.raises(TypeError, match=rf"floating-point tensor.*got {dtype}"):
                neuron(a)

    def test_complex_tensor(self):
        with pytest.raises(TypeError, match="floating-point"):
            deterministic_binary(torch.zeros(3, dtype=torch.complex64))

    def test_not_a_tensor(self):
        with pytest.raises(TypeError, match="torch.Tensor, got list"):
            deterministic_binary([1.0, 2.0])

    @pytest.mark.parametrize("slope", [0.0, -1.0, float("nan"), float("inf"), -float("inf")])
    def test_bad_slope(self, slope):
        for neuron in (deterministic_binary, stochastic_binary):
            with pytest.raises(ValueError, match=r"slope must be a finite number > 0, got"):
                neuron(torch.zeros(3), slope=slope)
            with pytest.raises(ValueError, match=r"slope must be a finite number > 0, got"):
                neuron(torch.zeros(3), slope=torch.tensor(slope))

    def test_slope_of_wrong_type_or_shape(self):
        with pytest.raises(TypeError, match="slope must be a number"):
            deterministic_binary(torch.zeros(3), slope="1")
        with pytest.raises(ValueError, match="one element"):
            deterministic_binary(torch.zeros(3), slope=torch.ones(2))
        with pytest.raises(ValueError, match="floating-point tensor with one element"):
            deterministic_binary(torch.zeros(3), slope=torch.tensor(2))

    def test_unknown_estimator(self):
        message = (
            r"unknown estimator 'ste'; expected one of 'identity', 'sigmoid', 'annealed', "
            r"'clipped'"
        )
        with pytest.raises(ValueError, match=message):
            deterministic_binary(torch.zeros(3), estimator="ste")
        with pytest.raises(TypeError, match="string or an Estimator"):
            stochastic_binary(torch.zeros(3), estimator=3)

    def test_bad_clip_value(self):
        for clip in (0.0, -1.0, float("nan")):
            with pytest.raises(ValueError, match="clip_value must be a finite number > 0"):
                bn.ClippedStraightThrough(clip)

    def test_generator_on_another_device(self):
        # A meta tensor stands in for "another device" on machines without CUDA.
        with pytest.raises(ValueError, match=r"generator is on cpu but input is on meta"):
            stochastic_binary(torch.zeros(3, device="meta"), generator=torch.Generator())

    @pytest.mark.cuda
    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
    def test_cpu_generator_with_cuda_input(self):
        with pytest.raises(ValueError, match=r"generator is on cpu but input is on cuda"):
            stochastic_binary(torch.zeros(3, device="cuda"), generator=torch.Generator())

    def test_generator_of_wrong_type(self):
        with pytest.raises(TypeError, match="torch.Generator or None"):
            stochastic_binary(torch.zeros(3), generator=0)


@pytest.mark.parametrize("name", ["check_input", "check_slope_value", "draw_seed", "apply_binary"])
def test_former_plumbing_is_deprecated_and_still_works(name):
    with pytest.warns(DeprecationWarning, match=f"functional.{name} is deprecated .* use "):
        function = getattr(F, name)
    a = torch.tensor([-1.0, 2.0])
    if name == "check_input":
        function(a)
        with pytest.raises(TypeError, match="floating-point"):
            function(torch.ones(2, dtype=torch.int64))
    elif name == "check_slope_value":
        assert function(2) == 2.0
    elif name == "draw_seed":
        seed = function(a, torch.Generator().manual_seed(0))
        assert seed.dtype == torch.int64 and seed.dim() == 0
    else:
        y = function(a, bn.get_estimator("gumbel"), torch.tensor(1.0), torch.tensor(3),
                     torch.tensor(0.5))
        assert set(y.tolist()) <= {0.0, 1.0}
    assert name not in F.__all__


def test_public_functional_names():
    assert F.__all__ == ["deterministic_binary", "stochastic_binary", "preactivation", "to_signed"]
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        F.nothing
