"""Differential fuzz: the native kernels against the pure-PyTorch reference (``_fallback``).

Each case draws a dtype, a shape (empty, 0-dim and odd sizes included), a memory layout
(contiguous, transposed, channels_last, strided, offset, expanded), pre-activations mixing
normal values with specials (NaN, +-inf, +-0, subnormals, 6e4, values where the sigmoid
saturates), a slope from 1e-3 to 1e3, an estimator and a clip value, and checks:

* the deterministic forward: equal, bit for bit, with the same layout;
* the stochastic forward: 0 or 1, NaN exactly where the input is NaN, the same again for the
  same seed, and decided (as the reference decides it) wherever p is exactly 0 or 1;
* the backward of every estimator: equal within the documented tolerances (``TOLERANCES``);
  the Gumbel backward, whose uniforms differ between the backends, against a float64 formula
  evaluated with the native kernels' own uniforms (``test_gumbel_backward_against_the_formula``).

The two backends draw different (equally valid) uniforms, so their samples are compared by
their statistics instead (``test_sampling_statistics``).

The default run does a few hundred cases and 1e5 draws; ``make fuzz`` runs the hypothesis
profile ``fuzz`` (10,000 cases) and 1e7 draws per dtype and probability.
"""

from __future__ import annotations

import math
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import binary_neurons
from binary_neurons import _fallback
from binary_neurons._kernel_list import KERNELS

from tests.conftest import FLOAT_DTYPES, grad_atol, same_bits
from tests.philox_engine import philox_uniform

pytestmark = pytest.mark.skipif(
    binary_neurons.backend_info().devices["cpu"] != "native",
    reason="compares the native kernels with the pure-PyTorch ones: needs the native kernels",
)

OP = torch.ops.binary_neurons.threshold_sample.default
OP_BACKWARD = torch.ops.binary_neurons.threshold_sample_backward.default
DRAWS = int(os.environ.get("BINARY_NEURONS_FUZZ_DRAWS", "100000"))

# How far the native backward may be from the reference: relative, per dtype (both compute in
# float32 for the half types and round once: one ulp of the dtype), plus the absolute floor of
# the other gradient tests (conftest.grad_atol: the smallest normal number, times the slope)
# times the largest |g|: below it, only absolute precision is left.
TOLERANCES = {
    torch.float16: 1e-3, torch.bfloat16: 8e-3, torch.float32: 4e-6, torch.float64: 1e-13,
}
SPECIALS = [math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-40, -1e-40, 6e4, -6e4, 88.7, -88.7,
            100.0, -100.0, 1e5, 740.0, 1e-310]
LAYOUTS = ["contiguous", "transposed", "channels_last", "strided", "offset", "expanded"]


# The kernels that read no uniforms: the ones that draw the forward's again (Gumbel) differ
# between the backends, whose generators differ.
STRAIGHT_THROUGH = tuple(name for name, kernel in KERNELS.items() if "uniform" not in kernel.reads)


@st.composite
def cases(draw, estimators=STRAIGHT_THROUGH):
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    shape = tuple(draw(st.lists(st.integers(0, 9), min_size=0, max_size=4)))
    if draw(st.booleans()) and len(shape) == 1:
        shape = (draw(st.integers(10, 5000)),)  # across vector widths and tile boundaries
    layout = draw(st.sampled_from(LAYOUTS))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    scale = draw(st.sampled_from([1.0, 10.0, 1e3]))
    return {
        "input": _tensor(shape, dtype, layout, generator, scale, draw),
        "grad_scale": draw(st.sampled_from([1.0, 1e-3, 6e4])),
        "slope": draw(st.one_of(st.just(1.0), st.floats(1e-3, 1e3))),
        "estimator": draw(st.sampled_from(estimators)),
        "clip_value": draw(st.sampled_from([0.0, 0.5, 1.0, 3.0])),
        "seed": draw(st.integers(0, 2**62)),
        "generator": generator,
    }


def _tensor(shape, dtype, layout, generator, scale, draw) -> torch.Tensor:
    if layout == "transposed" and len(shape) >= 2:
        base = _values(shape[::-1], generator, scale, draw).permute(*reversed(range(len(shape))))
    elif layout == "channels_last" and len(shape) == 4:
        base = _values(shape, generator, scale, draw).to(memory_format=torch.channels_last)
    elif layout == "strided" and shape:
        wide = _values((*shape[:-1], 2 * shape[-1]), generator, scale, draw)
        base = wide[..., ::2]
    elif layout == "offset":
        flat = _values((math.prod(shape) + 1,), generator, scale, draw)
        base = flat[1:].view(shape)
    elif layout == "expanded" and shape and shape[0] > 1:
        base = _values((1, *shape[1:]), generator, scale, draw).expand(shape)
    else:
        base = _values(shape, generator, scale, draw)
    return base.to(dtype) if base.dtype != dtype else base


def _values(shape, generator, scale, draw) -> torch.Tensor:
    values = torch.randn(shape, generator=generator, dtype=torch.float64) * scale
    if values.numel():
        flat = values.view(-1)
        for _ in range(draw(st.integers(0, 4))):
            index = draw(st.integers(0, flat.numel() - 1))
            flat[index] = draw(st.sampled_from(SPECIALS))
    return values


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(cases())
def test_native_agrees_with_the_reference(case):
    a, estimator, clip = case["input"], case["estimator"], case["clip_value"]
    slope = torch.tensor(case["slope"], dtype=torch.float64)

    # Deterministic forward: bit for bit.
    assert same_bits(OP(a, slope, None, estimator, clip),
                  _fallback.threshold_sample(a, slope, None, estimator, clip))

    # Stochastic forward: values, NaN, determinism, and where p is exactly 0 or 1.
    seed = torch.tensor(case["seed"])
    y = OP(a, slope, seed, estimator, clip)
    reference = _fallback.threshold_sample(a, slope, seed, estimator, clip)
    assert same_bits(y, OP(a, slope, seed, estimator, clip))
    nan = a.isnan()
    assert torch.equal(y.isnan(), nan) and torch.equal(reference.isnan(), nan)
    assert y[~nan].eq(0).logical_or(y[~nan].eq(1)).all()
    p = torch.sigmoid(a.to(torch.float64) * case["slope"])
    certain = (p == 0) | (p == 1)
    assert torch.equal(y[certain], p[certain].to(a.dtype))
    assert torch.equal(reference[certain], p[certain].to(a.dtype))

    # Backward: within the documented tolerances.
    g = (torch.randn(a.shape, generator=case["generator"], dtype=torch.float64)
         * case["grad_scale"]).to(a.dtype)
    native = OP_BACKWARD(g, a, slope, estimator, clip)
    expected = _fallback.threshold_sample_backward(g, a, slope, estimator, clip)
    assert native.stride() == expected.stride()
    if estimator == "sigmoid":
        g_max = float(g.abs().max()) if g.numel() else 0.0
        floor = grad_atol(a.dtype, case["slope"]) * max(1.0, g_max)
        torch.testing.assert_close(native, expected, rtol=TOLERANCES[a.dtype], atol=floor,
                                   equal_nan=True)
    else:
        assert same_bits(native, expected)


def _native_uniforms(a: torch.Tensor, seed: int) -> torch.Tensor:
    """The uniforms the native kernels draw for ``a``, in float64, laid out as ``a``: element i
    of the output's memory (``empty_like(a)``'s dense layout) takes uniform i."""
    double = a.dtype == torch.float64
    flat = philox_uniform(seed, 0, a.numel(), double).double()
    u = torch.empty_like(a, dtype=torch.float64)
    u.as_strided((u.numel(),), (1,)).copy_(flat)
    return u


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(cases(estimators=("gumbel",)), st.floats(0.05, 20.0))
def test_gumbel_backward_against_the_formula(case, tau):
    a, clip = case["input"], case["clip_value"]
    slope = torch.tensor(case["slope"], dtype=torch.float64)
    seed = torch.tensor(case["seed"])
    tau_t = torch.tensor(tau, dtype=torch.float64)
    # The forward is the stochastic neuron's sample, bit for bit.
    assert same_bits(OP(a, slope, seed, "gumbel", clip, tau_t),
                     OP(a, slope, seed, "sigmoid", clip))
    g = (torch.randn(a.shape, generator=case["generator"], dtype=torch.float64)
         * case["grad_scale"]).to(a.dtype)
    native = OP_BACKWARD(g, a, slope, "gumbel", clip, seed, tau_t)
    reference = _fallback.threshold_sample_backward(g, a, slope, "gumbel", clip, seed, tau_t)
    assert native.stride() == reference.stride()
    # NaN where a is NaN; an infinite g times a q (1 - q) that underflows to 0 is NaN too, which
    # depends on the backend's uniform.
    finite_g = g.isfinite()
    assert torch.equal(native.isnan()[finite_g], reference.isnan()[finite_g])
    # g (s / tau) q (1 - q), q = sigmoid(z), with the native uniforms, in float64 (a stable form).
    u = _native_uniforms(a, case["seed"])
    z = (a.double() * case["slope"] - torch.logit(u)) / tau
    e = torch.exp(-z.abs())
    exact = g.double() * (case["slope"] / tau) * e / (1 + e).square()
    # The kernel rounds s a, logit(u) and z in its opmath type: a relative error of a few ulps
    # of z in z, which is that times |z| in q (1 - q); then one rounding to the dtype.
    opmath = torch.promote_types(a.dtype, torch.float32)
    eps = torch.finfo(opmath).eps
    rtol = 16 * eps * (2 + z.abs() * (1 + (a.double() * case["slope"]).abs() / tau))
    rtol = rtol + TOLERANCES[a.dtype]
    g_max = float(g.abs().max()) if g.numel() else 0.0
    floor = grad_atol(a.dtype, case["slope"] / tau) * max(1.0, g_max)
    infinite = z.isinf()  # a = +-inf: q is 0 or 1, so no gradient
    assert bool(native[infinite & finite_g].eq(0).all())
    finite = exact.isfinite() & native.isfinite() & ~infinite
    error = (native.double() - exact).abs()
    assert bool((error[finite] <= rtol[finite] * exact.abs()[finite] + floor).all())


# ---------------------------------------------------------------------------------------------
# Sampling statistics: both backends against p, including p at 0 and 1 and near them.

PROBABILITIES = [0.0, 1e-6, 1e-3, 0.5, 1 - 1e-3, 1 - 1e-6, 1.0]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("backend", ["native", "reference"])
def test_sampling_statistics(dtype, backend):
    run = OP if backend == "native" else _fallback.threshold_sample
    opmath = torch.promote_types(dtype, torch.float32)
    # Uniforms are cell midpoints on a grid of 2^-23 (float) or 2^-52 (double) in the native
    # kernels, of 2^-24 or 2^-53 in torch.rand: P(fire) may differ from p by one cell.
    cell = 2.0**-23 if opmath == torch.float32 else 2.0**-52
    for index, target in enumerate(PROBABILITIES):
        logit = math.log(target / (1 - target)) if 0 < target < 1 else math.copysign(
            math.inf, target - 0.5)
        a = torch.full((DRAWS,), logit, dtype=dtype)
        p = float(torch.sigmoid(a[:1].to(torch.float64)))  # the p of the rounded input
        y = run(a, torch.tensor(1.0), torch.tensor(1000 + index), "sigmoid", 0.0)
        hits = float(y.sum(dtype=torch.float64))
        if p in (0.0, 1.0):
            assert hits == p * DRAWS
            continue
        allowed = 6 * math.sqrt(DRAWS * p * (1 - p)) + DRAWS * cell + 1
        assert abs(hits - DRAWS * p) <= allowed, (target, p, hits)


# ---------------------------------------------------------------------------------------------
# On a GPU: the CUDA kernels against the CPU kernels, bit for bit (they share their arithmetic).


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.skipif(
    torch.cuda.is_available() and binary_neurons.backend_info().devices["cuda"] != "native",
    reason="compares the CUDA kernels with the CPU ones: needs the native kernels on CUDA",
)
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(cases(estimators=KERNELS))
def test_cuda_computes_the_cpu_kernels_bits(case):
    a, estimator, clip = case["input"], case["estimator"], case["clip_value"]
    a_cuda = a.cuda()
    slope = torch.tensor(case["slope"], dtype=torch.float64)
    seed, tau = torch.tensor(case["seed"]), torch.tensor(0.7, dtype=torch.float64)
    for forward_seed in (None, seed) if "uniform" not in KERNELS[estimator].reads else (seed,):
        cuda_seed = None if forward_seed is None else forward_seed.cuda()
        assert same_bits(OP(a_cuda, slope.cuda(), cuda_seed, estimator, clip, tau.cuda()).cpu(),
                         OP(a, slope, forward_seed, estimator, clip, tau))
    g = (torch.randn(a.shape, generator=case["generator"], dtype=torch.float64)
         * case["grad_scale"]).to(a.dtype)
    assert same_bits(
        OP_BACKWARD(g.cuda(), a_cuda, slope.cuda(), estimator, clip, seed.cuda(), tau.cuda()).cpu(),
        OP_BACKWARD(g, a, slope, estimator, clip, seed, tau),
    )
