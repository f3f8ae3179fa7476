"""Property-based sweeps over shapes, dtypes, slopes, estimators and layouts (hypothesis)."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import binary_neurons as bn
from binary_neurons.functional import deterministic_binary, stochastic_binary

from tests.conftest import FLOAT_DTYPES, GRAD_RTOL, grad_atol
from .test_functional import closed_form_gradient

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True)

shapes = st.lists(st.integers(0, 7), min_size=0, max_size=4).map(tuple)
dtypes = st.sampled_from(FLOAT_DTYPES)
slopes = st.floats(1e-3, 1e3, allow_nan=False, allow_infinity=False)
estimators = st.sampled_from(["identity", "sigmoid", "annealed", "clipped"])
neurons = st.sampled_from([deterministic_binary, stochastic_binary])


@st.composite
def pre_activations(draw):
    shape = draw(shapes)
    dtype = draw(dtypes)
    scale = draw(st.sampled_from([1e-3, 1.0, 30.0, 1e4]))
    seed = draw(st.integers(0, 2**31 - 1))
    generator = torch.Generator().manual_seed(seed)
    a = (torch.randn(shape, generator=generator, dtype=torch.float64) * scale).to(dtype)
    if draw(st.booleans()) and a.dim() >= 2:
        a = a.transpose(0, -1)  # non-contiguous
    return a


@SETTINGS
@given(a=pre_activations(), slope=slopes, estimator=estimators, neuron=neurons)
def test_forward_is_binary_with_the_input_layout(a, slope, estimator, neuron):
    before = a.clone()
    y = neuron(a, estimator=estimator, slope=slope)
    assert y.shape == a.shape and y.dtype == a.dtype and y.stride() == a.stride()
    assert torch.isin(y, torch.tensor([0.0, 1.0], dtype=a.dtype)).all()
    assert torch.equal(a, before)
    if neuron is deterministic_binary:
        assert torch.equal(y, (a > 0).to(a.dtype))


@SETTINGS
@given(a=pre_activations(), slope=slopes, estimator=estimators, neuron=neurons)
def test_gradient_is_the_closed_form_and_finite(a, slope, estimator, neuron):
    a = a.detach().requires_grad_()
    grad = torch.ones_like(a)
    neuron(a, estimator=estimator, slope=slope).backward(grad)
    assert a.grad.dtype == a.dtype and a.grad.shape == a.shape
    assert torch.isfinite(a.grad).all()
    expected = closed_form_gradient(estimator, grad, a.detach(), slope)
    np.testing.assert_allclose(
        a.grad.double().numpy(), expected, rtol=GRAD_RTOL[a.dtype], atol=grad_atol(a.dtype, slope)
    )


@SETTINGS
@given(
    n=st.integers(1, 5000),
    seed=st.integers(0, 2**63 - 1),
    dtype=dtypes,
    slope=st.floats(0.1, 10.0),
)
def test_same_generator_seed_same_samples(n, seed, dtype, slope):
    a = torch.linspace(-3, 3, n, dtype=dtype)
    first = stochastic_binary(a, slope=slope, generator=torch.Generator().manual_seed(seed))
    second = stochastic_binary(a, slope=slope, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(first, second)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(cls=st.sampled_from([bn.DeterministicBinary, bn.StochasticBinary]), slope=slopes,
       estimator=estimators)
def test_module_state_dict_round_trip(cls, slope, estimator):
    layer = cls(estimator=estimator, slope=slope)
    restored = cls(estimator=estimator)
    restored.load_state_dict(layer.state_dict())
    assert restored.slope.item() == layer.slope.item()
    assert repr(restored) == repr(layer)
