"""Edge cases a differential fuzz of the op found, each pinned on both backends.

1. seed or slope on another device than the input's or the CPU (the meta device);
2. p = 0 must never fire, p = 1 always;
3. the sigmoid-adjusted gradient keeps its tail far from 0 (an infinite g stays infinite);
4. a grad_output of another dtype than the input's;
5. a stride-0 grad_output (from ``y.sum().backward()``) is not copied;
6. both backends accept and reject the same raw-op arguments;
7. the public API: slopes out of range, the annealer leaving float32, eval_mode, the annealer's
   state_dict, an Estimator without backward.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import binary_neurons as bn
from binary_neurons.functional import deterministic_binary, stochastic_binary

from tests.conftest import FLOAT_DTYPES

OP = torch.ops.binary_neurons.threshold_sample.default
OP_BACKWARD = torch.ops.binary_neurons.threshold_sample_backward.default
ONE = torch.tensor(1.0, dtype=torch.float64)
INF = math.inf


# 1 -------------------------------------------------------------------------------------------


def test_seed_or_slope_on_the_meta_device_beside_a_cpu_input_is_an_error():
    x = torch.randn(4)
    with pytest.raises(ValueError, match="expected seed on the CPU or on cpu, got meta"):
        OP(x, ONE, torch.tensor(3, device="meta"), "sigmoid", 1.0)
    with pytest.raises(ValueError, match="expected slope on the CPU or on cpu, got meta"):
        OP(x, torch.tensor(1.0, device="meta"), None, "sigmoid", 1.0)
    with pytest.raises(ValueError, match="expected slope on the CPU or on cpu, got meta"):
        OP_BACKWARD(x, x, torch.tensor(1.0, device="meta"), "sigmoid", 1.0)
    # All on the meta device: shapes only, as for any meta computation.
    y = OP(x.to("meta"), ONE, torch.tensor(3, device="meta"), "sigmoid", 1.0)
    assert y.device.type == "meta" and y.shape == x.shape


# 2 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_probability_zero_never_fires_and_one_always_does(dtype):
    # Seed 63 gives element 484,332 the Philox word 251, the smallest uniform of the native
    # kernels; it used to be 0, and 0 < p held for p = 0.
    n = 484_333
    seed = torch.tensor(63)
    for value in (-INF, -200.0, -1e4):
        y = OP(torch.full((n,), value, dtype=dtype), ONE, seed, "sigmoid", 0.0)
        assert y[-1].item() == 0 and y.sum().item() == 0
    for value in (INF, 200.0):
        assert OP(torch.full((n,), value, dtype=dtype), ONE, seed, "sigmoid", 0.0).all()


def test_probability_zero_never_fires_in_float64():
    seed = torch.tensor(5)
    never = torch.full((100_000,), -INF, dtype=torch.float64)
    assert OP(never, ONE, seed, "sigmoid", 0.0).sum() == 0
    assert OP(-never, ONE, seed, "sigmoid", 0.0).all()


# 3 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dtype, values",
    [(torch.float32, [88.7, -95.0, 100.0, 103.0]), (torch.float64, [709.0, -720.0, 740.0])],
)
def test_sigmoid_gradient_keeps_its_tail(dtype, values):
    a = torch.tensor(values, dtype=dtype)
    grad = OP_BACKWARD(torch.ones_like(a), a, ONE, "sigmoid", 0.0)
    # s p (1 - p) = e / (1 + e)^2 ~ e = exp(-|a|), a subnormal number here.
    expected = torch.tensor([math.exp(-abs(v)) for v in values], dtype=torch.float64)
    assert (grad > 0).all()
    smallest = torch.finfo(dtype).smallest_normal * torch.finfo(dtype).eps  # subnormal spacing
    torch.testing.assert_close(grad.double(), expected, rtol=0.05, atol=2 * smallest)
    assert OP_BACKWARD(torch.full_like(a, INF), a, ONE, "sigmoid", 0.0).eq(INF).all()


def test_infinite_gradient_through_a_saturated_neuron_stays_infinite():
    a = torch.tensor([88.7], requires_grad=True)
    deterministic_binary(a).backward(torch.tensor([INF]))
    assert a.grad.item() == INF


# 4 -------------------------------------------------------------------------------------------


def test_grad_output_of_another_dtype_is_an_error():
    with pytest.raises(TypeError, match="grad_output of the input's dtype Half, got Float"):
        OP_BACKWARD(torch.tensor([1e5]), torch.tensor([200.0], dtype=torch.float16), ONE,
                    "sigmoid", 0.0)


# 5 -------------------------------------------------------------------------------------------


def _bytes_allocated_by_the_backward(grad, input, estimator) -> int:
    """CPU memory the backward op allocates, freed or not (the profiler's count: each op's own
    allocations, summed; its frees are negative and left out)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                profile_memory=True) as profile:
        OP_BACKWARD(grad, input, ONE, estimator, 1.0)
    return sum(max(0, row.self_cpu_memory_usage) for row in profile.key_averages())


@pytest.mark.parametrize("estimator", ["sigmoid", "clipped"])
def test_stride_zero_gradient_is_not_copied(estimator):
    n = 1 << 20
    a = torch.randn(n)
    dense = torch.full((n,), 0.5)
    expanded = torch.tensor(0.5).expand(n)  # what y.sum().backward() passes
    assert torch.equal(OP_BACKWARD(expanded, a, ONE, estimator, 1.0),
                       OP_BACKWARD(dense, a, ONE, estimator, 1.0))
    from_dense = _bytes_allocated_by_the_backward(dense, a, estimator)
    assert from_dense >= 4 * n  # the output, at least: the count is real
    assert _bytes_allocated_by_the_backward(expanded, a, estimator) <= from_dense


def test_sum_backward_gives_the_dense_result():
    a = torch.randn(1000, requires_grad=True)
    deterministic_binary(a).sum().backward()
    expected = OP_BACKWARD(torch.ones(1000), a.detach(), ONE, "sigmoid", 0.0)
    assert torch.equal(a.grad, expected)


# 6 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: OP(torch.ones(4), ONE, torch.tensor(3.0), "sigmoid", 0.0), ValueError,
         "expected seed to be a 0-dim int64 tensor, got shape \\[\\] and dtype Float"),
        (lambda: OP(torch.ones(4), ONE, torch.tensor([3]), "sigmoid", 0.0), ValueError,
         "expected seed to be a 0-dim int64 tensor, got shape \\[1\\] and dtype Long"),
        (lambda: OP(torch.ones(4), torch.tensor([1.0]), None, "sigmoid", 0.0), ValueError,
         "expected slope to be a 0-dim floating-point tensor, got shape \\[1\\]"),
        (lambda: OP(torch.ones(4), torch.tensor(1), None, "sigmoid", 0.0), ValueError,
         "expected slope to be a 0-dim floating-point tensor, got shape \\[\\] and dtype Long"),
        (lambda: OP(torch.ones(4, dtype=torch.int64), ONE, None, "sigmoid", 0.0), TypeError,
         "expected a floating-point input \\(Half, BFloat16, Float or Double\\), got Long"),
        (lambda: OP(torch.ones(4), ONE, None, "ste", 0.0), ValueError,
         "threshold_sample: unknown kernel 'ste'"),
        (lambda: OP_BACKWARD(torch.ones(1), torch.ones(4), ONE, "sigmoid", 0.0), ValueError,
         "expected grad_output of the input's shape \\[4\\], got \\[1\\]"),
    ],
    ids=["float seed", "seed of shape (1,)", "slope of shape (1,)", "integer slope",
         "integer input", "unknown estimator", "grad of another shape"],
)
def test_both_backends_reject_the_same_arguments(call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize("slope", [math.nan, -1.0, 0.0, INF, 1e300, 1e-50])
@pytest.mark.parametrize("seed", [None, 3], ids=["threshold", "sample"])
def test_unusable_slope_on_the_cpu_is_an_error(slope, seed):
    seed = None if seed is None else torch.tensor(seed)
    with pytest.raises(ValueError, match="expected slope to be a finite number > 0"):
        OP(torch.ones(4), torch.tensor(slope, dtype=torch.float64), seed, "sigmoid", 0.0)
    with pytest.raises(ValueError, match="expected slope to be a finite number > 0"):
        OP_BACKWARD(torch.ones(4), torch.ones(4), torch.tensor(slope, dtype=torch.float64),
                    "sigmoid", 0.0)


def test_large_and_small_slopes_are_fine_in_float64():
    a = torch.tensor([-1.0, 1.0], dtype=torch.float64)
    for slope in (1e300, 1e-50):
        y = OP(a, torch.tensor(slope, dtype=torch.float64), None, "sigmoid", 0.0)
        assert y.tolist() == [0.0, 1.0]


# 7 -------------------------------------------------------------------------------------------


def test_slope_too_large_for_float32_inputs_is_an_error():
    with pytest.raises(ValueError, match="at most 3.4e38 in Float.*got 1e\\+308"):
        stochastic_binary(torch.zeros(8), slope=1e308)
    assert stochastic_binary(torch.zeros(8, dtype=torch.float64), slope=1e308).shape == (8,)


@pytest.mark.parametrize("factor, steps_ok", [(1.1, 900), (0.5, 120)])
def test_annealer_stops_before_a_slope_leaves_float32(factor, steps_ok):
    layer = bn.StochasticBinary(estimator="annealed")
    annealer = bn.SlopeAnnealer(layer, factor=factor)
    for _ in range(steps_ok):
        annealer.step()
    with pytest.raises(ValueError, match="outside float32's range .* set max_slope"):
        for _ in range(100):
            last = float(layer.slope)
            annealer.step()
    assert float(layer.slope) == last  # the failing step changed nothing
    limits = torch.finfo(torch.float32)
    assert limits.tiny <= last <= limits.max


def test_eval_mode_is_checked_when_set():
    layer = bn.StochasticBinary()
    with pytest.raises(ValueError, match="unknown eval_mode 'bogus'; expected one of"):
        layer.eval_mode = "bogus"
    assert layer.eval_mode == "sample"
    layer.eval_mode = "threshold"
    assert layer.eval().forward(torch.tensor([-1.0, 1.0])).tolist() == [0.0, 1.0]


@pytest.mark.parametrize("num_steps", [-5, 2.7, "3", True, None])
def test_annealer_state_dict_needs_a_step_count(num_steps):
    annealer = bn.SlopeAnnealer(bn.StochasticBinary(estimator="annealed"))
    state = {**annealer.state_dict(), "num_steps": num_steps}
    with pytest.raises(ValueError, match="num_steps in the SlopeAnnealer state_dict must be an "
                                         "integer >= 0"):
        annealer.load_state_dict(state)
    assert annealer.num_steps == 0
    with pytest.raises(KeyError, match="missing \\['num_steps'\\]"):
        annealer.load_state_dict({"factor": 1.1, "max_slope": None})


def test_estimator_without_backward_says_so():
    with pytest.raises(TypeError, match="Estimator has no backward: subclass Estimator"):
        stochastic_binary(torch.zeros(3), estimator=bn.Estimator())
    with pytest.raises(NotImplementedError, match="does not implement backward"):
        bn.Estimator().backward(torch.ones(1), torch.ones(1), ONE)
    with pytest.raises(TypeError, match="has no backward"):
        nn.Sequential(bn.DeterministicBinary(estimator=bn.Estimator()))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_layers_accept_every_dtype_after_the_checks(dtype):
    layer = bn.StochasticBinary(estimator="annealed")
    a = torch.randn(16, dtype=dtype, requires_grad=True)
    layer(a).sum().backward()
    assert a.grad is not None and torch.isfinite(a.grad).all()
