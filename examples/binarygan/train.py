"""The BinaryGAN training loop: critic schedule, slope annealing, checkpoints, DDP.

The same loop trains the discrete BGAN presets (``mlp-bgan``, ``cnn-bgan``): only the step
differs (:func:`binarygan_step` or :func:`bgan_step`, one generator update each); data order,
checkpoints, logs, figures and :func:`generate` are shared, so the two are compared on equal
terms.

One process, or several under ``torchrun`` (``torch.distributed``: gloo on CPU, NCCL on GPU).
With several, G and D are wrapped in :class:`~torch.nn.parallel.DistributedDataParallel`,
every process draws its own ``--batch-size`` examples (a deterministic shard of one shared
permutation per data epoch) and its own noise, and rank 0 alone writes logs, figures and
checkpoints.

Exact resumption: a checkpoint holds G, D, both optimizers, the annealer, every process's RNG
states and the step counters; the data order is a pure function of ``--seed`` and the number
of batches drawn. A run resumed from any checkpoint repeats, bit for bit on the CPU, what the
uninterrupted run would have done.
"""

from __future__ import annotations

import gc
import json
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

import binary_neurons as bn

from . import bgan
from . import data as data_module
from . import losses, plots
from .config import RESUMABLE, Config, critic_steps
from .models import build_models, count_parameters

__all__ = ["train", "generate", "BatchStream", "load_checkpoint", "read_run_config",
           "sample_latent", "binarygan_step", "bgan_step", "CHECKPOINT", "RunError"]

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"
LOG = "log.jsonl"
NUM_GRID = 64  # 8 x 8 sample grids


class RunError(RuntimeError):
    """A run cannot start or resume (bad run directory, device, or configuration change)."""


# --------------------------------------------------------------------------------------------
# data order


class BatchStream:
    """Deterministic, sharded batches of binarized images, as float32 ``B x 1 x 28 x 28``.

    Data epoch ``k`` is the permutation ``randperm(N)`` drawn from a generator seeded with
    ``(seed, k)``; process ``rank`` of ``world`` takes every ``world``-th index of it (like
    :class:`~torch.utils.data.DistributedSampler`) and the last partial batch is dropped. The
    whole state is :attr:`position`, the number of batches drawn so far.
    """

    def __init__(self, images: Tensor, batch_size: int, seed: int, rank: int = 0,
                 world: int = 1, device: torch.device = torch.device("cpu")) -> None:
        self.images = (images > 0).to(device)  # binarized once: N x 28 x 28 bool
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world
        self.per_rank = len(images) // world
        self.batches_per_epoch = self.per_rank // batch_size
        if self.batches_per_epoch < 1:
            raise RunError(
                f"{len(images)} images make no full batch of {batch_size} per process "
                f"({world} processes)"
            )
        self.position = 0
        self._epoch, self._order = -1, None

    def _order_for(self, epoch: int) -> Tensor:
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(len(self.images), generator=generator)
            self._order = order[self.rank::self.world][: self.per_rank].to(self.images.device)
            self._epoch = epoch
        return self._order

    def next(self) -> Tensor:
        epoch, index = divmod(self.position, self.batches_per_epoch)
        order = self._order_for(epoch)
        batch = order[index * self.batch_size:(index + 1) * self.batch_size]
        self.position += 1
        return self.images[batch].unsqueeze(1).to(torch.float32)  # B x 1 x 28 x 28 of {0, 1}


# --------------------------------------------------------------------------------------------
# processes and devices


@dataclass
class Process:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_process(config: Config) -> Process:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); pick the device."""
    if config.device == "cuda" and not torch.cuda.is_available():
        raise RunError("--device cuda was requested but no CUDA device is available")
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = 0, 0
    if world > 1:
        if not dist.is_initialized():
            dist.init_process_group("nccl" if config.device == "cuda" else "gloo")
        rank, local_rank = dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cpu")
    if config.device == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return Process(rank, world, device)


def _rng_state(process: Process) -> dict:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(process.device) if process.device.type == "cuda" else None,
    }


def _gather(process: Process, value):
    if process.world == 1:
        return [value]
    values = [None] * process.world
    dist.all_gather_object(values, value)
    return values


def _set_rng_state(state: dict, process: Process) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and process.device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], process.device)


# --------------------------------------------------------------------------------------------
# checkpoints


def save_checkpoint(path: Path, state: dict) -> None:
    """Write atomically: a temporary file in the same directory, then ``os.replace``."""
    temporary = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(state, temporary)
    os.replace(temporary, path)


def load_checkpoint(run_dir: Path, map_location="cpu") -> dict:
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise RunError(f"{run_dir}: no checkpoint ({CHECKPOINT}) in this run directory")
    # Our own file, holding numpy and Python RNG states besides tensors.
    return torch.load(path, map_location=map_location, weights_only=False)


def read_run_config(run_dir: Path) -> Config:
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise RunError(f"{run_dir}: not a run directory (no {CONFIG})")
    return Config.from_dict(json.loads(path.read_text()))


# --------------------------------------------------------------------------------------------
# sampling and figures


def sample_latent(config: Config, count: int, device: torch.device = torch.device("cpu"),
                  generator: Optional[torch.Generator] = None) -> Tensor:
    """``count`` latent vectors (count x latent_dim) from the config's prior: N(0, I)
    (BinaryGAN) or U[0, 1) (BGAN). With ``generator`` (a CPU generator) the draw is made on
    the CPU and moved, so fixed noise is the same on every device."""
    shape = (count, config.latent_dim)
    draw = torch.randn if config.prior == "normal" else torch.rand
    if generator is not None:
        return draw(shape, generator=generator).to(device)
    return draw(shape, device=device)


def binary_samples(generator: nn.Module, z: Tensor, config: Config,
                   noise: Optional[torch.Generator]) -> Tensor:
    """Binary samples (N x 1 x 28 x 28 of {0, 1}) in evaluation mode, from ``noise`` only.

    The real-valued model is binarized here, by ``config.binarize``: threshold p > 0.5 or a
    Bernoulli sample; a BGAN generator's logits l give Bernoulli samples of sigmoid(l).
    """
    was_training = generator.training
    generator.eval()
    try:
        with torch.no_grad():
            if config.output == "logits":
                return bgan.sample_bernoulli(generator(z), 1, noise)[0]
            if config.output != "real":
                return generator(z, noise)
            p = generator.probability(z)
            if config.binarize == "threshold":
                return (p > 0.5).to(p.dtype)
            return torch.bernoulli(p, generator=noise)
    finally:
        generator.train(was_training)


def probabilities(generator: nn.Module, z: Tensor) -> Tensor:
    was_training = generator.training
    generator.eval()
    try:
        with torch.no_grad():
            return generator.probability(z)
    finally:
        generator.train(was_training)


def write_figures(out: Path, step: int, generator: nn.Module, fixed_z: Tensor, hist_z: Tensor,
                  config: Config, records: list[dict]) -> None:
    noise = torch.Generator(fixed_z.device).manual_seed(config.seed)  # same u in every grid
    samples = binary_samples(generator, fixed_z, config, noise).cpu().numpy()
    probs = probabilities(generator, fixed_z).cpu().numpy()
    grids = out / "samples"
    grids.mkdir(exist_ok=True)
    plots.save_grid(grids / f"binary_{step:06d}.png", samples)
    plots.save_grid(grids / f"probability_{step:06d}.png", probs)
    plots.save_grid(out / "samples.png", samples, scale=2)
    plots.save_grid(out / "probabilities.png", probs, scale=2)
    p = probabilities(generator, hist_z).cpu().numpy()
    plots.save_histogram(out / "histogram.png", p, config.hist_bins,
                         f"{config.preset}, step {step}: p over {len(hist_z)} samples")
    if records:
        plots.save_loss_curves(out / "losses.png", records)


# --------------------------------------------------------------------------------------------
# training


def _synthetic_images(seed: int, count: int = 32) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return ((torch.rand(count, 28, 28, generator=generator) < 0.2) * 255).to(torch.uint8)


def _make_optimizer(config: Config, module: nn.Module) -> torch.optim.Optimizer:
    if config.objective == "wgan":
        return torch.optim.RMSprop(module.parameters(), lr=config.lr)
    return torch.optim.Adam(module.parameters(), lr=config.lr, betas=config.betas)


def _print(process: Process, *args) -> None:
    if process.is_main:
        print(*args, flush=True)


def _truncate_log(path: Path, last_step: int) -> list[dict]:
    """Keep the log records up to the checkpoint's step (a killed run may have logged more)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break  # a line cut short by the kill
        if record.get("step", 0) > last_step:
            break
        records.append(record)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def binarygan_step(step: int, config: Config, stream: BatchStream, g_model: nn.Module,
                   d_model: nn.Module, discriminator: nn.Module,
                   g_optimizer: torch.optim.Optimizer, d_optimizer: torch.optim.Optimizer,
                   device: torch.device) -> dict[str, float]:
    """One BinaryGAN generator update and the critic steps before it (SPEC section 2).

    ``g_model`` and ``d_model`` may be DDP wrappers; ``discriminator`` is D itself, called
    with its parameters frozen in the generator update. Returns the last D loss (without the
    penalty), the G loss and, for WGAN-GP, the last gradient penalty.
    """
    n_critic = critic_steps(step, config)
    if config.batches == "reuse":  # the TF code: one x and one z for the whole step
        real = stream.next()  # B x 1 x 28 x 28
        z = sample_latent(config, config.batch_size, device)  # B x 128

    # ---- update D: n_critic steps -----------------------------------------------------------
    for _ in range(n_critic):
        if config.batches == "fresh":
            real = stream.next()
            z = sample_latent(config, config.batch_size, device)
        with torch.no_grad():
            fake = g_model(z)  # B x 1 x 28 x 28, binary (or p for the real model)
        d_loss = losses.discriminator_loss(config.objective, d_model(real), d_model(fake))
        loss = d_loss
        if config.objective == "wgangp":
            gp = losses.gradient_penalty(d_model, losses.interpolate(real, fake))
            loss = d_loss + config.gp_weight * gp
        d_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        d_optimizer.step()
        if config.objective == "wgan":
            with torch.no_grad():
                for parameter in discriminator.parameters():
                    parameter.clamp_(-config.clip_value, config.clip_value)

    # ---- update G ---------------------------------------------------------------------------
    if config.batches == "fresh":
        z = sample_latent(config, config.batch_size, device)
    discriminator.requires_grad_(False)  # D is fixed here: no gradients to its weights
    g_loss = losses.generator_loss(config.objective, discriminator(g_model(z)))
    g_optimizer.zero_grad(set_to_none=True)
    g_loss.backward()
    g_optimizer.step()
    discriminator.requires_grad_(True)

    stats = {"d_loss": d_loss.item(), "g_loss": g_loss.item()}
    if config.objective == "wgangp":
        stats["gp"] = gp.item()
    return stats


def bgan_step(step: int, config: Config, stream: BatchStream, g_model: nn.Module,
              d_model: nn.Module, discriminator: nn.Module,
              g_optimizer: torch.optim.Optimizer, d_optimizer: torch.optim.Optimizer,
              device: torch.device) -> dict[str, float]:
    """One discrete-BGAN iteration (SPEC section 3): :func:`.bgan.bgan_step` on the next batch
    and a fresh z, with ``config.bgan_samples`` samples per z drawn from the default RNG (so
    checkpoints capture it). Same signature as :func:`binarygan_step`."""
    real = stream.next()  # B x 1 x 28 x 28
    z = sample_latent(config, config.batch_size, device)  # B x 64, U[0, 1)
    result = bgan.bgan_step(g_model, d_model, g_optimizer, d_optimizer, real, z,
                            m=config.bgan_samples)
    return {"d_loss": result["loss_d"], "g_loss": result["loss_g"], "d_real": result["d_real"],
            "d_fake": result["d_fake"], "ink_density": result["ink_density"],
            "effective_samples": result["effective_samples"]}


def train(config: Config, out: Optional[Path] = None, resume: bool = False,
          dry_run: bool = False, progress: bool = True) -> dict:
    """Train BinaryGAN as ``config`` says; returns a summary (steps, time, final losses).

    ``dry_run`` trains two generator steps (two critic steps each) on 32 random binary images
    with batch 8 and writes nothing. ``resume`` continues the run in ``out`` from its
    checkpoint (or starts it, if there is none yet).
    """
    if dry_run:
        config = config.replace(batch_size=8, epochs=1, max_steps=2)
        if config.objective != "bgan":  # BGAN always does one D step
            config = config.replace(n_critic=2, n_critic_warmup=2, warmup_steps=0)
        out = None
    joined = not dist.is_initialized()
    process = setup_process(config)
    try:
        return _train(config, process, out, resume, dry_run, progress)
    finally:
        if joined and dist.is_initialized():
            # Free the DDP wrappers (held in reference cycles) while the group still exists:
            # with torch 2.13 + gloo, ~1 exit in 20 otherwise aborts ("terminate called
            # without an active exception") when they are collected after it is destroyed.
            gc.collect()
            dist.barrier()
            dist.destroy_process_group()


def _train(config: Config, process: Process, out: Optional[Path], resume: bool, dry_run: bool,
           progress: bool) -> dict:
    device = process.device

    # -- data -----------------------------------------------------------------------------------
    if dry_run:
        images = _synthetic_images(config.seed)
    else:
        images = data_module.load_images(config.data_dir, config.split)
    stream = BatchStream(images, config.batch_size, config.seed, process.rank, process.world,
                         device)
    steps_per_epoch = stream.batches_per_epoch
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)

    # -- models, optimizers, annealer -------------------------------------------------------------
    torch.manual_seed(config.seed)  # same initial weights in every process
    generator, discriminator = build_models(config)
    generator.to(device)
    discriminator.to(device)
    g_params, d_params = count_parameters(generator), count_parameters(discriminator)
    g_optimizer = _make_optimizer(config, generator)
    d_optimizer = _make_optimizer(config, discriminator)
    annealer = (bn.SlopeAnnealer(generator, factor=config.slope_factor)
                if config.anneals else None)
    # Fixed noise for the figures, from its own generator: the training RNG never sees it.
    fixed = torch.Generator().manual_seed(config.seed + 12345)
    fixed_z = sample_latent(config, NUM_GRID, device, fixed)
    hist_z = sample_latent(config, config.num_samples_hist, device, fixed)
    # Every process gets its own training noise (z, SBN samples, e of the penalty).
    torch.manual_seed(config.seed + 1 + process.rank)
    if device.type == "cuda":
        torch.cuda.manual_seed(config.seed + 1 + process.rank)
    random.seed(config.seed)
    np.random.seed(config.seed)

    start_step, records = 0, []
    if out is not None:
        out = Path(out)
        checkpoint_path = out / CHECKPOINT
        if resume and checkpoint_path.is_file():
            ckpt = load_checkpoint(out)  # on the CPU: RNG states must stay CPU tensors
            saved = Config.from_dict(ckpt["config"])
            changed = [k for k, v in config.to_dict().items()
                       if k not in RESUMABLE and saved.to_dict()[k] != v]
            if changed:
                raise RunError(f"cannot resume {out} with changed settings: {', '.join(changed)}")
            if ckpt["world_size"] != process.world:
                raise RunError(f"{out} was trained with {ckpt['world_size']} processes, "
                               f"not {process.world}; resume with the same number")
            generator.load_state_dict(ckpt["generator"])
            discriminator.load_state_dict(ckpt["discriminator"])
            g_optimizer.load_state_dict(ckpt["g_optimizer"])
            d_optimizer.load_state_dict(ckpt["d_optimizer"])
            if annealer is not None:
                annealer.load_state_dict(ckpt["annealer"])
            _set_rng_state(ckpt["rng"]["processes"][process.rank], process)
            np.random.set_state(ckpt["rng"]["numpy"])
            random.setstate(ckpt["rng"]["python"])
            start_step, stream.position = ckpt["g_step"], ckpt["stream_position"]
            if process.is_main:
                records = _truncate_log(out / LOG, start_step)
            _print(process, f"resuming {out} at generator step {start_step}")
        elif resume:
            _print(process, f"no checkpoint in {out}; starting the run")
        if process.is_main:
            out.mkdir(parents=True, exist_ok=True)
            for stale in out.glob(CHECKPOINT + ".tmp*"):  # left by a run killed mid-write
                stale.unlink()
            (out / CONFIG).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
            if start_step == 0:
                (out / LOG).write_text("")

    if process.world > 1:
        device_ids = [device] if device.type == "cuda" else None
        if config.sync_bn:
            if device.type != "cuda":
                raise RunError("--sync-bn needs --device cuda (SyncBatchNorm runs on GPUs only)")
            generator = nn.SyncBatchNorm.convert_sync_batchnorm(generator)
            discriminator = nn.SyncBatchNorm.convert_sync_batchnorm(discriminator)
        g_model = DistributedDataParallel(generator, device_ids=device_ids)
        d_model = DistributedDataParallel(discriminator, device_ids=device_ids)
    else:
        g_model, d_model = generator, discriminator

    _print(process, f"{config.preset}: G {g_params:,} + D {d_params:,} = "
                    f"{g_params + d_params:,} parameters; {len(images):,} images, "
                    f"{steps_per_epoch} G steps per epoch, {total_steps} G steps"
                    + (f", {process.world} processes" if process.world > 1 else ""))

    def slope() -> Optional[float]:
        return float(generator.output.slope) if config.output in ("dbn", "sbn") else None

    def checkpoint(step: int) -> None:
        rng = _gather(process, _rng_state(process))
        if out is None or not process.is_main:
            return
        save_checkpoint(out / CHECKPOINT, {
            "config": config.to_dict(), "world_size": process.world,
            "g_step": step, "stream_position": stream.position,
            "generator": generator.state_dict(), "discriminator": discriminator.state_dict(),
            "g_optimizer": g_optimizer.state_dict(), "d_optimizer": d_optimizer.state_dict(),
            "annealer": annealer.state_dict() if annealer is not None else None,
            "rng": {"processes": rng, "numpy": np.random.get_state(),
                    "python": random.getstate()},
        })

    bar = None
    if progress and process.is_main and not dry_run:
        from tqdm import tqdm

        # Redrawn often on a terminal; into a log file (CI), a line every 30 s is enough.
        bar = tqdm(total=total_steps, initial=start_step, desc=f"{config.preset} (G updates)",
                   unit="step", dynamic_ncols=True,
                   mininterval=0.1 if sys.stderr.isatty() else 30.0)
    generator.train()
    discriminator.train()
    log_file = open(out / LOG, "a") if out is not None and process.is_main else None
    window: dict[str, list[float]] = {}
    started, window_start = time.perf_counter(), time.perf_counter()
    stats = {"d_loss": float("nan"), "g_loss": float("nan")}
    one_step = bgan_step if config.objective == "bgan" else binarygan_step
    try:
        for step in range(start_step, total_steps):
            if annealer is not None and step > 0 and step % steps_per_epoch == 0:
                # Each new epoch trains at a steeper slope (epoch e at factor**e). Stepping here,
                # not after an epoch, leaves a finished run at the slope it last trained with.
                annealer.step()
            stats = one_step(step, config, stream, g_model, d_model, discriminator,
                             g_optimizer, d_optimizer, device)

            done = step + 1

            # ---- log, figures, checkpoint (rank 0 writes) ------------------------------------
            for key, value in stats.items():
                window.setdefault(key, []).append(value)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(d=f"{stats['d_loss']:.3f}", g=f"{stats['g_loss']:.3f}",
                                slope=f"{slope():.3g}" if slope() else "-", refresh=False)
            if done % config.log_every == 0 or done == total_steps:
                now = time.perf_counter()
                record = {
                    "step": done, "epoch": done / steps_per_epoch,
                    **{k: float(np.mean(v)) for k, v in window.items() if v},
                    "slope": slope(), "d_steps": critic_steps(step, config),
                    "sec_per_step": (now - window_start) / len(window["g_loss"]),
                    "elapsed": now - started,
                }
                if log_file is not None:
                    log_file.write(json.dumps(record) + "\n")
                    log_file.flush()
                    records.append(record)
                if dry_run:
                    _print(process, "dry run: " + json.dumps(record))
                window = {}
                window_start = now
            figure_due = (done % config.sample_every == 0 if config.sample_every
                          else done % steps_per_epoch == 0)
            if out is not None and process.is_main and (figure_due or done == total_steps):
                write_figures(out, done, generator, fixed_z, hist_z, config, records)
            if out is not None and (done % config.checkpoint_every == 0 or done == total_steps):
                checkpoint(done)
    finally:
        if bar is not None:
            bar.close()
        if log_file is not None:
            log_file.close()

    elapsed = time.perf_counter() - started
    run_steps = total_steps - start_step
    if process.world > 1:  # DDP keeps the replicas equal; check it
        checksum = sum(float(p.detach().double().sum()) for p in generator.parameters())
        if len(set(_gather(process, checksum))) != 1:
            raise RunError("G's weights differ across processes")
    summary = {"preset": config.preset, "steps": total_steps, "steps_this_run": run_steps,
               "seconds": elapsed, "g_params": g_params, "d_params": d_params,
               "d_loss": stats["d_loss"], "g_loss": stats["g_loss"], "slope": slope(),
               "out": str(out) if out is not None else None}
    if out is not None:
        rate = run_steps / elapsed if elapsed > 0 else float("nan")
        _print(process, f"done: {total_steps} G steps ({run_steps} in {elapsed:.0f} s, "
                        f"{rate:.1f} G steps/s).\noutputs in {out}/: samples.png, "
                        f"probabilities.png, histogram.png (+ .json), losses.png, {LOG}, "
                        f"{CONFIG}, {CHECKPOINT}, samples/")
    return summary


# --------------------------------------------------------------------------------------------
# generation


def generate(run_dir: Path, num: int, seed: int = 0, device: str = "cpu",
             binarize: Optional[str] = None, batch_size: int = 1000,
             with_probabilities: bool = False):
    """``num`` binary samples, uint8 ``(num, 28, 28)`` of 0/1, from the run's checkpoint.

    ``binarize`` (``"threshold"`` or ``"sample"``) overrides the run's setting for the
    real-valued model; binary-neuron models sample their own outputs, and BGAN models draw
    Bernoulli samples of sigmoid(logits). With ``with_probabilities=True``, also returns the
    preactivated outputs p (float32 ``(num, 28, 28)``) of the same z: the pair
    ``(samples, p)``.
    """
    run_dir = Path(run_dir)
    config = read_run_config(run_dir).replace(device=device)
    if binarize is not None:
        config = config.replace(binarize=binarize)
    ckpt = load_checkpoint(run_dir)
    generator, _ = build_models(config)
    generator.load_state_dict(ckpt["generator"])
    torch_device = torch.device(device)
    generator.to(torch_device)
    latent = torch.Generator().manual_seed(seed)
    noise = torch.Generator(torch_device).manual_seed(seed + 1)
    chunks, p_chunks = [], []
    for start in range(0, num, batch_size):
        count = min(batch_size, num - start)
        z = sample_latent(config, count, torch_device, latent)
        chunks.append(binary_samples(generator, z, config, noise).squeeze(1).cpu())
        if with_probabilities:
            p_chunks.append(probabilities(generator, z).squeeze(1).cpu())
    if not chunks:
        samples = np.zeros((0, 28, 28), np.uint8)
        p = np.zeros((0, 28, 28), np.float32)
    else:
        samples = torch.cat(chunks).to(torch.uint8).numpy()
        p = torch.cat(p_chunks).numpy() if with_probabilities else None
    return (samples, p) if with_probabilities else samples
