"""The layers: construction, repr, state_dict, train/eval behaviour, slope validation."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

import binary_neurons as bn


@pytest.mark.parametrize("cls", [bn.DeterministicBinary, bn.StochasticBinary])
class TestCommon:
    def test_defaults(self, cls):
        layer = cls()
        assert isinstance(layer.estimator, bn.SigmoidAdjusted)
        assert layer.slope.item() == 1.0
        assert list(layer.parameters()) == []
        assert [name for name, _ in layer.named_buffers()] == ["slope"]

    def test_state_dict_round_trip(self, cls):
        layer = cls(estimator="annealed", slope=2.5)
        buffer = io.BytesIO()
        torch.save(layer.state_dict(), buffer)
        buffer.seek(0)
        restored = cls(estimator="annealed")
        restored.load_state_dict(torch.load(buffer))
        assert restored.slope.item() == 2.5
        assert repr(restored) == repr(layer)

    def test_bad_slope_in_state_dict(self, cls):
        message = r"slope in the state_dict must be a finite number > 0"
        with pytest.raises(ValueError, match=message):
            cls().load_state_dict({"slope": torch.tensor(-1.0)})

    @pytest.mark.parametrize("slope", [0, -2.0, float("nan"), float("inf")])
    def test_bad_slope(self, cls, slope):
        with pytest.raises(ValueError, match="slope must be a finite number > 0"):
            cls(slope=slope)
        with pytest.raises(ValueError, match="slope must be a finite number > 0"):
            cls().set_slope(slope)

    def test_set_slope(self, cls):
        layer = cls()
        layer.set_slope(3.0)
        assert layer.slope.item() == 3.0

    def test_unknown_estimator(self, cls):
        with pytest.raises(ValueError, match="unknown estimator 'hard'; expected one of"):
            cls(estimator="hard")

    def test_output(self, cls):
        layer = cls()
        a = torch.randn(4, 5, requires_grad=True)
        y = layer(a)
        assert y.shape == a.shape and y.dtype == a.dtype
        assert set(y.unique().tolist()) <= {0.0, 1.0}
        y.sum().backward()
        assert a.grad is not None

    def test_probability(self, cls):
        layer = cls(slope=3.0)
        a = torch.randn(10)
        assert torch.allclose(layer.probability(a), torch.sigmoid(3.0 * a))

    def test_slope_moves_with_module(self, cls):
        layer = cls(slope=2.0).to(torch.float64)
        assert layer.slope.dtype == torch.float64
        y = layer(torch.randn(3, dtype=torch.float64))
        assert y.dtype == torch.float64


def test_repr():
    assert repr(bn.DeterministicBinary()) == "DeterministicBinary(estimator='sigmoid', slope=1)"
    assert (
        repr(bn.StochasticBinary("clipped", slope=2.0, eval_mode="probability"))
        == "StochasticBinary(estimator='clipped', slope=2, clip_value=1, eval_mode='probability')"
    )
    assert (
        repr(bn.DeterministicBinary(bn.ClippedStraightThrough(0.5)))
        == "DeterministicBinary(estimator='clipped', slope=1, clip_value=0.5)"
    )


class TestStochasticEvalModes:
    def test_training_samples(self):
        layer = bn.StochasticBinary(eval_mode="threshold")
        a = torch.zeros(1000)
        assert 0 < layer(a).sum() < 1000  # p = 0.5 everywhere: a threshold would give 0

    def test_eval_sample_is_default(self):
        layer = bn.StochasticBinary().eval()
        assert 0 < layer(torch.zeros(1000)).sum() < 1000

    def test_eval_threshold(self):
        layer = bn.StochasticBinary(eval_mode="threshold").eval()
        a = torch.randn(1000)
        assert torch.equal(layer(a), (a > 0).float())

    def test_eval_probability(self):
        layer = bn.StochasticBinary(slope=2.0, eval_mode="probability").eval()
        a = torch.randn(1000)
        assert torch.allclose(layer(a), torch.sigmoid(2.0 * a))

    def test_bad_eval_mode(self):
        with pytest.raises(ValueError, match="unknown eval_mode 'mean'; expected one of 'sample'"):
            bn.StochasticBinary(eval_mode="mean")

    def test_generator(self):
        layer = bn.StochasticBinary()
        a = torch.zeros(1000)
        first = layer(a, generator=torch.Generator().manual_seed(5))
        second = layer(a, generator=torch.Generator().manual_seed(5))
        assert torch.equal(first, second)


def test_deterministic_accepts_and_ignores_a_generator():
    layer = bn.DeterministicBinary()
    a = torch.randn(100)
    assert torch.equal(layer(a, generator=torch.Generator().manual_seed(0)), (a > 0).float())


def test_deterministic_same_in_train_and_eval():
    layer = bn.DeterministicBinary()
    a = torch.randn(100)
    assert torch.equal(layer(a), layer.eval()(a))


def test_in_a_model_trains():
    """A binary bottleneck learns an identity map on binary codes through the estimator."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(4, 16), bn.DeterministicBinary(), nn.Linear(16, 4)
    )
    codes = torch.randint(0, 2, (256, 4)).float()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    first = None
    for _ in range(200):
        loss = nn.functional.mse_loss(model(codes), codes)
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.1 * first
