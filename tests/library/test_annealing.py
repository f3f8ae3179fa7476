"""SlopeAnnealer: the schedule, exact resume, and errors."""

from __future__ import annotations

import io

import pytest
import torch
import torch.utils._pytree as pytree
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

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


class _BufferTouches(TorchDispatchMode):
    """Records every operation that reads or writes the storage of the given tensors."""

    def __init__(self, tensors):
        super().__init__()
        self.storages = {t.untyped_storage().data_ptr() for t in tensors}
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        for value in pytree.tree_leaves((args, kwargs)):
            if isinstance(value, torch.Tensor) and value.device.type != "meta" and (
                    value.untyped_storage().data_ptr() in self.storages):
                self.seen.append(func.__name__)
                break
        return func(*args, **(kwargs or {}))


def test_steps_write_the_buffers_in_place_and_read_them_only_when_changed_elsewhere():
    """On a GPU, reading a slope would wait for the device; a CUDA graph reads the buffer where
    it is, so the annealer must write it in place. After its first step the annealer knows
    what it wrote: later steps only fill, until something else writes the buffer."""
    model = _model()
    model.append(bn.StochasticBinary(estimator="gumbel"))
    annealer = bn.SlopeAnnealer(model, temperature_factor=0.5)
    buffers = [model[1].slope, model[3].slope, model[5].tau]
    annealer.step()
    with _BufferTouches(buffers) as touches:
        for _ in range(3):
            annealer.step()
    assert touches.seen == ["fill_.Scalar"] * 9
    assert [model[1].slope, model[3].slope, model[5].tau] == buffers  # the same tensors
    assert annealer.slopes == pytest.approx([1.1**4, 2 * 1.1**4])
    # A slope written by someone else is read again, once: nothing is lost.
    model[1].set_slope(10.0)
    model.load_state_dict({**model.state_dict(), "3.slope": torch.tensor(20.0)})
    with _BufferTouches(buffers) as touches:
        annealer.step()
        annealer.step()
    assert touches.seen.count("fill_.Scalar") == 6 and len(touches.seen) > 6
    assert touches.seen[-3:] == ["fill_.Scalar"] * 3
    assert annealer.slopes == pytest.approx([10 * 1.1**2, 20 * 1.1**2])
    # A model moved after the annealer was made (new buffers) is read at the next step.
    model.double()
    annealer.step()
    assert model[1].slope.dtype == torch.float64
    assert annealer.slopes == pytest.approx([10 * 1.1**3, 20 * 1.1**3])


def test_temperature_layers_and_the_deprecated_name():
    model = nn.Sequential(bn.StochasticBinary(estimator="gumbel", tau=0.8), bn.StochasticBinary())
    annealer = bn.SlopeAnnealer(model, temperature_factor=0.5)
    assert annealer.temperature_layers == [model[0]]
    with pytest.warns(DeprecationWarning, match="use SlopeAnnealer.temperature_layers"):
        assert annealer.gumbel_layers == [model[0]]
    annealer.step()
    assert annealer.temperatures == pytest.approx([0.4])
