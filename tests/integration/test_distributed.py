"""Several processes: DistributedDataParallel with every estimator, on the CPU with gloo.

Two processes, each with its own batch and noise, train the three-layer model of training.py.
Their gradients must be equal, and equal to the average of what each process's batch gives a
plain copy of the model from the same state and generator state; REINFORCE's baselines must be
the same on every rank when a forward pass uses them (DDP broadcasts rank 0's buffers at the
start of each forward pass, and ``reinforce_loss`` goes through the wrapper); and ranks seeded
alike draw the same noise, which is why the guide seeds each rank apart.
"""

from __future__ import annotations

import gc
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

import binary_neurons as bn

from tests import training

WORLD = 2
STEPS = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(tmp_path: Path, mode: str) -> list[dict]:
    mp.spawn(_worker, args=(_free_port(), tmp_path, mode), nprocs=WORLD)
    return [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(WORLD)]


def _worker(rank: int, port: int, out: Path, mode: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        run = _against_plain_copy if mode == "eager" else _compiled_against_eager
        results = {estimator: run(rank, estimator) for estimator in training.ESTIMATORS}
        if mode == "eager":
            results["seeding"] = _seeding(rank)
        torch.save(results, out / f"rank{rank}.pt")
    finally:
        # The DDP wrappers go while the group exists: collected after it, gloo can abort.
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


def _flat_grads(model) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def _annealer(model, estimator):
    return bn.SlopeAnnealer(model) if estimator == "annealed" else None


def _against_plain_copy(rank: int, estimator: str) -> dict:
    """STEPS steps under DDP; before each, the state the DDP forward pass runs from (after its
    buffer broadcast) is caught, and a plain copy of the model takes the same step from it with
    the same generator state."""
    model, plain = training.mlp(estimator), training.mlp(estimator)
    ddp = DistributedDataParallel(model)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.05)
    plain_optimizer = torch.optim.SGD(plain.parameters(), lr=0.05)
    annealer = _annealer(model, estimator)
    caught = {}
    model.register_forward_pre_hook(
        lambda module, args: caught.update(state={k: v.clone() for k, v in
                                                  module.state_dict().items()}))
    x, target = training.batch(32, seed=10 + rank)  # each rank its own batch
    found = {"grads": [], "averaged": [], "baselines": []}
    for step in range(STEPS):
        torch.manual_seed(100 * step + rank)  # each rank its own noise
        noise = torch.get_rng_state()
        training.step(ddp, optimizer, x, target)
        found["grads"].append(_flat_grads(model))
        plain.load_state_dict(caught["state"])
        torch.set_rng_state(noise)
        training.step(plain, plain_optimizer, x, target)
        local = _flat_grads(plain)
        dist.all_reduce(local)
        found["averaged"].append(local / dist.get_world_size())
        if estimator == "reinforce":
            found["baselines"].append(caught["state"]["1.reinforce_numerator"])
        if annealer is not None:
            annealer.step()
    found["slope"] = float(model[1].slope)
    return found


def _compiled_against_eager(rank: int, estimator: str) -> dict:
    """STEPS steps of a compiled DDP model, each repeated by an eager DDP model from the same
    state and generator state (the compiled code draws its seeds like eager code)."""
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()
    model, twin = training.mlp(estimator), training.mlp(estimator)
    ddp, twin_ddp = DistributedDataParallel(model), DistributedDataParallel(twin)
    compiled = torch.compile(ddp)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.05)
    twin_optimizer = torch.optim.SGD(twin_ddp.parameters(), lr=0.05)
    annealer, twin_annealer = _annealer(model, estimator), _annealer(twin, estimator)
    x, target = training.batch(32, seed=10 + rank)
    found = {"grads": [], "eager": []}
    for step in range(STEPS):
        twin.load_state_dict(model.state_dict())
        torch.manual_seed(100 * step + rank)
        with inductor_config.patch(fallback_random=True):
            training.step(ddp, optimizer, x, target, forward=compiled)
        found["grads"].append(_flat_grads(model))
        torch.manual_seed(100 * step + rank)
        training.step(twin_ddp, twin_optimizer, x, target)
        found["eager"].append(_flat_grads(twin))
        for each in (annealer, twin_annealer):
            if each is not None:
                each.step()
    return found


def _seeding(rank: int) -> dict:
    """The samples of the same input on each rank, seeded alike and seeded apart."""
    layer, x = bn.StochasticBinary(), torch.zeros(10_000)
    found = {}
    for name, seed in (("alike", 0), ("apart", rank)):
        torch.manual_seed(seed)
        samples = [torch.empty_like(x) for _ in range(WORLD)]
        dist.all_gather(samples, layer(x))
        found[name] = samples
    return found


@pytest.mark.slow
def test_ddp_trains_with_every_estimator(tmp_path):
    ranks = _spawn(tmp_path, "eager")
    for estimator in training.ESTIMATORS:
        first, second = ranks[0][estimator], ranks[1][estimator]
        for step in range(STEPS):
            # DDP's averaged gradients: the same on both ranks, and the average of each rank's
            # own gradient from the same state and noise.
            assert torch.equal(first["grads"][step], second["grads"][step])
            torch.testing.assert_close(first["grads"][step], first["averaged"][step])
        if estimator == "reinforce":
            # The baseline a forward pass uses is rank 0's on every rank, and it learns.
            for mine, theirs in zip(first["baselines"], second["baselines"]):
                assert torch.equal(mine, theirs)
            assert first["baselines"][-1].abs().sum() > 0
        if estimator == "annealed":
            assert first["slope"] == second["slope"] == pytest.approx(1.1**STEPS)
    seeding = ranks[0]["seeding"]
    # Seeded alike, every rank draws the same noise for the same input: the ranks' samples are
    # copies, not independent draws. Seeded apart, they agree only by chance (p = 1/2 here).
    assert torch.equal(*seeding["alike"])
    agreement = (seeding["apart"][0] == seeding["apart"][1]).float().mean().item()
    assert 0.45 < agreement < 0.55


@pytest.mark.slow
@pytest.mark.compile
def test_compiled_ddp_trains_like_eager_ddp(tmp_path):
    ranks = _spawn(tmp_path, "compiled")
    for estimator in training.ESTIMATORS:
        first, second = ranks[0][estimator], ranks[1][estimator]
        for step in range(STEPS):
            assert torch.equal(first["grads"][step], second["grads"][step])
            torch.testing.assert_close(first["grads"][step], first["eager"][step],
                                       rtol=1e-5, atol=1e-6)
