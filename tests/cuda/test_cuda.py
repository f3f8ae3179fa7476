"""CUDA: the same bits as the CPU kernels, streams, generators, no host synchronization.

Every test here needs a GPU and is skipped without one. The device-parametrized tests of the
other files (closed-form gradients, layouts, empty inputs, ``torch.compile`` against eager) run
on CUDA too; ``pytest -m cuda`` selects all of them. CUDA graphs are in test_cuda_graphs.py, a
model trained on the GPU against the CPU in test_cuda_model.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import binary_neurons as bn
from binary_neurons.functional import deterministic_binary, stochastic_binary

from tests.conftest import CUDA, FLOAT_DTYPES, same_bits
from tests.philox_engine import philox_uniform

pytestmark = CUDA

threshold_sample = torch.ops.binary_neurons.threshold_sample.default
threshold_sample_backward = torch.ops.binary_neurons.threshold_sample_backward.default


def _native_everywhere() -> bool:
    return bn.backend_info().devices == {"cpu": "native", "cuda": "native"}


needs_native = pytest.mark.skipif(
    torch.cuda.is_available() and not _native_everywhere(),
    reason="needs the native kernels on the CPU and on CUDA (the pure-PyTorch kernels draw "
    "their noise from each device's own torch generator, and read the seed on the host)",
)


def _inputs(dtype: torch.dtype, layout: str) -> torch.Tensor:
    """Pre-activations spanning the sigmoid's range, with NaN, infinities and zeros, in a
    given memory layout (the samples follow memory order, so layouts must match)."""
    generator = torch.Generator().manual_seed(7)
    shapes = {"flat": (100_003,), "channels_last": (3, 5, 7, 11), "transposed": (129, 67),
              "empty": (0, 4)}
    a = torch.randn(shapes[layout], generator=generator, dtype=torch.float64) * 6
    if a.numel():
        flat = a.view(-1)
        flat[:6] = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e4])
    a = a.to(dtype)
    if layout == "channels_last":
        a = a.to(memory_format=torch.channels_last)
    if layout == "transposed":
        a = a.t()
    return a


def _same_bits(cuda: torch.Tensor, cpu: torch.Tensor) -> None:
    assert cuda.device.type == "cuda" and same_bits(cuda.cpu(), cpu)


@needs_native
@pytest.mark.parametrize("layout", ["flat", "channels_last", "transposed", "empty"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_cuda_computes_the_cpu_kernels_bits(dtype, layout):
    a = _inputs(dtype, layout)
    a_cuda = a.cuda()
    g = torch.randn(a.shape, generator=torch.Generator().manual_seed(3)).to(dtype)
    g = g.to(memory_format=torch.channels_last) if layout == "channels_last" else g
    for slope in (0.5, 1.0, 7.3):
        slope_cpu = torch.tensor(slope, dtype=torch.float64)
        for seed in (None, 0, 2**62 - 1):
            seed_cpu = None if seed is None else torch.tensor(seed)
            seed_cuda = None if seed is None else seed_cpu.cuda()  # read on the device
            _same_bits(
                threshold_sample(a_cuda, slope_cpu.cuda(), seed_cuda, "sigmoid", 0.0),
                threshold_sample(a, slope_cpu, seed_cpu, "sigmoid", 0.0),
            )
        for estimator in ("identity", "sigmoid", "clipped"):
            _same_bits(
                threshold_sample_backward(g.cuda(), a_cuda, slope_cpu.cuda(), estimator, 1.5),
                threshold_sample_backward(g, a, slope_cpu, estimator, 1.5),
            )


@needs_native
def test_cuda_samples_are_bernoulli():
    p = torch.linspace(0.01, 0.99, 99, dtype=torch.float64, device="cuda")
    a = torch.logit(p).repeat(20_000, 1)  # 20,000 draws per probability
    y = threshold_sample(a, torch.tensor(1.0), torch.tensor(5, device="cuda"), "sigmoid", 0.0)
    z = (y.mean(0) - p) / torch.sqrt(p * (1 - p) / 20_000)
    assert z.abs().max() < 5
    assert abs((z**2).sum().item() - 99) < 5 * (2 * 99) ** 0.5


@pytest.mark.parametrize("slope", [math.nan, -1.0, 0.0, math.inf, 1e300])
def test_unusable_slope_on_the_gpu_makes_the_outputs_nan(slope):
    # Checking a slope held on the GPU would synchronize; the kernels poison what uses it.
    a = torch.randn(1000, device="cuda")
    s = torch.tensor(slope, dtype=torch.float64, device="cuda")
    assert threshold_sample(a, s, torch.tensor(1, device="cuda"), "sigmoid", 0.0).isnan().all()
    assert threshold_sample_backward(torch.ones_like(a), a, s, "sigmoid", 0.0).isnan().all()
    # Held on the CPU, the same slope is an error.
    with pytest.raises(ValueError, match="expected slope to be a finite number > 0"):
        threshold_sample(a, s.cpu(), torch.tensor(1, device="cuda"), "sigmoid", 0.0)


@pytest.mark.parametrize("with_seed", [False, True])
def test_opcheck_on_cuda(with_seed):
    a = torch.randn(33, 5, device="cuda", requires_grad=True)
    seed = torch.tensor(42, device="cuda") if with_seed else None
    slope = torch.tensor(2.0, device="cuda")
    for estimator in ("identity", "sigmoid", "clipped"):
        torch.library.opcheck(threshold_sample, (a, slope, seed, estimator, 1.0))
    torch.library.opcheck(
        threshold_sample_backward, (torch.randn_like(a), a.detach(), slope, "sigmoid", 1.0)
    )


def test_cuda_generator_reproduces_and_separates():
    a = torch.zeros(10_000, device="cuda")

    def draw(seed):
        return stochastic_binary(a, generator=torch.Generator("cuda").manual_seed(seed))

    assert torch.equal(draw(1), draw(1))
    assert not torch.equal(draw(1), draw(2))
    torch.manual_seed(3)
    first = stochastic_binary(a)
    torch.manual_seed(3)
    assert torch.equal(first, stochastic_binary(a))


def _model(estimator: str = "annealed") -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(64, 128), bn.StochasticBinary(estimator=estimator), nn.Linear(128, 1)
    ).cuda()


@needs_native
@pytest.mark.parametrize("estimator", ["identity", "sigmoid", "annealed", "clipped"])
def test_training_step_does_not_synchronize_with_the_host(estimator):
    model = _model(estimator)
    x = torch.randn(256, 64, device="cuda")
    model(x).sum().backward()  # first call: lazy initializations may synchronize
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            model(x).sum().backward()
            deterministic_binary(x, estimator=estimator).sum()
    finally:
        torch.cuda.set_sync_debug_mode(0)


def test_runs_on_the_current_stream():
    a = torch.randn(1 << 20, device="cuda")
    slope = torch.tensor(1.0, device="cuda")
    seed = torch.tensor(9, device="cuda")
    expected = threshold_sample(a, slope, seed, "sigmoid", 0.0)
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        # Work queued on the side stream just before: a kernel launched on another stream would
        # read `b` before it is written.
        b = torch.empty_like(a)
        for _ in range(20):
            b.copy_(a * 1.0)
        y = threshold_sample(b, slope, seed, "sigmoid", 0.0)
        grad = threshold_sample_backward(b, b, slope, "sigmoid", 0.0)
    side.synchronize()
    assert torch.equal(y, expected)
    assert torch.equal(grad, threshold_sample_backward(a, a, slope, "sigmoid", 0.0))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_types_train(dtype):
    model = _model("sigmoid").to(dtype)
    x = torch.randn(128, 64, device="cuda", dtype=dtype)
    out = model(x)
    out.float().sum().backward()
    assert out.dtype == dtype
    assert all(p.grad.dtype == dtype and torch.isfinite(p.grad).all() for p in model.parameters())
    codes = model[:2](x)
    assert set(codes.unique().tolist()) <= {0.0, 1.0}


@needs_native
@pytest.mark.slow
def test_more_than_two_to_the_31_elements():
    n = 2**31 + 1029  # past the reach of 32-bit indexes, and not a multiple of 4
    tail = 4096
    a = torch.zeros(n, dtype=torch.float16, device="cuda")
    y = threshold_sample(a, torch.tensor(1.0), torch.tensor(11, device="cuda"), "sigmoid", 0.0)
    # sigmoid(0) = 1/2: an element fires iff its uniform is below 1/2.
    uniforms = philox_uniform(11, n - tail, tail, False)
    assert torch.equal(y[-tail:].cpu(), (uniforms < 0.5).to(torch.float16))
    del y
    ones = torch.ones(n, dtype=torch.float16, device="cuda")
    grad = threshold_sample_backward(ones, a, torch.tensor(1.0), "clipped", 1.0)
    assert grad[-tail:].eq(1).all().item()  # |a| = 0 <= 1: the gradient passes
    del grad
    assert threshold_sample(ones, torch.tensor(1.0), None, "sigmoid", 0.0)[-tail:].eq(1).all()
