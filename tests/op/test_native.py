"""Tests of the native kernels (the library compiled from ``binary_neurons/csrc``).

Skipped when the pure-PyTorch backend is in use. The sampler's uniforms are checked against a
bit-exact NumPy implementation of Philox4x32-10 (below), which is itself checked against ATen's
``at::Philox4_32``, compiled for the tests (``tests/philox_engine.py``).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import binary_neurons
from binary_neurons import _ops
from binary_neurons.functional import deterministic_binary, stochastic_binary

from tests.conftest import DEVICES
from tests.philox_engine import philox_uniform

pytestmark = pytest.mark.skipif(
    binary_neurons.backend_info().name != "native",
    reason="needs the native extension (the pure-PyTorch backend is in use)",
)

threshold_sample = torch.ops.binary_neurons.threshold_sample.default
threshold_sample_backward = torch.ops.binary_neurons.threshold_sample_backward.default

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
SETTINGS = settings(max_examples=25, deadline=None)


@pytest.fixture(params=DEVICES)
def device(request):
    if binary_neurons.backend_info().devices.get(request.param) != "native":
        pytest.skip(f"the extension was built without {request.param} kernels")
    return request.param


def _slope(value=1.0, dtype=torch.float64):
    return torch.tensor(value, dtype=dtype)


def _seed(value, device="cpu"):
    return torch.tensor(value, dtype=torch.int64, device=device)


def _opmath(dtype):
    return torch.promote_types(dtype, torch.float32)


# ---------------------------------------------------------------------------------------------
# Bit-exact reference of the sampler's random numbers.

_MASK32 = np.uint64(0xFFFFFFFF)


def philox4x32_10(counters, seed: int) -> np.ndarray:
    """Philox4x32-10 of counters ``(c, 0)`` (c < 2**64) under the 64-bit key ``seed``.

    Returns an array of shape ``(len(counters), 4)`` of uint32 words, as at::Philox4_32.
    """
    counters = np.asarray(counters, dtype=np.uint64)
    c0, c1 = counters & _MASK32, counters >> np.uint64(32)
    c2 = np.zeros_like(counters)
    c3 = np.zeros_like(counters)
    k0, k1 = np.uint64(seed & 0xFFFFFFFF), np.uint64((seed >> 32) & 0xFFFFFFFF)
    for _ in range(10):
        product0 = np.uint64(0xD2511F53) * c0
        product1 = np.uint64(0xCD9E8D57) * c2
        c0, c1, c2, c3 = (
            (product1 >> np.uint64(32)) ^ c1 ^ k0,
            product1 & _MASK32,
            (product0 >> np.uint64(32)) ^ c3 ^ k1,
            product0 & _MASK32,
        )
        k0 = (k0 + np.uint64(0x9E3779B9)) & _MASK32
        k1 = (k1 + np.uint64(0xBB67AE85)) & _MASK32
    return np.stack([c0, c1, c2, c3], axis=1)


def reference_uniforms(seed: int, indexes, float64: bool) -> np.ndarray:
    """The uniform the kernels draw for each element index (see csrc/elementwise.h)."""
    indexes = np.asarray(indexes, dtype=np.uint64)
    rows = np.arange(len(indexes))
    # The midpoints of 2^23 (float) or 2^52 (double) equal cells of [0, 1): never 0 or 1.
    if float64:
        words = philox4x32_10(indexes // np.uint64(2), seed)
        k = (indexes % np.uint64(2)).astype(np.int64)
        bits = (words[rows, 2 * k + 1] << np.uint64(32)) | words[rows, 2 * k]
        odd = ((bits >> np.uint64(12)) << np.uint64(1)) | np.uint64(1)
        return odd.astype(np.float64) * 2.0**-53
    words = philox4x32_10(indexes // np.uint64(4), seed)
    k = (indexes % np.uint64(4)).astype(np.int64)
    odd = ((words[rows, k] >> np.uint64(9)) << np.uint64(1)) | np.uint64(1)
    return odd.astype(np.float64) * 2.0**-24


def _logit(q: np.ndarray) -> np.ndarray:
    return np.log(q) - np.log1p(-q)


# ---------------------------------------------------------------------------------------------
# Registration.


def test_native_kernels_serve_cpu():
    info = binary_neurons.backend_info()
    assert info.name == "native"
    assert info.devices["cpu"] == "native"
    # The extension's CPU kernel, not the CompositeExplicitAutograd fallback, must run: the
    # fallback draws its noise with torch.rand and would not reproduce the Philox uniforms.
    n = 4096
    u = reference_uniforms(123, np.arange(n), float64=True)
    y = threshold_sample(torch.zeros(n, dtype=torch.float64), _slope(), _seed(123), "sigmoid", 0.0)
    assert torch.equal(y, torch.from_numpy((u < 0.5).astype(np.float64)))


@pytest.mark.parametrize("name", sorted(_ops.SCHEMAS))
def test_schema_matches_python_definition(name):
    schema = getattr(torch.ops.binary_neurons, name).default._schema
    assert str(schema) == "binary_neurons::" + _ops.SCHEMAS[name]


def test_the_native_library_defines_no_schema(tmp_path):
    # The schema is written once, in binary_neurons/_ops.py: the library registers
    # implementations only, so loaded alone it leaves the op undefined.
    script = (
        "import sys, torch\n"
        "torch.ops.load_library(sys.argv[1])\n"
        "names = ('binary_neurons::threshold_sample',\n"
        "         'binary_neurons::threshold_sample_backward')\n"
        "print([len(torch._C._jit_get_schemas_for_operator(name)) for name in names])\n"
    )
    library = binary_neurons.backend_info().library
    result = subprocess.run([sys.executable, "-c", script, library], capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == "[0, 0]"


# ---------------------------------------------------------------------------------------------
# Random numbers.


@pytest.mark.parametrize("float64", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2**40 + 7, 2**62 - 1])
@pytest.mark.parametrize("offset", [0, 5, 2**32 - 6, 2**32 + 1, 2**41 + 3])
def test_reference_philox_matches_aten_engine(seed, offset, float64):
    # The counters past 2**32 elements show that the counter does not wrap at 32 bits.
    engine = philox_uniform(seed, offset, 12, float64)
    expected = reference_uniforms(seed, np.arange(offset, offset + 12, dtype=np.uint64), float64)
    np.testing.assert_array_equal(engine.numpy().astype(np.float64), expected)


def test_uniforms_are_never_zero():
    # Seed 63 gives element 484,332 the Philox word 251: the smallest float uniform, 2^-24.
    # (The mapping used until 2026-11 made it 0, so that p = 0 fired; see test_edge_cases.)
    assert philox4x32_10([484_332 // 4], 63)[0, 484_332 % 4] == 251
    u = philox_uniform(63, 484_332, 1, False)
    assert u.item() == 2.0**-24


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", [3, 2**33 + 5, 2**62 - 11])
def test_sampler_draws_the_reference_uniforms(device, dtype, seed):
    # With p = u_ref +- margin, y = 1[u < p] tells on which side of p the kernel's uniform lies,
    # for every element. 70,001 elements span several parallel chunks starting mid-block.
    n = 70_001
    u = reference_uniforms(seed, np.arange(n), float64=dtype == torch.float64)
    margin = 2.0**-40 if dtype == torch.float64 else 2.0**-18
    usable = (u - margin > 0) & (u + margin < 1)
    for sign, expected in ((1.0, 1.0), (-1.0, 0.0)):
        q = np.where(usable, u + sign * margin, 0.5)
        a = torch.from_numpy(_logit(q)).to(dtype=dtype, device=device)
        y = threshold_sample(a, _slope(), _seed(seed, device), "sigmoid", 0.0).cpu().numpy()
        assert (y[usable] == expected).all(), (sign, np.flatnonzero(y[usable] != expected)[:10])


def _uniform_bins(seed: int, n: int, dtype, device, bins: int = 10) -> np.ndarray:
    """Which of `bins` equal bins each element's uniform falls into, read through the op."""
    counts = torch.zeros(n, dtype=torch.int64)
    for edge in range(1, bins):
        a = torch.full((n,), _logit(np.float64(edge / bins)), dtype=dtype, device=device)
        y = threshold_sample(a, _slope(), _seed(seed, device), "sigmoid", 0.0)
        counts += (y.cpu() == 0).to(torch.int64)  # u >= edge / bins
    return counts.numpy()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_uniform_quality(device, dtype):
    n, bins = 100_000, 10
    first = _uniform_bins(2024, n, dtype, device, bins)
    # Chi-square over the bins, 9 degrees of freedom: P(chi2 > 40) ~ 4e-6.
    observed = np.bincount(first, minlength=bins)
    chi2 = ((observed - n / bins) ** 2 / (n / bins)).sum()
    assert chi2 < 40, observed
    limit = 5 / math.sqrt(n)
    # Neighbours in and across Philox blocks are uncorrelated.
    for lag in (1, 2, 3, 4, 5):
        r = np.corrcoef(first[:-lag], first[lag:])[0, 1]
        assert abs(r) < limit, (lag, r)
    # Calls with different (even adjacent) seeds are uncorrelated.
    for other_seed in (2025, 2**40 + 2024):
        r = np.corrcoef(first, _uniform_bins(other_seed, n, dtype, device, bins))[0, 1]
        assert abs(r) < limit, (other_seed, r)


# ---------------------------------------------------------------------------------------------
# Forward.


@st.composite
def _dbn_inputs(draw):
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(st.lists(st.integers(0, 9), min_size=0, max_size=3))
    n = math.prod(shape)
    specials = [0.0, -0.0, 1e-30, -1e-30, math.inf, -math.inf, math.nan, 1e4, -1e4]
    values = draw(
        st.lists(
            st.one_of(st.sampled_from(specials), st.floats(-5, 5, width=16)),
            min_size=n,
            max_size=n,
        )
    )
    return torch.tensor(values, dtype=torch.float64).to(dtype).reshape(shape)


@SETTINGS
@given(a=_dbn_inputs())
def test_deterministic_forward_is_the_step_function(a):
    y = threshold_sample(a, _slope(), None, "sigmoid", 0.0)
    expected = torch.where(torch.isnan(a), a, (a > 0).to(a.dtype))
    assert y.dtype == a.dtype and y.shape == a.shape
    torch.testing.assert_close(y, expected, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_deterministic_forward_on_device(device, dtype):
    a = torch.tensor([-2.0, -0.0, 0.0, 1e-3, 3.0, math.nan, math.inf, -math.inf], dtype=dtype)
    a = a.repeat(1001).to(device)
    y = threshold_sample(a, _slope(), None, "identity", 0.0)
    expected = torch.where(torch.isnan(a), a, (a > 0).to(dtype))
    torch.testing.assert_close(y, expected, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_stochastic_forward_passes_nan_and_saturates(device, dtype):
    a = torch.tensor([math.nan, math.inf, -math.inf, 1e4, -1e4] * 99, dtype=dtype, device=device)
    y = threshold_sample(a, _slope(1000.0), _seed(7, device), "sigmoid", 0.0).cpu()
    assert torch.isnan(y[0::5]).all()
    assert (y[1::5] == 1).all() and (y[3::5] == 1).all()
    assert (y[2::5] == 0).all() and (y[4::5] == 0).all()


SIZES = [1, 3, 17, 31, 127, 1000, 4099, 40_000, 100_003]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("probability", [0.1, 0.5, 0.97])
def test_stochastic_forward_is_bernoulli(device, dtype, probability):
    # Sizes cover one element, odd sizes, sizes that are no multiple of any vector width, and
    # sizes over one parallel chunk (32,768 elements). Each size draws >= 20,000 samples.
    slope = 1.7
    for n in SIZES:
        a = torch.full((n,), _logit(np.float64(probability)) / slope, dtype=dtype, device=device)
        p = torch.sigmoid(a.to(torch.float64) * slope)[0].item()  # after rounding to dtype
        draws = max(1, math.ceil(20_000 / n))
        ones = 0
        for k in range(draws):
            seed = _seed(1_000_003 * n + k, device)
            y = threshold_sample(a, _slope(slope), seed, "sigmoid", 0.0)
            ones += y.sum(dtype=torch.float64).item()
        total = n * draws
        z = (ones - total * p) / math.sqrt(total * p * (1 - p))
        assert abs(z) < 5, (n, ones, total, p)


def test_same_samples_with_one_and_two_threads():
    a = torch.randn(300_001, generator=torch.Generator().manual_seed(0))
    threads = torch.get_num_threads()
    try:
        results = []
        for count in (1, 2):
            torch.set_num_threads(count)
            results.append(threshold_sample(a, _slope(), _seed(99), "sigmoid", 0.0))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0], results[1])


_CODE_PATH_SCRIPT = """
import sys, torch, binary_neurons
from binary_neurons import _ops
results = {}
for dtype in (torch.float32, torch.float64):
    a = torch.randn(50_001, generator=torch.Generator().manual_seed(1), dtype=dtype)
    slope = torch.tensor(1.3)
    results[str(dtype)] = (
        _ops.threshold_sample(a, slope, torch.tensor(5), "sigmoid", 0.0),
        _ops.threshold_sample_backward(a, a, slope, "sigmoid", 0.0),
    )
torch.save(results, sys.argv[1])
"""


def test_every_cpu_code_path_gives_the_same_results(tmp_path):
    # The kernels are built for AVX-512, AVX2 and the baseline ISA; BINARY_NEURONS_CPU_CAPABILITY
    # lowers the one chosen at run time. exp() may round differently in the last bit (FMA or
    # not), which can flip a sample only when u lands within an ulp of p.
    results = {}
    for capability in ("", "avx2", "default"):
        env = dict(os.environ, BINARY_NEURONS_CPU_CAPABILITY=capability)
        path = tmp_path / f"results_{capability or 'best'}.pt"
        subprocess.run([sys.executable, "-c", _CODE_PATH_SCRIPT, str(path)], env=env, check=True)
        results[capability] = torch.load(path)
    for capability in ("avx2", "default"):
        for dtype, (y, g) in results[capability].items():
            y_best, g_best = results[""][dtype]
            assert (y != y_best).double().mean().item() < 1e-4, (capability, dtype)
            torch.testing.assert_close(g, g_best, rtol=1e-6, atol=0)


def test_functional_api_is_reproducible():
    a = torch.zeros(10_000)
    torch.manual_seed(5)
    first = stochastic_binary(a)
    torch.manual_seed(5)
    assert torch.equal(stochastic_binary(a), first)
    assert not torch.equal(stochastic_binary(a), first)
    generator = torch.Generator().manual_seed(11)
    second = stochastic_binary(a, generator=generator)
    generator.manual_seed(11)
    assert torch.equal(stochastic_binary(a, generator=generator), second)


# ---------------------------------------------------------------------------------------------
# Backward.


def _closed_form_sigmoid_grad(g, a, slope):
    # The op computes x = s * a in the input's opmath dtype; the rest is done here in float64.
    opmath = _opmath(a.dtype)
    x = (a.to(opmath) * torch.tensor(slope, dtype=torch.float64).to(opmath)).double()
    return g.double() * slope * torch.sigmoid(x) * torch.sigmoid(-x)


TOLERANCES = {
    torch.float16: dict(rtol=2e-3, atol=1e-7),
    torch.bfloat16: dict(rtol=1.6e-2, atol=1e-7),
    torch.float32: dict(rtol=1e-6, atol=1e-35),
    torch.float64: dict(rtol=1e-6, atol=1e-300),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("slope", [0.5, 1.0, 6.12, 1e3])
def test_sigmoid_backward_matches_closed_form(device, dtype, slope):
    generator = torch.Generator().manual_seed(3)
    a = torch.cat([torch.randn(5_000, generator=generator) * 4, torch.linspace(-1e4, 1e4, 2_001)])
    a = a.to(dtype)
    g = torch.randn(a.shape, generator=generator).to(dtype)
    grad = threshold_sample_backward(
        g.to(device), a.to(device), _slope(slope), "sigmoid", 0.0
    ).cpu()
    assert grad.dtype == dtype and torch.isfinite(grad).all()
    expected = _closed_form_sigmoid_grad(g, a, slope).to(dtype)
    torch.testing.assert_close(grad, expected, **TOLERANCES[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_clipped_and_identity_backward(device, dtype):
    a = (torch.linspace(-3, 3, 1_001) + 0.3).to(dtype).to(device)
    g = torch.randn(a.shape, generator=torch.Generator().manual_seed(4)).to(dtype).to(device)
    for clip in (0.3, 1.0, 2.5):
        grad = threshold_sample_backward(g, a, _slope(), "clipped", clip)
        assert torch.equal(grad, torch.where(a.abs() <= clip, g, 0))
    assert torch.equal(threshold_sample_backward(g, a, _slope(), "identity", 0.0), g)


def test_unknown_estimator_is_named():
    a = torch.zeros(3)
    with pytest.raises(ValueError, match="'bogus'.*'identity', 'sigmoid', 'clipped' or 'gumbel'"):
        threshold_sample_backward(a, a, _slope(), "bogus", 0.0)


def test_bad_arguments_say_what_they_got():
    with pytest.raises(TypeError, match="expected a floating-point input.*got Long"):
        threshold_sample(torch.zeros(3, dtype=torch.int64), _slope(), None, "sigmoid", 0.0)
    with pytest.raises(ValueError, match="0-dim floating-point tensor, got shape \\[2\\]"):
        threshold_sample(torch.zeros(3), torch.ones(2), _seed(1), "sigmoid", 0.0)
    with pytest.raises(ValueError, match="int64 tensor, got shape \\[\\] and dtype Float"):
        threshold_sample(torch.zeros(3), _slope(), torch.tensor(1.0), "sigmoid", 0.0)


@pytest.mark.parametrize("estimator", ["identity", "sigmoid", "clipped"])
def test_autograd_through_the_functional_api(estimator):
    a = torch.randn(1_000, dtype=torch.float64, requires_grad=True)
    y = stochastic_binary(a, estimator=estimator, slope=2.0)
    y.backward(torch.ones_like(y))
    if estimator == "sigmoid":
        expected = _closed_form_sigmoid_grad(torch.ones(1_000), a.detach(), 2.0)
    elif estimator == "clipped":
        expected = (a.detach().abs() <= 1.0).double()
    else:
        expected = torch.ones(1_000, dtype=torch.float64)
    torch.testing.assert_close(a.grad, expected, rtol=1e-6, atol=1e-300)


# ---------------------------------------------------------------------------------------------
# Layouts and shapes.


@pytest.mark.parametrize("dtype", DTYPES)
def test_channels_last_and_non_contiguous(device, dtype):
    a = torch.randn(4, 6, 5, 7, dtype=torch.float64).to(dtype).to(device)
    a_cl = a.to(memory_format=torch.channels_last)
    before = a_cl.clone()
    seed = _seed(17, device)
    y = threshold_sample(a_cl, _slope(), seed, "sigmoid", 0.0)
    assert y.stride() == a_cl.stride()
    torch.testing.assert_close(a_cl, before, rtol=0, atol=0)  # the input is not modified
    # Samples follow memory order: the same as the NHWC-contiguous tensor's.
    nhwc = threshold_sample(a_cl.permute(0, 2, 3, 1).contiguous(), _slope(), seed, "sigmoid", 0.0)
    assert torch.equal(y.permute(0, 2, 3, 1), nhwc)
    grad = threshold_sample_backward(a_cl, a_cl, _slope(), "sigmoid", 0.0)
    assert grad.stride() == a_cl.stride()

    sliced = a[:, ::2, 1:, :]  # not dense: the output is contiguous
    y = threshold_sample(sliced, _slope(), seed, "sigmoid", 0.0)
    assert y.is_contiguous()
    assert torch.equal(y, threshold_sample(sliced.contiguous(), _slope(), seed, "sigmoid", 0.0))
    dbn = threshold_sample(sliced.transpose(1, 3), _slope(), None, "sigmoid", 0.0)
    assert torch.equal(dbn, (sliced.transpose(1, 3) > 0).to(dtype))
    grad = threshold_sample_backward(sliced.mT, sliced.mT, _slope(), "sigmoid", 0.0)
    torch.testing.assert_close(
        grad.cpu(), _closed_form_sigmoid_grad(sliced.mT, sliced.mT, 1.0).to(dtype).cpu(),
        **TOLERANCES[dtype],
    )


@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 2)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_and_zero_dim(device, shape, dtype):
    a = torch.full(shape, 0.5, dtype=dtype, device=device)
    for seed in (None, _seed(1, device)):
        y = threshold_sample(a, _slope(), seed, "sigmoid", 0.0)
        assert y.shape == a.shape and y.dtype == dtype
    assert threshold_sample(a, _slope(), None, "sigmoid", 0.0).sum().item() == a.numel()
    for estimator in ("identity", "sigmoid", "clipped"):
        grad = threshold_sample_backward(a, a, _slope(), estimator, 1.0)
        assert grad.shape == a.shape and grad.dtype == dtype


# ---------------------------------------------------------------------------------------------
# Compilation.


@pytest.mark.parametrize("with_seed", [False, True])
def test_opcheck(with_seed):
    a = torch.randn(5, 3, requires_grad=True)
    seed = _seed(42) if with_seed else None
    for estimator in ("identity", "sigmoid", "clipped"):
        torch.library.opcheck(threshold_sample, (a, _slope(2.0), seed, estimator, 1.0))
    torch.library.opcheck(
        threshold_sample_backward, (torch.randn(5, 3), a.detach(), _slope(2.0), "sigmoid", 1.0)
    )


@pytest.mark.compile
def test_torch_compile_matches_eager():
    import torch._inductor.config as inductor_config

    a = torch.randn(257, 33, requires_grad=True)

    def dbn(x):
        return deterministic_binary(x, estimator="sigmoid", slope=2.0)

    def sbn(x):
        return stochastic_binary(x, estimator="sigmoid", slope=2.0)

    torch._dynamo.reset()
    compiled = torch.compile(dbn, fullgraph=True)
    assert torch.equal(compiled(a), dbn(a))
    (grad_compiled,) = torch.autograd.grad(compiled(a).sum(), a)
    (grad_eager,) = torch.autograd.grad(dbn(a).sum(), a)
    torch.testing.assert_close(grad_compiled, grad_eager)

    with inductor_config.patch(fallback_random=True):
        compiled = torch.compile(sbn, fullgraph=True)
        torch.manual_seed(8)
        y_compiled = compiled(a)
        torch.manual_seed(8)
        assert torch.equal(y_compiled, sbn(a))
