"""SlopeAnnealer: the schedule, exact resume, and errors."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

import binary_neurons as bn


def _model():
    return nn.Sequential(
        nn.Linear(4, 8),
        bn.StochasticBinary(estimator="annealed"),
        nn.Linear(8, 8),
        bn.DeterministicBinary(estimator="annealed", slope=2.0),
        bn.DeterministicBinary(estimator="sigmoid", slope=3.0),  # not annealed
    )


def test_schedule_matches_paper():
    model = _model()
    annealer = bn.SlopeAnnealer(model, factor=1.1)
    seen = []
    for epoch in range(20):
        seen.append(float(model[1].slope))
        annealer.step()
    # Epoch e trains at 1.1**e: 1.0 in epoch 1 and 1.1**19 ~ 6.12 in epoch 20.
    assert seen[0] == 1.0
    assert seen[19] == pytest.approx(1.1**19, rel=1e-6)
    assert seen[19] == pytest.approx(6.1159, abs=1e-4)
    assert float(model[3].slope) == pytest.approx(2.0 * 1.1**20, rel=1e-6)
    assert float(model[4].slope) == 3.0
    assert annealer.num_steps == 20
    assert annealer.slopes == [float(model[1].slope), float(model[3].slope)]


def test_max_slope():
    model = _model()
    annealer = bn.SlopeAnnealer(model, factor=2.0, max_slope=5.0)
    for _ in range(5):
        annealer.step()
    assert annealer.slopes == [5.0, 5.0]


def test_single_layer_model():
    layer = bn.StochasticBinary(estimator="annealed")
    bn.SlopeAnnealer(layer, factor=1.5).step()
    assert float(layer.slope) == 1.5


def test_resume_continues_exactly():
    torch.manual_seed(0)
    model = _model()
    annealer = bn.SlopeAnnealer(model)
    for _ in range(7):
        annealer.step()
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "annealer": annealer.state_dict()}, buffer)
    for _ in range(5):
        annealer.step()
    uninterrupted = annealer.slopes

    buffer.seek(0)
    checkpoint = torch.load(buffer)
    resumed_model = _model()
    resumed_model.load_state_dict(checkpoint["model"])
    resumed = bn.SlopeAnnealer(resumed_model, factor=3.0)  # settings come from the state
    resumed.load_state_dict(checkpoint["annealer"])
    assert resumed.num_steps == 7 and resumed.factor == 1.1
    for _ in range(5):
        resumed.step()
    assert resumed.slopes == uninterrupted  # bit-identical
    assert resumed.num_steps == 12


def test_no_annealed_layer():
    model = nn.Sequential(nn.Linear(2, 2), bn.DeterministicBinary())
    with pytest.raises(ValueError, match="no binary neuron with estimator='annealed'"):
        bn.SlopeAnnealer(model)


@pytest.mark.parametrize("kwargs", [{"factor": 0}, {"factor": float("nan")}, {"max_slope": -1.0}])
def test_bad_settings(kwargs):
    with pytest.raises(ValueError, match="must be a finite number > 0"):
        bn.SlopeAnnealer(_model(), **kwargs)


def test_not_a_module():
    with pytest.raises(TypeError, match="torch.nn.Module"):
        bn.SlopeAnnealer([bn.StochasticBinary("annealed")])


def test_incomplete_state_dict():
    with pytest.raises(KeyError, match="missing"):
        bn.SlopeAnnealer(_model()).load_state_dict({"factor": 1.1})


def test_repr():
    assert repr(bn.SlopeAnnealer(_model())) == (
        "SlopeAnnealer(factor=1.1, max_slope=None, layers=2, num_steps=0)"
    )
