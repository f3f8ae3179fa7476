"""CUDA graphs: whole training steps captured and replayed, with every estimator.

A captured step (forward, loss, backward, optimizer step) replays its kernels without Python.
For a binary layer that is correct only if nothing in the step reads a tensor on the host (a
capture fails on a synchronization), every replay draws fresh samples (the seed is drawn by the
device's generator inside the graph, and the kernels read it from device memory), and a slope
or temperature changed between replays is seen by the next one (buffers are updated in place).
The CUDA tests check exactly that against eager runs from the same generator state; the CPU
tests check the invariants they rely on, so that CI catches a regression without a GPU.
"""

from __future__ import annotations

import contextlib
import functools

import pytest
import torch
import torch._inductor.config as inductor_config
from torch import nn

import binary_neurons as bn
from binary_neurons.functional import deterministic_binary, stochastic_binary

from tests import training
from tests.conftest import cuda_test

# Every estimator on stochastic layers, and a deterministic layer with a slope annealed between
# replays.
CASES = [("sbn", estimator) for estimator in training.ESTIMATORS] + [("dbn", "annealed")]
IDS = [f"{neuron}-{estimator}" for neuron, estimator in CASES]
REPLAYS = 100
ANNEAL_EVERY = 10
# A captured or compiled run against the eager run from the same generator state: the same
# seeds and kernels, so the same samples, except where a differently ordered (or fused) sum
# rounds a pre-activation across its uniform; and losses equal up to such rounding.
LOSS_RTOL, LOSS_ATOL = 1e-3, 1e-5
MIN_AGREEMENT = 0.999


def on_cuda_graphs(test):
    """Marks a test that captures CUDA graphs (and so needs CUDA)."""
    return pytest.mark.cudagraphs(cuda_test(test))


def _skip_unless_capturable(neuron: str) -> None:
    if neuron == "sbn" and bn.backend_info().devices["cuda"] != "native":
        pytest.skip("needs the native CUDA kernels: the pure-PyTorch kernels read the seed on "
                    "the host, which a CUDA graph cannot capture")


def _annealer(model: nn.Module, estimator: str):
    return bn.SlopeAnnealer(model, factor=1.05) if estimator == "annealed" else None


def _optimizer(model: nn.Module) -> torch.optim.Optimizer:
    capturable = next(model.parameters()).is_cuda  # Adam's capturable mode needs a GPU
    return torch.optim.Adam(model.parameters(), lr=1e-3, capturable=capturable)


def _twin(model: nn.Module, optimizer, neuron: str, estimator: str, device: str):
    """A separate model and optimizer in the state `model` and `optimizer` are in now."""
    twin = training.mlp(estimator, neuron).to(device)
    twin.load_state_dict(model.state_dict())
    twin_optimizer = _optimizer(twin)
    state = optimizer.state_dict()
    # load_state_dict keeps tensors already on the right device: copy them, or the twins share.
    state["state"] = {key: {name: value.clone() if torch.is_tensor(value) else value
                            for name, value in entry.items()}
                      for key, entry in state["state"].items()}
    twin_optimizer.load_state_dict(state)
    return twin, twin_optimizer


def _train(run_step, annealer, codes: training.Codes, steps: int):
    """Losses and the first binary layer's outputs of `steps` steps, the annealer (if any)
    stepping every ANNEAL_EVERY steps, as between epochs."""
    losses, samples = [], []
    for index in range(steps):
        losses.append(run_step().clone())
        samples.append(codes.latest.clone())
        if annealer is not None and index % ANNEAL_EVERY == ANNEAL_EVERY - 1:
            annealer.step()
    return torch.stack(losses), samples


def _agreement(samples: list[torch.Tensor], others: list[torch.Tensor]) -> float:
    """The fraction of units whose sample is the same in both runs, over every step."""
    same = sum(int((a == b).sum()) for a, b in zip(samples, others))
    return same / sum(a.numel() for a in samples)


@contextlib.contextmanager
def _synchronizing_is_an_error(enabled: bool = True):
    """Within: any call that makes the host wait for the GPU raises."""
    if not enabled:
        yield
        return
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(0)


def _check_fresh(samples: list[torch.Tensor], neuron: str) -> None:
    if neuron == "sbn":  # every replay draws anew: no two of the first eight alike
        assert len({tuple(s.flatten().tolist()) for s in samples[:8]}) == 8
    for s in samples:
        assert set(s.unique().tolist()) <= {0.0, 1.0}


@on_cuda_graphs
@pytest.mark.parametrize(("neuron", "estimator"), CASES, ids=IDS)
def test_captured_step_replays_like_eager(neuron, estimator):
    _skip_unless_capturable(neuron)
    model = training.mlp(estimator, neuron).cuda()
    optimizer = _optimizer(model)
    annealer = _annealer(model, estimator)
    codes = training.Codes(model)
    x, target = training.batch(256, seed=1, device="cuda")

    def step():
        return training.step(model, optimizer, x, target)

    side = torch.cuda.Stream()  # warm-up on a side stream, as capture requires
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    if annealer is not None:
        annealer.step()  # its later steps then read nothing from the GPU
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):  # fails on a host synchronization or a launch off its stream
        static_loss = step()
    twin, twin_optimizer = _twin(model, optimizer, neuron, estimator, "cuda")
    twin_annealer = _annealer(twin, estimator)
    twin_codes = training.Codes(twin)

    def replay():
        graph.replay()
        return static_loss

    torch.cuda.manual_seed(1234)
    with _synchronizing_is_an_error():  # in a replay or an annealer step
        replayed, samples = _train(replay, annealer, codes, REPLAYS)
    torch.cuda.manual_seed(1234)
    eager, eager_samples = _train(
        lambda: training.step(twin, twin_optimizer, x, target), twin_annealer, twin_codes,
        REPLAYS)
    _check_fresh(samples, neuron)
    assert _agreement(samples, eager_samples) >= MIN_AGREEMENT
    torch.testing.assert_close(replayed, eager, rtol=LOSS_RTOL, atol=LOSS_ATOL)
    if neuron == "dbn":  # no sample to flip: the same arithmetic gives the same parameters
        for param, twin_param in zip(model.parameters(), twin.parameters()):
            torch.testing.assert_close(param, twin_param, rtol=1e-5, atol=1e-7)
    if annealer is not None:
        assert annealer.slopes == twin_annealer.slopes
        assert annealer.slopes[0] == pytest.approx(1.05 ** (1 + REPLAYS // ANNEAL_EVERY))


@on_cuda_graphs
@pytest.mark.compile
@pytest.mark.parametrize(("neuron", "estimator"), CASES, ids=IDS)
def test_reduce_overhead_trains_like_eager(neuron, estimator):
    """torch.compile(mode="reduce-overhead") (CUDA graphs through cudagraph trees) trains as
    users train: gradients set to None every step. ``fallback_random`` makes the compiled code
    draw its seeds from the same generator as eager."""
    _skip_unless_capturable(neuron)
    torch._dynamo.reset()
    inductor_counters = torch._dynamo.utils.counters["inductor"]
    inductor_counters.clear()
    x, target = training.batch(256, seed=1, device="cuda")
    results = {}
    for mode in ("eager", "reduce-overhead"):
        model = training.mlp(estimator, neuron).cuda()
        optimizer = _optimizer(model)
        annealer = _annealer(model, estimator)
        codes = training.Codes(model)
        forward = model if mode == "eager" else torch.compile(
            model, mode="reduce-overhead", fullgraph=True)
        with inductor_config.patch(fallback_random=True):
            # Warm-up and recording (cudagraph trees record on a later call), stepping the
            # annealer once so that its later steps read nothing from the GPU.
            torch.cuda.manual_seed(99)
            for _ in range(3):
                training.step(model, optimizer, x, target, forward)
            if annealer is not None:
                annealer.step()
            torch.cuda.manual_seed(1234)
            with _synchronizing_is_an_error(enabled=mode != "eager"):
                results[mode] = _train(
                    functools.partial(training.step, model, optimizer, x, target, forward),
                    annealer, codes, REPLAYS)
    # A graph Inductor will not capture runs without CUDA graphs, silently but for this count.
    assert inductor_counters["cudagraph_skips"] == 0, dict(inductor_counters)
    (eager, eager_samples), (compiled, samples) = results["eager"], results["reduce-overhead"]
    _check_fresh(samples, neuron)
    assert _agreement(samples, eager_samples) >= MIN_AGREEMENT
    torch.testing.assert_close(compiled, eager, rtol=LOSS_RTOL, atol=LOSS_ATOL)


@on_cuda_graphs
@pytest.mark.compile
def test_reduce_overhead_accumulates_into_gradients_made_outside_the_graphs():
    """Gradient accumulation under reduce-overhead, the way the GPU page documents: .grad
    tensors allocated before the compiled steps (cudagraph trees own what their backward
    returns, and overwrite it on the next replay), zeroed in place, not set to None."""
    _skip_unless_capturable("sbn")
    torch._dynamo.reset()
    inductor_counters = torch._dynamo.utils.counters["inductor"]
    inductor_counters.clear()
    micro = [training.batch(64, seed=seed, device="cuda") for seed in (1, 2)]
    grads = {}
    for mode in ("eager", "reduce-overhead"):
        model = training.mlp("annealed").cuda()
        forward = model if mode == "eager" else torch.compile(
            model, mode="reduce-overhead", fullgraph=True)
        for param in model.parameters():
            param.grad = torch.zeros_like(param)
        with inductor_config.patch(fallback_random=True):
            torch.cuda.manual_seed(5)
            for _ in range(4):  # four steps of two micro-batches each
                for param in model.parameters():
                    param.grad.zero_()
                for x, target in micro:
                    nn.functional.cross_entropy(forward(x), target).backward()
        grads[mode] = [param.grad.clone() for param in model.parameters()]
    assert inductor_counters["cudagraph_skips"] == 0, dict(inductor_counters)
    for eager, compiled in zip(grads["eager"], grads["reduce-overhead"]):
        torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-6)


@on_cuda_graphs
def test_an_explicit_generator_registered_with_the_graph_draws_fresh_samples():
    _skip_unless_capturable("sbn")
    generator = torch.Generator("cuda").manual_seed(0)
    a = torch.zeros(1 << 14, device="cuda")
    stochastic_binary(a, generator=generator)  # warm-up
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    graph.register_generator_state(generator)
    with torch.cuda.graph(graph):
        static = stochastic_binary(a, generator=generator)
    generator.manual_seed(7)
    replayed = []
    for _ in range(5):
        graph.replay()
        replayed.append(static.clone())
    generator.manual_seed(7)
    eager = [stochastic_binary(a, generator=generator) for _ in range(5)]
    assert len({tuple(y.tolist()) for y in replayed}) == 5
    assert all(torch.equal(y, z) for y, z in zip(replayed, eager))


@on_cuda_graphs
@pytest.mark.compile
def test_functional_forms_with_numbers_keep_reduce_overheads_cuda_graphs():
    """A slope or temperature given as a number must not become a CPU tensor in the compiled
    graph: Inductor would skip CUDA graphs for it ("skipping cudagraphs due to cpu device")."""
    _skip_unless_capturable("sbn")
    torch._dynamo.reset()
    inductor_counters = torch._dynamo.utils.counters["inductor"]
    inductor_counters.clear()

    def neurons(a):
        return (stochastic_binary(a, "gumbel", slope=2.0)
                + deterministic_binary(a, "sigmoid", slope=3.0))

    compiled = torch.compile(neurons, mode="reduce-overhead", fullgraph=True)
    a = torch.randn(1 << 12, device="cuda", requires_grad=True)
    outputs = []
    for _ in range(5):
        a.grad = None
        y = compiled(a)
        y.sum().backward()
        outputs.append(y.detach().clone())
    assert inductor_counters["cudagraph_skips"] == 0, dict(inductor_counters)
    assert len({tuple(y.tolist()) for y in outputs}) == 5


# The invariants the CUDA tests rely on, checked on the CPU.


@pytest.mark.parametrize(("neuron", "estimator"), CASES, ids=IDS)
def test_a_training_step_reads_no_tensor_on_the_host(neuron, estimator):
    """On the meta device a tensor has no data, so any read of one on the host (``.item()``,
    ``float()``, a copy to the CPU, a data-dependent branch) raises. On a GPU each such read
    would be a synchronization, and would make the step impossible to capture in a CUDA
    graph."""
    model = training.mlp(estimator, neuron).to("meta")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, target = torch.randn(16, training.INPUTS, device="meta"), torch.zeros(
        16, dtype=torch.int64, device="meta")
    for _ in range(2):
        loss = training.step(model, optimizer, x, target)
    assert loss.device.type == "meta"


@pytest.mark.parametrize(("neuron", "estimator"), CASES, ids=IDS)
def test_the_replay_harness_compares_like_with_like(neuron, estimator):
    """The CUDA test's comparison, run on the CPU with an eager step in place of the replay: a
    twin made from the model's state and the same generator state trains identically, and
    every step draws fresh samples. (Catches a harness that would compare unlike runs.)"""
    model = training.mlp(estimator, neuron)
    optimizer = _optimizer(model)
    annealer = _annealer(model, estimator)
    codes = training.Codes(model)
    x, target = training.batch(128, seed=1)
    for _ in range(3):
        training.step(model, optimizer, x, target)
    if annealer is not None:
        annealer.step()
    twin, twin_optimizer = _twin(model, optimizer, neuron, estimator, "cpu")
    twin_annealer = _annealer(twin, estimator)
    twin_codes = training.Codes(twin)
    torch.manual_seed(1234)
    first, samples = _train(lambda: training.step(model, optimizer, x, target), annealer,
                            codes, 30)
    torch.manual_seed(1234)
    second, twin_samples = _train(lambda: training.step(twin, twin_optimizer, x, target),
                                  twin_annealer, twin_codes, 30)
    _check_fresh(samples, neuron)
    assert torch.equal(first, second)
    assert all(torch.equal(a, b) for a, b in zip(samples, twin_samples))
    for param, twin_param in zip(model.parameters(), twin.parameters()):
        assert torch.equal(param, twin_param)
    if annealer is not None:
        assert annealer.slopes == twin_annealer.slopes == [pytest.approx(1.05**4)] * 2
